package router

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
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

	delivery wire.Delivery
	slots    *Slots
	children atomic.Uint64 // calls made so far, for child ids

	mu    sync.Mutex // guards waits and held; held across a slot acquisition
	waits int        // goroutines of this invocation awaiting children
	held  bool       // whether it holds a compute slot
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

// childID derives the id of the invocation's next child from its own id and
// the call's position, so a re-run of the same parent names its children the same.
func (inv *Invocation) childID() string {
	n := inv.children.Add(1)
	sum := sha256.Sum256([]byte(inv.ID + "/" + strconv.FormatUint(n, 10)))
	return encodeID(sum[:16])
}

// start takes a compute slot, waiting for one until ctx ends.
func (inv *Invocation) start(ctx context.Context) error {
	if err := inv.slots.acquire(ctx); err != nil {
		return err
	}
	inv.held = true
	return nil
}

// finish gives the compute slot back.
func (inv *Invocation) finish() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.held {
		inv.slots.release()
		inv.held = false
	}
}

// suspend gives up the compute slot while the invocation awaits children.
func (inv *Invocation) suspend() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.waits++
	if inv.waits == 1 && inv.held {
		inv.slots.release()
		inv.held = false
		inv.delivery.Suspend()
	}
}

// resume takes a compute slot again once no goroutine of the invocation
// awaits children any more.
func (inv *Invocation) resume() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.waits--
	if inv.waits == 0 && !inv.held {
		inv.delivery.Resume()
		_ = inv.slots.acquire(context.Background())
		inv.held = true
	}
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
