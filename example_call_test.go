package atasks_test

import (
	"context"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
)

// Greet is a task: an ordinary function, defined once at package level so
// that callers and workers agree on its name ("atasks_test.greet") and types.
var Greet = atasks.Define(greet)

func greet(_ context.Context, name string) (string, error) {
	return "hello, " + name, nil
}

// A task is called like a function. Here one process both serves and calls
// it over the in-process loopback transport; with the AMQP transport the
// same call runs on whichever worker takes it.
func Example() {
	ctx := context.Background()
	client, err := atasks.NewClient(atasks.Config{}) // namespace "default", JSON, loopback
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx) // after the worker
	defer worker.Stop(ctx)

	ctx = atasks.WithClient(ctx, client)
	out, err := Greet.Call(ctx, "world")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(Greet.Name(), "→", out)
	// Output: atasks_test.greet → hello, world
}
