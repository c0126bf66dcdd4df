package gateway

import (
	"container/list"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/shrink"
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
	Children   []string        `json:"children,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *atasks.Error   `json:"error,omitempty"`
}

// record is a stored invocation and what is needed to wait for and cancel it.
type record struct {
	inv     Invocation
	changed chan struct{} // closed and replaced on every change
	cancel  func()
	elem    *list.Element // in store.order

	key         string // idempotency key within inv.NS; "" for none
	fingerprint string // of the request that started it, for key reuse
}

// store keeps invocations by id: every one in flight, and finished ones for
// a retention period, at most max of those, the oldest evicted first. It
// remembers the ids of the last max evicted ones.
type store struct {
	retention     time.Duration
	max           int
	maxUnfinished int

	mu       sync.Mutex
	byID     shrink.Map[string, *record]
	byKey    map[idemKey]*record // records with an idempotency key
	order    *list.List          // finished records, oldest first
	finished int
	added    chan struct{} // closed and replaced whenever a record is added
	evicted  evicted
	onEvict  func(n int) // told how many records each expire dropped; may be nil

	// peak is the most unfinished records since memory was last given
	// back; once they drop to a quarter of a large peak, drained is called.
	peak    int
	drained func() // may be nil
}

// releaseAbove is the peak of unfinished records above which their
// finishing gives memory back to the system (see store.peak).
const releaseAbove = 1000

// idemKey is an idempotency key in a namespace.
type idemKey struct{ ns, key string }

func newStore(retention time.Duration, max, maxUnfinished int) *store {
	return &store{retention: retention, max: max, maxUnfinished: maxUnfinished, byKey: map[idemKey]*record{},
		order: list.New(), added: make(chan struct{}), evicted: evicted{max: max, ns: map[string]string{}}}
}

// errFull says the store keeps as many unfinished invocations as it may.
var errFull = errors.New("too many unfinished invocations")

// add stores a new invocation in state queued under idempotency key key of
// inv.NS ("" for none), with the fingerprint of the request. If key names
// an invocation already, add stores nothing and returns that one's id and
// fingerprint; if maxUnfinished are unfinished, it stores nothing and
// returns errFull.
func (s *store) add(inv Invocation, cancel func(), key, fingerprint string) (priorID, priorFingerprint string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prior, ok := s.byKey[idemKey{inv.NS, key}]; ok {
		return prior.inv.ID, prior.fingerprint, nil
	}
	unfinished := s.byID.Len() - s.finished
	if unfinished >= s.maxUnfinished {
		return "", "", errFull
	}
	s.peak = max(s.peak, unfinished+1)
	s.insert(&record{inv: inv, changed: make(chan struct{}), cancel: cancel, key: key, fingerprint: fingerprint})
	return "", "", nil
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
	if r.key != "" {
		delete(s.byKey, idemKey{r.inv.NS, r.key})
	}
}

// adopt stores a finished invocation unless one with its id is known.
func (s *store) adopt(inv Invocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.byID.Get(inv.ID); known {
		return
	}
	r := &record{inv: inv, changed: make(chan struct{}), cancel: func() {}}
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
		return Invocation{}, s.added, false
	}
	inv := r.inv
	inv.Children = append([]string(nil), r.inv.Children...)
	return inv, r.changed, true
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
		r.cancel()
		r.cancel, r.changed = noop, closed // nothing to cancel or wait for any more
		r.elem = s.order.PushBack(r)
		s.finished++
		s.expire(time.Now())
		s.noteDrain()
	}
	return true
}

// noteDrain calls drained once the unfinished records have dropped to a
// quarter of a peak above releaseAbove: a backlog has drained, and the
// memory it took can go back to the system. s.mu is held.
func (s *store) noteDrain() {
	unfinished := s.byID.Len() - s.finished
	if s.peak <= releaseAbove || unfinished > s.peak/4 {
		return
	}
	s.peak = unfinished
	if s.drained != nil {
		go s.drained()
	}
}

// cancel cancels invocation id of namespace ns if it is in flight; it
// reports whether the invocation is known.
func (s *store) cancel(ns, id string) bool {
	s.mu.Lock()
	r, ok := s.byID.Get(id)
	ok = ok && r.inv.NS == ns
	s.mu.Unlock()
	if ok {
		r.cancel()
	}
	return ok
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
	noop   = func() {}
	closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
)

// sweep drops the finished records past their retention, and gives their
// memory back to the system if they were many.
func (s *store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.finished
	s.expire(time.Now())
	if before-s.finished > releaseAbove && s.drained != nil {
		go s.drained()
	}
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
		delete(s.byKey, idemKey{r.inv.NS, r.key})
		s.evicted.add(r.inv.ID, r.inv.NS)
		if s.onEvict != nil {
			s.onEvict(1)
		}
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
