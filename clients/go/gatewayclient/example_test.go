package gatewayclient_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/wire"
)

// Call a task and get its result as a Go value.
func ExampleCallAs() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL) // e.g. "http://127.0.0.1:8080"
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 2, "b": 3})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
	// Output: 5
}

// Call returns the whole invocation: its id, state, timings and raw result.
func ExampleClient_Call() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	inv, err := c.Call(ctx, "default", "demo.fib", map[string]int{"n": 10}, gatewayclient.WithTimeout(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(inv.State, string(inv.Result), len(inv.Children))
	// Output: succeeded 55 2
}

// Await in parallel: start every call, then wait for each.
func ExampleClient_Start() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var hs []*gatewayclient.Handle
	for i := range 3 {
		h, err := c.Start(ctx, "default", "demo.sleep", map[string]any{"ms": 200, "value": i})
		if err != nil {
			log.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		var n int
		inv, err := h.Wait(ctx)
		if err == nil {
			err = inv.Decode(&n)
		}
		fmt.Println(n, err)
	}
	// Output:
	// 0 <nil>
	// 1 <nil>
	// 2 <nil>
}

// Ending the context of a call cancels the invocation at the gateway, and
// with it its children.
func ExampleClient_Call_cancel() {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := gatewayclient.New(gatewayURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	inv, err := c.Call(ctx, "default", "demo.gather", map[string]int{"n": 4, "ms": 60000})
	fmt.Println(errors.Is(err, context.Canceled), inv.State)
	// Output: true cancelled
}

// A started invocation goes on until it ends or its handle cancels it.
func ExampleHandle_Cancel() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := c.Start(ctx, "default", "demo.sleep", map[string]any{"ms": 60000})
	if err != nil {
		log.Fatal(err)
	}
	inv, err := h.Cancel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(inv.State)
	_, err = h.Wait(ctx)
	fmt.Println(errors.Is(err, wire.ErrCancelled))
	// Output:
	// cancelled
	// true
}

// Calls go over the WebSocket, falling back to REST (auto); WithTransport
// picks one. WithHeader sends a header on every request, the WebSocket's
// upgrade included: a gateway that needs tokens takes them so.
func ExampleWithTransport() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL,
		gatewayclient.WithTransport(gatewayclient.TransportWS),
		gatewayclient.WithHeader("Authorization", "Bearer "+os.Getenv("ATASKS_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 2, "b": 3})
	fmt.Println(sum, err)
	// Output: 5 <nil>
}

// A task's typed error and the gateway's own errors are *wire.Error, as
// with the SDK, with the same code over WebSocket and REST.
func Example_errors() {
	ctx := context.Background()
	c, err := gatewayclient.New(gatewayURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	in := map[string]any{"code": "insufficient_funds", "message": "balance is 100", "details": map[string]int{"balance": 100}}
	_, err = c.Call(ctx, "default", "demo.fail", in)
	var e *wire.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Message, string(e.Details), e.Retryable)
	}

	_, err = c.Call(ctx, "default", "demo.nope", nil)
	if errors.Is(err, wire.ErrTaskNotFound) && errors.As(err, &e) {
		fmt.Println(e.Code, e.Retryable)
	}
	// Output:
	// insufficient_funds balance is 100 {"balance":100} false
	// task_not_found false
}
