package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atasks-go/atasks/gateway"
)

// ?delay= and ?run_at=: the invocation is scheduled, with its run_at, and
// runs no earlier; both at once, a bad value, too far ahead or a timeout
// that ends first are refused; a delayed call cancelled before its time
// ends cancelled (that it never runs, the transports' tests show:
// transporttest's CancelDelayed).
func TestDelayedCall(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	base := srv.URL + "/v1/ns/default/tasks/demo.add"

	r := do(t, "POST", base+"?delay=1s&wait=0", `{"a":1,"b":2}`)
	if r.status != 202 || r.body["state"] != "scheduled" || r.body["run_at"] == nil {
		t.Fatalf("delay=1s: %d %v; want 202, scheduled, with run_at", r.status, r.body)
	}
	runAt, err := time.Parse(time.RFC3339Nano, r.body["run_at"].(string))
	if err != nil {
		t.Fatal(err)
	}
	done := do(t, "GET", srv.URL+r.location+"?wait=10s", "")
	if done.body["state"] != "succeeded" || fmt.Sprint(done.body["result"]) != "3" {
		t.Fatalf("the delayed call: %v", done.body)
	}
	if started, _ := time.Parse(time.RFC3339Nano, done.body["started_at"].(string)); started.Before(runAt) {
		t.Errorf("started at %v, before its run_at %v", started, runAt)
	}

	at := time.Now().Add(800 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	if r := do(t, "POST", base+"?run_at="+at+"&wait=10s", `{"a":2,"b":2}`); r.status != 200 || fmt.Sprint(r.body["result"]) != "4" {
		t.Errorf("run_at: %d %v", r.status, r.body)
	}

	far := time.Now().Add(31 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, q := range []string{"?delay=1s&run_at=" + at, "?delay=-1s", "?delay=soon", "?run_at=tomorrow", "?run_at=" + far, "?delay=5s&timeout=1s"} {
		if r := do(t, "POST", base+q, `{"a":1,"b":2}`); r.status != 400 || r.body["code"] != "bad_request" {
			t.Errorf("%s: %d %v; want 400 bad_request", q, r.status, r.body)
		}
	}

	r = do(t, "POST", base+"?delay=1s&wait=0", `{"a":1,"b":2}`)
	if c := do(t, "DELETE", srv.URL+r.location, ""); c.body["state"] != "cancelled" || c.body["error"] == nil {
		t.Fatalf("cancelled before its time: %v", c.body)
	}
}

// A WebSocket call with delay is delayed too; a bad delay is a bad frame.
func TestDelayedCallWebSocket(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	began := time.Now()
	wsSend(t, c, `{"type":"call","ref":"a","ns":"default","task":"demo.add","input":{"a":1,"b":1},"delay":"500ms"}`)
	if m, _ := wsUntil(t, c, "a", "result"); m.Invocation == nil || m.Invocation.State != "succeeded" || m.Invocation.RunAt == nil ||
		m.Invocation.StartedAt == nil || m.Invocation.StartedAt.Before(*m.Invocation.RunAt) || time.Since(began) < 500*time.Millisecond {
		t.Fatalf("a call delayed 500ms: %+v after %v", m.Invocation, time.Since(began))
	}
	wsSend(t, c, `{"type":"call","ref":"b","ns":"default","task":"demo.add","input":{"a":1,"b":1},"delay":"soon"}`)
	if m, _ := wsUntil(t, c, "b", "error"); m.Error == nil || m.Error.Code != "bad_frame" {
		t.Fatalf("a bad delay: %+v", m.Error)
	}
}
