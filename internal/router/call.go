package router

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// cancelTimeout bounds how long telling a server to cancel may take.
const cancelTimeout = 5 * time.Second

// Pending is a call in flight: sent, its outcome not yet known.
type Pending struct {
	id      string
	r       *Router
	observe func(*wire.Reply)
	done    chan *wire.Reply // receives the outcome once
	stop    func() bool      // stops the context watch; guarded by r.mu
}

// Start sends req and returns the pending call. If ctx carries a running
// invocation, req becomes its child: it gets a derived id unless req.ID is
// set, and the parent is told. When ctx ends before the outcome arrives, the
// call ends with "cancelled" or "timeout", and if cancelled, the server is
// asked to cancel too (it knows the deadline already).
// observe, if not nil, sees every non-final reply; it must not block.
func (r *Router) Start(ctx context.Context, req *wire.Request, observe func(*wire.Reply)) *Pending {
	if parent := FromContext(ctx); parent != nil {
		req.Parent = parent.ID
		if req.ID == "" {
			req.ID = parent.childID()
		}
		parent.delivery.Notify(&wire.Reply{ID: parent.ID, State: wire.Running, Child: req.ID})
	}
	if req.ID == "" {
		req.ID = NewID()
	}
	if dl, ok := ctx.Deadline(); ok && (req.Deadline.IsZero() || dl.Before(req.Deadline)) {
		req.Deadline = dl
	}
	p := &Pending{id: req.ID, r: r, observe: observe, done: make(chan *wire.Reply, 1)}
	r.mu.Lock()
	r.calls[req.ID] = p
	r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		p.complete(failure(req.ID, err))
		return p
	}
	if err := r.cfg.Transport.Send(ctx, req); err != nil {
		r.cfg.Logger.Debug("send failed", "task", req.Task, "invocation_id", req.ID, "err", err)
		p.complete(failure(req.ID, err))
		return p
	}
	stop := context.AfterFunc(ctx, func() {
		// A passed deadline needs no message: the server has it too.
		if p.complete(failure(req.ID, context.Cause(ctx))) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.cancelRemote(req.ID)
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
	if inv := FromContext(ctx); inv != nil {
		inv.suspend()
		defer inv.resume()
	}
	select {
	case rep := <-p.done:
		p.done <- rep // keep it for the next Wait
		return rep
	case <-ctx.Done():
		return failure(p.id, context.Cause(ctx))
	}
}

// Cancel ends the call with "cancelled" and asks its server to cancel it.
func (p *Pending) Cancel() {
	if p.complete(failure(p.id, context.Canceled)) {
		p.r.cancelRemote(p.id)
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
	p.done <- rep
	return true
}

// deliver receives every reply from the transport.
func (r *Router) deliver(rep *wire.Reply) {
	r.mu.Lock()
	p := r.calls[rep.ID]
	r.mu.Unlock()
	switch {
	case p == nil:
		r.cfg.Logger.Debug("reply for no call in flight", "invocation_id", rep.ID, "state", rep.State)
	case rep.State.Final():
		p.complete(rep)
	case p.observe != nil:
		p.observe(rep)
	}
}

func (r *Router) cancelRemote(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
	defer cancel()
	if err := r.cfg.Transport.Cancel(ctx, id); err != nil {
		r.cfg.Logger.Warn("cancel failed", slog.String("invocation_id", id), slog.Any("err", err))
	}
}

// failure is the final reply of a call that ended with err.
func failure(id string, err error) *wire.Reply {
	e := wire.AsError(err)
	return &wire.Reply{ID: id, State: e.StateOf(), Err: e}
}
