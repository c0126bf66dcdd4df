package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks/wire"
	"go.opentelemetry.io/otel/trace"
)

// cancelTimeout bounds how long telling a server to cancel may take.
const cancelTimeout = 5 * time.Second

// Pending is one caller's wait for an invocation in flight: sent, its
// outcome not yet known.
type Pending struct {
	id          string
	task        string
	traceParent string // of the call's span
	ctx         context.Context
	r           *Router
	observe     func(*wire.Reply)
	ran         atomic.Bool   // observe saw it running
	outcome     *wire.Reply   // set once, before closed closes
	closed      chan struct{} // closed when the outcome is known
	stop        func() bool   // stops the context watch; guarded by r.mu
	span        trace.Span    // the caller's span, ended with the outcome
	sendErr     error         // why the request was not sent, if it was not
	parent      *Invocation   // the invocation that made the call, if any

	doneMu sync.Mutex
	onDone func(*wire.Reply) // called with the outcome; see OnDone
}

// flight is an invocation this process sent and awaits, and the calls
// waiting for its outcome: one, or several when re-runs of the same parent
// call the same child (see Start).
type flight struct {
	task    string
	waiters []*Pending
	req     *wire.Request // while it may still have to be sent again, for a joined waiter
}

// StartOptions change how Start sends a call.
type StartOptions struct {
	// Observe, if not nil, sees every non-final reply; it must not block.
	Observe func(*wire.Reply)
	// SendWithin, if positive, bounds how long sending may take (for
	// AMQP: until the broker confirms, across reconnects); past it the
	// call fails with the transport's error, a retryable "unavailable",
	// and its context is left alone. Zero: until the context ends.
	SendWithin time.Duration
}

// Start sends req and returns the pending call. If ctx carries a running
// invocation, req becomes its child: it gets a derived id unless req.ID is
// set, and the parent is told. When ctx ends before the outcome arrives, the
// call ends with "cancelled" or "timeout", and if cancelled, the server is
// asked to cancel too (it knows the deadline already).
//
// A derived id names the same child in every run of its parent: a parent
// that runs again (its first run's worker died, or lost its connection
// while the run went on) calls its children again under the same ids. If
// this process awaits such a child already, the new call joins that
// flight instead of sending the request twice: both get its one outcome,
// and if the first caller's send fails, a joined one sends it again. A
// caller-chosen id of a call in flight is refused with "duplicate_id".
func (r *Router) Start(ctx context.Context, req *wire.Request, opts StartOptions) *Pending {
	parent := FromContext(ctx)
	derived := false
	if parent != nil {
		req.Parent = parent.ID
		if req.ID == "" {
			req.ID, req.Journal, derived = parent.childID(), parent.journal, true
		}
	}
	if req.ID == "" {
		req.ID = NewID()
	}
	if dl, ok := ctx.Deadline(); ok && (req.Deadline.IsZero() || dl.Before(req.Deadline)) {
		req.Deadline = dl
	}
	req.Quiet = opts.Observe == nil
	p := &Pending{id: req.ID, task: req.Task, ctx: ctx, r: r, observe: opts.Observe, closed: make(chan struct{}),
		span: r.startCallSpan(ctx, req), parent: parent}
	p.traceParent = req.TraceParent
	if ctx.Err() != nil {
		p.sendErr = ctx.Err()
		p.finish(ctxFailure(req.ID, ctx), nil)
		return p
	}
	if err := checkRunAt(req); err != nil {
		p.sendErr = err
		p.finish(failure(req.ID, p.sendErr), nil)
		return p
	}
	resumed := derived && parent.replay != nil
	if resumed {
		if rep := parent.recall(ctx, req, false); rep != nil {
			parent.called(req.ID, r.cfg.NS, req.Task)
			p.finish(rep, nil)
			return p
		}
	}
	joined, err := r.join(p, req, derived)
	if err != nil {
		p.sendErr = err
		p.finish(failure(req.ID, err), nil)
		return p
	}
	later := !joined && resumed // see resume
	if !joined && !later {
		if err := r.send(ctx, req, opts.SendWithin); err != nil {
			p.sendErr = err
			r.sendFailed(p, err)
			return p
		}
		r.sent(p.id)
	}
	if parent != nil {
		parent.called(req.ID, r.cfg.NS, req.Task)
		if !parent.quiet {
			parent.delivery.Notify(&wire.Reply{ID: parent.ID, State: wire.Running, Child: req.ID, ChildNS: r.cfg.NS, ChildTask: req.Task, Worker: parent.Worker})
		}
	}
	id := req.ID // not req: the closure must not keep the request's body
	stop := context.AfterFunc(ctx, func() {
		// A passed deadline needs no message: the server has it too.
		if last := p.complete(ctxFailure(id, ctx)); last && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.cancelRemote(p)
		}
	})
	r.mu.Lock()
	open := r.waiting(p)
	if open {
		p.stop = stop
	}
	r.mu.Unlock()
	if !open {
		stop()
	}
	if later {
		go r.resume(parent, p, req, opts.SendWithin)
	}
	return p
}

// send hands req to the transport, within within if it is positive.
func (r *Router) send(ctx context.Context, req *wire.Request, within time.Duration) error {
	if within > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, within)
		defer cancel()
	}
	err := r.cfg.Transport.Send(ctx, req)
	if err != nil {
		r.cfg.Logger.Debug("send failed", "task", req.Task, "invocation_id", req.ID, "trace_id", wire.TraceID(req.TraceParent), "err", err)
	}
	return err
}

// sent records that invocation id is with the transport: nobody has to
// send it again.
func (r *Router) sent(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, _ := r.calls.Get(id); f != nil {
		f.req = nil
	}
}

// sendFailed ends p, whose send failed with err, unless it ended
// meanwhile (a send in the background, see resume). Other calls that
// joined its flight meanwhile do not inherit the failure: the first of
// them sends the request again, in the background, under its own
// context. If the request may have reached the broker and nobody waits
// for it any more because of this failure, its server is asked to cancel
// it.
func (r *Router) sendFailed(p *Pending, err error) {
	r.mu.Lock()
	f, _ := r.calls.Get(p.id)
	var next *Pending
	var req *wire.Request
	waiting := f != nil && slices.Contains(f.waiters, p)
	if waiting {
		f.waiters = slices.DeleteFunc(f.waiters, func(w *Pending) bool { return w == p })
	}
	switch {
	case f != nil && len(f.waiters) == 0:
		r.calls.Delete(p.id)
	case f != nil:
		next, req = f.waiters[0], f.req
	}
	stop := p.stop
	r.mu.Unlock()
	if waiting {
		p.finish(failure(p.id, err), stop)
	}
	switch {
	case next != nil && req != nil:
		r.cancels.Go(func() {
			if err := r.send(next.ctx, req, 0); err != nil {
				r.sendFailed(next, err)
				return
			}
			r.sent(next.id)
		})
	case waiting && next == nil && errors.Is(err, wire.ErrMaybeSent):
		r.cancelRemote(p) // not if p ended otherwise: its outcome came, or its context's end cancelled it
	}
}

// join registers p as a waiter of its invocation's flight, a new one
// unless derived allows joining one in flight; it reports whether p
// joined (and so must not send).
func (r *Router) join(p *Pending, req *wire.Request, derived bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, _ := r.calls.Get(p.id)
	switch {
	case f == nil:
		f = &flight{task: p.task, waiters: []*Pending{p}}
		if derived {
			f.req = req
		}
		r.calls.Set(p.id, f)
		return false, nil
	case derived && f.task == p.task:
		f.waiters = append(f.waiters, p)
		return true, nil
	case derived:
		return false, &wire.Error{Code: wire.CodeDuplicateID, Message: fmt.Sprintf(
			"invocation %q is in flight as a call of task %q; a re-run of its parent called task %q in its place", p.id, f.task, p.task)}
	}
	return false, &wire.Error{Code: wire.CodeDuplicateID, Message: fmt.Sprintf("invocation %q is already in flight", p.id)}
}

// waiting reports whether p still waits for its flight. r.mu must be held.
func (r *Router) waiting(p *Pending) bool {
	f, _ := r.calls.Get(p.id)
	return f != nil && slices.Contains(f.waiters, p)
}

// ID returns the invocation id of the call.
func (p *Pending) ID() string { return p.id }

// Sent returns nil if the request was handed to the transport (or joined
// a call in flight), else why not; Start has set it by the time it returns.
// A durable parent's re-run sends a child it has no outcome of in the
// background: a failure to send is then its outcome, and Sent is nil.
func (p *Pending) Sent() error { return p.sendErr }

// OnDone makes p call fn with its outcome once known, at once if it is:
// a callback instead of a goroutine blocked in Wait, for callers that
// track many calls. fn must not block. Set it at most once.
func (p *Pending) OnDone(fn func(*wire.Reply)) {
	p.doneMu.Lock()
	select {
	case <-p.closed:
		p.doneMu.Unlock()
		fn(p.outcome)
		return
	default:
	}
	p.onDone = fn
	p.doneMu.Unlock()
}

// Wait returns the call's outcome, or a "cancelled"/"timeout" reply if ctx
// ends first (the call itself goes on). While a running invocation waits, it
// gives up its compute slot.
func (p *Pending) Wait(ctx context.Context) *wire.Reply {
	select {
	case <-p.closed:
		return p.outcome
	default:
	}
	if inv := FromContext(ctx); inv != nil {
		inv.suspend()
		defer inv.resume()
	}
	select {
	case <-p.closed:
		return p.outcome
	case <-ctx.Done():
		return ctxFailure(p.id, ctx)
	}
}

// Done returns a channel that is closed when the outcome is known.
func (p *Pending) Done() <-chan struct{} { return p.closed }

// Cancel ends the call with "cancelled" and, unless other calls still
// await the same invocation, asks its server to cancel it.
func (p *Pending) Cancel() {
	if p.complete(failure(p.id, errCancelledByCaller)) {
		p.r.cancelRemote(p)
	}
}

// complete ends p's own wait with rep, unless it ended before; it reports
// whether p was the last waiter of its flight, which then ends too.
func (p *Pending) complete(rep *wire.Reply) (last bool) {
	r := p.r
	r.mu.Lock()
	f, _ := r.calls.Get(p.id)
	i := -1
	if f != nil {
		i = slices.Index(f.waiters, p)
	}
	if i < 0 {
		r.mu.Unlock()
		return false
	}
	f.waiters = slices.Delete(f.waiters, i, i+1)
	if len(f.waiters) == 0 {
		r.calls.Delete(p.id)
		last = true
	}
	stop := p.stop
	r.mu.Unlock()
	p.finish(rep, stop)
	return last
}

// finish records p's outcome; p must no longer be a waiter.
func (p *Pending) finish(rep *wire.Reply, stop func() bool) {
	if stop != nil {
		stop()
	}
	if p.parent != nil { // before the parent can hear of it and end
		p.parent.childEnded(p.id, rep)
	}
	p.doneMu.Lock()
	p.outcome = rep
	close(p.closed)
	fn := p.onDone
	p.doneMu.Unlock()
	endSpan(p.span, rep)
	if fn != nil {
		fn(rep)
	}
}

// fail ends the flight of invocation id, every waiter with rep.
func (r *Router) fail(id string, rep *wire.Reply) {
	r.mu.Lock()
	f, _ := r.calls.Get(id)
	r.calls.Delete(id)
	var ws []*Pending
	var stops []func() bool
	if f != nil {
		ws = f.waiters
		for _, p := range ws {
			stops = append(stops, p.stop)
		}
	}
	r.mu.Unlock()
	for i, p := range ws {
		p.finish(rep, stops[i])
	}
}

// observers returns the observers of invocation id's waiters.
func (r *Router) observers(id string) []*Pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, _ := r.calls.Get(id)
	if f == nil {
		return nil
	}
	ps := make([]*Pending, 0, len(f.waiters))
	for _, p := range f.waiters {
		if p.observe != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// deliver receives every reply from the transport.
func (r *Router) deliver(rep *wire.Reply) {
	r.mu.Lock()
	_, inFlight := r.calls.Get(rep.ID)
	r.mu.Unlock()
	switch {
	case !inFlight && rep.State.Final() && r.cfg.OnOrphan != nil:
		r.cfg.OnOrphan(rep)
	case !inFlight:
		r.cfg.Logger.Debug("reply for no call in flight", "task", rep.Task, "invocation_id", rep.ID, "state", rep.State)
	case rep.State.Final():
		for _, p := range r.observers(rep.ID) {
			if (rep.Worker != "" || rep.Attempt > 0) && !p.ran.Load() {
				// It ended before its "running" state was sent: report it now.
				p.observe(&wire.Reply{ID: rep.ID, State: wire.Running, Worker: rep.Worker, Attempt: rep.Attempt})
			}
		}
		r.fail(rep.ID, rep)
	default:
		for _, p := range r.observers(rep.ID) {
			if rep.State == wire.Running { // not queued: a delayed call's time came, or a retry waits
				p.ran.Store(true)
			}
			p.observe(rep)
		}
	}
}

// cancelRemote asks the call's server to cancel it, in the background so
// that cancelling many calls takes no longer than one; Close waits for it.
func (r *Router) cancelRemote(p *Pending) {
	r.cancels.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		defer cancel()
		if err := r.cfg.Transport.Cancel(ctx, p.id); err != nil {
			r.cfg.Logger.Warn("cancel failed", "task", p.task, "invocation_id", p.id, "trace_id", wire.TraceID(p.traceParent), "err", err)
		}
	})
}

// errCancelledByCaller ends a call its caller cancelled (Pending.Cancel).
var errCancelledByCaller = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled by its caller (a cancel of the call, or WaitAll with CancelOnError after another call failed)"}

// failure is the final reply of a call that ended with err.
func failure(id string, err error) *wire.Reply {
	e := wire.AsError(err)
	return &wire.Reply{ID: id, State: e.StateOf(), Err: e}
}

// ctxFailure is the final reply of a call whose context ended: "timeout" or
// "cancelled" by ctx.Err(), saying why: the cause's text when one was
// given, else which end it was.
func ctxFailure(id string, ctx context.Context) *wire.Reply {
	e := wire.AsError(ctx.Err())
	var said *wire.Error
	switch cause := context.Cause(ctx); {
	case cause == ctx.Err() && e.Code == wire.CodeTimeout:
		e = wire.DeadlinePassed()
	case cause == ctx.Err():
		e.Message = "the caller cancelled the call (its context was cancelled)"
	case errors.As(cause, &said) && said.Code == e.Code:
		e = said
	default:
		e.Message = cause.Error()
	}
	return &wire.Reply{ID: id, State: e.StateOf(), Err: e}
}

// MaxDelay is how far ahead a call may be delayed (wire.Request.RunAt):
// cancels of delayed calls are kept a little longer than that.
const MaxDelay = 30 * 24 * time.Hour

// checkRunAt refuses a delayed call that could only time out, or is
// delayed more than MaxDelay.
func checkRunAt(req *wire.Request) error {
	switch {
	case req.RunAt.IsZero():
		return nil
	case time.Until(req.RunAt) > MaxDelay:
		return &wire.Error{Code: wire.CodeBadInput, Message: fmt.Sprintf("run_at %s is more than %v ahead", req.RunAt.UTC().Format(time.RFC3339), MaxDelay)}
	case !req.Deadline.IsZero() && req.Deadline.Before(req.RunAt):
		return &wire.Error{Code: wire.CodeBadInput, Message: fmt.Sprintf("the call's deadline comes before its run_at %s: it could only time out", req.RunAt.UTC().Format(time.RFC3339))}
	}
	return nil
}
