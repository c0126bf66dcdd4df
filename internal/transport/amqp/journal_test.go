package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// A durable parent's children's outcomes are in the journal, by parent,
// unless cancelled or timed out; Kept finds those appended since the time
// given, or after the position a read ended; and a process that adopts a running child gets its outcome too,
// unless it asks for another task.
func TestJournalKeepsAndAdopts(t *testing.T) {
	fx := newFixture(t)
	started, release := make(chan string, 8), make(chan struct{})
	srv := fx.open(Config{}, "server", func(*wire.Reply) {})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	fx.serve(srv, handlerFunc(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		switch string(req.Body) {
		case `"cancel"`:
			return &wire.Reply{ID: req.ID, State: wire.Cancelled, Err: &wire.Error{Code: wire.CodeCancelled}}
		case `"late"`:
			return &wire.Reply{ID: req.ID, State: wire.TimedOut, Err: &wire.Error{Code: wire.CodeTimeout}}
		case `"slow"`:
			started <- req.ID
			<-release
		}
		return succeeded(req, `"`+req.ID+`"`)
	}), "child")
	b := newInbox()
	caller := fx.open(Config{}, "caller", b.deliver)
	since := time.Now()
	child := func(parent, body string) *wire.Request {
		req := request("child", body)
		req.Parent, req.Journal = parent, srv.Journal()
		send(t, caller, req)
		return req
	}
	a, c, late, other, plain := child("P1", "a"), child("P1", "cancel"), child("P1", "late"), child("P2", "b"), request("child", "c")
	plain.Parent = "P1" // not durable: no journal named
	send(t, caller, plain)
	for _, r := range []*wire.Request{a, c, late, other, plain} {
		b.final(r.ID)
	}
	slow := child("P1", "slow")
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kept, next, err := caller.Kept(ctx, "P1", since, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 1 || kept[a.ID] == nil || kept[a.ID].State != wire.Succeeded || kept[a.ID].Task != "child" {
		t.Fatalf("kept for P1: %v; want only %s, succeeded (not the cancelled, the timed out, the other parent's, the non-durable or the running one)", kept, a.ID)
	}

	b2 := newInbox()
	adopter := fx.open(Config{}, "adopter", b2.deliver)
	if task, err := adopter.Adopt(ctx, slow.ID, "other"); err != nil || task != "child" {
		t.Fatalf("adopt a running child as another task: %q %v; want its task named", task, err)
	}
	if task, err := adopter.Adopt(ctx, slow.ID, "child"); err != nil || task != "child" {
		t.Fatalf("adopt a running child: %q %v", task, err)
	}
	if task, err := adopter.Adopt(ctx, "nobody-runs-this", "child"); err != nil || task != "" {
		t.Fatalf("adopt what no server runs: %q %v", task, err)
	}
	close(release)
	released = true
	wantFinal(t, b2, slow.ID, wire.Succeeded)
	wantFinal(t, b, slow.ID, wire.Succeeded)
	// Read on from where the first read ended: only what came since.
	if kept, _, err = adopter.Kept(ctx, "P1", since, next); err != nil || len(kept) != 1 || kept[slow.ID] == nil {
		t.Fatalf("kept for P1 after the adopted child ended, read from %d: %v %v; want only %s", next, kept, err, slow.ID)
	}
}
