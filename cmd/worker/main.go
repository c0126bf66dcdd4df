// Command worker serves the demo tasks through RabbitMQ. Start any number,
// on any hosts: they share the load. `worker --help` lists the options.
package main

import (
	"fmt"
	"os"

	"github.com/atasks-go/atasks/internal/cli"
)

func main() {
	if err := cli.RunWorker(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
