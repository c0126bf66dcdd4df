package amqp

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// follower records what a transport's history passes to Follow.
type follower struct {
	mu     sync.Mutex
	events []wire.Event
}

func (f *follower) follow(e wire.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

// seen returns, in order, "accepted <id>", "<state> <id>" and
// "claim <key> <id>" for each event so far.
func (f *follower) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		switch {
		case e.Request != nil:
			out = append(out, "accepted "+e.Request.ID)
		case e.Reply != nil:
			out = append(out, string(e.Reply.State)+" "+e.Reply.ID)
		case e.Claim != nil:
			out = append(out, "claim "+e.Claim.Key+" "+e.Claim.ID)
		}
	}
	return out
}

// replica opens a transport with History whose history f follows from the start.
func replica(t *testing.T, fx *fixture, role string, deliver func(*wire.Reply)) (*Transport, *follower) {
	t.Helper()
	tr := fx.transport(Config{History: true}, role)
	f := &follower{}
	if err := tr.History().Follow(f.follow); err != nil {
		t.Fatal(err)
	}
	fx.opened(tr, deliver)
	if err := tr.History().Follow(f.follow); err == nil {
		t.Fatal("Follow after Open: no error")
	}
	return tr, f
}

// syncNow syncs tr's history, failing the test on error.
func syncNow(t *testing.T, tr *Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.History().Sync(ctx); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// Two callers with History and a server: each caller gets its own
// outcomes; both read the same history, in the same order: every outcome,
// and the calls they recorded; claims of one key are ordered alike for
// both; a reader whose connection is lost resumes where it stopped,
// missing and repeating nothing; a reader opened later reads it all.
func TestHistoryIsSharedInOneOrder(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	server := fx.open(Config{}, "server", ignore)
	fx.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, string(req.Body))
	}), "echo")
	inA, inB := newInbox(), newInbox()
	a, fa := replica(t, fx, "a", inA.deliver)
	b, fb := replica(t, fx, "b", inB.deliver)

	var ids, recorded []string
	callThrough := func(tr *Transport, in *inbox, n int) {
		for i := range n {
			req := request("echo", fmt.Sprint(i))
			send(t, tr, req)
			if i%2 == 0 { // the others are known by their outcomes
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				if err := tr.History().Record(ctx, req); err != nil {
					t.Fatalf("record: %v", err)
				}
				cancel()
				recorded = append(recorded, req.ID)
			}
			if r := wantFinal(t, in, req.ID, wire.Succeeded); string(r.Body) != fmt.Sprintf("%q", fmt.Sprint(i)) {
				t.Fatalf("outcome %s, want %q", r.Body, fmt.Sprint(i))
			}
			ids = append(ids, req.ID)
		}
	}
	callThrough(a, inA, 10)
	callThrough(b, inB, 10)

	claims := make(chan error, 2)
	for i, tr := range []*Transport{a, b} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			claims <- tr.History().Claim(ctx, wire.Claim{Key: "k", Fingerprint: "f", ID: fmt.Sprint("claimant-", i)})
		}()
	}
	for range 2 {
		if err := <-claims; err != nil {
			t.Fatalf("claim: %v", err)
		}
	}

	// b loses its connection; a calls meanwhile.
	_ = b.current().conn.Close()
	callThrough(a, inA, 10)
	syncNow(t, a)
	syncNow(t, b)

	c, fc := replica(t, fx, "c", ignore)
	ready := time.Now().Add(wait)
	for c.Check(context.Background()) != nil && time.Now().Before(ready) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Check(context.Background()); err != nil {
		t.Fatalf("a reader opened on a short history is not ready after %v: %v", wait, err)
	}
	syncNow(t, c)

	want := fa.seen()
	for _, id := range ids { // a call is recorded once sent: its outcome may come first
		if slices.Contains(recorded, id) != slices.Contains(want, "accepted "+id) || !slices.Contains(want, "succeeded "+id) {
			t.Errorf("call %s (recorded: %v): not as recorded, or not succeeded, in the history", id, slices.Contains(recorded, id))
		}
	}
	if n, w := len(want), len(ids)+len(recorded)+2; n != w {
		t.Errorf("a read %d events, want %d (an outcome per call, a record per recorded one, 2 claims):\n%v", n, w, want)
	}
	for name, got := range map[string][]string{"b, which reconnected": fb.seen(), "c, opened later": fc.seen()} {
		if !slices.Equal(got, want) {
			t.Errorf("%s read the history as\n%v\nwant, as a read it,\n%v", name, got, want)
		}
	}
}

// Many Sync calls at once all return: those made while a marker is out
// share the next one.
func TestHistorySyncsShareMarkers(t *testing.T) {
	t.Parallel()
	fx := newFixture(t)
	a, _ := replica(t, fx, "a", ignore)
	syncNow(t, a)
	var wg sync.WaitGroup
	began := time.Now()
	for range 200 {
		wg.Go(func() { syncNow(t, a) })
	}
	wg.Wait()
	if d := time.Since(began); d > wait {
		t.Fatalf("200 syncs took %v", d)
	}
}

// Replicas that start at once on a history nobody declared before all
// open: the stream refuses consumers until its member has started.
func TestHistoryReplicasStartTogether(t *testing.T) {
	t.Parallel()
	for round := range 5 {
		fx := newFixture(t)
		var wg sync.WaitGroup
		for i := range 3 {
			tr := fx.transport(Config{History: true}, fmt.Sprint("replica ", round, i))
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				if err := tr.Open(ctx, ignore); err != nil {
					t.Errorf("round %d: replica %d: %v", round, i, err)
					return
				}
				_ = tr.Close(ctx)
			})
		}
		wg.Wait()
	}
}
