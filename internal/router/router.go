// Package router is the machinery of one namespace: the registry of the
// tasks it serves, dispatch of incoming requests to them, the table of calls
// in flight waiting for their replies, and the invocation each running task
// carries in its context.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/internal/shrink"
	"github.com/atasks-go/atasks/wire"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// TracerName names the OpenTelemetry tracer of atasks' spans.
const TracerName = "github.com/atasks-go/atasks"

// HandlerFunc runs one invocation of a task: it decodes body with c, runs the
// task and returns its output encoded with c.
type HandlerFunc func(ctx context.Context, c wire.Codec, body []byte) ([]byte, error)

// Config configures a Router.
type Config struct {
	// NS is the namespace's name. Required.
	NS string
	// Transport carries the namespace's messages. Required.
	Transport wire.Transport
	// Codecs decodes incoming requests by the codec they name. Defaults to codec.NewRegistry().
	Codecs *codec.Registry
	// Worker names this process in "running" and final replies. Defaults to "".
	Worker string
	// Logger logs panics and failed sends. Defaults to slog.Default().
	Logger *slog.Logger
	// OnOrphan receives final replies for no call in flight: outcomes of
	// calls made before this process restarted, and late duplicates.
	// Defaults to nil: they are dropped.
	OnOrphan func(*wire.Reply)
	// Metrics counts the invocations served. Defaults to nil: none.
	Metrics *metrics.Invocations
	// Tracer makes a span of each call and each invocation served. Defaults
	// to the global OpenTelemetry tracer provider's, which does nothing
	// until a program sets one.
	Tracer trace.Tracer
}

// Router calls tasks of one namespace and serves them.
type Router struct {
	cfg   Config
	mu    sync.Mutex
	calls shrink.Map[string, *flight] // invocations in flight, by id

	handlers map[string]Handler // set once by Serve
	slots    *Slots
	cancels  sync.WaitGroup // cancel messages being sent
}

// New returns a router; Open connects it.
func New(cfg Config) (*Router, error) {
	if cfg.NS == "" || cfg.Transport == nil {
		return nil, fmt.Errorf("router: namespace name and transport are required")
	}
	if cfg.Codecs == nil {
		cfg.Codecs = codec.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = otel.GetTracerProvider().Tracer(TracerName)
	}
	cfg.Logger = cfg.Logger.With("ns", cfg.NS)
	return &Router{cfg: cfg}, nil
}

// NS returns the namespace's name.
func (r *Router) NS() string { return r.cfg.NS }

// Open connects the transport; replies start arriving.
func (r *Router) Open(ctx context.Context) error {
	return r.cfg.Transport.Open(ctx, r.deliver)
}

// Close stops serving, drains until ctx ends and disconnects.
func (r *Router) Close(ctx context.Context) error {
	err := r.cfg.Transport.Close(ctx)
	r.cancels.Wait()
	return err
}

// Catalog lists the tasks servers offer in this namespace.
func (r *Router) Catalog(ctx context.Context) ([]wire.TaskInfo, error) {
	return r.cfg.Transport.Catalog(ctx)
}

// Check returns the transport's wire.Checker verdict; nil for transports
// that cannot tell.
func (r *Router) Check(ctx context.Context) error {
	if c, ok := r.cfg.Transport.(wire.Checker); ok {
		return c.Check(ctx)
	}
	return nil
}

// Cancel asks the server running invocation id to cancel it.
func (r *Router) Cancel(ctx context.Context, id string) error {
	return r.cfg.Transport.Cancel(ctx, id)
}

// History returns the transport's shared history, or nil if it keeps none.
func (r *Router) History() wire.History {
	if h, ok := r.cfg.Transport.(wire.Historian); ok {
		return h.History()
	}
	return nil
}

// Serve starts serving handlers, computing at most slots.Size() at once
// (nil slots: no bound). A router serves once.
func (r *Router) Serve(ctx context.Context, handlers map[string]Handler, slots *Slots) error {
	r.mu.Lock()
	served := r.handlers != nil
	if !served {
		r.handlers, r.slots = handlers, slots
	}
	r.mu.Unlock()
	if served {
		return fmt.Errorf("router: namespace %q is served already", r.cfg.NS)
	}
	names := make([]string, 0, len(handlers))
	for name := range handlers {
		names = append(names, name)
	}
	return r.cfg.Transport.Serve(ctx, names, r)
}

// Describe implements wire.Describer: the schema of a served task.
func (r *Router) Describe(task string) wire.Schema { return r.handlers[task].Schema }

// Unserve stops serving; see wire.Transport.Unserve.
func (r *Router) Unserve(ctx context.Context) error {
	return r.cfg.Transport.Unserve(ctx)
}

// Handle implements wire.Handler: it runs req's task and returns its
// outcome, or, when the attempt failed and its task's policy retries it,
// a Queued reply (see wire.Retrier).
func (r *Router) Handle(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
	c, err := r.cfg.Codecs.Get(req.Codec)
	if err != nil {
		return failure(req.ID, err)
	}
	h, ok := r.handlers[req.Task]
	if !ok {
		return failure(req.ID, &wire.Error{Code: wire.CodeTaskNotFound, Message: fmt.Sprintf("task %q is not served here", req.Task)})
	}
	// The task's context ends when it returns, so that children it left
	// running are cancelled and a goroutine waiting for a slot gives up.
	invCtx := ctx // the transport's: it ends when the invocation is cancelled or its deadline passes
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if h.Policy.Timeout > 0 { // the caller's deadline, if sooner, stays
		ctx, cancel = context.WithTimeoutCause(ctx, h.Policy.Timeout, &wire.Error{Code: wire.CodeTimeout,
			Message: fmt.Sprintf("the attempt took longer than its task's timeout of %v", h.Policy.Timeout)})
		defer cancel()
	}
	inv := &Invocation{ID: req.ID, NS: r.cfg.NS, Task: req.Task, Parent: req.Parent, Attempt: req.Attempt, Retries: req.Retries, Worker: r.cfg.Worker, ctx: ctx, delivery: d, quiet: req.Quiet, slots: r.slots}
	r.durable(inv, req, h.Policy)
	if err := inv.start(); err != nil {
		return failure(req.ID, err)
	}
	began := time.Now()
	r.cfg.Metrics.Began(r.cfg.NS, req.Task)
	ctx, span := r.startRunSpan(ctx, req)
	notice := r.noticeRunning(req, d, began)
	out, err := r.run(withInvocation(ctx, inv), h.Fn, c, req)
	notice.stop()
	inv.finish()
	if e := inv.diverged.Load(); e != nil {
		out, err = nil, e
	}
	rep := &wire.Reply{ID: req.ID, State: wire.Succeeded, Codec: c.Name(), Body: out}
	if err != nil {
		rep = failure(req.ID, explain(ctx, err))
	}
	rep.Task, rep.Worker, rep.Attempt, rep.Children = req.Task, r.cfg.Worker, req.Attempt, inv.childStates()
	if rep.Err != nil {
		if retry := r.retry(invCtx, req, d, h.Policy, rep.Err); retry != nil {
			rep = retry
		}
	}
	endSpan(span, rep)
	r.ended(ctx, req, rep, began)
	return rep
}

// ended records that attempt req, begun at began, ended with rep (Queued
// if it will run again): in the metrics, for monitors and, at debug level,
// in the log.
func (r *Router) ended(ctx context.Context, req *wire.Request, rep *wire.Reply, began time.Time) {
	took := time.Since(began)
	r.cfg.Metrics.Ended(r.cfg.NS, req.Task, string(rep.State), took)
	var code string
	if rep.Err != nil {
		code = rep.Err.Code
	}
	r.report(req, rep.State, began, began.Add(took), code)
	if r.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		r.cfg.Logger.Debug("invocation ended", "task", req.Task, "invocation_id", req.ID, "trace_id", wire.TraceID(req.TraceParent),
			"state", rep.State, "attempt", req.Attempt, "took", took)
	}
}

// RunningAfter is how long a task runs before its "running" state is sent
// to the caller. A task that ends sooner sends only its outcome, which
// names its worker: one message fewer through the broker for most calls.
const RunningAfter = 50 * time.Millisecond

// runningNotice sends an invocation's "running" state (and reports it to
// monitors) after RunningAfter,
// unless stopped first; once stop returns, it sends nothing more.
type runningNotice struct {
	mu    sync.Mutex
	done  bool
	timer *time.Timer
}

func (r *Router) noticeRunning(req *wire.Request, d wire.Delivery, began time.Time) *runningNotice {
	n := &runningNotice{}
	n.timer = time.AfterFunc(RunningAfter, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if !n.done {
			if !req.Quiet { // its caller ignores state changes: a message fewer through the broker
				d.Notify(&wire.Reply{ID: req.ID, State: wire.Running, Worker: r.cfg.Worker, Attempt: req.Attempt})
			}
			r.report(req, wire.Running, began, time.Time{}, "")
		}
	})
	return n
}

func (n *runningNotice) stop() {
	n.timer.Stop()
	n.mu.Lock()
	n.done = true
	n.mu.Unlock()
}

// explain replaces a task's error that is only its context's end
// ("context canceled") with why the context ended, when that was said:
// cancelled by the caller, which deadline or timeout passed.
func explain(ctx context.Context, err error) error {
	if ctx.Err() == nil || !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var e *wire.Error
	if cause := context.Cause(ctx); cause != ctx.Err() && !errors.As(err, &e) {
		return wire.AsError(cause)
	}
	return err
}

// run calls h, turning a panic into an error with code "panic".
func (r *Router) run(ctx context.Context, h HandlerFunc, c wire.Codec, req *wire.Request) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.cfg.Logger.Error("task panicked", "task", req.Task, "invocation_id", req.ID, "trace_id", wire.TraceID(req.TraceParent), "panic", p, "stack", string(debug.Stack()))
			err = &wire.Error{Code: wire.CodePanic, Message: fmt.Sprint(p)}
		}
	}()
	return h(ctx, c, req.Body)
}
