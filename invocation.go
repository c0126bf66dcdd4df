package atasks

import (
	"context"

	"github.com/atasks-go/atasks/internal/router"
)

// Invocation describes the task invocation a context belongs to.
type Invocation struct {
	ID      string // unique id of this invocation
	NS      string // namespace
	Task    string // task name
	Parent  string // id of the invocation that called this one; "" at the top
	Attempt int    // attempt, from 1: a retry (see Retry) or a delivery after a worker died runs again
}

// InvocationFrom returns the invocation running in ctx. ok is false outside tasks.
func InvocationFrom(ctx context.Context) (inv Invocation, ok bool) {
	r := router.FromContext(ctx)
	if r == nil {
		return Invocation{}, false
	}
	return Invocation{ID: r.ID, NS: r.NS, Task: r.Task, Parent: r.Parent, Attempt: r.Attempt}, true
}
