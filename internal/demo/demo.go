// Package demo defines the demo tasks both binaries serve: a few tasks in
// namespace "default" that show calls, nesting, parallel awaits, errors,
// panics and durable parents (durable.go, with its run ledger), and the
// seed project's own scenarios in namespace "seed".
package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/atasks-go/atasks"
)

// Echo returns its input unchanged: any JSON value.
var Echo = atasks.Define(echo)

func echo(_ context.Context, in any) (any, error) { return in, nil }

// AddIn is the input of Add.
type AddIn struct {
	A int64 `json:"a" jsonschema:"description=the first term"`
	B int64 `json:"b" jsonschema:"description=the second term"`
}

// Add returns a+b.
var Add = atasks.Define(add)

func add(_ context.Context, in AddIn) (int64, error) { return in.A + in.B, nil }

// SleepIn is the input of Sleep.
type SleepIn struct {
	MS    int64 `json:"ms" jsonschema:"description=how long to sleep, in milliseconds"`
	Value any   `json:"value,omitempty" jsonschema:"description=what to return; null if absent"`
}

// Sleep waits MS milliseconds, then returns Value; it returns early with
// the context's error when its context ends.
var Sleep = atasks.Define(sleep)

func sleep(ctx context.Context, in SleepIn) (any, error) {
	return sleepThen(ctx, time.Duration(in.MS)*time.Millisecond, in.Value)
}

// FibIn is the input of Fib.
type FibIn struct {
	N int `json:"n" jsonschema:"description=which Fibonacci number,minimum=0,maximum=40"`
}

// Fib returns the Nth Fibonacci number, awaiting Fib(N-1) and Fib(N-2) in
// parallel as two task calls: a recursive fan-out of 2·fib(N+1)-1 invocations.
// It records its runs in the run ledger (ATASKS_DEMO_LEDGER), as Pipeline does.
var Fib *atasks.Task[FibIn, int64]

func fib(ctx context.Context, in FibIn) (int64, error) {
	if err := runs.record(ctx, "start", nil); err != nil {
		return 0, err
	}
	n := int64(max(in.N, 0))
	if in.N >= 2 {
		fs := []*atasks.Future[int64]{Fib.Start(ctx, FibIn{in.N - 1}), Fib.Start(ctx, FibIn{in.N - 2})}
		outs, err := atasks.WaitAll(ctx, fs, atasks.CancelOnError())
		if err != nil {
			return 0, err
		}
		n = outs[0] + outs[1]
	}
	if err := runs.record(ctx, "end", nil); err != nil {
		return 0, err
	}
	return n, nil
}

// GatherIn is the input of Gather.
type GatherIn struct {
	N  int   `json:"n" jsonschema:"description=how many sleeps to await,minimum=0,maximum=1000"`
	MS int64 `json:"ms" jsonschema:"description=how long each sleeps, in milliseconds"`
}

// Gather awaits N Sleep calls of MS milliseconds in parallel, the i-th
// returning i, and returns [0..N-1] in order.
var Gather = atasks.Define(gather)

func gather(ctx context.Context, in GatherIn) ([]int64, error) {
	fs := make([]*atasks.Future[int64], in.N)
	for i := range fs {
		fs[i] = sleepInt.Start(ctx, SleepIn{MS: in.MS, Value: i})
	}
	return atasks.WaitAll(ctx, fs)
}

// sleepInt is Sleep seen by a caller that expects an integer back.
var sleepInt = atasks.Ref[SleepIn, int64](atasks.DefaultNamespace, Sleep.Name())

// FailIn is the input of Fail.
type FailIn struct {
	Code      string `json:"code" jsonschema:"description=the error's code"`
	Message   string `json:"message,omitempty" jsonschema:"description=the error's message"`
	Details   any    `json:"details,omitempty"`
	Retryable bool   `json:"retryable,omitempty"`
}

// Fail fails with a typed error of the given code, message, details and
// retryable flag.
var Fail = atasks.Define(fail)

func fail(_ context.Context, in FailIn) (any, error) {
	err := atasks.NewError(in.Code, in.Message, in.Details)
	err.Retryable = in.Retryable
	return nil, err
}

// FlakyIn is the input of Flaky.
type FlakyIn struct {
	Fail      int  `json:"fail,omitempty" jsonschema:"description=how many first attempts fail"`
	Permanent bool `json:"permanent,omitempty" jsonschema:"description=fail with a non-retryable error: no retry"`
	Value     any  `json:"value,omitempty" jsonschema:"description=what to return once it succeeds"`
}

// Flaky fails its first Fail attempts with a retryable error ("flaky"), or
// a non-retryable one ("broken") if Permanent, then returns Value. It
// retries up to 4 attempts in all, 1 s then 2 s apart (± 20%).
var Flaky = atasks.Define(flaky, atasks.Retry(atasks.RetryPolicy{MaxAttempts: 4, Initial: time.Second, Max: 4 * time.Second}))

func flaky(ctx context.Context, in FlakyIn) (any, error) {
	inv, _ := atasks.InvocationFrom(ctx)
	if inv.Attempt > in.Fail {
		return in.Value, nil
	}
	if in.Permanent {
		return nil, atasks.NewError("broken", fmt.Sprintf("attempt %d failed for good", inv.Attempt), nil)
	}
	err := atasks.NewError("flaky", fmt.Sprintf("attempt %d failed, try again", inv.Attempt), nil)
	err.Retryable = true
	return nil, err
}

// Panic panics; the caller gets an error with code "panic".
var Panic = atasks.Define(panicking, atasks.Name("demo.panic"))

func panicking(context.Context, any) (any, error) { panic("demo.panic was called") }

// Seed calls the seed namespace's RequestParallel: an await across namespaces.
var Seed = atasks.Define(seed)

func seed(ctx context.Context, _ any) ([]int64, error) {
	return RequestParallel.Call(ctx, nil)
}

func init() {
	Fib = atasks.Define(fib)
}
