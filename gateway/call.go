package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
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
	runAt, err := runAtParams(r, timeout)
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	input, ok := readInput(w, r)
	if !ok {
		return
	}
	began := time.Now()
	g.extendWrite(w, max(wait, minSendWait)+wait) // sending, then waiting
	id, replayed, err := g.start(traceOf(r), callSpec{ns: ns, task: task, input: input, timeout: timeout,
		key: r.Header.Get("Idempotency-Key"), maxAttempts: maxAttempts, runAt: runAt, caller: limitKey(callerOf(r.Context()), r)}, max(wait, minSendWait))
	if err != nil {
		writeError(w, err)
		return
	}
	wait = max(0, wait-time.Since(began))
	inv, ok := g.await(r.Context(), id, wait)
	if !ok {
		writeProblem(w, codeInvocationExpired, fmt.Sprintf("invocation %q was evicted before it could be read", id))
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if !inv.State.Final() {
		g.record(r.Context(), inv) // its id goes out before its outcome
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
	runAt       time.Time       // a delayed call's time; zero: now
	caller      string          // who calls, for the cap per caller (limitKey)
}

// start invokes the task and records the invocation, its span a child of
// the one trace carries, if any; its outcome is recorded when it arrives.
// It returns once the request is sent (for AMQP: confirmed by the
// broker); if that has not happened within sendWait, it returns the
// transport's retryable "unavailable" error (the router cancels the call
// in case the broker took it after all). A call that was not sent is not
// recorded. If idempotency key c.key (optional) names an invocation of
// c.ns already, start starts nothing and returns that one's id, replayed,
// once that one is sent (or an "unavailable" error if it could not be);
// or, if that one has another task or input, an "idempotency_conflict" error.
func (g *Gateway) start(trace context.Context, c callSpec, sendWait time.Duration) (id string, replayed bool, err error) {
	r, nsCodec, codecs, err := clientlink.Namespace(g.cfg.Client, c.ns)
	if err != nil {
		return "", false, err
	}
	if c.input == nil {
		c.input = json.RawMessage("null")
	}
	if g.life.Err() != nil {
		return "", false, &atasks.Error{Code: codeShuttingDown, Message: "the gateway is shutting down", Retryable: true}
	}
	if err := g.check(c.ns, c.task, c.input); err != nil {
		return "", false, err
	}
	body, err := encodeInput(nsCodec, c.input)
	if err != nil {
		return "", false, err
	}
	var fp string
	if c.key != "" {
		fp = fingerprint(c.task, c.input)
	}
	id = router.NewID()
	ctx, cancel := context.WithCancelCause(trace)
	if c.timeout > 0 {
		ctx, cancel = withTimeout(ctx, cancel, c.timeout)
	}
	began := Invocation{ID: id, NS: c.ns, Task: c.task, State: wire.Queued, CreatedAt: time.Now().UTC()}
	if time.Until(c.runAt) > 0 {
		at := c.runAt.UTC()
		began.State, began.RunAt = wire.Scheduled, &at
	}
	prior, priorFP, err := g.store.add(began, cancel, c.key, fp, c.caller)
	switch {
	case errors.Is(err, errCallerFull):
		cancel(nil)
		return "", false, &atasks.Error{Code: codeTooManyRequests, Retryable: true, Message: fmt.Sprintf(
			"this token (or client) has %d unfinished invocations, the most it may (--max-unfinished-per-caller): try again once some have finished", g.cfg.MaxUnfinishedPerCaller)}
	case err != nil:
		cancel(nil)
		return "", false, &atasks.Error{Code: codeTooManyInvocations, Retryable: true, Message: fmt.Sprintf(
			"the gateway tracks %d unfinished invocations, the most it may (--max-unfinished): try again once some have finished", g.cfg.MaxUnfinished)}
	}
	if prior == "" && c.key != "" {
		won, err := g.claim(trace, c.ns, wire.Claim{Key: c.key, Fingerprint: fp, ID: id}, sendWait)
		if err != nil {
			g.store.drop(id)
			cancel(nil)
			return "", false, errNotSent(c.key)
		}
		if won.ID != id { // another replica's call claimed the key first
			g.store.drop(id)
			prior, priorFP = won.ID, won.Fingerprint
		}
	}
	if prior != "" {
		cancel(nil)
		if priorFP != fp {
			return "", false, &atasks.Error{Code: codeIdempotencyConflict, Message: fmt.Sprintf("idempotency key %q names invocation %q, of another task or input", c.key, prior)}
		}
		if !g.store.awaitSent(prior, sendWait) {
			return "", false, errNotSent(c.key)
		}
		return prior, true, nil
	}
	req := &wire.Request{ID: id, NS: c.ns, Task: c.task, Codec: nsCodec.Name(), Body: body, MaxAttempts: c.maxAttempts, RunAt: c.runAt}
	p := r.Start(ctx, req, router.StartOptions{Observe: g.observe, SendWithin: sendWait})
	if err := p.Sent(); err != nil {
		g.store.drop(id)
		cancel(nil)
		return "", false, g.hint(c.ns, c.task, err)
	}
	g.store.sent(id)
	g.metrics.Invoking.Began(c.ns, c.task)
	p.OnDone(func(rep *wire.Reply) { g.finish(began, rep, codecs) })
	if c.key != "" {
		g.record(trace, began) // other replicas replay its key from now on
	}
	return id, false, nil
}

// errNotSent is the error of a call whose idempotency key named a call
// that could not be sent.
func errNotSent(key string) error {
	return &atasks.Error{Code: wire.CodeUnavailable, Retryable: true, Message: fmt.Sprintf(
		"the call with idempotency key %q could not be sent (the broker is unreachable or blocks publishing); nothing was started under that key", key)}
}

// hint adds to a "task_not_found" error where the namespace's tasks are
// listed and which of them are named most like task.
func (g *Gateway) hint(ns, task string, err error) error {
	e := asError(err)
	if e.Code != wire.CodeTaskNotFound {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	tasks, _ := g.cfg.Client.Catalog(ctx, ns)
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.Name
	}
	msg := fmt.Sprintf("no worker serves task %q in namespace %q; GET /v1/ns/%s/tasks lists those served", task, ns, url.PathEscape(ns))
	if near := nearest(task, names, 3); len(near) > 0 {
		msg += "; did you mean " + strings.Join(near, ", ") + "?"
	}
	return &atasks.Error{Code: e.Code, Message: msg, Details: e.Details, Retryable: e.Retryable}
}

// nearest returns up to n of names within a few edits of name, nearest first.
func nearest(name string, names []string, n int) []string {
	limit := max(1, len(name)/4)
	type scored struct {
		name string
		d    int
	}
	var near []scored
	for _, c := range names {
		if d := editDistance(name, c); d <= limit {
			near = append(near, scored{c, d})
		}
	}
	slices.SortStableFunc(near, func(a, b scored) int { return a.d - b.d })
	out := make([]string, 0, n)
	for _, s := range near[:min(n, len(near))] {
		out = append(out, s.name)
	}
	return out
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
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

// withTimeout gives ctx, cancelled by cancel, the invocation's timeout d:
// a deadline, which its workers hold too.
func withTimeout(ctx context.Context, cancel context.CancelCauseFunc, d time.Duration) (context.Context, context.CancelCauseFunc) {
	dl := time.Now().Add(d)
	tctx, tcancel := context.WithDeadlineCause(ctx, dl, wire.DeadlinePassed())
	return tctx, func(cause error) { cancel(cause); tcancel() }
}

// Why the gateway cancels an invocation.
var (
	errDeleted          = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled by a DELETE of the invocation"}
	errWSCancel         = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled by a WebSocket cancel"}
	errWSConnectionGone = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled: the WebSocket connection that made the call closed"}
)

// observe records a state change of an invocation.
func (g *Gateway) observe(rep *wire.Reply) { g.observeAt(rep, time.Now()) }

// observeAt records a state change of an invocation made at time at.
func (g *Gateway) observeAt(rep *wire.Reply, at time.Time) {
	g.store.update(rep.ID, func(inv *Invocation) {
		if rep.State == wire.Queued && inv.State == wire.Running && rep.Attempt <= inv.Attempt {
			return // a delayed call's "queued" overtaken by its "running" (another connection sent it)
		}
		if inv.StartedAt == nil && rep.State != wire.Queued { // queued: a delayed call's time came
			at := at.UTC()
			inv.StartedAt = &at
		}
		inv.State = rep.State
		if rep.Worker != "" {
			inv.Worker = rep.Worker
		}
		if rep.Attempt > 0 {
			inv.Attempt = rep.Attempt
		}
		if rep.Child != "" && len(inv.Children) < wire.MaxChildren {
			inv.Children = append(inv.Children, rep.Child)
		}
	})
	if rep.Child != "" {
		g.store.learnChild(rep.ID, wire.ChildState{ID: rep.Child, NS: rep.ChildNS, Task: rep.ChildTask, State: wire.Queued})
	}
}

// finish records the outcome rep of invocation began, and counts it in the
// metrics before anyone waiting for it hears of it (or anyway, if its
// record is gone).
func (g *Gateway) finish(began Invocation, rep *wire.Reply, codecs *codec.Registry) {
	result, err := resultOf(rep, codecs)
	g.store.endChildren(began.ID, rep.Children)
	end := func(inv *Invocation) {
		ended(inv, rep, result, err, time.Now())
		g.metrics.Invoking.Ended(inv.NS, inv.Task, string(inv.State), inv.FinishedAt.Sub(inv.CreatedAt))
	}
	if !g.store.update(began.ID, end) {
		end(&began)
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
	settleAt(inv, result, err, time.Now())
}

// settleAt records an outcome reached at time at in inv.
func settleAt(inv *Invocation, result json.RawMessage, err error, at time.Time) {
	at = at.UTC()
	inv.FinishedAt = &at
	if err != nil {
		e := asError(err)
		inv.State, inv.Error, inv.Result = e.StateOf(), e, nil
		return
	}
	inv.State, inv.Result, inv.Error = "succeeded", result, nil
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
