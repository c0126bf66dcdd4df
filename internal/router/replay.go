package router

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Durable parents (docs/DURABILITY.md). A durable parent's children carry
// its namespace's journal in their requests, and their servers copy their
// outcomes there. When the parent runs again after its worker died (an
// attempt that is not the first of its retry), its calls of children are
// first looked up there: the k-th child's kept outcome is returned at
// once, without a request; a child that was running when the parent died
// is adopted from the server running it; only the others are sent again.

// adoptRecheck is how often a re-run parent asks again about an adopted
// child whose outcome has not come: if its server died meanwhile, the
// child is looked up in the journal again, or sent again.
const adoptRecheck = 10 * time.Second

// replay is what a re-run of a durable parent knows of its earlier runs'
// children.
type replay struct {
	journal wire.Journaler
	since   time.Time // when the parent's request was first sent
	rerun   bool      // it was delivered again (not only sent again, see again)
	log     *slog.Logger

	mu   sync.Mutex
	read bool                   // the journal was read once (or could not be)
	next int64                  // where the next read starts: after the last one
	kept map[string]*wire.Reply // outcomes by child id
}

// durable sets up inv as a durable parent of req if its task is durable
// and the transport keeps a journal.
func (r *Router) durable(inv *Invocation, req *wire.Request, p Policy) {
	j, ok := r.cfg.Transport.(wire.Journaler)
	if !ok || p.Volatile || j.Journal() == "" {
		return
	}
	inv.journal = j.Journal()
	if req.Attempt > req.Retries+1 || req.Replay { // an earlier run of this retry may have been cut short
		inv.replay = &replay{journal: j, since: req.Sent, rerun: !req.Replay, log: r.cfg.Logger, kept: map[string]*wire.Reply{}}
	}
}

// lookUp returns the outcome kept for child id, reading the journal first
// if fresh is true or it was never read. Called by the task (fresh false),
// it gives up its compute slot while it reads. A journal that cannot be
// read keeps nothing: the children run again, as without durability.
func (inv *Invocation) lookUp(ctx context.Context, id string, fresh bool) *wire.Reply {
	rp := inv.replay
	rp.mu.Lock()
	if !fresh && rp.read {
		defer rp.mu.Unlock()
		return rp.kept[id]
	}
	from := rp.next
	rp.mu.Unlock()
	if !fresh {
		inv.suspend()
		defer inv.resume()
	}
	kept, next, err := rp.journal.Kept(ctx, inv.ID, rp.since, from) // concurrent reads share rounds
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.next = max(rp.next, next)
	if err != nil && !rp.read {
		rp.log.Warn("reading the journal failed: children whose outcomes it keeps run again", "task", inv.Task, "invocation_id", inv.ID, "err", err)
	}
	rp.read = true
	for k, v := range kept {
		if _, ok := rp.kept[k]; !ok {
			rp.kept[k] = v
		}
	}
	return rp.kept[id]
}

// recall returns what a re-run parent's call req of child req.ID gets
// from the journal: the kept outcome of the same task, a
// "nondeterministic" failure (which becomes the parent's outcome too) if
// the kept one is another task's, or nil if none is kept.
func (inv *Invocation) recall(ctx context.Context, req *wire.Request, fresh bool) *wire.Reply {
	rep := inv.lookUp(ctx, req.ID, fresh)
	if rep == nil {
		return nil
	}
	if rep.Task != req.Task {
		return inv.diverge(req, rep.Task)
	}
	out := *rep
	out.ID = req.ID
	return &out
}

// diverge fails the call req, which an earlier run of the parent made
// of task other, and the parent with it: "nondeterministic".
func (inv *Invocation) diverge(req *wire.Request, other string) *wire.Reply {
	e := &wire.Error{Code: wire.CodeNondeterministic, Message: fmt.Sprintf(
		"call %s of invocation %s: its first run called task %q there, this run called %q; a durable task must call the same tasks in the same order given the same input and outcomes",
		req.ID, inv.ID, other, req.Task)}
	inv.diverged.CompareAndSwap(nil, e)
	return failure(req.ID, e)
}

// resume takes care of a re-run parent's call p of a child without a
// kept outcome, in the background (a parent starting children in parallel
// does not wait for each): it adopts the child if a server runs it (its
// outcome then comes here too), takes its outcome from the journal if it
// ended meanwhile, or else sends the request.
func (r *Router) resume(parent *Invocation, p *Pending, req *wire.Request, within time.Duration) {
	if j, ok := r.cfg.Transport.(wire.Journaler); ok {
		running, err := j.Adopt(p.ctx, req.ID, req.Task)
		switch {
		case err == nil && running == req.Task:
			r.cfg.Logger.Debug("adopted a child running when its parent's earlier run ended", "task", req.Task, "invocation_id", req.ID)
			r.watchAdopted(parent, j, req)
			return
		case err == nil && running != "":
			r.fail(req.ID, parent.diverge(req, running))
			return
		}
		// Read after the servers answered: an outcome published before is there.
		if rep := parent.recall(p.ctx, req, true); rep != nil {
			r.fail(req.ID, rep)
			return
		}
	}
	again(parent, req)
	if err := r.send(p.ctx, req, within); err != nil {
		r.sendFailed(p, err)
		return
	}
	r.sent(p.id)
}

// again marks req, a re-run parent's call of a child that is neither kept
// nor running, as sent again (a cancel of its earlier copy, the parent's
// earlier run ending, does not apply) and maybe as one to replay: its
// first run may be queued still, or may have died with the parent's
// worker, having kept outcomes of its own.
// Its server reads them from the journal from the parent's first send.
// A parent marks them if it was delivered again, or if the journal kept
// outcomes of its own earlier run: a parent sent again that never ran
// before does not make its whole subtree replay (nor, through the
// broker's counting a delivery returned unstarted as an attempt, does a
// tree that nothing killed).
func again(parent *Invocation, req *wire.Request) {
	rp := parent.replay
	rp.mu.Lock()
	ran := rp.rerun || len(rp.kept) > 0
	rp.mu.Unlock()
	req.Resent = true
	if ran {
		req.Replay, req.Sent = true, rp.since
	}
}

// watchAdopted asks again every adoptRecheck whether a server still runs
// the adopted child req, until its flight ends: when none does and its
// outcome has not come, it takes the outcome from the journal, or sends
// the request again.
func (r *Router) watchAdopted(parent *Invocation, j wire.Journaler, req *wire.Request) {
	tick := time.NewTicker(adoptRecheck)
	defer tick.Stop()
	for range tick.C {
		if !r.inFlight(req.ID) {
			return
		}
		ctx, cancel := context.WithTimeout(parent.ctx, adoptRecheck)
		running, err := j.Adopt(ctx, req.ID, req.Task)
		var rep *wire.Reply
		if err == nil && running == "" {
			rep = parent.recall(ctx, req, true)
		}
		switch {
		case parent.ctx.Err() != nil:
			cancel()
			return // its waiters end with the parent's context
		case err != nil || running != "":
			cancel()
			continue
		case rep != nil:
			r.fail(req.ID, rep)
		default:
			again(parent, req)
			if err := r.send(parent.ctx, req, 0); err != nil { // as long as its parent waits, like any call
				r.fail(req.ID, failure(req.ID, err))
			}
		}
		cancel()
		return
	}
}

// inFlight reports whether invocation id is in flight here.
func (r *Router) inFlight(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.calls.Get(id)
	return ok
}
