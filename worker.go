package atasks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// Concurrency bounds how many tasks compute at once. A task that awaits
	// other tasks does not count while it waits, so nested calls never
	// deadlock; while any goroutine of a task awaits, the task does not count.
	// Defaults to 1000 (as Temporal's workers): tasks are mostly I/O-bound; lower it for
	// CPU-bound ones.
	Concurrency int
	// Namespaces lists the client's namespaces to serve. Defaults to all of them.
	Namespaces []string
	// Tasks lists the task names to serve, "ns/name" or just "name" for every
	// namespace served. Defaults to every task of the registry there.
	Tasks []string
	// Registry holds the tasks to serve. Defaults to the program's default
	// registry, where Define registers.
	Registry *Registry
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c WorkerConfig) WithDefaults(client *Client) WorkerConfig {
	if c.Concurrency == 0 {
		c.Concurrency = 1000
	}
	if len(c.Namespaces) == 0 {
		c.Namespaces = client.Namespaces()
	}
	if c.Registry == nil {
		c.Registry = defaultRegistry
	}
	return c
}

func (c WorkerConfig) validate(client *Client) error {
	if c.Concurrency < 0 {
		return fmt.Errorf("atasks: concurrency must be positive, not %d", c.Concurrency)
	}
	for _, ns := range c.Namespaces {
		if _, err := client.namespace(ns); err != nil {
			return err
		}
	}
	for _, task := range c.Tasks {
		if !c.defines(task) {
			return fmt.Errorf("atasks: task %q is not defined in the namespaces served, %v", task, c.Namespaces)
		}
	}
	return nil
}

// defines reports whether task, "name" or "ns/name", is defined in a served namespace.
func (c WorkerConfig) defines(task string) bool {
	for _, ns := range c.Namespaces {
		for _, name := range c.Registry.Tasks(ns) {
			if task == name || task == ns+"/"+name {
				return true
			}
		}
	}
	return false
}

// Worker serves the tasks of a registry (by default, those the program
// defines): it receives their invocations through its client's transports
// and runs them. (The seed's router.activate(transport).) A process that
// only calls tasks needs no Worker; a Client has at most one.
type Worker struct {
	client  *Client
	cfg     WorkerConfig
	slots   *router.Slots
	once    sync.Once
	stopErr error
	served  []string // the namespaces Start serves
}

// errWorkerTaken refuses a second Worker on a Client.
var errWorkerTaken = errors.New("atasks: the client has a worker already: one Worker serves through a Client (give it the namespaces and tasks to serve)")

// NewWorker returns a worker serving through client, the only one on it;
// Start starts it.
func NewWorker(client *Client, cfg WorkerConfig) (*Worker, error) {
	cfg = cfg.WithDefaults(client)
	if err := cfg.validate(client); err != nil {
		return nil, err
	}
	w := &Worker{client: client, cfg: cfg, slots: router.NewSlots(cfg.Concurrency)}
	if !client.setWorker(w) {
		return nil, errWorkerTaken
	}
	return w, nil
}

// Start begins serving. The client must be started.
func (w *Worker) Start(ctx context.Context) error {
	for _, name := range w.cfg.Namespaces {
		ns, _ := w.client.namespace(name)
		hs := w.handlers(name)
		if len(hs) == 0 {
			continue
		}
		if err := ns.Serve(ctx, hs, w.slots); err != nil {
			return fmt.Errorf("atasks: serve namespace %q: %w", name, err)
		}
		w.served = append(w.served, name)
	}
	return nil
}

// handlers returns what the worker serves in namespace ns, each running
// with the client in its context.
func (w *Worker) handlers(ns string) map[string]router.Handler {
	hs := map[string]router.Handler{}
	for name, h := range w.cfg.Registry.handlers(ns) {
		if len(w.cfg.Tasks) > 0 && !slices.Contains(w.cfg.Tasks, name) && !slices.Contains(w.cfg.Tasks, ns+"/"+name) {
			continue
		}
		fn := h.Fn
		h.Fn = func(ctx context.Context, c wire.Codec, body []byte) ([]byte, error) {
			return fn(WithClient(ctx, w.client), c, body)
		}
		hs[name] = h
	}
	return hs
}

// Stop stops serving: it takes no new invocations, lets running ones
// finish until ctx ends, then gives the rest back to be run elsewhere
// (over AMQP, to their queues) and cancels them. The client goes on
// carrying calls: stop it after its worker. Stop returns ctx's error when
// it had to give work back.
func (w *Worker) Stop(ctx context.Context) error {
	w.once.Do(func() {
		var errs []error
		for _, name := range w.served {
			ns, _ := w.client.namespace(name)
			errs = append(errs, ns.Unserve(ctx))
		}
		w.stopErr = errors.Join(errs...)
	})
	return w.stopErr
}

// Busy returns how many of the worker's compute slots are taken, and how many there are.
func (w *Worker) Busy() (busy, size int) { return w.slots.Busy(), w.slots.Size() }
