package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Every client runs the shared cases of conformance/cases.json against one
// gateway and two workers over RabbitMQ: the Go client, curl, the Python
// client and the JS client (over WebSocket and over REST). The runners'
// contract is in conformance/README.md.
func TestConformance(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	s := newSystem(t)
	s.worker()
	s.worker()
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.sleep")
	waitServed(t, base, "seed", "task_three")
	env := append(os.Environ(),
		"ATASKS_GATEWAY_URL="+base,
		"ATASKS_CONFORMANCE_CASES="+filepath.Join(root, "conformance", "cases.json"),
		"ATASKS_CONFORMANCE_RUN="+s.prefix)
	for _, r := range []struct {
		name string
		argv []string
	}{
		{"go", []string{filepath.Join(bin, "conformance")}},
		{"curl", []string{"bash", filepath.Join(root, "conformance", "curl.sh")}},
		{"python", []string{"/usr/bin/python3", filepath.Join(root, "clients", "python", "conformance.py")}},
		{"js", []string{"node", "--experimental-websocket", filepath.Join(root, "clients", "js", "conformance.js")}},
	} {
		t.Run(r.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, r.argv[0], r.argv[1:]...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			t.Logf("%s runner:\n%s", r.name, out)
			if err != nil {
				t.Fatalf("%s runner: %v", r.name, err)
			}
		})
	}
}
