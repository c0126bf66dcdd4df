package gateway_test

import (
	"testing"
	"time"

	"github.com/atasks-go/atasks/internal/gateway"
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
		NS     string  `json:"ns"`
		Task   string  `json:"task"`
		Rate   float64 `json:"rate"`
		Ended  int64   `json:"ended"`
		Failed int64   `json:"failed"`
	} `json:"tasks"`
}

type monInv struct {
	ID         string   `json:"id"`
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

func monRead(t *testing.T, c *websocket.Conn) monMsg {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m monMsg
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}
