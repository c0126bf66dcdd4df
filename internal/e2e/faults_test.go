package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// kill -9 a worker three times while it works in a call tree (demo.fib 18,
// 8361 invocations, on two workers with 4 compute slots each), restarting
// it each time: parents and children are redelivered, to the same worker
// or the other, while their first runs' calls are still in flight; the
// caller gets the one right answer. demo.fib awaits with CancelOnError;
// test.fib_all (fib 16) without.
func TestWorkerKilledMidTree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		task, want string
		n          int
	}{{"demo.fib", "2584", 18}, {"test.fib_all", "987", 16}} {
		t.Run(tc.task, func(t *testing.T) {
			t.Parallel()
			s := newSystem(t)
			workers := [2]*proc{}
			metrics := [2]string{}
			var all []*proc
			for i := range workers {
				workers[i], metrics[i] = s.observed("testworker-plain", "--concurrency", "4")
				all = append(all, workers[i])
			}
			_, gw := s.gateway()
			waitServed(t, gw, "default", tc.task)
			inv := call(t, gw, "default", tc.task, fmt.Sprintf(`{"n":%d}`, tc.n), "?wait=0s")
			if inv.status != 202 {
				t.Fatalf("call: %d %s %+v", inv.status, inv.State, inv.Error)
			}
			for k := range 3 {
				i := k % 2
				// Mid-tree: the victim has finished a few hundred of the tree's invocations.
				waitMetric(t, metrics[i], "atasks_worker_invocations_total", 2*time.Minute, func(v float64) bool { return v >= 300 })
				workers[i].kill()
				workers[i], metrics[i] = s.observed("testworker-plain", "--concurrency", "4")
				all = append(all, workers[i])
			}
			got := poll(t, gw, "default", inv.ID, 6*time.Minute)
			if got.State != "succeeded" || string(got.Result) != tc.want {
				t.Fatalf("%s(%d) after three kills: %s %s %+v; want %s", tc.task, tc.n, got.State, got.Result, got.Error, tc.want)
			}
			for _, w := range all { // the panic of issue 12 was recovered into a "panic" outcome and retried away
				if strings.Contains(w.output(), "task panicked") {
					t.Errorf("a task panicked on a worker:\n%s", w.output())
				}
			}
			for _, w := range workers {
				select {
				case <-w.done:
					t.Errorf("a worker that was not killed exited:\n%s", w.output())
				default:
				}
			}
			t.Logf("%s(%d) = %s after three kills; the root ran %d times", tc.task, tc.n, got.Result, got.Attempt)
		})
	}
}

// The only worker of a task restarts (SIGTERM, then a new one) while
// calls keep coming: those sent while no worker lives are accepted and
// wait in the task's queue, and every call succeeds.
func TestOnlyWorkerRestartsUnderLoad(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	w, _ := s.observed("worker")
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.add")
	const callers, each = 16, 40
	var sent, ok atomic.Int64
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				a := c*each + i
				inv := call(t, gw, "default", "demo.add", fmt.Sprintf(`{"a":%d,"b":1}`, a), "?wait=30s")
				sent.Add(1)
				if inv.status == 202 {
					inv = poll(t, gw, "default", inv.ID, time.Minute)
				}
				if inv.State != "succeeded" || string(inv.Result) != strconv.Itoa(a+1) {
					t.Errorf("call %d: %d %s %s %+v", a, inv.status, inv.State, inv.Result, inv.Error)
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitUntil(t, time.Minute, func() bool { return sent.Load() >= callers*each/4 })
	w.stop(t, 30*time.Second) // leaves: the task has no live worker now
	if code := w.exitCode(); code != 0 {
		t.Errorf("the worker exited %d after a clean stop", code)
	}
	const during = 50 // calls made while no worker lives: accepted, queued
	ids := make([]string, during)
	for i := range ids {
		inv := call(t, gw, "default", "demo.add", fmt.Sprintf(`{"a":%d,"b":1000}`, i), "?wait=0s")
		if inv.status != 202 {
			t.Fatalf("a call with no live worker: %d %s %s; want 202", inv.status, inv.Code, inv.State)
		}
		ids[i] = inv.ID
	}
	s.observed("worker")
	for i, id := range ids {
		if got := poll(t, gw, "default", id, time.Minute); got.State != "succeeded" || string(got.Result) != strconv.Itoa(i+1000) {
			t.Errorf("call %d made with no worker: %s %s %+v", i, got.State, got.Result, got.Error)
		}
	}
	within(t, 3*time.Minute, "the calls", wg.Wait)
	t.Logf("%d calls under load and %d made while no worker lived: all succeeded", ok.Load(), during)
}

// A worker stopped with work it cannot finish within --drain gives that
// work back and exits 0; the other worker runs it, and each of those
// invocations reports attempt 2: the run that was stopped counts.
func TestDrainGivesBackAndExitsZero(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	draining, metrics := s.observed("worker", "--drain", "1s")
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.sleep")
	ids := make([]string, 10)
	for i := range ids {
		// Long enough to outlast the second worker's start on a loaded
		// machine (6 s seen), so that the drain still finds them running.
		inv := call(t, gw, "default", "demo.sleep", fmt.Sprintf(`{"ms":15000,"value":%d}`, i), "?wait=0s")
		if inv.status != 202 {
			t.Fatalf("call %d: %d %s", i, inv.status, inv.State)
		}
		ids[i] = inv.ID
	}
	waitMetric(t, metrics, "atasks_worker_invocations_in_flight", time.Minute, func(v float64) bool { return v == float64(len(ids)) })
	s.observed("worker")
	draining.stop(t, 30*time.Second)
	if code := draining.exitCode(); code != 0 {
		t.Errorf("a drain that gave its work back exited %d:\n%s", code, draining.output())
	}
	for i, id := range ids {
		got := poll(t, gw, "default", id, time.Minute)
		if got.State != "succeeded" || string(got.Result) != strconv.Itoa(i) || got.Attempt != 2 {
			t.Errorf("call %d: %s %s attempt %d %+v; want succeeded %d attempt 2", i, got.State, got.Result, got.Attempt, got.Error, i)
		}
	}
}

// Calls queued behind a task with no live worker cost the gateway bounded
// memory: beyond --max-unfinished they are refused with 503, and once the
// backlog has drained and the finished records have passed their
// retention, the gateway's RSS is back within twice its idle RSS.
func TestQueuedCallsMemoryIsBoundedAndReturned(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	w, _ := s.observed("worker")
	gwp, gw := s.gatewayBinary("gateway-plain", "--max-unfinished", "20000", "--max-unfinished-per-caller", "-1", "--retention", "5s", "--max-in-flight", "0")
	waitServed(t, gw, "default", "demo.add")
	for range 50 { // warm up
		call(t, gw, "default", "demo.add", `{"a":1,"b":2}`, "?wait=10s")
	}
	w.stop(t, 30*time.Second) // the queue stays: calls wait there
	idle := rss(t, gwp)
	const n = 22000
	codes := postMany(t, gw, "demo.add", n, 64)
	peak := rss(t, gwp)
	if codes[202] > 20000 || codes[503] < n-20000 || codes[202]+codes[503] != n {
		t.Fatalf("%d calls: %v; want at most 20000 accepted (202), the rest 503", n, codes)
	}
	s.observed("worker", "--concurrency", "500")
	waitMetric(t, gw, "atasks_gateway_invocations_in_flight", 3*time.Minute, func(v float64) bool { return v == 0 })
	drained := rss(t, gwp)
	var after int
	waitUntil(t, time.Minute, func() bool { after = rss(t, gwp); return after <= 2*idle })
	t.Logf("gateway RSS: idle %d MiB; %d calls queued: %d MiB (%.1f KiB a call); drained, records kept: %d MiB; records expired: %d MiB",
		idle>>20, 20000, peak>>20, float64(peak-idle)/20000/1024, drained>>20, after>>20)
}

// postMany posts n calls of task with ?wait=0s from c goroutines and counts
// the answers by status.
func postMany(t *testing.T, base, task string, n, c int) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c}}
	for range c {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				res, err := client.Post(base+"/v1/ns/default/tasks/"+task+"?wait=0s", "application/json", strings.NewReader(fmt.Sprintf(`{"a":%d,"b":1}`, i)))
				if err != nil {
					t.Errorf("post %d: %v", i, err)
					return
				}
				res.Body.Close()
				mu.Lock()
				codes[res.StatusCode]++
				mu.Unlock()
			}
		})
	}
	within(t, 3*time.Minute, "the posts", wg.Wait)
	return codes
}

// rss returns p's resident set size in bytes.
func rss(t *testing.T, p *proc) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])
			return kib << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// waitUntil waits until ok reports true, for up to d.
func waitUntil(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not so within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
