// Package e2e tests atasks as users run it: the real binaries as processes,
// talking through a real RabbitMQ.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// bin holds the binaries TestMain builds.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "atasks-e2e-")
	if err != nil {
		panic(err)
	}
	bin = dir
	build := exec.Command("go", "build", "-race", "-o", dir+"/", "github.com/atasks-go/atasks/cmd/gateway", "github.com/atasks-go/atasks/cmd/worker", "github.com/atasks-go/atasks/internal/e2e/testworker", "github.com/atasks-go/atasks/clients/go/conformance")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		os.Exit(1)
	}
	// Without the race detector, for measuring memory and for the long
	// fault runs, which it would slow down five to ten times.
	for _, b := range []struct{ name, pkg string }{
		{"gateway-plain", "github.com/atasks-go/atasks/cmd/gateway"},
		{"testworker-plain", "github.com/atasks-go/atasks/internal/e2e/testworker"},
	} {
		plain := exec.Command("go", "build", "-o", dir+"/"+b.name, b.pkg)
		plain.Stdout, plain.Stderr = os.Stderr, os.Stderr
		if err := plain.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building", b.name+":", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// brokerURL returns the URL of the test broker, failing the test with how to
// get one when none answers. It never skips: broker tests must run.
func brokerURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("ATASKS_AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatalf("no RabbitMQ at %s (%v): run scripts/test, which finds or starts one, or set ATASKS_AMQP_URL", url, err)
	}
	conn.Close()
	return url
}

// system is one isolated installation on the test broker: its own prefix.
type system struct {
	t      *testing.T
	url    string
	prefix string
	// extra names, by namespace, tasks that binaries built outside this
	// module serve (examples/): deleteTopology deletes their objects too.
	extra map[string][]string
	// env is more environment, NAME=value, for the processes start runs
	// from now on: ATASKS_DEMO_LEDGER, say.
	env []string
}

func newSystem(t *testing.T) *system {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := &system{t: t, url: brokerURL(t), prefix: "e2e" + hex.EncodeToString(b)}
	t.Cleanup(s.deleteTopology)
	return s
}

// deleteTopology deletes the exchanges and queues the system's processes
// declared: those named in docs/PROTOCOL.md for the demo namespaces and
// tasks (the journal and history streams too), and the reply queues that
// rabbitmqctl lists under the prefix.
func (s *system) deleteTopology() {
	conn, err := amqp091.Dial(s.url)
	if err != nil {
		s.t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	var queues []string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_queues", "name").Output(); err == nil {
		queues = strings.Fields(string(out))
	}
	namespaces := []string{"default", "seed"}
	for ns := range s.extra {
		namespaces = append(namespaces, ns)
	}
	for _, ns := range namespaces {
		b := s.prefix + "." + ns
		queues = append(queues, b+".dead", b+".lease", b+".journal", b+".history", b+".due", b+".cancels")
		for k := range amqp.DelayRungs { // the delay ladder (PROTOCOL §15)
			queues = append(queues, fmt.Sprintf("%s.delay.%d", b, k))
		}
		for _, task := range append(append(atasks.Defined(ns), s.extra[ns]...), "test.crash", "test.fib_all") {
			queues = append(queues, b+".task."+task)
		}
	}
	for _, q := range queues {
		if !strings.HasPrefix(q, s.prefix+".") {
			continue
		}
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	}
	for _, ns := range namespaces {
		for _, x := range []string{"tasks", "control", "dlx", "lease", "activity", "due"} {
			if ch, err := conn.Channel(); err == nil {
				_ = ch.ExchangeDelete(s.prefix+"."+ns+"."+x, false, false)
				ch.Close()
			}
		}
	}
}

// proc is a started binary.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// start runs binary name with args; the test's end kills it if still running.
func (s *system) start(name string, args ...string) *proc {
	s.t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(bin, name), args...)
	p.cmd.Env = append(append(os.Environ(), "ATASKS_AMQP_URL="+s.url, "ATASKS_PREFIX="+s.prefix, "ATASKS_LOG_LEVEL=debug"), s.env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	s.t.Cleanup(func() {
		p.kill()
		if s.t.Failed() {
			p.mu.Lock()
			s.t.Logf("--- %s output:\n%s", p.name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

// output returns what p wrote so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to d for a graceful exit.
func (p *proc) stop(t *testing.T, d time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not stop within %v", p.name, d)
	}
}

// worker starts cmd/worker and returns once it is ready: connected and
// serving, its task queues declared.
func (s *system) worker(args ...string) *proc {
	s.t.Helper()
	p, _ := s.observed("worker", args...)
	return p
}

// gateway starts a gateway on a free port and returns it once it answers.
func (s *system) gateway(args ...string) (*proc, string) {
	s.t.Helper()
	return s.gatewayBinary("gateway", args...)
}

// gatewayBinary starts binary ("gateway", or "gateway-plain", built
// without the race detector, for measuring its memory) as a gateway.
func (s *system) gatewayBinary(binary string, args ...string) (*proc, string) {
	s.t.Helper()
	addr := freeAddr(s.t)
	p := s.start(binary, append([]string{"--listen", addr}, args...)...)
	base := "http://" + addr
	waitStatus(s.t, base+"/readyz", 200, time.Minute)
	return p, base
}

// invocation is the gateway's resource, as tests read it.
type invocation struct {
	ID       string          `json:"id"`
	Task     string          `json:"task"`
	State    string          `json:"state"`
	Result   json.RawMessage `json:"result"`
	Children []string        `json:"children"`
	Attempt  int             `json:"attempt"`
	RunAt    time.Time       `json:"run_at"` // a delayed call's
	Error    *struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Retryable bool   `json:"retryable"`
	} `json:"error"`
	status int
	// Of a problem (the gateway's own error):
	Code      string `json:"code"`
	Retryable bool   `json:"retryable"`
}

// call posts an invocation and returns the response.
func call(t testing.TB, base, ns, task, input, query string) invocation {
	t.Helper()
	res, err := http.Post(base+"/v1/ns/"+ns+"/tasks/"+task+query, "application/json", strings.NewReader(input))
	if err != nil {
		t.Fatalf("POST %s: %v", task, err)
	}
	return read(t, res)
}

// poll long-polls an invocation until it is final or d passes.
func poll(t testing.TB, base, ns, id string, d time.Duration) invocation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		res, err := http.Get(base + "/v1/ns/" + ns + "/invocations/" + id + "?wait=5s")
		if err != nil {
			t.Fatalf("GET %s: %v", id, err)
		}
		inv := read(t, res)
		if inv.status != 200 || isFinal(inv.State) || time.Now().After(deadline) {
			return inv
		}
	}
}

func isFinal(state string) bool {
	switch state {
	case "succeeded", "failed", "cancelled", "timed_out":
		return true
	}
	return false
}

func read(t testing.TB, res *http.Response) invocation {
	t.Helper()
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var inv invocation
	if err := json.Unmarshal(raw, &inv); err != nil {
		t.Fatalf("response %d is not JSON: %q", res.StatusCode, raw)
	}
	inv.status = res.StatusCode
	return inv
}

// within fails the test if fn does not return within d.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}

// waitServed waits until the gateway's catalog lists task in ns.
func waitServed(t *testing.T, base, ns, task string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get(base + "/v1/ns/" + ns + "/tasks")
		if err != nil {
			t.Fatal(err)
		}
		var cat struct{ Tasks []struct{ Name string } }
		_ = json.NewDecoder(res.Body).Decode(&cat)
		res.Body.Close()
		for _, x := range cat.Tasks {
			if x.Name == task {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no worker announced %s/%s within 30s", ns, task)
}

// freeAddr returns a loopback address with a free port.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// observed starts a worker binary (cmd/worker or testworker) with its
// metrics and readiness served (on the --metrics-listen that args give, or
// a free port), and returns once /readyz answers 200: the worker is
// connected and serving. base is its metrics server.
func (s *system) observed(binary string, args ...string) (p *proc, base string) {
	s.t.Helper()
	addr := ""
	if i := slices.Index(args, "--metrics-listen"); i >= 0 && i+1 < len(args) {
		addr = args[i+1]
	} else {
		addr = freeAddr(s.t)
		args = append([]string{"--metrics-listen", addr}, args...)
	}
	p = s.start(binary, args...)
	base = "http://" + addr
	waitStatus(s.t, base+"/readyz", 200, 60*time.Second)
	return p, base
}

// waitStatus waits until GET url answers status.
func waitStatus(t testing.TB, url string, status int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := "no answer"
	for time.Now().Before(deadline) {
		res, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == status {
				return
			}
			last = fmt.Sprintf("%d %s", res.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s did not answer %d within %v; last: %s", url, status, d, last)
}

// metricSum adds up the samples of metric name (all its labels) that the
// Prometheus endpoint base+"/metrics" shows; 0 if it shows none.
func metricSum(t testing.TB, base, name string) float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var sum float64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// waitMetric waits until metricSum of name at base satisfies ok.
func waitMetric(t testing.TB, base, name string, d time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := metricSum(t, base, name)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s is %v after %v", name, base, v, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exitCode returns p's exit status once it has ended.
func (p *proc) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}
