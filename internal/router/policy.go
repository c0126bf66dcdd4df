package router

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Handler is a served task: its function, its policy and the schemas of
// its input and output.
type Handler struct {
	Fn     HandlerFunc
	Policy Policy
	Schema wire.Schema
}

// Policy is how a task is run: how long each attempt may take, and which
// failures are tried again, how often and after what delay.
type Policy struct {
	// Timeout bounds each attempt; the caller's deadline wins when sooner.
	// Zero: no bound of the task's own.
	Timeout time.Duration
	// MaxAttempts is how many attempts of an invocation may end in a
	// retryable failure before the last one's failure is its outcome;
	// below 2 it never retries. Runs cut short by a crash or a graceful
	// stop do not count.
	MaxAttempts int
	// Backoff is the delay before attempt n+1 after attempt n failed:
	// Initial·Multiplier^(n-1), at most Max, then ± Jitter of itself.
	Initial, Max time.Duration
	Multiplier   float64
	Jitter       float64 // 0 to 1
	// Volatile turns durability off (atasks.Durable(false)): its children's
	// outcomes are not journaled, and a re-run calls them all again.
	Volatile bool
}

// MaxRetryDelay caps every retry delay, whatever the policy says.
const MaxRetryDelay = 24 * time.Hour

// delay returns the delay before the attempt after attempt n.
func (p Policy) delay(n int) time.Duration {
	limit := float64(MaxRetryDelay)
	if p.Max > 0 {
		limit = min(limit, float64(p.Max))
	}
	d := float64(p.Initial)
	for range n - 1 {
		if d *= p.Multiplier; d >= limit {
			break
		}
	}
	d = min(d, limit)
	d += d * p.Jitter * (2*rand.Float64() - 1)
	return time.Duration(max(d, 0))
}

// retry tries to have req run again after attempt req.Attempt failed with
// e: if the policy and the caller allow another attempt, the error is
// retryable, the invocation was not cancelled (ctx is the transport's,
// before the task's own timeout), the caller's deadline leaves time for
// it and the delivery can retry. It returns the Queued reply that says
// so, or nil.
func (r *Router) retry(ctx context.Context, req *wire.Request, d wire.Delivery, p Policy, e *wire.Error) *wire.Reply {
	limit := p.MaxAttempts
	if req.MaxAttempts > 0 {
		limit = min(limit, req.MaxAttempts)
	}
	// Only attempts that failed count against the limit, not runs cut short
	// by a crash or a graceful stop.
	failures := req.Retries + 1
	rt, ok := d.(wire.Retrier)
	if !e.Retryable || failures >= limit || !ok || ctx.Err() != nil { // ctx: cancelled, or past the caller's deadline
		return nil
	}
	delay := p.delay(failures)
	if !req.Deadline.IsZero() && time.Now().Add(delay).After(req.Deadline) {
		return nil // it would time out before it ran
	}
	ctx, cancel := context.WithTimeout(context.Background(), retryTimeout)
	defer cancel()
	if err := rt.Retry(ctx, req.Attempt+1, delay); err != nil {
		r.cfg.Logger.Warn("retry failed: the attempt's failure is the outcome", "task", req.Task, "invocation_id", req.ID,
			"trace_id", wire.TraceID(req.TraceParent), "attempt", req.Attempt, "err", err)
		return nil
	}
	r.cfg.Metrics.Retried(r.cfg.NS, req.Task)
	return &wire.Reply{ID: req.ID, Task: req.Task, State: wire.Queued, Attempt: req.Attempt + 1, Worker: r.cfg.Worker, Err: e}
}

// retryTimeout bounds scheduling a retry.
const retryTimeout = 10 * time.Second
