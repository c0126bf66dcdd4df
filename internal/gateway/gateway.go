// Package gateway is the HTTP front of atasks: it invokes tasks for callers
// that speak HTTP and JSON, keeps each invocation's state and outcome for a
// while, and answers waits, long-polls and cancels on them.
package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/api"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/wire"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
)

// Config configures a Gateway.
type Config struct {
	// Client calls the tasks. Required; it must be started before the
	// gateway serves requests.
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
	// AwaitUnknown makes a long-poll on an unknown invocation wait for it to
	// appear. Set it when outcomes outlive the gateway (AMQP with an
	// identity): after a restart, an invocation started before it becomes
	// known when its outcome arrives (see Adopt). Defaults to false: unknown
	// is 404 at once.
	AwaitUnknown bool
	// AllowedOrigins lists the origins (such as "https://app.example.com")
	// whose browser pages may open WebSockets, besides pages of the
	// gateway's own host; "*" allows any. Requests without an Origin are
	// not from a browser and always allowed. Defaults to none.
	AllowedOrigins []string
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
	if c.WSMaxCalls == 0 {
		c.WSMaxCalls = 1000
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewRegistry()
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
	if c.MaxBody < 0 || c.DefaultWait < 0 || c.MaxWait < 0 || c.Retention < 0 || c.MaxFinished < 0 {
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
	handler   http.Handler
	metrics   *metrics.Gateway
	monitor   *monitor // the dashboard's feed
	limits    *limiter

	// life ends at Close; waiters for outcomes stop then, while the
	// invocations themselves go on.
	life    context.Context
	endLife context.CancelFunc
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
	g := &Gateway{cfg: cfg, store: newStore(cfg.Retention, cfg.MaxFinished), validator: v, limits: newLimiter(cfg)}
	g.metrics = metrics.NewGateway(cfg.Metrics, g.store.len)
	g.monitor = newMonitor(g)
	g.store.onEvict = g.metrics.Evicted
	g.life, g.endLife = context.WithCancel(context.Background())
	g.handler = g.routes()
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

func (g *Gateway) listTasks(w http.ResponseWriter, r *http.Request) {
	ns := chi.URLParam(r, "ns")
	tasks, err := g.cfg.Client.Catalog(r.Context(), ns)
	if err != nil {
		writeError(w, err)
		return
	}
	c, err := g.cfg.Client.Codec(ns)
	if err != nil {
		writeError(w, err)
		return
	}
	type taskInfo struct {
		Name    string `json:"name"`
		Codec   string `json:"codec"`
		Servers int    `json:"servers"`
	}
	infos := make([]taskInfo, len(tasks))
	for i, t := range tasks {
		infos[i] = taskInfo{t.Name, c.Name(), t.Servers}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ns": ns, "tasks": infos})
}

// invoke starts a task with the request body as its input and waits for
// the outcome up to ?wait=: 200 with the outcome, else 202 with a Location.
// A repeated Idempotency-Key answers the invocation it names instead.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	ns, task := chi.URLParam(r, "ns"), chi.URLParam(r, "task")
	wait, err := g.waitParam(r)
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	timeout, err := durationParam(r, "timeout")
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	input, ok := g.readInput(w, r)
	if !ok {
		return
	}
	if err := g.served(r.Context(), ns, task); err != nil {
		writeError(w, err)
		return
	}
	maxAttempts, err := intParam(r, "max_attempts") // at least 1: validated against the document
	if err != nil {
		writeProblem(w, codeBadRequest, err.Error())
		return
	}
	id, replayed, err := g.start(traceOf(r), callSpec{ns: ns, task: task, input: input, timeout: timeout,
		key: r.Header.Get("Idempotency-Key"), maxAttempts: maxAttempts})
	if err != nil {
		writeError(w, err)
		return
	}
	g.extendWrite(w, wait)
	inv, ok := g.await(r.Context(), id, wait)
	if !ok {
		writeProblem(w, codeInvocationExpired, fmt.Sprintf("invocation %q was evicted before it could be read", id))
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if !inv.State.Final() {
		w.Header().Set("Location", location(inv))
		writeJSON(w, http.StatusAccepted, inv)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// served returns a "task_not_found" error unless some server offers task in ns.
func (g *Gateway) served(ctx context.Context, ns, task string) error {
	tasks, err := g.cfg.Client.Catalog(ctx, ns)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if t.Name == task {
			return nil
		}
	}
	return &atasks.Error{Code: wire.CodeTaskNotFound, Message: fmt.Sprintf("no worker serves task %q in namespace %q", task, ns)}
}

// readInput reads the body, which validate has limited already, as the
// task's JSON input; an empty body is null.
func (g *Gateway) readInput(w http.ResponseWriter, r *http.Request) (any, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeProblem(w, codeBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	if len(body) == 0 {
		return nil, true
	}
	input, err := codec.DecodeJSON(body)
	if err != nil {
		writeProblem(w, codeMalformedJSON, "the body is not one JSON value: "+err.Error())
		return nil, false
	}
	return input, true
}

// callSpec is what starts an invocation, from a POST or a WebSocket call.
type callSpec struct {
	ns, task    string
	input       any
	timeout     time.Duration // the invocation's deadline from now; 0: none
	key         string        // idempotency key; "" for none
	maxAttempts int           // the caller's cap on attempts; 0: the task's own
}

// start invokes the task and records the invocation, its span a child of
// the one trace carries, if any; a goroutine records
// its outcome when it arrives. If idempotency key key (optional) names an
// invocation of ns already, start starts nothing and returns that one's id,
// replayed; or, if that one has another task or input, an
// "idempotency_conflict" error.
func (g *Gateway) start(trace context.Context, c callSpec) (id string, replayed bool, err error) {
	ns, task, key := c.ns, c.task, c.key
	var fp string
	if key != "" {
		fp = fingerprint(task, c.input)
	}
	if !g.addWaiter() {
		return "", false, &atasks.Error{Code: codeShuttingDown, Message: "the gateway is shutting down", Retryable: true}
	}
	id = router.NewID()
	ctx, cancel := context.WithCancel(atasks.WithClient(trace, g.cfg.Client))
	if c.timeout > 0 {
		ctx, cancel = withTimeout(ctx, cancel, c.timeout)
	}
	inv := Invocation{ID: id, NS: ns, Task: task, State: "queued", CreatedAt: time.Now().UTC()}
	if prior, priorFP := g.store.add(inv, cancel, key, fp); prior != "" {
		cancel()
		g.waiters.Done()
		if priorFP != fp {
			return "", false, &atasks.Error{Code: codeIdempotencyConflict, Message: fmt.Sprintf("idempotency key %q names invocation %q, of another task or input", key, prior)}
		}
		return prior, true, nil
	}
	// Sending may wait for the broker's confirm: no lock is held here.
	f := atasks.Ref[any, any](ns, task).Start(ctx, c.input, atasks.WithID(id), atasks.OnState(g.onState), atasks.MaxAttempts(c.maxAttempts))
	g.metrics.Invoking.Began(ns, task)
	go func() {
		defer g.waiters.Done()
		out, err := f.Wait(g.life)
		if g.life.Err() != nil {
			return // the gateway is closing; the invocation goes on
		}
		g.finish(inv, out, err)
	}()
	return id, false, nil
}

// traceOf returns a context carrying the W3C trace context of r's
// traceparent header, if any, and nothing else of r: the invocation
// outlives the request.
func traceOf(r *http.Request) context.Context {
	return propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
}

// fingerprint identifies a call by its task and input, a decoded JSON value.
func fingerprint(task string, input any) string {
	b, _ := json.Marshal(input) // cannot fail: input came from JSON
	sum := sha256.Sum256(append([]byte(task+"\x00"), b...))
	return string(sum[:])
}

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

func withTimeout(ctx context.Context, cancel context.CancelFunc, d time.Duration) (context.Context, context.CancelFunc) {
	tctx, tcancel := context.WithTimeout(ctx, d)
	return tctx, func() { tcancel(); cancel() }
}

func (g *Gateway) onState(e atasks.Event) {
	g.store.update(e.ID, func(inv *Invocation) {
		if inv.StartedAt == nil {
			now := time.Now().UTC()
			inv.StartedAt = &now
		}
		inv.State = e.State
		if e.Worker != "" {
			inv.Worker = e.Worker
		}
		if e.Attempt > 0 {
			inv.Attempt = e.Attempt
		}
		if e.Child != "" {
			inv.Children = append(inv.Children, e.Child)
		}
	})
}

// finish records the outcome of invocation began, and counts it in the
// metrics before anyone waiting for it hears of it (or anyway, if its
// record is gone).
func (g *Gateway) finish(began Invocation, out any, err error) {
	ended := func(inv *Invocation) {
		g.metrics.Invoking.Ended(inv.NS, inv.Task, string(inv.State), inv.FinishedAt.Sub(inv.CreatedAt))
	}
	if !g.store.update(began.ID, func(inv *Invocation) { settle(inv, out, err); ended(inv) }) {
		settle(&began, out, err)
		ended(&began)
	}
}

// settle records an outcome in inv.
func settle(inv *Invocation, out any, err error) {
	now := time.Now().UTC()
	inv.FinishedAt = &now
	result, encErr := jsonValue(out)
	switch {
	case err != nil:
		e := asError(err)
		inv.State, inv.Error = e.StateOf(), e
	case encErr != nil:
		inv.State, inv.Error = "failed", &atasks.Error{Code: "bad_output", Message: encErr.Error()}
	default:
		inv.State, inv.Result = "succeeded", result
	}
}

// Adopt records the outcome of an invocation the gateway does not know,
// typically one it started before it restarted; give it to
// atasks.Config.OnOrphan. Outcomes of invocations it knows are ignored.
func (g *Gateway) Adopt(o atasks.Outcome) {
	var out any
	err := o.Decode(&out)
	inv := Invocation{ID: o.ID, NS: o.NS, Task: o.Task, CreatedAt: time.Now().UTC()}
	settle(&inv, out, err)
	g.store.adopt(inv)
}

// await returns invocation id once it is final or wait has passed.
func (g *Gateway) await(ctx context.Context, id string, wait time.Duration) (Invocation, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		inv, changed, ok := g.store.get(id)
		if (!ok && !g.cfg.AwaitUnknown) || inv.State.Final() {
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
	g.answer(w, r, min(wait, g.cfg.MaxWait))
}

// cancelInvocation cancels an invocation in flight and answers with its
// resource once final (or after a short wait); on a finished one it changes nothing.
func (g *Gateway) cancelInvocation(w http.ResponseWriter, r *http.Request) {
	wait := 5 * time.Second
	if !g.store.cancel(chi.URLParam(r, "ns"), chi.URLParam(r, "id")) {
		wait = 0
	}
	g.answer(w, r, wait)
}

// answer writes invocation {id} of namespace {ns} after waiting up to wait
// for it to be final.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	ns, id := chi.URLParam(r, "ns"), chi.URLParam(r, "id")
	if inv, _, ok := g.store.get(id); ok && inv.NS != ns {
		wait = 0 // another namespace's: not found, at once
	}
	g.extendWrite(w, wait)
	inv, ok := g.await(r.Context(), id, wait)
	if (!ok || inv.NS != ns) && g.store.gone(ns, id) {
		writeProblem(w, codeInvocationExpired, fmt.Sprintf("invocation %q of namespace %q finished and was evicted: at most %d finished invocations are kept, each for %v", id, ns, g.cfg.MaxFinished, g.cfg.Retention))
		return
	}
	if !ok || inv.NS != ns {
		writeProblem(w, codeInvocationNotFound, fmt.Sprintf("no invocation %q in namespace %q: unknown, or finished more than %v ago", id, ns, g.cfg.Retention))
		return
	}
	writeJSON(w, http.StatusOK, inv)
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
