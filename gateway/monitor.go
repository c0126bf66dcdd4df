package gateway

// The dashboard's feed (docs/WEBSOCKET.md, "Monitoring"): what the workers
// of every namespace report of the invocations they run, kept for the most
// recent maxMonitored invocations, with per-task counts, pushed to the
// WebSocket connections that monitor. The gateway watches the namespaces
// only while someone monitors, so the feed merges in the gateway's own
// records of what it started (records.go): a new monitor sees the calls
// made before it, and a state the gateway knows is stale is never shown.
// An invocation whose end may have gone unreported (it was in flight when
// the last watch stopped, or the call it belongs to ended long ago) and
// that the records do not confirm shows as "unknown", not as last seen.

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
	monitorSnapshot = 500                    // of those, sent to a new monitor; of the gateway's records, merged in then
	monitorFlush    = 250 * time.Millisecond // how often a monitor gets the changes
	monitorFlushMax = 100                    // changes sent per flush at most; the rest wait
	statsEvery      = time.Second
	rateWindow      = 10 // seconds over which a task's rate is measured

	checkEvery  = time.Second      // how often what is in flight is checked against the gateway's records
	orphanAfter = 10 * time.Second // how long after an invocation ended one under it may still report its end
	maxDepth    = 64               // of a call tree, as far as the monitor follows it up
)

// stateUnknown is the state of a monitored invocation that was in flight
// when last seen, and whose end may have gone unreported.
const stateUnknown atasks.State = "unknown"

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

	at      time.Time // when it started, or was called: orders the snapshot
	gen     int       // the watch (monitor.gen) in which its state was last confirmed
	endedAt time.Time // when the monitor learned of its end, by the gateway's clock
	called  []string  // its children as the gateway's record names them
}

// monServer is a serving process of a namespace, for the dashboard.
type monServer struct {
	NS string `json:"ns"`
	atasks.ServerInfo
}

// monTask is one task's counts, for the dashboard.
type monTask struct {
	NS       string  `json:"ns"`
	Task     string  `json:"task"`
	Rate     float64 `json:"rate"` // ended per second over the last rateWindow seconds
	Ended    int64   `json:"ended"`
	Failed   int64   `json:"failed"`
	InFlight int     `json:"in_flight"` // as of the last check
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
	gen       int                // watches started
	checked   time.Time          // last check
	flying    map[taskKey]int    // in flight by ns and task, as of the last check
}

// monSub is one monitoring WebSocket op: the invocations changed since its
// last flush.
type monSub struct {
	changed map[string]bool // by id
}

func newMonitor(g *Gateway) *monitor {
	return &monitor{g: g, recs: map[string]*list.Element{}, order: list.New(), children: map[string][]string{},
		tasks: map[taskKey]*taskStats{}, subs: map[*monSub]struct{}{}, flying: map[taskKey]int{}}
}

// subscribe adds a monitor, starting to watch if it is the first, and
// returns it with a snapshot: the most recent invocations, merged with
// the gateway's most recent records.
func (m *monitor) subscribe() (*monSub, []monInvocation) {
	recent := m.g.store.recent(monitorSnapshot)
	s := &monSub{changed: map[string]bool{}}
	m.mu.Lock()
	if len(m.subs) == 0 {
		// What was in flight when the last watch stopped may have ended
		// unreported since: from now on only the records confirm it.
		m.gen++
		ctx, stop := context.WithCancel(m.g.life)
		m.stopWatch = stop
		for _, ns := range m.g.cfg.Client.Namespaces() {
			go m.watch(ctx, ns)
		}
	}
	m.subs[s] = struct{}{}
	now := time.Now()
	var changed []string
	for _, rc := range recent {
		if m.mergeLocked(rc, true, now) {
			changed = append(changed, rc.ID)
		}
	}
	m.changedLocked(changed...) // for the other monitors
	m.mu.Unlock()
	m.check(now, true)
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(s.changed) // the snapshot has them
	return s, m.snapshotLocked()
}

// snapshotLocked returns up to monitorSnapshot invocations, oldest first:
// whole call trees, those with the latest invocations first, so that a
// tree is cut only when it does not fit.
func (m *monitor) snapshotLocked() []monInvocation {
	all := make([]*monInvocation, 0, m.order.Len())
	for e := m.order.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*monInvocation))
	}
	slices.SortStableFunc(all, func(a, b *monInvocation) int { return b.at.Compare(a.at) })
	picked := map[string]bool{}
	var out []*monInvocation
	for _, rec := range all {
		if len(out) == monitorSnapshot {
			break
		}
		root := m.rootLocked(rec)
		if picked[root.ID] {
			continue
		}
		picked[root.ID] = true
		for next := []*monInvocation{root}; len(next) > 0 && len(out) < monitorSnapshot; next = next[1:] {
			out = append(out, next[0])
			for _, c := range m.children[next[0].ID] {
				if e, ok := m.recs[c]; ok && !picked[c] {
					picked[c] = true
					next = append(next, e.Value.(*monInvocation))
				}
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *monInvocation) int { return a.at.Compare(b.at) })
	snap := make([]monInvocation, len(out))
	for i, rec := range out {
		snap[i] = m.viewLocked(rec)
	}
	return snap
}

// rootLocked returns the top of rec's call tree as far as the monitor
// knows it.
func (m *monitor) rootLocked(rec *monInvocation) *monInvocation {
	for range maxDepth {
		if rec.Parent == "" {
			break
		}
		e, ok := m.recs[rec.Parent]
		if !ok {
			break
		}
		rec = e.Value.(*monInvocation)
	}
	return rec
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
	wasFinal := rec.State.Final()
	if wasFinal && (rec.FinishedAt != nil || !a.State.Final()) {
		return // a late report of an earlier state, or of an end already known
	}
	rec.Task, rec.State, rec.Worker, rec.ErrorCode, rec.gen = a.Task, a.State, a.Worker, a.Code, m.gen
	start := a.Start.UTC()
	rec.StartedAt, rec.at = &start, start
	if a.State.Final() {
		end := a.End.UTC()
		ms := end.Sub(start).Milliseconds()
		rec.FinishedAt, rec.DurationMS = &end, &ms
		if !wasFinal {
			rec.endedAt = time.Now()
			m.countLocked(taskKey{ns, a.Task}, a.State, end)
		}
	}
	changed := []string{a.ID}
	if isNew && a.Parent != "" {
		rec.Parent = a.Parent
		m.children[a.Parent] = append(m.children[a.Parent], a.ID)
		changed = append(changed, a.Parent)
	}
	m.changedLocked(changed...)
}

// changedLocked marks invocations ids as changed for every monitor.
func (m *monitor) changedLocked(ids ...string) {
	for s := range m.subs {
		for _, id := range ids {
			if len(s.changed) < maxMonitored { // else it is that far behind: it misses some
				s.changed[id] = true
			}
		}
	}
}

// mergeLocked applies the gateway's record rc to the monitor's record of
// it, adding one if add and there is none, and reports whether that
// changed it. A final record wins over a record in flight; the gateway's
// own record in flight confirms it (the gateway would know had it ended).
// A child's record says how it ended once its parent did, but not when;
// before, it only says that it was called.
func (m *monitor) mergeLocked(rc recorded, add bool, now time.Time) bool {
	var rec *monInvocation
	if e, ok := m.recs[rc.ID]; ok {
		rec = e.Value.(*monInvocation)
	} else if add {
		rec, _ = m.recordLocked(rc.NS, rc.ID)
		rec.Task, rec.State, rec.Worker, rec.gen, rec.at = rc.Task, rc.State, rc.Worker, m.gen, rc.CreatedAt
		if rc.StartedAt != nil {
			start := rc.StartedAt.UTC()
			rec.StartedAt, rec.at = &start, start
		}
		if rc.Parent != "" {
			rec.Parent = rc.Parent
			if _, ok := m.recs[rc.Parent]; ok {
				m.children[rc.Parent] = append(m.children[rc.Parent], rc.ID)
			}
		}
		if rc.State.Final() {
			m.endLocked(rec, rc, now, false)
		}
		rec.called = rc.Children
		return true
	} else {
		return false
	}
	switch {
	case rec.State.Final():
		return false
	case rc.State.Final():
		m.endLocked(rec, rc, now, true)
		return true
	case rc.child:
		if rc.State == stateUnknown && rec.State != stateUnknown {
			rec.State = stateUnknown
			return true
		}
		return false
	}
	changed := rec.State == stateUnknown || rec.State == "queued" && rc.State == "running" ||
		rec.Worker == "" && rc.Worker != "" || len(rc.Children) != len(rec.called)
	if rec.State == stateUnknown || rec.State == "queued" && rc.State == "running" {
		rec.State = rc.State
	}
	if rec.Worker == "" {
		rec.Worker = rc.Worker
	}
	if rec.StartedAt == nil && rc.StartedAt != nil {
		start := rc.StartedAt.UTC()
		rec.StartedAt = &start
	}
	rec.called, rec.gen = rc.Children, m.gen
	return changed
}

// endLocked records in rec, which was in flight or new, the end rc the
// gateway's records know of; it counts it if count.
func (m *monitor) endLocked(rec *monInvocation, rc recorded, now time.Time, count bool) {
	rec.State, rec.endedAt = rc.State, now
	if rc.Error != nil {
		rec.ErrorCode = rc.Error.Code
	}
	if rec.Worker == "" {
		rec.Worker = rc.Worker
	}
	if rec.StartedAt == nil && !rc.child {
		start := rc.CreatedAt.UTC() // it ended before it said it ran: when it was sent
		if rc.StartedAt != nil {
			start = rc.StartedAt.UTC()
		}
		rec.StartedAt = &start
	}
	end := now
	if rc.FinishedAt != nil {
		end = rc.FinishedAt.UTC()
		rec.FinishedAt = &end
		if rec.StartedAt != nil {
			ms := max(0, end.Sub(*rec.StartedAt).Milliseconds())
			rec.DurationMS = &ms
		}
	}
	if count {
		m.countLocked(taskKey{rec.NS, rec.Task}, rec.State, end)
	}
}

// check compares the invocations the monitor holds in flight with the
// gateway's records (see mergeLocked), marks unknown those that neither
// the records nor a report of the current watch confirm, if they may have
// ended unreported (see staleLocked), and counts what is in flight: the
// invocations the gateway started and, of the rest, those still
// confirmed. It does so at most every checkEvery unless force.
func (m *monitor) check(now time.Time, force bool) {
	m.mu.Lock()
	if !force && now.Sub(m.checked) < checkEvery {
		m.mu.Unlock()
		return
	}
	m.checked = now
	var open []string
	for id, e := range m.recs {
		if !e.Value.(*monInvocation).State.Final() {
			open = append(open, id)
		}
	}
	m.mu.Unlock()
	kept, flying := m.g.store.survey(open) // without m.mu: the store's lock is taken by every call

	m.mu.Lock()
	defer m.mu.Unlock()
	var changed []string
	for _, id := range open {
		e, ok := m.recs[id]
		if !ok {
			continue
		}
		rec := e.Value.(*monInvocation)
		rc, known := kept[id]
		if known && m.mergeLocked(rc, false, now) {
			changed = append(changed, id)
		}
		own := known && !rc.child // counted in flying already, if in flight
		if rec.State.Final() || rec.State == stateUnknown || own {
			continue
		}
		if m.staleLocked(rec, now) {
			rec.State = stateUnknown
			changed = append(changed, id)
			continue
		}
		flying[taskKey{rec.NS, rec.Task}]++
	}
	m.flying = flying
	m.changedLocked(changed...)
}

// staleLocked reports whether rec, in flight, may have ended unreported:
// it was last confirmed before the current watch began, or the call it
// belongs to ended orphanAfter ago, long enough for its own end to have
// been reported.
func (m *monitor) staleLocked(rec *monInvocation, now time.Time) bool {
	if rec.gen < m.gen {
		return true
	}
	p := rec.Parent
	for range maxDepth {
		e, ok := m.recs[p]
		if p == "" || !ok {
			return false
		}
		up := e.Value.(*monInvocation)
		if up.State.Final() {
			return now.Sub(up.endedAt) > orphanAfter
		}
		p = up.Parent
	}
	return false
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
	switch {
	case b.sec > sec:
		return // an end learned late, older than the window
	case b.sec < sec:
		b.sec, b.n = sec, 0
	}
	b.n++
}

// viewLocked is rec as sent: a copy with its children, those reported
// then those only the gateway's record names.
func (m *monitor) viewLocked(rec *monInvocation) monInvocation {
	v := *rec
	v.Children = slices.Clone(m.children[rec.ID])
	for _, c := range rec.called {
		if !slices.Contains(v.Children, c) {
			v.Children = append(v.Children, c)
		}
	}
	if v.Children == nil {
		v.Children = []string{}
	}
	v.called = nil
	return v
}

// flush takes up to monitorFlushMax of s's changed invocations, after a
// check if one is due.
func (m *monitor) flush(s *monSub) []monInvocation {
	m.check(time.Now(), false)
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

// stats returns the servers of every namespace and the tasks' counts: of
// those that ended, and of those in flight as of the last check.
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
		tasks = append(tasks, monTask{NS: k.ns, Task: k.task, Rate: float64(recent) / rateWindow, Ended: ts.ended, Failed: ts.failed, InFlight: m.flying[k]})
	}
	for k, n := range m.flying {
		if _, ok := m.tasks[k]; !ok && n > 0 {
			tasks = append(tasks, monTask{NS: k.ns, Task: k.task, InFlight: n})
		}
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
