package atasks_test

import (
	"context"
	"fmt"
	"log"

	"github.com/atasks-go/atasks"
)

// Square squares its input.
var Square = atasks.Define(func(_ context.Context, n int) (int, error) { return n * n, nil }, atasks.Name("example.square"))

// SumOfSquares awaits Square for 1..n in parallel, from inside a task.
var SumOfSquares = atasks.Define(func(ctx context.Context, n int) (int, error) {
	var fs []*atasks.Future[int]
	for i := 1; i <= n; i++ {
		fs = append(fs, Square.Start(ctx, i)) // sent at once, awaited below
	}
	squares, err := atasks.WaitAll(ctx, fs, atasks.CancelOnError())
	if err != nil {
		return 0, err
	}
	sum := 0
	for _, s := range squares { // in the order started
		sum += s
	}
	return sum, nil
}, atasks.Name("example.sum_of_squares"))

// Tasks await other tasks, in parallel and recursively. A task that awaits
// gives up its compute slot meanwhile, so nesting never deadlocks.
func ExampleWaitAll() {
	ctx := startExample() // out of example scope: a loopback client and worker
	sum, err := SumOfSquares.Call(ctx, 10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
	// Output: 385
}
