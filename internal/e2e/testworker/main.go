// Command testworker is cmd/worker plus tasks that only tests want: one
// that kills its own worker, as a poison task does, and a variant of
// demo.fib. It is built and run by
// the end-to-end tests, and shows how users write their own worker binaries:
// define tasks, then run the worker.
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/cli"
	"github.com/atasks-go/atasks/internal/demo" // and the demo tasks
)

// Crash kills the worker that runs it, every time: a poison task.
var Crash = atasks.Define(func(context.Context, any) (any, error) {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}, atasks.Name("test.crash"))

// FibAll is demo.fib with WaitAll and no CancelOnError: each parent
// awaits both children whatever happens to either.
var FibAll *atasks.Task[demo.FibIn, int64]

func fibAll(ctx context.Context, in demo.FibIn) (int64, error) {
	if in.N < 2 {
		return int64(max(in.N, 0)), nil
	}
	fs := []*atasks.Future[int64]{FibAll.Start(ctx, demo.FibIn{N: in.N - 1}), FibAll.Start(ctx, demo.FibIn{N: in.N - 2})}
	outs, err := atasks.WaitAll(ctx, fs)
	if err != nil {
		return 0, err
	}
	return outs[0] + outs[1], nil
}

func init() {
	FibAll = atasks.Define(fibAll, atasks.Name("test.fib_all"))
}

func main() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
}
