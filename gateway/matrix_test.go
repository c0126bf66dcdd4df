package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// The access matrix runs in its own namespaces, a and b, each serving
// "sleep": {"ms": n} → n after n ms, or cancelled.
var (
	_ = atasks.Define(matrixSleep, atasks.Name("sleep"), atasks.InNamespace("a"))
	_ = atasks.Define(matrixSleep, atasks.Name("sleep"), atasks.InNamespace("b"))
)

type sleepIn struct {
	MS int `json:"ms"`
}

func matrixSleep(ctx context.Context, in sleepIn) (int, error) {
	select {
	case <-time.After(time.Duration(in.MS) * time.Millisecond):
		return in.MS, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// principal is one caller of the matrix.
type principal struct {
	name   string
	header map[string]string // its Authorization header, if any
	known  bool              // its token is one the gateway knows
	grants map[string]string // by namespace: "all" or one right
}

// may tells whether p has right in ns.
func (p principal) may(ns, right string) bool { return p.grants[ns] == "all" || p.grants[ns] == right }

// matrix is the gateway under test and what the test counted.
type matrix struct {
	t       *testing.T
	srv     *httptest.Server
	reg     *prometheus.Registry
	admin   map[string]string
	victims map[string]string // by namespace: an invocation in flight the whole test
	starts  map[string]int    // invocations started per namespace by those allowed to
	refused int               // requests and messages refused with 401, 403 or a forbidden error
	foreign int               // attempts on another namespace's invocation through one's own
}

// TestAccessMatrix makes every request of the API and sends every kind
// of WebSocket message as each of: a token for namespace a, one for b, a
// read-only one for a, no token, an unknown token; it checks that each is
// served or refused (401 or 403, problem+json) as the token's rights say,
// and that nothing reads, starts or cancels an invocation across
// namespaces.
func TestAccessMatrix(t *testing.T) {
	t.Parallel()
	const tokA, tokB, tokRO = "token-a-0123456789", "token-b-0123456789", "token-ro-a-0123456789"
	tokens, err := gateway.ParseTokenList(tokA + "=a:* " + tokB + "=b:invoke+read+cancel " + tokRO + "=a:read " + adminToken + "=*:admin")
	if err != nil {
		t.Fatal(err)
	}
	m := &matrix{t: t, reg: metrics.NewRegistry(), admin: bearer(adminToken), victims: map[string]string{}, starts: map[string]int{}}
	m.srv, _ = setupNamespaces(t, gateway.Config{Tokens: tokens, Metrics: m.reg}, []atasks.NamespaceConfig{{Name: "a"}, {Name: "b"}})
	for _, ns := range []string{"a", "b"} {
		m.victims[ns] = m.victim(ns)
	}
	principals := []principal{
		{"token for a", bearer(tokA), true, map[string]string{"a": "all"}},
		{"token for b", bearer(tokB), true, map[string]string{"b": "all"}},
		{"read-only token for a", bearer(tokRO), true, map[string]string{"a": "read"}},
		{"no token", nil, false, nil},
		{"unknown token", bearer("token-x-0123456789"), false, nil},
	}
	for _, p := range principals {
		m.openRoutes(p)
		m.gatewayRoutes(p)
		for _, ns := range []string{"a", "b"} {
			m.namespaceRoutes(p, ns)
		}
		m.foreignRoutes(p)
		m.webSocket(p)
	}
	for _, ns := range []string{"a", "b"} {
		if r := do(t, "GET", m.srv.URL+"/v1/ns/"+ns+"/invocations/"+m.victims[ns], "", m.admin); r.status != 200 || r.body["state"] != "running" {
			t.Errorf("victim of %s: %d %v; want it running still", ns, r.status, r.body)
		}
		m.checkStarts(ns)
		do(t, "DELETE", m.srv.URL+"/v1/ns/"+ns+"/invocations/"+m.victims[ns], "", m.admin)
	}
	t.Logf("refused %d requests and messages (401, 403, forbidden); %d attempts on another namespace's invocations found nothing", m.refused, m.foreign)
}

// victim starts, as the admin, an invocation of ns that runs for a minute.
func (m *matrix) victim(ns string) string {
	r := do(m.t, "POST", m.srv.URL+"/v1/ns/"+ns+"/tasks/sleep?wait=0s", `{"ms":60000}`, m.admin)
	if r.status != 202 {
		m.t.Fatalf("victim of %s: %d %s", ns, r.status, r.raw)
	}
	m.starts[ns]++
	m.waitState(ns, r.body["id"].(string), "running")
	return r.body["id"].(string)
}

// waitState waits until invocation id of ns is in state, or final.
func (m *matrix) waitState(ns, id, state string) map[string]any {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := do(m.t, "GET", m.srv.URL+"/v1/ns/"+ns+"/invocations/"+id+"?wait=100ms", "", m.admin)
		if s, _ := r.body["state"].(string); s == state || atasks.State(s).Final() || time.Now().After(deadline) {
			return r.body
		}
	}
}

// expect checks r, the answer to what p did: served if allowed, else 401
// for unknown callers and 403 for known ones, as problem+json; neither leak
// nor a token may appear in a refusal.
func (m *matrix) expect(p principal, allowed bool, r response, what, leak string) {
	m.t.Helper()
	want, code := 0, ""
	switch {
	case allowed && r.status < 300:
		return
	case allowed:
		m.t.Errorf("%s, %s: got %d %s; want it served", p.name, what, r.status, r.raw)
		return
	case !p.known:
		want, code = 401, "unauthorized"
	default:
		want, code = 403, "forbidden"
	}
	m.refused++
	if r.status != want || r.body["code"] != code || r.header.Get("Content-Type") != "application/problem+json" ||
		want == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") || leak != "" && strings.Contains(string(r.raw), leak) ||
		strings.Contains(string(r.raw), "0123456789") { // every token here ends so: none may show
		m.t.Errorf("%s, %s: got %d %v %s; want %d %s", p.name, what, r.status, r.header, r.raw, want, code)
	}
}

// openRoutes: health, readiness, the document and the pages need no
// token, and an unknown one does not bar them.
func (m *matrix) openRoutes(p principal) {
	for _, path := range []string{"/healthz", "/readyz", "/v1/openapi.yaml", "/", "/dashboard", "/ui/app.js"} {
		if r := do(m.t, "GET", m.srv.URL+path, "", p.header); r.status != 200 {
			m.t.Errorf("%s, GET %s: %d", p.name, path, r.status)
		}
	}
}

// gatewayRoutes: /v1/ns lists what p sees; /metrics is the admin's.
func (m *matrix) gatewayRoutes(p principal) {
	r := do(m.t, "GET", m.srv.URL+"/v1/ns", "", p.header)
	m.expect(p, p.known, r, "GET /v1/ns", "")
	if p.known {
		want := []string{}
		for _, ns := range []string{"a", "b"} {
			if p.grants[ns] != "" {
				want = append(want, ns)
			}
		}
		got, _ := json.Marshal(r.body["namespaces"])
		if w, _ := json.Marshal(want); string(got) != string(w) {
			m.t.Errorf("%s, GET /v1/ns: %s; want %s", p.name, got, w)
		}
	}
	m.expect(p, false, do(m.t, "GET", m.srv.URL+"/metrics", "", p.header), "GET /metrics", "atasks_")
}

// namespaceRoutes: invoke, list, read and cancel in ns.
func (m *matrix) namespaceRoutes(p principal, ns string) {
	base := m.srv.URL + "/v1/ns/" + ns
	r := do(m.t, "POST", base+"/tasks/sleep?wait=5s", `{"ms":0}`, p.header)
	if m.expect(p, p.may(ns, "invoke"), r, "POST "+ns, ""); r.status == 200 {
		m.starts[ns]++
	}
	m.expect(p, p.may(ns, "read"), do(m.t, "GET", base+"/tasks", "", p.header), "GET "+ns+" tasks", "sleep")
	victim := m.victims[ns]
	m.expect(p, p.may(ns, "read"), do(m.t, "GET", base+"/invocations/"+victim, "", p.header), "GET "+ns+" invocation", victim)

	fresh := m.victim(ns)
	r = do(m.t, "DELETE", base+"/invocations/"+fresh, "", p.header)
	m.expect(p, p.may(ns, "cancel"), r, "DELETE "+ns+" invocation", fresh)
	m.checkCancelled(p, ns, fresh, p.may(ns, "cancel"), "DELETE")
}

// checkCancelled checks that invocation id of ns was cancelled if want,
// else that it still runs, and then cancels it.
func (m *matrix) checkCancelled(p principal, ns, id string, want bool, how string) {
	m.t.Helper()
	var inv map[string]any
	if want {
		inv = m.waitState(ns, id, "cancelled")
	} else { // a cancel that went through would show within this wait
		inv = do(m.t, "GET", m.srv.URL+"/v1/ns/"+ns+"/invocations/"+id+"?wait=200ms", "", m.admin).body
	}
	if (inv["state"] == "cancelled") != want || !want && inv["state"] != "running" {
		m.t.Errorf("%s, %s of %s: the invocation is %v", p.name, how, ns, inv["state"])
	}
	do(m.t, "DELETE", m.srv.URL+"/v1/ns/"+ns+"/invocations/"+id, "", m.admin)
}

// foreignRoutes: another namespace's invocations are not found through
// one's own namespace, nor through another spelling of it.
func (m *matrix) foreignRoutes(p principal) {
	for _, tc := range []struct{ own, other string }{{"a", "b"}, {"b", "a"}} {
		if !p.may(tc.own, "read") {
			continue
		}
		id := m.victims[tc.other]
		r := do(m.t, "GET", m.srv.URL+"/v1/ns/"+tc.own+"/invocations/"+id, "", p.header)
		m.expectForeign(p, r, "GET", id)
		if p.may(tc.own, "cancel") {
			r = do(m.t, "DELETE", m.srv.URL+"/v1/ns/"+tc.own+"/invocations/"+id, "", p.header)
			m.expectForeign(p, r, "DELETE", id)
		}
	}
	for _, spelled := range []string{"%61", "a%2F..%2Fa", "A"} {
		r := do(m.t, "GET", m.srv.URL+"/v1/ns/"+spelled+"/invocations/"+m.victims["a"], "", p.header)
		if r.status < 400 || strings.Contains(string(r.raw), m.victims["a"]) {
			m.t.Errorf("%s, GET /v1/ns/%s/invocations/<a's>: %d %s", p.name, spelled, r.status, r.raw)
		}
	}
}

// expectForeign checks that a request on another namespace's invocation
// id found nothing.
func (m *matrix) expectForeign(p principal, r response, method, id string) {
	m.t.Helper()
	m.foreign++
	if r.status != 404 || r.body["code"] != "invocation_not_found" || strings.Contains(string(r.raw), `"state"`) {
		m.t.Errorf("%s, %s another namespace's invocation: %d %s", p.name, method, r.status, r.raw)
	}
}

// checkStarts checks that the invocations of ns the gateway started are
// those the matrix allowed.
func (m *matrix) checkStarts(ns string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := m.started(ns)
		if got == m.starts[ns] {
			return
		}
		if got > m.starts[ns] || time.Now().After(deadline) {
			m.t.Errorf("namespace %s: the gateway started %d invocations; %d were allowed", ns, got, m.starts[ns])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// started counts the invocations of ns the gateway started: ended and in flight.
func (m *matrix) started(ns string) int {
	families, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	n := 0.0
	for _, f := range families {
		if f.GetName() != "atasks_gateway_invocations_total" && f.GetName() != "atasks_gateway_invocations_in_flight" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "ns" && l.GetValue() == ns {
					n += s.GetCounter().GetValue() + s.GetGauge().GetValue()
				}
			}
		}
	}
	return int(n)
}

// webSocket: unknown callers cannot connect; known ones may connect and
// each message needs its right.
func (m *matrix) webSocket(p principal) {
	c, res, err := websocket.DefaultDialer.Dial(wsURL(m.srv), headerOf(p.header))
	if !p.known {
		if err == nil || res == nil || res.StatusCode != 401 {
			m.t.Errorf("%s, WebSocket upgrade: %v %v; want 401", p.name, err, res)
		}
		m.refused++
		if c != nil {
			c.Close()
		}
		return
	}
	if err != nil {
		m.t.Fatalf("%s, WebSocket upgrade: %v", p.name, err)
	}
	defer c.Close()
	for _, ns := range []string{"a", "b"} {
		m.wsNamespace(p, c, ns)
	}
	m.wsForeign(p, c)
	wsSend(m.t, c, `{"type":"monitor","ref":"mon"}`)
	m.wsExpect(p, c, "mon", false, "monitor")
}

// wsNamespace sends a call, a subscribe, a cancel by id and a cancel by ref in ns.
func (m *matrix) wsNamespace(p principal, c *websocket.Conn, ns string) {
	wsSend(m.t, c, `{"type":"call","ref":"call-`+ns+`","ns":"`+ns+`","task":"sleep","input":{"ms":0}}`)
	if m.wsExpect(p, c, "call-"+ns, p.may(ns, "invoke"), "call in "+ns) {
		m.starts[ns]++
		wsUntil(m.t, c, "call-"+ns, "result")
	}
	wsSend(m.t, c, `{"type":"subscribe","ref":"sub-`+ns+`","ns":"`+ns+`","id":"`+m.victims[ns]+`"}`)
	m.wsExpect(p, c, "sub-"+ns, p.may(ns, "read"), "subscribe in "+ns)

	fresh := m.victim(ns)
	wsSend(m.t, c, `{"type":"cancel","ns":"`+ns+`","id":"`+fresh+`"}`)
	if !p.may(ns, "cancel") {
		m.wsExpect(p, c, "", false, "cancel by id in "+ns)
	}
	m.checkCancelled(p, ns, fresh, p.may(ns, "cancel"), "WebSocket cancel by id")

	fresh = m.victim(ns)
	ref := "sub-fresh-" + ns
	wsSend(m.t, c, `{"type":"subscribe","ref":"`+ref+`","ns":"`+ns+`","id":"`+fresh+`"}`)
	if m.wsExpect(p, c, ref, p.may(ns, "read"), "subscribe in "+ns) {
		wsSend(m.t, c, `{"type":"cancel","ref":"`+ref+`"}`)
		if !p.may(ns, "cancel") {
			m.wsExpect(p, c, "", false, "cancel by ref in "+ns) // no ref: the subscription goes on
		}
	}
	m.checkCancelled(p, ns, fresh, p.may(ns, "cancel"), "WebSocket cancel by ref")
}

// wsForeign: another namespace's invocations are not found through one's own.
func (m *matrix) wsForeign(p principal, c *websocket.Conn) {
	for _, tc := range []struct{ own, other string }{{"a", "b"}, {"b", "a"}} {
		id := m.victims[tc.other]
		if p.may(tc.own, "read") {
			wsSend(m.t, c, `{"type":"subscribe","ref":"foreign","ns":"`+tc.own+`","id":"`+id+`"}`)
			m.wsForeignAnswer(p, c, "foreign")
		}
		if p.may(tc.own, "cancel") {
			wsSend(m.t, c, `{"type":"cancel","ns":"`+tc.own+`","id":"`+id+`"}`)
			m.wsForeignAnswer(p, c, "")
		}
	}
}

func (m *matrix) wsForeignAnswer(p principal, c *websocket.Conn, ref string) {
	m.t.Helper()
	m.foreign++
	if msg := wsNext(m.t, c, ref); msg.Type != "error" || msg.Error.Code != "invocation_not_found" {
		m.t.Errorf("%s, WebSocket on another namespace's invocation: %+v", p.name, msg)
	}
}

// wsExpect reads the first message about ref and checks it: not an error
// if allowed, else a forbidden error. It reports whether it was served.
func (m *matrix) wsExpect(p principal, c *websocket.Conn, ref string, allowed bool, what string) bool {
	m.t.Helper()
	msg := wsNext(m.t, c, ref)
	switch {
	case allowed && msg.Type != "error":
		return true
	case allowed:
		m.t.Errorf("%s, %s: got %+v (%v); want it served", p.name, what, msg, msg.Error)
	case msg.Type != "error" || msg.Error.Code != "forbidden" || msg.Error.Retryable:
		m.t.Errorf("%s, %s: got %+v; want a forbidden error", p.name, what, msg)
	default:
		m.refused++
	}
	return false
}

// wsNext returns the next message about ref ("" for none), skipping
// those about other refs.
func wsNext(t *testing.T, c *websocket.Conn, ref string) wsMsg {
	t.Helper()
	for {
		if msg := wsRead(t, c); msg.Ref == ref {
			return msg
		}
	}
}

// headerOf turns a header map into an http.Header.
func headerOf(h map[string]string) http.Header {
	out := http.Header{}
	for k, v := range h {
		out.Set(k, v)
	}
	return out
}
