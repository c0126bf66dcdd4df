package gatewayclient_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/gatewaytest"
	"github.com/atasks-go/atasks/wire"
	"github.com/gorilla/websocket"
)

// front serves a gateway's handler on a server of its own, so that a test
// can count its requests and WebSocket upgrades, refuse or require a token
// for upgrades, learn when the gateway accepted a call and cut the
// connections.
type front struct {
	URL      string
	h        http.Handler
	refuse   atomic.Bool   // answer upgrades 404
	accepted chan struct{} // a value per "accepted" message the gateway writes

	mu       sync.Mutex
	token    string // if set, upgrades without "Authorization: Bearer <token>" get 401
	upgrades int
	rest     int        // other requests
	conns    []net.Conn // the upgraded connections
}

// newFront serves h (the shared test gateway if nil) until the test ends.
// Create it before the clients that use it: they close first.
func newFront(t *testing.T, h http.Handler) *front {
	t.Helper()
	if h == nil {
		h = gatewayHandler
	}
	f := &front{h: h, accepted: make(chan struct{}, 1000)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	ws := r.URL.Path == "/v1/ws"
	if ws {
		f.upgrades++
	} else {
		f.rest++
	}
	token := f.token
	f.mu.Unlock()
	switch {
	case !ws:
	case f.refuse.Load():
		http.NotFound(w, r)
		return
	case token != "" && r.Header.Get("Authorization") != "Bearer "+token:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"status":401,"code":"unauthorized","detail":"send a token"}`))
		return
	default:
		w = &tap{ResponseWriter: w, f: f}
	}
	f.h.ServeHTTP(w, r)
}

// require makes upgrades need token.
func (f *front) require(token string) {
	f.mu.Lock()
	f.token = token
	f.mu.Unlock()
}

// counts returns how many upgrades and other requests f got.
func (f *front) counts() (upgrades, rest int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.upgrades, f.rest
}

// cut closes every upgraded connection, as a network failure would.
func (f *front) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// waitAccepted waits until the gateway accepted n more calls.
func (f *front) waitAccepted(t *testing.T, n int) {
	t.Helper()
	for range n {
		recv(t, f.accepted)
	}
}

// settle returns once c has read every message the gateway wrote to it
// before: the result of a call comes after them.
func settle(t *testing.T, c *gatewayclient.Client) {
	t.Helper()
	if _, err := c.Call(context.Background(), "default", "demo.add", map[string]int{"a": 0, "b": 0}); err != nil {
		t.Fatal(err)
	}
}

// tap records the connection an upgrade hijacks.
type tap struct {
	http.ResponseWriter
	f *front
}

func (t *tap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := t.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	tc := &tapConn{Conn: c, f: t.f}
	t.f.mu.Lock()
	t.f.conns = append(t.f.conns, tc)
	t.f.mu.Unlock()
	return tc, rw, nil
}

// tapConn notes the "accepted" messages the gateway writes (unmasked, so
// readable in the raw bytes).
type tapConn struct {
	net.Conn
	f *front
}

func (c *tapConn) Write(b []byte) (int, error) {
	for range bytes.Count(b, []byte(`"type":"accepted"`)) {
		c.f.accepted <- struct{}{}
	}
	return c.Conn.Write(b)
}

// recv receives from ch, or fails t after 10s.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
		panic("unreachable")
	}
}

// outcome is what a call returned.
type outcome struct {
	inv *gatewayclient.Invocation
	err error
}

// callAsync calls the task in a goroutine; the channel gets the outcome.
func callAsync(ctx context.Context, c *gatewayclient.Client, task string, in any, opts ...gatewayclient.CallOption) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		inv, err := c.Call(ctx, "default", task, in, opts...)
		ch <- outcome{inv, err}
	}()
	return ch
}

// wantCounts fails t unless f got upgrades upgrades and rest other requests.
func wantCounts(t *testing.T, f *front, upgrades, rest int) {
	t.Helper()
	if u, r := f.counts(); u != upgrades || r != rest {
		t.Errorf("%d upgrades and %d other requests; want %d and %d", u, r, upgrades, rest)
	}
}

func TestWSCall(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx := context.Background()
	inv, err := c.Call(ctx, "default", "demo.add", map[string]int{"a": 2, "b": 3})
	if err != nil || inv.State != "succeeded" || string(inv.Result) != "5" || inv.ID == "" || inv.FinishedAt == nil {
		t.Fatalf("got %+v, %v", inv, err)
	}
	inv, err = c.Call(ctx, "default", "demo.fib", map[string]int{"n": 10})
	if err != nil || string(inv.Result) != "55" || len(inv.Children) != 2 {
		t.Errorf("fib: got %+v, %v", inv, err)
	}
	raw, err := gatewayclient.CallAs[json.RawMessage](ctx, c, "default", "demo.echo", json.RawMessage(`{"n":[1,2.5]}`))
	if string(raw) != `{"n":[1,2.5]}` || err != nil {
		t.Errorf("echo of raw JSON: got %s, %v", raw, err)
	}
	echo, err := gatewayclient.CallAs[any](ctx, c, "default", "demo.echo", nil)
	if echo != nil || err != nil {
		t.Errorf("echo of nil: got %v, %v", echo, err)
	}
	inv, err = c.Call(ctx, "default", "demo.fail", map[string]any{"code": "busy", "message": "later", "retryable": true})
	if e := wantCode(t, err, "busy"); !e.Retryable || inv.State != "failed" || inv.Error != e {
		t.Errorf("fail: got %+v, %v", inv, err)
	}
	wantCounts(t, f, 1, 0)
}

func TestWSParallel(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	outs := make([]chan outcome, 100)
	for i := range outs {
		outs[i] = make(chan outcome, 1)
		go func() {
			inv, err := c.Call(context.Background(), "default", "demo.sleep", sleep(100*time.Millisecond, i))
			outs[i] <- outcome{inv, err}
		}()
	}
	for i, ch := range outs {
		o := recv(t, ch)
		var n int
		if o.err != nil || o.inv.Decode(&n) != nil || n != i {
			t.Errorf("call %d: got %+v, %v", i, o.inv, o.err)
		}
	}
	wantCounts(t, f, 1, 0)
}

func TestWSCancelContext(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	inv, err := c.Call(ctx, "default", "demo.gather", map[string]int{"n": 3, "ms": 60000})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, wire.ErrCancelled) {
		t.Fatalf("got %v; want cancelled", err)
	}
	if inv == nil || inv.State != "cancelled" || !errors.Is(inv.Err(), wire.ErrCancelled) {
		t.Errorf("got %+v; want the invocation cancelled", inv)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	inv, err = c.Call(ctx, "default", "demo.sleep", sleep(time.Minute, nil), gatewayclient.WithTimeout(time.Hour))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, wire.ErrTimeout) || inv == nil || !inv.State.Final() {
		t.Errorf("deadline: got %+v, %v; want a timeout and the invocation, ended", inv, err)
	}
	inv, err = c.Call(context.Background(), "default", "demo.sleep", sleep(time.Minute, nil), gatewayclient.WithTimeout(100*time.Millisecond))
	if !errors.Is(err, wire.ErrTimeout) || inv.State != "timed_out" {
		t.Errorf("WithTimeout: got %+v, %v", inv, err)
	}
	wantCounts(t, f, 1, 0)
}

func TestWSStart(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx := context.Background()
	hs := make([]*gatewayclient.Handle, 5)
	for i := range hs {
		h, err := c.Start(ctx, "default", "demo.sleep", sleep(200*time.Millisecond, i))
		if err != nil || h.ID == "" || h.NS != "default" {
			t.Fatalf("got %+v, %v", h, err)
		}
		hs[i] = h
	}
	for i, h := range hs {
		inv, err := h.Wait(ctx)
		var n int
		if err != nil || inv.ID != h.ID || inv.Decode(&n) != nil || n != i {
			t.Errorf("handle %d: got %+v, %v", i, inv, err)
		}
	}
	if inv, err := hs[0].Cancel(ctx); err != nil || inv.State != "succeeded" {
		t.Errorf("Cancel when finished: got %+v, %v", inv, err)
	}
	wantCounts(t, f, 1, 0)
}

func TestWSHandleCancel(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(time.Minute, nil))
	if err != nil {
		t.Fatal(err)
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
	wantCounts(t, f, 1, 0)
}

// A call and a started invocation whose connection fails go on at the
// gateway; the client follows them on a new connection.
func TestWSReconnect(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(500*time.Millisecond, "started"))
	if err != nil {
		t.Fatal(err)
	}
	called := callAsync(ctx, c, "demo.sleep", sleep(500*time.Millisecond, "called"))
	f.waitAccepted(t, 2)
	settle(t, c)
	f.cut()
	if o := recv(t, called); o.err != nil || string(o.inv.Result) != `"called"` {
		t.Errorf("Call: got %+v, %v", o.inv, o.err)
	}
	if inv, err := h.Wait(ctx); err != nil || string(inv.Result) != `"started"` {
		t.Errorf("Wait: got %+v, %v", inv, err)
	}
	if sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 1, "b": 1}); sum != 2 || err != nil {
		t.Errorf("after the reconnect: got %d, %v", sum, err)
	}
	wantCounts(t, f, 2, 0)
}

// In auto mode, a call and a started invocation whose connection is lost,
// and cannot be opened again, are followed (and cancelled) over REST.
func TestWSLostToREST(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL)
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(300*time.Millisecond, "started"))
	if err != nil {
		t.Fatal(err)
	}
	long, err := c.Start(ctx, "default", "demo.sleep", sleep(time.Minute, nil))
	if err != nil {
		t.Fatal(err)
	}
	called := callAsync(ctx, c, "demo.sleep", sleep(300*time.Millisecond, "called"))
	f.waitAccepted(t, 3)
	settle(t, c)
	f.refuse.Store(true)
	f.cut()
	if o := recv(t, called); o.err != nil || string(o.inv.Result) != `"called"` {
		t.Errorf("Call: got %+v, %v", o.inv, o.err)
	}
	if inv, err := h.Wait(ctx); err != nil || string(inv.Result) != `"started"` {
		t.Errorf("Wait: got %+v, %v", inv, err)
	}
	if inv, err := long.Cancel(ctx); err != nil || inv.State != "cancelled" {
		t.Errorf("Cancel: got %+v, %v", inv, err)
	}
	if upgrades, rest := f.counts(); upgrades != 2 || rest < 3 {
		t.Errorf("%d upgrades and %d other requests; want 2 (one refused) and long-polls", upgrades, rest)
	}
}

// A gateway that shuts down closes its connections (1001): a call waiting
// on one fails with "unavailable", retryable, saying why.
func TestWSGatewayCloses(t *testing.T) {
	t.Parallel()
	gw := gatewaytest.New(t, gateway.Config{}, nil)
	f := newFront(t, gw.Gateway)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	called := callAsync(context.Background(), c, "demo.sleep", sleep(300*time.Millisecond, nil))
	f.waitAccepted(t, 1)
	gw.Gateway.Close() // closes its WebSockets with 1001
	o := recv(t, called)
	if e := wantCode(t, o.err, "unavailable"); !e.Retryable || !strings.Contains(e.Message, "1001") || o.inv != nil {
		t.Errorf("got %+v, %v; want unavailable after a close with 1001", o.inv, e)
	}
}

func TestWSClose(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	ctx := context.Background()
	h, err := c.Start(ctx, "default", "demo.sleep", sleep(300*time.Millisecond, "goes on"))
	if err != nil {
		t.Fatal(err)
	}
	called := callAsync(ctx, c, "demo.sleep", sleep(300*time.Millisecond, nil))
	f.waitAccepted(t, 2)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if e := wantCode(t, recv(t, called).err, "unavailable"); e.Retryable || !strings.Contains(e.Message, "closed") {
		t.Errorf("Call in flight: got %+v", e)
	}
	_, err = h.Wait(ctx)
	wantCode(t, err, "unavailable")
	_, err = c.Call(ctx, "default", "demo.add", nil)
	wantCode(t, err, "unavailable")
	_, err = c.Namespaces(ctx)
	wantCode(t, err, "unavailable")
	if err := c.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	other, _ := setup(t)
	if inv, err := other.Get(ctx, "default", h.ID, 10*time.Second); err != nil || string(inv.Result) != `"goes on"` {
		t.Errorf("the started invocation after Close: got %+v, %v", inv, err)
	}
}

func TestWSTransports(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	ctx := context.Background()
	add := func(c *gatewayclient.Client) {
		t.Helper()
		if sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 1, "b": 2}); sum != 3 || err != nil {
			t.Errorf("got %d, %v", sum, err)
		}
	}
	add(newClient(t, f.URL)) // auto
	wantCounts(t, f, 1, 0)
	add(newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportREST)))
	wantCounts(t, f, 1, 1)

	f.refuse.Store(true)
	auto := newClient(t, f.URL)
	add(auto) // over REST, after a refused upgrade
	add(auto) // over REST without trying the WebSocket again
	wantCounts(t, f, 2, 3)
	_, err := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS)).Call(ctx, "default", "demo.add", nil)
	var p *gatewayclient.ProblemError
	if e := wantCode(t, err, "http_404"); e.Retryable || !errors.As(err, &p) || p.Status != 404 {
		t.Errorf("ws, refused: got %v", err)
	}
}

func TestWSHeader(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	f.require("s3cret-t0ken-of-16")
	ctx := context.Background()
	c := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	_, err := c.Call(ctx, "default", "demo.add", map[string]int{"a": 1, "b": 2})
	var p *gatewayclient.ProblemError
	if wantCode(t, err, "unauthorized"); !errors.As(err, &p) || p.Status != 401 {
		t.Errorf("without a token: got %v", err)
	}
	c = newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS), gatewayclient.WithHeader("Authorization", "Bearer s3cret-t0ken-of-16"))
	if sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 1, "b": 2}); sum != 3 || err != nil {
		t.Errorf("with a token: got %d, %v", sum, err)
	}
}

// An input over the gateway's frame limit goes over REST in auto mode,
// sparing the connection's other calls; over WebSocket only, it costs the
// connection (1009).
func TestWSLargeInput(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil)
	c := newClient(t, f.URL)
	ctx := context.Background()
	slow := callAsync(ctx, c, "demo.sleep", sleep(300*time.Millisecond, "spared"))
	f.waitAccepted(t, 1)
	big := strings.Repeat("é", 600_000) // 1.2 MB
	_, err := c.Call(ctx, "default", "demo.echo", big)
	var p *gatewayclient.ProblemError
	if wantCode(t, err, "body_too_large"); !errors.As(err, &p) || p.Status != 413 {
		t.Errorf("auto: got %v", err)
	}
	if o := recv(t, slow); o.err != nil || string(o.inv.Result) != `"spared"` {
		t.Errorf("the other call: got %+v, %v", o.inv, o.err)
	}
	wantCounts(t, f, 1, 1)
	ws := newClient(t, f.URL, gatewayclient.WithTransport(gatewayclient.TransportWS))
	_, err = ws.Call(ctx, "default", "demo.echo", big)
	if e := wantCode(t, err, "unavailable"); !e.Retryable || !strings.Contains(e.Message, "1009") {
		t.Errorf("ws: got %v", err)
	}
}

// The same failure fails the same way over WebSocket and REST: the same
// code, message, details, retryable and invocation state.
func TestWSSameErrors(t *testing.T) {
	t.Parallel()
	key := gatewayclient.WithIdempotencyKey("same-errors-" + t.Name())
	slow := sleep(10*time.Second, nil)
	type call func(ctx context.Context, c *gatewayclient.Client) (*gatewayclient.Invocation, error)
	invoke := func(ns, task string, in any, opts ...gatewayclient.CallOption) call {
		return func(ctx context.Context, c *gatewayclient.Client) (*gatewayclient.Invocation, error) {
			return c.Call(ctx, ns, task, in, opts...)
		}
	}
	deadline := func(d time.Duration, f call) call {
		return func(ctx context.Context, c *gatewayclient.Client) (*gatewayclient.Invocation, error) {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return f(ctx, c)
		}
	}
	cancelAfter := func(d time.Duration, f call) call { // at once if d is 0
		return func(ctx context.Context, c *gatewayclient.Client) (*gatewayclient.Invocation, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if d == 0 {
				cancel()
			}
			defer time.AfterFunc(d, cancel).Stop()
			return f(ctx, c)
		}
	}
	failures := []struct {
		code  string
		call  call
		racy  bool // the outcome's message and state depend on timing: compare codes only
		state wire.State
	}{
		{"task_not_found", invoke("default", "demo.nope", map[string]any{}), false, ""},
		{"namespace_not_found", invoke("nope", "demo.add", map[string]int{"a": 1, "b": 1}), false, ""},
		{"bad_input", invoke("default", "demo.add", "not an object"), false, ""}, // refused before it is queued
		{"busy", invoke("default", "demo.fail", map[string]any{"code": "busy", "message": "later", "details": map[string]any{"n": []int{1, 2}}, "retryable": true}), false, "failed"},
		{"panic", invoke("default", "demo.panic", nil), false, "failed"},
		{"timeout", invoke("default", "demo.sleep", slow, gatewayclient.WithTimeout(100*time.Millisecond)), false, "timed_out"},
		{"timeout", deadline(150*time.Millisecond, invoke("default", "demo.sleep", slow)), true, ""},
		{"cancelled", cancelAfter(150*time.Millisecond, invoke("default", "demo.sleep", slow)), false, "cancelled"},
		{"cancelled", cancelAfter(0, invoke("default", "demo.sleep", slow)), false, ""},
		{"bad_request", invoke("default", "demo.add", nil, gatewayclient.WithTimeout(-time.Second)), false, ""},
		{"bad_request", invoke("default", "demo.add", nil, gatewayclient.WithDelay(-time.Second)), false, ""},
		{"bad_request", invoke("default", "demo.add", nil, gatewayclient.WithDelay(5*time.Second), gatewayclient.WithTimeout(time.Second)), false, ""},
		{"bad_request", invoke("default", "demo.add", nil, gatewayclient.WithIdempotencyKey(strings.Repeat("k", 256))), false, ""},
		{"bad_request", invoke("default", "demo.add", nil, gatewayclient.WithIdempotencyKey("clé")), false, ""},
		{"bad_input", invoke("default", "demo.echo", func() {}), false, ""},
		{"idempotency_conflict", invoke("default", "demo.add", map[string]int{"a": 1, "b": 2}, key), false, ""},
		{"bad_output", func(ctx context.Context, c *gatewayclient.Client) (*gatewayclient.Invocation, error) {
			_, err := gatewayclient.CallAs[string](ctx, c, "default", "demo.add", map[string]int{"a": 1, "b": 1})
			return nil, err
		}, false, ""},
	}
	type shape struct {
		Code, Message, Details string
		Retryable              bool
		State                  wire.State
	}
	run := func(tr gatewayclient.Transport) []shape {
		c := newClient(t, gatewayURL, gatewayclient.WithTransport(tr))
		if _, err := c.Call(context.Background(), "default", "demo.add", map[string]int{"a": 1, "b": 1}, key); err != nil {
			t.Fatal(err)
		}
		shapes := make([]shape, len(failures))
		var wg sync.WaitGroup
		for i, fl := range failures {
			wg.Go(func() {
				inv, err := fl.call(context.Background(), c)
				var e *wire.Error
				if !errors.As(err, &e) {
					t.Errorf("%s, failure %d: got %v (%T); want a *wire.Error", tr, i, err, err)
					return
				}
				shapes[i] = shape{Code: e.Code, Message: e.Message, Details: string(e.Details), Retryable: e.Retryable}
				if inv != nil {
					shapes[i].State = inv.State
				}
			})
		}
		wg.Wait()
		return shapes
	}
	ws, rest := run(gatewayclient.TransportWS), run(gatewayclient.TransportREST)
	for i, fl := range failures {
		w, r := ws[i], rest[i]
		if fl.racy {
			w.Message, r.Message, w.State, r.State = "", "", "", ""
		}
		if w != r || w.Code != fl.code || (!fl.racy && w.State != fl.state) {
			t.Errorf("failure %d (%s): over WebSocket %+v, over REST %+v", i, fl.code, w, r)
		}
	}
	if want := (shape{"busy", "later", `{"n":[1,2]}`, true, "failed"}); ws[3] != want {
		t.Errorf("got %+v; want %+v", ws[3], want)
	}
}

// fakeGateway serves /v1/ws with serve, once per connection, in place of a
// gateway until the test ends; conns counts the connections.
func fakeGateway(t *testing.T, serve func(ws *websocket.Conn)) (url string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	var up websocket.Upgrader
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		conns.Add(1)
		serve(ws)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, conns
}

// readFrame reads a client frame, or nil if the connection ended.
func readFrame(ws *websocket.Conn) map[string]any {
	var f map[string]any
	if ws.ReadJSON(&f) != nil {
		return nil
	}
	return f
}

// writeAll writes the messages, REF standing for ref.
func writeAll(ws *websocket.Conn, ref any, msgs ...string) {
	for _, m := range msgs {
		_ = ws.WriteMessage(websocket.TextMessage, []byte(strings.ReplaceAll(m, "REF", ref.(string))))
	}
}

// The frames the client sends, and what it does with the gateway's
// messages: an error about a ref that was answered already (about a
// cancel), unknown types and refs and text that is not JSON change nothing.
func TestWSFrames(t *testing.T) {
	t.Parallel()
	frames := make(chan map[string]any, 1)
	url, _ := fakeGateway(t, func(ws *websocket.Conn) {
		f := readFrame(ws)
		frames <- f
		writeAll(ws, f["ref"],
			`{"type":"accepted","ref":"REF","id":"inv1","ns":"default","task":"demo.add"}`,
			`{"type":"state","ref":"REF","id":"inv1","state":"running","worker":"w"}`,
			`{"type":"error","ref":"REF","error":{"code":"forbidden","message":"about a cancel"}}`,
			`{"type":"hello","ref":"REF"}`,
			`not JSON`,
			`{"type":"result","ref":"other","invocation":{"id":"x","state":"failed"}}`,
			`{"type":"result","ref":"REF","invocation":{"id":"inv1","ns":"default","task":"demo.add","state":"succeeded","result":7}}`)
		readFrame(ws) // until the client closes
	})
	c := newClient(t, url, gatewayclient.WithTransport(gatewayclient.TransportWS))
	inv, err := c.Call(context.Background(), "default", "demo.add", map[string]int{"a": 1},
		gatewayclient.WithTimeout(1500*time.Millisecond), gatewayclient.WithIdempotencyKey("k-1"))
	if err != nil || inv.ID != "inv1" || string(inv.Result) != "7" {
		t.Errorf("got %+v, %v", inv, err)
	}
	f := recv(t, frames)
	got, _ := json.Marshal(f)
	delete(f, "ref")
	want := `{"detach":true,"idempotency_key":"k-1","input":{"a":1},"ns":"default","task":"demo.add","timeout":"1.5s","type":"call"}`
	if b, _ := json.Marshal(f); string(b) != want {
		t.Errorf("sent %s; want %s and a ref", got, want)
	}
}

// A call lost before the gateway accepted it may or may not have started:
// it fails with "unavailable", retryable. One lost after is followed again
// on a new connection, up to 3 times in a row.
func TestWSLost(t *testing.T) {
	t.Parallel()
	subscribed := make(chan map[string]any, 10)
	for _, accept := range []bool{false, true} {
		url, conns := fakeGateway(t, func(ws *websocket.Conn) {
			f := readFrame(ws)
			switch {
			case f["type"] == "subscribe":
				subscribed <- f
			case accept:
				writeAll(ws, f["ref"], `{"type":"accepted","ref":"REF","id":"inv1","ns":"default","task":"demo.add"}`)
			}
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "boom"), time.Now().Add(time.Second))
		})
		c := newClient(t, url, gatewayclient.WithTransport(gatewayclient.TransportWS))
		inv, err := c.Call(context.Background(), "default", "demo.add", nil)
		if e := wantCode(t, err, "unavailable"); !e.Retryable || !strings.Contains(e.Message, "1011") || inv != nil {
			t.Errorf("accepted %t: got %+v, %+v", accept, inv, e)
		}
		if want := map[bool]int32{false: 1, true: 4}[accept]; conns.Load() != want {
			t.Errorf("accepted %t: %d connections; want %d", accept, conns.Load(), want)
		}
	}
	for range 3 {
		if f := recv(t, subscribed); f["ns"] != "default" || f["id"] != "inv1" || f["ref"] == "" {
			t.Errorf("sent %v; want a subscribe to inv1", f)
		}
	}
}

// Over TLS, the WebSocket trusts what the REST requests trust (the HTTP
// client's transport) and upgrades over HTTP/1.1 where the server offers h2.
func TestWSTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(gatewayHandler)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, gatewayclient.WithHTTPClient(srv.Client()), gatewayclient.WithTransport(gatewayclient.TransportWS))
	if _, err := c.Namespaces(context.Background()); err != nil { // the transport sets itself up for h2
		t.Fatal(err)
	}
	if sum, err := gatewayclient.CallAs[int](context.Background(), c, "default", "demo.add", map[string]int{"a": 2, "b": 3}); sum != 5 || err != nil {
		t.Errorf("got %d, %v", sum, err)
	}
}

// Whatever the gateway sends before a call's result, the call ends, with
// its outcome or a *wire.Error.
func FuzzWSMessages(f *testing.F) {
	for _, seed := range []string{
		`{"type":"result","ref":"REF"}`,
		`{"type":"result","ref":"REF","invocation":{}}`,
		`{"type":"result","ref":"REF","invocation":{"id":7}}`,
		`{"type":"error","ref":"REF"}`,
		`{"type":"error","ref":"REF","error":{"code":"x","details":"not JSON?"}}`,
		`{"type":"accepted","ref":"REF"}`,
		`{"type":"state","ref":"REF","state":"running"}`,
		`[1,2]`,
		`{"type":"accepted","ref":"REF","id":"a"}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		url, _ := fakeGateway(t, func(ws *websocket.Conn) {
			fr := readFrame(ws)
			writeAll(ws, fr["ref"], msg, `{"type":"result","ref":"REF","invocation":{"id":"i","ns":"default","state":"succeeded","result":1}}`)
			readFrame(ws)
		})
		c := newClient(t, url, gatewayclient.WithTransport(gatewayclient.TransportWS))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		inv, err := c.Call(ctx, "default", "demo.add", nil)
		var e *wire.Error
		if err != nil && !errors.As(err, &e) || err == nil && string(inv.Result) != "1" || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("after %q: got %+v, %v", msg, inv, err)
		}
	})
}
