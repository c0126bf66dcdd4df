package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pyTasks are the tasks pyworker/minimal_worker.py serves in namespace default.
var pyTasks = []string{"py.refuse", "py.upper"}

// A server written in Python from docs/PROTOCOL.md's minimal server
// profile (§12) alone, with pika, serves a namespace next to a Go worker:
// the stock gateway lists its tasks, calls them (an output, a typed error,
// the task's own bad_input) and sees it leave when it stops.
func TestPyMinimalWorker(t *testing.T) {
	t.Parallel()
	needPika(t)
	s := newSystem(t)
	s.extra = map[string][]string{"default": pyTasks}
	s.worker()
	py := s.startScript("minimal_worker.py", "/usr/bin/python3", filepath.Join("pyworker", "minimal_worker.py"))
	_, base := s.gateway()
	for _, task := range pyTasks {
		waitServed(t, base, "default", task)
	}
	if n := servers(t, base, "py.upper"); n != 1 {
		t.Errorf("the catalog lists %d servers of py.upper, want 1", n)
	}

	// With a deadline: the worker reads Go's atasks-deadline header.
	inv := call(t, base, "default", "py.upper", `"héllo"`, "?wait=30s&timeout=20s")
	var out string
	if inv.State != "succeeded" || json.Unmarshal(inv.Result, &out) != nil || out != "HÉLLO" || inv.Attempt != 1 {
		t.Errorf("py.upper: %d %s %s attempt %d %+v; want succeeded \"HÉLLO\" on attempt 1", inv.status, inv.State, inv.Result, inv.Attempt, inv.Error)
	}
	inv = call(t, base, "default", "py.upper", `42`, "?wait=30s")
	if inv.State != "failed" || inv.Error == nil || inv.Error.Code != "bad_input" {
		t.Errorf("py.upper of a number: %s %+v; want failed, bad_input", inv.State, inv.Error)
	}
	res, err := http.Post(base+"/v1/ns/default/tasks/py.refuse?wait=30s", "application/json", strings.NewReader(`"x"`))
	if err != nil {
		t.Fatal(err)
	}
	var refused struct {
		State string `json:"state"`
		Error struct {
			Code      string          `json:"code"`
			Details   json.RawMessage `json:"details"`
			Retryable bool            `json:"retryable"`
		} `json:"error"`
	}
	err = json.NewDecoder(res.Body).Decode(&refused)
	res.Body.Close()
	if err != nil || refused.State != "failed" || refused.Error.Code != "refused" || string(refused.Error.Details) != `{"input":"x"}` || refused.Error.Retryable {
		t.Errorf("py.refuse: %d %+v (%v); want failed, refused with details {\"input\":\"x\"}, not retryable", res.StatusCode, refused, err)
	}
	// The Go worker of the same namespace is unaffected.
	if inv := call(t, base, "default", "demo.add", `{"a":2,"b":3}`, "?wait=30s"); inv.State != "succeeded" || string(inv.Result) != "5" {
		t.Errorf("demo.add next to the Python worker: %s %s %+v", inv.State, inv.Result, inv.Error)
	}

	// On SIGTERM it publishes leave: the catalog counts no server at once,
	// not after the announcement's ttl_ms (15 s).
	py.stop(t, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for servers(t, base, "py.upper") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("py.upper still has a server 5 s after the Python worker left")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// needPika fails the test under CI=true, and skips it elsewhere, unless
// /usr/bin/python3 has pika (Debian's python3-pika, which scripts/test installs).
func needPika(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import pika").CombinedOutput()
	if err == nil {
		return
	}
	msg := "the Python worker needs /usr/bin/python3 with pika: apt-get install python3-pika (scripts/test installs it under CI=true): " + strings.TrimSpace(string(out))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// startScript runs command (a program outside bin, say an interpreter and
// its script) with the system's environment, as start runs binaries.
func (s *system) startScript(name string, command ...string) *proc {
	s.t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(command[0], command[1:]...)
	p.cmd.Env = append(os.Environ(), "ATASKS_AMQP_URL="+s.url, "ATASKS_PREFIX="+s.prefix)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	s.t.Cleanup(func() {
		p.kill()
		if s.t.Failed() {
			s.t.Logf("--- %s output:\n%s", p.name, p.output())
		}
	})
	return p
}

// servers is how many servers of task in namespace default the gateway's
// catalog counts; -1 if it does not list the task.
func servers(t *testing.T, base, task string) int {
	t.Helper()
	res, err := http.Get(base + "/v1/ns/default/tasks")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var cat struct {
		Tasks []struct {
			Name    string `json:"name"`
			Servers int    `json:"servers"`
		} `json:"tasks"`
	}
	if err := json.NewDecoder(res.Body).Decode(&cat); err != nil {
		t.Fatal(err)
	}
	for _, x := range cat.Tasks {
		if x.Name == task {
			return x.Servers
		}
	}
	return -1
}
