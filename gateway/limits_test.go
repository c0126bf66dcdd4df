package gateway_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks/gateway"
	"github.com/gorilla/websocket"
)

// A token over its rate gets 429, retryable, with Retry-After; other
// tokens keep theirs. WebSocket calls count against the same rate.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{Tokens: testTokens(t), RateLimit: 0.5, RateBurst: 3})
	for range 3 {
		if r := do(t, "GET", srv.URL+"/v1/ns", "", bearer(spentToken)); r.status != 200 {
			t.Fatalf("within the burst: %d %s", r.status, r.raw)
		}
	}
	r := do(t, "GET", srv.URL+"/v1/ns/default/tasks", "", bearer(spentToken))
	if r.status != 429 || r.body["code"] != "too_many_requests" || r.body["retryable"] != true || r.header.Get("Retry-After") != "2" {
		t.Errorf("over the rate: %d %v %s", r.status, r.header, r.raw)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns", "", bearer(adminToken)); r.status != 200 {
		t.Errorf("another token: %d", r.status)
	}
	if r := do(t, "GET", srv.URL+"/healthz", "", bearer(spentToken)); r.status != 200 {
		t.Errorf("an open route is limited: %d", r.status)
	}

	c, _, err := websocket.DefaultDialer.Dial(wsURL(srv), headerOf(bearer(adminToken))) // 1 of the burst
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wsCall(t, c, "1", "demo.add", `{"a":1,"b":2}`) // 2 (the GET above was 1)
	wsSend(t, c, `{"type":"call","ref":"2","ns":"default","task":"demo.add","input":{"a":1,"b":2}}`)
	if m := wsNext(t, c, "2"); m.Type != "error" || m.Error.Code != "too_many_requests" || !m.Error.Retryable {
		t.Errorf("a WebSocket call over the rate: %+v", m)
	}
}

// An open gateway limits each client IP.
func TestRateLimitByIP(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{RateLimit: 0.01})
	do(t, "GET", srv.URL+"/v1/ns", "")
	if r := do(t, "GET", srv.URL+"/v1/ns", ""); r.status != 429 || r.header.Get("Retry-After") != "100" {
		t.Errorf("over the rate: %d %v", r.status, r.header)
	}
}

// Beyond MaxInFlight requests in progress a caller gets 429; a WebSocket
// counts as one while it is open.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{Tokens: testTokens(t), MaxInFlight: 1})
	c, _, err := websocket.DefaultDialer.Dial(wsURL(srv), headerOf(bearer(adminToken)))
	if err != nil {
		t.Fatal(err)
	}
	wsCall(t, c, "1", "demo.add", `{"a":1,"b":2}`)
	r := do(t, "GET", srv.URL+"/v1/ns", "", bearer(adminToken))
	if r.status != 429 || r.body["code"] != "too_many_requests" || r.header.Get("Retry-After") != "1" {
		t.Errorf("beyond the cap: %d %v %s", r.status, r.header, r.raw)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns", "", bearer(readerToken)); r.status != 200 {
		t.Errorf("another token: %d", r.status)
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for do(t, "GET", srv.URL+"/v1/ns", "", bearer(adminToken)).status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the closed WebSocket still counts")
		}
	}
}

// A namespace's body limit overrides the gateway's, on REST and WebSocket.
func TestMaxBodyPerNamespace(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxBody: 1024, MaxBodyNS: map[string]int64{"default": 64, "seed": 4096}})
	big := `"` + strings.Repeat("x", 2000) + `"`
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/v1/ns/default/tasks/demo.echo", `"` + strings.Repeat("x", 100) + `"`, 413},
		{"/v1/ns/default/tasks/demo.echo", `"small"`, 200},
		{"/v1/ns/seed/tasks/task_three", big, 200},
		{"/v1/ns/seed/tasks/task_three", big + big + big, 413},
	} {
		if r := do(t, "POST", srv.URL+tc.path, tc.body); r.status != tc.status {
			t.Errorf("%s with %d bytes: %d %s", tc.path, len(tc.body), r.status, r.raw)
		}
	}
	c := wsDial(t, srv)
	wsSend(t, c, `{"type":"call","ref":"1","ns":"default","task":"demo.echo","input":"`+strings.Repeat("x", 100)+`"}`)
	if m := wsNext(t, c, "1"); m.Type != "error" || m.Error.Code != "body_too_large" {
		t.Errorf("a call over its namespace's limit: %+v", m)
	}
	wsSend(t, c, `{"type":"call","ref":"2","ns":"seed","task":"task_three","input":`+big+`}`)
	if m := wsNext(t, c, "2"); m.Type != "accepted" {
		t.Errorf("a call within its namespace's limit: %+v %v", m, m.Error)
	}
}

// Browsers send the token as a subprotocol beside "atasks", which the
// gateway chooses.
func TestWSTokenSubprotocol(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{Tokens: testTokens(t)})
	for _, tc := range []struct {
		protocols []string
		status    int
	}{
		{[]string{"atasks", "bearer." + base64.RawURLEncoding.EncodeToString([]byte(adminToken))}, 101},
		{[]string{"atasks", "bearer." + base64.URLEncoding.EncodeToString([]byte(adminToken))}, 101},
		{[]string{"atasks"}, 401},
		{[]string{"atasks", "bearer.!!"}, 401},
		{[]string{"atasks", "bearer." + base64.RawURLEncoding.EncodeToString([]byte("unknown-0123456789"))}, 401},
	} {
		d := websocket.Dialer{Subprotocols: tc.protocols}
		c, res, err := d.Dial(wsURL(srv), nil)
		if res == nil || res.StatusCode != tc.status {
			t.Errorf("%v: %v %v", tc.protocols, res, err)
			continue
		}
		if c == nil {
			continue
		}
		if c.Subprotocol() != "atasks" {
			t.Errorf("%v: subprotocol %q chosen", tc.protocols, c.Subprotocol())
		}
		wsCall(t, c, "1", "demo.add", `{"a":1,"b":2}`)
		c.Close()
	}
}
