package router

import (
	"context"
	"errors"
	"fmt"
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
	fail    []error // the next sends fail with these, in order
	quiet   []bool  // Request.Quiet of each sent request
}

func (t *recorder) Open(context.Context, func(*wire.Reply)) error { return nil }
func (t *recorder) Send(_ context.Context, req *wire.Request) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.fail) > 0 {
		err := t.fail[0]
		t.fail = t.fail[1:]
		return err
	}
	t.sent = append(t.sent, req.ID)
	t.quiet = append(t.quiet, req.Quiet)
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
func (t *recorder) Unserve(context.Context) error                       { return nil }
func (t *recorder) Close(context.Context) error                         { return nil }

func (t *recorder) counts() (sent, cancels int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent), len(t.cancels)
}

type nopDelivery struct{}

func (nopDelivery) Notify(*wire.Reply) {}
func (nopDelivery) Suspend()           {}
func (nopDelivery) Resume()            {}

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
	return withInvocation(ctx, &Invocation{ID: id, Task: "parent", ctx: ctx, delivery: nopDelivery{}})
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
	first := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
	second := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
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
	a := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
	b := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
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
	first := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
	other := r.Start(run(t, "P"), &wire.Request{Task: "other"}, StartOptions{})
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
	first := r.Start(ctx, &wire.Request{ID: "x", Task: "t"}, StartOptions{})
	dup := r.Start(ctx, &wire.Request{ID: "x", Task: "t"}, StartOptions{})
	if rep := outcomeOf(t, dup); rep.Err == nil || rep.Err.Code != wire.CodeDuplicateID {
		t.Fatalf("dup: %+v", rep)
	}
	dup.Cancel()
	r.deliver(&wire.Reply{ID: "x", State: wire.Succeeded})
	if outcomeOf(t, first).State != wire.Succeeded {
		t.Fatal("the first call lost its outcome")
	}
}

// A call whose send fails ends with that failure, but a re-run that joined
// it meanwhile does not inherit it: it sends the request itself. The
// first failed as a send may fail whose request the broker may have
// taken: since someone still waits, nothing is cancelled.
func TestJoinedCallSurvivesTheSendersFailure(t *testing.T) {
	r, tr := newTestRouter(t)
	gate := make(chan struct{})
	slow := &gatedTransport{recorder: tr, gate: gate, entered: make(chan struct{})}
	r.cfg.Transport = slow
	tr.fail = []error{fmt.Errorf("%w: %w", wire.ErrMaybeSent, &wire.Error{Code: wire.CodeUnavailable, Message: "no confirm"})}
	firstDone := make(chan *Pending)
	go func() { firstDone <- r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{}) }()
	<-slow.entered // the first call is sending
	second := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
	close(gate)
	first := <-firstDone
	if first.Sent() == nil || outcomeOf(t, first).State != wire.Failed {
		t.Fatalf("the failed sender: sent %v, %+v", first.Sent(), first.outcome)
	}
	waitUntil(t, func() bool { sent, _ := tr.counts(); return sent == 1 }) // the joined call sent it again
	r.deliver(&wire.Reply{ID: second.ID(), State: wire.Succeeded})
	if rep := outcomeOf(t, second); rep.State != wire.Succeeded {
		t.Fatalf("the joined call: %+v", rep)
	}
	r.cancels.Wait()
	if _, cancels := tr.counts(); cancels != 0 {
		t.Fatal("cancelled a call someone still awaited")
	}
}

// A call abandoned before it is sent (its context ended) leaves no flight
// behind for a later call to join and wait on for ever.
func TestCallWithEndedContextLeavesNoFlight(t *testing.T) {
	r, tr := newTestRouter(t)
	ctx, cancel := context.WithCancel(run(t, "P"))
	cancel()
	gone := r.Start(ctx, &wire.Request{Task: "child"}, StartOptions{})
	if gone.Sent() == nil || outcomeOf(t, gone).State != wire.Cancelled {
		t.Fatalf("abandoned: %v %+v", gone.Sent(), gone.outcome)
	}
	next := r.Start(run(t, "P"), &wire.Request{Task: "child"}, StartOptions{})
	if sent, _ := tr.counts(); sent != 1 || next.Sent() != nil {
		t.Fatalf("the next call joined nothing but was not sent (%d sends, %v)", sent, next.Sent())
	}
}

// OnDone calls its function once, with the outcome, whether it is set
// before or after the outcome arrives.
func TestOnDone(t *testing.T) {
	r, _ := newTestRouter(t)
	before := r.Start(context.Background(), &wire.Request{ID: "a", Task: "t"}, StartOptions{})
	got := make(chan *wire.Reply, 2)
	before.OnDone(func(rep *wire.Reply) { got <- rep })
	r.deliver(&wire.Reply{ID: "a", State: wire.Succeeded})
	r.deliver(&wire.Reply{ID: "a", State: wire.Failed, Err: &wire.Error{Code: "late"}})
	after := r.Start(context.Background(), &wire.Request{ID: "b", Task: "t"}, StartOptions{})
	r.deliver(&wire.Reply{ID: "b", State: wire.Succeeded})
	after.OnDone(func(rep *wire.Reply) { got <- rep })
	for range 2 {
		if rep := <-got; rep.State != wire.Succeeded {
			t.Fatalf("OnDone got %+v", rep)
		}
	}
	select {
	case rep := <-got:
		t.Fatalf("OnDone called again with %+v", rep)
	default:
	}
}

// gatedTransport holds sends until gate is closed, saying when one entered.
type gatedTransport struct {
	*recorder
	gate    chan struct{}
	once    sync.Once
	entered chan struct{}
}

func (g *gatedTransport) Send(ctx context.Context, req *wire.Request) error {
	g.once.Do(func() { close(g.entered) })
	<-g.gate
	return g.recorder.Send(ctx, req)
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not so within 5s")
		}
	}
}

// notes records the state changes a delivery is told to send.
type notes struct {
	nopDelivery
	mu   sync.Mutex
	sent []*wire.Reply
}

func (n *notes) Notify(r *wire.Reply) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, r)
}

// A call made without an observer asks for no state changes, and a server
// honours that: a quiet parent's child call sends none, an observed one's
// says which child it awaits.
func TestQuietCallsSendNoStates(t *testing.T) {
	r, tr := newTestRouter(t)
	err := r.Serve(context.Background(), map[string]Handler{"parent": {Fn: func(ctx context.Context, _ wire.Codec, _ []byte) ([]byte, error) {
		r.Start(ctx, &wire.Request{Task: "child"}, StartOptions{})
		return []byte("1"), nil
	}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	observed := r.Start(context.Background(), &wire.Request{ID: "o", Task: "t"}, StartOptions{Observe: func(*wire.Reply) {}})
	defer observed.Cancel()
	for _, quiet := range []bool{true, false} {
		d := &notes{}
		if rep := r.Handle(context.Background(), &wire.Request{ID: fmt.Sprint("p", quiet), Task: "parent", Codec: "json", Quiet: quiet}, d); rep.State != wire.Succeeded {
			t.Fatalf("parent: %+v", rep)
		}
		if want := map[bool]int{true: 0, false: 1}[quiet]; len(d.sent) != want {
			t.Errorf("quiet %v: %d state changes sent, want %d", quiet, len(d.sent), want)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if want := []bool{false, true, true}; fmt.Sprint(tr.quiet) != fmt.Sprint(want) {
		t.Errorf("Quiet of the requests sent (observed, child, child): %v, want %v", tr.quiet, want)
	}
}
