//go:build disruptive

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
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
	time.Sleep(2 * time.Second)
	if out, err := exec.Command("rabbitmqctl", "start_app").CombinedOutput(); err != nil {
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
