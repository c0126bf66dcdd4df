package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway replicas sharing the history (--history): two replicas and two
// workers; every call is made through one replica and read through the
// other; a cancel and a WebSocket subscription through the other replica;
// one idempotency key given to both at once; then a replica killed and a
// new one started, which answers for every call made before it started.
func TestReplicasAnswerForEachOther(t *testing.T) {
	t.Parallel()
	s, _, a, pb, b := replicas(t)
	replicas := []string{a, b}

	// 1 000 calls, each posted to one replica and long-polled on the other.
	const calls = 1000
	ids := make([]string, calls)
	var wg sync.WaitGroup
	work := make(chan int)
	errs := make(chan string, calls)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				post, get := replicas[i%2], replicas[(i+1)%2]
				inv := call(t, post, "default", "demo.sleep", fmt.Sprintf(`{"ms":%d,"value":%d}`, i%7, i), "?wait=0")
				if inv.status != 200 && inv.status != 202 {
					errs <- fmt.Sprintf("call %d: POST answered %d %s", i, inv.status, inv.Code)
					continue
				}
				ids[i] = inv.ID
				got := poll(t, get, "default", inv.ID, 30*time.Second)
				if got.status != 200 || got.State != "succeeded" || string(got.Result) != fmt.Sprint(i) {
					errs <- fmt.Sprintf("call %d (%s) read on the other replica: %d %s %s %s", i, inv.ID, got.status, got.State, got.Result, got.Code)
				}
			}
		})
	}
	for i := range calls {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	wrong := 0
	for e := range errs {
		if wrong++; wrong <= 5 {
			t.Error(e)
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d calls wrong when read through the other replica", wrong, calls)
	}

	t.Run("cancel through the other replica reaches the task", func(t *testing.T) {
		inv := call(t, a, "default", "demo.sleep", `{"ms":60000,"value":1}`, "?wait=0")
		waitUntil(t, 30*time.Second, func() bool { return get(t, b, inv.ID).State == "running" })
		req, _ := http.NewRequest(http.MethodDelete, b+"/v1/ns/default/invocations/"+inv.ID, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := read(t, res)
		if got.State != "cancelled" || got.Error == nil || got.Error.Code != "cancelled" {
			t.Fatalf("DELETE through replica B: %d %s %+v, want the task cancelled", got.status, got.State, got.Error)
		}
		if onA := poll(t, a, "default", inv.ID, 10*time.Second); onA.State != "cancelled" {
			t.Fatalf("replica A sees %s, want cancelled", onA.State)
		}
	})

	t.Run("a subscription on the other replica gets the pushes", func(t *testing.T) {
		inv := call(t, a, "default", "demo.sleep", `{"ms":1500,"value":42}`, "?wait=0")
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(b, "http")+"/v1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if err := ws.WriteJSON(map[string]string{"type": "subscribe", "ref": "s", "ns": "default", "id": inv.ID}); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		var states []string
		for {
			var m struct {
				Type       string      `json:"type"`
				State      string      `json:"state"`
				Invocation *invocation `json:"invocation"`
			}
			if err := ws.ReadJSON(&m); err != nil {
				t.Fatalf("after states %v: %v", states, err)
			}
			if m.Type == "state" {
				states = append(states, m.State)
				continue
			}
			if m.Type != "result" || m.Invocation.State != "succeeded" || string(m.Invocation.Result) != "42" {
				t.Fatalf("got %s %+v after states %v, want the result 42", m.Type, m.Invocation, states)
			}
			break
		}
		if len(states) == 0 {
			t.Fatal("no state before the result")
		}
	})

	t.Run("the dashboard of one replica shows the other's calls", func(t *testing.T) {
		inv := call(t, a, "default", "demo.sleep", `{"ms":10,"value":7}`, "?wait=10s")
		// B learns A's calls from the history, a moment after they end: look
		// again (each time on a new monitor) until its snapshot has it.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			n, found := snapshotHas(t, b, inv.ID)
			if found {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica B's dashboard snapshot (%d invocations) lacks %s, made through A, 10 s after it ended", n, inv.ID)
			}
		}
	})

	t.Run("the history's lag is measured", func(t *testing.T) {
		for _, base := range replicas {
			waitMetric(t, base, "atasks_amqp_history_lag_seconds", 30*time.Second, func(v float64) bool { return v > 0 })
		}
	})

	t.Run("one idempotency key given to both replicas at once", func(t *testing.T) {
		for k := range 10 {
			key := fmt.Sprintf("key-%d-%d", k, time.Now().UnixNano())
			var got [2]invocation
			var wg sync.WaitGroup
			for i, base := range replicas {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodPost, base+"/v1/ns/default/tasks/demo.sleep?wait=10s", strings.NewReader(fmt.Sprintf(`{"ms":50,"value":%d}`, k)))
					req.Header.Set("Idempotency-Key", key)
					res, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					got[i] = read(t, res)
				})
			}
			wg.Wait()
			if got[0].ID == "" || got[0].ID != got[1].ID || string(got[0].Result) != fmt.Sprint(k) || string(got[1].Result) != fmt.Sprint(k) {
				t.Fatalf("key %s: replica A answered %s %s %s, B %s %s %s: want one invocation and its result %d",
					key, got[0].ID, got[0].State, got[0].Result, got[1].ID, got[1].State, got[1].Result, k)
			}
		}
	})

	// A replica killed, and one started afresh (no identity): both the
	// survivor and the newcomer answer for every call made before.
	pb.kill()
	_, c := s.gateway("--history")
	for i, id := range ids {
		for _, base := range []string{a, c} {
			if got := get(t, base, id); got.status != 200 || got.State != "succeeded" || string(got.Result) != fmt.Sprint(i) {
				t.Fatalf("call %d (%s) read on %s after replica B's death: %d %s %s", i, id, base, got.status, got.State, got.Result)
			}
		}
	}
}

// A replica killed with 200 calls in flight loses none: the survivor and a
// replica started afterwards answer every one of them with its outcome.
func TestReplicaKilledWithCallsInFlight(t *testing.T) {
	t.Parallel()
	s, pa, a, _, b := replicas(t)

	const calls = 200
	ids := make([]string, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			inv := call(t, a, "default", "demo.sleep", fmt.Sprintf(`{"ms":%d,"value":%d}`, 1000+i*5, i), "?wait=0")
			if inv.status != 202 {
				t.Errorf("call %d: %d %s, want 202", i, inv.status, inv.Code)
			}
			ids[i] = inv.ID
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	pa.kill() // with every call queued or running
	lost := 0
	check := func(base string) {
		for i, id := range ids {
			if got := poll(t, base, "default", id, 60*time.Second); got.status != 200 || got.State != "succeeded" || string(got.Result) != fmt.Sprint(i) {
				if lost++; lost <= 5 {
					t.Errorf("call %d (%s) on %s after replica A's death: %d %s %s %s", i, id, base, got.status, got.State, got.Result, got.Code)
				}
			}
		}
	}
	check(b)
	_, c := s.gateway("--history")
	check(c)
	if lost > 0 {
		t.Fatalf("%d answers wrong or missing of %d calls in flight when their replica was killed", lost, 2*calls)
	}
}

// replicas starts a system of two workers and two gateway replicas sharing
// the history, a and b, and returns once demo.sleep is served.
func replicas(t *testing.T) (s *system, pa *proc, a string, pb *proc, b string) {
	t.Helper()
	s = newSystem(t)
	s.worker()
	s.worker()
	pa, a = s.gateway("--history")
	pb, b = s.gateway("--history")
	waitServed(t, a, "default", "demo.sleep")
	return s, pa, a, pb, b
}

// get reads an invocation without waiting.
func get(t testing.TB, base, id string) invocation {
	t.Helper()
	res, err := http.Get(base + "/v1/ns/default/invocations/" + id)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, res)
}

// snapshotHas opens a monitor on the gateway at base and reports how many
// invocations its snapshot lists and whether id is among them, succeeded.
func snapshotHas(t *testing.T, base, id string) (int, bool) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]string{"type": "monitor", "ref": "m"}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var snap struct {
		Type        string `json:"type"`
		Invocations []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"invocations"`
	}
	if err := ws.ReadJSON(&snap); err != nil || snap.Type != "snapshot" {
		t.Fatalf("monitor on %s: %s, %v", base, snap.Type, err)
	}
	for _, i := range snap.Invocations {
		if i.ID == id && i.State == "succeeded" {
			return len(snap.Invocations), true
		}
	}
	return len(snap.Invocations), false
}
