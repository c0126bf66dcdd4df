package atasks_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atasks-go/atasks"
)

// Withdraw fails with a typed error that carries details.
var Withdraw = atasks.Define(func(_ context.Context, amount int) (int, error) {
	if amount > 100 {
		return 0, atasks.NewError("insufficient_funds", "balance is 100", map[string]int{"balance": 100})
	}
	return 100 - amount, nil
}, atasks.Name("example.withdraw"))

// Wait sleeps until its context ends.
var Wait = atasks.Define(func(ctx context.Context, _ struct{}) (struct{}, error) {
	<-ctx.Done()
	return struct{}{}, ctx.Err()
}, atasks.Name("example.wait"))

var errInsufficientFunds = &atasks.Error{Code: "insufficient_funds"}

// A task's error crosses the wire with its code, message and details;
// errors.Is compares codes and errors.As reaches the rest. The caller's
// deadline travels with the call and ends the task on the worker.
func ExampleError() {
	ctx := startExample() // out of example scope
	_, err := Withdraw.Call(ctx, 500)
	var e *atasks.Error
	if errors.Is(err, errInsufficientFunds) && errors.As(err, &e) {
		fmt.Println(e.Code, e.Message, string(e.Details))
	}

	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = Wait.Call(ctx, struct{}{})
	fmt.Println(errors.Is(err, context.DeadlineExceeded), errors.Is(err, atasks.ErrTimeout))
	// Output:
	// insufficient_funds balance is 100 {"balance":100}
	// true true
}
