package demo

import (
	"context"
	"time"

	"github.com/atasks-go/atasks"
)

// SeedNamespace holds the seed project's own scenarios.
const SeedNamespace = "seed"

// TaskOne sleeps 1 s and returns its argument.
var TaskOne = atasks.Define(taskOne, atasks.Name("task_one"), atasks.InNamespace(SeedNamespace))

func taskOne(ctx context.Context, v any) (any, error) { return sleepThen(ctx, time.Second, v) }

// TaskTwo sleeps 2 s and returns its argument.
var TaskTwo = atasks.Define(taskTwo, atasks.Name("task_two"), atasks.InNamespace(SeedNamespace))

func taskTwo(ctx context.Context, v any) (any, error) { return sleepThen(ctx, 2*time.Second, v) }

// TaskThree returns its argument at once.
var TaskThree = atasks.Define(taskThree, atasks.Name("task_three"), atasks.InNamespace(SeedNamespace))

func taskThree(_ context.Context, v any) (any, error) { return v, nil }

// RequestSequence awaits TaskOne(1), then TaskTwo(3), and returns both results.
var RequestSequence = atasks.Define(requestSequence, atasks.Name("request_sequence"), atasks.InNamespace(SeedNamespace))

func requestSequence(ctx context.Context, _ any) ([]int64, error) {
	one, err := seedInt(TaskOne).Call(ctx, 1)
	if err != nil {
		return nil, err
	}
	two, err := seedInt(TaskTwo).Call(ctx, 3)
	if err != nil {
		return nil, err
	}
	return []int64{one, two}, nil
}

// RequestParallel awaits TaskOne(0..4) and TaskTwo(0..4) in parallel and
// returns [0,1,2,3,4,0,1,2,3,4]: in about 2 s, not 15.
var RequestParallel = atasks.Define(requestParallel, atasks.Name("request_parallel"), atasks.InNamespace(SeedNamespace))

func requestParallel(ctx context.Context, _ any) ([]int64, error) {
	var fs []*atasks.Future[int64]
	for _, t := range []*atasks.Task[any, any]{TaskOne, TaskTwo} {
		for i := range 5 {
			fs = append(fs, seedInt(t).Start(ctx, i))
		}
	}
	return atasks.WaitAll(ctx, fs)
}

// seedInt is t seen by a caller that expects an integer back.
func seedInt(t *atasks.Task[any, any]) *atasks.Task[any, int64] {
	return atasks.Ref[any, int64](t.NS(), t.Name())
}

func sleepThen(ctx context.Context, d time.Duration, v any) (any, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return v, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
