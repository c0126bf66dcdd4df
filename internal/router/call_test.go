package router

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// recorder is a transport that records what it is asked to send and
// cancel; the test delivers replies itself.
type recorder struct {
	mu      sync.Mutex
	sent    []string
	cancels []string
}

func (t *recorder) Open(context.Context, func(*wire.Reply)) error { return nil }
func (t *recorder) Send(_ context.Context, req *wire.Request) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent = append(t.sent, req.ID)
	return nil
}
func (t *recorder) Cancel(_ context.Context, id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cancels = append(t.cancels, id)
	return nil
}
func (t *recorder) Serve(context.Context, []string, wire.Handler) error { return nil }
func (t *recorder) Catalog(context.Context) ([]wire.TaskInfo, error)    { return nil, nil }
func (t *recorder) Close(context.Context) error                         { return nil }

func (t *recorder) counts() (sent, cancels int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent), len(t.cancels)
}

type quietDelivery struct{}

func (quietDelivery) Notify(*wire.Reply) {}
func (quietDelivery) Suspend()           {}
func (quietDelivery) Resume()            {}

func newTestRouter(t *testing.T) (*Router, *recorder) {
	t.Helper()
	tr := &recorder{}
	r, err := New(Config{NS: "default", Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return r, tr
}

// run returns the context of a run of invocation id, as a worker gives it
// to the task: two runs of the same id are two runs of one parent.
func run(t *testing.T, id string) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return withInvocation(ctx, &Invocation{ID: id, Task: "parent", ctx: ctx, delivery: quietDelivery{}})
}

func outcomeOf(t *testing.T, p *Pending) *wire.Reply {
	t.Helper()
	select {
	case <-p.Done():
		return p.outcome
	case <-time.After(5 * time.Second):
		t.Fatalf("no outcome for %s", p.ID())
		return nil
	}
}

// A parent that runs again while its first run still awaits its children
// (its worker lost the connection, or the parent's own caller re-ran it)
// calls them under the same derived ids. The second call joins the first:
// one request, one outcome for both, and cancelling one of them (WaitAll
// with CancelOnError) neither panics nor cancels the child the other awaits.
func TestRerunParentJoinsChildInFlight(t *testing.T) {
	r, tr := newTestRouter(t)
	first := r.Start(run(t, "P"), &wire.Request{Task: "child"}, nil)
	second := r.Start(run(t, "P"), &wire.Request{Task: "child"}, nil)
	if first.ID() != second.ID() {
		t.Fatalf("derived ids differ: %s, %s", first.ID(), second.ID())
	}
	if sent, _ := tr.counts(); sent != 1 {
		t.Fatalf("sent %d requests, want 1", sent)
	}
	first.Cancel()
	first.Cancel() // twice: harmless
	if rep := outcomeOf(t, first); rep.State != wire.Cancelled {
		t.Fatalf("cancelled waiter: %s", rep.State)
	}
	if _, cancels := tr.counts(); cancels != 0 {
		t.Fatalf("asked the server to cancel a child another run still awaits")
	}
	r.deliver(&wire.Reply{ID: second.ID(), State: wire.Succeeded, Codec: "json", Body: []byte("7")})
	if rep := outcomeOf(t, second); rep.State != wire.Succeeded || string(rep.Body) != "7" {
		t.Fatalf("joined waiter: %+v", rep)
	}
	if rep := outcomeOf(t, first); rep.State != wire.Cancelled {
		t.Fatalf("the outcome overwrote a cancelled wait: %s", rep.State)
	}
}

// The last waiter to give up cancels the child on its server.
func TestLastWaiterCancelsChild(t *testing.T) {
	r, tr := newTestRouter(t)
	a := r.Start(run(t, "P"), &wire.Request{Task: "child"}, nil)
	b := r.Start(run(t, "P"), &wire.Request{Task: "child"}, nil)
	a.Cancel()
	b.Cancel()
	r.cancels.Wait()
	if _, cancels := tr.counts(); cancels != 1 {
		t.Fatalf("%d cancels sent, want 1", cancels)
	}
	r.deliver(&wire.Reply{ID: a.ID(), State: wire.Succeeded}) // late: nobody waits
	if outcomeOf(t, a).State != wire.Cancelled || outcomeOf(t, b).State != wire.Cancelled {
		t.Fatal("a late outcome changed a finished wait")
	}
}

// A re-run that calls another task under the same derived id is refused,
// and refusing it leaves the first call alone, even when it is cancelled.
func TestRerunCallingAnotherTaskIsRefused(t *testing.T) {
	r, tr := newTestRouter(t)
	first := r.Start(run(t, "P"), &wire.Request{Task: "child"}, nil)
	other := r.Start(run(t, "P"), &wire.Request{Task: "other"}, nil)
	rep := outcomeOf(t, other)
	var e *wire.Error
	if !errors.As(rep.Err, &e) || e.Code != wire.CodeDuplicateID {
		t.Fatalf("other task under the same id: %+v", rep)
	}
	other.Cancel() // the panic of issue 12: it used to close first's channel
	if sent, _ := tr.counts(); sent != 1 {
		t.Fatalf("sent %d, want 1", sent)
	}
	r.deliver(&wire.Reply{ID: first.ID(), State: wire.Succeeded})
	if outcomeOf(t, first).State != wire.Succeeded {
		t.Fatal("the first call lost its outcome")
	}
}

// A caller-chosen id that is in flight is refused, not joined: the caller
// may mean another input.
func TestChosenDuplicateIDIsRefused(t *testing.T) {
	r, _ := newTestRouter(t)
	ctx := context.Background()
	first := r.Start(ctx, &wire.Request{ID: "x", Task: "t"}, nil)
	dup := r.Start(ctx, &wire.Request{ID: "x", Task: "t"}, nil)
	if rep := outcomeOf(t, dup); rep.Err == nil || rep.Err.Code != wire.CodeDuplicateID {
		t.Fatalf("dup: %+v", rep)
	}
	dup.Cancel()
	r.deliver(&wire.Reply{ID: "x", State: wire.Succeeded})
	if outcomeOf(t, first).State != wire.Succeeded {
		t.Fatal("the first call lost its outcome")
	}
}
