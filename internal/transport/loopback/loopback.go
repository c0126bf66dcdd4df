// Package loopback is the in-process transport: requests go straight to the
// handler served in the same process, each in its own goroutine. It serves
// unit tests and the embedded default, where one process both calls and serves.
package loopback

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Transport is an in-process wire.Transport. Its zero value is not usable; use New.
type Transport struct {
	mu        sync.Mutex
	deliver   func(*wire.Reply)
	tasks     map[string]bool
	handler   wire.Handler
	running   map[string]context.CancelCauseFunc // by invocation id
	closed    bool
	unserving bool           // Unserve began: only children of running invocations are taken
	wg        sync.WaitGroup // running handlers

	// serveCtx is the parent of every handler's context; stopServing ends it.
	serveCtx    context.Context
	stopServing context.CancelFunc

	watch watchers // see Watch
}

// New returns a loopback transport.
func New() *Transport {
	ctx, cancel := context.WithCancel(context.Background())
	return &Transport{tasks: map[string]bool{}, running: map[string]context.CancelCauseFunc{}, serveCtx: ctx, stopServing: cancel}
}

var errClosed = &wire.Error{Code: wire.CodeUnavailable, Message: "loopback: transport closed"}

// Open records where replies go.
func (t *Transport) Open(_ context.Context, deliver func(*wire.Reply)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.deliver != nil {
		return errors.New("loopback: already open")
	}
	t.deliver = deliver
	return nil
}

// Serve makes the named tasks callable through the transport.
func (t *Transport) Serve(_ context.Context, tasks []string, h wire.Handler) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.handler != nil {
		return errors.New("loopback: already serving")
	}
	t.handler = h
	for _, name := range tasks {
		t.tasks[name] = true
	}
	return nil
}

// Send runs req's handler in a new goroutine. Once Close began it takes only
// children of invocations, so that draining parents can finish, whichever
// namespace they run in.
func (t *Transport) Send(_ context.Context, req *wire.Request) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.deliver == nil, t.closed && req.Parent == "":
		return errClosed
	case !t.tasks[req.Task], t.unserving && req.Parent == "":
		return &wire.Error{Code: wire.CodeTaskNotFound, Message: fmt.Sprintf("no server offers task %q in namespace %q", req.Task, req.NS)}
	case t.running[req.ID] != nil:
		return &wire.Error{Code: wire.CodeDuplicateID, Message: fmt.Sprintf("invocation %q is already running", req.ID)}
	}
	ctx, cancel := context.WithCancelCause(t.serveCtx)
	if !req.Deadline.IsZero() {
		ctx, cancel = withDeadline(ctx, cancel, req.Deadline)
	}
	t.running[req.ID] = cancel
	t.wg.Add(1)
	in := *req
	in.Attempt = 1
	go t.handle(ctx, &in)
	return nil
}

func (t *Transport) handle(ctx context.Context, req *wire.Request) {
	defer t.wg.Done()
	rep := t.later(ctx, req)
	if rep == nil {
		rep = t.attempts(ctx, req)
	}
	t.mu.Lock()
	if cancel, ok := t.running[req.ID]; ok {
		cancel(nil)
		delete(t.running, req.ID)
	}
	t.mu.Unlock()
	t.deliver(rep)
}

// Cancel cancels the context of invocation id's handler, if it runs.
func (t *Transport) Cancel(_ context.Context, id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cancel, ok := t.running[id]; ok {
		cancel(errCancelled)
	}
	return nil
}

// Catalog lists the served tasks, each with one server: this process.
func (t *Transport) Catalog(context.Context) ([]wire.TaskInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	infos := make([]wire.TaskInfo, 0, len(t.tasks))
	d, _ := t.handler.(wire.Describer)
	for name := range t.tasks {
		info := wire.TaskInfo{Name: name, Servers: 1}
		if d != nil {
			info.Schema = d.Describe(name)
		}
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, nil
}

// Unserve refuses new requests but for children of running invocations
// (so that they can finish), waits for running handlers until ctx ends,
// then cancels them and waits for them to return; their replies are still
// delivered. Nothing is served afterwards.
func (t *Transport) Unserve(ctx context.Context) error {
	t.mu.Lock()
	t.unserving = true
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		t.stopServing()
		<-done
		err = ctx.Err()
	}
	t.mu.Lock()
	clear(t.tasks)
	t.mu.Unlock()
	return err
}

// Close unserves (see Unserve) and then refuses every request.
func (t *Transport) Close(ctx context.Context) error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	return t.Unserve(ctx)
}

func withDeadline(ctx context.Context, cancel context.CancelCauseFunc, d time.Time) (context.Context, context.CancelCauseFunc) {
	dctx, dcancel := context.WithDeadlineCause(ctx, d, wire.DeadlinePassed())
	return dctx, func(cause error) { cancel(cause); dcancel() }
}

// errCancelled is the cause of a handler context cancelled by its caller.
var errCancelled = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled by the caller"}

// attempts runs req's handler until it answers an outcome: each time it
// retries instead (see wire.Retrier), the Queued state goes to the caller
// and the next attempt runs after the delay, in this goroutine, under the
// same context, so that cancelling the invocation or its deadline ends
// the wait too.
func (t *Transport) attempts(ctx context.Context, req *wire.Request) *wire.Reply {
	for {
		if err := ctx.Err(); err != nil { // cancelled, or the deadline passed, before it started
			e := wire.AsError(err)
			return &wire.Reply{ID: req.ID, Task: req.Task, State: e.StateOf(), Err: e}
		}
		d := &delivery{t: t}
		rep := t.handler.Handle(ctx, req, d)
		if rep.State.Final() || d.attempt == 0 {
			return rep
		}
		t.deliver(rep)
		wait := time.NewTimer(d.delay)
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
		}
		next := *req
		next.Attempt, next.Retries = d.attempt, req.Retries+1
		req = &next
	}
}

// delivery is the loopback's side of a request being handled: replies go
// straight to the caller, there is no flow to control, and a retry is
// remembered for attempts to run.
type delivery struct {
	t       *Transport
	attempt int // set by Retry
	delay   time.Duration
}

func (d *delivery) Notify(r *wire.Reply) { d.t.deliver(r) }
func (d *delivery) Suspend()             {}
func (d *delivery) Resume()              {}

// Retry implements wire.Retrier: attempts runs attempt after delay. It
// does not survive the process.
func (d *delivery) Retry(_ context.Context, attempt int, delay time.Duration) error {
	d.attempt, d.delay = attempt, delay
	return nil
}

// later waits until req's RunAt, in memory: nil then, or the reply to
// give if ctx ended first (cancelled, or the transport closed).
func (t *Transport) later(ctx context.Context, req *wire.Request) *wire.Reply {
	if err := req.AwaitRunAt(ctx); err != nil {
		e := wire.AsError(err)
		return &wire.Reply{ID: req.ID, Task: req.Task, State: e.StateOf(), Err: e}
	}
	return nil
}
