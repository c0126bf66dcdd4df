package amqp

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// A handler that runs longer than LeaseAfter has its delivery converted
// into a lease: the original is acknowledged while the handler runs, the
// lease copy is parked again while it runs and dropped once it is done,
// and the caller gets exactly one final reply.
func TestLeaseLongTask(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(leaseConfig(Config{Slots: 1}), "server", ignore)
	var runs atomic.Int32
	f.serve(server, slowHandler(&runs, 2500*time.Millisecond), "long")
	gen := server.current()
	req := request("long", "x")
	send(t, caller, req)
	if !waitLeased(server, req.ID) {
		t.Fatal("the request was not leased")
	}
	taskQ := server.topo.taskQueue("long")
	if ready, unacked := queueCounts(t, taskQ); ready != 0 || unacked != 0 {
		t.Errorf("while the leased handler runs, %s has %d ready, %d unacked; want 0, 0", taskQ, ready, unacked)
	}
	if r := wantFinal(t, in, req.ID, wire.Succeeded); string(r.Body) != "1" {
		t.Errorf("ran as attempt %s, want 1", r.Body)
	}
	// The last lease copy comes back within a period and is dropped.
	noMoreFinal(t, in, req.ID, 2*(testLeasePeriod+server.queryTimeout()))
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once", n)
	}
	ch := f.channel()
	waitQueue(t, ch, server.topo.lease(), 0, 0)
	waitQueue(t, ch, taskQ, 1, 0)
	if ready, unacked := queueCounts(t, taskQ); ready != 0 || unacked != 0 {
		t.Errorf("at the end %s has %d ready, %d unacked; want 0, 0", taskQ, ready, unacked)
	}
	if g := server.current(); g != gen {
		t.Errorf("the server reconnected (cause %v)", gen.cause())
	}
}

// A holder killed after it leased a request loses nothing: the lease copy
// comes back, nobody answers for it, and another server runs it again.
func TestLeaseHolderKilled(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	f.addQueue(caller.topo.taskQueue("long"))
	cs := newChildren(t, f, caller, "lease")
	cs.start()
	waitForTask(t, caller, "long")
	req := request("long", "x")
	send(t, caller, req)
	select {
	case <-cs.killed:
	case <-time.After(wait):
		t.Fatal("the child did not kill itself after leasing the request")
	}

	server := f.open(leaseConfig(Config{Slots: 1}), "server", ignore)
	var runs atomic.Int32
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		runs.Add(1)
		return succeeded(req, strconv.Itoa(req.Attempt))
	}), "long")
	if r := wantFinal(t, in, req.ID, wire.Succeeded); string(r.Body) != "2" {
		t.Errorf("ran again as attempt %s, want 2", r.Body)
	}
	noMoreFinal(t, in, req.ID, 2*(testLeasePeriod+server.queryTimeout()))
	if n := runs.Load(); n != 1 {
		t.Errorf("the surviving server ran it %d times, want once", n)
	}
	waitQueue(t, f.channel(), server.topo.lease(), 0, 0)
}

// Lease queries: the holder answers "held" while it runs the invocation
// and "gone" once it settled it; nobody answers for an invocation nobody
// runs of an unknown holder; and
// after the holder closes, a server that heard its lease-gone answers for it.
func TestLeaseQuery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	holder := f.open(leaseConfig(Config{Slots: 1}), "holder", ignore)
	release := make(chan struct{})
	f.serve(holder, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		<-release
		return succeeded(req, `""`)
	}), "long")
	witness := f.open(leaseConfig(Config{}), "witness", ignore)
	f.serve(witness, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, `""`)
	}), "other")
	asker := f.open(leaseConfig(Config{}), "asker", ignore)
	ask := func(holderID, id string) (leaseAnswer, bool) {
		return asker.askLease(asker.current(), holderID, id)
	}

	req := request("long", "x")
	send(t, caller, req)
	if !waitLeased(holder, req.ID) {
		t.Fatal("the request was not leased")
	}
	if a, ok := ask(holder.id, req.ID); !ok || !a.held || a.server != holder.id {
		t.Errorf("while the holder runs it: answer %+v (%v), want held by %s", a, ok, holder.id)
	}
	if a, ok := ask("nobody", "unknown"); ok {
		t.Errorf("about an invocation nobody runs, of an unknown holder: answer %+v, want none", a)
	}
	close(release)
	wantFinal(t, in, req.ID, wire.Succeeded)
	// The reply can reach the caller before the holder has its confirm and
	// records the invocation settled: until then it rightly says "held".
	a, ok := ask(holder.id, req.ID)
	for deadline := time.Now().Add(wait); ok && a.held && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		a, ok = ask(holder.id, req.ID)
	}
	if !ok || a.held {
		t.Errorf("once the holder finished: answer %+v (%v), want gone", a, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := holder.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if a, ok := ask(holder.id, req.ID); !ok || a.held {
		t.Errorf("after the holder closed: answer %+v (%v), want gone from the witness", a, ok)
	}
}
