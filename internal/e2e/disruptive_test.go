//go:build disruptive

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests restart or reconfigure the shared broker, so scripts/test runs
// them alone, after everything else: go test -tags disruptive -run Disruptive.

// The broker restarts under load: every call still ends — succeeded, or
// failed with a retryable error — none hangs, and new calls work again.
func TestDisruptiveBrokerRestart(t *testing.T) {
	s := newSystem(t)
	s.worker()
	s.worker()
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.sleep")

	const calls = 200
	var ok, retryable, other atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	recovery := make(chan time.Duration, 1)
	for i := range calls {
		if i == calls/4 {
			go func() { recovery <- restartBroker(t, base) }()
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			inv := call(t, base, "default", "demo.sleep", fmt.Sprintf(`{"ms":300,"value":%d}`, i), "?wait=1s")
			if inv.status == 202 {
				inv = poll(t, base, "default", inv.ID, 90*time.Second)
			}
			switch {
			case inv.State == "succeeded" && string(inv.Result) == fmt.Sprint(i):
				ok.Add(1)
			case inv.Error != nil && inv.Error.Retryable, inv.status == 503:
				retryable.Add(1)
			default:
				other.Add(1)
				t.Errorf("call %d: %d %s %s %+v", i, inv.status, inv.State, inv.Result, inv.Error)
			}
		})
	}
	within(t, 3*time.Minute, "the calls", wg.Wait)
	t.Logf("%d calls: %d succeeded, %d failed retryably, %d otherwise; none hung; a new call succeeded %v after start_app returned",
		calls, ok.Load(), retryable.Load(), other.Load(), (<-recovery).Round(time.Millisecond))
}

// restartBroker stops the RabbitMQ application for two seconds and starts
// it again; then it calls demo.add until a call succeeds and returns how
// long that took after start_app returned.
func restartBroker(t *testing.T, base string) time.Duration {
	if out, err := exec.Command("rabbitmqctl", "stop_app").CombinedOutput(); err != nil {
		t.Errorf("rabbitmqctl stop_app: %v\n%s", err, out)
		return 0
	}
	started := false
	t.Cleanup(func() { // back even if the test fails before it is
		if !started {
			_ = exec.Command("rabbitmqctl", "start_app").Run()
		}
	})
	time.Sleep(2 * time.Second)
	out, err := exec.Command("rabbitmqctl", "start_app").CombinedOutput()
	started = err == nil
	if err != nil {
		t.Errorf("rabbitmqctl start_app: %v\n%s", err, out)
		return 0
	}
	back := time.Now()
	for time.Since(back) < time.Minute {
		res, err := http.Post(base+"/v1/ns/default/tasks/demo.add?wait=5s", "application/json", strings.NewReader(`{"a":1,"b":1}`))
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(body), `"state":"succeeded"`) {
				return time.Since(back)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("no call succeeded within a minute after the broker came back")
	return time.Minute
}

// A task runs longer than the broker's consumer_timeout (lowered to 3 s for
// the test): the worker leases it and it still ends with one result.
func TestDisruptiveTaskOutlivesConsumerTimeout(t *testing.T) {
	for _, setting := range [][2]string{{"consumer_timeout", "3000"}, {"channel_tick_interval", "1000"}} {
		old := brokerEnv(t, setting[0])
		setBrokerEnv(t, setting[0], setting[1])
		t.Cleanup(func() { setBrokerEnv(t, setting[0], old) })
	}
	s := newSystem(t)
	s.worker("--lease-after", "1s") // opens its channels after the change
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.sleep")
	inv := call(t, base, "default", "demo.sleep", `{"ms":8000,"value":"long"}`, "?wait=1s")
	got := poll(t, base, "default", inv.ID, 60*time.Second)
	if got.State != "succeeded" || string(got.Result) != `"long"` {
		t.Fatalf("long task: %s %s %+v", got.State, got.Result, got.Error)
	}
}

// brokerEnv reads a setting of the rabbit application.
func brokerEnv(t *testing.T, key string) string {
	out, err := exec.Command("rabbitmqctl", "eval", "{ok, V} = application:get_env(rabbit, "+key+"), V.").Output()
	if err != nil {
		t.Fatalf("rabbitmqctl eval get %s: %v", key, err)
	}
	return strings.TrimSpace(string(out))
}

// setBrokerEnv changes a setting of the rabbit application at run time.
func setBrokerEnv(t *testing.T, key, value string) {
	if out, err := exec.Command("rabbitmqctl", "eval", "application:set_env(rabbit, "+key+", "+value+").").CombinedOutput(); err != nil {
		t.Errorf("rabbitmqctl eval set %s: %v\n%s", key, err, out)
	}
}

// brokerFault takes the broker away and registers its restoring with the
// test's cleanup, so that it comes back even when the test fails.
type brokerFault struct {
	name           string
	cause, restore func(t *testing.T)
}

// start causes the fault and returns what restores the broker, once,
// whenever it is called first: by the test, or by its cleanup.
func (f brokerFault) start(t *testing.T) (restore func()) {
	f.cause(t)
	var once sync.Once
	restore = func() { once.Do(func() { f.restore(t) }) }
	t.Cleanup(restore)
	return restore
}

var brokerFaults = []brokerFault{
	{"stopped", func(t *testing.T) { rabbitmqctl(t, "stop_app") }, func(t *testing.T) { rabbitmqctl(t, "start_app") }},
	{"memory alarm", func(t *testing.T) {
		rabbitmqctl(t, "set_vm_memory_high_watermark", "0.000001")
	}, func(t *testing.T) {
		rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, brokerWatermark...)...)
	}},
}

// brokerWatermark is how to give the broker back its memory watermark:
// its own, read when the package's tests start, as a fraction or
// "absolute" and a size; the default 0.4 if it is below 1% (an alarm a
// killed run left on).
var brokerWatermark = func() []string {
	out, err := exec.Command("rabbitmqctl", "eval", "vm_memory_monitor:get_vm_memory_high_watermark().").Output()
	w := strings.TrimSpace(string(out))
	if abs, ok := strings.CutPrefix(w, "{absolute,"); ok && err == nil {
		return []string{"absolute", strings.TrimSuffix(abs, "}")}
	}
	if f, perr := strconv.ParseFloat(w, 64); err == nil && perr == nil && f >= 0.01 {
		return []string{w}
	}
	return []string{"0.4"}
}()

// While the broker is away (stopped, or blocking publishers in a memory
// alarm), a new call is answered within its wait (at least 1 s) plus a
// margin: 503 unavailable, retryable, with Retry-After, and nothing runs;
// /readyz of the gateway and the worker answer 503. Once it is back, both
// are ready again and calls succeed. A call written just as the broker
// began to block (its connection had not heard yet) was taken by the
// broker: it is answered 202, and runs once the alarm clears; every 202
// ends in its outcome, and only those run.
func TestDisruptiveBrokerAwayAnswersInTime(t *testing.T) {
	s := newSystem(t)
	_, worker := s.observed("worker")
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.add")
	var accepted []string // calls answered 202 while the broker blocked
	for _, f := range brokerFaults {
		t.Run(f.name, func(t *testing.T) {
			restore := f.start(t)
			waitStatus(t, gw+"/readyz", 503, time.Minute)
			waitStatus(t, worker+"/readyz", 503, time.Minute)
			for _, wait := range []time.Duration{0, 2 * time.Second} {
				began := time.Now()
				res, err := http.Post(fmt.Sprintf("%s/v1/ns/default/tasks/demo.add?wait=%v", gw, wait), "application/json", strings.NewReader(`{"a":1,"b":2}`))
				if err != nil {
					t.Fatal(err)
				}
				took := time.Since(began)
				retryAfter := res.Header.Get("Retry-After")
				inv := read(t, res)
				if inv.status == 202 && f.name == "memory alarm" {
					accepted = append(accepted, inv.ID)
					t.Logf("wait=%v: 202 in %v: written as the broker began to block", wait, took.Round(time.Millisecond))
					continue
				}
				if inv.status != 503 || inv.Code != "unavailable" || !inv.Retryable || retryAfter == "" {
					t.Errorf("wait=%v: %d %s retryable %v Retry-After %q; want 503 unavailable, retryable, with Retry-After", wait, inv.status, inv.Code, inv.Retryable, retryAfter)
				}
				if limit := max(wait, time.Second) + 2*time.Second; took > limit {
					t.Errorf("wait=%v: answered after %v, more than %v", wait, took.Round(time.Millisecond), limit)
				}
				t.Logf("wait=%v: %d %s in %v", wait, inv.status, inv.Code, took.Round(time.Millisecond))
			}
			restore()
			waitStatus(t, gw+"/readyz", 200, time.Minute)
			waitStatus(t, worker+"/readyz", 200, time.Minute)
			if inv := call(t, gw, "default", "demo.add", `{"a":2,"b":3}`, "?wait=20s"); inv.State != "succeeded" || string(inv.Result) != "5" {
				t.Fatalf("after the broker is back: %d %s %s %+v", inv.status, inv.State, inv.Result, inv.Error)
			}
		})
	}
	// A call made the moment the alarm begins is, most times, written before
	// its connection hears of the block (it does on its first publish):
	// the broker holds it, and it is accepted and runs later, not refused.
	t.Run("call as the alarm begins", func(t *testing.T) {
		restore := brokerFaults[1].start(t)
		inv := call(t, gw, "default", "demo.add", `{"a":1,"b":2}`, "?wait=1s")
		switch {
		case inv.status == 202:
			accepted = append(accepted, inv.ID)
		case inv.status != 503 || inv.Code != "unavailable":
			t.Errorf("a call as the alarm begins: %d %s; want 202, or 503 unavailable", inv.status, inv.Code)
		}
		t.Logf("a call as the alarm begins: %d", inv.status)
		restore()
		waitStatus(t, gw+"/readyz", 200, time.Minute)
	})
	for _, id := range accepted {
		if got := poll(t, gw, "default", id, time.Minute); got.State != "succeeded" || string(got.Result) != "3" {
			t.Errorf("call %s, accepted while the broker blocked: %s %s %+v", id, got.State, got.Result, got.Error)
		}
	}
	// The refused calls ran nowhere: the worker ran the calls made while
	// the broker was there, and those it accepted.
	if ran, want := metricSum(t, worker, "atasks_worker_invocations_total"), len(brokerFaults)+len(accepted); ran != float64(want) {
		t.Errorf("the worker ran %v invocations; want %d", ran, want)
	}
}

// A call delayed 3 s (demo.step, through a gateway with the history, so
// its outcome outlives the broker's restart) survives the restart of the
// broker and of its only worker during the wait: it runs once, not before
// its time. Another, cancelled before its time, never runs, although the
// worker that heard the cancel is replaced before its time (the new one
// knows it from the stream of cancels); one delayed a little longer, sent
// after it, shows when the first's time has passed.
func TestDisruptiveDelayedCall(t *testing.T) {
	s := newSystem(t)
	l := newRunLedger(t, s)
	w := s.worker()
	_, gw := s.gateway("--history")
	waitServed(t, gw, "default", "demo.step")

	inv := call(t, gw, "default", "demo.step", `{"step":1,"ms":10}`, "?delay=3s&wait=0")
	if inv.status != 202 || inv.State != "scheduled" || inv.RunAt.IsZero() {
		t.Fatalf("delay=3s: %d %s %v; want 202 scheduled with run_at", inv.status, inv.State, inv.RunAt)
	}
	w.kill()
	restore := brokerFaults[0].start(t) // stop_app
	restore()
	w = s.worker()
	got := poll(t, gw, "default", inv.ID, time.Minute)
	if got.State != "succeeded" || string(got.Result) != `{"step":1}` {
		t.Fatalf("the delayed call after the restarts: %s %s %+v", got.State, got.Result, got.Error)
	}
	starts := l.wait(10*time.Second, "its start", func(es []entry) bool {
		return slices.ContainsFunc(es, func(e entry) bool { return e.ID == inv.ID && e.Event == "start" })
	})
	var runs []time.Time
	for _, e := range starts {
		if e.ID == inv.ID && e.Event == "start" {
			runs = append(runs, e.At)
		}
	}
	if len(runs) != 1 || runs[0].Before(inv.RunAt) {
		t.Fatalf("the delayed call started at %v; want once, at its run_at %v or later", runs, inv.RunAt)
	}
	t.Logf("delayed 3 s across a broker and worker restart: started %v after its run_at", runs[0].Sub(inv.RunAt).Round(time.Millisecond))

	cancelled := call(t, gw, "default", "demo.step", `{"step":2,"ms":10}`, "?delay=4s&wait=0")
	after := call(t, gw, "default", "demo.step", `{"step":3,"ms":10}`, "?delay=5s&wait=0")
	req, _ := http.NewRequest("DELETE", gw+"/v1/ns/default/invocations/"+cancelled.ID, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, res); got.State != "cancelled" {
		t.Fatalf("DELETE of a scheduled call: %d %s", got.status, got.State)
	}
	w.kill() // it heard the cancel broadcast; its successor did not
	s.worker()
	if got := poll(t, gw, "default", after.ID, time.Minute); got.State != "succeeded" {
		t.Fatalf("the call delayed after the cancelled one: %s %+v", got.State, got.Error)
	}
	for _, e := range l.read() {
		if e.ID == cancelled.ID {
			t.Errorf("the call cancelled before its time ran: %+v", e)
		}
	}
}
