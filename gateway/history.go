package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/clientlink"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/wire"
)

// Replicas. When the transports of the client's namespaces keep a
// history (amqp.Config.History), every gateway replica reads all of it:
// the calls any replica recorded (those whose id it handed out before
// their outcome: a 202, a WebSocket call, a call with an idempotency
// key), the state changes and outcomes of every call, and the claims of
// idempotency keys. So each keeps a record of every
// invocation within the history's retention (and its own caps), and
// answers for any of them: a GET, a long-poll, a DELETE (sent to the
// invocation's server, whoever started it), a WebSocket subscription. An
// id it does not know is looked up once more after a Sync (the history's
// end read), so that a call made through another replica a moment ago is
// found. An idempotency key is claimed in the history before the call is
// sent: of two replicas given one key at once, the first claim in the
// history's order wins and the other answers its invocation.

// claimVoidAfter is how long a claim holds its key without its request
// appearing in the history (its replica died between the two, or could
// not send it); a later claim of the key then wins.
const claimVoidAfter = 5 * time.Minute

// lookupWait bounds the Sync of a lookup of an unknown id.
const lookupWait = 5 * time.Second

// claimed is a claim of an idempotency key, and when it was appended.
type claimed struct {
	wire.Claim
	at time.Time
}

// follow starts reading the history of every namespace whose transport
// keeps one; it fails if the client has started, which begins the reading.
func (g *Gateway) follow() error {
	g.histories = map[string]wire.History{}
	for _, ns := range g.cfg.Client.Namespaces() {
		r, _, codecs, err := clientlink.Namespace(g.cfg.Client, ns)
		if err != nil {
			continue
		}
		if h := r.History(); h != nil {
			g.histories[ns] = h
			if err := h.Follow(func(e wire.Event) { g.fromHistory(ns, codecs, e) }); err != nil {
				return fmt.Errorf("gateway: namespace %q keeps a history: create the gateway before starting its client, so that it reads the history from its start (%w)", ns, err)
			}
		}
	}
	return nil
}

// fromHistory records event e of namespace ns's history. Replies to calls
// this gateway started are recorded as they reach the call (see start).
func (g *Gateway) fromHistory(ns string, codecs *codec.Registry, e wire.Event) {
	at := e.At.UTC()
	switch {
	case e.Request != nil:
		req := e.Request
		g.store.remember(Invocation{ID: req.ID, NS: ns, Task: req.Task, State: "queued", CreatedAt: at, Parent: req.Parent})
	case e.Claim != nil:
		g.store.claim(ns, claimed{*e.Claim, e.At})
	case e.Reply == nil:
	case g.store.local(e.Reply.ID):
		g.store.hear(e.Reply.ID)
		if e.Reply.State.Final() { // its router may have made up an outcome: the server's is everyone's
			rep := e.Reply
			result, err := resultOf(rep, codecs)
			g.store.correct(rep.ID, rep, func(inv *Invocation) { ended(inv, rep, result, err, at) })
		}
	case e.Reply.State.Final():
		rep := e.Reply
		result, err := resultOf(rep, codecs)
		g.store.endChildren(rep.ID, rep.Children)
		if !g.store.update(rep.ID, func(inv *Invocation) { ended(inv, rep, result, err, at) }) {
			inv := Invocation{ID: rep.ID, NS: ns, Task: rep.Task, CreatedAt: at}
			ended(&inv, rep, result, err, at)
			g.store.adopt(inv) // its request is older than the history's retention
		}
		g.store.hear(rep.ID)
	default: // a call is recorded accepted once sent: its first states may come before
		g.store.remember(Invocation{ID: e.Reply.ID, NS: ns, Task: e.Reply.Task, State: "queued", CreatedAt: at})
		g.observeAt(e.Reply, at)
	}
}

// ended records in inv the outcome rep reached at time at: result, or
// the failure err.
func ended(inv *Invocation, rep *wire.Reply, result json.RawMessage, err error, at time.Time) {
	if rep.Worker != "" {
		inv.Worker = rep.Worker
	}
	if rep.Attempt > 0 {
		inv.Attempt = rep.Attempt
	}
	settleAt(inv, result, err, at)
}

// lookUp reads namespace ns's history to its end if the gateway does not
// know invocation id, so that a call made through another replica is
// known. It fails with a retryable "unavailable" error when the history
// could not be read to its end: then not knowing id proves nothing.
func (g *Gateway) lookUp(ctx context.Context, ns, id string) error {
	h := g.histories[ns]
	if h == nil {
		return nil
	}
	if _, _, ok := g.store.get(id); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupWait)
	defer cancel()
	if err := h.Sync(ctx); err != nil {
		return &atasks.Error{Code: wire.CodeUnavailable, Retryable: true, Message: "reading the history the gateway replicas share: " + err.Error()}
	}
	return nil
}

// record records invocation inv, which this gateway started, as accepted
// in its namespace's history, if it has one and this was not done: before
// its id is handed out ahead of its outcome, so that every replica knows
// it from then on. One that is not recorded (say, the broker went away)
// is known to the others by its outcome.
func (g *Gateway) record(ctx context.Context, inv Invocation) {
	h := g.histories[inv.NS]
	if h == nil || !g.store.markRecorded(inv.ID) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, minSendWait)
	defer cancel()
	if err := h.Record(ctx, &wire.Request{ID: inv.ID, NS: inv.NS, Task: inv.Task}); err != nil {
		g.cfg.Logger.Warn("recording a call in the history: other replicas will know it by its outcome", "ns", inv.NS, "id", inv.ID, "err", err)
	}
}

// claim claims idempotency key c.Key of namespace ns for invocation c.ID
// in the history, if ns has one, and returns the claim that won.
func (g *Gateway) claim(ctx context.Context, ns string, c wire.Claim, wait time.Duration) (wire.Claim, error) {
	h := g.histories[ns]
	if h == nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := h.Claim(ctx, c); err != nil {
		return c, err
	}
	if won, ok := g.store.claimOf(ns, c.Key); ok {
		return won, nil
	}
	return c, nil
}

// remember records an invocation another replica started, unless it was
// evicted; of one known from its replies, it learns the task, the parent
// and when it was created.
func (s *store) remember(inv Invocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, known := s.byID.Get(inv.ID); known {
		r.heard = true
		if !r.local && r.inv.Parent == "" {
			r.inv.Parent = inv.Parent
		}
		if !r.local && r.inv.Task == "" {
			r.inv.Task = inv.Task
		}
		if !r.local && inv.CreatedAt.Before(r.inv.CreatedAt) {
			r.inv.CreatedAt = inv.CreatedAt
		}
		return
	}
	if _, gone := s.evicted.ns[inv.ID]; gone {
		return
	}
	r := &record{inv: inv, changed: make(chan struct{}), cancel: noop, sending: closed, heard: true}
	if k, ok := s.claimedBy[inv.ID]; ok {
		r.key, r.fingerprint = k.key, s.claims[k].Fingerprint
	}
	s.insert(r)
}

// claim records claim c of namespace ns unless an earlier claim of its
// key holds: one whose invocation is known, or made less than
// claimVoidAfter before c.
func (s *store) claim(ns string, c claimed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := idemKey{ns, c.Key}
	if prev, ok := s.claims[k]; ok {
		if !s.void(prev, c.at) {
			return
		}
		delete(s.claimedBy, prev.ID)
	}
	s.claims[k] = c
	s.claimedBy[c.ID] = k
}

// void reports whether claim c is void at time now: the history has not
// named its invocation (its record or a reply) claimVoidAfter after the
// claim. What this gateway knows of its own calls does not count, so that
// every replica judges alike. s.mu is held.
func (s *store) void(c claimed, now time.Time) bool {
	r, known := s.byID.Get(c.ID)
	return !(known && r.heard) && now.Sub(c.at) >= claimVoidAfter
}

// hear notes that the history named invocation id.
func (s *store) hear(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byID.Get(id); ok {
		r.heard = true
	}
}

// correct replaces the outcome of invocation id, which this gateway
// started and has recorded final, with the one rep says (by fn) if they
// differ: the outcome its router made up (cancelled, timed out, or the
// broker away) yields to the server's, which every replica reads.
func (s *store) correct(id string, rep *wire.Reply, fn func(*Invocation)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(id)
	if !ok || !r.inv.State.Final() {
		return
	}
	sameCode := (rep.Err == nil) == (r.inv.Error == nil) && (rep.Err == nil || rep.Err.Code == r.inv.Error.Code)
	if string(r.inv.State) == string(rep.State) && sameCode {
		return
	}
	fn(&r.inv)
}

// forgetVoidClaims drops the claims that are void at time now, with their
// invocations unknown: nothing else would. s.mu is held.
func (s *store) forgetVoidClaims(now time.Time) {
	for k, c := range s.claims {
		if _, known := s.byID.Get(c.ID); !known && s.void(c, now) {
			delete(s.claims, k)
			delete(s.claimedBy, c.ID)
		}
	}
}

// claimOf returns the claim that holds key of namespace ns, if any.
func (s *store) claimOf(ns, key string) (wire.Claim, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[idemKey{ns, key}]
	return c.Claim, ok
}

// markRecorded notes that invocation id is recorded in the history, and
// reports whether it was not yet (and is one this gateway started).
func (s *store) markRecorded(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(id)
	if !ok || !r.local || r.recorded {
		return false
	}
	r.recorded = true
	return true
}

// local reports whether this gateway started invocation id.
func (s *store) local(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(id)
	return ok && r.local
}
