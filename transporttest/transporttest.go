// Package transporttest is the conformance suite every wire.Transport must
// pass, whatever carries its messages: atasks' loopback and AMQP
// transports pass it, and a transport of your own (NATS JetStream, Redis
// Streams, SQS…) proves itself with one go test, calling Run with a
// function that makes a fresh pair of transports that reach each other:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) (caller, server wire.Transport) {
//			prefix := "test-" + t.Name() // apart from other tests; delete it in t.Cleanup
//			return nats.New(nats.Config{Prefix: prefix, Namespace: transporttest.Namespace}),
//				nats.New(nats.Config{Prefix: prefix, Namespace: transporttest.Namespace})
//		}, transporttest.Options{Queues: true})
//	}
//
// The subtests cover round trips, concurrency, state changes before the
// outcome, cancellation of running and queued requests, deadlines, the
// catalog, unknown tasks, graceful Unserve and Close, and the flow control
// that keeps nested awaits from deadlocking. Then give the transport to a
// namespace (atasks.NamespaceConfig.Transport); docs/PROTOCOL.md is what
// the AMQP one puts on the wire.
package transporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Namespace is the namespace the transports of a pair must carry.
const Namespace = "conformance"

// wait bounds every wait for a reply or an event of the suite.
const wait = 10 * time.Second

// NewPairFunc returns two transports of Namespace that reach each other,
// not yet opened: the suite opens, serves on and closes them. caller and
// server may be the same value; the suite then opens and closes it once.
//
// A server that bounds how many requests compute must let at most one of a
// task compute at once (capacity 1): the suspend and cancel subtests depend on it. Any cleanup
// beyond Close (deleting broker objects, say) is newPair's, registered with
// t.Cleanup; it runs after the suite has closed the transports.
type NewPairFunc func(t *testing.T) (caller, server wire.Transport)

// Options says what a transport does beyond the common contract.
type Options struct {
	// Queues: the server queues requests beyond its capacity of one, so a
	// request can be cancelled before any handler takes it (the CancelQueued
	// subtest). The loopback transport has no queue: it runs each request at once.
	Queues bool
}

// Run runs the conformance subtests, in parallel, each on its own pair.
func Run(t *testing.T, newPair NewPairFunc, opts Options) {
	tests := []struct {
		name string
		run  func(*testing.T, NewPairFunc)
	}{
		{"RoundTrip", testRoundTrip},
		{"Concurrent", testConcurrent},
		{"NotifyBeforeFinal", testNotify},
		{"Cancel", testCancel},
		{"Deadline", testDeadline},
		{"DeadlinePassed", testDeadlinePassed},
		{"TaskNotFound", testTaskNotFound},
		{"Catalog", testCatalog},
		{"Close", testClose},
		{"Unserve", testUnserve},
		{"SuspendResume", testSuspendResume},
		{"Delayed", testDelayed},
		{"CancelDelayed", testCancelDelayed},
	}
	if opts.Queues {
		tests = append(tests, struct {
			name string
			run  func(*testing.T, NewPairFunc)
		}{"CancelQueued", testCancelQueued})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newPair)
		})
	}
}

// handlerFunc adapts a function to wire.Handler.
type handlerFunc func(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply

func (f handlerFunc) Handle(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
	return f(ctx, req, d)
}

// env is one opened pair and the replies the caller received.
type env struct {
	t              *testing.T
	caller, server wire.Transport
	in             *inbox
}

// open opens a new pair and registers closing it.
func open(t *testing.T, newPair NewPairFunc) *env {
	t.Helper()
	caller, server := newPair(t)
	e := &env{t: t, caller: caller, server: server, in: &inbox{t: t, byID: map[string]chan *wire.Reply{}}}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := caller.Open(ctx, e.in.deliver); err != nil {
		t.Fatalf("open caller: %v", err)
	}
	t.Cleanup(func() { closeTransport(t, caller) })
	if server != caller {
		if err := server.Open(ctx, func(r *wire.Reply) { t.Errorf("server-only transport got reply %+v", r) }); err != nil {
			t.Fatalf("open server: %v", err)
		}
		t.Cleanup(func() { closeTransport(t, server) })
	}
	return e
}

func closeTransport(t *testing.T, tr wire.Transport) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// serve starts serving tasks with h on the server.
func (e *env) serve(h handlerFunc, tasks ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.server.Serve(ctx, tasks, h); err != nil {
		e.t.Fatalf("serve %v: %v", tasks, err)
	}
}

// send sends req through the caller.
func (e *env) send(req *wire.Request) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.caller.Send(ctx, req); err != nil {
		e.t.Fatalf("send %s to %s: %v", req.ID, req.Task, err)
	}
}

// inbox sorts the caller's replies by invocation id.
type inbox struct {
	t    *testing.T
	mu   sync.Mutex
	byID map[string]chan *wire.Reply
}

func (b *inbox) ch(id string) chan *wire.Reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byID[id]
	if !ok {
		c = make(chan *wire.Reply, 64)
		b.byID[id] = c
	}
	return c
}

func (b *inbox) deliver(r *wire.Reply) {
	select {
	case b.ch(r.ID) <- r:
	default:
		b.t.Errorf("too many replies for %s", r.ID)
	}
}

// next returns the next reply for id.
func (b *inbox) next(id string) *wire.Reply {
	b.t.Helper()
	select {
	case r := <-b.ch(id):
		return r
	case <-time.After(wait):
		b.t.Fatalf("no reply for %s within %v", id, wait)
		return nil
	}
}

// final returns the final reply for id, skipping state changes.
func (b *inbox) final(id string) *wire.Reply {
	b.t.Helper()
	for {
		if r := b.next(id); r.State.Final() {
			return r
		}
	}
}

// finalWithin is final for handler goroutines, which must not call
// t.Fatal: it reports false when no final reply came within wait.
func (b *inbox) finalWithin(id string) (*wire.Reply, bool) {
	timeout := time.After(wait)
	for {
		select {
		case r := <-b.ch(id):
			if r.State.Final() {
				return r, true
			}
		case <-timeout:
			return nil, false
		}
	}
}

// extra returns a reply for id already received, if any.
func (b *inbox) extra(id string) *wire.Reply {
	select {
	case r := <-b.ch(id):
		return r
	default:
		return nil
	}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func request(task, body string) *wire.Request {
	return &wire.Request{ID: newID(), NS: Namespace, Task: task, Codec: "json", Body: []byte(strconv.Quote(body))}
}

func succeeded(req *wire.Request, body []byte) *wire.Reply {
	return &wire.Reply{ID: req.ID, State: wire.Succeeded, Codec: req.Codec, Body: body}
}

// failed is the reply to req failing with err; a nil err (a handler whose
// context never ended) becomes a "task_failed" error.
func failed(req *wire.Request, err error) *wire.Reply {
	if err == nil {
		err = errors.New("the handler's context did not end")
	}
	e := wire.AsError(err)
	return &wire.Reply{ID: req.ID, State: e.StateOf(), Codec: req.Codec, Err: e}
}

// signal returns a channel and a function that closes it once.
func signal() (chan struct{}, func()) {
	c := make(chan struct{})
	var once sync.Once
	return c, func() { once.Do(func() { close(c) }) }
}

func await(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	if !within(c) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// within waits for c to close, for at most wait; handlers use it directly.
func within(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(wait):
		return false
	}
}

func wantFinal(t *testing.T, r *wire.Reply, state wire.State, code string) {
	t.Helper()
	if r.State != state {
		t.Fatalf("reply %s: state %s (err %v), want %s", r.ID, r.State, r.Err, state)
	}
	if code != "" && (r.Err == nil || r.Err.Code != code) {
		t.Fatalf("reply %s: error %v, want code %q", r.ID, r.Err, code)
	}
}

func testRoundTrip(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	got := make(chan *wire.Request, 1)
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		got <- req
		return succeeded(req, []byte(`{"echo":`+string(req.Body)+`}`))
	}, "echo")
	req := request("echo", "hello")
	req.Parent = newID()
	req.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req.Deadline = time.Now().Add(time.Minute).Truncate(time.Millisecond)
	e.send(req)

	r := e.in.final(req.ID)
	wantFinal(t, r, wire.Succeeded, "")
	if r.Codec != "json" || string(r.Body) != `{"echo":"hello"}` {
		t.Errorf("reply codec %q body %s, want json {\"echo\":\"hello\"}", r.Codec, r.Body)
	}
	s := <-got
	switch {
	case s.ID != req.ID || s.NS != Namespace || s.Task != "echo":
		t.Errorf("served id/ns/task %s/%s/%s, want %s/%s/echo", s.ID, s.NS, s.Task, req.ID, Namespace)
	case s.Codec != "json" || string(s.Body) != `"hello"`:
		t.Errorf("served codec %q body %s", s.Codec, s.Body)
	case s.Parent != req.Parent || s.TraceParent != req.TraceParent:
		t.Errorf("served parent %q traceparent %q, want %q %q", s.Parent, s.TraceParent, req.Parent, req.TraceParent)
	case !s.Deadline.Equal(req.Deadline):
		t.Errorf("served deadline %v, want %v", s.Deadline, req.Deadline)
	case s.Attempt != 1:
		t.Errorf("served attempt %d, want 1", s.Attempt)
	}
}

func testConcurrent(t *testing.T, newPair NewPairFunc) {
	const n = 200
	e := open(t, newPair)
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, req.Body)
	}, "echo-a", "echo-b")
	reqs := make([]*wire.Request, n)
	for i := range reqs {
		reqs[i] = request([]string{"echo-a", "echo-b"}[i%2], fmt.Sprint("body ", i))
	}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if err := e.caller.Send(ctx, req); err != nil {
				t.Errorf("send %s: %v", req.ID, err)
			}
		})
	}
	wg.Wait()
	for _, req := range reqs {
		r := e.in.final(req.ID)
		wantFinal(t, r, wire.Succeeded, "")
		if string(r.Body) != string(req.Body) {
			t.Errorf("reply %s: body %s, want %s", req.ID, r.Body, req.Body)
		}
	}
	for _, req := range reqs {
		if r := e.in.extra(req.ID); r != nil {
			t.Errorf("second reply for %s: %+v", req.ID, r)
		}
	}
}

func testNotify(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	e.serve(func(_ context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
		d.Notify(&wire.Reply{ID: req.ID, State: wire.Running, Worker: "w1"})
		d.Notify(&wire.Reply{ID: req.ID, State: wire.Running, Child: "child-1"})
		return succeeded(req, req.Body)
	}, "chatty")
	req := request("chatty", "x")
	e.send(req)
	r1, r2, r3 := e.in.next(req.ID), e.in.next(req.ID), e.in.next(req.ID)
	if r1.State != wire.Running || r1.Worker != "w1" || r2.State != wire.Running || r2.Child != "child-1" {
		t.Fatalf("state changes %+v, %+v; want running with worker w1, then running with child child-1", r1, r2)
	}
	wantFinal(t, r3, wire.Succeeded, "")
}

func testCancel(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	started, start := signal()
	cause := make(chan error, 1)
	e.serve(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		start()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		cause <- ctx.Err()
		return failed(req, ctx.Err())
	}, "block")
	req := request("block", "x")
	e.send(req)
	await(t, started, "handler start")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.caller.Cancel(ctx, req.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if err := <-cause; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler ctx ended with %v, want context.Canceled", err)
	}
	wantFinal(t, e.in.final(req.ID), wire.Cancelled, wire.CodeCancelled)
}

// Requests with RunAt 1.5 s and 50 ms ahead run once, no earlier; one
// without runs at once meanwhile.
func testDelayed(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	var mu sync.Mutex
	ranAt := map[string][]time.Time{}
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		mu.Lock()
		ranAt[req.ID] = append(ranAt[req.ID], time.Now())
		mu.Unlock()
		return succeeded(req, req.Body)
	}, "echo")
	later, soon, now := request("echo", "later"), request("echo", "soon"), request("echo", "now")
	later.RunAt = time.Now().Add(1500 * time.Millisecond)
	soon.RunAt = time.Now().Add(50 * time.Millisecond)
	e.send(later)
	e.send(soon)
	e.send(now)
	for _, req := range []*wire.Request{now, soon, later} {
		wantFinal(t, e.in.final(req.ID), wire.Succeeded, "")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, req := range []*wire.Request{later, soon} {
		if got := ranAt[req.ID]; len(got) != 1 || got[0].Before(req.RunAt) {
			t.Errorf("the request delayed to %v ran at %v; want once, no earlier", req.RunAt, got)
		}
	}
}

// A delayed request cancelled before its time is answered cancelled and
// never runs.
func testCancelDelayed(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	ran := make(chan string, 2)
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		ran <- string(req.Body)
		return succeeded(req, req.Body)
	}, "echo")
	req := request("echo", "later")
	req.RunAt = time.Now().Add(1500 * time.Millisecond)
	e.send(req)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.caller.Cancel(ctx, req.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	wantFinal(t, e.in.final(req.ID), wire.Cancelled, wire.CodeCancelled)
	if time.Now().Before(req.RunAt) {
		time.Sleep(time.Until(req.RunAt) + 500*time.Millisecond) // its time passes: it must not run then
	}
	select {
	case body := <-ran:
		t.Errorf("the handler ran %s, cancelled before its time", body)
	default:
	}
}

func testCancelQueued(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	started, start := signal()
	release, free := signal()
	var mu sync.Mutex
	var ran []string
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		mu.Lock()
		ran = append(ran, string(req.Body))
		mu.Unlock()
		if string(req.Body) == `"first"` {
			start()
			if !within(release) {
				return failed(req, errors.New("never released"))
			}
		}
		return succeeded(req, req.Body)
	}, "one-at-a-time")
	first, queued := request("one-at-a-time", "first"), request("one-at-a-time", "queued")
	e.send(first)
	await(t, started, "first handler start")
	e.send(queued)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.caller.Cancel(ctx, queued.ID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	free()
	wantFinal(t, e.in.final(first.ID), wire.Succeeded, "")
	wantFinal(t, e.in.final(queued.ID), wire.Cancelled, wire.CodeCancelled)
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(ran, `"queued"`) {
		t.Errorf("the handler ran the request cancelled while queued")
	}
}

func testDeadline(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	type seen struct {
		deadline time.Time
		ok       bool
		err      error
	}
	got := make(chan seen, 1)
	e.serve(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		dl, ok := ctx.Deadline()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		got <- seen{dl, ok, ctx.Err()}
		return failed(req, ctx.Err())
	}, "slow")
	req := request("slow", "x")
	req.Deadline = time.Now().Add(500 * time.Millisecond)
	e.send(req)
	s := <-got
	if !s.ok || s.deadline.Sub(req.Deadline).Abs() > time.Millisecond {
		t.Errorf("handler ctx deadline %v (set %v), want %v", s.deadline, s.ok, req.Deadline)
	}
	if !errors.Is(s.err, context.DeadlineExceeded) {
		t.Errorf("handler ctx ended with %v, want context.DeadlineExceeded", s.err)
	}
	wantFinal(t, e.in.final(req.ID), wire.TimedOut, wire.CodeTimeout)
}

func testDeadlinePassed(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	ran := make(chan string, 2)
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		ran <- string(req.Body)
		return succeeded(req, req.Body)
	}, "late")
	req := request("late", "expired")
	req.Deadline = time.Now().Add(-time.Millisecond)
	e.send(req)
	wantFinal(t, e.in.final(req.ID), wire.TimedOut, wire.CodeTimeout)
	select {
	case body := <-ran:
		t.Errorf("the handler ran %s, whose deadline had passed", body)
	default:
	}
}

func testTaskNotFound(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	e.serve(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, req.Body)
	}, "exists")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	err := e.caller.Send(ctx, request("nobody-serves-this", "x"))
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeTaskNotFound {
		t.Fatalf("send to an unserved task: %v, want a *wire.Error with code %q", err, wire.CodeTaskNotFound)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("task_not_found took %v, want a quick answer", took)
	}
}

// described is a handler that knows its tasks' schemas (wire.Describer).
type described struct {
	handlerFunc
	schemas map[string]wire.Schema
}

func (d described) Describe(task string) wire.Schema { return d.schemas[task] }

// The catalog lists the served tasks, each with its server count and the
// schemas its handler describes.
func testCatalog(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	integer := wire.Schema{Input: json.RawMessage(`{"type":"integer"}`), Output: json.RawMessage(`{"type":"string"}`)}
	h := described{func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, req.Body)
	}, map[string]wire.Schema{"cat-a": integer}}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.server.Serve(ctx, []string{"cat-b", "cat-a"}, h); err != nil {
		t.Fatalf("serve: %v", err)
	}
	want := []wire.TaskInfo{{Name: "cat-a", Servers: 1, Schema: integer}, {Name: "cat-b", Servers: 1}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		got, err := e.caller.Catalog(ctx)
		cancel()
		if err != nil {
			t.Fatalf("catalog: %v", err)
		}
		if slices.EqualFunc(got, want, func(a, b wire.TaskInfo) bool {
			return a.Name == b.Name && a.Servers == b.Servers && string(a.Schema.Input) == string(b.Schema.Input) && string(a.Schema.Output) == string(b.Schema.Output)
		}) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("catalog %+v, want %+v", got, want)
		}
	}
}

// Unserve lets a running handler finish and its outcome go out, stops
// serving, and leaves the transport carrying calls: it can still be
// asked to cancel, and closes. A second Unserve does nothing.
func testUnserve(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	started, start := signal()
	release, free := signal()
	e.serve(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		start()
		if !within(release) {
			t.Errorf("handler never released")
		}
		return succeeded(req, req.Body)
	}, "finishes")
	req := request("finishes", "x")
	e.send(req)
	await(t, started, "handler start")
	unserved := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		unserved <- e.server.Unserve(ctx)
	}()
	free()
	select {
	case err := <-unserved:
		if err != nil {
			t.Errorf("Unserve with its handler finishing in time: %v", err)
		}
	case <-time.After(wait):
		t.Fatalf("Unserve did not return within %v", wait)
	}
	wantFinal(t, e.in.final(req.ID), wire.Succeeded, "")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.server.Unserve(ctx); err != nil {
		t.Errorf("a second Unserve: %v", err)
	}
	if err := e.caller.Cancel(ctx, newID()); err != nil {
		t.Errorf("Cancel after the server unserved: %v", err)
	}
}

func testClose(t *testing.T, newPair NewPairFunc) {
	e := open(t, newPair)
	finishStarted, finishStart := signal()
	stuckStarted, stuckStart := signal()
	release, free := signal()
	finishErr := make(chan error, 1)
	stuckErr := make(chan error, 1)
	e.serve(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		if req.Task == "finishes" {
			finishStart()
			if !within(release) {
				t.Errorf("handler never released")
			}
			finishErr <- ctx.Err()
			return succeeded(req, req.Body)
		}
		stuckStart()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		stuckErr <- ctx.Err()
		return failed(req, ctx.Err())
	}, "finishes", "stuck")
	finish, stuck := request("finishes", "x"), request("stuck", "y")
	e.send(finish)
	e.send(stuck)
	await(t, finishStarted, "handler start")
	await(t, stuckStarted, "handler start")

	const grace = 500 * time.Millisecond
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		closed <- e.server.Close(ctx)
	}()
	free()
	if err := <-finishErr; err != nil {
		t.Errorf("handler finishing within the grace period saw ctx end: %v", err)
	}
	if err := <-stuckErr; err == nil {
		t.Errorf("handler still running after the grace period was not cancelled")
	}
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatalf("Close did not return %v after its ctx ended", wait)
	}
	if e.caller != e.server {
		wantFinal(t, e.in.final(finish.ID), wire.Succeeded, "")
	}
}

func testSuspendResume(t *testing.T, newPair NewPairFunc) {
	const depth = 3
	e := open(t, newPair)
	e.serve(func(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
		n, err := strconv.Atoi(string(req.Body))
		if err != nil || n == 0 {
			return succeeded(req, []byte("0"))
		}
		// With capacity 1 the child can only run here while this
		// invocation is suspended.
		child := &wire.Request{ID: newID(), NS: Namespace, Task: req.Task, Codec: "json", Body: []byte(strconv.Itoa(n - 1)), Parent: req.ID}
		d.Suspend()
		if err := e.caller.Send(ctx, child); err != nil {
			d.Resume()
			return failed(req, err)
		}
		r, ok := e.in.finalWithin(child.ID)
		d.Resume()
		if !ok {
			return failed(req, errors.New("no reply from the child"))
		}
		if r.State != wire.Succeeded {
			return &wire.Reply{ID: req.ID, State: r.State, Err: r.Err}
		}
		got, _ := strconv.Atoi(string(r.Body))
		return succeeded(req, []byte(strconv.Itoa(got+1)))
	}, "nest")
	req := &wire.Request{ID: newID(), NS: Namespace, Task: "nest", Codec: "json", Body: []byte(strconv.Itoa(depth))}
	e.send(req)
	r := e.in.final(req.ID)
	wantFinal(t, r, wire.Succeeded, "")
	if string(r.Body) != strconv.Itoa(depth) {
		t.Errorf("nested result %s, want %d", r.Body, depth)
	}
}
