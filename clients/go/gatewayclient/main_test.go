package gatewayclient_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
	"go.uber.org/goleak"
)

// The gateway the tests and examples call: an embedded one with the demo
// tasks, started by TestMain. Tests that need to see or cut its
// connections serve gatewayHandler themselves (newFront).
var (
	gatewayURL     string
	gatewayHandler http.Handler
)

func TestMain(m *testing.M) {
	gw, err := startGateway()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the gateway:", err)
		os.Exit(2)
	}
	gatewayURL, gatewayHandler = gw.URL, gw.handler
	code := m.Run()
	if err := gw.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the gateway:", err)
		code = 1
	}
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

// testGateway is a gateway of the demo tasks served in-process.
type testGateway struct {
	URL     string
	handler http.Handler
	stop    func() error // stops serving, closes the gateway (1001 to its WebSockets), drains the worker
}

// startGateway serves the demo tasks in-process over loopback behind an
// HTTP gateway, as `gateway` without --amqp-url does.
func startGateway() (*testGateway, error) {
	nss, err := demo.Namespaces(nil)
	if err != nil {
		return nil, err
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{})
	if err != nil {
		return nil, err
	}
	if err := worker.Start(ctx); err != nil {
		return nil, err
	}
	gw, err := gateway.New(gateway.Config{Client: client})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(gw)
	// Shutdown order: stop serving HTTP, stop waiting for outcomes (which
	// closes the WebSockets), then drain the worker.
	return &testGateway{URL: srv.URL, handler: gw, stop: func() error {
		srv.Close()
		gw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return worker.Stop(ctx)
	}}, nil
}
