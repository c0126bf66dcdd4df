// Package wire holds what crosses process boundaries in atasks: the request
// and reply envelopes, invocation states, the error shape, and the Codec and
// Transport interfaces that transports and codecs implement.
//
// It depends on the standard library only, so transports outside this module
// can implement it. Users normally reach these names through the aliases in
// package atasks.
package wire

import (
	"context"
	"encoding/json"
	"time"
)

// State is where an invocation is in its life.
type State string

// The states of an invocation. Succeeded, Failed, Cancelled and TimedOut are final.
const (
	Scheduled State = "scheduled" // a delayed call waits for its time (Request.RunAt)
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
	TimedOut  State = "timed_out"
)

// Final reports whether no further state can follow s.
func (s State) Final() bool {
	switch s {
	case Succeeded, Failed, Cancelled, TimedOut:
		return true
	}
	return false
}

// Request asks some server of a task to run one invocation of it.
type Request struct {
	ID          string    // invocation id, unique; chosen by the caller
	NS          string    // namespace
	Task        string    // task name within NS
	Codec       string    // name of the codec Body is encoded with; the reply uses the same
	Body        []byte    // the task's input
	Deadline    time.Time // zero means none; the server's context ends then
	Parent      string    // invocation id of the calling task, if any
	TraceParent string    // W3C trace context of the caller, if any
	Attempt     int       // delivery attempt, from 1; set by the serving transport
	Retries     int       // how many earlier attempts failed and were retried (see Retrier); set by the serving transport
	MaxAttempts int       // if > 0, the caller's cap on attempts, below the task's own
	Quiet       bool      // the caller ignores state changes: servers need not send any (Delivery.Notify)
	Journal     string    // if set, the journal (see Journaler) that servers copy the outcome to, unless cancelled
	Resent      bool      // sent again by a durable parent's re-run: a cancel of an earlier copy (the parent's earlier run ending) does not apply
	Replay      bool      // it may have run before and kept outcomes of its children in the journal: read them as a re-run does
	Sent        time.Time // when the request was first sent (by a re-run parent: no later than that), by the sender's clock; zero: now
	RunAt       time.Time // zero means now; else the transport holds the request until then, and it runs no earlier
	ReplyTo     string    // the caller's address; set and read by transports only
}

// AwaitRunAt returns once r's RunAt has come (at once if it has, or if
// r has none), or ctx's cause if ctx ends first: for a transport that
// holds a delayed request itself, or receives it a moment early.
func (r *Request) AwaitRunAt(ctx context.Context) error {
	wait := time.Until(r.RunAt)
	if r.RunAt.IsZero() || wait <= 0 {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Reply tells a caller about one invocation: state changes while it runs
// and, last, its outcome. A reply whose State is final is the outcome.
type Reply struct {
	ID    string
	Task  string // the task's name, when the server knows it
	State State  // Running while in progress, Queued while a retry waits, then a final state
	Child string // with State Running: the invocation started awaiting invocation Child
	// ChildNS and ChildTask are the namespace and task of Child.
	ChildNS, ChildTask string
	Worker             string // who runs it (ran it, with a final state)
	Attempt            int    // the attempt running, or with State Queued the next one; 0 if unknown
	Codec              string // codec of Body
	Body               []byte // the task's output when State is Succeeded
	Err                *Error // the failure when State is Failed, Cancelled or TimedOut; with Queued, the last attempt's
	// Children are, in a final reply, the invocations this one called, as
	// it last saw them: the first MaxChildren, in the order it called them.
	Children []ChildState
}

// MaxChildren is how many children a final reply lists at most.
const MaxChildren = 1000

// ChildState is a child invocation as its parent last saw it: called
// (State Queued) or ended.
type ChildState struct {
	ID    string `json:"id"`
	NS    string `json:"ns"`
	Task  string `json:"task"`
	State State  `json:"state"`
	Code  string `json:"code,omitempty"` // the error's code, when it did not succeed
}

// Codec encodes task inputs and outputs. Implementations must be safe for
// concurrent use. Its name travels with every message so that peers decode
// it with the same codec.
type Codec interface {
	// Name identifies the codec on the wire, e.g. "json" or "cbor".
	Name() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into the value v points to.
	Unmarshal(data []byte, v any) error
}

// Handler runs requests for a serving transport.
type Handler interface {
	// Handle runs req and returns its outcome, which the transport delivers
	// to the caller before it acknowledges req. ctx ends at req.Deadline,
	// when the caller cancels the invocation, or when the transport stops
	// serving. Handle uses d to report progress and flow.
	Handle(ctx context.Context, req *Request, d Delivery) *Reply
}

// Delivery is a serving transport's side of one request being handled.
type Delivery interface {
	// Notify sends a non-final reply (a state change) to the caller. Best effort.
	Notify(r *Reply)
	// Suspend says the invocation stopped computing to await other tasks;
	// Resume says it computes again. A transport that bounds how many
	// requests it holds lets more in while some are suspended, so that
	// awaited children are never stuck behind their parents. Resume must not
	// block: the bound may be exceeded for a moment.
	Suspend()
	Resume()
}

// TaskInfo describes a task some server offers.
type TaskInfo struct {
	Name    string `json:"name"`
	Servers int    `json:"servers"` // how many processes serve it now
	Schema  Schema `json:"schema"`  // as its servers announce it
}

// Schema gives the JSON Schemas (draft 2020-12) of a task's input and
// output; either is empty when unknown.
type Schema struct {
	Input  json.RawMessage `json:"input,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
}

// Describer is implemented by handlers that know the schemas of the
// tasks they serve, which serving transports announce with the tasks.
type Describer interface {
	// Describe returns the schema of task; empty when unknown.
	Describe(task string) Schema
}

// Transport carries requests from callers to servers and replies back.
// A process that only calls never serves: it opens the transport but never
// calls Serve. Implementations must be safe for concurrent use.
type Transport interface {
	// Open connects. Replies to requests this process sends are passed to
	// deliver, which must not block for long.
	Open(ctx context.Context, deliver func(*Reply)) error
	// Send hands req to the transport; when it returns nil the transport is
	// responsible for delivering it. It returns an *Error with code
	// "task_not_found" when it knows that no server offers req.Task.
	Send(ctx context.Context, req *Request) error
	// Cancel asks whichever server runs invocation id to cancel it.
	Cancel(ctx context.Context, id string) error
	// Serve starts passing requests for the named tasks to h, each in its
	// own goroutine, until Close. The handler's context ends at the
	// request's deadline; a request whose deadline has passed, or that was
	// cancelled before it reached a handler, is answered "timeout" or
	// "cancelled" without calling h.
	Serve(ctx context.Context, tasks []string, h Handler) error
	// Unserve stops serving for good: it takes no new requests, lets
	// running handlers finish until ctx ends, then returns the requests of
	// those still running to be run elsewhere (where the transport can),
	// cancels them and waits for them. The transport goes on carrying this
	// process's calls. It returns ctx's error when it had to cut handlers
	// short; without Serve it does nothing.
	Unserve(ctx context.Context) error
	// Catalog lists the tasks that servers reachable through the transport offer.
	Catalog(ctx context.Context) ([]TaskInfo, error)
	// Close unserves (see Unserve) unless that was done, and disconnects.
	Close(ctx context.Context) error
}

// Checker is implemented by transports that can tell whether they can
// carry messages now, e.g. whether they are connected to their broker.
type Checker interface {
	// Check returns nil when the transport can carry messages.
	Check(ctx context.Context) error
}

// Monitor is implemented by transports that show monitors, such as the
// gateway's dashboard, what the servers of their namespace do.
type Monitor interface {
	// Report tells monitors about an invocation this process serves. It is
	// best effort and must not block for long.
	Report(a Activity)
	// Watch passes every Activity that servers of the namespace report to
	// fn (which must not block for long) until ctx ends.
	Watch(ctx context.Context, fn func(Activity)) error
	// Servers lists the live servers of the namespace.
	Servers(ctx context.Context) ([]ServerInfo, error)
}

// Activity is a server's report of an invocation it serves: it has run for
// a while (State Running), or it ended (a final State).
type Activity struct {
	ID     string    `json:"id"`
	Parent string    `json:"parent,omitempty"`
	Task   string    `json:"task"`
	Worker string    `json:"worker,omitempty"`
	State  State     `json:"state"`
	Start  time.Time `json:"start"`          // when it started running
	End    time.Time `json:"end,omitzero"`   // with a final State
	Code   string    `json:"code,omitempty"` // the error's code, if it failed
}

// ServerInfo describes one serving process of a namespace, as it last
// announced itself.
type ServerInfo struct {
	ID     string   `json:"id"`
	Worker string   `json:"worker,omitempty"`
	Tasks  []string `json:"tasks"`
	Busy   int      `json:"busy"` // compute slots taken
	Size   int      `json:"size"` // compute slots in all; 0: unbounded
}

// Retrier is implemented by deliveries whose transport can deliver the
// request again later. A handler that retries calls Retry and, if it
// returns nil, answers with a Reply in State Queued: the transport passes
// it to the caller as a state change and settles the delivery without an
// outcome; the outcome comes from a later attempt.
type Retrier interface {
	// Retry makes the request be delivered again as attempt attempt after
	// delay, durably where the transport can (AMQP: in the broker).
	Retry(ctx context.Context, attempt int, delay time.Duration) error
}

// Loader is implemented by handlers that know their worker's name and
// compute slots, which serving transports report in ServerInfo.
type Loader interface {
	// Load returns the worker's name, how many compute slots are busy, and
	// how many there are.
	Load() (worker string, busy, size int)
}

// TraceID returns the trace id in a W3C traceparent
// ("00-<trace id>-<span id>-<flags>"), or "" if it has none.
func TraceID(traceparent string) string {
	if len(traceparent) < 35 || traceparent[2] != '-' {
		return ""
	}
	return traceparent[3:35]
}

// History is implemented by transports whose calls are recorded in a log
// that the processes making them share (gateway replicas): the calls they
// record, every reply to the calls they send and every claim of an
// idempotency key, in one order that all of them read, retained for a
// while.
type History interface {
	// Follow passes each event of the log to fn, in the log's order, from
	// the oldest one retained; fn must not block for long. It must be
	// called before Open (which starts the reading), else it returns an
	// error.
	Follow(fn func(Event)) error
	// Sync returns once every event appended before it was called has
	// been passed to the Follow function.
	Sync(ctx context.Context) error
	// Claim appends c to the log and returns once it has been passed to
	// the Follow function. Of the claims of one key, the first in the
	// log's order names the invocation.
	Claim(ctx context.Context, c Claim) error
	// Record appends that call req, which this transport sent, was
	// accepted, and returns once the log holds it. A call that is not
	// recorded is known to the log by its replies alone: record one whose
	// id others may ask about before its outcome.
	Record(ctx context.Context, req *Request) error
}

// Historian is implemented by transports that may keep a History.
type Historian interface {
	// History returns the transport's History, or nil if it keeps none.
	History() History
}

// Event is one entry of a History: exactly one of Request, Reply and
// Claim is set.
type Event struct {
	At      time.Time // when it happened, by its writer's clock (to the second for some)
	Request *Request  // a call recorded as accepted: its ID, NS, Task and Parent
	Reply   *Reply    // a state change or an outcome of a request in the log
	Claim   *Claim    // a claim of an idempotency key
}

// Claim says that idempotency key Key names invocation ID in its
// namespace, a call whose task and input have fingerprint Fingerprint.
type Claim struct {
	Key         string
	Fingerprint string
	ID          string
}

// Journaler is implemented by transports that keep a journal: a log of
// the outcomes of durable parents' children, so that a parent that runs
// again after a crash gets back the outcomes of the children it had
// awaited instead of running them again (docs/DURABILITY.md).
type Journaler interface {
	// Journal names the namespace's journal, for Request.Journal; "" when
	// this transport keeps none.
	Journal() string
	// Kept reads the namespace's journal, from the outcomes appended at
	// since (or a little earlier), or if from is positive from position
	// from, to those appended before Kept was called, and returns the
	// outcomes of the children of invocation parent, by child id (the
	// first of each), and the position to read from next time.
	Kept(ctx context.Context, parent string, since time.Time, from int64) (kept map[string]*Reply, next int64, err error)
	// Adopt asks the servers of the namespace whether one of them runs
	// invocation id now, and returns its task ("" when no server said so
	// in time). If that is task, the server sends the outcome to this
	// transport too, as if this process had sent the request.
	Adopt(ctx context.Context, id, task string) (running string, err error)
}
