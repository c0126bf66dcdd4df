package gatewayclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/atasks-go/atasks"
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
// starts it (?timeout=): when it passes, the invocation ends timed_out with
// a "timeout" error and its children are cancelled.
func WithTimeout(d time.Duration) CallOption { return func(c *callConfig) { c.timeout = d } }

// WithIdempotencyKey makes retries safe: a call with the key of an
// invocation the gateway still keeps (per namespace) follows that invocation
// instead of starting another. The same key with another task or input fails
// with "idempotency_conflict" (422).
func WithIdempotencyKey(key string) CallOption { return func(c *callConfig) { c.key = key } }

// Call invokes task of namespace ns with input in, encoded as JSON, and
// waits for the outcome: in the invoking request (WithWait), then by
// long-polling. It returns the final invocation and, if it did not succeed,
// its error: the task's own, "cancelled" or "timeout" (an *atasks.Error).
// When no invocation is known (the gateway refused the call or could not be
// reached) the Invocation is nil.
//
// The context's deadline, if any, is the invocation's deadline too (or
// WithTimeout's, whichever is sooner). If ctx ends before the outcome is
// known, Call cancels the invocation at the gateway (DELETE) and returns it
// as the cancel left it (normally cancelled; as last seen if the cancel
// failed) with the context's error as an *atasks.Error, "cancelled" or
// "timeout", so that errors.Is(err, ctx.Err()) holds. A ctx that ends during
// the invoking request takes effect when that request answers (within
// WithWait), since only its answer names the invocation to cancel.
func (c *Client) Call(ctx context.Context, ns, task string, in any, opts ...CallOption) (*Invocation, error) {
	cfg := newCallConfig(opts)
	if dl, ok := ctx.Deadline(); ok && (cfg.timeout <= 0 || time.Until(dl) < cfg.timeout) {
		cfg.timeout = max(time.Until(dl).Truncate(time.Millisecond), time.Millisecond)
	}
	inv, err := c.invoke(ctx, ns, task, in, c.wait, cfg)
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
// whatever becomes of ctx, until it ends, its WithTimeout passes or it is
// cancelled (Handle.Cancel).
func (c *Client) Start(ctx context.Context, ns, task string, in any, opts ...CallOption) (*Handle, error) {
	inv, err := c.invoke(ctx, ns, task, in, 0, newCallConfig(opts))
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
	started *Invocation // as the invoking request answered
}

// Wait long-polls the invocation until it is final and returns it with its
// error, as Call does. If ctx ends first, Wait returns a nil Invocation and
// a "cancelled" or "timeout" error, and the invocation goes on: cancel it
// with Cancel.
func (h *Handle) Wait(ctx context.Context) (*Invocation, error) {
	inv, err := h.c.await(ctx, h.started)
	if err != nil {
		return nil, err
	}
	return inv, inv.Err()
}

// Cancel cancels the invocation as Client.Cancel does; Wait then returns a
// "cancelled" error unless the outcome came first.
func (h *Handle) Cancel(ctx context.Context) (*Invocation, error) {
	return h.c.Cancel(ctx, h.NS, h.ID)
}

// invoke starts the task, waiting up to wait for its outcome in the request.
func (c *Client) invoke(ctx context.Context, ns, task string, in any, wait time.Duration, cfg callConfig) (*Invocation, error) {
	if ctx.Err() != nil {
		return nil, ctxError(ctx)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, &atasks.Error{Code: wire.CodeBadInput, Message: "gatewayclient: the input cannot be encoded as JSON: " + err.Error()}
	}
	q := url.Values{"wait": {wait.String()}}
	if cfg.timeout > 0 {
		q.Set("timeout", cfg.timeout.String())
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
