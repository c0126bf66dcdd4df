package gatewayclient_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
)

// A token without the cancel right: over both transports Cancel fails at
// once with "forbidden" and the invocation goes on.
func TestCancelRefused(t *testing.T) {
	const token = "invoke-and-read-only"
	tokens, err := gateway.ParseTokenList(token + "=default:invoke+read")
	if err != nil {
		t.Fatal(err)
	}
	nss, err := demo.Namespaces(nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{})
	if err == nil {
		err = worker.Start(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Client: client, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		srv.Close()
		gw.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = worker.Stop(sctx)
	})
	for _, tr := range []gatewayclient.Transport{gatewayclient.TransportWS, gatewayclient.TransportREST} {
		c := newClient(t, srv.URL, gatewayclient.WithTransport(tr), gatewayclient.WithHeader("Authorization", "Bearer "+token))
		h, err := c.Start(ctx, "default", "demo.sleep", map[string]any{"ms": 3000, "value": "on"})
		if err != nil {
			t.Fatalf("%s: start: %v", tr, err)
		}
		start := time.Now()
		_, err = h.Cancel(ctx)
		if !errors.Is(err, &atasks.Error{Code: "forbidden"}) || time.Since(start) > 2*time.Second {
			t.Errorf("%s: cancel: %v after %v; want forbidden at once", tr, err, time.Since(start))
		}
		if inv, err := h.Wait(ctx); err != nil || inv.State != "succeeded" {
			t.Errorf("%s: after the refused cancel: %+v %v; want it to go on and succeed", tr, inv, err)
		}
	}
}
