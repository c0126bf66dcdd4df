package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// loadedHandler is a handler that reports its worker and slots, and the
// activity of each request it handles, as the router does.
type loadedHandler struct {
	tr *Transport
}

func (h loadedHandler) Handle(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
	now := time.Now()
	h.tr.Report(wire.Activity{ID: req.ID, Parent: req.Parent, Task: req.Task, Worker: "w1", State: wire.Succeeded, Start: now, End: now})
	return succeeded(req, `"ok"`)
}

func (loadedHandler) Load() (string, int, int) { return "w1", 2, 7 }

// A monitor on one connection sees what a server on another reports, and
// lists that server with its worker name and slots.
func TestMonitorWatchAndServers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	server := f.open(Config{}, "server", func(*wire.Reply) {})
	f.serve(server, loadedHandler{server}, "watched")
	caller := f.open(Config{}, "caller", in.deliver)

	got := make(chan wire.Activity, 10)
	ctx, cancel := context.WithCancel(context.Background())
	watching := make(chan error, 1)
	go func() { watching <- caller.Watch(ctx, func(a wire.Activity) { got <- a }) }()
	var servers []wire.ServerInfo
	for deadline := time.Now().Add(wait); len(servers) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		servers, _ = caller.Servers(ctx)
	}
	if len(servers) != 1 || servers[0].Worker != "w1" || servers[0].Busy != 2 || servers[0].Size != 7 || servers[0].Tasks[0] != "watched" {
		t.Fatalf("servers: %+v", servers)
	}

	// The watch queue is bound asynchronously: send until a report arrives.
	var a wire.Activity
	for deadline := time.Now().Add(wait); a.ID == "" && time.Now().Before(deadline); {
		req := request("watched", "x")
		send(t, caller, req)
		wantFinal(t, in, req.ID, wire.Succeeded)
		select {
		case a = <-got:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if a.Task != "watched" || a.Worker != "w1" || a.State != wire.Succeeded {
		t.Errorf("activity: %+v", a)
	}
	cancel()
	select {
	case err := <-watching:
		if err != nil {
			t.Errorf("Watch: %v", err)
		}
	case <-time.After(wait):
		t.Error("Watch did not return after its context ended")
	}
}
