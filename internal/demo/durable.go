package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
)

// The tasks of this file show durable parents (docs/DURABILITY.md): a
// pipeline of steps whose worker dies mid-way gets the outcomes of the
// steps that had ended back instead of running them again, and a parent
// that calls other tasks when it runs again fails with "nondeterministic".

// StepIn is the input of Step.
type StepIn struct {
	Step int   `json:"step" jsonschema:"description=which step: returned as is"`
	MS   int64 `json:"ms" jsonschema:"description=how long the step takes, in milliseconds,minimum=0"`
}

// StepOut is the output of Step.
type StepOut struct {
	Step int `json:"step" jsonschema:"description=the step of the input"`
}

// Step takes MS milliseconds, then returns its step; it returns early
// with the context's error when its context ends.
var Step = atasks.Define(step)

func step(ctx context.Context, in StepIn) (StepOut, error) {
	if err := runs.record(ctx, "start", &in.Step); err != nil {
		return StepOut{}, err
	}
	if _, err := sleepThen(ctx, time.Duration(in.MS)*time.Millisecond, nil); err != nil {
		return StepOut{}, err
	}
	if err := runs.record(ctx, "end", &in.Step); err != nil {
		return StepOut{}, err
	}
	return StepOut{Step: in.Step}, nil
}

// PipelineIn is the input of Pipeline.
type PipelineIn struct {
	Steps    int   `json:"steps" jsonschema:"description=how many steps,minimum=1,maximum=100"`
	MS       int64 `json:"ms" jsonschema:"description=how long each step takes, in milliseconds,minimum=0"`
	Parallel bool  `json:"parallel,omitempty" jsonschema:"description=start all steps at once rather than one after another"`
}

// PipelineOut is the output of Pipeline.
type PipelineOut struct {
	Steps []StepOut `json:"steps" jsonschema:"description=the steps' outputs, in order"`
}

// Pipeline calls Step 1 to Steps, each taking MS milliseconds: one after
// another, or all at once if Parallel, and returns their outputs in
// order. Killed mid-way, it runs again and gets the outcomes of the steps
// that had ended back instead of running them again.
var Pipeline = atasks.Define(pipeline)

func pipeline(ctx context.Context, in PipelineIn) (PipelineOut, error) {
	if err := runs.record(ctx, "start", nil); err != nil {
		return PipelineOut{}, err
	}
	var out PipelineOut
	if in.Parallel {
		fs := make([]*atasks.Future[StepOut], in.Steps)
		for i := range fs {
			fs[i] = Step.Start(ctx, StepIn{Step: i + 1, MS: in.MS})
		}
		steps, err := atasks.WaitAll(ctx, fs)
		if err != nil {
			return PipelineOut{}, err
		}
		out.Steps = steps
	} else {
		for i := 1; i <= in.Steps; i++ {
			s, err := Step.Call(ctx, StepIn{Step: i, MS: in.MS})
			if err != nil {
				return PipelineOut{}, err
			}
			out.Steps = append(out.Steps, s)
		}
	}
	if err := runs.record(ctx, "end", nil); err != nil {
		return PipelineOut{}, err
	}
	return out, nil
}

// FickleIn is the input of Fickle.
type FickleIn struct {
	MS int64 `json:"ms" jsonschema:"description=how long its second call takes, in milliseconds,minimum=0"`
}

// Fickle breaks the rule that makes replay safe, on purpose: its first
// attempt calls Step 1 (100 ms), then Step 2 (MS milliseconds); a later
// attempt calls Echo in Step 1's place, then Step 2. It returns the two
// outputs. Killed during Step 2, it runs again and fails with
// "nondeterministic", naming demo.step and demo.echo.
var Fickle = atasks.Define(fickle)

func fickle(ctx context.Context, in FickleIn) ([]any, error) {
	if err := runs.record(ctx, "start", nil); err != nil {
		return nil, err
	}
	var first any
	var err error
	if inv, _ := atasks.InvocationFrom(ctx); inv.Attempt <= 1 {
		first, err = Step.Call(ctx, StepIn{Step: 1, MS: 100})
	} else {
		first, err = Echo.Call(ctx, "in place of step 1")
	}
	if err != nil {
		return nil, err
	}
	second, err := Step.Call(ctx, StepIn{Step: 2, MS: in.MS})
	if err != nil {
		return nil, err
	}
	if err := runs.record(ctx, "end", nil); err != nil {
		return nil, err
	}
	return []any{first, second}, nil
}

// runs is the process's run ledger: nil unless ATASKS_DEMO_LEDGER names a
// file, and then recording costs a nil check.
var runs = newLedger(os.Getenv("ATASKS_DEMO_LEDGER"))

// ledger is a file to which Step, Pipeline, Fickle and Fib append one JSON
// line at each start and successful end of a run, so that a test (or a
// person) can count runs across worker processes, killed ones included:
//
//	{"event":"start","task":"demo.step","id":"…","parent":"…","attempt":1,"pid":4242,"at":"2026-12-07T17:00:00.123Z","step":3}
//
// "step" is demo.step's only. The file is opened once, at the first line,
// with O_APPEND, and each line is one write(2): lines from concurrent
// processes never interleave. It stays open until the process ends.
type ledger struct {
	path string
	once sync.Once
	f    *os.File
	err  error
}

func newLedger(path string) *ledger {
	if path == "" {
		return nil
	}
	return &ledger{path: path}
}

// record appends the line of event ("start" or "end") of the invocation
// running in ctx; step is demo.step's step, or nil.
func (l *ledger) record(ctx context.Context, event string, step *int) error {
	if l == nil {
		return nil
	}
	l.once.Do(func() { l.f, l.err = os.OpenFile(l.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644) })
	if l.err != nil {
		return fmt.Errorf("demo: the run ledger: %w", l.err)
	}
	inv, _ := atasks.InvocationFrom(ctx)
	line, err := json.Marshal(struct {
		Event   string    `json:"event"`
		Task    string    `json:"task"`
		ID      string    `json:"id"`
		Parent  string    `json:"parent"`
		Attempt int       `json:"attempt"`
		PID     int       `json:"pid"`
		At      time.Time `json:"at"`
		Step    *int      `json:"step,omitempty"`
	}{event, inv.Task, inv.ID, inv.Parent, inv.Attempt, os.Getpid(), time.Now(), step})
	if err != nil {
		return fmt.Errorf("demo: the run ledger: %w", err)
	}
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("demo: the run ledger: %w", err)
	}
	return nil
}
