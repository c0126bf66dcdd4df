package gatewayclient

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// callFrame returns the frame of a call under ref. Every call is detached:
// the gateway does not cancel it when the connection ends, so that a wait
// can follow it again on a new connection, as a REST call's long-poll
// would; the call's context, Handle.Cancel or its timeout cancel it.
func callFrame(ref, ns, task string, body []byte, cfg callConfig) frame {
	f := frame{Type: "call", Ref: ref, NS: ns, Task: task, Input: body, IdempotencyKey: cfg.key, Detach: true}
	if cfg.timeout > 0 {
		f.Timeout = cfg.timeout.String()
	}
	if cfg.delay > 0 {
		f.Delay = cfg.delay.String()
	}
	return f
}

// nextRef returns a ref no other call or subscription of c used.
func (c *Client) nextRef() string { return strconv.FormatUint(c.refs.Add(1), 10) }

// overWS returns the connection to send f over and f encoded, or a nil
// connection when the call goes over REST: in rest mode, and in auto mode
// for a frame too large or a WebSocket that cannot be opened.
func (c *Client) overWS(ctx context.Context, f frame) (*wsConn, []byte, error) {
	if c.transport == TransportREST {
		return nil, nil, nil
	}
	b, _ := json.Marshal(f) // cannot fail: f.Input is JSON already
	if c.transport == TransportAuto && len(b) > wsFrameLimit {
		return nil, nil, nil
	}
	conn, err := c.connect(ctx)
	if err != nil && c.transport == TransportAuto && ctx.Err() == nil {
		return nil, nil, nil
	}
	return conn, b, err
}

// connect returns the shared connection, opening it if it is not open.
// Callers wait for one another's attempt. In auto mode, it fails at once
// for wsRetry after an attempt failed.
func (c *Client) connect(ctx context.Context) (*wsConn, error) {
	select {
	case c.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxError(ctx)
	}
	defer func() { <-c.dialing }()
	if conn, err := c.current(); conn != nil || err != nil {
		return conn, err
	}
	conn, err := c.dial(ctx)
	return c.adopt(ctx, conn, err)
}

// current returns the shared connection if it is open, or why no
// connection may be opened now; nil, nil if one may.
func (c *Client) current() (*wsConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, errClosed()
	case c.conn != nil && c.conn.alive():
		return c.conn, nil
	case c.transport == TransportAuto && time.Now().Before(c.wsDown):
		return nil, errWSDown
	}
	return nil, nil
}

// adopt makes conn, just opened, the shared connection; after a failed
// attempt (err) it notes until when auto mode goes over REST.
func (c *Client) adopt(ctx context.Context, conn *wsConn, err error) (*wsConn, error) {
	c.mu.Lock()
	closed := c.closed
	switch {
	case err != nil && ctx.Err() == nil:
		c.wsDown = time.Now().Add(wsRetry)
	case err == nil && !closed:
		c.conn = conn
	}
	c.mu.Unlock()
	if err == nil && closed {
		conn.close()
		return nil, errClosed()
	}
	return conn, err
}

// callWS sends call frame f (encoded: b) over conn and waits for the
// outcome as Call does.
func (c *Client) callWS(ctx context.Context, conn *wsConn, f frame, b []byte) (*Invocation, error) {
	h, err := c.openWS(conn, f, b)
	if err != nil {
		return nil, err
	}
	inv, err := h.follow(ctx)
	if inv == nil && ctx.Err() != nil {
		return h.abandon(ctx)
	}
	return inv, err
}

// startWS sends call frame f (encoded: b) over conn and returns a handle
// once the gateway accepted it, as Start does.
func (c *Client) startWS(ctx context.Context, conn *wsConn, f frame, b []byte) (*Handle, error) {
	h, err := c.openWS(conn, f, b)
	if err != nil {
		return nil, err
	}
	select {
	case <-h.op.accepted:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		_, err := h.abandon(ctx)
		return nil, err
	}
	if h.ID = h.op.ID(); h.ID == "" {
		_, err := h.op.outcome()
		return nil, err
	}
	return h, nil
}

// openWS sends call frame f (encoded: b) over conn and returns a handle
// that follows it; its ID is not known yet.
func (c *Client) openWS(conn *wsConn, f frame, b []byte) (*Handle, error) {
	op := newCallOp(conn, f.Ref, f.NS)
	if err := conn.open(op, b); err != nil {
		return nil, err
	}
	return &Handle{NS: f.NS, c: c, op: op}, nil
}

// current returns the op that follows h's invocation over the WebSocket.
func (h *Handle) current() *wsOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.op
}

// follow waits for the outcome of h's op. When the op's connection is lost
// after the gateway accepted the call, it follows the invocation on a new
// connection (subscribe), up to maxRefollow times in a row; in auto mode,
// over REST if no connection opens.
func (h *Handle) follow(ctx context.Context) (*Invocation, error) {
	op := h.current()
	for n := 0; ; n++ {
		select {
		case <-op.done:
		case <-ctx.Done():
			return nil, ctxError(ctx)
		}
		inv, err := op.outcome()
		if !op.wasLost() || op.ID() == "" || n == maxRefollow {
			return inv, err
		}
		next, err := h.refollow(ctx, op)
		switch {
		case err != nil:
			return nil, err
		case next == nil:
			return h.c.outcome(ctx, op.lastSeen())
		}
		op = next
	}
}

// refollow returns the op that follows h's invocation now that lost lost
// its connection: one another wait started already, or a subscription on
// a new connection; nil, nil when the invocation is to be followed over
// REST.
func (h *Handle) refollow(ctx context.Context, lost *wsOp) (*wsOp, error) {
	if cur := h.current(); cur != lost {
		return cur, nil
	}
	conn, err := h.c.connect(ctx)
	switch {
	case ctx.Err() != nil:
		return nil, ctxError(ctx)
	case err != nil && h.c.isClosed():
		return nil, errClosed()
	case err != nil && h.c.transport == TransportAuto:
		return nil, nil
	case err != nil:
		_, lostErr := lost.outcome()
		return nil, &wire.Error{Code: wire.CodeUnavailable, Retryable: true,
			Message: wire.AsError(lostErr).Message + "; following the invocation again: " + err.Error()}
	}
	op, err := conn.subscribe(h.c.nextRef(), lost)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.op = op
	h.mu.Unlock()
	return op, nil
}

// abandon cancels h's invocation, whose caller's context ended, and
// returns it as the cancel left it (as last seen if the cancel failed) with
// the context's error; or the gateway's error if it refused the call.
func (h *Handle) abandon(ctx context.Context) (*Invocation, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	op := h.current()
	if op.cancel() {
		select {
		case <-op.done:
		case <-op.refused: // the token may not cancel: it goes on
		case <-cctx.Done():
		}
	}
	inv, err := op.outcome()
	switch {
	case inv != nil:
		return inv, ctxError(ctx)
	case err != nil && !op.wasLost():
		return nil, err
	case op.ID() == "":
		return nil, ctxError(ctx) // never accepted: the gateway cancels it if it starts it
	}
	if final, err := h.c.Cancel(cctx, h.NS, op.ID()); err == nil {
		return final, ctxError(ctx) // the connection was lost: cancel over REST
	}
	return op.lastSeen(), ctxError(ctx)
}
