package gatewayclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/gatewaytest"
	"github.com/atasks-go/atasks/wire"
)

// A token without the cancel right: over both transports Cancel fails at
// once with "forbidden" and the invocation goes on.
func TestCancelRefused(t *testing.T) {
	const token = "invoke-and-read-only"
	tokens, err := gateway.ParseTokenList(token + "=default:invoke+read")
	if err != nil {
		t.Fatal(err)
	}
	srv := gatewaytest.New(t, gateway.Config{Tokens: tokens}, nil)
	ctx := context.Background()
	for _, tr := range []gatewayclient.Transport{gatewayclient.TransportWS, gatewayclient.TransportREST} {
		c := newClient(t, srv.URL, gatewayclient.WithTransport(tr), gatewayclient.WithHeader("Authorization", "Bearer "+token))
		h, err := c.Start(ctx, "default", "demo.sleep", map[string]any{"ms": 3000, "value": "on"})
		if err != nil {
			t.Fatalf("%s: start: %v", tr, err)
		}
		start := time.Now()
		_, err = h.Cancel(ctx)
		if !errors.Is(err, &wire.Error{Code: "forbidden"}) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: cancel: %v after %v; want forbidden at once", tr, err, time.Since(start))
		}
		if inv, err := h.Wait(ctx); err != nil || inv.State != "succeeded" {
			t.Errorf("%s: after the refused cancel: %+v %v; want it to go on and succeed", tr, inv, err)
		}
	}
}
