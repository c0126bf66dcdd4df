package e2e

import (
	"net/http"
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
