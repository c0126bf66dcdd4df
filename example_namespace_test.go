package atasks_test

import (
	"context"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
)

// Shout lives in namespace "loud".
var Shout = atasks.Define(func(_ context.Context, s string) (string, error) { return s + "!", nil },
	atasks.Name("shout"), atasks.InNamespace("loud"))

// Relay, in "default", awaits Shout in "loud".
var Relay = atasks.Define(func(ctx context.Context, s string) (string, error) { return Shout.Call(ctx, s) },
	atasks.Name("example.relay"))

// Each namespace has its own codec and transport; a task in one awaits
// tasks in another.
func ExampleNamespaceConfig() {
	ctx := context.Background()
	client, err := atasks.NewClient(atasks.Config{Namespaces: []atasks.NamespaceConfig{
		{Name: "default"},                    // JSON over loopback
		{Name: "loud", Codec: atasks.CBOR()}, // compact binary
	}})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{Tasks: []string{"example.relay", "loud/shout"}})
	if err != nil {
		log.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx) // after the worker
	defer worker.Stop(ctx)

	out, err := Relay.Call(atasks.WithClient(ctx, client), "hey")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out)
	// Output: hey!
}
