package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/cli"
	"github.com/atasks-go/atasks/internal/demo"
)

// env is what every scenario shares: the broker and the run's unique prefix.
type env struct {
	amqpURL string
	prefix  string // starts every queue and exchange name the run declares
}

// opener opens a scenario for a given number of requests in flight.
type opener func(ctx context.Context, e *env, inflight int) (*target, error)

// allScenarios lists the scenarios in the order they run by default.
var allScenarios = []string{"floor-amqp", "floor-http", "naive-gw", "sdk", "http", "http-history", "ws", "embedded", "fib", "fib-volatile", "ws-open", "poll-open"}

// scenarios maps each scenario's name to its opener.
var scenarios = map[string]opener{
	"floor-amqp": openFloorAMQP,
	"floor-http": openFloorHTTP,
	"naive-gw":   openNaiveGateway,
	"sdk":        openSDK,
	"http":       openHTTP,
	"http-history": func(ctx context.Context, e *env, inflight int) (*target, error) {
		return openHTTPOver(ctx, e, inflight, true)
	},
	"embedded": openEmbedded,
	"ws":       openWS,
}

// workerConcurrency is the workers' concurrency in the closed-loop scenarios.
const workerConcurrency = 1000

// stopTimeout bounds stopping a worker or client.
const stopTimeout = 30 * time.Second

// logger is the atasks clients' logger: warnings and errors only.
var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// remote is workers and a separate caller, all over RabbitMQ.
type remote struct {
	workers []served
	caller  *atasks.Client
}

// startRemote starts n workers serving the demo tasks (those of reg, if
// not nil), each computing at most concurrency tasks at once, and a caller client (sharing the
// namespaces' history if history; given to prepare, if not nil, before it
// starts), each with its own connections, and waits until the caller sees
// demo.echo.
func startRemote(ctx context.Context, e *env, n, concurrency int, reg *atasks.Registry, history bool, prepare func(*atasks.Client) error) (*remote, error) {
	broker := cli.Broker{URL: e.amqpURL, Prefix: e.prefix, Slots: concurrency, Logger: logger}
	r := &remote{}
	for i := range n {
		w, err := startWorker(ctx, broker, fmt.Sprintf("atasks-bench-worker-%d", i), concurrency, reg)
		if err != nil {
			r.stop(e)
			return nil, err
		}
		r.workers = append(r.workers, w)
	}
	var err error
	caller := broker
	caller.History = history
	if r.caller, err = newClient(caller, ""); err == nil && prepare != nil {
		err = prepare(r.caller)
	}
	if err == nil {
		err = r.caller.Start(ctx)
	}
	if err == nil {
		err = awaitTask(ctx, r.caller, atasks.DefaultNamespace, demo.Echo.Name())
	}
	if err != nil {
		r.stop(e)
		return nil, err
	}
	return r, nil
}

// served is a worker and the client it serves through.
type served struct {
	w *atasks.Worker
	c *atasks.Client
}

// stop stops the worker, then its client, within stopTimeout.
func (s served) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := errors.Join(s.w.Stop(ctx), s.c.Stop(ctx)); err != nil {
		progress("stop worker: %v", err)
	}
}

// startWorker starts a worker named name over broker, serving the tasks
// of reg (nil: the default registry).
func startWorker(ctx context.Context, broker cli.Broker, name string, concurrency int, reg *atasks.Registry) (served, error) {
	wc, err := startClient(ctx, broker, name)
	if err != nil {
		return served{}, err
	}
	w, err := atasks.NewWorker(wc, atasks.WorkerConfig{Concurrency: concurrency, Registry: reg})
	if err == nil {
		err = w.Start(ctx)
	}
	if err != nil {
		_ = wc.Stop(ctx)
		return served{}, err
	}
	return served{w, wc}, nil
}

// startClient starts a client of the demo namespaces over broker (without
// a URL: loopback).
func startClient(ctx context.Context, broker cli.Broker, worker string) (*atasks.Client, error) {
	c, err := newClient(broker, worker)
	if err != nil {
		return nil, err
	}
	return c, c.Start(ctx)
}

// newClient returns a client of the demo namespaces over broker, not started.
func newClient(broker cli.Broker, worker string) (*atasks.Client, error) {
	nss, err := broker.Namespaces([]string{atasks.DefaultNamespace, demo.SeedNamespace})
	if err != nil {
		return nil, err
	}
	return atasks.NewClient(atasks.Config{Namespaces: nss, Worker: worker, Logger: logger})
}

// awaitTask waits up to 10 s until c's catalog of ns lists task.
func awaitTask(ctx context.Context, c *atasks.Client, ns, task string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		tasks, err := c.Catalog(ctx, ns)
		if err == nil && slices.ContainsFunc(tasks, func(t atasks.TaskInfo) bool { return t.Name == task }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("catalog of %s never listed %s: %w", ns, task, errors.Join(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop lists the tasks the caller sees, stops the caller and the worker
// (which deletes their random reply queues), then deletes the rest of the
// run's queues and exchanges by name.
func (r *remote) stop(e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	tasks := map[string][]string{}
	if r.caller != nil {
		for _, ns := range r.caller.Namespaces() {
			tasks[ns] = catalogNames(ctx, r.caller, ns)
		}
		if err := r.caller.Stop(ctx); err != nil {
			progress("stop caller: %v", err)
		}
	}
	for _, w := range r.workers {
		w.stop()
	}
	if err := deleteAtasksObjects(e, tasks); err != nil {
		progress("clean up: %v", err)
	}
}

// catalogNames returns the names of the tasks c's catalog of ns lists.
func catalogNames(ctx context.Context, c *atasks.Client, ns string) []string {
	infos, err := c.Catalog(ctx, ns)
	if err != nil {
		progress("catalog of %s: %v", ns, err)
	}
	names := make([]string, len(infos))
	for i, t := range infos {
		names[i] = t.Name
	}
	return names
}

// openSDK measures demo.Echo.Call from a caller to a worker through RabbitMQ.
func openSDK(ctx context.Context, e *env, _ int) (*target, error) {
	r, err := startRemote(ctx, e, 1, workerConcurrency, nil, false, nil)
	if err != nil {
		return nil, err
	}
	call := func(ctx context.Context) error {
		_, err := demo.Echo.Call(atasks.WithClient(ctx, r.caller), "x")
		return err
	}
	return &target{call: call, close: func() { r.stop(e) }}, nil
}

// openHTTP measures POST demo.echo through a gateway over an AMQP caller.
func openHTTP(ctx context.Context, e *env, inflight int) (*target, error) {
	return openHTTPOver(ctx, e, inflight, false)
}

// openHTTPOver measures POST demo.echo through a gateway over an AMQP
// caller, one that shares the namespaces' history with replicas if history.
func openHTTPOver(ctx context.Context, e *env, inflight int, history bool) (*target, error) {
	var gw *gateway.Gateway
	r, err := startRemote(ctx, e, 1, workerConcurrency, nil, history, func(c *atasks.Client) (err error) {
		gw, err = gateway.New(gateway.Config{Client: c}) // before the client starts: it reads the history from its start
		return err
	})
	if err != nil {
		return nil, err
	}
	return serveGateway(gw, inflight, func() { r.stop(e) })
}

// openEmbedded measures POST demo.echo through a gateway over a loopback
// client that also serves the demo tasks.
func openEmbedded(ctx context.Context, _ *env, inflight int) (*target, error) {
	c, err := startClient(ctx, cli.Broker{}, "atasks-bench-embedded")
	if err != nil {
		return nil, err
	}
	w, err := atasks.NewWorker(c, atasks.WorkerConfig{Concurrency: workerConcurrency})
	if err == nil {
		err = w.Start(ctx)
	}
	if err != nil {
		_ = c.Stop(ctx)
		return nil, err
	}
	gw, err := gateway.New(gateway.Config{Client: c})
	if err != nil {
		served{w, c}.stop()
		return nil, err
	}
	return serveGateway(gw, inflight, served{w, c}.stop)
}

// serveGateway serves gw and returns a target POSTing demo.echo to it;
// closing the target runs after.
func serveGateway(gw *gateway.Gateway, inflight int, after func()) (*target, error) {
	path := "/v1/ns/" + atasks.DefaultNamespace + "/tasks/" + demo.Echo.Name()
	return serveHTTP(gw, path, `"x"`, inflight, func() { gw.Close(); after() })
}
