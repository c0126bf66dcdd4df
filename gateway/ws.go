package gateway

// The WebSocket endpoint, GET /v1/ws: one connection carries many calls and
// subscriptions, matched by the client's refs. The protocol is in
// docs/WEBSOCKET.md.
//
// Goroutines of one connection, all owned by serve, which runs on the HTTP
// server's goroutine for the request and is counted in Gateway.waiters so
// that Gateway.Close waits for it:
//   - read: decodes frames and acts on them; it starts the op goroutines.
//   - write: the only writer of the socket: messages from the bounded
//     outgoing buffer, pings, pongs, and the close frame.
//   - one op goroutine per open call or subscription: it starts the call,
//     then follows the invocation's record in the store (as await does) and
//     queues state and result messages.
//
// Shutdown order (serve): once the connection ends (the peer closed or
// failed, a rule was broken, or the gateway closes), the op goroutines stop
// following and cancel their calls (not the detached or replayed ones, and
// none when the gateway is shutting down); the writer sends the close frame
// (serve gives it up to writeWait); the reader gets up to wsCloseGrace for
// the peer's close frame before serve closes the socket; serve waits for
// the reader, the writer and every op goroutine.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/wire"
	"github.com/gorilla/websocket"
)

// Limits and timings of WebSocket connections.
const (
	wsOutBuffer  = 256         // messages queued for a client
	wsSendWait   = time.Second // a client whose buffer stays full this long is too slow
	wsMaxRef     = 128         // bytes
	wsMaxKey     = 255         // bytes of an idempotency key, as on REST
	wsPingEvery  = 30 * time.Second
	wsPongWait   = 60 * time.Second // a connection silent this long after a ping is closed
	wsWriteWait  = 10 * time.Second // for each write, the close frame included
	wsCloseGrace = time.Second      // for the peer's close frame after ours
)

// Codes of the WebSocket endpoint's own errors, in error messages and in
// refused upgrades; the others are shared with REST.
const (
	codeBadFrame     = "bad_frame"
	codeUnknownType  = "unknown_type"
	codeMissingField = "missing_field"
	codeDuplicateRef = "duplicate_ref"
	codeUnknownRef   = "unknown_ref"
	codeTooManyCalls = "too_many_calls"
	codeInternal     = "internal"
)

// Types of client messages.
const (
	typeCall      = "call"
	typeCancel    = "cancel"
	typeSubscribe = "subscribe"
	typeMonitor   = "monitor"
)

// wsProtocol is the subprotocol the gateway speaks, chosen when offered.
const wsProtocol = "atasks"

// wsHandler serves GET /v1/ws for a gateway.
type wsHandler struct {
	g        *Gateway
	upgrader websocket.Upgrader
	// Keepalive and write timings; tests shorten them.
	pingEvery, pongWait, writeWait time.Duration
}

func newWSHandler(g *Gateway) *wsHandler {
	h := &wsHandler{g: g, pingEvery: wsPingEvery, pongWait: wsPongWait, writeWait: wsWriteWait}
	h.upgrader = websocket.Upgrader{CheckOrigin: h.checkOrigin, Error: refuseUpgrade, EnableCompression: false,
		// Chosen when offered, as browsers that offer a bearer subprotocol
		// (auth.go) need one chosen; the protocol is the same without.
		Subprotocols: []string{wsProtocol}}
	return h
}

// ServeHTTP upgrades the request and serves the connection until it ends.
func (h *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := h.g
	if !g.addWaiter() {
		writeProblem(w, codeShuttingDown, "the gateway is shutting down")
		return
	}
	defer g.waiters.Done()

	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered with refuseUpgrade
	}
	who := callerOf(r.Context())
	c := &wsConn{h: h, g: g, ws: ws, who: who, key: limitKey(who, r), req: r, out: make(chan []byte, wsOutBuffer), pongs: make(chan string, 1), open: map[string]*wsOp{}}
	c.ctx, c.end = context.WithCancelCause(context.Background())
	g.metrics.WSOpened()
	defer g.metrics.WSClosed()
	c.serve()
}

// checkOrigin lets requests without an Origin (not from a browser), from
// the gateway's own host, and from the configured origins upgrade.
func (h *wsHandler) checkOrigin(r *http.Request) bool { return h.g.originAllowed(r) }

// refuseUpgrade answers a request that cannot become a WebSocket with a
// problem; the status is the upgrader's.
func refuseUpgrade(w http.ResponseWriter, _ *http.Request, status int, reason error) {
	code := codeBadRequest
	switch {
	case status == http.StatusForbidden:
		code = codeOriginNotAllowed
	case status == http.StatusMethodNotAllowed:
		code = codeMethodNotAllowed
	case status >= http.StatusInternalServerError: // the ResponseWriter cannot be hijacked
		code = codeInternal
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: reason.Error(), Code: code})
}

// wsConn is one WebSocket connection.
type wsConn struct {
	h   *wsHandler
	g   *Gateway
	ws  *websocket.Conn
	who caller        // whose rights every message is checked against
	key string        // the key of who's limits
	req *http.Request // the upgrade, for the audit of refused messages

	// ctx ends when the connection starts closing; its cause, a *wsClose,
	// says why.
	ctx   context.Context
	end   context.CancelCauseFunc
	out   chan []byte // encoded messages for the writer
	pongs chan string // payloads of pings to answer
	ops   sync.WaitGroup

	mu   sync.Mutex
	open map[string]*wsOp // calls and subscriptions by ref, until their last message
}

// wsOp is an open call or subscription.
type wsOp struct {
	ref, ns string
	sub     bool               // a subscription
	stop    context.CancelFunc // ends a monitor; nil for the others
	detach  bool               // a call that outlives the connection
	// Guarded by wsConn.mu:
	id        string // the invocation, once started
	cancelled bool   // cancelled before it started
}

// wsClose is why a connection ends: the code of the close frame the
// gateway sends (0 for none) and its reason (at most 123 bytes).
type wsClose struct {
	code int
	text string
}

func (e *wsClose) Error() string { return fmt.Sprintf("websocket closed (%d): %s", e.code, e.text) }

var (
	errGoingAway  = &wsClose{websocket.CloseGoingAway, "the gateway is shutting down"}
	errSlowReader = &wsClose{websocket.ClosePolicyViolation, "too slow: read the messages faster"}
	errBinary     = &wsClose{websocket.CloseUnsupportedData, "binary frames are not supported: send JSON in text frames"}
)

// serve runs the connection until it ends; see the shutdown order above.
func (c *wsConn) serve() {
	c.ws.SetCloseHandler(func(int, string) error { return nil }) // the writer answers
	c.ws.SetPingHandler(func(data string) error {
		select {
		case c.pongs <- data:
		default: // a pong is pending: it answers this ping too
		}
		return nil
	})
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(c.h.pongWait)) })

	readerDone, writerDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(readerDone); c.read() }()
	go func() { defer close(writerDone); c.write() }()

	select {
	case <-c.ctx.Done():
	case <-c.g.life.Done():
		c.end(errGoingAway)
	}
	timer := time.NewTimer(c.h.writeWait)
	defer timer.Stop()
	select {
	case <-writerDone:
		timer.Reset(wsCloseGrace)
		select {
		case <-readerDone:
		case <-timer.C:
		}
	case <-timer.C: // a write is stuck
	}
	_ = c.ws.Close()
	<-readerDone
	<-writerDone
	c.ops.Wait()
}

// read reads frames until the connection fails; once it is closing, it
// skips them while it waits for the peer's close frame.
func (c *wsConn) read() {
	limit := c.g.frameLimit()
	_ = c.ws.SetReadDeadline(time.Now().Add(c.h.pongWait))
	for {
		kind, r, err := c.ws.NextReader()
		if err != nil {
			var closed *websocket.CloseError
			if errors.As(err, &closed) {
				c.end(&wsClose{code: closed.Code, text: "closed by the client"}) // echoed
			} else {
				c.end(&wsClose{text: err.Error()})
			}
			return
		}
		if c.ctx.Err() != nil {
			continue
		}
		if kind == websocket.BinaryMessage {
			c.end(errBinary)
			continue
		}
		data, err := io.ReadAll(io.LimitReader(r, limit+1))
		if err != nil {
			c.end(&wsClose{text: err.Error()})
			return
		}
		if int64(len(data)) > limit {
			c.end(&wsClose{websocket.CloseMessageTooBig, fmt.Sprintf("a frame may hold at most %d bytes", limit)})
			continue
		}
		c.handle(data)
	}
}

// write writes queued messages, pings and pongs until the connection ends,
// then the close frame its cause calls for.
func (c *wsConn) write() {
	ping := time.NewTicker(c.h.pingEvery)
	defer ping.Stop()
	for c.ctx.Err() == nil {
		var err error
		select {
		case <-c.ctx.Done():
		case m := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.h.writeWait))
			err = c.ws.WriteMessage(websocket.TextMessage, m)
		case data := <-c.pongs:
			err = c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.h.writeWait))
		case <-ping.C:
			err = c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.writeWait))
		}
		if err != nil {
			c.end(&wsClose{text: err.Error()})
		}
	}
	var why *wsClose
	if errors.As(context.Cause(c.ctx), &why) && why.code != 0 {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(why.code, why.text), time.Now().Add(c.h.writeWait))
	}
}

// wsMessage is a message to the client; which fields are set depends on
// Type: accepted, state, result or error.
type wsMessage struct {
	Type       string        `json:"type"`
	Ref        string        `json:"ref,omitempty"`
	ID         string        `json:"id,omitempty"`
	NS         string        `json:"ns,omitempty"`
	Task       string        `json:"task,omitempty"`
	State      atasks.State  `json:"state,omitempty"`
	Child      string        `json:"child,omitempty"`
	Worker     string        `json:"worker,omitempty"`
	Replayed   bool          `json:"replayed,omitempty"`
	Invocation *Invocation   `json:"invocation,omitempty"`
	CancelOf   string        `json:"cancel_of,omitempty"` // with an error: the ref whose cancel it refuses
	Error      *atasks.Error `json:"error,omitempty"`
}

// send queues m for the writer; see sendAny.
func (c *wsConn) send(m wsMessage) { c.sendAny(m.Ref, m) }

// sendAny queues message m about ref for the writer. When the buffer is
// full it waits up to wsSendWait for room (a burst outpaces the writer for
// a moment), then ends the connection: the client is too slow. Only this
// connection's goroutines ever wait on its buffer.
func (c *wsConn) sendAny(ref string, m any) {
	if c.ctx.Err() != nil {
		return
	}
	b, err := json.Marshal(m)
	if err != nil { // an error's details that are not JSON
		b, _ = json.Marshal(wsMessage{Type: "error", Ref: ref, Error: &atasks.Error{Code: "bad_output", Message: err.Error()}})
	}
	select {
	case c.out <- b:
		return
	default:
	}
	timer := time.NewTimer(wsSendWait)
	defer timer.Stop()
	select {
	case c.out <- b:
	case <-c.ctx.Done():
	case <-timer.C:
		c.end(errSlowReader)
	}
}

// fail sends an error message about ref (or about no ref).
func (c *wsConn) fail(ref string, e *atasks.Error) {
	c.send(wsMessage{Type: "error", Ref: ref, Error: e})
}

// handle acts on one text frame. Its input, if any, is checked only once
// the frame is permitted: a refused frame costs its sender's rate and
// nothing more.
func (c *wsConn) handle(data []byte) {
	m, e := decodeFrame(data)
	if e == nil {
		e = c.permit(m, len(data))
	}
	if e == nil && m.Input != nil {
		if err := codec.CheckJSON(m.Input); err != nil {
			e = frameError(codeBadFrame, "input: "+err.Error())
		}
	}
	switch {
	case e != nil:
		c.fail(m.Ref, e)
	case m.Type == typeCall:
		c.call(m)
	case m.Type == typeSubscribe:
		c.subscribe(m)
	case m.Type == typeMonitor:
		c.monitor(m)
	default:
		c.cancel(m)
	}
}

// permit returns why the connection's caller may not send m, a frame of
// size bytes, or nil: every frame counts against the caller's rate, then a
// call needs the invoke right in its namespace and fits the namespace's
// body limit, a subscribe needs read, a cancel by id cancel (by ref,
// cancel checks it), a monitor read in every namespace. A frame refused
// for rights is audited as a 403 is.
func (c *wsConn) permit(m clientMsg, size int) *atasks.Error {
	if wait := c.g.limits.allow(c.key); wait > 0 {
		return tooFast(wait)
	}
	e := c.rights(m, size)
	if e != nil && e.Code == codeForbidden {
		c.g.refused(c.req, c.who, http.StatusForbidden, m.Type+" frame: "+e.Message)
	}
	return e
}

// rights returns why the connection's caller may not send m, a frame of
// size bytes, for its rights and limits, or nil.
func (c *wsConn) rights(m clientMsg, size int) *atasks.Error {
	switch {
	case m.Type == typeCancel && m.Ref == "" && !c.who.may(m.NS, RightCancel):
		return forbidden(m.NS, RightCancel)
	case m.Type == typeCancel:
		return nil
	case m.Type == typeCall && !c.who.may(m.NS, RightInvoke):
		return forbidden(m.NS, RightInvoke)
	case m.Type == typeCall && int64(size) > c.g.bodyLimit(m.NS):
		return &atasks.Error{Code: codeBodyTooLarge, Message: fmt.Sprintf("a call in namespace %q may take at most %d bytes", m.NS, c.g.bodyLimit(m.NS))}
	case m.Type == typeSubscribe && !c.who.may(m.NS, RightRead):
		return forbidden(m.NS, RightRead)
	case m.Type == typeMonitor && !c.who.everywhere(RightRead, c.g.cfg.Client.Namespaces()):
		return forbiddenEverywhere(RightRead)
	}
	return nil
}

// call opens op m.Ref and starts the call in its op goroutine.
func (c *wsConn) call(m clientMsg) {
	op := &wsOp{ref: m.Ref, ns: m.NS, detach: m.Detach}
	if c.opens(op) {
		c.g.metrics.WSCall(op.ns)
		c.ops.Go(func() { c.runCall(op, m) })
	}
}

// subscribe opens op m.Ref and follows invocation m.ID in its op goroutine.
func (c *wsConn) subscribe(m clientMsg) {
	op := &wsOp{ref: m.Ref, ns: m.NS, sub: true, id: m.ID}
	if c.opens(op) {
		c.ops.Go(func() {
			if err := c.g.lookUp(c.ctx, m.NS, m.ID); err != nil {
				c.forget(op)
				c.fail(op.ref, asError(err))
				return
			}
			c.follow(op, m.ID, nil)
		})
	}
}

// opens records op unless its namespace is unknown, its ref is in use or
// the connection's cap is reached, which it answers with an error.
func (c *wsConn) opens(op *wsOp) bool {
	if op.stop == nil && !slices.Contains(c.g.cfg.Client.Namespaces(), op.ns) {
		c.fail(op.ref, &atasks.Error{Code: wire.CodeNamespaceNotFound, Message: fmt.Sprintf("namespace %q is not served by this gateway", op.ns)})
		return false
	}
	c.mu.Lock()
	_, dup := c.open[op.ref]
	full := len(c.open) >= c.g.cfg.WSMaxCalls
	if !dup && !full {
		c.open[op.ref] = op
	}
	c.mu.Unlock()
	switch {
	case dup:
		c.fail(op.ref, &atasks.Error{Code: codeDuplicateRef, Message: fmt.Sprintf("ref %q names an open call or subscription", op.ref)})
	case full:
		c.fail(op.ref, &atasks.Error{Code: codeTooManyCalls, Message: fmt.Sprintf("this connection has %d calls and subscriptions open, the most it may", c.g.cfg.WSMaxCalls), Retryable: true})
	}
	return !dup && !full
}

// forget closes op: its ref may be used again.
func (c *wsConn) forget(op *wsOp) {
	c.mu.Lock()
	delete(c.open, op.ref)
	c.mu.Unlock()
}

// runCall starts call m as the gateway's REST invoke does, then follows it.
// If the connection ends first, the call is cancelled unless it is detached,
// the gateway is shutting down, or its idempotency key named an invocation
// started before (which belongs to whoever started it).
func (c *wsConn) runCall(op *wsOp, m clientMsg) {
	if c.ctx.Err() != nil {
		return
	}
	id, replayed, err := c.g.start(context.Background(), callSpec{ns: m.NS, task: m.Task, input: m.Input, timeout: m.Timeout,
		key: m.IdempotencyKey, maxAttempts: m.MaxAttempts, runAt: m.RunAt, caller: c.key}, max(c.g.cfg.DefaultWait, minSendWait))
	if err != nil {
		c.forget(op)
		c.fail(op.ref, asError(err))
		return
	}
	c.mu.Lock()
	op.id = id
	cancelled := op.cancelled
	c.mu.Unlock()
	if cancelled {
		c.g.store.cancel(m.NS, id, errWSCancel)
	}
	c.g.record(c.ctx, Invocation{ID: id, NS: m.NS, Task: m.Task}) // its id goes out before its outcome
	c.send(wsMessage{Type: "accepted", Ref: op.ref, ID: id, NS: m.NS, Task: m.Task, Replayed: replayed})
	if !c.follow(op, id, &Invocation{State: "queued"}) && !op.detach && !replayed && context.Cause(c.ctx) != errGoingAway {
		c.g.store.cancel(m.NS, id, errWSConnectionGone)
	}
}

// follow sends the changes of invocation id as state messages, then its
// result, closes op and reports true; or false if the connection ends
// first. last is what the client knows of it; nil for a subscription, which
// first gets the current state.
func (c *wsConn) follow(op *wsOp, id string, last *Invocation) bool {
	for {
		inv, changed, ok := c.g.store.get(id)
		switch {
		case !ok || inv.NS != op.ns:
			c.forget(op) // before the message: the client may reuse the ref at once
			c.fail(op.ref, c.g.missing(op.ns, id))
			return true
		case inv.State.Final():
			c.forget(op)
			c.send(wsMessage{Type: "result", Ref: op.ref, Invocation: &inv})
			return true
		default:
			last = c.sendStates(op.ref, last, inv)
		}
		select {
		case <-changed:
		case <-c.ctx.Done():
			return false
		}
	}
}

// sendStates sends what changed in inv since last: a state message per new
// child, or one for a new state or worker; it returns inv as the new last.
func (c *wsConn) sendStates(ref string, last *Invocation, inv Invocation) *Invocation {
	m := wsMessage{Type: "state", Ref: ref, ID: inv.ID, State: inv.State, Worker: inv.Worker}
	if last == nil {
		c.send(m)
		return &inv
	}
	for _, child := range inv.Children[min(len(last.Children), len(inv.Children)):] {
		m.Child = child
		c.send(m)
	}
	if m.Child == "" && (inv.State != last.State || inv.Worker != last.Worker) {
		c.send(m)
	}
	return &inv
}

// cancel cancels the invocation of open call or subscription m.Ref, or
// invocation m.ID of namespace m.NS.
func (c *wsConn) cancel(m clientMsg) {
	ns, id := m.NS, m.ID
	if m.Ref != "" {
		c.mu.Lock()
		op, ok := c.open[m.Ref]
		allowed := ok && (op.stop != nil || c.who.may(op.ns, RightCancel))
		if allowed {
			ns, id = op.ns, op.id
			op.cancelled = id == ""
		}
		c.mu.Unlock()
		switch {
		case !ok:
			c.fail(m.Ref, &atasks.Error{Code: codeUnknownRef, Message: fmt.Sprintf("no open call or subscription has ref %q", m.Ref)})
			return
		case op.stop != nil:
			op.stop() // a monitor: it ends, nothing answers
			return
		case !allowed:
			// Not under the call's ref, which would read as the call's own
			// refusal: the call goes on.
			c.send(wsMessage{Type: "error", CancelOf: m.Ref, Error: forbidden(op.ns, RightCancel)})
			return
		case id == "":
			return // runCall cancels it once started
		}
	}
	known, local := c.g.store.cancel(ns, id, errWSCancel)
	if local || (!known && m.Ref != "") {
		return
	}
	// Another replica's call, or one not read yet: off the read loop, as
	// it may wait for the history or the broker.
	c.ops.Go(func() {
		ctx, cancel := context.WithTimeout(c.ctx, lookupWait)
		defer cancel()
		if !known {
			if err := c.g.lookUp(ctx, ns, id); err != nil {
				c.fail("", asError(err))
				return
			}
			if known, _ = c.g.store.cancel(ns, id, errWSCancel); !known {
				c.fail("", c.g.missing(ns, id))
				return
			}
		}
		_ = c.g.cfg.Client.Cancel(ctx, ns, id) // its server cancels it
	})
}

// monitor opens op m.Ref and feeds it what the monitor sees, in its op
// goroutine, until it is cancelled or the connection ends.
func (c *wsConn) monitor(m clientMsg) {
	c.mu.Lock()
	monitoring := slices.ContainsFunc(slices.Collect(maps.Values(c.open)), func(op *wsOp) bool { return op.stop != nil })
	c.mu.Unlock()
	if monitoring {
		c.fail(m.Ref, &atasks.Error{Code: codeTooManyCalls, Message: "this connection monitors already: one monitor per connection"})
		return
	}
	ctx, stop := context.WithCancel(c.ctx)
	op := &wsOp{ref: m.Ref, stop: stop}
	if !c.opens(op) {
		stop()
		return
	}
	c.ops.Go(func() {
		defer stop()
		c.runMonitor(ctx, op)
		c.forget(op)
	})
}

// Messages of a monitor: a snapshot, an activity, stats. Their lists are
// never null.
type (
	monSnapshot struct {
		Type        string          `json:"type"`
		Ref         string          `json:"ref"`
		Invocations []monInvocation `json:"invocations"`
		Servers     []monServer     `json:"servers"`
		Tasks       []monTask       `json:"tasks"`
	}
	monActivity struct {
		Type       string         `json:"type"`
		Ref        string         `json:"ref"`
		Invocation *monInvocation `json:"invocation"`
	}
	monStats struct {
		Type    string      `json:"type"`
		Ref     string      `json:"ref"`
		Servers []monServer `json:"servers"`
		Tasks   []monTask   `json:"tasks"`
	}
)

// runMonitor sends op's snapshot, then every monitorFlush the invocations
// that changed and every statsEvery the servers and tasks, until ctx ends.
func (c *wsConn) runMonitor(ctx context.Context, op *wsOp) {
	mon := c.g.monitor
	s, snap := mon.subscribe()
	defer mon.unsubscribe(s)
	servers, tasks := mon.stats(ctx)
	c.sendAny(op.ref, monSnapshot{Type: "snapshot", Ref: op.ref, Invocations: snap, Servers: servers, Tasks: tasks})
	flush := time.NewTicker(monitorFlush)
	defer flush.Stop()
	stats := time.NewTicker(statsEvery)
	defer stats.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush.C:
			for _, inv := range mon.flush(s) {
				c.sendAny(op.ref, monActivity{Type: "activity", Ref: op.ref, Invocation: &inv})
			}
		case <-stats.C:
			servers, tasks := mon.stats(ctx)
			c.sendAny(op.ref, monStats{Type: "stats", Ref: op.ref, Servers: servers, Tasks: tasks})
		}
	}
}

// clientMsg is a client's frame, decoded and checked.
type clientMsg struct {
	Type           string // typeCall, typeCancel, typeSubscribe or typeMonitor
	Ref            string
	NS, Task, ID   string
	Input          json.RawMessage
	Timeout        time.Duration
	IdempotencyKey string
	MaxAttempts    int
	RunAt          time.Time // a delayed call's time; zero: now
	Detach         bool
}

// wsFrame is the JSON of a client's frame.
type wsFrame struct {
	Type           string          `json:"type"`
	Ref            string          `json:"ref"`
	NS             string          `json:"ns"`
	Task           string          `json:"task"`
	ID             string          `json:"id"`
	Input          json.RawMessage `json:"input"`
	Timeout        string          `json:"timeout"`
	IdempotencyKey string          `json:"idempotency_key"`
	MaxAttempts    int             `json:"max_attempts"`
	Delay          string          `json:"delay"`
	RunAt          string          `json:"run_at"`
	Detach         bool            `json:"detach"`
}

// decodeFrame turns a text frame into a client message, or into the error
// to answer it with; the message's Ref is set whenever the frame names a
// valid one, so that the error can carry it.
func decodeFrame(data []byte) (clientMsg, *atasks.Error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return clientMsg{}, frameError(codeBadFrame, "a frame must hold one JSON object")
	}
	var f wsFrame
	err := json.Unmarshal(data, &f)
	m := clientMsg{Type: f.Type, NS: f.NS, Task: f.Task, ID: f.ID, IdempotencyKey: f.IdempotencyKey, MaxAttempts: f.MaxAttempts, Detach: f.Detach}
	if len(f.Ref) <= wsMaxRef {
		m.Ref = f.Ref
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return m, frameError(codeBadFrame, fmt.Sprintf("field %q must be %s, not a JSON %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value))
	case err != nil:
		return m, frameError(codeBadFrame, "the frame is not valid JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	case len(f.Ref) > wsMaxRef:
		return m, frameError(codeBadFrame, fmt.Sprintf("ref: at most %d bytes", wsMaxRef))
	case len(f.IdempotencyKey) > wsMaxKey:
		return m, frameError(codeBadFrame, fmt.Sprintf("idempotency_key: at most %d bytes", wsMaxKey))
	case f.MaxAttempts < 0:
		return m, frameError(codeBadFrame, "max_attempts: at least 1")
	}
	if missing := missingField(f); missing != "" {
		return m, frameError(codeMissingField, "the frame lacks "+missing)
	}
	if f.Type != typeCall && f.Type != typeCancel && f.Type != typeSubscribe && f.Type != typeMonitor {
		return m, frameError(codeUnknownType, fmt.Sprintf("type %q is none of call, cancel, subscribe, monitor", f.Type))
	}
	if f.Timeout != "" {
		d, err := time.ParseDuration(f.Timeout)
		if err != nil || d < 0 {
			return m, frameError(codeBadFrame, fmt.Sprintf("timeout: want a duration such as 250ms or 5s, got %q", f.Timeout))
		}
		m.Timeout = d
	}
	runAt, err := runAt(f.Delay, f.RunAt, m.Timeout, "delay", "run_at")
	if err != nil {
		return m, frameError(codeBadFrame, err.Error())
	}
	m.RunAt = runAt
	m.Input = f.Input // checked once the frame is permitted (handle)
	return m, nil
}

// missingField names what f's type requires that f lacks, or "".
func missingField(f wsFrame) string {
	switch {
	case f.Type == "":
		return `"type"`
	case f.Type == typeCancel && f.Ref == "" && f.ID == "":
		return `"ref", or "id" and "ns"`
	case f.Type == typeCancel && f.Ref == "" && f.NS == "":
		return `"ns" (with "id")`
	case f.Type == typeMonitor && f.Ref == "":
		return `"ref"`
	case f.Type != typeCall && f.Type != typeSubscribe:
		return ""
	case f.Ref == "":
		return `"ref"`
	case f.NS == "":
		return `"ns"`
	case f.Type == typeCall && f.Task == "":
		return `"task"`
	case f.Type == typeSubscribe && f.ID == "":
		return `"id"`
	}
	return ""
}

// jsonKind names the JSON values a field of wsFrame of type t takes; the
// fields that can mismatch are strings and bools.
func jsonKind(t reflect.Type) string {
	if t.Kind() == reflect.Bool {
		return "true or false"
	}
	return "a string"
}

func frameError(code, msg string) *atasks.Error { return &atasks.Error{Code: code, Message: msg} }
