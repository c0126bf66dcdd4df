package gateway

// The dashboard's feed (docs/WEBSOCKET.md, "Monitoring"): what the workers
// of every namespace report of the invocations they run, kept for the most
// recent maxMonitored invocations, with per-task counts, pushed to the
// WebSocket connections that monitor. The gateway watches the namespaces
// only while someone monitors.

import (
	"container/list"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
)

const (
	maxMonitored    = 5000                   // invocations kept
	monitorSnapshot = 500                    // of those, sent to a new monitor
	monitorFlush    = 250 * time.Millisecond // how often a monitor gets the changes
	monitorFlushMax = 100                    // changes sent per flush at most; the rest wait
	statsEvery      = time.Second
	rateWindow      = 10 // seconds over which a task's rate is measured
)

// monInvocation is an invocation as the dashboard shows it.
type monInvocation struct {
	ID         string       `json:"id"`
	NS         string       `json:"ns"`
	Task       string       `json:"task"`
	State      atasks.State `json:"state"`
	Parent     string       `json:"parent,omitempty"`
	Worker     string       `json:"worker,omitempty"`
	StartedAt  *time.Time   `json:"started_at,omitempty"`
	FinishedAt *time.Time   `json:"finished_at,omitempty"`
	DurationMS *int64       `json:"duration_ms,omitempty"`
	ErrorCode  string       `json:"error_code,omitempty"`
	Children   []string     `json:"children"`
}

// monServer is a serving process of a namespace, for the dashboard.
type monServer struct {
	NS string `json:"ns"`
	atasks.ServerInfo
}

// monTask is one task's counts, for the dashboard.
type monTask struct {
	NS     string  `json:"ns"`
	Task   string  `json:"task"`
	Rate   float64 `json:"rate"` // ended per second over the last rateWindow seconds
	Ended  int64   `json:"ended"`
	Failed int64   `json:"failed"`
}

// taskKey names a task of a namespace.
type taskKey struct{ ns, task string }

// taskStats counts the invocations of one task that ended, in all and per
// second of the last rateWindow seconds.
type taskStats struct {
	ended, failed int64
	buckets       [rateWindow]struct{ sec, n int64 }
}

// monitor is the gateway's feed; see the top of this file.
type monitor struct {
	g *Gateway

	mu        sync.Mutex
	recs      map[string]*list.Element // by id (ids are unique across namespaces); of order, values *monInvocation
	order     *list.List               // oldest first
	children  map[string][]string      // child ids by parent id, in order seen, whatever their namespaces
	tasks     map[taskKey]*taskStats   // by ns and task name
	subs      map[*monSub]struct{}
	stopWatch context.CancelFunc // ends the watchers; nil when no one monitors
}

// monSub is one monitoring WebSocket op: the invocations changed since its
// last flush.
type monSub struct {
	changed map[string]bool // by id
}

func newMonitor(g *Gateway) *monitor {
	return &monitor{g: g, recs: map[string]*list.Element{}, order: list.New(), children: map[string][]string{},
		tasks: map[taskKey]*taskStats{}, subs: map[*monSub]struct{}{}}
}

// subscribe adds a monitor, starting to watch if it is the first, and
// returns it with the most recent invocations.
func (m *monitor) subscribe() (*monSub, []monInvocation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.subs) == 0 {
		ctx, stop := context.WithCancel(m.g.life)
		m.stopWatch = stop
		for _, ns := range m.g.cfg.Client.Namespaces() {
			go m.watch(ctx, ns)
		}
	}
	s := &monSub{changed: map[string]bool{}}
	m.subs[s] = struct{}{}
	snap := []monInvocation{}
	for e := m.order.Back(); e != nil && len(snap) < monitorSnapshot; e = e.Prev() {
		snap = append(snap, m.viewLocked(e.Value.(*monInvocation)))
	}
	slices.Reverse(snap)
	return s, snap
}

// watch watches namespace ns until ctx ends, again a second after each
// failure.
func (m *monitor) watch(ctx context.Context, ns string) {
	for ctx.Err() == nil {
		if err := m.g.cfg.Client.Watch(ctx, ns, func(a atasks.Activity) { m.add(ns, a) }); err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// unsubscribe removes s, and stops watching if no one monitors any more.
func (m *monitor) unsubscribe(s *monSub) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, s)
	if len(m.subs) == 0 && m.stopWatch != nil {
		m.stopWatch()
		m.stopWatch = nil
	}
}

// add records activity a of namespace ns and marks what changed for every
// monitor.
func (m *monitor) add(ns string, a atasks.Activity) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, isNew := m.recordLocked(ns, a.ID)
	if rec.State.Final() {
		return // a late report of an earlier state
	}
	rec.Task, rec.State, rec.Worker, rec.ErrorCode = a.Task, a.State, a.Worker, a.Code
	start := a.Start.UTC()
	rec.StartedAt = &start
	if a.State.Final() {
		end := a.End.UTC()
		ms := end.Sub(start).Milliseconds()
		rec.FinishedAt, rec.DurationMS = &end, &ms
		m.countLocked(taskKey{ns, a.Task}, a.State, end)
	}
	changed := []string{a.ID}
	if isNew && a.Parent != "" {
		rec.Parent = a.Parent
		m.children[a.Parent] = append(m.children[a.Parent], a.ID)
		changed = append(changed, a.Parent)
	}
	for s := range m.subs {
		for _, c := range changed {
			if len(s.changed) < maxMonitored { // else it is that far behind: it misses some
				s.changed[c] = true
			}
		}
	}
}

// recordLocked returns the record of invocation id of ns, adding it (and
// dropping the oldest beyond maxMonitored) if new.
func (m *monitor) recordLocked(ns, id string) (*monInvocation, bool) {
	if e, ok := m.recs[id]; ok {
		m.order.MoveToBack(e)
		return e.Value.(*monInvocation), false
	}
	rec := &monInvocation{ID: id, NS: ns}
	m.recs[id] = m.order.PushBack(rec)
	for m.order.Len() > maxMonitored {
		m.dropLocked(m.order.Remove(m.order.Front()).(*monInvocation))
	}
	return rec, true
}

// dropLocked forgets rec: its record, its children list, its place in its
// parent's, and any change pending for it. So children lists only name
// recorded invocations, and nothing outgrows maxMonitored.
func (m *monitor) dropLocked(rec *monInvocation) {
	delete(m.recs, rec.ID)
	delete(m.children, rec.ID)
	if siblings, ok := m.children[rec.Parent]; ok {
		siblings = slices.DeleteFunc(siblings, func(id string) bool { return id == rec.ID })
		if len(siblings) == 0 {
			delete(m.children, rec.Parent)
		} else {
			m.children[rec.Parent] = siblings
		}
	}
	for s := range m.subs {
		delete(s.changed, rec.ID)
	}
}

// countLocked counts an invocation of task k that ended at end in state.
func (m *monitor) countLocked(k taskKey, state atasks.State, end time.Time) {
	ts := m.tasks[k]
	if ts == nil {
		ts = &taskStats{}
		m.tasks[k] = ts
	}
	ts.ended++
	if state != "succeeded" {
		ts.failed++
	}
	sec := end.Unix()
	b := &ts.buckets[sec%rateWindow]
	if b.sec != sec {
		b.sec, b.n = sec, 0
	}
	b.n++
}

// viewLocked is rec as sent: a copy with its children.
func (m *monitor) viewLocked(rec *monInvocation) monInvocation {
	v := *rec
	v.Children = slices.Clone(m.children[rec.ID])
	if v.Children == nil {
		v.Children = []string{}
	}
	return v
}

// flush takes up to monitorFlushMax of s's changed invocations.
func (m *monitor) flush(s *monSub) []monInvocation {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []monInvocation
	for id := range s.changed {
		if len(out) == monitorFlushMax {
			break // the rest goes with the next flush
		}
		delete(s.changed, id)
		if e, ok := m.recs[id]; ok {
			out = append(out, m.viewLocked(e.Value.(*monInvocation)))
		}
	}
	return out
}

// stats returns the servers of every namespace and the tasks' counts.
func (m *monitor) stats(ctx context.Context) ([]monServer, []monTask) {
	servers := []monServer{}
	for _, ns := range m.g.cfg.Client.Namespaces() {
		infos, err := m.g.cfg.Client.Servers(ctx, ns)
		if err != nil {
			continue
		}
		for _, s := range infos {
			servers = append(servers, monServer{NS: ns, ServerInfo: s})
		}
	}
	now := time.Now().Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	tasks := make([]monTask, 0, len(m.tasks))
	for k, ts := range m.tasks {
		var recent int64
		for _, b := range ts.buckets {
			if now-b.sec < rateWindow {
				recent += b.n
			}
		}
		tasks = append(tasks, monTask{NS: k.ns, Task: k.task, Rate: float64(recent) / rateWindow, Ended: ts.ended, Failed: ts.failed})
	}
	slices.SortFunc(tasks, func(a, b monTask) int {
		if a.NS != b.NS {
			return compare(a.NS, b.NS)
		}
		return compare(a.Task, b.Task)
	})
	return servers, tasks
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
