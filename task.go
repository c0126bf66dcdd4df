package atasks

import (
	"context"
	"fmt"
	"path"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/atasks-go/atasks/internal/router"
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

type definition struct{ ns, name string }

// Name sets the task's name. It defaults to the Go package and function name,
// e.g. "demo.add" for func add in package demo.
func Name(name string) DefineOption { return func(d *definition) { d.name = name } }

// InNamespace places the task in namespace ns. It defaults to "default".
func InNamespace(ns string) DefineOption { return func(d *definition) { d.ns = ns } }

// Define registers fn as a task and returns its definition. Define it once,
// usually in a package-level var, in every program that calls or serves it:
// callers use the definition for its name and types, workers to run fn.
// Define panics if the namespace already has a task of that name, or if fn
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
	register(d.ns, d.name, handlerOf(fn))
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
	req := &wire.Request{ID: cc.id, NS: t.ns, Task: t.name, Codec: c.Name(), Body: body}
	return &Future[Out]{p: r.Start(ctx, req, cc.observer()), codecs: r.codecs}
}

// Ref returns a task defined elsewhere, known by its namespace and name: a
// program that only calls a task need not link the code that serves it.
func Ref[In, Out any](ns, name string) *Task[In, Out] {
	return &Task[In, Out]{ns: ns, name: name}
}

// CallOption changes one call of a task.
type CallOption func(*callConfig)

type callConfig struct {
	id      string
	onState func(Event)
}

// WithID gives the invocation a caller-chosen id instead of a generated one.
// It must be unique among the calls in flight.
func WithID(id string) CallOption { return func(c *callConfig) { c.id = id } }

// OnState makes the call report the invocation's progress to fn: when it
// starts running and when it starts awaiting a child. fn must not block; it
// may be called from several goroutines, and until the outcome arrives.
func OnState(fn func(Event)) CallOption { return func(c *callConfig) { c.onState = fn } }

func (c callConfig) observer() func(*wire.Reply) {
	if c.onState == nil {
		return nil
	}
	return func(r *wire.Reply) { c.onState(Event{ID: r.ID, State: r.State, Child: r.Child, Worker: r.Worker}) }
}

// Event is a change in a running invocation.
type Event struct {
	ID     string // the invocation
	State  State  // its state now
	Child  string // if set, the invocation started awaiting this child invocation
	Worker string // who runs it, when known
}

// handlerOf adapts a typed function to the router.
func handlerOf[In, Out any](fn func(context.Context, In) (Out, error)) router.HandlerFunc {
	return func(ctx context.Context, c wire.Codec, body []byte) ([]byte, error) {
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

// The tasks defined in this program: namespace → name → handler.
var (
	definedMu sync.RWMutex
	defined   = map[string]map[string]router.HandlerFunc{}
)

func register(ns, name string, h router.HandlerFunc) {
	definedMu.Lock()
	defer definedMu.Unlock()
	if defined[ns] == nil {
		defined[ns] = map[string]router.HandlerFunc{}
	}
	if _, dup := defined[ns][name]; dup {
		panic(fmt.Sprintf("atasks: task %q defined twice in namespace %q", name, ns))
	}
	defined[ns][name] = h
}

// definedIn returns the tasks defined in namespace ns.
func definedIn(ns string) map[string]router.HandlerFunc {
	definedMu.RLock()
	defer definedMu.RUnlock()
	hs := make(map[string]router.HandlerFunc, len(defined[ns]))
	for name, h := range defined[ns] {
		hs[name] = h
	}
	return hs
}

// Defined lists the names of the tasks this program defines in namespace ns.
func Defined(ns string) []string {
	definedMu.RLock()
	defer definedMu.RUnlock()
	names := make([]string, 0, len(defined[ns]))
	for name := range defined[ns] {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
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
