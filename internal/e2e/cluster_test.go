package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scriptOutput collects what scripts/cluster prints and tells when it
// printed its ready line and what follows it, down to "Ctrl-C stops them all.".
type scriptOutput struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (o *scriptOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	ready := false
	for line := range strings.Lines(o.buf.String()) {
		ready = ready || strings.HasPrefix(line, "ready:")
		if ready && line == "Ctrl-C stops them all.\n" {
			o.once.Do(func() { close(o.ready) })
		}
	}
	return len(b), nil
}

func (o *scriptOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// pids returns the PIDs the script printed for the processes it started,
// by name ("gateway", "worker 1", …).
func (o *scriptOutput) pids() map[string]int {
	pids := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^ {2}(gateway(?: \d+)?|worker \d+|haproxy) +pid (\d+) `).FindAllStringSubmatch(o.String(), -1) {
		pids[m[1]], _ = strconv.Atoi(m[2])
	}
	return pids
}

// processesWith returns the PIDs of the processes whose command line
// contains s, this one aside (Linux: /proc).
func processesWith(s string) []int {
	var found []int
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, pid)
		}
	}
	return found
}

// scripts/cluster as a user runs it: it builds and starts the gateway and
// two workers, says when they are ready, serves calls through both
// workers, and on SIGINT stops everything it started, quickly.
func TestClusterScript(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	addr, out, cmd, done := runClusterScript(t, s, "--workers", "2")
	pids := out.pids()
	workerPIDs := []int{pids["worker 1"], pids["worker 2"]}
	if pids["gateway"] == 0 || slices.Contains(workerPIDs, 0) || len(pids) != 3 {
		t.Fatalf("want the PIDs of the gateway and two workers in the output, got %v", pids)
	}

	base := "http://" + addr
	if inv := call(t, base, "default", "demo.add", `{"a":2,"b":3}`, "?wait=30s"); inv.State != "succeeded" || string(inv.Result) != "5" {
		t.Errorf("demo.add: %d %s %s %+v", inv.status, inv.State, inv.Result, inv.Error)
	}
	if inv := call(t, base, "default", "demo.fib", `{"n":10}`, "?wait=30s"); inv.State != "succeeded" || string(inv.Result) != "55" {
		t.Errorf("demo.fib: %d %s %s %+v", inv.status, inv.State, inv.Result, inv.Error)
	}

	// Both workers serve: calls in parallel land on each (the broker hands
	// a queue's messages to its consumers in turn), and the invocations name
	// them, as host:pid, by the PIDs the script printed.
	seen := map[int]bool{}
	for round := 0; round < 5 && len(seen) < 2; round++ {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				worker, err := callWorker(base, "demo.sleep", fmt.Sprintf(`{"ms":100,"value":%d}`, i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				pid, err := strconv.Atoi(worker[strings.LastIndex(worker, ":")+1:])
				if err != nil || !slices.Contains(workerPIDs, pid) {
					t.Errorf("demo.sleep ran on %q, not on a worker the script started (pids %v)", worker, workerPIDs)
					return
				}
				seen[pid] = true
			})
		}
		wg.Wait()
	}
	if len(seen) != 2 {
		t.Errorf("50 calls ran on workers %v; want both of %v", seen, workerPIDs)
	}

	stopClusterScript(t, s, addr, out, cmd, done)
}

// runClusterScript starts scripts/cluster with args, on a free address and
// s's prefix, and returns once it said it is ready; the test's end stops
// it (SIGINT, then SIGKILL and its processes by PID).
func runClusterScript(t *testing.T, s *system, args ...string) (addr string, out *scriptOutput, cmd *exec.Cmd, done chan struct{}) {
	t.Helper()
	addr = freeRun(t, 3) // with --gateways, the replicas listen on the ports after it
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "cluster"))
	if err != nil {
		t.Fatal(err)
	}

	out = &scriptOutput{ready: make(chan struct{})}
	cmd = exec.Command(script, append(args, "--listen", addr, "--prefix", s.prefix)...)
	// TMPDIR: the script's binaries and logs go to a directory the test removes.
	cmd.Env = append(os.Environ(), "ATASKS_AMQP_URL="+s.url, "TMPDIR="+t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second // a process that kept our pipe open must not hold Wait up
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// Whatever failed: the script stops what it started on SIGINT; if it
		// cannot, kill it and then its processes by PID.
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		for _, pid := range out.pids() {
			if slices.Contains(processesWith(s.prefix), pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("--- scripts/cluster output:\n%s", out)
		}
	})

	select {
	case <-out.ready:
	case <-done:
		t.Fatalf("scripts/cluster exited (%v) before it was ready", cmd.ProcessState)
	case <-time.After(4 * time.Minute):
		t.Fatal("scripts/cluster did not say it was ready within 4 minutes")
	}
	return addr, out, cmd, done
}

// freeRun returns a loopback address whose port and the n-1 after it are free.
func freeRun(t *testing.T, n int) string {
	t.Helper()
	for range 50 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		held := []net.Listener{first}
		for i := 1; i < n; i++ {
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+i)); err == nil {
				held = append(held, ln)
			}
		}
		for _, ln := range held {
			ln.Close()
		}
		if len(held) == n {
			return first.Addr().String()
		}
	}
	t.Fatalf("found no %d free ports in a row", n)
	return ""
}

// stopClusterScript sends scripts/cluster SIGINT and checks that it exits 0
// within 30 s, leaving nothing running or listening at addr.
func stopClusterScript(t *testing.T, s *system, addr string, out *scriptOutput, cmd *exec.Cmd, done chan struct{}) {
	t.Helper()
	pids := out.pids()
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("scripts/cluster did not exit within 30 s of SIGINT")
	}
	t.Logf("scripts/cluster exited %v after SIGINT", time.Since(start).Round(time.Millisecond))
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("scripts/cluster exited with status %d after SIGINT; want 0", code)
	}
	if !strings.Contains(out.String(), "stopped; logs are kept in") {
		t.Error("scripts/cluster did not say it stopped")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens at %s, the gateway's address", addr)
	}
	// The script reaped its processes before it exited; allow a moment for
	// /proc to catch up all the same.
	deadline := time.Now().Add(2 * time.Second)
	for {
		var left []string
		for name, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				left = append(left, fmt.Sprintf("%s (pid %d): %v", name, pid, err))
			}
		}
		for _, pid := range processesWith(s.prefix) {
			left = append(left, fmt.Sprintf("pid %d, with the prefix in its command line", pid))
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left after scripts/cluster exited: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scripts/cluster --gateways 2: HAProxy in front of two replicas sharing
// the history; calls through the load balancer are read through it (round
// robin: mostly on the other replica); a replica killed, the calls made
// before are still answered and new ones still served; SIGINT stops all.
func TestClusterScriptReplicas(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	addr, out, cmd, done := runClusterScript(t, s, "--workers", "2", "--gateways", "2")
	pids := out.pids()
	for _, name := range []string{"haproxy", "gateway 1", "gateway 2", "worker 1", "worker 2"} {
		if pids[name] == 0 {
			t.Fatalf("no PID of %s in the output: %v", name, pids)
		}
	}
	base := "http://" + addr
	var ids []string
	for i := range 20 {
		inv := call(t, base, "default", "demo.sleep", fmt.Sprintf(`{"ms":20,"value":%d}`, i), "?wait=0")
		if got := poll(t, base, "default", inv.ID, 30*time.Second); got.State != "succeeded" || string(got.Result) != fmt.Sprint(i) {
			t.Fatalf("call %d through the load balancer: %d %s %s %s", i, got.status, got.State, got.Result, got.Code)
		}
		ids = append(ids, inv.ID)
	}
	if !slices.Contains(processesWith(s.prefix), pids["gateway 1"]) {
		t.Fatalf("pid %d is not a process of this cluster", pids["gateway 1"])
	}
	if err := syscall.Kill(pids["gateway 1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got := poll(t, base, "default", id, 10*time.Second); got.State != "succeeded" || string(got.Result) != fmt.Sprint(i) {
			t.Fatalf("call %d after replica 1's death: %d %s %s %s", i, got.status, got.State, got.Result, got.Code)
		}
	}
	for i := range 10 {
		if inv := call(t, base, "default", "demo.add", fmt.Sprintf(`{"a":%d,"b":1}`, i), "?wait=30s"); inv.State != "succeeded" || string(inv.Result) != fmt.Sprint(i+1) {
			t.Fatalf("demo.add after replica 1's death: %d %s %s %s", inv.status, inv.State, inv.Result, inv.Code)
		}
	}
	waitUntil(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "gateway 1 (pid") })
	stopClusterScript(t, s, addr, out, cmd, done)
}

// callWorker invokes task with input and returns the worker that ran it.
func callWorker(base, task, input string) (string, error) {
	res, err := http.Post(base+"/v1/ns/default/tasks/"+task+"?wait=30s", "application/json", strings.NewReader(input))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var inv struct {
		State  string `json:"state"`
		Worker string `json:"worker"`
	}
	if err := json.NewDecoder(res.Body).Decode(&inv); err != nil || res.StatusCode != 200 || inv.State != "succeeded" || inv.Worker == "" {
		return "", fmt.Errorf("%s: %d %+v %v", task, res.StatusCode, inv, err)
	}
	return inv.Worker, nil
}
