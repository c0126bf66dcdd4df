package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// demo.flaky fails its first two attempts; the worker that ran the first
// is killed while the retry waits in the broker, with no worker alive for
// the delay; a new worker runs the remaining attempts and the third
// succeeds: the caller gets one outcome.
func TestRetrySurvivesWorkerRestart(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	w := s.worker()
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.flaky")
	id := call(t, base, "default", "demo.flaky", `{"fail":2,"value":"third time"}`, "?wait=0s").ID

	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(base + "/v1/ns/default/invocations/" + id)
		if err != nil {
			t.Fatal(err)
		}
		if inv := read(t, res); inv.State == "queued" && inv.Attempt == 2 {
			break // attempt 1 failed; its retry waits in the broker for about 1 s
		}
		if time.Now().After(deadline) {
			t.Fatal("no retry of attempt 1 was announced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.kill()
	time.Sleep(2 * time.Second) // the delay passes with no worker alive
	s.worker()
	got := poll(t, base, "default", id, 60*time.Second)
	if got.State != "succeeded" || string(got.Result) != `"third time"` || got.Attempt != 3 {
		t.Fatalf("after the restart: %s %s attempt %d %+v", got.State, got.Result, got.Attempt, got.Error)
	}
}

// A request whose caller's deadline passes while no worker is alive is
// never run: the caller gets timed_out at its deadline, and the worker that
// starts later answers the expired request from the dead-letter queue
// without running it.
func TestExpiredRequestIsNotRun(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	w := s.worker()
	_, base := s.gateway()
	waitServed(t, base, "default", "demo.sleep")
	w.kill() // the catalog still lists it for a while: the request is queued
	got := call(t, base, "default", "demo.sleep", `{"ms":10,"value":"late"}`, "?timeout=1s&wait=10s")
	if got.State != "timed_out" {
		t.Fatalf("with no worker: %s %s %+v", got.State, got.Result, got.Error)
	}
	metrics := freeAddr(t)
	s.worker("--metrics-listen", metrics)
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := scrapeText(t, "http://"+metrics+"/metrics")
		if strings.Contains(m, `atasks_amqp_dead_letters_total{ns="default",task="demo.sleep"} 1`) {
			if strings.Contains(m, `atasks_worker_invocations_total{ns="default",outcome="succeeded",task="demo.sleep"}`) {
				t.Fatalf("the expired request ran:\n%s", m)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new worker never answered the expired request:\n%s", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrapeText returns the body at url, "" while it does not answer.
func scrapeText(t *testing.T, url string) string {
	res, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}
