package router

import (
	"context"
	"fmt"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Load implements wire.Loader: the worker, its compute slots busy, and in all.
func (r *Router) Load() (worker string, busy, size int) {
	return r.cfg.Worker, r.slots.Busy(), r.slots.Size()
}

// monitor returns the transport as a wire.Monitor, or an error saying it
// cannot monitor.
func (r *Router) monitor() (wire.Monitor, error) {
	m, ok := r.cfg.Transport.(wire.Monitor)
	if !ok {
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("the transport of namespace %q cannot be monitored", r.cfg.NS)}
	}
	return m, nil
}

// Watch passes every activity the namespace's servers report to fn until
// ctx ends.
func (r *Router) Watch(ctx context.Context, fn func(wire.Activity)) error {
	m, err := r.monitor()
	if err != nil {
		return err
	}
	return m.Watch(ctx, fn)
}

// Servers lists the namespace's live servers.
func (r *Router) Servers(ctx context.Context) ([]wire.ServerInfo, error) {
	m, err := r.monitor()
	if err != nil {
		return nil, err
	}
	return m.Servers(ctx)
}

// report tells monitors, if the transport has any, about req's invocation,
// started at start, now in state; end and code with a final state.
func (r *Router) report(req *wire.Request, state wire.State, start, end time.Time, code string) {
	if m, ok := r.cfg.Transport.(wire.Monitor); ok {
		m.Report(wire.Activity{ID: req.ID, Parent: req.Parent, Task: req.Task, Worker: r.cfg.Worker,
			State: state, Start: start, End: end, Code: code})
	}
}
