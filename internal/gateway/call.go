package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/clientlink"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/propagation"
)

// minSendWait is the least time a call may take to be sent (for AMQP:
// confirmed by the broker), even when its caller waits less for the outcome.
const minSendWait = time.Second

// invoke starts a task with the request body as its input and waits for
// the outcome up to ?wait=: 200 with the outcome, else 202 with a Location.
// A repeated Idempotency-Key answers the invocation it names instead. A
// call that cannot be sent within its wait (at least minSendWait), say
// while the broker is away, is 503 "unavailable": it was not accepted.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	ns, task := chi.URLParam(r, "ns"), chi.URLParam(r, "task")
	wait, err := g.waitParam(r)
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	timeout, err := durationParam(r, "timeout")
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	maxAttempts, err := intParam(r, "max_attempts") // at least 1: validated against the document
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	input, ok := readInput(w, r)
	if !ok {
		return
	}
	began := time.Now()
	id, replayed, err := g.start(traceOf(r), callSpec{ns: ns, task: task, input: input, timeout: timeout,
		key: r.Header.Get("Idempotency-Key"), maxAttempts: maxAttempts}, max(wait, minSendWait))
	if err != nil {
		writeError(w, err)
		return
	}
	wait = max(0, wait-time.Since(began))
	g.extendWrite(w, wait)
	inv, ok := g.await(r.Context(), id, wait)
	if !ok {
		writeProblem(w, codeInvocationExpired, fmt.Sprintf("invocation %q was evicted before it could be read", id))
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if !inv.State.Final() {
		w.Header().Set("Location", location(inv))
		writeJSON(w, http.StatusAccepted, inv)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// readInput reads the body, which validate has limited already: the
// task's input as one JSON value; an empty body is null.
func readInput(w http.ResponseWriter, r *http.Request) (json.RawMessage, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeProblem(w, codeBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return json.RawMessage("null"), true
	}
	if err := codec.CheckJSON(body); err != nil {
		writeProblem(w, codeMalformedJSON, "the body is not one JSON value: "+err.Error())
		return nil, false
	}
	return body, true
}

// callSpec is what starts an invocation, from a POST or a WebSocket call.
type callSpec struct {
	ns, task    string
	input       json.RawMessage // one valid JSON value
	timeout     time.Duration   // the invocation's deadline from now; 0: none
	key         string          // idempotency key; "" for none
	maxAttempts int             // the caller's cap on attempts; 0: the task's own
}

// start invokes the task and records the invocation, its span a child of
// the one trace carries, if any; its outcome is recorded when it arrives.
// It returns once the request is sent (for AMQP: confirmed by the
// broker); if that has not happened within sendWait, it gives the call
// up (cancelling it, in case the broker took it after all) and returns a
// retryable "unavailable" error. A call that was not sent is not
// recorded. If idempotency key c.key (optional) names an invocation of
// c.ns already, start starts nothing and returns that one's id, replayed;
// or, if that one has another task or input, an "idempotency_conflict" error.
func (g *Gateway) start(trace context.Context, c callSpec, sendWait time.Duration) (id string, replayed bool, err error) {
	r, nsCodec, codecs, err := clientlink.Namespace(g.cfg.Client, c.ns)
	if err != nil {
		return "", false, err
	}
	if c.input == nil {
		c.input = json.RawMessage("null")
	}
	body, err := encodeInput(nsCodec, c.input)
	if err != nil {
		return "", false, err
	}
	if g.life.Err() != nil {
		return "", false, &atasks.Error{Code: codeShuttingDown, Message: "the gateway is shutting down", Retryable: true}
	}
	var fp string
	if c.key != "" {
		fp = fingerprint(c.task, c.input)
	}
	id = router.NewID()
	ctx, cancel := context.WithCancel(trace)
	if c.timeout > 0 {
		ctx, cancel = withTimeout(ctx, cancel, c.timeout)
	}
	began := Invocation{ID: id, NS: c.ns, Task: c.task, State: "queued", CreatedAt: time.Now().UTC()}
	prior, priorFP, err := g.store.add(began, cancel, c.key, fp)
	if err != nil {
		cancel()
		return "", false, &atasks.Error{Code: codeTooManyInvocations, Retryable: true, Message: fmt.Sprintf(
			"the gateway tracks %d unfinished invocations, the most it may (--max-unfinished): try again once some have finished", g.cfg.MaxUnfinished)}
	}
	if prior != "" {
		cancel()
		if priorFP != fp {
			return "", false, &atasks.Error{Code: codeIdempotencyConflict, Message: fmt.Sprintf("idempotency key %q names invocation %q, of another task or input", c.key, prior)}
		}
		return prior, true, nil
	}
	var gaveUp atomic.Bool
	timer := time.AfterFunc(sendWait, func() { gaveUp.Store(true); cancel() })
	req := &wire.Request{ID: id, NS: c.ns, Task: c.task, Codec: nsCodec.Name(), Body: body, MaxAttempts: c.maxAttempts}
	p := r.Start(ctx, req, g.observe)
	timer.Stop()
	sendErr := p.Sent()
	if gaveUp.Load() {
		sendErr = &atasks.Error{Code: wire.CodeUnavailable, Retryable: true,
			Message: fmt.Sprintf("the call could not be sent within %v: the broker is unreachable or blocks publishing; nothing was started", sendWait)}
		g.cancelLost(r, id)
	}
	if sendErr != nil {
		g.store.drop(id)
		cancel()
		return "", false, sendErr
	}
	g.metrics.Invoking.Began(c.ns, c.task)
	p.OnDone(func(rep *wire.Reply) { g.finish(began, rep, codecs) })
	return id, false, nil
}

// cancelLost cancels invocation id in the background: the gateway gave up
// sending it, but the broker may have taken it.
func (g *Gateway) cancelLost(r *router.Router, id string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = r.Cancel(ctx, id)
	}()
}

// encodeInput encodes a JSON input with the namespace's codec: JSON passes
// through as it came.
func encodeInput(c wire.Codec, input json.RawMessage) ([]byte, error) {
	if c.Name() == "json" {
		return input, nil
	}
	v, err := codec.DecodeJSON(input)
	if err == nil {
		var b []byte
		if b, err = c.Marshal(v); err == nil {
			return b, nil
		}
	}
	return nil, &atasks.Error{Code: wire.CodeBadInput, Message: fmt.Sprintf("the input cannot be encoded with codec %q: %v", c.Name(), err)}
}

// traceOf returns a context carrying the W3C trace context of r's
// traceparent header, if any, and nothing else of r: the invocation
// outlives the request.
func traceOf(r *http.Request) context.Context {
	return propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
}

// fingerprint identifies a call by its task and JSON input, whatever its
// white space and the order of its objects' members.
func fingerprint(task string, input json.RawMessage) string {
	canonical, _ := codec.Canonical(input) // cannot fail: input was checked
	sum := sha256.Sum256(append([]byte(task+"\x00"), canonical...))
	return string(sum[:])
}

func withTimeout(ctx context.Context, cancel context.CancelFunc, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, tcancel := context.WithTimeout(ctx, d)
	return tctx, func() { tcancel(); cancel() }
}

// observe records a state change of an invocation.
func (g *Gateway) observe(rep *wire.Reply) {
	g.store.update(rep.ID, func(inv *Invocation) {
		if inv.StartedAt == nil {
			now := time.Now().UTC()
			inv.StartedAt = &now
		}
		inv.State = rep.State
		if rep.Worker != "" {
			inv.Worker = rep.Worker
		}
		if rep.Attempt > 0 {
			inv.Attempt = rep.Attempt
		}
		if rep.Child != "" {
			inv.Children = append(inv.Children, rep.Child)
		}
	})
}

// finish records the outcome rep of invocation began, and counts it in the
// metrics before anyone waiting for it hears of it (or anyway, if its
// record is gone).
func (g *Gateway) finish(began Invocation, rep *wire.Reply, codecs *codec.Registry) {
	result, err := resultOf(rep, codecs)
	ended := func(inv *Invocation) {
		if rep.Worker != "" {
			inv.Worker = rep.Worker
		}
		if rep.Attempt > 0 {
			inv.Attempt = rep.Attempt
		}
		settle(inv, result, err)
		g.metrics.Invoking.Ended(inv.NS, inv.Task, string(inv.State), inv.FinishedAt.Sub(inv.CreatedAt))
	}
	if !g.store.update(began.ID, ended) {
		ended(&began)
	}
}

// resultOf returns the output of a final reply as JSON, or its error.
// JSON passes through, once checked.
func resultOf(rep *wire.Reply, codecs *codec.Registry) (json.RawMessage, error) {
	if rep.Err != nil {
		return nil, rep.Err
	}
	if rep.State != wire.Succeeded {
		return nil, &atasks.Error{Code: wire.CodeBadOutput, Message: fmt.Sprintf("the invocation ended %s without an error", rep.State)}
	}
	if rep.Codec == "json" || rep.Codec == "" {
		if !json.Valid(rep.Body) {
			return nil, &atasks.Error{Code: wire.CodeBadOutput, Message: "the output is not valid JSON"}
		}
		return rep.Body, nil
	}
	c, err := codecs.Get(rep.Codec)
	if err != nil {
		return nil, err
	}
	var out any
	if err := c.Unmarshal(rep.Body, &out); err != nil {
		return nil, &atasks.Error{Code: wire.CodeBadOutput, Message: err.Error()}
	}
	return jsonValue(out)
}

// settle records an outcome in inv: result, or the failure err.
func settle(inv *Invocation, result json.RawMessage, err error) {
	now := time.Now().UTC()
	inv.FinishedAt = &now
	if err != nil {
		e := asError(err)
		inv.State, inv.Error = e.StateOf(), e
		return
	}
	inv.State, inv.Result = "succeeded", result
}

// Adopt records the outcome of an invocation the gateway does not know,
// typically one it started before it restarted; give it to
// atasks.Config.OnOrphan. Outcomes of invocations it knows are ignored.
func (g *Gateway) Adopt(o atasks.Outcome) {
	var out any
	err := o.Decode(&out)
	var result json.RawMessage
	if err == nil {
		result, err = jsonValue(out)
	}
	inv := Invocation{ID: o.ID, NS: o.NS, Task: o.Task, CreatedAt: time.Now().UTC()}
	settle(&inv, result, err)
	g.store.adopt(inv)
}
