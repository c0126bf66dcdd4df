package atasks_test

import (
	"context"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
)

// SendReceipt e-mails a receipt: not something a test should do.
var SendReceipt = atasks.Define(sendReceipt, atasks.Name("example.send_receipt"))

func sendReceipt(_ context.Context, order string) (string, error) {
	return "", fmt.Errorf("no mail server in this example (order %s)", order)
}

// Checkout sends the receipt of an order and says where it went.
var Checkout = atasks.Define(checkout, atasks.Name("example.checkout"))

func checkout(ctx context.Context, order string) (string, error) {
	to, err := SendReceipt.Call(ctx, order)
	if err != nil {
		return "", err
	}
	return "receipt of " + order + " sent to " + to, nil
}

// A test serves a fake in place of a task the code under test calls: a copy
// of the program's registry without the real one, the fake defined in it
// under the same name, and a worker serving the copy. Checkout itself is
// unchanged: it calls SendReceipt by its name. In a test,
// atasktest.Serve(t, reg) does the client and worker part.
func ExampleRegistry_Without() {
	reg := atasks.DefaultRegistry().Without(SendReceipt.Name())
	atasks.Define(func(_ context.Context, order string) (string, error) {
		return "fake@example.com", nil
	}, atasks.Name(SendReceipt.Name()), atasks.InRegistry(reg))

	ctx := context.Background()
	client, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{Registry: reg})
	if err != nil {
		log.Fatal(err)
	}
	if err := worker.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx) // after the worker
	defer worker.Stop(ctx)

	out, err := Checkout.Call(atasks.WithClient(ctx, client), "order-42")
	fmt.Println(out, err)
	// Output: receipt of order-42 sent to fake@example.com <nil>
}
