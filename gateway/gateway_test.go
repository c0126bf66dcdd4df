package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gatewaytest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// setup runs a gateway in embedded mode over loopback with the demo tasks.
func setup(t testing.TB, cfg gateway.Config) *httptest.Server {
	t.Helper()
	nss, err := demo.Namespaces(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := setupNamespaces(t, cfg, nss)
	return srv
}

// setupNamespaces runs a gateway in embedded mode with the demo tasks in
// namespaces nss.
func setupNamespaces(t testing.TB, cfg gateway.Config, nss []atasks.NamespaceConfig) (*httptest.Server, *gateway.Gateway) {
	t.Helper()
	s := gatewaytest.New(t, cfg, nss)
	return s.HTTP, s.Gateway
}

type response struct {
	status   int
	header   http.Header
	body     map[string]any
	location string
	raw      []byte
}

// do makes a request with the headers of header, if any, and checks the
// response as send does.
func do(t *testing.T, method, url, body string, header ...map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		for k, v := range h {
			req.Header.Set(k, v)
		}
	}
	return send(t, req)
}

// send does req and checks the response against the OpenAPI document (see
// checkContract); a JSON body is decoded into response.body.
func send(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	checkContract(t, req, res.StatusCode, res.Header, raw)
	r := response{status: res.StatusCode, header: res.Header, location: res.Header.Get("Location"), raw: raw}
	if !strings.Contains(res.Header.Get("Content-Type"), "json") {
		return r
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&r.body); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", req.Method, req.URL, raw)
	}
	return r
}

func TestInvoke(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	for _, tc := range []struct {
		ns, task, in string
		want         string
	}{
		{"default", "demo.add", `{"a":2,"b":3}`, `5`},
		{"default", "demo.echo", `{"x":[1,2.5,"é",null,true],"big":9007199254740993}`, `{"big":9007199254740993,"x":[1,2.5,"é",null,true]}`},
		{"default", "demo.echo", ``, `null`},
		{"default", "demo.fib", `{"n":15}`, `610`},
		{"default", "demo.gather", `{"n":5,"ms":10}`, `[0,1,2,3,4]`},
		{"seed", "task_three", `"x"`, `"x"`},
		{"seed", "request_sequence", ``, `[1,3]`},
	} {
		r := do(t, "POST", srv.URL+"/v1/ns/"+tc.ns+"/tasks/"+tc.task, tc.in)
		got, _ := json.Marshal(r.body["result"])
		if r.status != 200 || r.body["state"] != "succeeded" || string(got) != tc.want {
			t.Errorf("%s %s: %d %v; want result %s", tc.task, tc.in, r.status, r.body, tc.want)
		}
	}
}

func TestFailuresAreInvocations(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	for _, tc := range []struct{ task, in, code string }{
		{"demo.fail", `{"code":"c","message":"m"}`, "c"},
		{"demo.fail", `{"code":"task_not_found","message":"a task's own code"}`, "task_not_found"},
		{"demo.panic", ``, "panic"},
	} {
		r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/"+tc.task, tc.in)
		e, _ := r.body["error"].(map[string]any)
		if r.status != 200 || r.body["state"] != "failed" || e["code"] != tc.code {
			t.Errorf("%s: %d %v; want failed with code %s", tc.task, r.status, r.body, tc.code)
		}
	}
}

func TestBadInputGetsProblem(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxBody: 64})
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/ns/default/tasks/demo.add", `{"a":2,`, 400, "malformed_json"},
		{"POST", "/v1/ns/default/tasks/demo.add", `{"a":1} {"b":2}`, 400, "malformed_json"},
		{"POST", "/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}]`, 400, "malformed_json"},
		{"POST", "/v1/ns/default/tasks/demo.echo", `1e400`, 400, "malformed_json"},
		{"POST", "/v1/ns/default/tasks/demo.add", ``, 400, "bad_input"},
		{"POST", "/v1/ns/default/tasks/demo.add", `null`, 400, "bad_input"},
		{"POST", "/v1/ns/default/tasks/demo.add", `{}`, 400, "bad_input"},
		{"POST", "/v1/ns/default/tasks/demo.add", `{"a":1,"b":2,"c":3}`, 400, "bad_input"},
		{"POST", "/v1/ns/default/tasks/demo.add", `{"a":"x","b":2}`, 400, "bad_input"},
		{"POST", "/v1/ns/default/tasks/nope?wait=0s", `{}`, 404, "task_not_found"},
		{"POST", "/v1/ns/default/tasks/demo.echo", `"` + strings.Repeat("x", 100) + `"`, 413, "body_too_large"},
		{"POST", "/v1/ns/default/tasks/nope", `{}`, 404, "task_not_found"},
		{"POST", "/v1/ns/nope/tasks/demo.add", `{}`, 404, "namespace_not_found"},
		{"POST", "/v1/ns/default/tasks/demo.add?wait=soon", `{}`, 400, "bad_request"},
		{"GET", "/v1/ns/default/invocations/nope", ``, 404, "invocation_not_found"},
		{"DELETE", "/v1/ns/default/invocations/nope", ``, 404, "invocation_not_found"},
		{"GET", "/v1/nope", ``, 404, "not_found"},
		{"PUT", "/v1/ns/default/tasks/demo.add", ``, 405, "method_not_allowed"},
	} {
		r := do(t, tc.method, srv.URL+tc.path, tc.body)
		if r.status != tc.status || r.body["code"] != tc.code || r.header.Get("Content-Type") != "application/problem+json" || r.body["detail"] == "" {
			t.Errorf("%s %s %q: %d %v", tc.method, tc.path, tc.body, r.status, r.body)
		}
		if r.status == 405 && r.header.Get("Allow") != "POST" {
			t.Errorf("405 without the right Allow header: %q", r.header.Get("Allow"))
		}
	}
	if r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":1}`); r.status != 200 {
		t.Errorf("the gateway stopped serving after bad input: %d", r.status)
	}
}

func TestAcceptedThenLongPoll(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=100ms", `{"ms":1000,"value":"late"}`)
	if r.status != 202 || r.location != "/v1/ns/default/invocations/"+r.body["id"].(string) {
		t.Fatalf("got %d %v %q", r.status, r.body, r.location)
	}
	r = do(t, "GET", srv.URL+r.location+"?wait=10s", "")
	if r.status != 200 || r.body["state"] != "succeeded" || r.body["result"] != "late" {
		t.Fatalf("long-poll: %d %v", r.status, r.body)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns/seed/invocations/"+r.body["id"].(string), ""); r.status != 404 {
		t.Errorf("an invocation is readable through another namespace: %d", r.status)
	}
}

func TestCancelReachesChildren(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.gather?wait=50ms", `{"n":3,"ms":60000}`)
	if r.status != 202 {
		t.Fatalf("got %d %v", r.status, r.body)
	}
	start, loc := time.Now(), r.location
	r = do(t, "DELETE", srv.URL+loc, "")
	if r.status != 200 || r.body["state"] != "cancelled" || time.Since(start) > 5*time.Second {
		t.Fatalf("cancel: %d %v", r.status, r.body)
	}
	if other := do(t, "DELETE", srv.URL+strings.Replace(loc, "/default/", "/seed/", 1), ""); other.status != 404 {
		t.Errorf("cancel through another namespace: %d", other.status)
	}
	if again := do(t, "DELETE", srv.URL+loc, ""); again.status != 200 || again.body["state"] != "cancelled" {
		t.Errorf("cancel is not idempotent: %d %v", again.status, again.body)
	}
}

func TestRetentionCapEvictsOldest(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxFinished: 2})
	var ids []string
	for range 3 {
		ids = append(ids, do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":1}`).body["id"].(string))
	}
	if r := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+ids[0], ""); r.status != 410 {
		t.Errorf("oldest finished invocation not gone beyond the cap: %d", r.status)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+ids[2], ""); r.status != 200 {
		t.Errorf("newest finished invocation not readable: %d", r.status)
	}
}

func TestCatalogAndNamespaces(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "GET", srv.URL+"/v1/ns", "")
	if got, _ := json.Marshal(r.body["namespaces"]); string(got) != `["default","seed"]` {
		t.Errorf("namespaces: %s", got)
	}
	r = do(t, "GET", srv.URL+"/v1/ns/seed/tasks", "")
	if got, _ := json.Marshal(r.body["tasks"]); !strings.Contains(string(got), `{"codec":"json","name":"request_parallel","schema":{"input":{},"output":{"items":{"type":"integer"},"type":"array"}},"servers":1}`) {
		t.Errorf("seed tasks: %s", got)
	}
}

// 300 concurrent one-second sleeps finish together: tasks wait, they don't queue.
func TestManyConcurrentSleeps(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 300 {
		wg.Go(func() {
			r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep", `{"ms":1000,"value":`+strconvItoa(i)+`}`)
			if r.status == 200 && r.body["result"] == json.Number(strconvItoa(i)) {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 300 {
		t.Fatalf("%d of 300 calls succeeded", ok)
	}
	t.Logf("300 concurrent 1 s sleeps took %v", time.Since(start))
}

func strconvItoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// A caller caps the attempts of a task that retries: over REST with
// ?max_attempts=, over the WebSocket with max_attempts.
func TestMaxAttempts(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.flaky?max_attempts=2&wait=20s", `{"fail":5}`)
	if r.body["state"] != "failed" || fmt.Sprint(r.body["attempt"]) != "2" {
		t.Errorf("REST: %s; want failed after attempt 2", r.raw)
	}
	c := wsDial(t, srv)
	wsSend(t, c, `{"type":"call","ref":"f","ns":"default","task":"demo.flaky","input":{"fail":5},"max_attempts":1}`)
	if m, _ := wsUntil(t, c, "f", "result"); m.Invocation.State != "failed" || m.Invocation.Attempt != 1 {
		t.Errorf("WebSocket: %+v; want failed after attempt 1", m.Invocation)
	}
	if r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.flaky?max_attempts=0", `{}`); r.status != 400 {
		t.Errorf("max_attempts=0: %d %s", r.status, r.raw)
	}
}

// Every id a response shows is readable: the children of an invocation,
// with their parent, task and how they ended as the parent reported it;
// an id the gateway never knew is 404 saying so.
func TestChildrenAreReadable(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fib", `{"n":3}`)
	kids, _ := r.body["children"].([]any)
	if r.status != 200 || len(kids) != 2 {
		t.Fatalf("fib(3): %d %s", r.status, r.raw)
	}
	for _, k := range kids {
		c := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+k.(string), "")
		if c.status != 200 || c.body["parent"] != r.body["id"] || c.body["task"] != "demo.fib" || c.body["state"] != "succeeded" {
			t.Errorf("child %s: %d %s", k, c.status, c.raw)
		}
		if other := do(t, "GET", srv.URL+"/v1/ns/seed/invocations/"+k.(string), ""); other.status != 404 {
			t.Errorf("child %s in another namespace: %d %s", k, other.status, other.raw)
		}
	}
	across := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.seed", ``) // awaits seed's request_parallel
	if kids, _ := across.body["children"].([]any); across.status != 200 || len(kids) != 1 {
		t.Fatalf("demo.seed: %d %s", across.status, across.raw)
	} else if c := do(t, "GET", srv.URL+"/v1/ns/seed/invocations/"+kids[0].(string), ""); c.status != 200 || c.body["task"] != "request_parallel" || c.body["state"] != "succeeded" {
		t.Errorf("a child in another namespace, read in its own: %d %s", c.status, c.raw)
	}
	if u := do(t, "GET", srv.URL+"/v1/ns/default/invocations/nosuch", ""); u.status != 404 || !strings.Contains(u.body["detail"].(string), "has not known it") {
		t.Errorf("never known: %d %s", u.status, u.raw)
	}
}

// An input that does not fit the task's schema is refused before anything
// is queued: 400 bad_input, a JSON pointer to each field at fault.
func TestInputsAreChecked(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	for _, tc := range []struct {
		body     string
		pointers []string
	}{
		{``, []string{""}},
		{`null`, []string{""}},
		{`{}`, []string{"/a", "/b"}},
		{`{"a":1,"b":2,"c":3}`, []string{"/c"}},
		{`{"a":"1","b":2.5}`, []string{"/a", "/b"}},
	} {
		r := do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", tc.body)
		var pointers []string
		errs, _ := r.body["errors"].([]any)
		for _, e := range errs {
			pointers = append(pointers, e.(map[string]any)["pointer"].(string))
		}
		if r.status != 400 || r.body["code"] != "bad_input" || !slices.Equal(pointers, tc.pointers) {
			t.Errorf("demo.add %q: %d %s; want bad_input at %q", tc.body, r.status, r.raw, tc.pointers)
		}
	}
	if list := do(t, "GET", srv.URL+"/v1/ns/default/tasks", ""); !strings.Contains(string(list.raw), `"required":["a","b"]`) {
		t.Errorf("the catalog shows no input schema of demo.add: %s", list.raw)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns/default/invocations/"+do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.sleep?wait=0s", `{"ms":1}`).body["id"].(string)+"?wait=5s", ""); r.body["state"] != "succeeded" {
		t.Errorf("an optional field left out: %s", r.raw)
	}
}

// One task of the catalog, with its schemas; and an OpenAPI document of a
// namespace's tasks, their inputs as bodies and outputs as results.
func TestTaskSchemasAndOpenAPI(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	r := do(t, "GET", srv.URL+"/v1/ns/default/tasks/demo.add", "")
	input, _ := json.Marshal(r.body["schema"].(map[string]any)["input"])
	if r.status != 200 || r.body["name"] != "demo.add" || !strings.Contains(string(input), `"required":["a","b"]`) {
		t.Errorf("demo.add: %d %s", r.status, r.raw)
	}
	if r := do(t, "GET", srv.URL+"/v1/ns/default/tasks/demo.ad", ""); r.status != 404 || !strings.Contains(r.body["detail"].(string), "did you mean demo.add") {
		t.Errorf("a misspelled task: %d %s", r.status, r.raw)
	}
	doc := do(t, "GET", srv.URL+"/v1/ns/default/openapi.json", "")
	var d struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]struct {
			Post struct {
				RequestBody struct {
					Content map[string]struct{ Schema map[string]any }
				} `json:"requestBody"`
			}
		}
	}
	if err := json.Unmarshal(doc.raw, &d); err != nil || d.OpenAPI != "3.1.0" {
		t.Fatalf("the document: %v %s", err, doc.raw)
	}
	add := d.Paths["/v1/ns/default/tasks/demo.add"].Post.RequestBody.Content["application/json"].Schema
	if req, _ := json.Marshal(add["required"]); string(req) != `["a","b"]` {
		t.Errorf("demo.add's body in the document: %v", add)
	}
	if _, ok := d.Paths["/v1/ns/default/tasks/demo.fib"]; !ok || len(d.Paths) < 9 {
		t.Errorf("the document's paths: %d", len(d.Paths))
	}
}
