package atasks_test

import (
	"context"
	"testing"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
)

// BenchmarkCallLoopback is one typed call through the router and the
// loopback transport: the SDK's own cost, without a network.
func BenchmarkCallLoopback(b *testing.B) {
	c, err := atasks.NewClient(atasks.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{Tasks: []string{demo.Add.Name()}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Stop(ctx) // after the worker
	defer w.Stop(ctx)
	ctx = atasks.WithClient(ctx, c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := demo.Add.Call(ctx, demo.AddIn{A: 1, B: 2}); err != nil {
			b.Fatal(err)
		}
	}
}
