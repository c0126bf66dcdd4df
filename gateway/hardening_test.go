package gateway_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/metrics"
)

// Without tokens or with a token lacking rights in it, nothing under
// /v1/ns/{ns}/ tells whether namespace ns exists: an existing namespace
// (seed) and a missing one (nosuch) answer alike on every path and method,
// matched by the API or not.
func TestNamespaceExistenceDoesNotLeak(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{Tokens: testTokens(t)})
	paths := []string{"", "/", "/x", "/tasks", "/tasks/", "/tasks/demo.add", "/tasks/x/y", "/invocations", "/invocations/x",
		"/invocations/x/y", "/schedules", "/%2e%2e", "/tasks/%2F", "//tasks"}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	compared := 0
	for _, who := range []map[string]string{nil, bearer(readerToken), bearer("not-a-known-token-0123")} { // reader: read in default only
		for _, p := range paths {
			for _, m := range methods {
				seed := do(t, m, srv.URL+"/v1/ns/seed"+p, "", who)
				nosuch := do(t, m, srv.URL+"/v1/ns/nosuch"+p, "", who)
				if seed.status != nosuch.status || seed.body["code"] != nosuch.body["code"] {
					t.Errorf("%s %s as %v: seed %d %v, nosuch %d %v", m, p, who, seed.status, seed.body["code"], nosuch.status, nosuch.body["code"])
				}
				compared++
			}
		}
	}
	// A token with a right in a namespace may learn that it exists.
	if r := do(t, "GET", srv.URL+"/v1/ns/nosuch/x", "", bearer(adminToken)); r.status != 404 || r.body["code"] != "namespace_not_found" {
		t.Errorf("admin, a missing namespace: %d %v", r.status, r.body["code"])
	}
	t.Logf("%d requests compared", compared)
}

// An open gateway (no tokens) takes no requests from other sites' pages
// and answers only loopback Host names, against cross-site forms and DNS
// rebinding; curl (no Origin) and its own pages work, and so does an
// allowed host. A gateway with tokens answers any of them.
func TestOpenGatewayRefusesOtherSites(t *testing.T) {
	t.Parallel()
	open := setup(t, gateway.Config{AllowedHosts: []string{"gw.internal"}})
	secured := setup(t, gateway.Config{Tokens: testTokens(t)})
	post := func(srv, host, origin, ctype string, header map[string]string) response {
		req, err := http.NewRequest("POST", srv+"/v1/ns/default/tasks/demo.add", strings.NewReader(`{"a":1,"b":2}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", ctype)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		return send(t, req)
	}
	local := strings.TrimPrefix(open.URL, "http://")
	for _, tc := range []struct {
		name, host, origin, ctype string
		status                    int
		code                      string
	}{
		{"curl", local, "", "application/json", 200, ""},
		{"the gateway's own page", local, "http://" + local, "application/json", 200, ""},
		{"localhost", "localhost:8080", "", "application/json", 200, ""},
		{"an allowed host", "gw.internal", "", "application/json", 200, ""},
		{"a cross-site form", local, "https://evil.example", "application/x-www-form-urlencoded", 403, "origin_not_allowed"},
		{"a cross-site text/plain fetch", local, "https://evil.example", "text/plain", 403, "origin_not_allowed"},
		{"a sandboxed page", local, "null", "text/plain", 403, "origin_not_allowed"},
		{"a rebound name", "evil.example:8080", "", "application/json", 403, "host_not_allowed"},
		{"a rebound name, its own origin", "evil.example:8080", "http://evil.example:8080", "application/json", 403, "host_not_allowed"},
	} {
		if r := post(open.URL, tc.host, tc.origin, tc.ctype, nil); r.status != tc.status || tc.code != "" && r.body["code"] != tc.code {
			t.Errorf("open gateway, %s: %d %s", tc.name, r.status, r.raw)
		}
	}
	if r := post(secured.URL, "evil.example", "https://evil.example", "text/plain", bearer(adminToken)); r.status != 200 {
		t.Errorf("a gateway with tokens, any host and origin: %d %s", r.status, r.raw)
	}
}

// Unfinished invocations are capped per caller (429 with Retry-After; the
// cap of one caller leaves others alone; a finished one makes room) and in
// all (503).
func TestUnfinishedInvocationsAreCapped(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{Tokens: testTokens(t), MaxUnfinishedPerCaller: 3})
	sleep := func(token string) response {
		return do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":60000}`, bearer(token))
	}
	var ids []string
	for range 3 {
		r := sleep(adminToken)
		if r.status != 202 {
			t.Fatalf("within the cap: %d %s", r.status, r.raw)
		}
		ids = append(ids, r.body["id"].(string))
	}
	if r := sleep(adminToken); r.status != 429 || r.body["code"] != "too_many_requests" || r.header.Get("Retry-After") == "" {
		t.Errorf("over the cap: %d %s (Retry-After %q)", r.status, r.raw, r.header.Get("Retry-After"))
	}
	if r := sleep(spentToken); r.status != 202 {
		t.Errorf("another caller: %d %s", r.status, r.raw)
	} else {
		ids = append(ids, r.body["id"].(string))
	}
	if r := do(t, "DELETE", srv.URL+"/v1/ns/default/invocations/"+ids[0], "", bearer(adminToken)); r.body["state"] != "cancelled" {
		t.Fatalf("cancel: %d %s", r.status, r.raw)
	}
	r := sleep(adminToken)
	if r.status != 202 {
		t.Errorf("after one finished: %d %s", r.status, r.raw)
	}
	ids = append(ids, r.body["id"].(string))
	for _, id := range ids { // for the worker to stop at once
		do(t, "DELETE", srv.URL+"/v1/ns/default/invocations/"+id, "", bearer(adminToken))
	}

	all := setup(t, gateway.Config{MaxUnfinished: 2})
	for i := range 3 {
		r := do(t, "POST", all.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":60000}`)
		if want := []int{202, 202, 503}[i]; r.status != want || i == 2 && (r.body["code"] != "too_many_invocations" || r.header.Get("Retry-After") == "") {
			t.Errorf("call %d of a gateway capped at 2: %d %s", i, r.status, r.raw)
		}
		if id, ok := r.body["id"].(string); ok {
			defer do(t, "DELETE", all.URL+"/v1/ns/default/invocations/"+id, "")
		}
	}
}

// Every 401 and 403 leaves a log line and counts in a metric; the line
// names the token by its name, never the token. A token padded with white
// space is not the token it pads.
func TestRefusalsAreAudited(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	reg := metrics.NewRegistry()
	srv := setup(t, gateway.Config{Tokens: testTokens(t), Metrics: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	do(t, "GET", srv.URL+"/v1/ns/default/tasks", "")                   // 401
	do(t, "GET", srv.URL+"/v1/ns/seed/tasks", "", bearer(readerToken)) // 403
	if r := do(t, "GET", srv.URL+"/v1/ns/default/tasks", "", map[string]string{"Authorization": "Bearer  " + readerToken}); r.status != 401 {
		t.Errorf("a padded token: %d %s", r.status, r.raw)
	}
	out := logs.String()
	if strings.Count(out, "request refused") != 3 || !strings.Contains(out, "status=403 token=ATASKS_TOKENS#2") || strings.Contains(out, readerToken) {
		t.Errorf("audit lines:\n%s", out)
	}
	got := scrape(t, srv.URL, bearer(adminToken))
	for status, want := range map[string]float64{"401": 2, "403": 1} {
		if v := got[fmt.Sprintf("atasks_gateway_refused_total{status=%s}", status)]; v != want {
			t.Errorf("refused %s: %v, want %v", status, v, want)
		}
	}
}
