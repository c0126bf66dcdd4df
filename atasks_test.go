package atasks_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/atasktest"
	"github.com/atasks-go/atasks/internal/demo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startExample is the plumbing examples leave out: a started loopback client
// whose worker serves every task defined here, in a context. Loopback keeps
// no goroutines while idle, so it needs no stopping.
func startExample() context.Context {
	ctx := context.Background()
	c, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		panic(err)
	}
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{})
	if err != nil {
		panic(err)
	}
	if err := errors.Join(c.Start(ctx), w.Start(ctx)); err != nil {
		panic(err)
	}
	return atasks.WithClient(ctx, c)
}

// Tasks of these tests; defined before any worker starts, as in a real program.
var (
	plain = atasks.Define(func(context.Context, int) (int, error) { return 0, errors.New("boom") }, atasks.Name("test.plain"))

	childDone = make(chan error, 2)
	child     = atasks.Define(func(ctx context.Context, _ int) (int, error) {
		<-ctx.Done()
		childDone <- context.Cause(ctx)
		return 0, context.Cause(ctx)
	}, atasks.Name("test.child"))
	parent = atasks.Define(func(ctx context.Context, _ int) (int, error) {
		return child.Call(ctx, 0)
	}, atasks.Name("test.parent"))

	inner = atasks.Define(func(ctx context.Context, _ int) (ids, error) {
		inv, _ := atasks.InvocationFrom(ctx)
		return ids{inv.ID, inv.Parent}, nil
	}, atasks.Name("test.inner"))
	outer = atasks.Define(func(ctx context.Context, _ int) ([2]ids, error) {
		inv, _ := atasks.InvocationFrom(ctx)
		got, err := inner.Call(ctx, 0)
		return [2]ids{{inv.ID, inv.Parent}, got}, err
	}, atasks.Name("test.outer"))
)

type ids struct{ ID, Parent string }

func TestCallNestedParallelRecursive(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t, "default", demo.SeedNamespace)

	sum, err := demo.Add.Call(ctx, demo.AddIn{A: 2, B: 3})
	if err != nil || sum != 5 {
		t.Fatalf("add = %v, %v; want 5", sum, err)
	}
	f, err := demo.Fib.Call(ctx, demo.FibIn{N: 15})
	if err != nil || f != 610 {
		t.Fatalf("fib(15) = %v, %v; want 610", f, err)
	}
	g, err := demo.Gather.Call(ctx, demo.GatherIn{N: 10, MS: 10})
	if err != nil || len(g) != 10 || g[9] != 9 {
		t.Fatalf("gather = %v, %v", g, err)
	}
}

func TestSeedScenarios(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t, "default", demo.SeedNamespace)
	start := time.Now()
	outs, err := demo.Seed.Call(ctx, nil) // default → seed: across namespaces
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}
	if len(outs) != len(want) {
		t.Fatalf("got %v, want %v", outs, want)
	}
	for i := range want {
		if outs[i] != want[i] {
			t.Fatalf("got %v, want %v", outs, want)
		}
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("request_parallel took %v: the ten calls did not run in parallel", d)
	}
	seq, err := demo.RequestSequence.Call(ctx, nil)
	if err != nil || len(seq) != 2 || seq[0] != 1 || seq[1] != 3 {
		t.Fatalf("request_sequence = %v, %v", seq, err)
	}
}

func TestErrorsCrossTheWire(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)

	_, err := demo.Fail.Call(ctx, demo.FailIn{Code: "out_of_stock", Message: "no more"})
	var e *atasks.Error
	if !errors.As(err, &e) || e.Code != "out_of_stock" || e.Message != "no more" {
		t.Fatalf("fail: %#v", err)
	}
	if !errors.Is(err, atasks.NewError("out_of_stock", "", nil)) {
		t.Errorf("errors.Is does not compare codes")
	}
	if _, err := demo.Panic.Call(ctx, nil); !errors.Is(err, atasks.ErrPanic) {
		t.Errorf("panic: got %v", err)
	}
	if _, err := plain.Call(ctx, 1); !errors.Is(err, atasks.ErrTaskFailed) || err.Error() != "task_failed: boom" {
		t.Errorf("plain error: got %v", err)
	}
	if _, err := atasks.Ref[int, int]("default", "nope").Call(ctx, 1); !errors.Is(err, atasks.ErrTaskNotFound) {
		t.Errorf("unknown task: got %v", err)
	}
	if _, err := atasks.Ref[int, int]("elsewhere", "nope").Call(ctx, 1); !errors.Is(err, atasks.ErrNamespaceNotFound) {
		t.Errorf("unknown namespace: got %v", err)
	}
	if _, err := atasks.Ref[string, int]("default", demo.Add.Name()).Call(ctx, "x"); !errors.Is(err, atasks.ErrBadInput) {
		t.Errorf("wrong input type: got %v", err)
	}
	if _, err := atasks.Ref[demo.AddIn, string]("default", demo.Add.Name()).Call(ctx, demo.AddIn{}); !errors.Is(err, atasks.ErrBadOutput) {
		t.Errorf("wrong output type: got %v", err)
	}
}

func TestDeadlineAndCancelReachChildren(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := parent.Call(tctx, 0); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, atasks.ErrTimeout) {
		t.Fatalf("deadline: got %v", err)
	}
	if err := <-childDone; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("child saw %v, want the parent's deadline", err)
	}

	cctx, cancel2 := context.WithCancel(ctx)
	f := parent.Start(cctx, 0)
	time.AfterFunc(20*time.Millisecond, cancel2)
	if _, err := f.Wait(ctx); !errors.Is(err, atasks.ErrCancelled) {
		t.Fatalf("cancel: got %v", err)
	}
	if err := <-childDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("child saw %v, want cancellation", err)
	}
}

func TestInvocationInContext(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	var events []atasks.Event
	got, err := outer.Call(ctx, 0, atasks.WithID("top-1"), atasks.OnState(func(e atasks.Event) { events = append(events, e) }))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].ID != "top-1" || got[0].Parent != "" || got[1].Parent != "top-1" || got[1].ID == "" {
		t.Errorf("ids: %+v", got)
	}
	if _, ok := atasks.InvocationFrom(ctx); ok {
		t.Errorf("InvocationFrom outside a task reports one")
	}
	// outer ends within RunningAfter: its first state is the one that names its child.
	if len(events) != 1 || events[0].State != "running" || events[0].Child != got[1].ID {
		t.Errorf("events: %+v", events)
	}
}

func TestDuplicateIDIsRefused(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	f := demo.Sleep.Start(ctx, demo.SleepIn{MS: 5000}, atasks.WithID("same"))
	defer f.Cancel()
	if _, err := demo.Sleep.Call(ctx, demo.SleepIn{}, atasks.WithID("same")); !errors.Is(err, &atasks.Error{Code: "duplicate_id"}) {
		t.Fatalf("second call with the same id: %v", err)
	}
}

// A task whose WaitAll returns early (CancelOnError) leaves no slot taken.
func TestNoSlotLeaks(t *testing.T) {
	t.Parallel()
	c, _ := atasks.NewClient(atasks.Config{})
	ctx := context.Background()
	w, _ := atasks.NewWorker(c, atasks.WorkerConfig{Concurrency: 2})
	if err := errors.Join(c.Start(ctx), w.Start(ctx)); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx) // after the worker
	defer w.Stop(ctx)
	ctx = atasks.WithClient(ctx, c)
	for range 5 {
		tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, _ = demo.Fib.Call(tctx, demo.FibIn{N: 12})
		cancel()
	}
	if sum, err := demo.Add.Call(ctx, demo.AddIn{A: 1, B: 1}); err != nil || sum != 2 {
		t.Fatalf("after timed-out nested calls: %v %v", sum, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for busy, _ := w.Busy(); busy != 0; busy, _ = w.Busy() {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still taken", busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWaitAllCancelOnError(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	fs := []*atasks.Future[any]{
		demo.Sleep.Start(ctx, demo.SleepIn{MS: 10_000, Value: 1}),
		demo.Fail.Start(ctx, demo.FailIn{Code: "nope"}),
	}
	start := time.Now()
	_, err := atasks.WaitAll(ctx, fs, atasks.CancelOnError())
	if !errors.Is(err, atasks.NewError("nope", "", nil)) {
		t.Fatalf("got %v", err)
	}
	if _, err := fs[0].Wait(ctx); !errors.Is(err, atasks.ErrCancelled) || time.Since(start) > 5*time.Second {
		t.Fatalf("sleep was not cancelled: %v", err)
	}
}

func TestConcurrencyBoundWithoutDeadlock(t *testing.T) {
	t.Parallel()
	c, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{Concurrency: 2, Tasks: []string{demo.Fib.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx) // after the worker
	defer w.Stop(ctx)
	f, err := demo.Fib.Call(atasks.WithClient(ctx, c), demo.FibIn{N: 12})
	if err != nil || f != 144 {
		t.Fatalf("fib(12) with 2 slots = %v, %v", f, err)
	}
	if busy, size := w.Busy(); busy != 0 || size != 2 {
		t.Errorf("slots after the calls: %d busy of %d", busy, size)
	}
}

var (
	computing, maxComputing atomic.Int64
	measured                = atasks.Define(func(ctx context.Context, _ int) (int, error) {
		n := computing.Add(1)
		defer computing.Add(-1)
		for m := maxComputing.Load(); n > m && !maxComputing.CompareAndSwap(m, n); m = maxComputing.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		return 0, nil
	}, atasks.Name("test.measured"))
)

func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	c, _ := atasks.NewClient(atasks.Config{})
	ctx := context.Background()
	w, _ := atasks.NewWorker(c, atasks.WorkerConfig{Concurrency: 3, Tasks: []string{"test.measured"}})
	if err := errors.Join(c.Start(ctx), w.Start(ctx)); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx) // after the worker
	defer w.Stop(ctx)
	ctx = atasks.WithClient(ctx, c)
	fs := make([]*atasks.Future[int], 40)
	for i := range fs {
		fs[i] = measured.Start(ctx, i)
	}
	if _, err := atasks.WaitAll(ctx, fs); err != nil {
		t.Fatal(err)
	}
	if m := maxComputing.Load(); m != 3 {
		t.Errorf("at most %d tasks computed at once; want exactly the 3 slots used", m)
	}
}

// atasktest.Serve serves a registry with a fake in place of a real task.
func TestServeRegistryWithFake(t *testing.T) {
	t.Parallel()
	reg := atasks.DefaultRegistry().Without(demo.Add.Name())
	atasks.Define(func(_ context.Context, in demo.AddIn) (int64, error) { return in.A * in.B, nil },
		atasks.Name(demo.Add.Name()), atasks.InRegistry(reg))
	ctx := atasktest.Serve(t, reg)
	if got, err := demo.Add.Call(ctx, demo.AddIn{A: 3, B: 4}); err != nil || got != 12 {
		t.Fatalf("the fake add: %v %v; want 12", got, err)
	}
	if slices.Contains(reg.Tasks("default"), "nope") || !slices.Contains(reg.Tasks("default"), demo.Echo.Name()) {
		t.Errorf("the copy's tasks: %v", reg.Tasks("default"))
	}
}

// A client has one worker: a second is refused and the first goes on
// serving; stopping the worker leaves the client working for calls.
func TestOneWorkerPerClientAndStopLeavesTheClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{Tasks: []string{demo.Add.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := atasks.NewWorker(c, atasks.WorkerConfig{}); err == nil {
		t.Fatal("a second worker on the client was taken")
	}
	cctx := atasks.WithClient(ctx, c)
	if got, err := demo.Add.Call(cctx, demo.AddIn{A: 1, B: 2}); err != nil || got != 3 {
		t.Fatalf("the first worker after a second was refused: %v %v", got, err)
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Catalog(ctx, "default"); err != nil {
		t.Errorf("the client after its worker stopped: %v", err)
	}
	if _, err := demo.Add.Call(cctx, demo.AddIn{A: 1, B: 2}); !errors.Is(err, atasks.ErrTaskNotFound) {
		t.Errorf("a call of a task nobody serves any more: %v; want task_not_found, the client still open", err)
	}
}

// clock reports when it ran.
var clock = atasks.Define(func(context.Context, int) (time.Time, error) { return time.Now(), nil }, atasks.Name("test.clock"))

// After and At delay a call: it runs no earlier; a deadline before its
// time is refused as bad input, before anything runs.
func TestAfterAndAt(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t, "default")
	runAt := time.Now().Add(300 * time.Millisecond)
	ran, err := clock.Call(ctx, 0, atasks.At(runAt))
	if err != nil || ran.Before(runAt) {
		t.Fatalf("At(+300ms) ran at %v (%v); want at %v or later", ran, err, runAt)
	}
	began := time.Now()
	if ran, err = clock.Call(ctx, 0, atasks.After(200*time.Millisecond)); err != nil || ran.Sub(began) < 200*time.Millisecond {
		t.Fatalf("After(200ms) ran %v after the call (%v)", ran.Sub(began), err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := clock.Call(short, 0, atasks.After(time.Second)); !errors.Is(err, atasks.ErrBadInput) {
		t.Fatalf("a deadline before the call's time: %v; want bad input", err)
	}
}
