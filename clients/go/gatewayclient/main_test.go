package gatewayclient_test

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/gatewaytest"
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
	gw, err := gatewaytest.Start(gateway.Config{}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the gateway:", err)
		os.Exit(2)
	}
	gatewayURL, gatewayHandler = gw.URL, gw.Gateway
	code := m.Run()
	if err := gw.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the gateway:", err)
		code = 1
	}
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}
