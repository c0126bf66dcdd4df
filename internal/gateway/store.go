package gateway

import (
	"container/list"
	"encoding/json"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
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
	Parent     string          `json:"parent,omitempty"`
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
}

// store keeps invocations by id: every one in flight, and finished ones for
// a retention period, at most max of those, the oldest evicted first.
type store struct {
	retention time.Duration
	max       int

	mu       sync.Mutex
	byID     map[string]*record
	order    *list.List // finished records, oldest first
	finished int
}

func newStore(retention time.Duration, max int) *store {
	return &store{retention: retention, max: max, byID: map[string]*record{}, order: list.New()}
}

// add stores a new invocation in state queued.
func (s *store) add(inv Invocation, cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[inv.ID] = &record{inv: inv, changed: make(chan struct{}), cancel: cancel}
}

// get returns a copy of the invocation and a channel closed at its next change.
func (s *store) get(id string) (Invocation, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	r, ok := s.byID[id]
	if !ok {
		return Invocation{}, nil, false
	}
	inv := r.inv
	inv.Children = append([]string(nil), r.inv.Children...)
	return inv, r.changed, true
}

// update applies fn to invocation id's resource, unless it is final.
func (s *store) update(id string, fn func(*Invocation)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byID[id]
	if !ok || r.inv.State.Final() {
		return
	}
	fn(&r.inv)
	close(r.changed)
	r.changed = make(chan struct{})
	if r.inv.State.Final() {
		r.cancel()
		r.elem = s.order.PushBack(r)
		s.finished++
		s.expire(time.Now())
	}
}

// cancel cancels invocation id if it is in flight; it reports whether id is known.
func (s *store) cancel(id string) bool {
	s.mu.Lock()
	r, ok := s.byID[id]
	s.mu.Unlock()
	if ok {
		r.cancel()
	}
	return ok
}

// remove forgets invocation id.
func (s *store) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byID[id]; ok {
		if r.elem != nil {
			s.order.Remove(r.elem)
			s.finished--
		}
		delete(s.byID, id)
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
		delete(s.byID, r.inv.ID)
	}
}

// cancelAll cancels every invocation in flight.
func (s *store) cancelAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.byID {
		r.cancel()
	}
}
