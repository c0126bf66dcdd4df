package atasks

import (
	"context"

	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
)

// Future is a started task whose output may not be known yet.
type Future[Out any] struct {
	p      *router.Pending
	codecs *codec.Registry
	err    error // set when the task could not even be sent
}

// ID returns the invocation id, or "" if the task could not be started.
func (f *Future[Out]) ID() string {
	if f.p == nil {
		return ""
	}
	return f.p.ID()
}

// Wait waits for the task's output until ctx ends. If ctx ends first, Wait
// returns a "cancelled" or "timeout" error and the task goes on; cancel it
// with Cancel or by ending the context it was started with.
func (f *Future[Out]) Wait(ctx context.Context) (Out, error) {
	var out Out
	if f.err != nil {
		return out, f.err
	}
	rep := f.p.Wait(ctx)
	if rep.Err != nil {
		return out, rep.Err
	}
	c, err := f.codecs.Get(rep.Codec)
	if err != nil {
		return out, err
	}
	if err := c.Unmarshal(rep.Body, &out); err != nil {
		return out, &Error{Code: wire.CodeBadOutput, Message: err.Error()}
	}
	return out, nil
}

// Done returns a channel that is closed when the outcome is known, for
// select; Wait then returns at once.
func (f *Future[Out]) Done() <-chan struct{} {
	if f.p == nil {
		return closedChan
	}
	return f.p.Done()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Cancel cancels the task; Wait then returns ErrCancelled unless the outcome arrived first.
func (f *Future[Out]) Cancel() {
	if f.p != nil {
		f.p.Cancel()
	}
}

// WaitOption changes how WaitAll waits.
type WaitOption func(*waitConfig)

type waitConfig struct{ cancelOnError bool }

// CancelOnError makes WaitAll cancel the futures still running as soon as
// one fails, and return that failure.
func CancelOnError() WaitOption { return func(c *waitConfig) { c.cancelOnError = true } }

// WaitAll waits for every future and returns their outputs in the futures'
// order. The error is the first failure in that order; outputs of the
// futures that succeeded are set either way. With CancelOnError it returns
// at the first failure in time instead, after cancelling the rest.
func WaitAll[Out any](ctx context.Context, fs []*Future[Out], opts ...WaitOption) ([]Out, error) {
	var cfg waitConfig
	for _, o := range opts {
		o(&cfg)
	}
	type result struct {
		i   int
		out Out
		err error
	}
	results := make(chan result, len(fs))
	for i, f := range fs {
		go func() {
			out, err := f.Wait(ctx)
			results <- result{i, out, err}
		}()
	}
	outs := make([]Out, len(fs))
	errs := make([]error, len(fs))
	var first error // in time
	for range fs {
		r := <-results
		outs[r.i], errs[r.i] = r.out, r.err
		if r.err != nil && first == nil && cfg.cancelOnError {
			first = r.err
			for _, f := range fs {
				f.Cancel() // the remaining waits return at once
			}
		}
	}
	if first != nil {
		return outs, first
	}
	for _, err := range errs {
		if err != nil {
			return outs, err
		}
	}
	return outs, nil
}
