// Command worker serves the demo tasks through RabbitMQ. Start any number,
// on any hosts: they share the load. `worker --help` lists the options.
// A worker of your own tasks is the same few lines with your own package
// imported instead of the demo's (see examples/).
package main

import (
	"fmt"
	"os"

	"github.com/atasks-go/atasks/cli"
	_ "github.com/atasks-go/atasks/internal/demo" // the demo tasks
)

func main() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
