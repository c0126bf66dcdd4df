package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/atasks-go/atasks/atasktest"
)

// The run ledger records each start and end of the pipeline, its steps and
// fib, one JSON line each, with ids that tie the steps to their pipeline.
// Not parallel: it swaps the package's ledger.
func TestLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger")
	was := runs
	runs = newLedger(path)
	t.Cleanup(func() { runs = was })
	ctx := atasktest.Start(t)

	type line struct {
		Event, Task, ID, Parent string
		Attempt, PID            int
		Step                    *int
	}
	read := func() []line {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var lines []line
		for _, b := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n")) {
			var l line
			if err := json.Unmarshal(b, &l); err != nil {
				t.Fatalf("a ledger line is not JSON: %q", b)
			}
			lines = append(lines, l)
		}
		return lines
	}
	// who renders a line for comparing: parent as "P" if it is the
	// pipeline's id, "" if empty, "?" otherwise.
	who := func(l line, pipeline string) string {
		parent := map[bool]string{true: "P", false: "?"}[l.Parent == pipeline]
		if l.Parent == "" {
			parent = ""
		}
		step := ""
		if l.Step != nil {
			step = fmt.Sprint(*l.Step)
		}
		if l.Attempt != 1 || l.PID != os.Getpid() || l.ID == "" {
			return fmt.Sprintf("bad %+v", l)
		}
		return l.Event + " " + l.Task + " " + parent + " " + step
	}

	for _, parallel := range []bool{false, true} {
		if err := os.Truncate(path, 0); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out, err := Pipeline.Call(ctx, PipelineIn{Steps: 3, MS: 1, Parallel: parallel})
		if err != nil || !slices.Equal(out.Steps, []StepOut{{1}, {2}, {3}}) {
			t.Fatalf("pipeline (parallel %v): %+v %v", parallel, out, err)
		}
		lines := read()
		if len(lines) != 8 || lines[0].Task != "demo.pipeline" {
			t.Fatalf("pipeline (parallel %v): ledger %+v; want 8 lines, the pipeline's start first", parallel, lines)
		}
		var got []string
		for _, l := range lines {
			got = append(got, who(l, lines[0].ID))
		}
		want := []string{"start demo.pipeline  ", "start demo.step P 1", "end demo.step P 1", "start demo.step P 2", "end demo.step P 2", "start demo.step P 3", "end demo.step P 3", "end demo.pipeline  "}
		if parallel { // the steps' lines in any order
			slices.Sort(got[1:7])
			want = []string{"start demo.pipeline  ", "end demo.step P 1", "end demo.step P 2", "end demo.step P 3", "start demo.step P 1", "start demo.step P 2", "start demo.step P 3", "end demo.pipeline  "}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pipeline (parallel %v): ledger\n%q\nwant\n%q", parallel, got, want)
		}
	}

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := Fib.Call(ctx, FibIn{N: 4}); err != nil || n != 3 {
		t.Fatalf("fib(4) = %d, %v", n, err)
	}
	var starts, ends int
	for _, l := range read() {
		switch {
		case l.Task != "demo.fib" || l.Step != nil:
			t.Errorf("a line not of demo.fib, or with a step: %+v", l)
		case l.Event == "start":
			starts++
		case l.Event == "end":
			ends++
		}
	}
	if starts != 9 || ends != 9 { // 2·fib(5)−1
		t.Errorf("fib(4) recorded %d starts and %d ends; want 9 of each", starts, ends)
	}

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if out, err := Fickle.Call(ctx, FickleIn{MS: 1}); err != nil || len(out) != 2 {
		t.Fatalf("fickle: %v %v", out, err)
	}
	if lines := read(); len(lines) != 6 || lines[0].Task != "demo.fickle" || lines[5].Task != "demo.fickle" {
		t.Errorf("fickle: ledger %+v; want its start, two steps' start and end, its end", lines)
	}
}

// Without ATASKS_DEMO_LEDGER, recording is a nil check.
func TestNoLedger(t *testing.T) {
	if newLedger("") != nil {
		t.Fatal("an empty path made a ledger")
	}
	var l *ledger
	if err := l.record(t.Context(), "start", nil); err != nil {
		t.Fatal(err)
	}
}
