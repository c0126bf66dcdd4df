// Package gateway is the HTTP front of atasks as a library: an
// http.Handler that invokes the tasks of a Client's namespaces for callers
// that speak HTTP/JSON or WebSocket (curl, browsers, the Python and JS
// clients), keeps each invocation's state and outcome for a while, and
// answers waits, long-polls, cancels and the dashboard's feed.
//
//	client, _ := atasks.NewClient(atasks.Config{Namespaces: nss}) // say, amqp.Namespaces(…, "billing")
//	gw, _ := gateway.New(gateway.Config{Client: client, Tokens: tokens})
//	_ = client.Start(ctx) // after New if the namespaces keep a history (amqp.Config.History)
//	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: gw}
//	srv.RegisterOnShutdown(gw.Close)
//
// The routes and their answers are the contract in api/openapi.yaml
// (served at /v1/openapi.yaml); WebSocket messages are in
// docs/WEBSOCKET.md. cmd/gateway is this handler with flags (package cli);
// mount it yourself to add routes or middleware of your own.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/api"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/wire"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Gateway.
type Config struct {
	// Client calls the tasks. Required; it must be started before the
	// gateway serves requests, and after New if its namespaces keep a
	// history that gateway replicas share (amqp.Config.History).
	Client *atasks.Client
	// MaxBody bounds request bodies; larger ones get 413. Defaults to 1 MiB.
	MaxBody int64
	// DefaultWait is how long an invoke waits for the outcome when the request
	// names no ?wait=. Defaults to 10s.
	DefaultWait time.Duration
	// MaxWait caps any ?wait=. Defaults to 60s.
	MaxWait time.Duration
	// Retention is how long finished invocations stay readable. Defaults to 10m.
	Retention time.Duration
	// MaxFinished caps how many finished invocations are kept; the oldest go
	// first. Defaults to 100000.
	MaxFinished int
	// MaxUnfinished caps how many invocations the gateway tracks that have
	// not finished (queued or running), whoever started them; beyond it,
	// new calls get 503 "too_many_invocations" (retryable). Each costs
	// about 4 KiB of memory. Defaults to 100000.
	MaxUnfinished int
	// MaxUnfinishedPerCaller caps how many unfinished invocations one
	// token (one client IP when there are no tokens) may have started;
	// beyond it, its new calls get 429 too_many_requests with Retry-After.
	// Defaults to 10000; negative: no cap.
	MaxUnfinishedPerCaller int
	// DurableReplies says that outcomes outlive the gateway process (AMQP
	// with an identity): after a restart, an invocation started before it
	// becomes known when its outcome arrives (see Adopt), so for the first
	// Retention after the gateway started, an unknown id is answered 404
	// with retryable true. Unknown ids are answered at once either way.
	// Defaults to false.
	DurableReplies bool
	// AllowedOrigins lists the origins (such as "https://app.example.com")
	// whose browser pages may open WebSockets and, on a gateway without
	// tokens, make any request, besides pages of the gateway's own host;
	// "*" allows any. Requests without an Origin are not from a browser and
	// always allowed. Defaults to none.
	AllowedOrigins []string
	// AllowedHosts lists the Host names a gateway without tokens answers
	// besides loopback names and addresses (localhost, 127.0.0.1, [::1]),
	// against DNS rebinding; "*" allows any (an open gateway served beyond
	// loopback on purpose). A gateway with tokens answers any Host.
	// Defaults to none.
	AllowedHosts []string
	// WSMaxCalls caps the calls and subscriptions open at once on one
	// WebSocket connection. Defaults to 1000.
	WSMaxCalls int
	// Metrics is the registry served at /metrics; the gateway registers its
	// own metrics there. Defaults to metrics.NewRegistry().
	Metrics *prometheus.Registry

	// Tokens are the bearer tokens that may use the API, each with its
	// rights per namespace (auth.go). Defaults to none: the gateway is open
	// to anyone who reaches it.
	Tokens []Token
	// RateLimit is how many API requests per second one token may make
	// (one client IP when there are no tokens), WebSocket calls and
	// subscriptions included; beyond it they get 429 too_many_requests.
	// Defaults to 0: no limit.
	RateLimit float64
	// RateBurst is how many requests a token may make at once within
	// RateLimit. Defaults to RateLimit rounded up (a second's worth).
	RateBurst int
	// MaxInFlight caps the API requests of one token (one client IP when
	// there are no tokens) in progress at once, long-polls and WebSocket
	// connections included; beyond it they get 429. Defaults to 0: no cap.
	MaxInFlight int
	// MaxBodyNS overrides MaxBody for the namespaces it names, for request
	// bodies and WebSocket calls. Defaults to none.
	MaxBodyNS map[string]int64
	// Logger receives the gateway's logs: every request refused with 401
	// or 403 (naming the token by its name, never the token), warnings
	// about its configuration. Defaults to slog.Default().
	Logger *slog.Logger
	// WriteTimeout is the WriteTimeout of the http.Server serving the
	// gateway, if it has one: a request that waits (an invoke, a long-poll,
	// a cancel) moves its write deadline to this long after its wait.
	// Defaults to 0: deadlines are left alone.
	WriteTimeout time.Duration
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.DefaultWait == 0 {
		c.DefaultWait = 10 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 60 * time.Second
	}
	if c.Retention == 0 {
		c.Retention = 10 * time.Minute
	}
	if c.MaxFinished == 0 {
		c.MaxFinished = 100_000
	}
	if c.MaxUnfinished == 0 {
		c.MaxUnfinished = 100_000
	}
	if c.MaxUnfinishedPerCaller == 0 {
		c.MaxUnfinishedPerCaller = 10_000
	}
	if c.WSMaxCalls == 0 {
		c.WSMaxCalls = 1000
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RateBurst == 0 && c.RateLimit > 0 {
		c.RateBurst = int(math.Ceil(c.RateLimit))
	}
	return c
}

func (c Config) validate() error {
	if c.Client == nil {
		return errors.New("gateway: a client is required")
	}
	if c.MaxBody < 0 || c.DefaultWait < 0 || c.MaxWait < 0 || c.Retention < 0 || c.MaxFinished < 0 || c.MaxUnfinished < 0 {
		return errors.New("gateway: limits must not be negative")
	}
	if c.WSMaxCalls < 0 || c.RateLimit < 0 || c.RateBurst < 0 || c.MaxInFlight < 0 || c.WriteTimeout < 0 {
		return errors.New("gateway: limits must not be negative")
	}
	for ns, n := range c.MaxBodyNS {
		if n <= 0 {
			return fmt.Errorf("gateway: the body limit of namespace %q must be positive", ns)
		}
	}
	return validateTokens(c.Tokens)
}

// Gateway serves the HTTP API.
type Gateway struct {
	cfg       Config
	store     *store
	validator *validator
	schemas   schemas // the tasks' input schemas, for checking calls
	handler   http.Handler
	metrics   *metrics.Gateway
	monitor   *monitor // the dashboard's feed
	limits    *limiter
	histories map[string]wire.History // by namespace, those kept (history.go)

	// life ends at Close; waiters for outcomes stop then, while the
	// invocations themselves go on.
	life    context.Context
	endLife context.CancelFunc
	started time.Time
	mu      sync.Mutex     // orders waiters.Add before waiters.Wait
	waiters sync.WaitGroup // one per invocation whose outcome is awaited, one per WebSocket
}

// New returns a gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v, err := newValidator()
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, store: newStore(cfg.Retention, cfg.MaxFinished, cfg.MaxUnfinished, max(cfg.MaxUnfinishedPerCaller, 0)), validator: v, limits: newLimiter(cfg)}
	g.metrics = metrics.NewGateway(cfg.Metrics, g.store.len)
	g.monitor = newMonitor(g)
	g.store.onEvict = g.metrics.Evicted
	g.store.drained = releaseMemory
	if dups := duplicateNames(cfg.Tokens); len(dups) > 0 {
		cfg.Logger.Warn("several tokens have the same name: logs and refusals cannot tell them apart", "names", dups)
	}
	g.life, g.endLife = context.WithCancel(context.Background())
	g.started = time.Now().UTC()
	g.handler = g.routes()
	if err := g.follow(); err != nil {
		return nil, err
	}
	g.waiters.Add(1)
	go g.sweep()
	return g, nil
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// Close stops waiting for outcomes: long-polls answer at once, new invokes
// get 503, WebSockets close (1001, going away) without cancelling their
// calls, and invocations in flight go on. Register it with
// http.Server.RegisterOnShutdown so that open long-polls do not hold up a
// graceful shutdown.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.endLife()
	g.mu.Unlock()
	g.waiters.Wait()
}

// sweep drops finished records past their retention every tenth of it (at
// least every second), even when no request comes, until Close.
func (g *Gateway) sweep() {
	defer g.waiters.Done()
	tick := time.NewTicker(max(g.cfg.Retention/10, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			g.store.sweep()
		case <-g.life.Done():
			return
		}
	}
}

func (g *Gateway) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(g.guard)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, codeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowed(r.URL.Path))
		writeProblem(w, codeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", g.ready)
	r.Method(http.MethodGet, "/metrics", metrics.Handler(g.cfg.Metrics))
	mountWeb(r) // the page: GET / and /ui/{file} (web.go)
	r.Get("/v1/openapi.yaml", serveSpec)
	r.Get("/v1/ns", g.listNamespaces)
	r.Get("/v1/ws", newWSHandler(g).ServeHTTP)
	r.Route("/v1/ns/{ns}", func(r chi.Router) {
		r.Use(g.knownNamespace)
		r.Get("/tasks", g.listTasks)
		r.Get("/tasks/{task}", g.getTask)
		r.Get("/openapi.json", g.tasksOpenAPI)
		r.Post("/tasks/{task}", g.invoke)
		r.Get("/invocations/{id}", g.getInvocation)
		r.Delete("/invocations/{id}", g.cancelInvocation)
	})
	return r
}

// knownNamespace answers 404 for a namespace the client lacks.
func (g *Gateway) knownNamespace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns := chi.URLParam(r, "ns")
		if !slices.Contains(g.cfg.Client.Namespaces(), ns) {
			writeProblem(w, wire.CodeNamespaceNotFound, fmt.Sprintf("namespace %q is not served by this gateway", ns))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ready answers 200 when every namespace can carry messages now, else 503.
func (g *Gateway) ready(w http.ResponseWriter, r *http.Request) {
	if err := g.cfg.Client.Ready(r.Context()); err != nil {
		writeProblem(w, wire.CodeUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// serveSpec serves the API's OpenAPI document.
func serveSpec(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(api.Spec)
}

// listNamespaces lists the namespaces the caller has rights in.
func (g *Gateway) listNamespaces(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r.Context())
	nss := slices.DeleteFunc(g.cfg.Client.Namespaces(), func(ns string) bool { return !c.sees(ns) })
	writeJSON(w, http.StatusOK, map[string][]string{"namespaces": nss})
}

// releaseMemory gives the memory a drained backlog of invocations took
// back to the system (a full collection) a moment after it is asked to,
// once for all the asks meanwhile: the runtime would keep it for minutes.
func releaseMemory() {
	if releasing.CompareAndSwap(false, true) {
		time.AfterFunc(releaseDelay, func() {
			releasing.Store(false)
			debug.FreeOSMemory()
		})
	}
}

// releaseDelay is how long releaseMemory waits for a backlog to drain further.
const releaseDelay = 2 * time.Second

var releasing atomic.Bool

// addWaiter counts one more goroutine for Close to wait for, unless the
// gateway is closing; it reports whether it did.
func (g *Gateway) addWaiter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.life.Err() != nil {
		return false
	}
	g.waiters.Add(1)
	return true
}

// await returns invocation id once it is final or wait has passed.
func (g *Gateway) await(ctx context.Context, id string, wait time.Duration) (Invocation, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		inv, changed, ok := g.store.get(id)
		if !ok || inv.State.Final() {
			return inv, ok
		}
		select {
		case <-changed:
		case <-timer.C:
			return inv, ok
		case <-ctx.Done():
			return inv, ok
		case <-g.life.Done():
			return inv, ok
		}
	}
}

func (g *Gateway) getInvocation(w http.ResponseWriter, r *http.Request) {
	wait, err := durationParam(r, "wait")
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	if err := g.lookUp(r.Context(), chi.URLParam(r, "ns"), chi.URLParam(r, "id")); err != nil {
		writeError(w, err)
		return
	}
	g.answer(w, r, min(wait, g.cfg.MaxWait))
}

// cancelInvocation cancels an invocation in flight and answers with its
// resource once final (or after a short wait); on a finished one it changes nothing.
func (g *Gateway) cancelInvocation(w http.ResponseWriter, r *http.Request) {
	ns, id := chi.URLParam(r, "ns"), chi.URLParam(r, "id")
	wait := 5 * time.Second
	if err := g.lookUp(r.Context(), ns, id); err != nil {
		writeError(w, err)
		return
	}
	if known, local := g.store.cancel(ns, id, errDeleted); !local {
		inv, _, ok := g.store.get(id)
		switch {
		case !ok || inv.NS != ns || inv.State.Final():
			wait = 0
		case known: // another replica's call: its server cancels it
		default: // a child: its server cancels it, and its parent hears of it
			wait = 0
		}
		if ok && inv.NS == ns && !inv.State.Final() {
			_ = g.cfg.Client.Cancel(r.Context(), ns, id)
		}
	}
	g.answer(w, r, wait)
}

// answer writes invocation {id} of namespace {ns} after waiting up to wait
// for it to be final; the caller has looked it up (lookUp).
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	ns, id := chi.URLParam(r, "ns"), chi.URLParam(r, "id")
	if inv, _, ok := g.store.get(id); ok && inv.NS != ns {
		wait = 0 // another namespace's: not found, at once
	}
	g.extendWrite(w, wait)
	inv, ok := g.await(r.Context(), id, wait)
	if !ok || inv.NS != ns {
		writeError(w, g.missing(ns, id))
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// missing is the error about invocation id of namespace ns that the
// gateway does not know: evicted, or never known to this process.
func (g *Gateway) missing(ns, id string) *atasks.Error {
	if g.store.gone(ns, id) {
		return &atasks.Error{Code: codeInvocationExpired, Message: fmt.Sprintf("invocation %q of namespace %q finished and was evicted: at most %d finished invocations are kept, each for %v", id, ns, g.cfg.MaxFinished, g.cfg.Retention)}
	}
	e := &atasks.Error{Code: codeInvocationNotFound, Message: fmt.Sprintf("no invocation %q in namespace %q: this gateway has not known it since it started at %s", id, ns, g.started.Format(time.RFC3339))}
	if g.histories[ns] != nil {
		e.Message = fmt.Sprintf("no invocation %q in namespace %q: none is in the history the gateway replicas share, within its retention", id, ns)
		return e
	}
	if g.cfg.DurableReplies && time.Since(g.started) < g.cfg.Retention {
		e.Message += "; one it started before a restart becomes known when its outcome arrives"
		e.Retryable = true
	}
	return e
}

func (g *Gateway) waitParam(r *http.Request) (time.Duration, error) {
	if r.URL.Query().Get("wait") == "" {
		return g.cfg.DefaultWait, nil
	}
	d, err := durationParam(r, "wait")
	return min(d, g.cfg.MaxWait), err
}

func location(inv Invocation) string {
	return "/v1/ns/" + url.PathEscape(inv.NS) + "/invocations/" + url.PathEscape(inv.ID)
}
