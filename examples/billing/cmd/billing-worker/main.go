// Command billing-worker serves the billing tasks through RabbitMQ: the
// package's own tasks, with the flags and ATASKS_* environment of atasks'
// worker (`billing-worker --help`). Start any number, on any hosts: they
// share the load.
package main

import (
	"fmt"
	"os"

	_ "example.com/billing" // defines the billing tasks
	"github.com/atasks-go/atasks/cli"
)

func main() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "billing-worker:", err)
		os.Exit(1)
	}
}
