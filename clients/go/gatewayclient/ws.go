package gatewayclient

// The WebSocket transport (docs/WEBSOCKET.md): one connection per Client,
// opened by the first call that needs it (and again by the first call after
// it ended), carries every call and subscription, matched by ref.
//
// Goroutines: each connection has one reader, which routes the gateway's
// messages to the ops and ends when the socket fails or closes; Close waits
// for it. Everything else runs on the callers' goroutines: they write frames
// (one writer at a time) and wait on the channels of their ops, which only
// the ops' end closes.
//
// Shutdown order (wsConn.close): the open ops end at once with the client's
// error; the close frame (1000) goes out; the reader gets up to wsCloseGrace
// for the gateway's answer before the socket is closed; close waits for the
// reader.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
	"github.com/gorilla/websocket"
)

// Limits and timings of the WebSocket.
const (
	// wsFrameLimit is the gateway's default limit of a frame (--max-body):
	// a larger one makes it close the connection (1009), failing every call
	// on it, so in auto mode a call that large goes over REST, where the
	// gateway refuses it alone.
	wsFrameLimit = 1 << 20
	// wsRetry is how long auto mode calls over REST after the WebSocket
	// could not be opened.
	wsRetry = 10 * time.Second
	// wsIdle is how long a connection may be silent before it counts as
	// lost: the gateway pings every 30s.
	wsIdle           = 90 * time.Second
	wsWriteWait      = 10 * time.Second // for each frame
	wsCloseGrace     = time.Second      // for the gateway's close frame after ours
	wsHandshakeLimit = 10 * time.Second
	// maxRefollow is how many times in a row a wait follows an invocation
	// again on a new connection after losing one.
	maxRefollow = 3
)

// errWSDown is why auto mode does not try the WebSocket now; it only makes
// the call go over REST.
var errWSDown = errors.New("gatewayclient: the WebSocket could not be opened lately")

// frame is a message to the gateway: a call, a cancel or a subscribe.
type frame struct {
	Type           string          `json:"type"`
	Ref            string          `json:"ref"`
	NS             string          `json:"ns,omitempty"`
	Task           string          `json:"task,omitempty"`
	ID             string          `json:"id,omitempty"`
	Input          json.RawMessage `json:"input,omitempty"`
	Timeout        string          `json:"timeout,omitempty"`
	Delay          string          `json:"delay,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Detach         bool            `json:"detach,omitempty"`
}

// serverMsg is a message of the gateway: accepted, state, result or error.
type serverMsg struct {
	Type       string      `json:"type"`
	Ref        string      `json:"ref"`
	ID         string      `json:"id"`
	Task       string      `json:"task"`
	State      wire.State  `json:"state"`
	Invocation *Invocation `json:"invocation"`
	CancelOf   string      `json:"cancel_of"` // with an error: the ref whose cancel the gateway refused
	Error      *wire.Error `json:"error"`
}

// newDialer returns the dialer of the WebSocket: with the proxy, TLS
// configuration and dial function of hc's transport when it is an
// *http.Transport.
func newDialer(hc *http.Client) *websocket.Dialer {
	d := &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: wsHandshakeLimit}
	t, ok := hc.Transport.(*http.Transport)
	if hc.Transport == nil {
		t, ok = http.DefaultTransport.(*http.Transport)
	}
	if ok {
		t = t.Clone() // a copy made in step with t's own setup, which may be running
		d.Proxy, d.NetDialContext, d.TLSClientConfig = t.Proxy, t.DialContext, t.TLSClientConfig
		if d.TLSClientConfig != nil {
			d.TLSClientConfig.NextProtos = nil // HTTP/1.1: an upgrade cannot go over h2
		}
	}
	return d
}

// wsConn is one WebSocket connection to the gateway.
type wsConn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex    // held while writing a frame
	done chan struct{} // closed when the reader has ended

	mu  sync.Mutex
	ops map[string]*wsOp // open calls and subscriptions by ref
	err error            // why the connection ended; nil while open
}

// dial opens a connection to the gateway's /v1/ws with c's headers. A
// refused upgrade is a *ProblemError, as the same answer to a REST request
// would be; a failure to connect is "unavailable".
func (c *Client) dial(ctx context.Context) (*wsConn, error) {
	u := "ws" + strings.TrimPrefix(c.base, "http") + "/v1/ws"
	ws, res, err := c.dialer.DialContext(ctx, u, c.header.Clone())
	if err != nil {
		if res != nil && res.StatusCode >= 300 {
			body, _ := io.ReadAll(res.Body) // what the dialer kept of it
			return nil, problemError(res.StatusCode, body)
		}
		return nil, transportError(ctx, fmt.Errorf("GET %s: %w", u, err))
	}
	conn := &wsConn{ws: ws, done: make(chan struct{}), ops: map[string]*wsOp{}}
	ws.SetPingHandler(conn.pong)
	go conn.read()
	return conn, nil
}

// read routes the gateway's messages until the connection fails or closes,
// then ends it.
func (conn *wsConn) read() {
	defer close(conn.done)
	defer conn.ws.Close()
	for {
		_ = conn.ws.SetReadDeadline(time.Now().Add(wsIdle))
		_, data, err := conn.ws.ReadMessage()
		if err != nil {
			conn.end(lostError(err), true)
			return
		}
		var m serverMsg
		if json.Unmarshal(data, &m) == nil {
			conn.route(m)
		}
	}
}

// pong answers a ping of the gateway, which also shows the connection lives.
func (conn *wsConn) pong(data string) error {
	_ = conn.ws.SetReadDeadline(time.Now().Add(wsIdle))
	_ = conn.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wsWriteWait))
	return nil // a failed write ends the connection when the reader notices
}

// lostError is the error of the ops of a connection that failed or that
// the gateway closed.
func lostError(err error) error {
	return &wire.Error{Code: wire.CodeUnavailable, Message: "gatewayclient: the WebSocket connection ended: " + err.Error(), Retryable: true}
}

// route hands message m to the op of its ref, if still open.
func (conn *wsConn) route(m serverMsg) {
	ref := m.Ref
	if m.Type == "error" && ref == "" && m.CancelOf != "" {
		ref = m.CancelOf
	}
	conn.mu.Lock()
	op := conn.ops[ref]
	conn.mu.Unlock()
	if op == nil {
		return // about a ref closed already, or about none (a cancel by id)
	}
	if ref != m.Ref {
		op.cancelRefused(m.Error)
		return
	}
	switch m.Type {
	case "accepted":
		op.accept(m.ID, m.Task)
	case "state":
		op.see(m.State)
	case "result":
		conn.forget(m.Ref)
		if inv := m.Invocation; inv == nil || inv.ID == "" || !inv.State.Final() {
			op.end(nil, &wire.Error{Code: codeBadResponse, Message: "gatewayclient: a result without a final invocation"}, false)
			return
		}
		op.end(m.Invocation, nil, false)
	case "error":
		if m.Error == nil {
			m.Error = &wire.Error{Code: codeBadResponse, Message: "gatewayclient: an error message without an error"}
		}
		if op.refuse(m.Error) {
			conn.forget(m.Ref)
		}
	}
}

// open registers op and sends its frame b. If the write fails, the
// connection ends, and op with it.
func (conn *wsConn) open(op *wsOp, b []byte) error {
	conn.mu.Lock()
	err := conn.err
	if err == nil {
		conn.ops[op.ref] = op
	}
	conn.mu.Unlock()
	if err != nil {
		return err
	}
	conn.write(b)
	return nil
}

// forget closes ref: no message about it is expected any more.
func (conn *wsConn) forget(ref string) {
	conn.mu.Lock()
	delete(conn.ops, ref)
	conn.mu.Unlock()
}

// write sends frame b and reports whether it could; a failed write ends the
// connection.
func (conn *wsConn) write(b []byte) bool {
	conn.wmu.Lock()
	defer conn.wmu.Unlock()
	_ = conn.ws.SetWriteDeadline(time.Now().Add(wsWriteWait))
	if err := conn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		conn.end(lostError(err), true)
		_ = conn.ws.Close() // the reader fails and ends
		return false
	}
	return true
}

// alive tells whether the connection is still open.
func (conn *wsConn) alive() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return conn.err == nil
}

// end ends the connection's ops with err, lost telling whether the
// connection was lost (rather than closed by the Client); it does not close
// the socket. Only the first call counts.
func (conn *wsConn) end(err error, lost bool) {
	conn.mu.Lock()
	first := conn.err == nil
	if first {
		conn.err = err
	}
	ops := conn.ops
	conn.ops = nil
	conn.mu.Unlock()
	for _, op := range ops {
		op.end(nil, err, lost && first)
	}
}

// close ends the connection for Client.Close; see the shutdown order above.
func (conn *wsConn) close() {
	conn.end(errClosed(), false)
	_ = conn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "the client closed"), time.Now().Add(wsWriteWait))
	t := time.NewTimer(wsCloseGrace)
	defer t.Stop()
	select {
	case <-conn.done:
	case <-t.C:
		_ = conn.ws.Close()
		<-conn.done
	}
}

// subscribe follows prev's invocation on conn under ref: prev lost its
// connection.
func (conn *wsConn) subscribe(ref string, prev *wsOp) (*wsOp, error) {
	op := &wsOp{conn: conn, ref: ref, ns: prev.ns, accepted: make(chan struct{}), done: make(chan struct{})}
	prev.mu.Lock()
	op.id, op.task, op.state = prev.id, prev.task, prev.state
	prev.mu.Unlock()
	close(op.accepted)
	b, _ := json.Marshal(frame{Type: "subscribe", Ref: ref, NS: op.ns, ID: op.id}) // cannot fail: strings only
	return op, conn.open(op, b)
}

// wsOp is one call or subscription on a connection, from its frame to its
// last message.
type wsOp struct {
	conn     *wsConn
	ref, ns  string
	accepted chan struct{} // closed once the gateway accepted the call, or the op ended
	done     chan struct{} // closed once the op ended: its outcome is then fixed
	refused  chan error    // the gateway refused a cancel of the op (it goes on)

	mu    sync.Mutex
	id    string      // the invocation, once accepted
	task  string      // its task, once accepted
	state wire.State  // as last heard
	heard bool        // the gateway answered the frame: a later error is about a cancel
	inv   *Invocation // the final invocation, if a result ended the op
	err   error       // else why it ended: an error message's, or the connection's end
	lost  bool        // err is the loss of the connection
}

// newCallOp returns the op of a call frame under ref.
func newCallOp(conn *wsConn, ref, ns string) *wsOp {
	return &wsOp{conn: conn, ref: ref, ns: ns, accepted: make(chan struct{}), done: make(chan struct{}), refused: make(chan error, 1)}
}

// accept notes that the gateway started the call as invocation id.
func (op *wsOp) accept(id, task string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.heard {
		return
	}
	op.id, op.task, op.state, op.heard = id, task, "queued", true
	closeOnce(op.accepted)
}

// see notes a state message.
func (op *wsOp) see(s wire.State) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.state, op.heard = s, true
}

// refuse ends op with e, an error message about its ref, unless the gateway
// answered its frame already (e is then about a cancel and changes
// nothing); it reports whether it ended op.
func (op *wsOp) refuse(e *wire.Error) bool {
	op.mu.Lock()
	heard := op.heard
	op.mu.Unlock()
	if heard {
		return false
	}
	op.end(nil, e, false)
	return true
}

// cancelRefused passes the gateway's refusal of a cancel of op, e, to
// whoever waits for the cancel.
func (op *wsOp) cancelRefused(e *wire.Error) {
	if e == nil {
		e = &wire.Error{Code: codeBadResponse, Message: "gatewayclient: an error message without an error"}
	}
	select {
	case op.refused <- e:
	default: // one refusal waits already
	}
}

// end ends op with its final invocation inv, or with err; lost tells
// whether err is the loss of its connection. Only the first call counts.
func (op *wsOp) end(inv *Invocation, err error, lost bool) {
	op.mu.Lock()
	defer op.mu.Unlock()
	select {
	case <-op.done:
		return
	default:
	}
	op.inv, op.err, op.lost = inv, err, lost
	if inv != nil {
		op.state = inv.State
	}
	op.heard = true
	closeOnce(op.accepted)
	close(op.done)
}

// outcome returns what ended op: its final invocation and its error, or
// the error that ended it. Before op ends, it returns nil, nil.
func (op *wsOp) outcome() (*Invocation, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.inv != nil {
		return op.inv, op.inv.Err()
	}
	return nil, op.err
}

// ID returns the invocation's id, or "" until the gateway accepted the call.
func (op *wsOp) ID() string {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.id
}

// wasLost tells whether op ended because its connection was lost.
func (op *wsOp) wasLost() bool {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.lost
}

// lastSeen returns the invocation as op last heard of it, or nil if the
// gateway never accepted the call.
func (op *wsOp) lastSeen() *Invocation {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.id == "" {
		return nil
	}
	return &Invocation{ID: op.id, NS: op.ns, Task: op.task, State: op.state}
}

// cancel asks the gateway to cancel op's invocation (nothing answers: its
// result follows), unless op ended or its connection did; it reports
// whether it asked.
func (op *wsOp) cancel() bool {
	select {
	case <-op.done:
		return false
	default:
	}
	b, _ := json.Marshal(frame{Type: "cancel", Ref: op.ref}) // cannot fail: strings only
	return op.conn.alive() && op.conn.write(b)
}

// closeOnce closes ch unless it is closed; the caller holds the lock that
// guards ch.
func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
