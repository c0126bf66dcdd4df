package gateway_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/gorilla/websocket"
)

// wsMsg is a message from the gateway; unknown fields fail the decoding.
type wsMsg struct {
	Type       string              `json:"type"`
	Ref        string              `json:"ref"`
	ID         string              `json:"id"`
	NS         string              `json:"ns"`
	Task       string              `json:"task"`
	State      string              `json:"state"`
	Child      string              `json:"child"`
	Worker     string              `json:"worker"`
	Replayed   bool                `json:"replayed"`
	CancelOf   string              `json:"cancel_of"`
	Invocation *gateway.Invocation `json:"invocation"`
	Error      *atasks.Error       `json:"error"`
}

// wsURL is the WebSocket endpoint of srv.
func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws" }

// wsDial connects to srv's WebSocket; the test closes the connection when it ends.
func wsDial(t *testing.T, srv *httptest.Server) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(wsURL(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wsSend writes one JSON text frame.
func wsSend(t *testing.T, c *websocket.Conn, frame string) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// wsRead reads the next message, waiting at most 10 s.
func wsRead(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	m, err := wsReadErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wsReadErr(c *websocket.Conn) (wsMsg, error) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, data, err := c.ReadMessage()
	if err != nil {
		return wsMsg{}, err
	}
	if kind != websocket.TextMessage {
		return wsMsg{}, fmt.Errorf("a frame of kind %d", kind)
	}
	var m wsMsg
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return wsMsg{}, fmt.Errorf("message %s: %w", data, err)
	}
	return m, nil
}

// wsUntil reads messages until one about ref has type typ, and returns it
// with the types of those about ref before it.
func wsUntil(t *testing.T, c *websocket.Conn, ref, typ string) (wsMsg, []string) {
	t.Helper()
	var before []string
	for {
		m := wsRead(t, c)
		if m.Ref != ref {
			continue
		}
		if m.Type == typ {
			return m, before
		}
		if m.Type == "result" || m.Type == "error" {
			t.Fatalf("ref %s: got %+v (error %+v) while waiting for %s", ref, m, m.Error, typ)
		}
		before = append(before, m.Type)
	}
}

// wsClosed reads until the connection ends and returns its close code.
func wsClosed(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	for {
		_, err := wsReadErr(c)
		var closed *websocket.CloseError
		switch {
		case errors.As(err, &closed):
			return closed.Code
		case err != nil:
			t.Fatalf("the connection ended without a close frame: %v", err)
		}
	}
}

// wsCall sends a call and returns its accepted message.
func wsCall(t *testing.T, c *websocket.Conn, ref, task, input string) wsMsg {
	t.Helper()
	wsSend(t, c, `{"type":"call","ref":"`+ref+`","ns":"default","task":"`+task+`","input":`+input+`}`)
	m, _ := wsUntil(t, c, ref, "accepted")
	return m
}

// wsRoundTrip proves c still serves calls.
func wsRoundTrip(t *testing.T, c *websocket.Conn) {
	t.Helper()
	wsCall(t, c, "probe", "demo.add", `{"a":20,"b":22}`)
	m, _ := wsUntil(t, c, "probe", "result")
	if string(m.Invocation.Result) != "42" {
		t.Fatalf("probe: %+v", m.Invocation)
	}
}

func TestWSCall(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	for _, tc := range []struct {
		name, frame string
		state       string
		result      string // or
		code        string // of the invocation's error
	}{
		{"add", `"task":"demo.add","input":{"a":2,"b":3}`, "succeeded", `5`, ""},
		{"no input", `"task":"demo.echo"`, "succeeded", `null`, ""},
		{"big int", `"task":"demo.echo","input":{"big":9007199254740993}`, "succeeded", `{"big":9007199254740993}`, ""},
		{"fails", `"task":"demo.fail","input":{"code":"c","message":"m"}`, "failed", "", "c"},
		{"panics", `"task":"demo.panic"`, "failed", "", "panic"},
		{"timeout", `"task":"demo.sleep","input":{"ms":60000},"timeout":"50ms"`, "timed_out", "", "timeout"},
		{"across namespaces", `"task":"demo.seed"`, "succeeded", `[0,1,2,3,4,0,1,2,3,4]`, ""},
	} {
		wsSend(t, c, `{"type":"call","ref":"`+tc.name+`","ns":"default",`+tc.frame+`}`)
		acc, _ := wsUntil(t, c, tc.name, "accepted")
		m, _ := wsUntil(t, c, tc.name, "result")
		inv := m.Invocation
		if acc.NS != "default" || acc.ID != inv.ID || inv.State != atasks.State(tc.state) ||
			tc.code == "" && string(inv.Result) != tc.result || tc.code != "" && (inv.Error == nil || inv.Error.Code != tc.code) {
			t.Errorf("%s: accepted %+v, result %+v", tc.name, acc, inv)
			continue
		}
		// The same resource as REST's.
		rest := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+inv.ID, "")
		if ws, _ := json.Marshal(inv); rest.status != 200 || !jsonEqual(ws, rest.raw) {
			t.Errorf("%s: WebSocket %s, REST %d %s", tc.name, ws, rest.status, rest.raw)
		}
	}
}

func TestWSIdempotencyKey(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	var accepted []wsMsg
	for _, ref := range []string{"1", "2"} {
		accepted = append(accepted, wsCall(t, c, ref, "demo.add", `{"a":1,"b":2},"idempotency_key":"k"`))
		if m, _ := wsUntil(t, c, ref, "result"); string(m.Invocation.Result) != "3" {
			t.Errorf("ref %s: %+v", ref, m.Invocation)
		}
	}
	first, again := accepted[0], accepted[1]
	if first.Replayed || !again.Replayed || again.ID != first.ID {
		t.Errorf("first %+v, again %+v", first, again)
	}
	wsSend(t, c, `{"type":"call","ref":"3","ns":"default","task":"demo.echo","idempotency_key":"k"}`)
	if m, _ := wsUntil(t, c, "3", "error"); m.Error.Code != "idempotency_conflict" {
		t.Errorf("conflict: %+v", m.Error)
	}
	// REST sees the same key.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/ns/default/tasks/demo.add", strings.NewReader(`{"a":1,"b":2}`))
	req.Header.Set("Idempotency-Key", "k")
	if r := send(t, req); r.body["id"] != first.ID {
		t.Errorf("REST with the key: %s", r.raw)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// 200 concurrent calls on one connection: each gets its own accepted, a
// running state, then its result, matched by ref.
func TestWSManyConcurrentCalls(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	const n = 200
	start := time.Now()
	for i := range n {
		wsSend(t, c, fmt.Sprintf(`{"type":"call","ref":"r%d","ns":"default","task":"demo.sleep","input":{"ms":200,"value":%d}}`, i, i))
	}
	seen := map[string][]string{}
	for done := 0; done < n; {
		m := wsRead(t, c)
		seen[m.Ref] = append(seen[m.Ref], m.Type+" "+m.State)
		if m.Type != "result" {
			continue
		}
		done++
		if want := strings.TrimPrefix(m.Ref, "r"); string(m.Invocation.Result) != want {
			t.Errorf("ref %s: result %s", m.Ref, m.Invocation.Result)
		}
	}
	running := 0
	for ref, types := range seen {
		if len(types) < 2 {
			t.Errorf("ref %s: messages %q", ref, types)
			continue
		}
		middle := types[1 : len(types)-1]
		if types[0] != "accepted " || types[len(types)-1] != "result " || len(middle) > 1 || len(middle) == 1 && middle[0] != "state running" {
			t.Errorf("ref %s: messages %q; want accepted, state running (unless merged away under load), result", ref, types)
		}
		running += len(middle)
	}
	if running == 0 {
		t.Errorf("no call reported running")
	}
	if len(seen) != n {
		t.Errorf("%d refs answered; want %d", len(seen), n)
	}
	t.Logf("%d concurrent 200 ms sleeps on one connection took %v", n, time.Since(start))
}

// A client that reads keeps its connection through a burst of calls that
// outpaces the gateway's writer for a moment.
func TestWSBurst(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	const n = 1000
	written := make(chan error, 1)
	go func() {
		for i := range n {
			if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"call","ref":"%d","ns":"default","task":"demo.add","input":{"a":%d,"b":1}}`, i, i)); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	for done := 0; done < n; {
		if m := wsRead(t, c); m.Type == "result" {
			done++
		}
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

func TestWSCancel(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	for _, tc := range []struct {
		name   string
		cancel func(acc wsMsg) string
	}{
		{"by ref", func(acc wsMsg) string { return `{"type":"cancel","ref":"` + acc.Ref + `"}` }},
		{"by id", func(acc wsMsg) string { return `{"type":"cancel","ns":"default","id":"` + acc.ID + `"}` }},
	} {
		acc := wsCall(t, c, tc.name, "demo.gather", `{"n":3,"ms":60000}`)
		wsUntil(t, c, tc.name, "state") // running
		start := time.Now()
		wsSend(t, c, tc.cancel(acc))
		m, _ := wsUntil(t, c, tc.name, "result")
		if m.Invocation.State != "cancelled" || time.Since(start) > 5*time.Second {
			t.Errorf("%s: %+v after %v", tc.name, m.Invocation, time.Since(start))
		}
	}
	// A cancel that comes before the call started still cancels it.
	wsSend(t, c, `{"type":"call","ref":"early","ns":"default","task":"demo.sleep","input":{"ms":60000}}`)
	wsSend(t, c, `{"type":"cancel","ref":"early"}`)
	if m, _ := wsUntil(t, c, "early", "result"); m.Invocation.State != "cancelled" {
		t.Errorf("early cancel: %+v", m.Invocation)
	}
}

func TestWSSubscribe(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":300,"value":"x"}`)
	id := r.body["id"].(string)
	wsSend(t, c, `{"type":"subscribe","ref":"s","ns":"default","id":"`+id+`"}`)
	m, before := wsUntil(t, c, "s", "result")
	if len(before) == 0 || before[0] != "state" || m.Invocation.ID != id || string(m.Invocation.Result) != `"x"` {
		t.Errorf("subscription: %v then %+v", before, m.Invocation)
	}
	// A finished one answers at once; the ref is free again after its result.
	wsSend(t, c, `{"type":"subscribe","ref":"s","ns":"default","id":"`+id+`"}`)
	if m, before := wsUntil(t, c, "s", "result"); len(before) != 0 || m.Invocation.State != "succeeded" {
		t.Errorf("finished: %v then %+v", before, m.Invocation)
	}
	for _, tc := range []struct{ ns, id, code string }{
		{"default", "nope", "invocation_not_found"},
		{"seed", id, "invocation_not_found"},
		{"nope", id, "namespace_not_found"},
	} {
		wsSend(t, c, `{"type":"subscribe","ref":"bad","ns":"`+tc.ns+`","id":"`+tc.id+`"}`)
		if m, _ := wsUntil(t, c, "bad", "error"); m.Error.Code != tc.code {
			t.Errorf("subscribe %s %s: %+v", tc.ns, tc.id, m.Error)
		}
	}
}

// Closing the connection cancels its calls, but neither the detached ones
// nor the invocations it subscribed to.
func TestWSCloseCancelsAttachedCallsOnly(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	c := wsDial(t, srv)
	attached := wsCall(t, c, "a", "demo.sleep", `{"ms":60000}`).ID
	detached := wsCall(t, c, "d", "demo.sleep", `{"ms":60000},"detach":true`).ID
	followed := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":60000}`).body["id"].(string)
	wsSend(t, c, `{"type":"subscribe","ref":"s","ns":"default","id":"`+followed+`"}`)
	wsUntil(t, c, "s", "state")
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if code := wsClosed(t, c); code != websocket.CloseNormalClosure {
		t.Errorf("close answered with %d", code)
	}

	inv := srv.URL + "/v1/ns/default/invocations/"
	if r := do(t, "GET", inv+attached+"?wait=10s", ""); r.body["state"] != "cancelled" {
		t.Errorf("attached call: %s", r.raw)
	}
	for _, id := range []string{detached, followed} {
		if r := do(t, "GET", inv+id, ""); r.body["state"] != "running" && r.body["state"] != "queued" {
			t.Errorf("%s: %s", id, r.raw)
		}
		do(t, "DELETE", inv+id, "")
	}
}

func TestWSOrigin(t *testing.T) {
	t.Parallel()
	plain := setup(t, gateway.Config{})
	listed := setup(t, gateway.Config{AllowedOrigins: []string{"https://app.example.com"}})
	anyOrigin := setup(t, gateway.Config{AllowedOrigins: []string{"*"}})
	for _, tc := range []struct {
		name   string
		srv    *httptest.Server
		origin string
		status int
	}{
		{"no origin", plain, "", http.StatusSwitchingProtocols},
		{"same host", plain, plain.URL, http.StatusSwitchingProtocols},
		{"other host", plain, "https://evil.example.com", http.StatusForbidden},
		{"listed", listed, "https://app.example.com", http.StatusSwitchingProtocols},
		{"not listed", listed, "https://evil.example.com", http.StatusForbidden},
		{"any", anyOrigin, "https://evil.example.com", http.StatusSwitchingProtocols},
	} {
		header := http.Header{}
		if tc.origin != "" {
			header.Set("Origin", tc.origin)
		}
		c, res, err := websocket.DefaultDialer.Dial(wsURL(tc.srv), header)
		if c != nil {
			wsRoundTrip(t, c)
			c.Close()
		}
		if res == nil || res.StatusCode != tc.status {
			t.Errorf("%s: %v %v", tc.name, res, err)
			continue
		}
		if tc.status == http.StatusForbidden && res.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: refused without a problem: %v", tc.name, res.Header)
		}
	}
	// A plain GET is not a handshake.
	if r, _ := http.Get(plain.URL + "/v1/ws"); r == nil || r.StatusCode != http.StatusBadRequest {
		t.Errorf("GET without upgrade: %v", r)
	} else {
		r.Body.Close()
	}
}

func TestWSTooManyCalls(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{WSMaxCalls: 2})
	c := wsDial(t, srv)
	wsCall(t, c, "1", "demo.sleep", `{"ms":60000}`)
	done := wsCall(t, c, "done", "demo.add", `{"a":1,"b":1}`).ID
	wsUntil(t, c, "done", "result") // ended: no longer counts
	wsSend(t, c, `{"type":"subscribe","ref":"2","ns":"default","id":"`+done+`"}`)
	wsUntil(t, c, "2", "result")
	wsCall(t, c, "2", "demo.sleep", `{"ms":60000}`)
	wsSend(t, c, `{"type":"call","ref":"3","ns":"default","task":"demo.add","input":{"a":1,"b":1}}`)
	if m, _ := wsUntil(t, c, "3", "error"); m.Error.Code != "too_many_calls" {
		t.Errorf("third call: %+v", m.Error)
	}
	wsSend(t, c, `{"type":"cancel","ref":"1"}`)
	wsUntil(t, c, "1", "result")
	wsRoundTrip(t, c)
}

// Every hostile frame gets an error message (or the close the protocol
// names), and the gateway goes on serving: on the same connection when it
// stays open, and on a new one.
func TestWSHostileFrames(t *testing.T) {
	t.Parallel()
	const maxBody = 1024
	srv := setup(t, gateway.Config{MaxBody: maxBody})
	for _, tc := range []struct {
		name  string
		kind  int
		frame string
		code  string // of the error message; or
		close int    // the close code
	}{
		{"not JSON", websocket.TextMessage, `hello`, "bad_frame", 0},
		{"truncated", websocket.TextMessage, `{"type":"call",`, "bad_frame", 0},
		{"two objects", websocket.TextMessage, `{"type":"cancel","ref":"x"} {}`, "bad_frame", 0},
		{"array", websocket.TextMessage, `[{"type":"call"}]`, "bad_frame", 0},
		{"null", websocket.TextMessage, `null`, "bad_frame", 0},
		{"string", websocket.TextMessage, `"call"`, "bad_frame", 0},
		{"empty", websocket.TextMessage, ``, "bad_frame", 0},
		{"no type", websocket.TextMessage, `{"ref":"r"}`, "missing_field", 0},
		{"unknown type", websocket.TextMessage, `{"type":"launch","ref":"r"}`, "unknown_type", 0},
		{"type not a string", websocket.TextMessage, `{"type":1}`, "bad_frame", 0},
		{"ref not a string", websocket.TextMessage, `{"type":"call","ref":7,"ns":"default","task":"demo.add"}`, "bad_frame", 0},
		{"detach not a bool", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default","task":"demo.add","detach":"yes"}`, "bad_frame", 0},
		{"bad timeout", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default","task":"demo.add","timeout":"soon"}`, "bad_frame", 0},
		{"huge number", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default","task":"demo.echo","input":1e400}`, "bad_frame", 0},
		{"long ref", websocket.TextMessage, `{"type":"call","ref":"` + strings.Repeat("r", 129) + `","ns":"default","task":"demo.add"}`, "bad_frame", 0},
		{"call without task", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default"}`, "missing_field", 0},
		{"call without ref", websocket.TextMessage, `{"type":"call","ns":"default","task":"demo.add"}`, "missing_field", 0},
		{"subscribe without id", websocket.TextMessage, `{"type":"subscribe","ref":"r","ns":"default"}`, "missing_field", 0},
		{"cancel of nothing", websocket.TextMessage, `{"type":"cancel"}`, "missing_field", 0},
		{"cancel without ns", websocket.TextMessage, `{"type":"cancel","id":"x"}`, "missing_field", 0},
		{"unknown ref", websocket.TextMessage, `{"type":"cancel","ref":"r"}`, "unknown_ref", 0},
		{"unknown invocation", websocket.TextMessage, `{"type":"cancel","ns":"default","id":"nope"}`, "invocation_not_found", 0},
		{"unknown namespace", websocket.TextMessage, `{"type":"call","ref":"r","ns":"nope","task":"demo.add"}`, "namespace_not_found", 0},
		{"unknown task", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default","task":"nope"}`, "task_not_found", 0},
		{"binary", websocket.BinaryMessage, `{"type":"call","ref":"r","ns":"default","task":"demo.add"}`, "", websocket.CloseUnsupportedData},
		{"huge", websocket.TextMessage, `{"type":"call","ref":"r","ns":"default","task":"demo.echo","input":"` + strings.Repeat("x", maxBody) + `"}`, "", websocket.CloseMessageTooBig},
	} {
		c := wsDial(t, srv)
		_ = c.WriteMessage(tc.kind, []byte(tc.frame))
		if tc.close != 0 {
			if code := wsClosed(t, c); code != tc.close {
				t.Errorf("%s: closed with %d; want %d", tc.name, code, tc.close)
			}
		} else {
			m := wsRead(t, c)
			if m.Type != "error" || m.Error.Code != tc.code || m.Error.Message == "" {
				t.Errorf("%s: %+v (error %+v); want error %s", tc.name, m, m.Error, tc.code)
			}
			if strings.Contains(tc.frame, `"ref":"r"`) && m.Ref != "r" {
				t.Errorf("%s: the error does not carry the frame's ref: %+v", tc.name, m)
			}
			wsRoundTrip(t, c)
		}
		c.Close()
		wsRoundTrip(t, wsDial(t, srv))
	}
	// A ref in use.
	c := wsDial(t, srv)
	wsCall(t, c, "r", "demo.sleep", `{"ms":60000}`)
	wsSend(t, c, `{"type":"call","ref":"r","ns":"default","task":"demo.add"}`)
	if m, _ := wsUntil(t, c, "r", "error"); m.Error.Code != "duplicate_ref" {
		t.Errorf("duplicate ref: %+v", m.Error)
	}
}
