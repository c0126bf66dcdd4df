package gatewayclient_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestDeps checks that a program importing gatewayclient gets an HTTP and
// WebSocket client and none of the SDK's server side: not the root package,
// which brings metrics, tracing and the binary codecs, nor those directly,
// nor the gateway's router and OpenAPI validation. wire is what it shares
// with the SDK.
func TestDeps(t *testing.T) {
	t.Parallel()
	// go test puts its own GOROOT/bin first in the PATH of what it runs.
	out, err := exec.Command("go", "list", "-deps", "github.com/atasks-go/atasks/clients/go/gatewayclient").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	banned := []string{
		"github.com/prometheus/",
		"go.opentelemetry.io/",
		"google.golang.org/protobuf/",
		"github.com/fxamacker/cbor/",
		"github.com/getkin/",
		"github.com/go-chi/",
	}
	for _, dep := range deps {
		bad := dep == "github.com/atasks-go/atasks"
		for _, prefix := range banned {
			bad = bad || strings.HasPrefix(dep, prefix)
		}
		if bad {
			t.Errorf("gatewayclient depends on %s", dep)
		}
	}
}
