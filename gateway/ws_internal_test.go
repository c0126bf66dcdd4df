package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/gorilla/websocket"
)

// wsSetup runs a gateway with the demo tasks whose WebSocket handler tune
// may adjust; listen, if set, wraps the server's listener.
func wsSetup(t *testing.T, cfg Config, tune func(*wsHandler), listen func(net.Listener) net.Listener) (*Gateway, *httptest.Server) {
	t.Helper()
	nss, err := demo.Namespaces(nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.Client = client
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newWSHandler(g)
	if tune != nil {
		tune(h)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/ws", g.guard(h)) // the guard admits the caller
	mux.Handle("/", g)
	srv := httptest.NewUnstartedServer(mux)
	if listen != nil {
		srv.Listener = listen(srv.Listener)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := worker.Stop(ctx); err != nil {
			t.Error(err)
		}
		if err := client.Stop(ctx); err != nil {
			t.Error(err)
		}
		g.Close()
	})
	return g, srv
}

// dialWS connects to srv's WebSocket; the test closes it when it ends.
func dialWS(t *testing.T, srv *httptest.Server) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callWS sends a call of task and returns the invocation id its accepted
// message names.
func callWS(t *testing.T, c *websocket.Conn, ref, task, input string) string {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"call","ref":"`+ref+`","ns":"default","task":"`+task+`","input":`+input+`}`)); err != nil {
		t.Fatal(err)
	}
	return untilWS(t, c, ref, "accepted").ID
}

// untilWS reads messages until one about ref has type typ.
func untilWS(t *testing.T, c *websocket.Conn, ref, typ string) wsMessage {
	t.Helper()
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMessage
		if err := c.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Ref == ref && m.Type == typ:
			return m
		case m.Ref == ref && (m.Type == "result" || m.Type == "error"):
			t.Fatalf("ref %s: %+v", ref, m)
		}
	}
}

// closeCode reads c until it ends and returns the close code it got.
func closeCode(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		var closed *websocket.CloseError
		switch {
		case errors.As(err, &closed):
			return closed.Code
		case err != nil:
			t.Fatalf("the connection ended without a close frame: %v", err)
		}
	}
}

// awaitState waits up to 10 s for invocation id to be final and returns its state.
func awaitState(g *Gateway, id string) atasks.State {
	inv, _ := g.await(context.Background(), id, 10*time.Second)
	return inv.State
}

// A client that answers pings stays; one that does not is closed after
// pongWait, and its call is cancelled.
func TestWSKeepalive(t *testing.T) {
	t.Parallel()
	g, srv := wsSetup(t, Config{}, func(h *wsHandler) { h.pingEvery, h.pongWait = 50*time.Millisecond, 500*time.Millisecond }, nil)
	alive := dialWS(t, srv)
	aliveCall := callWS(t, alive, "a", "demo.sleep", `{"ms":60000}`)
	pinged := make(chan struct{}, 1)
	alive.SetPingHandler(func(data string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return alive.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	reading := make(chan error, 1)
	go func() { // reads, and so answers pings, until the test closes alive
		_ = alive.SetReadDeadline(time.Time{})
		for {
			if _, _, err := alive.ReadMessage(); err != nil {
				reading <- err
				return
			}
		}
	}()

	silent := dialWS(t, srv)
	silentCall := callWS(t, silent, "s", "demo.sleep", `{"ms":60000}`) // then never reads
	if state := awaitState(g, silentCall); state != "cancelled" {
		t.Errorf("the silent client's call: %s", state)
	}
	select {
	case <-pinged:
	case <-time.After(10 * time.Second):
		t.Error("no ping came")
	}
	if inv, _, _ := g.store.get(aliveCall); inv.State != "running" {
		t.Errorf("the live client's call: %s", inv.State)
	}
	alive.Close()
	<-reading
	if state := awaitState(g, aliveCall); state != "cancelled" {
		t.Errorf("the live client's call after it closed: %s", state)
	}
}

// Close ends every connection with 1001 at once and leaves its calls running.
func TestWSGatewayClose(t *testing.T) {
	t.Parallel()
	g, srv := wsSetup(t, Config{}, nil, nil)
	c := dialWS(t, srv)
	id := callWS(t, c, "1", "demo.sleep", `{"ms":60000}`)
	closed := make(chan struct{})
	go func() { defer close(closed); g.Close() }()
	if code := closeCode(t, c); code != websocket.CloseGoingAway {
		t.Errorf("closed with %d; want %d", code, websocket.CloseGoingAway)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if inv, _, _ := g.store.get(id); inv.State != "running" && inv.State != "queued" {
		t.Errorf("the call: %s", inv.State)
	}
	g.store.cancel("default", id, errDeleted) // for the worker to stop at once
	_, res, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/ws", nil)
	if res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a connection after Close: %v %v", res, err)
	}
}

// A subscription to an invocation the gateway does not know is answered
// at once: with DurableReplies, retryable, since one started before a
// restart becomes known when its outcome arrives; and then it is readable.
func TestWSSubscribeUnknown(t *testing.T) {
	t.Parallel()
	g, srv := wsSetup(t, Config{DurableReplies: true}, nil, nil)
	c := dialWS(t, srv)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","ref":"s","ns":"default","id":"earlier"}`)); err != nil {
		t.Fatal(err)
	}
	if m := untilWS(t, c, "s", "error"); m.Error.Code != codeInvocationNotFound || !m.Error.Retryable {
		t.Errorf("unknown id: %+v", m.Error)
	}
	g.Adopt(atasks.Outcome{ID: "earlier", NS: "default", Task: "demo.fail", State: "failed", Err: &atasks.Error{Code: "c", Message: "m"}})
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","ref":"s","ns":"default","id":"earlier"}`)); err != nil {
		t.Fatal(err)
	}
	if m := untilWS(t, c, "s", "result"); m.Invocation.State != "failed" || m.Invocation.Error.Code != "c" {
		t.Errorf("got %+v", m.Invocation)
	}
}

// smallBuffers makes the kernel buffer little of what the server sends,
// so that a client that does not read fills the gateway's buffer soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}

// A client that does not read is closed with 1008 once its outgoing buffer
// is full, and its calls are cancelled; other connections are served.
func TestWSSlowReader(t *testing.T) {
	t.Parallel()
	g, srv := wsSetup(t, Config{}, nil, func(l net.Listener) net.Listener { return smallBuffers{l} })
	slow := dialWS(t, srv)
	sentinel := callWS(t, slow, "sentinel", "demo.sleep", `{"ms":60000}`)
	payload := `"` + strings.Repeat("x", 2048) + `"`
	for i := range 300 { // about 900 messages, never read
		_ = slow.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if slow.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"call","ref":"%d","ns":"default","task":"demo.echo","input":%s}`, i, payload)) != nil {
			break // closed already
		}
	}
	if state := awaitState(g, sentinel); state != "cancelled" {
		t.Fatalf("the slow connection's call: %s", state)
	}
	other := dialWS(t, srv)
	callWS(t, other, "1", "demo.add", `{"a":1,"b":2}`)
	if m := untilWS(t, other, "1", "result"); string(m.Invocation.Result) != "3" {
		t.Errorf("another connection: %+v", m.Invocation)
	}
	// Reading at last, the slow client finds the close frame after what was sent.
	if code := closeCode(t, slow); code != websocket.ClosePolicyViolation {
		t.Errorf("closed with %d; want %d", code, websocket.ClosePolicyViolation)
	}
}

func TestDecodeFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		frame string
		want  clientMsg
		code  string
	}{
		{`{"type":"call","ref":"1","ns":"default","task":"demo.add","input":{"a":1},"timeout":"1.5s","idempotency_key":"k","detach":true}`,
			clientMsg{Type: typeCall, Ref: "1", NS: "default", Task: "demo.add", Input: json.RawMessage(`{"a":1}`), Timeout: 1500 * time.Millisecond, IdempotencyKey: "k", Detach: true}, ""},
		{` {"type":"call","ref":"1","ns":"n","task":"t","input":null,"extra":[1]} `, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t", Input: json.RawMessage("null")}, ""},
		{`{"type":"call","ref":"1","ns":"n","task":"t","input":18446744073709551616}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t", Input: json.RawMessage("18446744073709551616")}, ""},
		{`{"type":"cancel","ref":"1"}`, clientMsg{Type: typeCancel, Ref: "1"}, ""},
		{`{"type":"cancel","ns":"n","id":"x"}`, clientMsg{Type: typeCancel, NS: "n", ID: "x"}, ""},
		{`{"type":"subscribe","ref":"1","ns":"n","id":"x"}`, clientMsg{Type: typeSubscribe, Ref: "1", NS: "n", ID: "x"}, ""},

		{``, clientMsg{}, codeBadFrame},
		{`nul`, clientMsg{}, codeBadFrame},
		{`null`, clientMsg{}, codeBadFrame},
		{`[]`, clientMsg{}, codeBadFrame},
		{`{"type":"call"`, clientMsg{}, codeBadFrame},
		{`{"type":"cancel","ref":"1"}x`, clientMsg{}, codeBadFrame},
		{`{"type":["call"]}`, clientMsg{}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":7,"task":"t"}`, clientMsg{Type: typeCall, Ref: "1", Task: "t"}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":"n","task":"t","detach":1}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t"}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":"n","task":"t","timeout":"-1s"}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t"}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":"n","task":"t","timeout":5}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t"}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":"n","task":"t","input":1e999}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t", Input: json.RawMessage("1e999")}, ""}, // checked once permitted
		{`{"type":"call","ref":"` + strings.Repeat("r", wsMaxRef+1) + `","ns":"n","task":"t"}`, clientMsg{Type: typeCall, NS: "n", Task: "t"}, codeBadFrame},
		{`{"type":"call","ref":"1","ns":"n","task":"t","idempotency_key":"` + strings.Repeat("k", wsMaxKey+1) + `"}`, clientMsg{Type: typeCall, Ref: "1", NS: "n", Task: "t", IdempotencyKey: strings.Repeat("k", wsMaxKey+1)}, codeBadFrame},
		{`{}`, clientMsg{}, codeMissingField},
		{`{"type":"call","ns":"n","task":"t"}`, clientMsg{Type: typeCall, NS: "n", Task: "t"}, codeMissingField},
		{`{"type":"call","ref":"1","task":"t"}`, clientMsg{Type: typeCall, Ref: "1", Task: "t"}, codeMissingField},
		{`{"type":"call","ref":"1","ns":"n"}`, clientMsg{Type: typeCall, Ref: "1", NS: "n"}, codeMissingField},
		{`{"type":"subscribe","ref":"1","ns":"n"}`, clientMsg{Type: typeSubscribe, Ref: "1", NS: "n"}, codeMissingField},
		{`{"type":"cancel","id":"x"}`, clientMsg{Type: typeCancel, ID: "x"}, codeMissingField},
		{`{"type":"cancel"}`, clientMsg{Type: typeCancel}, codeMissingField},
		{`{"type":"Call","ref":"1"}`, clientMsg{Type: "Call", Ref: "1"}, codeUnknownType},
	} {
		got, e := decodeFrame([]byte(tc.frame))
		code := ""
		if e != nil {
			code = e.Code
			if e.Message == "" {
				t.Errorf("%s: an error without a message", tc.frame)
			}
		}
		if code != tc.code || fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", tc.want) {
			t.Errorf("%s:\n got %#v, %v\nwant %#v, %s", tc.frame, got, e, tc.want, tc.code)
		}
	}
}

// FuzzWSFrame: the decoder never panics, and what it accepts is a complete
// message of a known type.
func FuzzWSFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"call","ref":"1","ns":"default","task":"demo.add","input":{"a":1,"b":2},"timeout":"5s","idempotency_key":"k","detach":true}`,
		`{"type":"cancel","ref":"1"}`,
		`{"type":"cancel","ns":"default","id":"x"}`,
		`{"type":"subscribe","ref":"1","ns":"default","id":"x"}`,
		`{"type":"call","ref":1}`, `null`, `[]`, `"x"`, `{`, `{"input":1e400}`, "{\"ref\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, e := decodeFrame(frame)
		if len(m.Ref) > wsMaxRef {
			t.Fatalf("a ref of %d bytes", len(m.Ref))
		}
		if e != nil {
			if e.Code == "" || e.Message == "" {
				t.Fatalf("error %+v", e)
			}
			if _, err := json.Marshal(wsMessage{Type: "error", Ref: m.Ref, Error: e}); err != nil {
				t.Fatal(err)
			}
			return
		}
		complete := map[string]bool{
			typeCall:      m.Ref != "" && m.NS != "" && m.Task != "",
			typeSubscribe: m.Ref != "" && m.NS != "" && m.ID != "",
			typeCancel:    m.Ref != "" || m.NS != "" && m.ID != "",
		}
		if !complete[m.Type] || m.Timeout < 0 || len(m.IdempotencyKey) > wsMaxKey {
			t.Fatalf("accepted %q as %#v", frame, m)
		}
	})
}
