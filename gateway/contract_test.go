package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/api"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/wire"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/gorilla/websocket"
)

// contract is the OpenAPI document with a router over it.
type contract struct {
	doc    *openapi3.T
	routes routers.Router
}

var loadContract = sync.OnceValues(func() (contract, error) {
	doc, err := api.Load()
	if err != nil {
		return contract{}, err
	}
	routes, err := gorillamux.NewRouter(doc)
	return contract{doc, routes}, err
})

// answered records, per test, the "METHOD path status" the gateway answered.
var answered sync.Map

// checkContract checks a response to req against the OpenAPI document:
// its status must be declared for the operation (a default response does
// not count), and its headers and body must match. Requests outside the
// document must get a 404 or 405 problem.
func checkContract(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := c.routes.FindRoute(req)
	if err != nil {
		var v any
		// Not in the document: 404 or 405, once admitted (401, 403, 429).
		if !slices.Contains([]int{401, 403, 404, 405, 429}, status) || header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s (%v): got %d %s", req.Method, req.URL.Path, err, status, header.Get("Content-Type"))
		} else if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("%s %s: %v", req.Method, req.URL.Path, err)
		} else if err := c.doc.Components.Schemas["Problem"].Value.VisitJSON(v); err != nil {
			t.Errorf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		return
	}
	op := req.Method + " " + route.Path + " " + strconv.Itoa(status)
	answered.Store(t.Name()+"|"+op, true)
	if route.Operation.Responses.Status(status) == nil {
		t.Errorf("%s: status not declared in the document", op)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		t.Errorf("%s: the response does not match the document: %v\n%s", op, err, body)
	}
}

// downTransport is a loopback whose broker is unreachable: it is not
// ready and can neither list its tasks nor send.
type downTransport struct{ atasks.Transport }

var errBrokerDown = &atasks.Error{Code: "unavailable", Message: "broker unreachable", Retryable: true}

func (downTransport) Check(context.Context) error { return errBrokerDown }

func (downTransport) Catalog(context.Context) ([]atasks.TaskInfo, error) { return nil, errBrokerDown }

func (downTransport) Send(context.Context, *wire.Request) error { return errBrokerDown }

// TestContract answers every status the document declares for each
// operation, and checks that each answer matches it.
func TestContract(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxBody: 64})
	nss, err := demo.Namespaces(nil)
	if err != nil {
		t.Fatal(err)
	}
	down, _ := setupNamespaces(t, gateway.Config{}, append(nss, atasks.NamespaceConfig{Name: "down", Transport: downTransport{atasks.Loopback()}}))
	forgetful := setup(t, gateway.Config{Retention: time.Nanosecond})
	evicting := setup(t, gateway.Config{MaxFinished: 1})
	closed, gw := setupNamespaces(t, gateway.Config{}, nss)
	gw.Close()
	admin, reader, spent := bearer(adminToken), bearer(readerToken), bearer(spentToken)
	secured := setup(t, gateway.Config{Tokens: testTokens(t)})
	limited := setup(t, gateway.Config{Tokens: testTokens(t), RateLimit: 0.001}) // a burst of 1, then one per 1000 s
	do(t, "GET", secured.URL+"/v1/ns", "", spent)
	do(t, "GET", limited.URL+"/v1/ns", "", spent) // spends spentToken's burst
	started := do(t, "POST", secured.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}`, admin).body["id"].(string)

	finished := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}`).body["id"].(string)
	evicted := do(t, "POST", evicting.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}`).body["id"].(string)
	do(t, "POST", evicting.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}`)
	inv := "/v1/ns/default/invocations/"
	etag := func(path string) map[string]string {
		return map[string]string{"If-None-Match": do(t, "GET", srv.URL+path, "").header.Get("ETag")}
	}
	key := func(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }
	upgrade := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://elsewhere.example"}
	upgradeHere := maps.Clone(upgrade) // from no browser page
	delete(upgradeHere, "Origin")
	spentUpgrade := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Authorization": spent["Authorization"]}

	for _, tc := range []struct {
		srv          *httptest.Server
		method, path string
		header       map[string]string
		body         string
		status       int
		code         string // of the problem, if any
	}{
		{srv, "POST", "/v1/ns/default/tasks/demo.add", nil, `{"a":1,"b":2}`, 200, ""},
		{srv, "POST", "/v1/ns/default/tasks/demo.sleep?wait=0s", nil, `{"ms":300,"value":1}`, 202, ""},
		{srv, "POST", "/v1/ns/default/tasks/demo.add", nil, `{"a":`, 400, "malformed_json"},
		{srv, "POST", "/v1/ns/default/tasks/demo.add?wait=soon", nil, `{}`, 400, "bad_request"},
		{srv, "POST", "/v1/ns/default/tasks/nope", nil, `{}`, 404, "task_not_found"},
		{srv, "POST", "/v1/ns/nope/tasks/demo.add", nil, `{}`, 404, "namespace_not_found"},
		{forgetful, "POST", "/v1/ns/default/tasks/demo.add", nil, `{"a":1,"b":2}`, 410, "invocation_expired"},
		{srv, "POST", "/v1/ns/default/tasks/demo.echo", nil, `"` + strings.Repeat("x", 64) + `"`, 413, "body_too_large"},
		{srv, "POST", "/v1/ns/default/tasks/demo.add", key("k1"), `{"a":1,"b":2}`, 200, ""},
		{srv, "POST", "/v1/ns/default/tasks/demo.echo", key("k1"), `{"a":1,"b":2}`, 422, "idempotency_conflict"},
		{down, "POST", "/v1/ns/down/tasks/demo.add", nil, `{}`, 503, "unavailable"},
		{closed, "POST", "/v1/ns/default/tasks/demo.add", nil, `{}`, 503, "shutting_down"},

		{srv, "GET", inv + finished + "?wait=1s", nil, "", 200, ""},
		{srv, "GET", inv + finished + "?wait=1", nil, "", 400, "bad_request"},
		{srv, "GET", inv + "nope", nil, "", 404, "invocation_not_found"},
		{evicting, "GET", inv + evicted, nil, "", 410, "invocation_expired"},
		{srv, "DELETE", inv + finished, nil, "", 200, ""},
		{srv, "DELETE", "/v1/ns/seed/invocations/" + finished, nil, "", 404, "invocation_not_found"},
		{evicting, "DELETE", inv + evicted, nil, "", 410, "invocation_expired"},

		{srv, "GET", "/v1/ns/seed/tasks", nil, "", 200, ""},
		{srv, "GET", "/v1/ns/nope/tasks", nil, "", 404, "namespace_not_found"},
		{down, "GET", "/v1/ns/down/tasks", nil, "", 503, "unavailable"},
		{srv, "GET", "/v1/ns/default/tasks/demo.add", nil, "", 200, ""},
		{srv, "GET", "/v1/ns/default/tasks/nope", nil, "", 404, "task_not_found"},
		{down, "GET", "/v1/ns/down/tasks/demo.add", nil, "", 503, "unavailable"},
		{srv, "GET", "/v1/ns/default/openapi.json", nil, "", 200, ""},
		{srv, "GET", "/v1/ns/nope/openapi.json", nil, "", 404, "namespace_not_found"},
		{down, "GET", "/v1/ns/down/openapi.json", nil, "", 503, "unavailable"},
		{srv, "GET", "/v1/ns", nil, "", 200, ""},
		{srv, "GET", "/healthz", nil, "", 200, ""},
		{srv, "GET", "/readyz", nil, "", 200, ""},
		{srv, "GET", "/metrics", nil, "", 200, ""},
		{down, "GET", "/readyz", nil, "", 503, "unavailable"},
		{srv, "GET", "/v1/openapi.yaml", nil, "", 200, ""},
		{srv, "GET", "/v1/ws", nil, "", 400, "bad_request"},
		{srv, "GET", "/v1/ws", upgrade, "", 403, "origin_not_allowed"},
		{closed, "GET", "/v1/ws", upgradeHere, "", 503, "shutting_down"},
		{srv, "GET", "/", nil, "", 200, ""},
		{srv, "GET", "/", etag("/"), "", 304, ""},
		{srv, "GET", "/dashboard", nil, "", 200, ""},
		{srv, "GET", "/dashboard", etag("/dashboard"), "", 304, ""},
		{srv, "GET", "/ui/app.js", nil, "", 200, ""},
		{srv, "GET", "/ui/app.js", etag("/ui/app.js"), "", 304, ""},
		{srv, "GET", "/ui/nope.js", nil, "", 404, "not_found"},

		{secured, "POST", "/v1/ns/default/tasks/demo.add", nil, `{}`, 401, "unauthorized"},
		{secured, "POST", "/v1/ns/default/tasks/demo.add", reader, `{}`, 403, "forbidden"},
		{limited, "POST", "/v1/ns/default/tasks/demo.add", spent, `{}`, 429, "too_many_requests"},
		{secured, "GET", inv + started, nil, "", 401, "unauthorized"},
		{secured, "GET", "/v1/ns/seed/invocations/" + started, reader, "", 403, "forbidden"},
		{limited, "GET", inv + started, spent, "", 429, "too_many_requests"},
		{secured, "DELETE", inv + started, map[string]string{"Authorization": "Bearer nope"}, "", 401, "unauthorized"},
		{secured, "DELETE", inv + started, reader, "", 403, "forbidden"},
		{limited, "DELETE", inv + started, spent, "", 429, "too_many_requests"},
		{secured, "GET", "/v1/ns/default/tasks", map[string]string{"Authorization": "Basic YTpi"}, "", 401, "unauthorized"},
		{secured, "GET", "/v1/ns/seed/tasks", reader, "", 403, "forbidden"},
		{limited, "GET", "/v1/ns/default/tasks", spent, "", 429, "too_many_requests"},
		{secured, "GET", "/v1/ns/default/tasks/demo.add", nil, "", 401, "unauthorized"},
		{secured, "GET", "/v1/ns/seed/tasks/task_one", reader, "", 403, "forbidden"},
		{limited, "GET", "/v1/ns/default/tasks/demo.add", spent, "", 429, "too_many_requests"},
		{secured, "GET", "/v1/ns/default/openapi.json", nil, "", 401, "unauthorized"},
		{secured, "GET", "/v1/ns/seed/openapi.json", reader, "", 403, "forbidden"},
		{limited, "GET", "/v1/ns/default/openapi.json", spent, "", 429, "too_many_requests"},
		{secured, "GET", "/v1/ns", nil, "", 401, "unauthorized"},
		{limited, "GET", "/v1/ns", spent, "", 429, "too_many_requests"},
		{secured, "GET", "/v1/ws", upgrade, "", 401, "unauthorized"},
		{limited, "GET", "/v1/ws", spentUpgrade, "", 429, "too_many_requests"},
		{secured, "GET", "/metrics", nil, "", 401, "unauthorized"},
		{secured, "GET", "/metrics", reader, "", 403, "forbidden"},
		{secured, "GET", "/metrics", admin, "", 200, ""},
		{limited, "GET", "/metrics", spent, "", 429, "too_many_requests"},

		// Outside the document.
		{srv, "PUT", "/v1/ns/default/tasks/demo.add", nil, "", 405, "method_not_allowed"},
		{srv, "GET", "/v1/nope", nil, "", 404, "not_found"},
	} {
		req, err := http.NewRequest(tc.method, tc.srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		r := send(t, req)
		if r.status != tc.status || tc.code != "" && (r.body["code"] != tc.code || r.body["detail"] == "") {
			t.Errorf("%s %s: got %d %s; want %d %s", tc.method, tc.path, r.status, r.raw, tc.status, tc.code)
		}
	}
	if r := do(t, "GET", srv.URL+"/v1/openapi.yaml", ""); !bytes.Equal(r.raw, api.Spec) {
		t.Error("/v1/openapi.yaml is not api.Spec")
	}
	dialWebSocket(t, srv)

	c, _ := loadContract()
	for path, item := range c.doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status := range op.Responses.Map() {
				key := t.Name() + "|" + method + " " + path + " " + status
				if _, ok := answered.Load(key); !ok && status != "default" {
					t.Errorf("%s %s %s: declared, never answered", method, path, status)
				}
			}
		}
	}
}

// dialWebSocket opens a WebSocket through the validating middleware and
// checks the handshake's response against the document.
func dialWebSocket(t *testing.T, srv *httptest.Server) {
	t.Helper()
	url := srv.URL + "/v1/ws"
	ws, res, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatalf("WebSocket handshake: %v", err)
	}
	defer ws.Close()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkContract(t, req, res.StatusCode, res.Header, nil)
	if err := ws.WriteJSON(map[string]string{"type": "call", "ref": "1", "ns": "default", "task": "demo.echo"}); err != nil {
		t.Fatal(err)
	}
	if err := ws.ReadJSON(&map[string]any{}); err != nil {
		t.Fatalf("no message after a call: %v", err)
	}
}

// TestRequestValidation: the body limit comes first, then the document's
// rules, each violation named in the problem's detail.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxBody: 1024})
	add, big := "/v1/ns/default/tasks/demo.add", `"`+strings.Repeat("x", 2000)+`"`
	for _, tc := range []struct {
		method, path   string
		header         map[string]string
		body           string
		status         int
		code, inDetail string
	}{
		{"POST", add + "?wait=soon", nil, `{"a":1,"b":2}`, 400, "bad_request", `query parameter "wait": "soon" is not a Go duration`},
		{"POST", add + "?wait=5", nil, `{"a":1,"b":2}`, 400, "bad_request", `query parameter "wait"`},
		{"POST", add + "?wait=-1s", nil, `{"a":1,"b":2}`, 400, "bad_request", `query parameter "wait"`},
		{"POST", add + "?wait=1s&timeout=1x", nil, `{"a":1,"b":2}`, 400, "bad_request", `query parameter "timeout"`},
		{"POST", add + "?wait=99999999999h", nil, `{"a":1,"b":2}`, 400, "bad_request", `wait`},
		{"POST", add, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, `{"a":1,"b":2}`, 400, "bad_request", `header parameter "Idempotency-Key"`},
		{"POST", add, map[string]string{"Idempotency-Key": ""}, `{"a":1,"b":2}`, 400, "bad_request", `header parameter "Idempotency-Key"`},
		{"POST", add + "?wait=soon", nil, big, 413, "body_too_large", "1024 bytes"},
		{"POST", add, nil, `{"a":1,"b":`, 400, "malformed_json", "not one JSON value"},
		{"GET", "/v1/ns/default/invocations/x?wait=soon", nil, "", 400, "bad_request", `query parameter "wait"`},

		{"POST", add + "?wait=0", nil, `{"a":1,"b":2}`, 0, "", ""},
		{"POST", add + "?wait=1m0.5s&timeout=.5h", nil, `{"a":1,"b":2}`, 200, "", ""},
		{"POST", add, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, `{"a":1,"b":2}`, 200, "", ""}, // curl -d
		{"POST", add, map[string]string{"Idempotency-Key": strings.Repeat("k", 255)}, `{"a":1,"b":2}`, 200, "", ""},
		{"GET", "/v1/ns/default/tasks?unknown=1", nil, big, 200, "", ""}, // a GET's body is ignored
	} {
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		r := send(t, req)
		detail, _ := r.body["detail"].(string)
		if tc.status != 0 && r.status != tc.status || tc.status == 0 && r.status >= 400 ||
			r.body["code"] != nil && r.body["code"] != tc.code || !strings.Contains(detail, tc.inDetail) {
			t.Errorf("%s %s %v: got %d %s; want %d %s %q", tc.method, tc.path, tc.header, r.status, r.raw, tc.status, tc.code, tc.inDetail)
		}
	}
}
