// Command testworker is cmd/worker plus tasks that only tests want: one
// that kills its own worker, as a poison task does. It is built and run by
// the end-to-end tests, and shows how users write their own worker binaries:
// define tasks, then run the worker.
package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/cli"
	_ "github.com/atasks-go/atasks/internal/demo" // the demo tasks
)

// Crash kills the worker that runs it, every time: a poison task.
var Crash = atasks.Define(func(context.Context, any) (any, error) {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}, atasks.Name("test.crash"))

func main() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "testworker:", err)
		os.Exit(1)
	}
}
