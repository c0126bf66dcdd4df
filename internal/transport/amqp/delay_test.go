package amqp

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// The ladder's rungs: the longest not longer than the delay.
func TestDelayRung(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{{99 * time.Millisecond, -1}, {100 * time.Millisecond, 0}, {199 * time.Millisecond, 0}, {200 * time.Millisecond, 1},
		{3 * time.Second, 4}, {72 * time.Hour, 21}, {365 * 24 * time.Hour, DelayRungs - 1}} {
		if got := delayRung(c.d); got != c.want {
			t.Errorf("delayRung(%v) = %d; want %d", c.d, got, c.want)
		}
	}
}

// A delayed request cancelled before its time, whose server is then
// replaced by another that never heard the cancel, is answered cancelled
// and never runs: the cancel lasts in the stream of cancels.
func TestCancelDelayedOutlivesTheServer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	var ran atomic.Int32
	h := handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		ran.Add(1)
		return succeeded(req, `"ran"`)
	})
	first := f.open(Config{}, "first", ignore)
	f.serve(first, h, "later")
	req := request("later", `"x"`)
	req.RunAt = time.Now().Add(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := caller.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := caller.Cancel(ctx, req.ID); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	second := f.open(Config{}, "second", ignore)
	f.serve(second, h, "later")
	if got := in.final(req.ID); got.State != wire.Cancelled {
		t.Fatalf("the delayed request cancelled before its server changed: %s %+v", got.State, got.Err)
	}
	if early := time.Until(req.RunAt); early > delayFloor { // the ladder's last hop ends up to a rung early
		t.Fatalf("answered %v before its time: not by the server it was due at", early)
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("the handler ran %d times", n)
	}
}

// 200 requests delayed 0.2 s to 3 s, sent at once: each runs once and no
// earlier than its time; the test logs how late they started.
func TestDelayedManyOnTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	var mu sync.Mutex
	late := map[string][]time.Duration{}
	srv := f.open(Config{Slots: 50}, "server", ignore)
	f.serve(srv, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		mu.Lock()
		late[req.ID] = append(late[req.ID], time.Since(req.RunAt))
		mu.Unlock()
		return succeeded(req, `"ok"`)
	}), "later")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var reqs []*wire.Request
	for i := range 200 {
		req := request("later", strconv.Itoa(i))
		req.RunAt = time.Now().Add(200*time.Millisecond + time.Duration(i)*14*time.Millisecond)
		if err := caller.Send(ctx, req); err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, req)
	}
	var all []time.Duration
	for _, req := range reqs {
		if got := in.final(req.ID); got.State != wire.Succeeded {
			t.Fatalf("%s: %s %+v", req.ID, got.State, got.Err)
		}
		mu.Lock()
		l := late[req.ID]
		mu.Unlock()
		if len(l) != 1 || l[0] < 0 {
			t.Fatalf("%s ran %d times, %v after its time; want once, not before", req.ID, len(l), l)
		}
		all = append(all, l[0])
	}
	slices.Sort(all)
	t.Logf("200 delayed requests started after their time by p50 %v, p99 %v, max %v",
		all[len(all)/2].Round(time.Microsecond), all[len(all)*99/100].Round(time.Microsecond), all[len(all)-1].Round(time.Microsecond))
}
