package atasks

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/internal/schema"
	"github.com/atasks-go/atasks/wire"
)

// DefaultNamespace is the namespace tasks are defined in unless InNamespace says otherwise.
const DefaultNamespace = "default"

// Task is a typed task definition: a Go function that runs on whichever
// worker serves its namespace. Call it like a function with Call, or start it
// with Start and await the Future later.
type Task[In, Out any] struct {
	ns, name string
}

// DefineOption changes how Define registers a task.
type DefineOption func(*definition)

type definition struct {
	ns, name string
	policy   router.Policy
	registry *Registry
	open     bool // the input takes fields its type lacks
}

// Name sets the task's name. It defaults to the Go package and function name,
// e.g. "demo.add" for func add in package demo.
func Name(name string) DefineOption { return func(d *definition) { d.name = name } }

// InNamespace places the task in namespace ns. It defaults to "default".
func InNamespace(ns string) DefineOption { return func(d *definition) { d.ns = ns } }

// AllowUnknownFields makes the task take inputs with fields its input
// type lacks (they are dropped), instead of failing them with "bad_input".
func AllowUnknownFields() DefineOption { return func(d *definition) { d.open = true } }

// InRegistry registers the task in r instead of the program's default
// registry, for a Worker whose WorkerConfig.Registry is r: a test's fake
// of a task, defined under the real one's name (Name(Real.Name())), or one
// tenant's tasks among others'.
func InRegistry(r *Registry) DefineOption { return func(d *definition) { d.registry = r } }

// Timeout bounds each attempt of the task to d; a caller's deadline that
// comes sooner wins. When it passes, the attempt's context ends and it
// fails with code "timeout" (state timed_out). It defaults to none.
func Timeout(d time.Duration) DefineOption { return func(def *definition) { def.policy.Timeout = d } }

// Durable says whether the task's invocations are durable parents, as
// they are by default: a worker that dies under one does not make the
// children whose outcomes it had run again. The parent runs again
// elsewhere, and its k-th call of a child whose outcome was kept gets
// that outcome back at once; a child still running on another worker is
// awaited, not started again; one queued, or running on the dead worker,
// may run twice (docs/DURABILITY.md says exactly when). It costs
// the broker a journal write per child outcome (docs/DURABILITY.md).
// Durable(false) skips it, for a task whose children are cheap and safe
// to run again: they run again with it, at least once, as plain calls do.
//
// Replay needs one rule: given the same input and the same outcomes of
// its children, a durable task calls the same tasks in the same order.
// A re-run that calls another task at some position than its first run
// did fails with code "nondeterministic" (ErrNondeterministic), naming
// both, whatever the task then returns.
func Durable(on bool) DefineOption { return func(d *definition) { d.policy.Volatile = !on } }

// RetryPolicy says how often and after what delays a task's invocation
// runs again when an attempt fails with a retryable error (Error.Retryable;
// other failures are final at once).
type RetryPolicy struct {
	// MaxAttempts is how many attempts may fail, the first included, before
	// the last failure is the outcome. Callers may lower it (MaxAttempts).
	// Runs cut short by a crashed worker or a graceful stop do not count,
	// though the invocation's attempt number does.
	MaxAttempts int
	// Initial is the delay before the second attempt; each next delay is
	// Multiplier times the last (default 2), at most Max (and at most 24 h
	// whatever Max says), and varies randomly by ± Jitter of itself (0 to 1;
	// default 0.2).
	Initial, Max time.Duration
	Multiplier   float64
	Jitter       float64
}

// Retry makes the task retry retryable failures by p. Over AMQP the delay
// is held by the broker (a per-delay queue whose messages expire back to
// the task's queue), so a retry survives the restart of any process. The
// attempt number is in InvocationFrom(ctx).Attempt.
func Retry(p RetryPolicy) DefineOption {
	return func(d *definition) {
		if p.Multiplier == 0 {
			p.Multiplier = 2
		}
		if p.Jitter == 0 {
			p.Jitter = 0.2
		}
		d.policy.MaxAttempts, d.policy.Initial, d.policy.Max = p.MaxAttempts, p.Initial, p.Max
		d.policy.Multiplier, d.policy.Jitter = p.Multiplier, min(max(p.Jitter, 0), 1)
	}
}

// Define registers fn as a task and returns its definition. Define it once,
// usually in a package-level var, in every program that calls or serves it:
// callers use the definition for its name and types, workers to run fn.
//
// Its input and output get JSON Schemas from their Go types, which
// workers announce with the task and the gateway serves and checks calls
// against: fields by their json names, required unless omitempty,
// descriptions, enums and formats from jsonschema struct tags
// (`jsonschema:"description=…,enum=a,enum=b,format=email"`), no fields
// but those of the type (unless AllowUnknownFields). A worker checks every
// input against its schema before decoding it, whoever sent it: a
// missing field, an unknown one, a wrong type or a null in place of an
// object fail the call with "bad_input", naming each field (Error.Details:
// {"errors":[{"pointer":"/a","detail":"…"}]}).
// Define panics if the registry (the program's default one, unless
// InRegistry) has a task of that name in the namespace already, or if fn
// is a function literal or method and no Name is given.
func Define[In, Out any](fn func(context.Context, In) (Out, error), opts ...DefineOption) *Task[In, Out] {
	var d definition
	for _, o := range opts {
		o(&d)
	}
	if d.ns == "" {
		d.ns = DefaultNamespace
	}
	if d.name == "" {
		d.name = funcName(fn)
	}
	if d.registry == nil {
		d.registry = defaultRegistry
	}
	sch := wire.Schema{Input: schema.Of(reflect.TypeFor[In](), d.open), Output: schema.Of(reflect.TypeFor[Out](), false)}
	d.registry.add(d.ns, d.name, router.Handler{Fn: handlerOf(fn, d.name, sch.Input), Policy: d.policy, Schema: sch})
	return &Task[In, Out]{ns: d.ns, name: d.name}
}

// NS returns the task's namespace.
func (t *Task[In, Out]) NS() string { return t.ns }

// Name returns the task's name within its namespace.
func (t *Task[In, Out]) Name() string { return t.name }

// Call runs the task with in on some worker and waits for its output.
// ctx must carry a Client (see WithClient); inside a task it does. ctx's
// deadline and cancellation reach the task, and if ctx belongs to a running
// task, the call is that invocation's child.
func (t *Task[In, Out]) Call(ctx context.Context, in In, opts ...CallOption) (Out, error) {
	return t.Start(ctx, in, opts...).Wait(ctx)
}

// Start sends the task with in to some worker and returns at once. Await the
// outcome with the future's Wait or WaitAll. When ctx ends before the outcome
// arrives, the task is cancelled.
func (t *Task[In, Out]) Start(ctx context.Context, in In, opts ...CallOption) *Future[Out] {
	var cc callConfig
	for _, o := range opts {
		o(&cc)
	}
	r, err := routerFor(ctx, t.ns)
	if err != nil {
		return &Future[Out]{err: err}
	}
	c := r.codec
	body, err := c.Marshal(in)
	if err != nil {
		return &Future[Out]{err: &Error{Code: wire.CodeBadInput, Message: fmt.Sprintf("encode input of %s: %v", t.name, err)}}
	}
	req := &wire.Request{ID: cc.id, NS: t.ns, Task: t.name, Codec: c.Name(), Body: body, MaxAttempts: cc.maxAttempts, RunAt: cc.runAt}
	return &Future[Out]{p: r.Start(ctx, req, router.StartOptions{Observe: cc.observer()}), codecs: r.codecs}
}

// Ref returns a task defined elsewhere, known by its namespace and name: a
// program that only calls a task need not link the code that serves it.
func Ref[In, Out any](ns, name string) *Task[In, Out] {
	return &Task[In, Out]{ns: ns, name: name}
}

// CallOption changes one call of a task.
type CallOption func(*callConfig)

type callConfig struct {
	id          string
	onState     func(Event)
	maxAttempts int
	runAt       time.Time
}

// WithID gives the invocation a caller-chosen id instead of a generated one.
// It must be unique among the calls in flight.
func WithID(id string) CallOption { return func(c *callConfig) { c.id = id } }

// After delays the call: the invocation is scheduled, and runs no
// earlier than d from now, up to 30 days. RabbitMQ holds it meanwhile (so
// it outlives every process); the embedded default holds it in memory.
// The call's deadline, if any, must not come before then. Cancelling it
// before then means it does not run (docs/PROTOCOL.md §15 says the
// narrow exceptions).
func After(d time.Duration) CallOption {
	return func(c *callConfig) { c.runAt = time.Now().Add(d) }
}

// At delays the call until t: see After.
func At(t time.Time) CallOption { return func(c *callConfig) { c.runAt = t } }

// MaxAttempts caps how many times this call's invocation may run when its
// task retries failures (see Retry): the lower of n and the task's own.
func MaxAttempts(n int) CallOption { return func(c *callConfig) { c.maxAttempts = n } }

// OnState makes the call report the invocation's progress to fn: when it
// starts running and when it starts awaiting a child. fn must not block; it
// may be called from several goroutines, and until the outcome arrives.
func OnState(fn func(Event)) CallOption { return func(c *callConfig) { c.onState = fn } }

func (c callConfig) observer() func(*wire.Reply) {
	if c.onState == nil {
		return nil
	}
	return func(r *wire.Reply) {
		c.onState(Event{ID: r.ID, State: r.State, Child: r.Child, Worker: r.Worker, Attempt: r.Attempt})
	}
}

// Event is a change in a running invocation.
type Event struct {
	ID     string // the invocation
	State  State  // its state now
	Child  string // if set, the invocation started awaiting this child invocation
	Worker string // who runs it, when known
	// Attempt is the attempt running, or with State queued (a retry
	// waits) the next one; 0 when unknown.
	Attempt int
}

// handlerOf adapts a typed function, task name, to the router: it checks
// the input against schema input before decoding it.
func handlerOf[In, Out any](fn func(context.Context, In) (Out, error), name string, input json.RawMessage) router.HandlerFunc {
	check := sync.OnceValues(func() (*schema.Schema, error) { return schema.Compile(input) })
	return func(ctx context.Context, c wire.Codec, body []byte) ([]byte, error) {
		sch, err := check()
		if err != nil {
			return nil, fmt.Errorf("atasks: the input schema of %s: %w", name, err)
		}
		if sch != nil {
			if err := fits(sch, c, body, name); err != nil {
				return nil, err
			}
		}
		var in In
		if err := c.Unmarshal(body, &in); err != nil {
			return nil, &Error{Code: wire.CodeBadInput, Message: err.Error()}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return c.Marshal(out)
	}
}

// fits returns a "bad_input" error naming each way body, encoded with c,
// does not fit sch, the input schema of task; nil if it fits.
func fits(sch *schema.Schema, c wire.Codec, body []byte, task string) error {
	value := body
	if c.Name() != "json" { // check what the codec decodes, as JSON
		var v any
		if err := c.Unmarshal(body, &v); err != nil {
			return &Error{Code: wire.CodeBadInput, Message: err.Error()}
		}
		var err error
		if value, err = json.Marshal(v); err != nil {
			return &Error{Code: wire.CodeBadInput, Message: err.Error()}
		}
	}
	if v := sch.Check(value); len(v) > 0 {
		return schema.Error(task, v)
	}
	return nil
}

// funcName derives a task name from fn: its package's last path element and
// the function's name, e.g. "demo.add". Function literals, methods and
// generic functions have no stable name of that kind: they need Name.
func funcName(fn any) string {
	full := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	base := path.Base(full)
	if strings.Count(base, ".") != 1 || strings.ContainsAny(base, "[]()*") || strings.HasSuffix(base, "-fm") {
		panic(fmt.Sprintf("atasks: %s has no stable task name; give one with atasks.Name", full))
	}
	return base
}
