// Command gateway is the HTTP front of atasks. With no broker configured it
// serves the demo tasks in-process (embedded mode), so one command gives a
// working system; with --amqp-url it fronts the workers behind RabbitMQ of
// the namespaces --namespaces names (by default those of the demo tasks).
// `gateway --help` lists the options.
//
// `gateway hash-token` reads a token on its standard input and prints its
// hash, as a tokens file (--tokens) wants it.
package main

import (
	"fmt"
	"os"

	"github.com/atasks-go/atasks/cli"
	_ "github.com/atasks-go/atasks/internal/demo" // the demo tasks: served in embedded mode, fronted by default
)

func main() {
	if err := cli.RunGateway(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
