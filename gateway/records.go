package gateway

// Read-only views of the gateway's records of the invocations it started
// and of their children (store.go), for the dashboard's feed (monitor.go):
// what they show of calls made, or ended, while no dashboard watched. None
// of them changes the store, not even by expiring records.

import (
	"container/heap"
	"slices"
)

// recorded is what the store keeps of an invocation: its own record, or,
// for a child of one (child true), what that one reported of it: its task,
// that it was called and, once the parent ended, how it ended, but not
// when (FinishedAt is nil).
type recorded struct {
	Invocation
	child bool
}

// recent returns the n most recently created invocations the store keeps,
// newest first, each followed by its children as it reported them, n in
// all at most; without their results.
func (s *store) recent(n int) []recorded {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := make(byCreated, 0, min(n, s.byID.Len())) // the newest so far, the oldest of them on top
	s.byID.All(func(_ string, r *record) bool {
		switch {
		case len(h) < n:
			heap.Push(&h, r)
		case r.inv.CreatedAt.After(h[0].inv.CreatedAt):
			h[0] = r
			heap.Fix(&h, 0)
		}
		return true
	})
	newest := make([]*record, len(h))
	for i := len(newest) - 1; i >= 0; i-- {
		newest[i] = heap.Pop(&h).(*record)
	}
	out := make([]recorded, 0, len(newest))
	for _, r := range newest {
		if len(out) == n {
			break
		}
		out = append(out, recorded{Invocation: r.view()})
		for _, k := range r.kids[:min(len(r.kids), n-len(out))] {
			out = append(out, r.childView(k.ID))
		}
	}
	return out
}

// survey returns what the store keeps of the invocations ids, by id, and
// counts the invocations it started that are in flight, by namespace and
// task.
func (s *store) survey(ids []string) (map[string]recorded, map[taskKey]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := make(map[string]recorded, len(ids))
	for _, id := range ids {
		if r, ok := s.byID.Get(id); ok {
			kept[id] = recorded{Invocation: r.view()}
		} else if p, ok := s.parentOf.Get(id); ok {
			kept[id] = p.childView(id)
		}
	}
	flying := map[taskKey]int{}
	if s.byID.Len() > s.finished {
		s.byID.All(func(_ string, r *record) bool {
			if !r.inv.State.Final() {
				flying[taskKey{r.inv.NS, r.inv.Task}]++
			}
			return true
		})
	}
	return kept, flying
}

// view is a copy of r's invocation that shares nothing that changes,
// without its result. s.mu is held.
func (r *record) view() Invocation {
	inv := r.inv
	inv.Children = slices.Clone(inv.Children)
	inv.Result = nil
	return inv
}

// childView is r's child id as r reported it; one r no longer runs for,
// but did not say how it ended, is stateUnknown. s.mu is held.
func (r *record) childView(id string) recorded {
	inv := r.child(id)
	inv.FinishedAt = nil // r's end, not the child's
	if !inv.State.Final() && r.inv.State.Final() {
		inv.State = stateUnknown
	}
	return recorded{Invocation: inv, child: true}
}

// byCreated is a min-heap of records by creation time.
type byCreated []*record

func (h byCreated) Len() int           { return len(h) }
func (h byCreated) Less(i, j int) bool { return h[i].inv.CreatedAt.Before(h[j].inv.CreatedAt) }
func (h byCreated) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *byCreated) Push(x any)        { *h = append(*h, x.(*record)) }
func (h *byCreated) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}
