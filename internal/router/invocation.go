package router

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/atasks-go/atasks/wire"
)

// Invocation is a task invocation running in this process. It rides in the
// context its task gets.
type Invocation struct {
	ID      string
	NS      string
	Task    string
	Parent  string // invocation id of the caller, "" at the top
	Attempt int
	Retries int    // how many earlier attempts failed and were retried
	Worker  string // the process running it

	ctx      context.Context // ends when the task returns
	delivery wire.Delivery
	quiet    bool // its caller ignores state changes (wire.Request.Quiet)
	slots    *Slots
	children atomic.Uint64              // calls made so far, for child ids
	journal  string                     // where its children's outcomes are kept, if it is durable
	replay   *replay                    // if it is durable and an earlier run was cut short
	diverged atomic.Pointer[wire.Error] // a "nondeterministic" call: the outcome

	mu        sync.Mutex
	kids      []wire.ChildState // the children it called, the first wire.MaxChildren
	kidIndex  map[string]int    // in kids, by id
	waits     int               // goroutines of this invocation awaiting children
	held      bool              // it holds a compute slot
	suspended bool              // the delivery was told it is suspended
	finished  bool              // the task returned
}

type ctxKey struct{}

func withInvocation(ctx context.Context, inv *Invocation) context.Context {
	return context.WithValue(ctx, ctxKey{}, inv)
}

// FromContext returns the invocation running in ctx, or nil.
func FromContext(ctx context.Context) *Invocation {
	inv, _ := ctx.Value(ctxKey{}).(*Invocation)
	return inv
}

// childID derives the id of the invocation's next child from its own id,
// the call's position and, after a retry, how many attempts were retried,
// so a re-run of the same parent that starts its children in the same
// order names them the same, and a retry (a fresh run) names them anew.
func (inv *Invocation) childID() string {
	key := inv.ID + "/" + strconv.FormatUint(inv.children.Add(1), 10)
	if inv.Retries > 0 {
		key = inv.ID + "/r" + strconv.Itoa(inv.Retries) + "/" + key[len(inv.ID)+1:]
	}
	sum := sha256.Sum256([]byte(key))
	return encodeID(sum[:16])
}

// called records that the invocation called child id, of task in ns.
func (inv *Invocation) called(id, ns, task string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if _, ok := inv.kidIndex[id]; ok || len(inv.kids) >= wire.MaxChildren {
		return
	}
	if inv.kidIndex == nil {
		inv.kidIndex = map[string]int{}
	}
	inv.kidIndex[id] = len(inv.kids)
	inv.kids = append(inv.kids, wire.ChildState{ID: id, NS: ns, Task: task, State: wire.Queued})
}

// childEnded records how child id ended, as this invocation saw it.
func (inv *Invocation) childEnded(id string, rep *wire.Reply) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	i, ok := inv.kidIndex[id]
	if !ok {
		return
	}
	inv.kids[i].State = rep.State
	if rep.Err != nil {
		inv.kids[i].Code = rep.Err.Code
	}
}

// childStates returns the children it called so far, as it saw them.
func (inv *Invocation) childStates() []wire.ChildState {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return slices.Clone(inv.kids)
}

// start takes a compute slot, waiting for one until the invocation's context ends.
func (inv *Invocation) start() error {
	if err := inv.slots.acquire(inv.ctx); err != nil {
		return err
	}
	inv.held = true
	return nil
}

// finish gives the compute slot back once the task has returned; waits
// still in progress (futures awaited after the task returned) no longer count.
func (inv *Invocation) finish() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.finished = true
	if inv.held {
		inv.slots.release()
		inv.held = false
	}
}

// suspend gives up the compute slot while a goroutine of the invocation
// awaits children. While any goroutine awaits, the invocation does not count
// as computing, even if its other goroutines do.
func (inv *Invocation) suspend() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.waits++
	if inv.waits > 1 || inv.finished {
		return
	}
	if inv.held {
		inv.slots.release()
		inv.held = false
	}
	if !inv.suspended {
		inv.suspended = true
		inv.delivery.Suspend()
	}
}

// resume takes a compute slot again once no goroutine of the invocation
// awaits children any more. It waits for the slot without holding the lock,
// so that a concurrent suspend or finish can proceed; whoever acquires a slot
// that is no longer wanted gives it back.
func (inv *Invocation) resume() {
	inv.mu.Lock()
	inv.waits--
	if inv.waits > 0 || inv.finished {
		inv.mu.Unlock()
		return
	}
	if inv.suspended {
		inv.suspended = false
		inv.delivery.Resume()
	}
	inv.mu.Unlock()

	if inv.slots.acquire(inv.ctx) != nil {
		return // the task is ending anyway
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.finished || inv.waits > 0 || inv.held {
		inv.slots.release()
		return
	}
	inv.held = true
}

// Slots bounds how many invocations compute at once. A nil *Slots has no bound.
type Slots struct{ sem chan struct{} }

// NewSlots returns n compute slots.
func NewSlots(n int) *Slots { return &Slots{sem: make(chan struct{}, n)} }

// Size returns how many slots there are; 0 for nil.
func (s *Slots) Size() int {
	if s == nil {
		return 0
	}
	return cap(s.sem)
}

// Busy returns how many slots are taken.
func (s *Slots) Busy() int {
	if s == nil {
		return 0
	}
	return len(s.sem)
}

func (s *Slots) acquire(ctx context.Context) error {
	if s == nil {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *Slots) release() {
	if s != nil {
		<-s.sem
	}
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

func encodeID(b []byte) string { return idEncoding.EncodeToString(b) }

// NewID returns a fresh random invocation id: 26 characters of Crockford base32.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return encodeID(b[:])
}
