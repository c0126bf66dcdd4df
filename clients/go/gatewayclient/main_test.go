package gatewayclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
	"go.uber.org/goleak"
)

// gatewayURL is the address of the gateway the tests and examples call: an
// embedded one with the demo tasks, started by TestMain.
var gatewayURL string

func TestMain(m *testing.M) {
	stop, err := startGateway()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the gateway:", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the gateway:", err)
		code = 1
	}
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}

// startGateway serves the demo tasks in-process over loopback behind an
// HTTP gateway, as `gateway` without --amqp-url does, and sets gatewayURL.
func startGateway() (stop func() error, err error) {
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
	gatewayURL = srv.URL
	// Shutdown order: stop serving HTTP, stop waiting for outcomes, then
	// drain the worker.
	return func() error {
		srv.Close()
		gw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return worker.Stop(ctx)
	}, nil
}
