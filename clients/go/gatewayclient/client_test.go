package gatewayclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/wire"
)

// recorder is an http.RoundTripper that notes every request it sends and
// calls onPost, if set, before it sends a POST.
type recorder struct {
	mu     sync.Mutex
	reqs   []*http.Request
	onPost func()
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	if req.Method == http.MethodPost && r.onPost != nil {
		r.onPost()
	}
	return http.DefaultTransport.RoundTrip(req)
}

// sent lists the requests sent so far as "METHOD /path?query".
func (r *recorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, req := range r.reqs {
		out = append(out, req.Method+" "+req.URL.RequestURI())
	}
	return out
}

// setup returns a client of the test gateway whose requests rec records,
// over REST unless opts say otherwise, closed when the test ends.
func setup(t *testing.T, opts ...gatewayclient.Option) (*gatewayclient.Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts = append([]gatewayclient.Option{gatewayclient.WithHTTPClient(&http.Client{Transport: rec}),
		gatewayclient.WithTransport(gatewayclient.TransportREST)}, opts...)
	return newClient(t, gatewayURL, opts...), rec
}

// newClient returns a client of the gateway at url, closed when the test
// ends.
func newClient(t *testing.T, url string, opts ...gatewayclient.Option) *gatewayclient.Client {
	t.Helper()
	c, err := gatewayclient.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sleep is the input of demo.sleep.
func sleep(d time.Duration, value any) map[string]any {
	return map[string]any{"ms": d.Milliseconds(), "value": value}
}

// wantCode fails t unless err is a *wire.Error with code.
func wantCode(t *testing.T, err error, code string) *wire.Error {
	t.Helper()
	var e *wire.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got error %v (%T); want code %q", err, err, code)
	}
	return e
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "127.0.0.1:8080", "ftp://host", "http://", "http://host/%zz"} {
		if _, err := gatewayclient.New(base); err == nil {
			t.Errorf("New(%q): no error", base)
		}
	}
	if _, err := gatewayclient.New(gatewayURL, gatewayclient.WithPollWait(0)); err == nil {
		t.Error("a poll wait of 0: no error")
	}
	if _, err := gatewayclient.New(gatewayURL, gatewayclient.WithTransport("pigeon")); err == nil {
		t.Error("transport pigeon: no error")
	}
	if _, err := gatewayclient.New(gatewayURL + "/"); err != nil {
		t.Error(err)
	}
}

func TestCall(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	ctx := context.Background()
	inv, err := c.Call(ctx, "default", "demo.add", map[string]int{"a": 2, "b": 3})
	if err != nil || inv.State != "succeeded" || string(inv.Result) != "5" || inv.ID == "" || inv.FinishedAt == nil {
		t.Fatalf("got %+v, %v", inv, err)
	}
	if got := rec.sent(); len(got) != 1 || got[0] != "POST /v1/ns/default/tasks/demo.add?wait=1s" {
		t.Errorf("sent %q; want one POST waiting 1s", got)
	}
	sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 40, "b": 2})
	if sum != 42 || err != nil {
		t.Errorf("CallAs: got %d, %v", sum, err)
	}
	echo, err := gatewayclient.CallAs[any](ctx, c, "default", "demo.echo", nil)
	if echo != nil || err != nil {
		t.Errorf("echo of nil: got %v, %v", echo, err)
	}
	raw, err := gatewayclient.CallAs[json.RawMessage](ctx, c, "default", "demo.echo", json.RawMessage(`{"n":[1,2.5]}`))
	if string(raw) != `{"n":[1,2.5]}` || err != nil {
		t.Errorf("echo of raw JSON: got %s, %v", raw, err)
	}
	_, err = gatewayclient.CallAs[string](ctx, c, "default", "demo.add", map[string]int{"a": 1, "b": 1})
	wantCode(t, err, "bad_output")
	_, err = c.Call(ctx, "default", "demo.echo", func() {})
	wantCode(t, err, "bad_input")
}

func TestTaskErrors(t *testing.T) {
	t.Parallel()
	c, _ := setup(t)
	in := map[string]any{"code": "insufficient_funds", "message": "balance is 100", "details": map[string]any{"balance": 100}, "retryable": true}
	inv, err := c.Call(context.Background(), "default", "demo.fail", in)
	e := wantCode(t, err, "insufficient_funds")
	if e.Message != "balance is 100" || string(e.Details) != `{"balance":100}` || !e.Retryable {
		t.Errorf("got %+v", e)
	}
	if !errors.Is(err, &wire.Error{Code: "insufficient_funds"}) || inv == nil || inv.State != "failed" || inv.Error != e {
		t.Errorf("got %+v, %v", inv, err)
	}
	_, err = c.Call(context.Background(), "default", "demo.panic", nil)
	if !errors.Is(err, wire.ErrPanic) {
		t.Errorf("panic: got %v", err)
	}
	_, err = c.Call(context.Background(), "default", "demo.add", "not an object")
	if !errors.Is(err, wire.ErrBadInput) {
		t.Errorf("bad input: got %v", err)
	}
}

func TestProblems(t *testing.T) {
	t.Parallel()
	c, _ := setup(t)
	ctx := context.Background()
	_, callErr := c.Call(ctx, "default", "demo.nope", nil)
	_, nsErr := c.Call(ctx, "nope", "demo.add", nil)
	_, getErr := c.Get(ctx, "default", "no-such-id", 0)
	_, cancelErr := c.Cancel(ctx, "default", "no-such-id")
	_, tasksErr := c.Tasks(ctx, "nope")
	_, badErr := c.Call(ctx, "default", "demo.echo", strings.Repeat("x", 2<<20))
	for _, tc := range []struct {
		err    error
		is     error
		status int
		code   string
	}{
		{callErr, wire.ErrTaskNotFound, 404, "task_not_found"},
		{nsErr, wire.ErrNamespaceNotFound, 404, "namespace_not_found"},
		{getErr, nil, 404, "invocation_not_found"},
		{cancelErr, nil, 404, "invocation_not_found"},
		{tasksErr, wire.ErrNamespaceNotFound, 404, "namespace_not_found"},
		{badErr, nil, 413, "body_too_large"},
	} {
		var p *gatewayclient.ProblemError
		e := wantCode(t, tc.err, tc.code)
		if !errors.As(tc.err, &p) || p.Status != tc.status || p.Err != e || e.Message == "" || e.Retryable {
			t.Errorf("%v: want a ProblemError with status %d and a message", tc.err, tc.status)
		}
		if tc.is != nil && !errors.Is(tc.err, tc.is) {
			t.Errorf("%v: want errors.Is %v", tc.err, tc.is)
		}
	}
}

func TestNotTheGateway(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ns" {
			_, _ = w.Write([]byte("<html>hello</html>"))
			return
		}
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL)
	_, err := c.Namespaces(context.Background())
	wantCode(t, err, "bad_response")
	_, err = c.Call(context.Background(), "default", "demo.add", nil)
	var p *gatewayclient.ProblemError
	if e := wantCode(t, err, "http_502"); !e.Retryable || !errors.As(err, &p) || p.Status != 502 {
		t.Errorf("got %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tr := range []gatewayclient.Transport{gatewayclient.TransportAuto, gatewayclient.TransportWS, gatewayclient.TransportREST} {
		c := newClient(t, "http://"+addr, gatewayclient.WithTransport(tr))
		_, err = c.Call(context.Background(), "default", "demo.add", nil)
		if e := wantCode(t, err, "unavailable"); !e.Retryable || !strings.Contains(e.Message, "refused") {
			t.Errorf("%s: got %+v", tr, e)
		}
		if !errors.Is(err, wire.ErrUnavailable) {
			t.Errorf("%s: %v: want errors.Is ErrUnavailable", tr, err)
		}
	}
}

func TestWaitThenLongPoll(t *testing.T) {
	t.Parallel()
	c, rec := setup(t, gatewayclient.WithWait(50*time.Millisecond), gatewayclient.WithPollWait(100*time.Millisecond))
	out, err := gatewayclient.CallAs[string](context.Background(), c, "default", "demo.sleep", sleep(400*time.Millisecond, "late"))
	if out != "late" || err != nil {
		t.Fatalf("got %q, %v", out, err)
	}
	sent := rec.sent()
	if !strings.HasSuffix(sent[0], "?wait=50ms") || len(sent) < 3 {
		t.Fatalf("sent %q; want a POST waiting 50ms, then long-polls", sent)
	}
	for _, s := range sent[1:] {
		if !strings.HasPrefix(s, "GET /v1/ns/default/invocations/") || !strings.HasSuffix(s, "?wait=100ms") {
			t.Errorf("sent %q; want long-polls of 100ms", s)
		}
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	inv, err := c.Call(context.Background(), "default", "demo.sleep", sleep(time.Minute, nil), gatewayclient.WithTimeout(100*time.Millisecond))
	if !errors.Is(err, wire.ErrTimeout) || inv.State != "timed_out" {
		t.Fatalf("got %+v, %v", inv, err)
	}
	if sent := rec.sent(); !strings.Contains(sent[0], "timeout=100ms") {
		t.Errorf("sent %q; want ?timeout=100ms", sent)
	}
}

func TestContextDeadline(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	inv, err := c.Call(ctx, "default", "demo.sleep", sleep(time.Minute, nil), gatewayclient.WithTimeout(time.Hour))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, wire.ErrTimeout) {
		t.Fatalf("got %v; want a timeout", err)
	}
	if inv == nil || !inv.State.Final() {
		t.Errorf("got %+v; want the invocation, ended", inv)
	}
	if sent := rec.sent(); !regexp.MustCompile(`timeout=(2[0-9][0-9]|300)(\.[0-9]+)?ms`).MatchString(sent[0]) {
		t.Errorf("sent %q; want the context's deadline as ?timeout=", sent)
	}
}

func TestCancelContext(t *testing.T) {
	t.Parallel()
	for _, wait := range []time.Duration{0, 500 * time.Millisecond} { // cancelled while long-polling, while posting
		c, rec := setup(t, gatewayclient.WithWait(wait))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		inv, err := c.Call(ctx, "default", "demo.gather", map[string]int{"n": 3, "ms": 60000})
		if !errors.Is(err, context.Canceled) || !errors.Is(err, wire.ErrCancelled) {
			t.Fatalf("wait %v: got %v; want cancelled", wait, err)
		}
		if inv == nil || inv.State != "cancelled" {
			t.Errorf("wait %v: got %+v; want the invocation cancelled", wait, inv)
		}
		if sent := rec.sent(); !strings.HasPrefix(sent[len(sent)-1], "DELETE ") {
			t.Errorf("wait %v: sent %q; want a DELETE last", wait, sent)
		}
	}
}

func TestCancelWhileStarting(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	rec.onPost = cancel
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(time.Minute, nil))
	if h != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, %v; want cancelled", h, err)
	}
	sent := rec.sent()
	if len(sent) != 2 || !strings.HasPrefix(sent[1], "DELETE ") {
		t.Fatalf("sent %q; want the POST, then a DELETE", sent)
	}
	id := strings.TrimPrefix(sent[1], "DELETE /v1/ns/default/invocations/")
	if inv, err := c.Get(context.Background(), "default", id, 0); err != nil || inv.State != "cancelled" {
		t.Errorf("got %+v, %v; want it cancelled", inv, err)
	}
}

func TestCancelledBeforeCall(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	inv, err := c.Call(ctx, "default", "demo.add", nil)
	if inv != nil || !errors.Is(err, context.Canceled) || len(rec.sent()) != 0 {
		t.Errorf("got %v, %v after sending %q; want nothing sent", inv, err, rec.sent())
	}
	_, err = c.Start(ctx, "default", "demo.add", nil)
	wantCode(t, err, "cancelled")
}

func TestStart(t *testing.T) {
	t.Parallel()
	c, rec := setup(t)
	ctx := context.Background()
	hs := make([]*gatewayclient.Handle, 5)
	for i := range hs {
		h, err := c.Start(ctx, "default", "demo.sleep", sleep(200*time.Millisecond, i))
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	if sent := rec.sent(); !strings.HasSuffix(sent[0], "?wait=0s") {
		t.Errorf("sent %q; want a POST that does not wait", sent)
	}
	for i, h := range hs {
		inv, err := h.Wait(ctx)
		var n int
		if err != nil || inv.ID != h.ID || inv.Decode(&n) != nil || n != i {
			t.Errorf("handle %d: got %+v, %v", i, inv, err)
		}
	}
}

func TestHandleCancel(t *testing.T) {
	t.Parallel()
	c, _ := setup(t)
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	if inv, err := c.Get(ctx, h.NS, h.ID, 0); err != nil || inv.State.Final() {
		t.Fatalf("Get: got %+v, %v; want it in flight", inv, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if inv, err := h.Wait(short); inv != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: got %+v, %v; want it to stop waiting", inv, err)
	}
	inv, err := h.Cancel(ctx)
	if err != nil || inv.State != "cancelled" || !errors.Is(inv.Err(), wire.ErrCancelled) {
		t.Fatalf("Cancel: got %+v, %v", inv, err)
	}
	if inv, err := h.Wait(ctx); !errors.Is(err, wire.ErrCancelled) || inv.State != "cancelled" {
		t.Errorf("Wait after Cancel: got %+v, %v", inv, err)
	}
	if inv, err := h.Cancel(ctx); err != nil || inv.State != "cancelled" {
		t.Errorf("Cancel again: got %+v, %v", inv, err)
	}
}

func TestGetWait(t *testing.T) {
	t.Parallel()
	c, _ := setup(t)
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(100*time.Millisecond, "v"))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := c.Get(ctx, "default", h.ID, 10*time.Second)
	if err != nil || inv.State != "succeeded" || string(inv.Result) != `"v"` || inv.Err() != nil {
		t.Errorf("got %+v, %v", inv, err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	c, _ := setup(t)
	ctx := context.Background()
	key := gatewayclient.WithIdempotencyKey("gatewayclient-" + t.Name())
	first, err := c.Call(ctx, "default", "demo.add", map[string]int{"a": 1, "b": 2}, key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Call(ctx, "default", "demo.add", map[string]int{"b": 2, "a": 1}, key)
	if err != nil || again.ID != first.ID {
		t.Errorf("got %+v, %v; want invocation %s again", again, err, first.ID)
	}
	_, err = c.Call(ctx, "default", "demo.add", map[string]int{"a": 2, "b": 2}, key)
	if e := wantCode(t, err, "idempotency_conflict"); e.Retryable {
		t.Errorf("got %+v", e)
	}
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	c, rec := setup(t, gatewayclient.WithHeader("Authorization", "Bearer t"))
	ctx := context.Background()
	nss, err := c.Namespaces(ctx)
	if err != nil || !slices.Equal(nss, []string{"default", "seed"}) {
		t.Errorf("Namespaces: got %q, %v", nss, err)
	}
	tasks, err := c.Tasks(ctx, "seed")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("Tasks: got %v, %v", tasks, err)
	}
	i := slices.IndexFunc(tasks, func(ti gatewayclient.TaskInfo) bool { return ti.Name == "task_three" })
	if i < 0 || tasks[i].Servers != 1 || tasks[i].Codec != "json" {
		t.Errorf("Tasks: got %+v; want task_three, served once, json", tasks)
	}
	for _, req := range rec.reqs {
		if req.Header.Get("Authorization") != "Bearer t" {
			t.Errorf("%s %s: no Authorization header", req.Method, req.URL)
		}
	}
}
