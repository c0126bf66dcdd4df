package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/gatewaytest"
)

// The project's cases pass over both transports against an embedded
// gateway with the demo tasks, one line per case and transport.
func TestRunAll(t *testing.T) {
	t.Parallel()
	url := gatewaytest.New(t, gateway.Config{}, nil).URL
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
