// Package atasks runs Go functions as distributed tasks: calling one looks
// local, but it runs on whichever worker takes it, and tasks await other
// tasks — in sequence, in parallel, recursively — without deadlock.
//
//	package main
//
//	import (
//		"context"
//		"fmt"
//		"log"
//
//		"github.com/atasks-go/atasks"
//	)
//
//	// Greet is a task. Define it once, at package level, in every program
//	// that calls or serves it.
//	var Greet = atasks.Define(greet)
//
//	func greet(_ context.Context, name string) (string, error) {
//		return "hello, " + name, nil
//	}
//
//	func main() {
//		ctx := context.Background()
//		client, err := atasks.NewClient(atasks.Config{}) // "default" namespace: JSON over loopback
//		if err != nil {
//			log.Fatal(err)
//		}
//		if err := client.Start(ctx); err != nil {
//			log.Fatal(err)
//		}
//		worker, err := atasks.NewWorker(client, atasks.WorkerConfig{}) // serve what this program defines
//		if err != nil {
//			log.Fatal(err)
//		}
//		if err := worker.Start(ctx); err != nil {
//			log.Fatal(err)
//		}
//		defer client.Stop(ctx) // after the worker
//		defer worker.Stop(ctx)
//
//		out, err := Greet.Call(atasks.WithClient(ctx, client), "world")
//		if err != nil {
//			log.Fatal(err)
//		}
//		fmt.Println(out) // hello, world
//	}
//
// # Concepts
//
//   - A Task is defined from a func(ctx, In) (Out, error) with Define. Its
//     name defaults to the Go package and function ("main.greet"); Name and
//     InNamespace override where it lives.
//   - Task.Call awaits the task; Task.Start returns a Future to await later, and
//     WaitAll awaits many, in order, optionally cancelling the rest on the first
//     failure. Inside a task the context carries the running invocation
//     (InvocationFrom), so calls made there are its children: the parent's
//     deadline and cancellation reach them, and while a parent waits it gives
//     up its compute slot.
//   - A Client connects a process to namespaces; each namespace has its own
//     Codec (JSON by default, CBOR built in, or yours) and Transport (Loopback
//     in-process, AMQP across processes, or yours). A process that only calls
//     tasks needs only a Client; a Worker on it serves them.
//   - Failures cross the wire as *Error with a stable Code: errors.Is compares
//     codes, errors.As reaches the message and details. A panic in a task
//     becomes ErrPanic; it never crashes the worker.
//   - Define registers in the program's default Registry; a Registry of its
//     own (Registry.Without, InRegistry) serves a test's fakes, and
//     package atasktest runs them in a test.
//
// Across processes, package amqp gives namespaces the RabbitMQ transport,
// package cli turns a program into a worker binary (cli.RunWorker) or a
// gateway (cli.RunGateway), package gateway is the HTTP handler to mount
// yourself, and package transporttest proves a transport of your own.
package atasks
