package atasks_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
)

// Forever runs until it is cancelled.
var Forever = atasks.Define(func(ctx context.Context, _ struct{}) (struct{}, error) {
	<-ctx.Done()
	return struct{}{}, ctx.Err()
}, atasks.Name("example.forever"))

// A started call is a Future: its ID names the invocation anywhere (say,
// to cancel it from another request through Client.Cancel, or to find it
// in the gateway and the logs), and Done suits a select.
func ExampleFuture() {
	ctx := startExample() // out of example scope: a loopback client and worker
	f := Forever.Start(ctx, struct{}{})
	select {
	case <-f.Done():
		log.Fatal("it ended by itself")
	default:
		if err := atasks.ClientFrom(ctx).Cancel(ctx, Forever.NS(), f.ID()); err != nil {
			log.Fatal(err)
		}
	}
	_, err := f.Wait(ctx)
	fmt.Println(errors.Is(err, atasks.ErrCancelled), len(f.ID()))
	// Output: true 26
}
