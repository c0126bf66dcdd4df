//go:build disruptive

// These tests change the broker's node-wide settings while they run, so
// they would disturb everything else on the broker: they run only with
//
//	go test -tags disruptive -run Disruptive ./internal/transport/amqp
//
// and restore the settings when they end.

package amqp

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

// setRabbitEnv sets the rabbit application's key to value on the broker
// node for the rest of the test, and restores the old value (or its
// absence) in t.Cleanup.
func setRabbitEnv(t *testing.T, key, value string) {
	t.Helper()
	ctl := rabbitmqctl(t, "it changes the broker's consumer_timeout")
	eval := func(expr string) string {
		t.Helper()
		out, err := exec.Command(ctl, "eval", expr).CombinedOutput()
		if err != nil {
			t.Fatalf("rabbitmqctl eval %q: %v: %s", expr, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	old := eval("application:get_env(rabbit, " + key + ").")
	restore := "application:unset_env(rabbit, " + key + ")."
	if v, ok := strings.CutPrefix(old, "{ok,"); ok {
		restore = "application:set_env(rabbit, " + key + ", " + strings.TrimSuffix(v, "}") + ")."
	} else if old != "undefined" {
		t.Fatalf("rabbitmqctl eval: unexpected value of %s: %s", key, old)
	}
	t.Cleanup(func() { eval(restore) })
	eval("application:set_env(rabbit, " + key + ", " + value + ").")
}

// lowConsumerTimeout sets the broker's consumer_timeout to 3s, checked
// every second. Only channels opened afterwards take it up.
func lowConsumerTimeout(t *testing.T) {
	setRabbitEnv(t, "consumer_timeout", "3000")
	setRabbitEnv(t, "channel_tick_interval", "1000")
}

// TestDisruptiveConsumerTimeout runs an 8s task on a broker whose
// consumer_timeout is 3s. The lease (after 1s) keeps the channel open, and
// the task completes once, on its first attempt.
func TestDisruptiveConsumerTimeout(t *testing.T) {
	lowConsumerTimeout(t)
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1, LeaseAfter: time.Second, LeasePeriod: 2 * time.Second, AnnounceInterval: 500 * time.Millisecond}, "server", ignore)
	var runs atomic.Int32
	f.serve(server, slowHandler(&runs, 8*time.Second), "long")
	gen := server.current()
	req := request("long", "x")
	send(t, caller, req)
	r := in.final(req.ID)
	if r == nil {
		t.Fatalf("no final reply within %v", wait)
	}
	if r.State != wire.Succeeded || string(r.Body) != "1" {
		t.Errorf("final reply %s (%v) on attempt %s, want success on attempt 1", r.State, r.Err, r.Body)
	}
	noMoreFinal(t, in, req.ID, 2*(server.cfg.LeasePeriod+server.queryTimeout()))
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once", n)
	}
	if g := server.current(); g != gen || gen.isDone() {
		t.Errorf("the broker closed the server's connection or channel: %v", gen.cause())
	}
}

// TestDisruptiveConsumerTimeoutWithoutLease checks the setting itself: a
// delivery held past consumer_timeout (LeaseAfter is longer) gets its
// channel closed with 406 PRECONDITION_FAILED.
func TestDisruptiveConsumerTimeoutWithoutLease(t *testing.T) {
	lowConsumerTimeout(t)
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1, LeaseAfter: time.Minute}, "server", ignore)
	release := make(chan struct{})
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		<-release
		return succeeded(req, `""`)
	}), "long")
	gen := server.current()
	send(t, caller, request("long", "x"))
	select {
	case <-gen.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the broker did not close the channel of a delivery held past consumer_timeout")
	}
	close(release)
	var e *amqp.Error
	if err := gen.cause(); !errors.As(err, &e) || e.Code != amqp.PreconditionFailed {
		t.Errorf("channel closed with %v, want 406 PRECONDITION_FAILED", err)
	}
}
