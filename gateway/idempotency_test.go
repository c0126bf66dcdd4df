package gateway_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/atasks-go/atasks/gateway"
)

// invoke posts body to task of ns with an Idempotency-Key, if any.
func invoke(t *testing.T, srv string, ns, task, query, key, body string) response {
	t.Helper()
	req, err := http.NewRequest("POST", srv+"/v1/ns/"+ns+"/tasks/"+task+query, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return send(t, req)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	steps := []struct {
		ns, task, query, key, body string
		status                     int
		code                       string
		same                       int // step whose invocation is answered again; -1: a new one
	}{
		{"default", "demo.add", "", "a", `{"a":1,"b":2}`, 200, "", -1},
		{"default", "demo.add", "", "a", `{ "b":2, "a":1 }`, 200, "", 0}, // the same input
		{"default", "demo.add", "", "b", `{"a":1,"b":2}`, 200, "", -1},
		{"seed", "task_three", "", "a", `"x"`, 200, "", -1}, // keys are per namespace
		{"default", "demo.echo", "", "a", `{"a":1,"b":2}`, 422, "idempotency_conflict", -1},
		{"default", "demo.add", "", "a", `{"a":1,"b":3}`, 422, "idempotency_conflict", -1},
		{"default", "demo.sleep", "?wait=0s", "s", `{"ms":300,"value":1}`, 202, "", -1},
		{"default", "demo.sleep", "?wait=0s", "s", `{"ms":300,"value":1}`, 202, "", 6}, // still in flight
		{"default", "demo.sleep", "?wait=10s", "s", `{"ms":300,"value":1}`, 200, "", 6},
		{"default", "demo.add", "", "", `{"a":1,"b":2}`, 200, "", -1},
		{"default", "demo.add", "", "", `{"a":1,"b":2}`, 200, "", -1}, // no key, no replay
	}
	// origin is the step that started the invocation step i answers.
	origin := func(i int) int {
		if steps[i].same >= 0 {
			return steps[i].same
		}
		return i
	}
	ids := make([]string, len(steps))
	for i, s := range steps {
		r := invoke(t, srv.URL, s.ns, s.task, s.query, s.key, s.body)
		ids[i], _ = r.body["id"].(string)
		if r.status != s.status || s.code != "" && r.body["code"] != s.code {
			t.Fatalf("step %d: got %d %s; want %d %s", i, r.status, r.raw, s.status, s.code)
		}
		if s.code != "" {
			continue
		}
		if replayed := r.header.Get("Idempotent-Replayed") == "true"; replayed != (s.same >= 0) {
			t.Errorf("step %d: Idempotent-Replayed is %v", i, replayed)
		}
		if r.status == 202 && r.location != "/v1/ns/"+s.ns+"/invocations/"+ids[i] {
			t.Errorf("step %d: Location %q", i, r.location)
		}
		for j := range i {
			if same := ids[i] == ids[j]; same != (origin(i) == origin(j)) {
				t.Errorf("step %d answers invocation %s, step %d's %s", i, ids[i], j, ids[j])
			}
		}
	}
}

// Concurrent requests with one key share one invocation.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	const n = 50
	var mu sync.Mutex
	ids, fresh := map[string]int{}, 0
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r := invoke(t, srv.URL, "default", "demo.sleep", "", "once", `{"ms":100,"value":"v"}`)
			mu.Lock()
			defer mu.Unlock()
			if r.status == 200 && r.body["result"] == "v" {
				ids[r.body["id"].(string)]++
			}
			if r.header.Get("Idempotent-Replayed") == "" {
				fresh++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || fresh != 1 {
		t.Errorf("%d requests with one key: invocations %v, %d not replayed; want one invocation, one not replayed", n, ids, fresh)
	}
}

// Evicted invocations are 410 while their ids are remembered (the last
// MaxFinished), then 404; their idempotency keys go with them.
func TestEvictedInvocationsAreGone(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{MaxFinished: 2})
	var ids []string
	post := func(key string) (replayed bool) {
		r := invoke(t, srv.URL, "default", "demo.add", "", key, `{"a":1,"b":2}`)
		if r.status != 200 {
			t.Fatalf("invoke: %d %s", r.status, r.raw)
		}
		ids = append(ids, r.body["id"].(string))
		return r.header.Get("Idempotent-Replayed") != ""
	}
	post("k")
	post("")
	post("")
	post("") // ids[0] and ids[1] are evicted
	for _, tc := range []struct {
		ns     string
		of     int // index in ids
		status int
	}{{"default", 0, 410}, {"default", 1, 410}, {"default", 2, 200}, {"default", 3, 200}, {"seed", 1, 404}} {
		r := do(t, "GET", srv.URL+"/v1/ns/"+tc.ns+"/invocations/"+ids[tc.of], "")
		if r.status != tc.status {
			t.Errorf("invocation %d in %s: got %d %s; want %d", tc.of, tc.ns, r.status, r.raw, tc.status)
		}
	}
	if post("k") { // ids[4]: evicts ids[2], whose id displaces ids[0]'s
		t.Error("an evicted invocation's idempotency key was replayed")
	}
	for _, tc := range []struct{ of, status int }{{0, 404}, {1, 410}, {2, 410}, {4, 200}} {
		if r := do(t, "DELETE", srv.URL+"/v1/ns/default/invocations/"+ids[tc.of], ""); r.status != tc.status {
			t.Errorf("delete invocation %d: got %d %s; want %d", tc.of, r.status, r.raw, tc.status)
		}
	}
}
