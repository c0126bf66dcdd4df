package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
)

// oneOff is a scenario measured once, whatever --inflight says.
type oneOff func(ctx context.Context, e *env) (result, error)

// oneOffs maps each one-off scenario's name to its function.
var oneOffs = map[string]oneOff{"fib": fibOn("fib", nil), "fib-volatile": fibOn("fib-volatile", demo.VolatileFib()), "ws-open": runWSOpen, "poll-open": runPollOpen}

// fibN is the argument of the fib scenario.
const fibN = 20

// fibOn is scenario name: the wall time of demo.fib n=fibN on two
// workers over AMQP serving reg (nil: the demo's tasks, demo.fib
// durable), a recursive fan-out of fibCalls(fibN) invocations.
func fibOn(name string, reg *atasks.Registry) oneOff {
	return func(ctx context.Context, e *env) (result, error) { return runFib(ctx, e, name, reg) }
}

func runFib(ctx context.Context, e *env, name string, reg *atasks.Registry) (result, error) {
	r, err := startRemote(ctx, e, 2, workerConcurrency, reg, false, nil)
	if err != nil {
		return result{}, err
	}
	defer r.stop(e)
	ctx, cancel := context.WithTimeout(atasks.WithClient(ctx, r.caller), 2*time.Minute)
	defer cancel()
	start := time.Now()
	got, err := demo.Fib.Call(ctx, demo.FibIn{N: fibN})
	elapsed := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("demo.fib %d: %w", fibN, err)
	}
	n := fibCalls(fibN)
	return result{
		scenario: name, ok: n, elapsed: elapsed, throughput: float64(n) / elapsed.Seconds(),
		p50: elapsed, p99: elapsed, p999: elapsed,
		note: fmt.Sprintf("fib(%d) = %d: %d invocations on 2 workers in %s", fibN, got, n, fmtDur(elapsed)),
	}, nil
}

// fibCalls is how many invocations demo.fib n makes, itself included.
func fibCalls(n int) int {
	if n < 2 {
		return 1
	}
	return 1 + fibCalls(n-1) + fibCalls(n-2)
}

const (
	openCalls   = 10_000           // the ws-open scenario's concurrent calls
	openPerConn = 1000             // calls per connection: the gateway's default --ws-max-calls
	openHold    = 20 * time.Second // how long each of them sleeps
)

// runWSOpen opens openCalls WebSocket calls of demo.sleep at once on a
// gateway process fronting a worker over AMQP, and reads the gateway's
// RSS and goroutines while all of them are open.
func runWSOpen(ctx context.Context, e *env) (result, error) {
	gw, err := startGatewayProcess(ctx, e)
	if err != nil {
		return result{}, err
	}
	defer gw.stop()
	r, err := startRemote(ctx, e, 1, openCalls, nil, false, nil)
	if err != nil {
		return result{}, err
	}
	defer r.stop(e)
	if err := awaitServed(gw.base, demo.Sleep.Name(), 20*time.Second); err != nil {
		return result{}, err
	}
	conns := make([]*wsClient, 0, openCalls/openPerConn)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	for range cap(conns) {
		c, err := dialWS(ctx, gw.base)
		if err != nil {
			return result{}, err
		}
		conns = append(conns, c)
	}
	input := fmt.Sprintf(`{"ms":%d,"value":1}`, openHold.Milliseconds())
	call := func(ctx context.Context, i int) error {
		return conns[i%len(conns)].call(ctx, atasks.DefaultNamespace, demo.Sleep.Name(), input)
	}
	opened := func() (time.Duration, error) { return awaitAccepted(conns, openCalls, openHold/2) }
	return measureOpen(ctx, gw, "ws-open", "calls", call, opened)
}

// runPollOpen makes openCalls long-polls of demo.sleep at once, each a
// POST with ?wait on its own keep-alive connection, to a gateway process
// fronting a worker over AMQP, and reads the gateway's RSS and goroutines
// while all of them wait.
func runPollOpen(ctx context.Context, e *env) (result, error) {
	gw, err := startGatewayProcess(ctx, e, "--max-in-flight", "0", "--max-unfinished-per-caller", "-1")
	if err != nil {
		return result{}, err
	}
	defer gw.stop()
	r, err := startRemote(ctx, e, 1, openCalls, nil, false, nil)
	if err != nil {
		return result{}, err
	}
	defer r.stop(e)
	if err := awaitServed(gw.base, demo.Sleep.Name(), 20*time.Second); err != nil {
		return result{}, err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: openCalls, MaxIdleConns: openCalls}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := gw.base + "/v1/ns/" + atasks.DefaultNamespace + "/tasks/" + demo.Sleep.Name() + "?wait=" + (openHold + 30*time.Second).String()
	input := fmt.Sprintf(`{"ms":%d,"value":1}`, openHold.Milliseconds())
	call := func(ctx context.Context, _ int) error { return post(ctx, client, url, input) }
	opened := func() (time.Duration, error) {
		return awaitGauge(gw.base, "atasks_gateway_results_stored", openCalls, openHold/2)
	}
	return measureOpen(ctx, gw, "poll-open", "long-polls", call, opened)
}

// measureOpen makes openCalls calls at once (call gets each one's index),
// waits with opened until all of them are open, then reads the gateway's
// RSS and goroutines and waits for the calls to end; what names them in
// the result's note.
func measureOpen(ctx context.Context, gw *gatewayProcess, scenario, what string, call func(context.Context, int) error, opened func() (time.Duration, error)) (result, error) {
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range openCalls {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, openHold+time.Minute)
			defer cancel()
			if err := call(cctx, i); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	took, err := opened()
	if err != nil {
		return result{}, err
	}
	time.Sleep(time.Second) // every call has reached its worker and runs
	rss, rssErr := residentMiB(gw.cmd.Process.Pid)
	goroutines, gErr := scrapeGauge(gw.base, "go_goroutines")
	wg.Wait()
	res := result{
		scenario: scenario, inflight: openCalls, ok: openCalls - int(failed.Load()), errors: int(failed.Load()),
		elapsed: took, throughput: float64(openCalls) / took.Seconds(),
		note: fmt.Sprintf("gateway RSS %.0f MiB, %.0f goroutines with %d %s open (all open %s after the first)", rss, goroutines, openCalls, what, fmtDur(took)),
	}
	if err, ok := firstErr.Load().(error); ok {
		res.firstErr = err
	}
	if err := errors.Join(rssErr, gErr); err != nil {
		return res, err
	}
	progress("%s took %s in all", scenario, fmtDur(time.Since(start)))
	return res, nil
}

// awaitGauge waits until base's unlabelled gauge name reaches n, and
// returns how long that took.
func awaitGauge(base, name string, n int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		if v, err := scrapeGauge(base, name); err == nil && v >= float64(n) {
			return time.Since(start), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s did not reach %d within %s", name, n, limit)
}

// awaitAccepted waits until conns have had n calls accepted in all, and
// returns how long that took.
func awaitAccepted(conns []*wsClient, n int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		var sum int64
		for _, c := range conns {
			sum += c.accepted.Load()
		}
		if sum >= int64(n) {
			return time.Since(start), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("fewer than %d calls accepted within %s", n, limit)
}

// gatewayProcess is cmd/gateway running as its own process, so that its
// memory is its own.
type gatewayProcess struct {
	cmd  *exec.Cmd
	base string
	dir  string
}

// startGatewayProcess builds cmd/gateway, starts it over the run's broker
// and prefix on a free port with the extra flags, and waits until it
// answers /healthz.
func startGatewayProcess(ctx context.Context, e *env, flags ...string) (*gatewayProcess, error) {
	dir, err := os.MkdirTemp("", "atasks-bench-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "gateway")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/atasks-go/atasks/cmd/gateway")
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("building cmd/gateway (run atasks-bench from the repository): %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	g := &gatewayProcess{dir: dir, base: "http://" + addr}
	g.cmd = exec.Command(bin, append([]string{"--amqp-url", e.amqpURL, "--prefix", e.prefix, "--listen", addr, "--log-level", "warn"}, flags...)...)
	g.cmd.Stderr = os.Stderr
	if err := g.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := awaitHTTP(g.base+"/healthz", 20*time.Second); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

// stop ends the gateway with SIGTERM (SIGKILL after stopTimeout) and
// removes its binary.
func (g *gatewayProcess) stop() {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = g.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(g.dir)
}

// awaitHTTP waits until url answers 200.
func awaitHTTP(url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s (%v)", url, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitServed waits until the gateway at base lists task in its catalog of
// the default namespace.
func awaitServed(base, task string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		res, err := http.Get(base + "/v1/ns/" + atasks.DefaultNamespace + "/tasks")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(b), `"`+task+`"`) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the gateway did not list %s within %s", task, limit)
}

// residentMiB reads process pid's resident set size from /proc.
func residentMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// scrapeGauge reads the value of an unlabelled metric from base's /metrics.
func scrapeGauge(base, name string) (float64, error) {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s/metrics", name, base)
}
