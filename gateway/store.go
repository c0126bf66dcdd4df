package gateway

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/shrink"
	"github.com/atasks-go/atasks/wire"
)

// Invocation is the resource the gateway serves for one task invocation.
type Invocation struct {
	ID         string          `json:"id"`
	NS         string          `json:"ns"`
	Task       string          `json:"task"`
	State      atasks.State    `json:"state"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Worker     string          `json:"worker,omitempty"`
	Attempt    int             `json:"attempt,omitempty"`
	RunAt      *time.Time      `json:"run_at,omitempty"`
	Parent     string          `json:"parent,omitempty"`
	Children   []string        `json:"children,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *atasks.Error   `json:"error,omitempty"`
}

// record is a stored invocation and what is needed to wait for and cancel it.
type record struct {
	inv     Invocation
	changed chan struct{} // closed and replaced on every change
	cancel  context.CancelCauseFunc
	elem    *list.Element // in store.order

	key         string // idempotency key within inv.NS; "" for none
	fingerprint string // of the request that started it, for key reuse

	kids   []kid  // its children, as it reported them
	caller string // who started it, while it counts against the cap per caller
	counts bool   // it counts against its caller's cap: not ended yet

	sending  chan struct{} // closed once it is sent, or dropped because it could not be
	local    bool          // this gateway started it; else it is known from the history
	recorded bool          // this gateway recorded it in the history (history.go)
	heard    bool          // the history named it: its record or a reply
}

// kid is a child of a recorded invocation, as the invocation reported it:
// called, and once the invocation ended, how each of its children ended.
type kid struct {
	wire.ChildState
	learned time.Time
}

// store keeps invocations by id: every one in flight, and finished ones for
// a retention period, at most max of those, the oldest evicted first. It
// remembers the ids of the last max evicted ones.
type store struct {
	retention     time.Duration
	max           int
	maxUnfinished int
	maxPerCaller  int            // unfinished invocations one caller may have; 0: no cap
	callers       map[string]int // unfinished invocations by caller, those with any
	mu            sync.Mutex
	byID          shrink.Map[string, *record]
	parentOf      shrink.Map[string, *record] // children of records, by id
	byKey         map[idemKey]*record         // records with an idempotency key
	claims        map[idemKey]claimed         // the history's first claim of each key (history.go)
	claimedBy     map[string]idemKey          // the keys of claims, by invocation id
	order         *list.List                  // finished records, oldest first
	finished      int
	added         chan struct{} // closed and replaced whenever a record is added
	evicted       evicted
	onEvict       func(n int) // told how many records each expire dropped; may be nil

	// peak and peakAll are the most unfinished records, and records in
	// all, since memory was last given back; once either drops to a
	// quarter of a large peak, drained is called.
	peak, peakAll int
	drained       func() // may be nil
}

// releaseAbove is the peak of unfinished records above which their
// finishing gives memory back to the system (see store.peak).
const releaseAbove = 1000

// idemKey is an idempotency key in a namespace.
type idemKey struct{ ns, key string }

func newStore(retention time.Duration, max, maxUnfinished, maxPerCaller int) *store {
	return &store{retention: retention, max: max, maxUnfinished: maxUnfinished, maxPerCaller: maxPerCaller, callers: map[string]int{}, byKey: map[idemKey]*record{},
		claims: map[idemKey]claimed{}, claimedBy: map[string]idemKey{},
		order: list.New(), added: make(chan struct{}), evicted: evicted{max: max, ns: map[string]string{}}}
}

// errFull says the store keeps as many unfinished invocations as it may;
// errCallerFull, that the caller has as many as it may.
var (
	errFull       = errors.New("too many unfinished invocations")
	errCallerFull = errors.New("too many unfinished invocations of this caller")
)

// add stores a new invocation in state queued under idempotency key key of
// inv.NS ("" for none), with the fingerprint of the request. If key names
// an invocation already, add stores nothing and returns that one's id and
// fingerprint; if maxUnfinished are unfinished, it stores nothing and
// returns errFull, and if caller has maxPerCaller unfinished, errCallerFull.
func (s *store) add(inv Invocation, cancel context.CancelCauseFunc, key, fingerprint, caller string) (priorID, priorFingerprint string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prior, ok := s.byKey[idemKey{inv.NS, key}]; ok && key != "" {
		return prior.inv.ID, prior.fingerprint, nil
	}
	if c, ok := s.claims[idemKey{inv.NS, key}]; ok && key != "" && !s.void(c, time.Now()) {
		return c.ID, c.Fingerprint, nil
	}
	unfinished := s.byID.Len() - s.finished
	switch {
	case unfinished >= s.maxUnfinished:
		return "", "", errFull
	case s.maxPerCaller > 0 && s.callers[caller] >= s.maxPerCaller:
		return "", "", errCallerFull
	}
	s.callers[caller]++
	s.peak = max(s.peak, unfinished+1)
	s.peakAll = max(s.peakAll, s.byID.Len()+1)
	s.insert(&record{inv: inv, changed: make(chan struct{}), cancel: cancel, key: key, fingerprint: fingerprint, sending: make(chan struct{}), caller: caller, counts: true, local: true})
	return "", "", nil
}

// release stops counting r against its caller's cap, if it still does.
// s.mu is held.
func (s *store) release(r *record) {
	if !r.counts {
		return
	}
	if s.callers[r.caller]--; s.callers[r.caller] <= 0 {
		delete(s.callers, r.caller)
	}
	r.counts = false
}

// sent records that invocation id was sent.
func (s *store) sent(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byID.Get(id); ok && r.sending != closed {
		close(r.sending)
		r.sending = closed
	}
}

// awaitSent waits up to d for invocation id to be sent (one known from
// the history was, or is once its request is read), and reports whether
// it was (false: it could not be, or d passed first).
func (s *store) awaitSent(id string, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		r, ok := s.byID.Get(id)
		wake := s.added
		if ok {
			wake = r.sending // sent replaces it: read it under s.mu
		}
		_, claimed := s.claimedBy[id]
		s.mu.Unlock()
		if !ok && !claimed {
			return false
		}
		select {
		case <-wake:
		case <-timer.C:
			return false
		}
		if ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			_, ok = s.byID.Get(id)
			return ok
		}
	}
}

// drop forgets invocation id, which was never started.
func (s *store) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(id)
	if !ok || r.elem != nil {
		return
	}
	s.byID.Delete(id)
	if k := (idemKey{r.inv.NS, r.key}); r.key != "" && s.byKey[k] == r {
		delete(s.byKey, k)
	}
	s.release(r)
	close(r.sending) // replays of its key give up
	close(r.changed)
}

// adopt stores a finished invocation unless one with its id is known or
// was evicted.
func (s *store) adopt(inv Invocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.byID.Get(inv.ID); known {
		return
	}
	if _, gone := s.evicted.ns[inv.ID]; gone {
		return
	}
	r := &record{inv: inv, changed: make(chan struct{}), cancel: noop, sending: closed}
	s.insert(r)
	r.elem = s.order.PushBack(r)
	s.finished++
	s.expire(time.Now())
}

// insert adds r and wakes those waiting for new records. s.mu is held.
func (s *store) insert(r *record) {
	s.byID.Set(r.inv.ID, r)
	if r.key != "" {
		s.byKey[idemKey{r.inv.NS, r.key}] = r
	}
	close(s.added)
	s.added = make(chan struct{})
}

// get returns a copy of the invocation and a channel closed at its next
// change; for an unknown id, a channel closed when the next record is added.
func (s *store) get(id string) (Invocation, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	r, ok := s.byID.Get(id)
	if !ok {
		if p, ok := s.parentOf.Get(id); ok {
			return p.child(id), p.changed, true
		}
		return Invocation{}, s.added, false
	}
	inv := r.inv
	inv.Children = append([]string(nil), r.inv.Children...)
	return inv, r.changed, true
}

// child returns the resource of r's child id, made of what r reported.
func (r *record) child(id string) Invocation {
	i := slices.IndexFunc(r.kids, func(k kid) bool { return k.ID == id })
	k := r.kids[i]
	ns := k.NS
	if ns == "" { // a server that does not say
		ns = r.inv.NS
	}
	inv := Invocation{ID: id, NS: ns, Task: k.Task, Parent: r.inv.ID, State: k.State, CreatedAt: k.learned}
	if k.State.Final() {
		inv.FinishedAt = r.inv.FinishedAt
	}
	if k.Code != "" {
		inv.Error = &atasks.Error{Code: k.Code, Message: "as its parent saw it: the gateway keeps no more of a child's outcome"}
	}
	return inv
}

// learnChild records that invocation parent called child: the child is
// readable as long as its parent is, with what its parent reports of it.
func (s *store) learnChild(parent string, child wire.ChildState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(parent)
	if !ok || len(r.kids) >= wire.MaxChildren {
		return
	}
	if _, known := s.parentOf.Get(child.ID); known {
		return
	}
	r.kids = append(r.kids, kid{child, time.Now().UTC()})
	s.parentOf.Set(child.ID, r)
}

// endChildren records how the children of invocation parent ended, as its
// final reply says.
func (s *store) endChildren(parent string, ended []wire.ChildState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(parent)
	if !ok {
		return
	}
	for _, e := range ended {
		if i := slices.IndexFunc(r.kids, func(k kid) bool { return k.ID == e.ID }); i >= 0 {
			r.kids[i].ChildState = e
		} else if len(r.kids) < wire.MaxChildren {
			if _, known := s.parentOf.Get(e.ID); !known {
				r.kids = append(r.kids, kid{e, time.Now().UTC()})
				s.parentOf.Set(e.ID, r)
			}
		}
	}
}

// update applies fn to invocation id's resource, unless it is gone or
// final; it reports whether it did.
func (s *store) update(id string, fn func(*Invocation)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID.Get(id)
	if !ok || r.inv.State.Final() {
		return false
	}
	fn(&r.inv)
	close(r.changed)
	r.changed = make(chan struct{})
	if r.inv.State.Final() {
		r.cancel(nil)
		r.cancel, r.changed = noop, closed // nothing to cancel or wait for any more
		s.release(r)
		r.elem = s.order.PushBack(r)
		s.finished++
		s.expire(time.Now())
		s.noteDrain()
	}
	return true
}

// noteDrain calls drained once the unfinished records, or the records in
// all, have dropped to a quarter of a peak above releaseAbove: a backlog
// has drained, or its records expired, and the memory it took can go back
// to the system. s.mu is held.
func (s *store) noteDrain() {
	unfinished, all := s.byID.Len()-s.finished, s.byID.Len()
	switch {
	case s.peak > releaseAbove && unfinished <= s.peak/4:
		s.peak = unfinished
	case s.peakAll > releaseAbove && all <= s.peakAll/4:
		s.peakAll = all
	default:
		return
	}
	if s.drained != nil {
		go s.drained()
	}
}

// cancel cancels invocation id of namespace ns if this gateway started it
// and it is in flight, saying why (a *wire.Error with code "cancelled");
// it reports whether the invocation is known, and whether this gateway
// started it.
func (s *store) cancel(ns, id string, why error) (known, local bool) {
	s.mu.Lock()
	r, ok := s.byID.Get(id)
	ok = ok && r.inv.NS == ns
	s.mu.Unlock()
	if ok && r.local {
		r.cancel(why)
	}
	return ok, ok && r.local
}

// gone reports whether invocation id of namespace ns is among the last
// evicted ones.
func (s *store) gone(ns, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	evictedNS, ok := s.evicted.ns[id]
	return ok && evictedNS == ns
}

var (
	noop   = func(error) {}
	closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
)

// sweep drops the finished records past their retention, and void claims.
func (s *store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	s.forgetVoidClaims(time.Now())
}

// expire drops finished records older than the retention or beyond the cap.
func (s *store) expire(now time.Time) {
	for e := s.order.Front(); e != nil; e = s.order.Front() {
		r := e.Value.(*record)
		if s.finished <= s.max && now.Sub(*r.inv.FinishedAt) < s.retention {
			return
		}
		s.order.Remove(e)
		s.finished--
		s.byID.Delete(r.inv.ID)
		if k := (idemKey{r.inv.NS, r.key}); s.byKey[k] == r {
			delete(s.byKey, k)
		}
		if k, ok := s.claimedBy[r.inv.ID]; ok {
			delete(s.claimedBy, r.inv.ID)
			delete(s.claims, k)
		}
		for _, k := range r.kids {
			if p, _ := s.parentOf.Get(k.ID); p == r {
				s.parentOf.Delete(k.ID)
			}
		}
		s.evicted.add(r.inv.ID, r.inv.NS)
		if s.onEvict != nil {
			s.onEvict(1)
		}
		s.noteDrain()
	}
}

// len returns how many records the store keeps, running and finished.
func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID.Len()
}

// evicted remembers the namespaces of the last max evicted invocation ids.
type evicted struct {
	max  int
	ring []string // ids, next is the oldest once full
	next int
	ns   map[string]string // by id
}

func (e *evicted) add(id, ns string) {
	if len(e.ring) < e.max {
		e.ring = append(e.ring, id)
	} else {
		delete(e.ns, e.ring[e.next])
		e.ring[e.next] = id
		e.next = (e.next + 1) % e.max
	}
	e.ns[id] = ns
}
