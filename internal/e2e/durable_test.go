package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The proofs of durable parents (docs/DURABILITY.md, issue 19): a worker
// running a parent is killed (-9) mid-way and the parent runs again on
// another worker. What ran where, and how often, is read from the demo
// tasks' run ledger (ATASKS_DEMO_LEDGER, internal/demo), which every
// worker of a test appends to, killed ones included.

// A sequential pipeline of six 1 s steps, its worker killed while step 4
// runs: the re-run pipeline gets steps 1–3's kept outcomes back without
// running them again, and steps 4–6 run, step 4 at most twice (once more
// if it ran on the killed worker).
func TestDurablePipelineSequential(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	led := newRunLedger(t, s)
	workers := make([]*proc, 2)
	for i := range workers {
		workers[i], _ = s.observed("testworker-plain", "--concurrency", "4")
	}
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.pipeline")
	inv := call(t, gw, "default", "demo.pipeline", `{"steps":6,"ms":1000}`, "?wait=0s")
	if inv.status != 202 {
		t.Fatalf("call: %d %s %+v", inv.status, inv.State, inv.Error)
	}
	id := inv.ID
	// Step 4 started: the pipeline had step 3's outcome (Call returned).
	lines := led.wait(time.Minute, "step 3 of the pipeline to end and step 4 to start", func(ls []entry) bool {
		return slices.ContainsFunc(ls, isStep(id, "end", 3)) && slices.ContainsFunc(ls, isStep(id, "start", 4))
	})
	victim, got, lines, starts := killPipeline(t, led, workers, lines, gw, id, 6)
	for k := 1; k <= 3; k++ {
		if starts[k] != 1 {
			t.Errorf("step %d (ended before the kill) started %d times; want once: the re-run pipeline should get its kept outcome back\n%s", k, starts[k], led.story(id))
		}
	}
	for k := 4; k <= 6; k++ {
		if !slices.ContainsFunc(lines, isStep(id, "end", k)) {
			t.Errorf("step %d never ended", k)
		}
		if starts[k] > 2 {
			t.Errorf("step %d started %d times; want at most 2\n%s", k, starts[k], led.story(id))
		}
	}
	checkReran(t, lines, id, "demo.pipeline")
	t.Logf("killed worker %d (pid %d) while step 4 ran; steps 4, 5, 6 started %d, %d, %d times; the pipeline: %s attempt %d",
		victim, workers[victim].cmd.Process.Pid, starts[4], starts[5], starts[6], got.State, got.Attempt)
}

// A parallel pipeline of ten 1 s steps on six compute slots (two
// workers of three), its worker killed once six steps have ended: those six
// do not run again.
func TestDurablePipelineParallel(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	led := newRunLedger(t, s)
	workers := make([]*proc, 2)
	for i := range workers { // six steps at a time: the first six end together, the other four wait
		workers[i], _ = s.observed("testworker-plain", "--concurrency", "3")
	}
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.pipeline")
	inv := call(t, gw, "default", "demo.pipeline", `{"steps":10,"ms":1000,"parallel":true}`, "?wait=0s")
	if inv.status != 202 {
		t.Fatalf("call: %d %s %+v", inv.status, inv.State, inv.Error)
	}
	id := inv.ID
	// A step whose "end" is written has its outcome published a moment
	// later, by its own worker: if that is the one killed and the kill
	// comes in between, the step rightly runs again. So the steps held to
	// have ended before the kill are those whose "end" was in the ledger
	// one read (50 ms) before the read after which the kill comes: seen
	// once there were six of them. A failure below names the step's worker.
	var ended []int
	lines := led.wait(time.Minute, "six steps of the pipeline to end", func(ls []entry) bool {
		if len(ended) >= 6 {
			return true
		}
		ended = stepsThat(ls, id, "end")
		return false
	})
	endedBy := map[int]int{}
	for _, l := range lines {
		if isStep(id, "end", 0)(l) {
			endedBy[l.Step] = l.PID
		}
	}
	victim, _, lines, starts := killPipeline(t, led, workers, lines, gw, id, 10)
	var others []string
	for k := 1; k <= 10; k++ {
		if !slices.Contains(ended, k) {
			if starts[k] > 2 {
				t.Errorf("step %d started %d times; want at most 2\n%s", k, starts[k], led.story(id))
			}
			others = append(others, fmt.Sprintf("step %d %d×", k, starts[k]))
		} else if starts[k] != 1 {
			on := "another worker"
			if endedBy[k] == workers[victim].cmd.Process.Pid {
				on = "the killed worker"
			}
			t.Errorf("step %d (ended at least 50 ms before the kill, on %s) started %d times; want once: the re-run pipeline should get its kept outcome back\n%s", k, on, starts[k], led.story(id))
		}
	}
	checkReran(t, lines, id, "demo.pipeline")
	t.Logf("killed worker %d once steps %v had ended; the others started: %s", victim, ended, strings.Join(others, ", "))
}

// demo.fib 18 (8361 invocations) on two workers of four slots; the worker
// running the root is killed once 3000 invocations have ended, and a new
// one takes its place. Every re-run parent gets its children's kept
// outcomes back: the waste is the runs the kill cut short (each delivery
// the killed worker held starts again) and queued children sent twice,
// not the root's whole subtree as before durable parents.
func TestDurableFibWaste(t *testing.T) {
	t.Parallel()
	const n, invocations = 18, 8361 // 2·fib(19)−1
	s := newSystem(t)
	led := newRunLedger(t, s)
	workers := make([]*proc, 2)
	for i := range workers {
		workers[i], _ = s.observed("testworker-plain", "--concurrency", "4")
	}
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.fib")
	inv := call(t, gw, "default", "demo.fib", fmt.Sprintf(`{"n":%d}`, n), "?wait=0s")
	if inv.status != 202 {
		t.Fatalf("call: %d %s %+v", inv.status, inv.State, inv.Error)
	}
	id := inv.ID
	began := time.Now()
	lines := led.wait(2*time.Minute, "3000 fib invocations to end", func(ls []entry) bool {
		return count(ls, func(l entry) bool { return l.Task == "demo.fib" && l.Event == "end" }) >= 3000
	})
	victim := killWriter(t, workers, lines, id)
	killedPID := workers[victim].cmd.Process.Pid
	killed, atKill := time.Now(), len(lines) // every line the killed worker wrote is among the first atKill
	startsAtKill := count(lines, func(l entry) bool { return l.Task == "demo.fib" && l.Event == "start" })
	workers[victim], _ = s.observed("testworker-plain", "--concurrency", "4")

	got := poll(t, gw, "default", id, 4*time.Minute)
	lines = led.read()
	if !isFinal(got.State) {
		t.Fatalf("fib(%d) did not end within 4 min of the kill: %s; the ledger has %d starts", n, got.State,
			count(lines, func(l entry) bool { return l.Task == "demo.fib" && l.Event == "start" }))
	}
	if got.State != "succeeded" || string(got.Result) != "2584" {
		t.Fatalf("fib(%d) after a kill: %s %s %+v; want succeeded 2584", n, got.State, got.Result, got.Error)
	}
	starts := count(lines, func(l entry) bool { return l.Task == "demo.fib" && l.Event == "start" })
	ids := map[string]bool{}
	for _, l := range lines {
		if l.Task == "demo.fib" {
			ids[l.ID] = true
		}
	}
	if len(ids) != invocations { // child ids derive from the parent's and the position: a re-run names them the same
		t.Errorf("the ledger names %d fib invocations; want %d", len(ids), invocations)
	}
	waste := starts - invocations
	t.Logf("fib(%d) with the root's worker killed after %d starts (%v in), ended %v after the kill: %d starts, %d wasted (undisturbed: %d starts, none wasted)",
		n, startsAtKill, killed.Sub(began).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), starts, waste, invocations)
	// Where the waste went. Each delivery the killed worker held (a
	// leaf computing, or a parent awaiting) runs again from its start, at
	// attempt 2: by design, and over a thousand of them in this tree. A
	// child queued but not running at the kill may run twice, its subtree
	// with it: by design too. What must not happen is the waste of the
	// time before durable parents: an invocation that had ended on a
	// surviving worker before the kill starting again after it (its kept
	// outcome must be returned). One that ended on the killed worker may:
	// its "end" is written before its outcome is published and confirmed,
	// which the kill may cut short (a few dozen under this load).
	byAttempt := map[int]int{}
	endedOn := map[string]int{} // pid where each invocation ended before the kill
	var again, onVictim []string
	for i, l := range lines {
		switch {
		case l.Task != "demo.fib":
		case l.Event == "start":
			byAttempt[l.Attempt]++
			if i >= atKill && endedOn[l.ID] == killedPID {
				onVictim = append(onVictim, l.ID)
			} else if i >= atKill && endedOn[l.ID] != 0 {
				again = append(again, l.ID)
			}
		case l.Event == "end" && i < atKill:
			endedOn[l.ID] = l.PID
		}
	}
	t.Logf("fib starts by attempt: %v; after the kill, %d invocations that had ended on the killed worker started again (their outcomes had not left it), %d that had ended on the surviving one",
		byAttempt, len(onVictim), len(again))
	if len(again) > 0 {
		t.Errorf("fib invocations that had ended on the surviving worker before the kill started again after it: %v; their parents' re-runs should have got their kept outcomes", again)
	}
	// The redelivered ones (attempt 2: every delivery the killed worker
	// held, 1 200 to 1 400 here: parents replaying, leaves computing)
	// plus queued children sent again. Before durable parents the re-run
	// root ran its whole subtree again: 12 238 wasted in one run.
	// Measured 1 300–2 400 (more when other tests load the machine).
	if waste >= 4000 {
		t.Errorf("%d runs of fib wasted by one kill; want fewer than 4000", waste)
	}
}

// demo.fickle calls demo.step then demo.step on its first attempt, and
// demo.echo in the first one's place on any later one: killed during its
// second step, it runs again and fails with "nondeterministic", naming
// both tasks, instead of taking step 1's outcome for echo's.
func TestDurableNondeterministic(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	led := newRunLedger(t, s)
	workers := make([]*proc, 2)
	for i := range workers {
		workers[i], _ = s.observed("testworker-plain")
	}
	_, gw := s.gateway()
	waitServed(t, gw, "default", "demo.fickle")
	inv := call(t, gw, "default", "demo.fickle", `{"ms":5000}`, "?wait=0s")
	if inv.status != 202 {
		t.Fatalf("call: %d %s %+v", inv.status, inv.State, inv.Error)
	}
	id := inv.ID
	// Step 2 started: fickle had step 1's outcome, which is kept.
	lines := led.wait(time.Minute, "fickle's step 2 to start", func(ls []entry) bool {
		return slices.ContainsFunc(ls, isStep(id, "start", 2))
	})
	killWriter(t, workers, lines, id)

	got := poll(t, gw, "default", id, 2*time.Minute)
	lines = led.read()
	if !isFinal(got.State) {
		t.Fatalf("fickle did not end within 2 min of its worker's kill: %s\n%s", got.State, led.story(id))
	}
	checkReran(t, lines, id, "demo.fickle")
	if got.State != "failed" || got.Error == nil || got.Error.Code != "nondeterministic" {
		t.Fatalf("fickle re-run with another task at position 1: %s %s %+v; want failed, code nondeterministic\n%s", got.State, got.Result, got.Error, led.story(id))
	}
	if !strings.Contains(got.Error.Message, "demo.step") || !strings.Contains(got.Error.Message, "demo.echo") {
		t.Errorf("the nondeterministic error's message %q names not both demo.step and demo.echo", got.Error.Message)
	}
	t.Logf("fickle: %s %q", got.Error.Code, got.Error.Message)
}

// entry is one line of the demo tasks' run ledger.
type entry struct {
	Event   string    `json:"event"` // "start" or "end"
	Task    string    `json:"task"`
	ID      string    `json:"id"`
	Parent  string    `json:"parent"`
	Attempt int       `json:"attempt"`
	PID     int       `json:"pid"`
	At      time.Time `json:"at"`
	Step    int       `json:"step"` // demo.step's only
}

// runLedger is the run ledger the workers of one test share, read as it grows.
type runLedger struct {
	t     *testing.T
	path  string
	off   int64
	rest  []byte // the start of a line not yet ended
	lines []entry
}

// newRunLedger makes the processes s starts from now on append to a new
// run ledger, and returns it.
func newRunLedger(t *testing.T, s *system) *runLedger {
	l := &runLedger{t: t, path: filepath.Join(t.TempDir(), "ledger")}
	s.env = append(s.env, "ATASKS_DEMO_LEDGER="+l.path)
	return l
}

// read returns every line written so far.
func (l *runLedger) read() []entry {
	l.t.Helper()
	f, err := os.Open(l.path)
	if os.IsNotExist(err) {
		return l.lines
	} else if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		l.t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		l.t.Fatal(err)
	}
	l.off += int64(len(b))
	b = append(l.rest, b...)
	end := bytes.LastIndexByte(b, '\n') + 1
	l.rest = slices.Clone(b[end:])
	for line := range bytes.SplitSeq(b[:end], []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e entry
		if err := json.Unmarshal(line, &e); err != nil {
			l.t.Fatalf("a line of the run ledger is not JSON (interleaved writes?): %q", line)
		}
		l.lines = append(l.lines, e)
	}
	return l.lines
}

// wait reads the ledger until ok holds of its lines, for up to d, and
// returns them; it fails the test saying what it waited for.
func (l *runLedger) wait(d time.Duration, what string, ok func([]entry) bool) []entry {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for {
		lines := l.read()
		if ok(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("waited %v for %s; the ledger has %d lines", d, what, len(lines))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// story renders the lines of invocation id and its children, for a
// failure's message.
func (l *runLedger) story(id string) string {
	var b strings.Builder
	for _, e := range l.lines {
		if e.ID != id && e.Parent != id {
			continue
		}
		fmt.Fprintf(&b, "  %-5s %s", e.Event, e.Task)
		if e.Task == "demo.step" {
			fmt.Fprintf(&b, " %d", e.Step)
		}
		fmt.Fprintf(&b, " id %.8s attempt %d pid %d\n", e.ID, e.Attempt, e.PID)
	}
	return b.String()
}

// isStep matches the line of event of step k (any step if 0) of parent.
func isStep(parent, event string, k int) func(entry) bool {
	return func(l entry) bool {
		return l.Task == "demo.step" && l.Parent == parent && l.Event == event && (k == 0 || l.Step == k)
	}
}

// stepsThat returns the steps of parent with a line of event, in order.
func stepsThat(lines []entry, parent, event string) []int {
	var ks []int
	for _, l := range lines {
		if isStep(parent, event, 0)(l) && !slices.Contains(ks, l.Step) {
			ks = append(ks, l.Step)
		}
	}
	slices.Sort(ks)
	return ks
}

// stepStarts counts the starts of each step of parent. It fails the test
// if a step ran under two ids: a re-run parent names its children as the
// first run did.
func stepStarts(t *testing.T, lines []entry, parent string) map[int]int {
	t.Helper()
	starts, ids := map[int]int{}, map[int]string{}
	for _, l := range lines {
		if !isStep(parent, "start", 0)(l) {
			continue
		}
		starts[l.Step]++
		if was, ok := ids[l.Step]; ok && was != l.ID {
			t.Errorf("step %d ran as %s and as %s; a re-run parent should name its children as before", l.Step, was, l.ID)
		}
		ids[l.Step] = l.ID
	}
	return starts
}

// count counts the lines that ok matches.
func count(lines []entry, ok func(entry) bool) int {
	n := 0
	for _, l := range lines {
		if ok(l) {
			n++
		}
	}
	return n
}

// killWriter kills -9 the worker that wrote the first start of invocation
// id, and returns its index.
func killWriter(t *testing.T, workers []*proc, lines []entry, id string) int {
	t.Helper()
	i := slices.IndexFunc(lines, func(l entry) bool { return l.ID == id && l.Event == "start" })
	if i < 0 {
		t.Fatalf("the ledger has no start of %s", id)
	}
	w := slices.IndexFunc(workers, func(p *proc) bool { return p.cmd.Process.Pid == lines[i].PID })
	if w < 0 {
		t.Fatalf("%s started in pid %d, no worker of this test", lines[i].Task, lines[i].PID)
	}
	workers[w].kill()
	return w
}

// killPipeline kills the worker that ran pipeline id (seen in lines),
// awaits the pipeline's end through the gateway at gw and checks its n
// steps; it returns the killed worker's index, the outcome, the ledger
// then and the starts of each step.
func killPipeline(t *testing.T, led *runLedger, workers []*proc, lines []entry, gw, id string, n int) (int, invocation, []entry, map[int]int) {
	t.Helper()
	victim := killWriter(t, workers, lines, id)
	got := poll(t, gw, "default", id, 2*time.Minute)
	lines = led.read()
	if !isFinal(got.State) {
		t.Fatalf("the pipeline did not end within 2 min of its worker's kill: %s\n%s", got.State, led.story(id))
	}
	checkSteps(t, got, n, led.story(id))
	return victim, got, lines, stepStarts(t, lines, id)
}

// checkReran checks that task id started twice, attempts 1 and 2: once
// before the kill and once after.
func checkReran(t *testing.T, lines []entry, id, task string) {
	t.Helper()
	var attempts []int
	for _, l := range lines {
		if l.ID == id && l.Task == task && l.Event == "start" {
			attempts = append(attempts, l.Attempt)
		}
	}
	if !slices.Equal(attempts, []int{1, 2}) {
		t.Errorf("%s started with attempts %v; want [1 2]: once before its worker's kill, once after", task, attempts)
	}
}

// checkSteps checks that a pipeline of n steps succeeded with steps 1..n in order.
func checkSteps(t *testing.T, got invocation, n int, story string) {
	t.Helper()
	var out struct{ Steps []struct{ Step int } }
	if got.State != "succeeded" || json.Unmarshal(got.Result, &out) != nil {
		t.Fatalf("the pipeline after its worker's kill: %s %s %+v; want succeeded\n%s", got.State, got.Result, got.Error, story)
	}
	var steps []int
	for _, s := range out.Steps {
		steps = append(steps, s.Step)
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(steps, want) {
		t.Errorf("the pipeline returned steps %v; want %v", steps, want)
	}
}
