// Package cli runs atasks programs from the command line, with the flags
// and ATASKS_* environment variables of atasks' own binaries: a worker
// binary defines its tasks, then calls RunWorker from main; a gateway
// binary calls RunGateway.
//
//	// Charge is a task of namespace billing.
//	var Charge = atasks.Define(charge, atasks.InNamespace("billing"))
//
//	func main() {
//		if err := cli.RunWorker(os.Args[1:]); err != nil {
//			fmt.Fprintln(os.Stderr, "worker:", err)
//			os.Exit(1)
//		}
//	}
//
// `worker --help` lists the flags: --amqp-url (ATASKS_AMQP_URL, one broker
// or a cluster's nodes separated by commas), --concurrency, --namespaces,
// --tasks, --drain, --metrics-listen (Prometheus /metrics and /readyz),
// --log-format, --amqp-ca and friends for TLS, --otlp-endpoint for traces.
// The stock cmd/gateway fronts any namespace: `gateway --amqp-url …
// --namespaces billing`.
package cli

import "github.com/atasks-go/atasks/internal/cli"

// RunWorker parses args (and the ATASKS_* environment), connects to
// RabbitMQ and serves the tasks the program defines (in
// atasks.DefaultRegistry; --namespaces and --tasks narrow them down) until
// SIGINT or SIGTERM; then it stops taking tasks, lets running ones finish
// for up to --drain, gives the rest back to their queues and returns nil.
func RunWorker(args []string) error { return cli.RunWorker(args) }

// RunGateway parses args (and the ATASKS_* environment) and serves the
// HTTP/JSON and WebSocket gateway until SIGINT or SIGTERM. With
// --amqp-url it fronts the workers of --namespaces (by default, those the
// program defines tasks in); without, it runs the program's own tasks
// in-process. `hash-token` as the first argument prints the hash of a
// token read on standard input, for a --tokens file.
func RunGateway(args []string) error { return cli.RunGateway(args) }
