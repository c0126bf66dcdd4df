package router

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks/wire"
	"go.opentelemetry.io/otel/trace"
)

// cancelTimeout bounds how long telling a server to cancel may take.
const cancelTimeout = 5 * time.Second

// Pending is a call in flight: sent, its outcome not yet known.
type Pending struct {
	id          string
	task        string
	traceParent string // of the call's span
	r           *Router
	observe     func(*wire.Reply)
	ran         atomic.Bool   // observe saw a state
	outcome     *wire.Reply   // set once, before finished closes
	closed      chan struct{} // closed when the outcome is known
	stop        func() bool   // stops the context watch; guarded by r.mu
	span        trace.Span    // the caller's span, ended with the outcome
}

// Start sends req and returns the pending call. If ctx carries a running
// invocation, req becomes its child: it gets a derived id unless req.ID is
// set, and the parent is told. When ctx ends before the outcome arrives, the
// call ends with "cancelled" or "timeout", and if cancelled, the server is
// asked to cancel too (it knows the deadline already).
// observe, if not nil, sees every non-final reply; it must not block.
func (r *Router) Start(ctx context.Context, req *wire.Request, observe func(*wire.Reply)) *Pending {
	parent := FromContext(ctx)
	if parent != nil {
		req.Parent = parent.ID
		if req.ID == "" {
			req.ID = parent.childID()
		}
	}
	if req.ID == "" {
		req.ID = NewID()
	}
	if dl, ok := ctx.Deadline(); ok && (req.Deadline.IsZero() || dl.Before(req.Deadline)) {
		req.Deadline = dl
	}
	p := &Pending{id: req.ID, task: req.Task, r: r, observe: observe, closed: make(chan struct{}), span: r.startCallSpan(ctx, req)}
	p.traceParent = req.TraceParent
	r.mu.Lock()
	_, dup := r.calls[req.ID]
	if !dup {
		r.calls[req.ID] = p
	}
	r.mu.Unlock()
	if dup {
		p.outcome = failure(req.ID, &wire.Error{Code: wire.CodeDuplicateID, Message: fmt.Sprintf("invocation %q is already in flight", req.ID)})
		close(p.closed)
		endSpan(p.span, p.outcome)
		return p
	}
	if ctx.Err() != nil {
		p.complete(ctxFailure(req.ID, ctx))
		return p
	}
	if err := r.cfg.Transport.Send(ctx, req); err != nil {
		r.cfg.Logger.Debug("send failed", "task", req.Task, "invocation_id", req.ID, "trace_id", wire.TraceID(req.TraceParent), "err", err)
		p.complete(failure(req.ID, err))
		return p
	}
	if parent != nil {
		parent.delivery.Notify(&wire.Reply{ID: parent.ID, State: wire.Running, Child: req.ID, Worker: parent.Worker})
	}
	stop := context.AfterFunc(ctx, func() {
		// A passed deadline needs no message: the server has it too.
		if p.complete(ctxFailure(req.ID, ctx)) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.cancelRemote(p)
		}
	})
	r.mu.Lock()
	_, open := r.calls[req.ID]
	if open {
		p.stop = stop
	}
	r.mu.Unlock()
	if !open {
		stop()
	}
	return p
}

// ID returns the invocation id of the call.
func (p *Pending) ID() string { return p.id }

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

// Cancel ends the call with "cancelled" and asks its server to cancel it.
func (p *Pending) Cancel() {
	if p.complete(failure(p.id, context.Canceled)) {
		p.r.cancelRemote(p)
	}
}

// complete records the outcome unless one was recorded before; it reports
// whether this one was.
func (p *Pending) complete(rep *wire.Reply) bool {
	p.r.mu.Lock()
	_, open := p.r.calls[p.id]
	delete(p.r.calls, p.id)
	stop := p.stop
	p.r.mu.Unlock()
	if !open {
		return false
	}
	if stop != nil {
		stop()
	}
	p.outcome = rep
	close(p.closed)
	endSpan(p.span, rep)
	return true
}

// deliver receives every reply from the transport.
func (r *Router) deliver(rep *wire.Reply) {
	r.mu.Lock()
	p := r.calls[rep.ID]
	r.mu.Unlock()
	switch {
	case p == nil && rep.State.Final() && r.cfg.OnOrphan != nil:
		r.cfg.OnOrphan(rep)
	case p == nil:
		r.cfg.Logger.Debug("reply for no call in flight", "task", rep.Task, "invocation_id", rep.ID, "state", rep.State)
	case rep.State.Final():
		if p.observe != nil && (rep.Worker != "" || rep.Attempt > 0) && !p.ran.Load() {
			// It ended before its "running" state was sent: report it now.
			p.observe(&wire.Reply{ID: rep.ID, State: wire.Running, Worker: rep.Worker, Attempt: rep.Attempt})
		}
		p.complete(rep)
	case p.observe != nil:
		p.ran.Store(true)
		p.observe(rep)
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

// failure is the final reply of a call that ended with err.
func failure(id string, err error) *wire.Reply {
	e := wire.AsError(err)
	return &wire.Reply{ID: id, State: e.StateOf(), Err: e}
}

// ctxFailure is the final reply of a call whose context ended: "timeout" or
// "cancelled" by ctx.Err(), with the cause's text when one was given.
func ctxFailure(id string, ctx context.Context) *wire.Reply {
	e := wire.AsError(ctx.Err())
	if cause := context.Cause(ctx); cause != ctx.Err() {
		e.Message = cause.Error()
	}
	return &wire.Reply{ID: id, State: e.StateOf(), Err: e}
}
