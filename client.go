package atasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/atasks-go/atasks/internal/clientlink"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// NamespaceConfig configures one namespace: its own codec and transport.
type NamespaceConfig struct {
	// Name of the namespace. Defaults to "default".
	Name string
	// Codec encodes the inputs of calls made from this process. Defaults to
	// JSON. Whatever codec a request names, the reply uses the same one.
	Codec Codec
	// Transport carries the namespace's calls. Defaults to a new Loopback().
	Transport Transport
}

// Config configures a Client.
type Config struct {
	// Namespaces this process calls or serves. Defaults to one: "default",
	// JSON over loopback.
	Namespaces []NamespaceConfig
	// Worker names this process in the "running" state it reports when it
	// serves. Defaults to "".
	Worker string
	// Logger receives the client's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// OnOrphan receives outcomes that arrive for no call in flight: with a
	// transport whose replies outlive the process (AMQP with an Identity),
	// the outcomes of calls this process made before it restarted; also
	// late duplicates of outcomes already delivered. It must not block.
	// Defaults to nil: such outcomes are dropped.
	OnOrphan func(Outcome)
	// Metrics, if set, receives the client's Prometheus metrics: the
	// invocations its workers serve, by namespace, task and outcome, their
	// durations, and the compute slots busy and free. Defaults to nil: none.
	Metrics prometheus.Registerer
	// TracerProvider makes OpenTelemetry spans: one per call on the
	// caller's side and one per invocation on the worker's, children under
	// their parents across processes (the W3C traceparent crosses the
	// wire). Defaults to the global provider, which does nothing until the
	// program sets one (otel.SetTracerProvider).
	TracerProvider trace.TracerProvider
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if len(c.Namespaces) == 0 {
		c.Namespaces = []NamespaceConfig{{}}
	}
	nss := make([]NamespaceConfig, len(c.Namespaces))
	for i, ns := range c.Namespaces {
		if ns.Name == "" {
			ns.Name = DefaultNamespace
		}
		if ns.Codec == nil {
			ns.Codec = JSON()
		}
		if ns.Transport == nil {
			ns.Transport = Loopback()
		}
		nss[i] = ns
	}
	c.Namespaces = nss
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	seen := map[string]bool{}
	for _, ns := range c.Namespaces {
		if seen[ns.Name] {
			return fmt.Errorf("atasks: namespace %q configured twice", ns.Name)
		}
		seen[ns.Name] = true
	}
	return nil
}

// Client connects a process to its namespaces. With it in the context
// (WithClient), tasks can be called; a Worker built on it serves them.
type Client struct {
	cfg        Config
	namespaces map[string]*namespace
	stopOnce   sync.Once
	stopErr    error

	workerMu sync.Mutex
	worker   *Worker // its worker, if it has one
}

// setWorker makes w the client's worker, unless it has one; it reports
// whether it did.
func (c *Client) setWorker(w *Worker) bool {
	c.workerMu.Lock()
	defer c.workerMu.Unlock()
	if c.worker != nil {
		return false
	}
	c.worker = w
	return true
}

// slotsOf returns f of the worker's slots, 0 without a worker.
func (c *Client) slotsOf(f func(*router.Slots) int) int {
	c.workerMu.Lock()
	defer c.workerMu.Unlock()
	if c.worker == nil {
		return 0
	}
	return f(c.worker.slots)
}

// namespace is one namespace at run time: its router and codecs.
type namespace struct {
	*router.Router
	codec  Codec           // for calls made from here
	codecs *codec.Registry // for whatever arrives
}

// NewClient returns a client for cfg; Start connects it.
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, namespaces: map[string]*namespace{}}
	var served *metrics.Invocations
	if cfg.Metrics != nil {
		served = metrics.NewInvocations(cfg.Metrics, "worker")
		metrics.RegisterSlots(cfg.Metrics, func() int { return c.slotsOf((*router.Slots).Busy) }, func() int { return c.slotsOf((*router.Slots).Size) })
	}
	var tracer trace.Tracer
	if cfg.TracerProvider != nil {
		tracer = cfg.TracerProvider.Tracer(router.TracerName)
	}
	for _, nc := range cfg.Namespaces {
		codecs := codec.NewRegistry(nc.Codec)
		r, err := router.New(router.Config{NS: nc.Name, Transport: nc.Transport, Codecs: codecs, Worker: cfg.Worker, Logger: cfg.Logger,
			OnOrphan: orphanFunc(cfg.OnOrphan, nc.Name, codecs), Metrics: served, Tracer: tracer})
		if err != nil {
			return nil, err
		}
		c.namespaces[nc.Name] = &namespace{Router: r, codec: nc.Codec, codecs: codecs}
	}
	return c, nil
}

// Start connects every namespace's transport, in configuration order; if
// one fails, those already connected are closed again.
func (c *Client) Start(ctx context.Context) error {
	for i, name := range c.Namespaces() {
		if err := c.namespaces[name].Open(ctx); err != nil {
			for _, opened := range c.Namespaces()[:i] {
				_ = c.namespaces[opened].Close(ctx)
			}
			return fmt.Errorf("atasks: open namespace %q: %w", name, err)
		}
	}
	return nil
}

// Stop disconnects every namespace, letting tasks this process still
// serves finish until ctx ends (stop its Worker first to control that).
// Stopping twice is harmless.
func (c *Client) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() {
		var errs []error
		for _, ns := range c.namespaces {
			errs = append(errs, ns.Close(ctx))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// Ready returns nil when every namespace's transport can carry messages now
// (for AMQP: is connected to the broker), else the first problem.
func (c *Client) Ready(ctx context.Context) error {
	for _, name := range c.Namespaces() {
		if err := c.namespaces[name].Check(ctx); err != nil {
			return fmt.Errorf("atasks: namespace %q: %w", name, err)
		}
	}
	return nil
}

// Namespaces returns the names of the client's namespaces in configuration order.
func (c *Client) Namespaces() []string {
	names := make([]string, len(c.cfg.Namespaces))
	for i, ns := range c.cfg.Namespaces {
		names[i] = ns.Name
	}
	return names
}

type clientKey struct{}

// WithClient returns a context that carries c, for Task.Call and Task.Start.
// Tasks that c's Worker runs get it in their context already.
func WithClient(ctx context.Context, c *Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

// ClientFrom returns the client ctx carries, or nil.
func ClientFrom(ctx context.Context) *Client {
	c, _ := ctx.Value(clientKey{}).(*Client)
	return c
}

// routerFor finds namespace ns of the client in ctx.
func routerFor(ctx context.Context, ns string) (*namespace, error) {
	c := ClientFrom(ctx)
	if c == nil {
		return nil, errors.New("atasks: no Client in the context; use atasks.WithClient")
	}
	return c.namespace(ns)
}

func (c *Client) namespace(ns string) (*namespace, error) {
	n, ok := c.namespaces[ns]
	if !ok {
		return nil, &Error{Code: wire.CodeNamespaceNotFound, Message: fmt.Sprintf("namespace %q is not configured in this client", ns)}
	}
	return n, nil
}

// TaskInfo describes a task that servers offer: its name and how many
// processes serve it.
type TaskInfo = wire.TaskInfo

// Catalog lists the tasks that servers reachable through namespace ns offer now.
func (c *Client) Catalog(ctx context.Context, ns string) ([]TaskInfo, error) {
	n, err := c.namespace(ns)
	if err != nil {
		return nil, err
	}
	return n.Catalog(ctx)
}

// Watch passes what the workers of namespace ns report of the invocations
// they run (when one has run for 50 ms, and when it ends) to fn, which must
// not block for long, until ctx ends. It is best effort: a watcher that
// falls behind misses some. The transport must implement wire.Monitor, as
// the loopback and AMQP ones do.
func (c *Client) Watch(ctx context.Context, ns string, fn func(Activity)) error {
	n, err := c.namespace(ns)
	if err != nil {
		return err
	}
	return n.Watch(ctx, fn)
}

// Servers lists the live serving processes of namespace ns with the tasks
// they serve and their compute slots, busy and in all.
func (c *Client) Servers(ctx context.Context, ns string) ([]ServerInfo, error) {
	n, err := c.namespace(ns)
	if err != nil {
		return nil, err
	}
	return n.Servers(ctx)
}

// Cancel asks whichever worker runs invocation id in namespace ns to cancel
// it; through its context the cancellation reaches its children too.
func (c *Client) Cancel(ctx context.Context, ns, id string) error {
	n, err := c.namespace(ns)
	if err != nil {
		return err
	}
	return n.Cancel(ctx, id)
}

// Codec returns the codec that calls made from this process encode namespace ns's inputs with.
func (c *Client) Codec(ns string) (Codec, error) {
	n, err := c.namespace(ns)
	if err != nil {
		return nil, err
	}
	return n.codec, nil
}

func init() {
	clientlink.Namespace = func(client any, ns string) (*router.Router, wire.Codec, *codec.Registry, error) {
		n, err := client.(*Client).namespace(ns)
		if err != nil {
			return nil, nil, nil, err
		}
		return n.Router, n.codec, n.codecs, nil
	}
}
