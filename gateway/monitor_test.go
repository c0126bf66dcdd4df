package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks/gateway"
	"github.com/gorilla/websocket"
)

// monMsg is a monitor's message, as the dashboard reads it.
type monMsg struct {
	Type        string   `json:"type"`
	Ref         string   `json:"ref"`
	Invocation  *monInv  `json:"invocation"`
	Invocations []monInv `json:"invocations"`
	Servers     []struct {
		NS     string   `json:"ns"`
		Tasks  []string `json:"tasks"`
		Busy   int      `json:"busy"`
		Size   int      `json:"size"`
		Worker string   `json:"worker"`
	} `json:"servers"`
	Tasks []struct {
		NS       string  `json:"ns"`
		Task     string  `json:"task"`
		Rate     float64 `json:"rate"`
		Ended    int64   `json:"ended"`
		Failed   int64   `json:"failed"`
		InFlight int     `json:"in_flight"`
	} `json:"tasks"`
}

type monInv struct {
	ID         string   `json:"id"`
	NS         string   `json:"ns"`
	Task       string   `json:"task"`
	State      string   `json:"state"`
	Parent     string   `json:"parent"`
	DurationMS *int64   `json:"duration_ms"`
	ErrorCode  string   `json:"error_code"`
	Children   []string `json:"children"`
}

// A monitor sees every invocation a worker runs, grandchildren too, with
// their parents and children, the failures' codes, the servers and their
// slots, and per-task counts; cancelling it frees its ref.
func TestMonitor(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	wsSend(t, c, `{"type":"monitor","ref":"m"}`)
	if m := monRead(t, c); m.Type != "snapshot" || m.Ref != "m" {
		t.Fatalf("first message: %+v", m)
	}
	top := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fib?wait=10s", `{"n":4}`).body["id"].(string)
	do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fail?wait=10s", `{"code":"nope","message":"no"}`)

	seen := map[string]monInv{}
	var stats *monMsg
	counts := map[string][2]int64{}
	deadline := time.Now().Add(20 * time.Second)
	for (len(seen) < 10 || counts["demo.fib"][0] < 9 || counts["demo.fail"][0] < 1 || len(seen[top].Children) < 2) && time.Now().Before(deadline) {
		m := monRead(t, c)
		switch m.Type {
		case "activity":
			seen[m.Invocation.ID] = *m.Invocation
		case "stats":
			stats = &m
			for _, ts := range m.Tasks {
				counts[ts.Task] = [2]int64{ts.Ended, ts.Failed}
			}
		}
	}
	if root := seen[top]; root.State != "succeeded" || len(root.Children) != 2 || root.DurationMS == nil {
		t.Fatalf("fib 4: %+v", root)
	}
	grandchild := seen[seen[seen[top].Children[0]].Children[0]] // fib 4 → fib 3 → fib 2
	if grandchild.Task != "demo.fib" || grandchild.Parent != seen[top].Children[0] || grandchild.State != "succeeded" {
		t.Errorf("a grandchild: %+v", grandchild)
	}
	var failed bool
	for _, inv := range seen {
		failed = failed || inv.Task == "demo.fail" && inv.State == "failed" && inv.ErrorCode == "nope"
	}
	if !failed {
		t.Errorf("no failed demo.fail with its code among %d invocations", len(seen))
	}
	if stats == nil {
		t.Fatal("no stats")
	}
	if len(stats.Servers) == 0 || stats.Servers[0].Size == 0 || len(stats.Servers[0].Tasks) == 0 {
		t.Errorf("servers: %+v", stats.Servers)
	}
	if counts["demo.fib"] != [2]int64{9, 0} || counts["demo.fail"] != [2]int64{1, 1} {
		t.Errorf("task counts: %v; want demo.fib 9 ended, demo.fail 1 ended 1 failed", counts)
	}

	// One monitor per connection: a second is refused while the first runs.
	wsSend(t, c, `{"type":"monitor","ref":"m2"}`)
	m := monRead(t, c)
	for m.Ref != "m2" {
		m = monRead(t, c)
	}
	if m.Type != "error" {
		t.Errorf("a second monitor on one connection: %+v", m)
	}
	wsSend(t, c, `{"type":"cancel","ref":"m"}`)
	for try := 0; ; try++ { // once the first has stopped, another may start
		wsSend(t, c, `{"type":"monitor","ref":"m3"}`)
		m := monRead(t, c)
		for m.Ref != "m3" {
			m = monRead(t, c)
		}
		if m.Type == "snapshot" {
			if len(m.Invocations) < 10 {
				t.Errorf("snapshot of %d invocations, want the 10 seen", len(m.Invocations))
			}
			break
		}
		if try == 40 {
			t.Fatalf("no monitor after the first was cancelled: %+v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inFlight returns the count in flight of task of namespace default in
// m's tasks.
func (m monMsg) inFlight(task string) int {
	for _, ts := range m.Tasks {
		if ts.NS == "default" && ts.Task == task {
			return ts.InFlight
		}
	}
	return 0
}

// childrenEnded reports whether every child of parent has ended in got.
func childrenEnded(got map[string]monInv, parent monInv) bool {
	for _, id := range parent.Children {
		if got[id].State != "succeeded" {
			return false
		}
	}
	return true
}

// byID indexes a snapshot's invocations.
func byID(invs []monInv) map[string]monInv {
	out := make(map[string]monInv, len(invs))
	for _, inv := range invs {
		out[inv.ID] = inv
	}
	return out
}

// A monitor opened after calls were made sees them from the gateway's
// records, with their children and what is in flight, then how they end.
func TestMonitorShowsCallsMadeBefore(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	add := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add?wait=10s", `{"a":1,"b":2}`).body["id"].(string)
	fib := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fib?wait=10s", `{"n":3}`).body
	sleep := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":1500}`).body["id"].(string)
	for do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+sleep, "").body["state"] != "running" {
		time.Sleep(10 * time.Millisecond)
	}

	// The children's ends reach the gateway as activity, on another path
	// than the root's reply: a snapshot may come before them, so look again
	// (each time on a new monitor) until they are in it.
	var c *websocket.Conn
	var snap monMsg
	var got map[string]monInv
	for deadline := time.Now().Add(10 * time.Second); ; {
		c = wsDial(t, srv)
		wsSend(t, c, `{"type":"monitor","ref":"m"}`)
		if snap = monRead(t, c); snap.Type != "snapshot" {
			t.Fatalf("first message: %+v", snap)
		}
		got = byID(snap.Invocations)
		if childrenEnded(got, got[fib["id"].(string)]) || time.Now().After(deadline) {
			break
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if inv := got[add]; inv.State != "succeeded" || inv.Task != "demo.add" || inv.NS != "default" || inv.DurationMS == nil {
		t.Errorf("demo.add, ended before: %+v", inv)
	}
	if inv := got[sleep]; inv.State != "running" || inv.Task != "demo.sleep" {
		t.Errorf("demo.sleep, running: %+v", inv)
	}
	root := got[fib["id"].(string)]
	if root.State != "succeeded" || len(root.Children) != 2 {
		t.Fatalf("fib 3, ended before: %+v", root)
	}
	for _, id := range root.Children {
		if inv := got[id]; inv.Task != "demo.fib" || inv.Parent != root.ID || inv.State != "succeeded" {
			t.Errorf("a child of fib 3, as it reported it: %+v", inv)
		}
	}
	if n := snap.inFlight("demo.sleep"); n != 1 {
		t.Errorf("demo.sleep in flight: %d, want 1 (tasks %+v)", n, snap.Tasks)
	}

	// It ends while watched: an activity says so, and the stats follow.
	var ended, counted bool
	for deadline := time.Now().Add(10 * time.Second); !(ended && counted) && time.Now().Before(deadline); {
		switch m := monRead(t, c); m.Type {
		case "activity":
			ended = ended || m.Invocation.ID == sleep && m.Invocation.State == "succeeded"
		case "stats":
			counted = ended && m.inFlight("demo.sleep") == 0
		}
	}
	if !ended || !counted {
		t.Errorf("the sleep's end: seen %v, out of flight %v", ended, counted)
	}
}

// What ended while no monitor watched is never shown as in flight: the
// gateway's records say how its calls and their children ended; what they
// cannot tell (grandchildren) is "unknown".
func TestMonitorNeverShowsStaleStates(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	wsSend(t, c, `{"type":"monitor","ref":"m"}`)
	monRead(t, c) // the snapshot
	// demo.seed → seed's request_parallel → 5 task_one (1 s), 5 task_two (2 s)
	seed := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.seed?wait=0s", ``).body["id"].(string)
	running := map[string]string{} // task by id
	for deadline := time.Now().Add(5 * time.Second); len(running) < 10 && time.Now().Before(deadline); {
		if m := monRead(t, c); m.Type == "activity" && m.Invocation.State == "running" && strings.HasPrefix(m.Invocation.Task, "task_") {
			running[m.Invocation.ID] = m.Invocation.Task
		}
	}
	if len(running) < 10 {
		t.Fatalf("%d grandchildren seen running, want 10", len(running))
	}
	c.Close() // no monitor: the workers stop reporting
	if inv := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+seed+"?wait=10s", "").body; inv["state"] != "succeeded" {
		t.Fatalf("demo.seed: %v", inv)
	}

	c = wsDial(t, srv)
	wsSend(t, c, `{"type":"monitor","ref":"m"}`)
	snap := monRead(t, c)
	got := byID(snap.Invocations)
	root := got[seed]
	if root.State != "succeeded" || root.DurationMS == nil || *root.DurationMS < 1900 || len(root.Children) != 1 {
		t.Fatalf("demo.seed: %+v", root)
	}
	if rp := got[root.Children[0]]; rp.Task != "request_parallel" || rp.NS != "seed" || rp.State != "succeeded" || len(rp.Children) != 10 {
		t.Errorf("request_parallel, as demo.seed reported it: %+v", rp)
	}
	for id, task := range running {
		inv := got[id]
		if inv.State == "running" || task == "task_two" && inv.State != "unknown" {
			t.Errorf("%s %s, ended unseen: %+v", task, id, inv)
		}
	}
	for _, ts := range snap.Tasks {
		if ts.InFlight != 0 {
			t.Errorf("in flight: %+v", ts)
		}
	}
}

// A snapshot is bounded, and keeps whole call trees: a large one's root
// is in it.
func TestMonitorSnapshotIsBounded(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	wsSend(t, c, `{"type":"monitor","ref":"m"}`)
	monRead(t, c)
	fib := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fib?wait=20s", `{"n":13}`).body // 753 invocations
	if fib["state"] != "succeeded" {
		t.Fatalf("fib 13: %v", fib)
	}
	c2 := wsDial(t, srv)
	wsSend(t, c2, `{"type":"monitor","ref":"m"}`)
	snap := monRead(t, c2)
	if len(snap.Invocations) != 500 {
		t.Errorf("a snapshot of %d invocations, want the 500 most recent", len(snap.Invocations))
	}
	if root := byID(snap.Invocations)[fib["id"].(string)]; root.State != "succeeded" || len(root.Children) != 2 {
		t.Errorf("fib 13's root in the snapshot: %+v", root)
	}
}

func monRead(t *testing.T, c *websocket.Conn) monMsg {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m monMsg
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}
