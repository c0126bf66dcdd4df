package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/transport/amqp"
)

func TestDemoAndSeedThroughTwoWorkers(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.worker()
	s.worker()
	_, gw := s.gateway()
	for _, tc := range []struct{ ns, task, in, want string }{
		{"default", "demo.add", `{"a":2,"b":3}`, `5`},
		{"default", "demo.echo", `{"s":"é✓","n":[1,2.5,null]}`, `{"n":[1,2.5,null],"s":"é✓"}`},
		{"default", "demo.fib", `{"n":15}`, `610`},
		{"default", "demo.gather", `{"n":10,"ms":100}`, `[0,1,2,3,4,5,6,7,8,9]`},
		{"default", "demo.sleep", `{"ms":100,"value":"z"}`, `"z"`},
		{"default", "demo.seed", ``, `[0,1,2,3,4,0,1,2,3,4]`},
		{"seed", "task_three", `7`, `7`},
		{"seed", "request_sequence", ``, `[1,3]`},
	} {
		inv := call(t, gw, tc.ns, tc.task, tc.in, "?wait=30s")
		if inv.status != 200 || inv.State != "succeeded" || string(inv.Result) != tc.want {
			t.Errorf("%s %s: %d %s %s %+v; want %s", tc.ns, tc.task, inv.status, inv.State, inv.Result, inv.Error, tc.want)
		}
	}
	start := time.Now()
	inv := call(t, gw, "seed", "request_parallel", ``, "?wait=30s")
	if string(inv.Result) != `[0,1,2,3,4,0,1,2,3,4]` || time.Since(start) > 4*time.Second {
		t.Errorf("request_parallel: %s in %v; want the ten values in about 2 s", inv.Result, time.Since(start))
	}
	for _, tc := range []struct{ task, in, code string }{
		{"demo.fail", `{"code":"c","message":"m"}`, "c"},
		{"demo.panic", ``, "panic"},
	} {
		if inv := call(t, gw, "default", tc.task, tc.in, "?wait=30s"); inv.State != "failed" || inv.Error == nil || inv.Error.Code != tc.code {
			t.Errorf("%s: %s %+v; want failed with %s", tc.task, inv.State, inv.Error, tc.code)
		}
	}
	// The workers announce demo.add's input schema: the gateway refuses what does not fit.
	if inv := call(t, gw, "default", "demo.add", `{"a":"x"}`, "?wait=30s"); inv.status != 400 || inv.Code != "bad_input" {
		t.Errorf("demo.add with a wrong input: %d %s", inv.status, inv.Code)
	}
	if inv := call(t, gw, "default", "demo.nope", ``, ""); inv.status != 404 {
		t.Errorf("unknown task: %d", inv.status)
	}
}

// A Go program calls tasks through the broker with the SDK alone: no gateway.
func TestSDKCallsWorkersWithoutGateway(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.worker()
	ctx := s.client(t)
	waitCatalog(t, ctx, "default", demo.Add.Name())
	waitCatalog(t, ctx, demo.SeedNamespace, demo.RequestParallel.Name())
	sum, err := demo.Add.Call(ctx, demo.AddIn{A: 40, B: 2})
	if err != nil || sum != 42 {
		t.Fatalf("add: %v %v", sum, err)
	}
	outs, err := demo.Seed.Call(ctx, nil)
	if err != nil || len(outs) != 10 {
		t.Fatalf("seed: %v %v", outs, err)
	}
	_, err = demo.Fail.Call(ctx, demo.FailIn{Code: "out_of_stock", Message: "none"})
	if !errors.Is(err, atasks.NewError("out_of_stock", "", nil)) {
		t.Fatalf("fail: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := demo.Sleep.Call(tctx, demo.SleepIn{MS: 10_000}); !errors.Is(err, atasks.ErrTimeout) {
		t.Fatalf("deadline: %v", err)
	}
}

// Nested awaits on one worker with two compute slots: parents waiting for
// children give their slots up, so fib(15)'s 1973 invocations complete.
func TestFibOnOneWorkerWithTwoSlots(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.worker("--concurrency", "2")
	_, gw := s.gateway()
	within(t, 90*time.Second, "fib(15)", func() {
		inv := call(t, gw, "default", "demo.fib", `{"n":15}`, "?wait=1s")
		inv = poll(t, gw, "default", inv.ID, 80*time.Second)
		if inv.State != "succeeded" || string(inv.Result) != "610" {
			t.Errorf("fib(15): %s %s %+v", inv.State, inv.Result, inv.Error)
		}
	})
}

// kill -9 a worker while 100 calls are in flight: every call gets exactly
// its own result from the other worker.
func TestKillWorkerMidTask(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	victim, victimMetrics := s.observed("worker")
	s.worker()
	_, gw := s.gateway()
	ids := make([]string, 100)
	for i := range ids {
		inv := call(t, gw, "default", "demo.sleep", fmt.Sprintf(`{"ms":1500,"value":%d}`, i), "?wait=0s")
		if inv.status != 202 {
			t.Fatalf("call %d: %d %s", i, inv.status, inv.State)
		}
		ids[i] = inv.ID
	}
	waitMetric(t, victimMetrics, "atasks_worker_invocations_in_flight", time.Minute, func(v float64) bool { return v > 0 })
	victim.kill()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			inv := poll(t, gw, "default", id, 60*time.Second)
			if inv.State != "succeeded" || string(inv.Result) != fmt.Sprint(i) {
				t.Errorf("call %d: %s %s %+v", i, inv.State, inv.Result, inv.Error)
			}
		})
	}
	wg.Wait()
}

// A task that kills every worker that runs it is dead-lettered after the
// delivery limit, and its caller gets a typed error instead of a loop.
func TestPoisonTaskIsDeadLettered(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	_, gw := s.gateway()
	victims := []*proc{s.start("testworker")}
	waitServed(t, gw, "default", "test.crash")
	inv := call(t, gw, "default", "test.crash", ``, "?wait=0s")
	if inv.status != 202 {
		t.Fatalf("call: %d %s", inv.status, inv.State)
	}
	// Keep a worker alive to take the next delivery, until the outcome arrives.
	deadline := time.Now().Add(90 * time.Second)
	for !isFinal(inv.State) && time.Now().Before(deadline) {
		last := victims[len(victims)-1]
		select {
		case <-last.done:
			victims = append(victims, s.start("testworker"))
		case <-time.After(200 * time.Millisecond):
		}
		inv = poll(t, gw, "default", inv.ID, 0)
	}
	if inv.State != "failed" || inv.Error == nil || inv.Error.Code != "poison" {
		t.Fatalf("poison: %s %+v after %d workers", inv.State, inv.Error, len(victims))
	}
	t.Logf("dead-lettered after %d worker crashes", len(victims)-1)
}

// client returns a context with an SDK client on the system's broker.
func (s *system) client(t *testing.T) context.Context {
	t.Helper()
	return s.clientWith(t, atasks.Config{})
}

// clientWith is client with cfg, its namespaces set to the demo ones.
func (s *system) clientWith(t *testing.T, cfg atasks.Config) context.Context {
	t.Helper()
	nss, err := demo.Namespaces(func(ns string) (atasks.Transport, error) {
		return amqp.New(amqp.Config{URL: s.url, Namespace: ns, Prefix: s.prefix, ConnectionName: t.Name()})
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Namespaces = nss
	c, err := atasks.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
	})
	return atasks.WithClient(context.Background(), c)
}

// A gateway with an identity restarts while a slow task runs: the outcome
// waits in its reply queue and is readable from the new process.
func TestGatewayRestartKeepsResult(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	s.worker()
	gw1, base := s.gateway("--identity", "gw1")
	inv := call(t, base, "default", "demo.sleep", `{"ms":3000,"value":"kept"}`, "?wait=200ms")
	if inv.status != 202 {
		t.Fatalf("call: %d %s", inv.status, inv.State)
	}
	gw1.stop(t, 10*time.Second)
	_, base = s.gateway("--identity", "gw1")
	// Unknown to the new process until its outcome arrives: a long-poll
	// answers 404 at once, retryable, and the id is readable once the
	// outcome is in.
	var got invocation
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		asked := time.Now()
		got = poll(t, base, "default", inv.ID, 30*time.Second)
		if got.status != 404 {
			break
		}
		if took := time.Since(asked); took > 3*time.Second || got.Code != "invocation_not_found" || !got.Retryable {
			t.Fatalf("unknown id: 404 %s (retryable %v) after %v (the poll asked ?wait=5s); want invocation_not_found at once, retryable", got.Code, got.Retryable, took)
		}
	}
	if got.status != 200 || got.State != "succeeded" || string(got.Result) != `"kept"` || got.Task != "demo.sleep" {
		t.Fatalf("after restart: %d %s %s %s %+v", got.status, got.Task, got.State, got.Result, got.Error)
	}
}

// SIGTERM drains a worker: its running task finishes and answers, and the
// worker exits; work sent afterwards goes to the other worker.
func TestGracefulDrain(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	draining := s.worker()
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.sleep")
	inv := call(t, base, "default", "demo.sleep", `{"ms":2000,"value":"finished"}`, "?wait=300ms")
	if inv.status != 202 {
		t.Fatalf("call: %d %s", inv.status, inv.State)
	}
	s.worker()
	within(t, 20*time.Second, "the drain", func() { draining.stop(t, 20*time.Second) })
	got := poll(t, base, "default", inv.ID, 10*time.Second)
	if got.State != "succeeded" || string(got.Result) != `"finished"` {
		t.Fatalf("the running task: %s %s %+v", got.State, got.Result, got.Error)
	}
	if after := call(t, base, "default", "demo.add", `{"a":1,"b":1}`, "?wait=20s"); after.State != "succeeded" {
		t.Fatalf("after the drain: %d %s %+v", after.status, after.State, after.Error)
	}
}

// waitCatalog waits until the client in ctx hears of a worker serving task in ns.
func waitCatalog(t *testing.T, ctx context.Context, ns, task string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tasks, err := atasks.ClientFrom(ctx).Catalog(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range tasks {
			if x.Name == task {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no worker announced %s/%s within 30s", ns, task)
}
