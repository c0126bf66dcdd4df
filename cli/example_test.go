package cli_test

import (
	"context"
	"fmt"
	"os"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/cli"
)

// Greet is a task of namespace "greetings".
var Greet = atasks.Define(func(_ context.Context, name string) (string, error) {
	return "hello, " + name, nil
}, atasks.Name("greetings.greet"), atasks.InNamespace("greetings"))

// A worker binary's main: define tasks (here at package level), then run
// the worker, which takes its settings from flags and ATASKS_* variables
// (`--amqp-url`, `--concurrency`, …) and serves until SIGTERM. It needs a
// broker, so this example only compiles.
func ExampleRunWorker() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
