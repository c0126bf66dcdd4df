//go:build cluster

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests run a RabbitMQ cluster of their own (scripts/rabbitmq-cluster)
// and take its nodes away under load; scripts/test runs them in a step of
// their own: go test -tags cluster -run RabbitCluster.

// Three nodes; one gateway and three workers, each connected first to
// another node. Three runs of 30 s with 64 calls in flight, each losing
// the node that leads the task queues at that moment — stopped
// (stop_app), killed (SIGKILL), cut off (iptables, where the machine
// allows it) — and bringing it back, with a worker started on that node
// just before: every call ends with its right result, at once or after
// the client's retries of retryable errors; none is lost, none wrong,
// none hangs. The worker on the lost node reconnects to another node and
// serves on.
func TestRabbitClusterNodeLoss(t *testing.T) {
	c := startRabbitCluster(t, 3)
	s := &system{t: t, url: c.urls[0], prefix: "e2e" + strconv.Itoa(c.port)}
	// heartbeat=5: a connection to a node cut off is given up after about
	// 15 s rather than 30 (docs/DEPLOY.md).
	url := func(first int) string { return c.urlList(first, "?heartbeat=5") }
	s.env = []string{"ATASKS_AMQP_URL=" + url(1)}
	s.observed("testworker-plain") // first: the task queues' leaders are on node 1
	for k := 2; k <= 3; k++ {
		s.env = []string{"ATASKS_AMQP_URL=" + url(k)}
		s.observed("testworker-plain")
	}
	s.env = []string{"ATASKS_AMQP_URL=" + url(3)}
	_, base := s.gatewayBinary("gateway-plain")
	waitServed(t, base, "default", "demo.sleep")

	faults := []struct {
		name           string
		cause, restore string // scripts/rabbitmq-cluster commands
		away           time.Duration
	}{
		{"stop_app", "stop-node", "start-node", 10 * time.Second},
		{"kill -9", "kill-node", "start-node", 10 * time.Second},
		{"partition", "cut-node", "heal-node", 20 * time.Second},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			if f.cause == "cut-node" {
				if reason := c.cannotCut(); reason != "" {
					t.Skip("cutting a node off needs " + reason)
				}
			}
			lost := c.leader(t, s.prefix+".default.task.demo.sleep")
			s.env = []string{"ATASKS_AMQP_URL=" + url(lost)}
			w, metrics := s.observed("testworker-plain")
			t.Logf("node %d leads the task queue; a new worker connected to it", lost)

			// Through the gateway, wherever earlier runs moved it. (A second
			// gateway started on the lost node hung its calls after a
			// stop_app in 2 of 6 runs: found, not fixed; see the closing note
			// of issue 20.)
			load := startClusterLoad([]string{base}, 64, 30*time.Second)
			t.Cleanup(func() { load.wait(2 * time.Minute) }) // the next run starts without it
			time.Sleep(5 * time.Second)
			c.script(t, f.cause, strconv.Itoa(lost))
			load.lose()
			back := false
			t.Cleanup(func() { // the node back, whatever failed
				if !back {
					c.script(t, f.restore, strconv.Itoa(lost))
				}
			})
			// The worker on the lost node goes on serving elsewhere, observed
			// while the node is still away.
			// The worker on the lost node reconnects to another while the
			// node is away, and serves on there.
			reconnected := eventually(45*time.Second, func() bool { return otherNode(w.output(), c.port+lost-1) != 0 })
			if !reconnected {
				_ = w.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, in its output
				t.Errorf("the worker on the lost node did not reconnect to another node within 45 s")
			}
			served := metricSum(t, metrics, "atasks_worker_invocations_total")
			if wait := f.away - load.sinceLoss(); wait > 0 {
				time.Sleep(wait)
			}
			c.script(t, f.restore, strconv.Itoa(lost))
			back = true
			if f.restore == "heal-node" {
				c.waitRunning(t, lost)
			}
			r := load.wait(2 * time.Minute)
			if now := metricSum(t, metrics, "atasks_worker_invocations_total"); reconnected && (now <= served || otherNode(w.output(), c.port+lost-1) == 0) {
				t.Errorf("the worker on the lost node served %v invocations after it reconnected to another node, and is connected to port %d; want more than none, elsewhere", now-served, otherNode(w.output(), 0))
			}
			t.Logf("%s of node %d for %v (the first call sent after the loss succeeded %v after it): %s", f.name, lost, f.away, r.back.Round(time.Millisecond), r)
			if r.lost+r.wrong+r.hung > 0 || r.ok != r.sent {
				t.Errorf("%s: want every call ok, none lost, wrong or hung; %s\nfirst problems: %s", f.name, r, strings.Join(r.problems, "\n"))
			}
			if r.sent < 64 {
				t.Errorf("%s: only %d calls in 30 s", f.name, r.sent)
			}
		})
	}
}

// rabbitCluster is a RabbitMQ cluster that scripts/rabbitmq-cluster runs
// for one test, in a directory of the test's.
type rabbitCluster struct {
	dir   string
	port  int // node k's AMQP port is port+k-1
	nodes int
	urls  []string
}

// startRabbitCluster starts a cluster of n nodes on free ports and stops
// it (and heals any cut) when the test ends, failed or not.
func startRabbitCluster(t *testing.T, n int) *rabbitCluster {
	t.Helper()
	c := &rabbitCluster{dir: filepath.Join(t.TempDir(), "rabbitmq"), port: freeNodePorts(t, n), nodes: n}
	t.Cleanup(func() {
		if t.Failed() { // what the nodes said, before stop deletes it
			for k := 1; k <= n; k++ {
				logs, _ := filepath.Glob(filepath.Join(c.dir, fmt.Sprintf("node%d", k), "log", "*.log"))
				for _, l := range logs {
					if b, err := os.ReadFile(l); err == nil {
						var lines []string // what it said of the task queue under load
						for line := range strings.Lines(string(b)) {
							if strings.Contains(line, "task.demo.sleep") && len(lines) < 80 {
								lines = append(lines, line)
							}
						}
						t.Logf("--- %s, on demo.sleep's queue:\n%s", l, strings.Join(lines, ""))
					}
				}
			}
		}
		if out, err := c.run("stop"); err != nil {
			t.Errorf("scripts/rabbitmq-cluster stop: %v\n%s", err, out)
		}
	})
	began := time.Now()
	out, err := c.run("start", "--nodes", strconv.Itoa(n), "--port", strconv.Itoa(c.port))
	if err != nil {
		t.Fatalf("scripts/rabbitmq-cluster start: %v\n%s", err, out)
	}
	c.urls = strings.Split(strings.TrimSpace(out), ",")
	if len(c.urls) != n {
		t.Fatalf("scripts/rabbitmq-cluster start printed %q; want %d URLs", out, n)
	}
	t.Logf("a RabbitMQ cluster of %d nodes on ports %d-%d in %v", n, c.port, c.port+n-1, time.Since(began).Round(time.Second))
	return c
}

// run runs scripts/rabbitmq-cluster with args and the cluster's directory.
func (c *rabbitCluster) run(args ...string) (string, error) {
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "rabbitmq-cluster"))
	if err != nil {
		return "", err
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(script, append(args, "--dir", c.dir)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if err != nil {
		return out.String() + errOut.String(), err
	}
	return out.String(), nil
}

// script runs scripts/rabbitmq-cluster args, failing the test if it fails.
func (c *rabbitCluster) script(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(args...)
	if err != nil {
		t.Fatalf("scripts/rabbitmq-cluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// urlList is the cluster's URLs, node first first, each with query.
func (c *rabbitCluster) urlList(first int, query string) string {
	var urls []string
	for i := range c.nodes {
		urls = append(urls, strings.TrimSuffix(c.urls[(first-1+i)%c.nodes], "/")+"/"+query)
	}
	return strings.Join(urls, ",")
}

// leader returns the node leading queue, as the first node that answers
// sees it.
func (c *rabbitCluster) leader(t *testing.T, queue string) int {
	t.Helper()
	for k := 1; k <= c.nodes; k++ {
		out, err := c.run("ctl", strconv.Itoa(k), "list_queues", "name", "leader")
		if err != nil {
			continue
		}
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
				if m := regexp.MustCompile(`^atasks(\d)-\d+@`).FindStringSubmatch(f[1]); m != nil {
					n, _ := strconv.Atoi(m[1])
					return n
				}
			}
		}
	}
	t.Fatalf("no node of the cluster names the leader of %s", queue)
	return 0
}

// waitRunning waits until node k sees every node of the cluster running.
func (c *rabbitCluster) waitRunning(t *testing.T, k int) {
	t.Helper()
	within(t, 2*time.Minute, fmt.Sprintf("node %d seeing all %d nodes running", k, c.nodes), func() {
		for {
			out, err := c.run("ctl", strconv.Itoa(k), "eval", "length(rabbit_nodes:all_running()).")
			if n, _ := strconv.Atoi(strings.TrimSpace(out)); err == nil && n == c.nodes {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// cannotCut says what this machine lacks to cut a node off, or "" if
// nothing: root, iptables, the nodes in cgroups of their own.
func (c *rabbitCluster) cannotCut() string {
	if _, err := exec.LookPath("iptables"); err != nil {
		return "iptables"
	}
	if out, err := exec.Command("iptables", "-n", "-L", "INPUT").CombinedOutput(); err != nil {
		return fmt.Sprintf("iptables to work (root): %v %s", err, out)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); !bytes.Contains(mounts, []byte(" cgroup2 ")) {
		return "cgroup v2"
	}
	return ""
}

// freeNodePorts returns a port p such that p…p+n-1 and the inter-node
// ports 20 000 above them are free on 127.0.0.1.
func freeNodePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		p := 20000 + int(time.Now().UnixNano()%20000)
		free := true
		for k := range n {
			for _, port := range []int{p + k, p + k + 20000} {
				ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					free = false
					continue
				}
				ln.Close()
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("found no free ports for the cluster's nodes")
	return 0
}

// otherNode returns the port of the node that a process's log says it
// last connected to, if that is not lost; 0 while it is (or none yet).
func otherNode(log string, lost int) int {
	m := regexp.MustCompile(`msg="amqp: (?:re)?connected" ns=default url="?amqp://[^@]*@127\.0\.0\.1:(\d+)/`).FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0
	}
	port, _ := strconv.Atoi(m[len(m)-1][1])
	if port == lost {
		return 0
	}
	return port
}

// clusterLoad keeps calls to demo.sleep in flight through a gateway, each
// with a value of its own that its result must be, retrying what fails
// retryably as a client would.
type clusterLoad struct {
	bases    []string // gateways, taking the calls in turn
	began    time.Time
	lossAt   atomic.Int64 // UnixNano of the node's loss, once it happened
	done     chan struct{}
	mu       sync.Mutex
	r        loadReport
	firstOK  time.Time // the first success of a call sent after the loss
	inflight atomic.Int64
}

// loadReport counts the calls of one run.
type loadReport struct {
	sent, ok, retried, retries, lost, wrong, hung int
	back                                          time.Duration // from the loss to the first success of a call sent after it
	problems                                      []string
}

func (r loadReport) String() string {
	return fmt.Sprintf("%d calls sent, %d ok, %d retried (%d retries), %d lost, %d wrong, %d hung",
		r.sent, r.ok, r.retried, r.retries, r.lost, r.wrong, r.hung)
}

// startClusterLoad starts n callers that call until d has passed.
func startClusterLoad(bases []string, n int, d time.Duration) *clusterLoad {
	l := &clusterLoad{bases: bases, began: time.Now(), done: make(chan struct{})}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for time.Since(l.began) < d {
				l.call(int(next.Add(1)))
			}
		})
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// lose marks the moment the node was lost.
func (l *clusterLoad) lose() { l.lossAt.Store(time.Now().UnixNano()) }

func (l *clusterLoad) sinceLoss() time.Duration {
	return time.Since(time.Unix(0, l.lossAt.Load()))
}

// client bounds every request: a gateway answers a wait of 10 s within
// seconds of it, so one taking a minute is hung.
var loadClient = &http.Client{Timeout: time.Minute}

// call makes call i until it ends with a result or a non-retryable error,
// for at most 90 s: so that the whole test, however it fails, ends well
// within scripts/test's timeout and its cleanup stops the cluster.
func (l *clusterLoad) call(i int) {
	l.inflight.Add(1)
	defer l.inflight.Add(-1)
	want := strconv.Itoa(i)
	retries := 0
	var verdict, problem string
	var sentAt time.Time
	for deadline := time.Now().Add(90 * time.Second); ; retries++ {
		if time.Now().After(deadline) {
			verdict, problem = "hung", "no outcome in 90 s"
			break
		}
		if retries > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		sentAt = time.Now()
		inv, err := l.attempt(i)
		if err != nil {
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() {
				verdict, problem = "hung", err.Error()
				break
			}
			continue // the gateway unreachable a moment: a client retries
		}
		switch {
		case inv.State == "succeeded" && string(inv.Result) == want:
			verdict = "ok"
		case inv.State == "succeeded":
			verdict, problem = "wrong", fmt.Sprintf("result %s", inv.Result)
		case inv.Retryable || inv.Error != nil && inv.Error.Retryable:
			continue
		default:
			verdict, problem = "lost", fmt.Sprintf("%d %s %s %+v", inv.status, inv.State, inv.Code, inv.Error)
		}
		break
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.sent++
	if retries > 0 {
		l.r.retried++
		l.r.retries += retries
	}
	switch verdict {
	case "ok":
		l.r.ok++
		if loss := l.lossAt.Load(); loss != 0 && sentAt.UnixNano() > loss && l.firstOK.IsZero() {
			l.firstOK = time.Now()
		}
	case "wrong":
		l.r.wrong++
	case "lost":
		l.r.lost++
	case "hung":
		l.r.hung++
	}
	if verdict != "ok" && len(l.r.problems) < 10 {
		l.r.problems = append(l.r.problems, fmt.Sprintf("call %d: %s: %s", i, verdict, problem))
	}
}

// attempt posts call i once and follows it to its outcome.
func (l *clusterLoad) attempt(i int) (invocation, error) {
	base := l.bases[i%len(l.bases)]
	res, err := loadClient.Post(base+"/v1/ns/default/tasks/demo.sleep?wait=10s", "application/json",
		strings.NewReader(fmt.Sprintf(`{"ms":20,"value":%d}`, i)))
	for err == nil {
		var inv invocation
		body, rerr := io.ReadAll(res.Body)
		res.Body.Close()
		if rerr != nil {
			return inv, rerr
		}
		if err := json.Unmarshal(body, &inv); err != nil {
			return inv, fmt.Errorf("%d %s: %w", res.StatusCode, body, err)
		}
		inv.status = res.StatusCode
		if res.StatusCode != http.StatusAccepted && !(res.StatusCode == http.StatusOK && !isFinal(inv.State)) {
			return inv, nil
		}
		res, err = loadClient.Get(base + "/v1/ns/default/invocations/" + inv.ID + "?wait=10s")
	}
	return invocation{}, err
}

// wait waits for the callers to end, at most d, and reports.
func (l *clusterLoad) wait(d time.Duration) loadReport {
	select {
	case <-l.done:
	case <-time.After(d):
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.r
	r.problems = slices.Clone(r.problems)
	if n := int(l.inflight.Load()); n > 0 {
		r.hung += n
		r.sent += n
		r.problems = append(r.problems, fmt.Sprintf("%d calls still in flight %v after the load ended", n, d))
	}
	if !l.firstOK.IsZero() {
		r.back = l.firstOK.Sub(time.Unix(0, l.lossAt.Load()))
	}
	return r
}

// eventually polls ok until it holds or d has passed, and says which.
func eventually(d time.Duration, ok func() bool) bool {
	for deadline := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
