package gatewayclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
)

const (
	// answerGrace is how long an invoking request may still take, beyond
	// its wait, after the caller's context ended: its answer names the
	// invocation to cancel.
	answerGrace = 10 * time.Second
	// cancelTimeout bounds the cancel a call sends when its context ends;
	// the gateway answers within 5s.
	cancelTimeout = 10 * time.Second
)

// CallOption changes one call.
type CallOption func(*callConfig)

type callConfig struct {
	timeout time.Duration
	delay   time.Duration
	key     string
}

func newCallConfig(opts []CallOption) callConfig {
	var cfg callConfig
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithTimeout gives the invocation a deadline, d from when the gateway
// starts it: when it passes, the invocation ends timed_out with a "timeout"
// error and its children are cancelled. 0 means none; a negative d fails
// the call with "bad_request".
func WithTimeout(d time.Duration) CallOption { return func(c *callConfig) { c.timeout = d } }

// WithDelay delays the call: the invocation is scheduled and runs no
// earlier than d from when the gateway takes it (up to 30 days; RabbitMQ
// holds it meanwhile). Cancelling it before then means it never runs. A
// deadline (WithTimeout, or a Call's context) ending before then fails
// the call with "bad_request"; so does a negative d.
func WithDelay(d time.Duration) CallOption { return func(c *callConfig) { c.delay = d } }

// WithIdempotencyKey makes retries safe: a call with the key of an
// invocation the gateway still keeps (per namespace) follows that invocation
// instead of starting another, over either transport. The same key with
// another task or input fails with "idempotency_conflict". A key is at most
// 255 printable ASCII characters, else the call fails with "bad_request".
func WithIdempotencyKey(key string) CallOption { return func(c *callConfig) { c.key = key } }

// maxKey is the longest idempotency key the gateway takes, in bytes.
const maxKey = 255

// maxDelay is the longest delay the gateway takes.
const maxDelay = 30 * 24 * time.Hour

// check refuses, before anything is sent, the options the gateway would
// refuse with other codes over REST and WebSocket: a "bad_request" error.
func (cfg callConfig) check() error {
	var msg string
	switch {
	case cfg.timeout < 0:
		msg = fmt.Sprintf("WithTimeout: want a duration >= 0, got %v", cfg.timeout)
	case cfg.delay < 0 || cfg.delay > maxDelay:
		msg = fmt.Sprintf("WithDelay: want a duration from 0 to %v, got %v", maxDelay, cfg.delay)
	case len(cfg.key) > maxKey:
		msg = fmt.Sprintf("WithIdempotencyKey: at most %d bytes, got %d", maxKey, len(cfg.key))
	case strings.ContainsFunc(cfg.key, func(r rune) bool { return r < 0x20 || r > 0x7e }):
		msg = "WithIdempotencyKey: want printable ASCII characters only"
	default:
		return nil
	}
	return &wire.Error{Code: codeBadRequest, Message: "gatewayclient: " + msg}
}

// prepare checks a call's context and options and encodes its input. For
// a Call (untilDone), the context's deadline becomes the invocation's if
// it is sooner than WithTimeout's.
func prepare(ctx context.Context, in any, opts []CallOption, untilDone bool) (callConfig, []byte, error) {
	cfg := newCallConfig(opts)
	if ctx.Err() != nil {
		return cfg, nil, ctxError(ctx)
	}
	if err := cfg.check(); err != nil {
		return cfg, nil, err
	}
	if dl, ok := ctx.Deadline(); ok && untilDone && (cfg.timeout <= 0 || time.Until(dl) < cfg.timeout) {
		cfg.timeout = max(time.Until(dl).Truncate(time.Millisecond), time.Millisecond)
	}
	if cfg.timeout > 0 && cfg.timeout < cfg.delay { // the gateway refuses it, over REST and WebSocket with other codes
		return cfg, nil, &wire.Error{Code: codeBadRequest, Message: fmt.Sprintf(
			"gatewayclient: the deadline (%v) ends before the call is to run (WithDelay %v): it could only time out", cfg.timeout, cfg.delay)}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return cfg, nil, &wire.Error{Code: wire.CodeBadInput, Message: "gatewayclient: the input cannot be encoded as JSON: " + err.Error()}
	}
	return cfg, body, nil
}

// Call invokes task of namespace ns with input in, encoded as JSON, and
// waits for the outcome: over the WebSocket, the gateway's messages about
// it; over REST, the invoking request (WithWait), then long-polls. It
// returns the final invocation and, if it did not succeed, its error: the
// task's own, "cancelled" or "timeout" (a *wire.Error). When no
// invocation is known (the gateway refused the call or could not be
// reached) the Invocation is nil.
//
// The context's deadline, if any, is the invocation's deadline too (or
// WithTimeout's, whichever is sooner). If ctx ends before the outcome is
// known, Call cancels the invocation at the gateway and returns it as the
// cancel left it (normally cancelled; as last seen if the cancel failed)
// with the context's error as a *wire.Error, "cancelled" or "timeout",
// so that errors.Is(err, ctx.Err()) holds. Over REST, a ctx that ends
// during the invoking request takes effect when that request answers
// (within WithWait), since only its answer names the invocation to cancel.
//
// Over the WebSocket, a call whose connection is lost once the gateway
// accepted it goes on at the gateway, and Call follows it on a new
// connection (in auto mode, over REST if none opens); one lost before that
// fails with "unavailable", retryable: it may have started, so retry with
// WithIdempotencyKey.
func (c *Client) Call(ctx context.Context, ns, task string, in any, opts ...CallOption) (*Invocation, error) {
	cfg, body, err := prepare(ctx, in, opts, true)
	if err != nil {
		return nil, err
	}
	f := callFrame(c.nextRef(), ns, task, body, cfg)
	conn, b, err := c.overWS(ctx, f)
	switch {
	case err != nil:
		return nil, err
	case conn != nil:
		return c.callWS(ctx, conn, f, b)
	}
	inv, err := c.invoke(ctx, ns, task, body, c.wait, cfg)
	if err != nil {
		return nil, err
	}
	final, err := c.await(ctx, inv)
	switch {
	case err == nil:
		return final, final.Err()
	case ctx.Err() != nil:
		return c.abandon(ctx, inv)
	}
	return nil, err
}

// CallAs calls the task as Client.Call does and decodes its result into an
// Out. A result that does not fit Out is a "bad_output" error.
func CallAs[Out any](ctx context.Context, c *Client, ns, task string, in any, opts ...CallOption) (Out, error) {
	var out Out
	inv, err := c.Call(ctx, ns, task, in, opts...)
	if err == nil {
		err = inv.Decode(&out)
	}
	return out, err
}

// Start invokes task of namespace ns with input in and returns as soon as the
// gateway has accepted it, with a handle to wait for or cancel it. If ctx
// ends before the gateway answers, Start cancels the invocation and returns
// the context's error. Once Start has returned, the invocation goes on,
// whatever becomes of ctx or of the WebSocket, until it ends, its
// WithTimeout passes or it is cancelled (Handle.Cancel).
func (c *Client) Start(ctx context.Context, ns, task string, in any, opts ...CallOption) (*Handle, error) {
	cfg, body, err := prepare(ctx, in, opts, false)
	if err != nil {
		return nil, err
	}
	f := callFrame(c.nextRef(), ns, task, body, cfg)
	conn, b, err := c.overWS(ctx, f)
	switch {
	case err != nil:
		return nil, err
	case conn != nil:
		return c.startWS(ctx, conn, f, b)
	}
	inv, err := c.invoke(ctx, ns, task, body, 0, cfg)
	if err == nil && ctx.Err() != nil {
		_, err = c.abandon(ctx, inv)
	}
	if err != nil {
		return nil, err
	}
	return &Handle{ID: inv.ID, NS: inv.NS, c: c, started: inv}, nil
}

// Handle is an invocation Start started. It is safe for concurrent use.
type Handle struct {
	ID string // the invocation's id, for Client.Get and Client.Cancel too
	NS string // its namespace

	c       *Client
	started *Invocation // over REST: as the invoking request answered

	mu sync.Mutex
	op *wsOp // over the WebSocket: the call, or the subscription that follows it now
}

// Wait waits until the invocation is final and returns it with its error,
// as Call does: over the WebSocket, for the gateway's messages (following
// it on a new connection if the connection is lost); over REST, by
// long-polling. If ctx ends first, Wait returns a nil Invocation and a
// "cancelled" or "timeout" error, and the invocation goes on: cancel it
// with Cancel.
func (h *Handle) Wait(ctx context.Context) (*Invocation, error) {
	if h.started == nil {
		return h.follow(ctx)
	}
	return h.c.outcome(ctx, h.started)
}

// Cancel cancels the invocation as Client.Cancel does, over the WebSocket
// when it follows the invocation; Wait then returns a "cancelled" error
// unless the outcome came first.
func (h *Handle) Cancel(ctx context.Context) (*Invocation, error) {
	if h.started != nil {
		return h.c.Cancel(ctx, h.NS, h.ID)
	}
	op := h.current()
	if inv, _ := op.outcome(); inv != nil {
		return inv, nil // finished: a cancel changes nothing
	}
	if !op.cancel() {
		return h.c.Cancel(ctx, h.NS, h.ID) // its connection was lost
	}
	select {
	case err := <-op.refused:
		return nil, err
	case <-op.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	inv, err := h.follow(ctx)
	if inv == nil {
		return nil, err
	}
	return inv, nil
}

// invoke starts the task with the encoded input body over REST, waiting up
// to wait for its outcome in the request.
func (c *Client) invoke(ctx context.Context, ns, task string, body []byte, wait time.Duration, cfg callConfig) (*Invocation, error) {
	q := url.Values{"wait": {wait.String()}}
	if cfg.timeout > 0 {
		q.Set("timeout", cfg.timeout.String())
	}
	if cfg.delay > 0 {
		q.Set("delay", cfg.delay.String())
	}
	h := http.Header{}
	if cfg.key != "" {
		h.Set("Idempotency-Key", cfg.key)
	}
	rctx, done := outlive(ctx, wait+answerGrace)
	defer done()
	res, err := c.send(rctx, http.MethodPost, "/v1/ns/"+url.PathEscape(ns)+"/tasks/"+url.PathEscape(task), q, body, h)
	if err != nil {
		return nil, err
	}
	return decodeInvocation(res)
}

// outcome long-polls inv until it is final and returns it with its error.
func (c *Client) outcome(ctx context.Context, inv *Invocation) (*Invocation, error) {
	final, err := c.await(ctx, inv)
	if err != nil {
		return nil, err
	}
	return final, final.Err()
}

// await long-polls inv until it is final.
func (c *Client) await(ctx context.Context, inv *Invocation) (*Invocation, error) {
	for !inv.State.Final() {
		next, err := c.Get(ctx, inv.NS, inv.ID, c.pollWait)
		if err != nil {
			return nil, err
		}
		inv = next
	}
	return inv, nil
}

// abandon cancels inv, whose caller's context ended, and returns it as the
// cancel left it, or as it was if the cancel failed, with the context's error.
func (c *Client) abandon(ctx context.Context, inv *Invocation) (*Invocation, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	if final, err := c.Cancel(cctx, inv.NS, inv.ID); err == nil {
		inv = final
	}
	return inv, ctxError(ctx)
}

// outlive returns a context for a request whose answer is needed even if
// ctx ends: it ends grace after ctx does, or when done is called.
func outlive(ctx context.Context, grace time.Duration) (rctx context.Context, done context.CancelFunc) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-rctx.Done():
		}
	})
	return rctx, func() { stop(); cancel() }
}
