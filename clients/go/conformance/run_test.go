package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
)

// The project's cases pass over both transports against an embedded
// gateway with the demo tasks, one line per case and transport.
func TestRunAll(t *testing.T) {
	t.Parallel()
	url := startGateway(t)
	cases, err := load(filepath.Join("..", "..", "..", "conformance", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []gatewayclient.Transport{gatewayclient.TransportWS, gatewayclient.TransportREST} {
		var out bytes.Buffer
		passed, err := runAll(&out, url, t.Name(), tr, cases)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if err != nil || !passed || len(lines) != len(cases) {
			t.Fatalf("%s: %v, passed %t:\n%s", tr, err, passed, &out)
		}
		for i, l := range lines {
			if want := "ok [" + string(tr) + "] " + cases[i].Name; l != want {
				t.Errorf("line %d: %q; want %q", i, l, want)
			}
		}
	}
}

// startGateway serves the demo tasks in-process over loopback behind a
// gateway until the test ends, and returns its URL.
func startGateway(t *testing.T) string {
	t.Helper()
	nss, err := demo.Namespaces(nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	// Shutdown order: stop serving HTTP, stop waiting for outcomes, then
	// drain the worker.
	t.Cleanup(func() {
		srv.Close()
		gw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := worker.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return srv.URL
}
