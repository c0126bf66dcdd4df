// Package gateway is the HTTP front of atasks: it invokes tasks for callers
// that speak HTTP and JSON, keeps each invocation's state and outcome for a
// while, and answers waits, long-polls and cancels on them.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/internal/router"
	"github.com/go-chi/chi/v5"
)

// Config configures a Gateway.
type Config struct {
	// Client calls the tasks. Required; it must be started.
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
	// Logger receives the gateway's logs. Defaults to slog.Default().
	Logger *slog.Logger
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
	if c.Logger == nil {
		c.Logger = slog.Default()
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
	return nil
}

// Gateway serves the HTTP API.
type Gateway struct {
	cfg     Config
	store   *store
	handler http.Handler

	// life ends at Close; waiters for outcomes stop then, while the
	// invocations themselves go on.
	life    context.Context
	endLife context.CancelFunc
	waiters sync.WaitGroup
}

// New returns a gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, store: newStore(cfg.Retention, cfg.MaxFinished)}
	g.life, g.endLife = context.WithCancel(context.Background())
	g.handler = g.routes()
	return g, nil
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// Close stops waiting for outcomes; invocations in flight go on.
// Stop the HTTP server first.
func (g *Gateway) Close() {
	g.endLife()
	g.waiters.Wait()
}

func (g *Gateway) routes() http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/v1/ns", g.listNamespaces)
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
			writeProblem(w, http.StatusNotFound, "namespace_not_found", fmt.Sprintf("namespace %q is not served by this gateway", ns))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Gateway) listNamespaces(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]string{"namespaces": g.cfg.Client.Namespaces()})
}

func (g *Gateway) listTasks(w http.ResponseWriter, r *http.Request) {
	ns := chi.URLParam(r, "ns")
	tasks, err := g.cfg.Client.Catalog(r.Context(), ns)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ns": ns, "tasks": tasks})
}

// invoke starts a task with the request body as its input and waits for
// the outcome up to ?wait=: 200 with the outcome, else 202 with a Location.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	ns, task := chi.URLParam(r, "ns"), chi.URLParam(r, "task")
	wait, err := g.waitParam(r)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	timeout, err := durationParam(r, "timeout")
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	input, ok := g.readInput(w, r)
	if !ok {
		return
	}
	id := g.start(ns, task, input, timeout)
	inv, ok := g.await(r.Context(), id, wait)
	if !ok {
		writeProblem(w, http.StatusNotFound, "invocation_not_found", fmt.Sprintf("invocation %q expired before it could be read", id))
		return
	}
	if inv.Error != nil && inv.Error.Code == "task_not_found" {
		g.store.remove(id)
		writeProblem(w, http.StatusNotFound, "task_not_found", inv.Error.Message)
		return
	}
	if !inv.State.Final() {
		w.Header().Set("Location", location(inv))
		writeJSON(w, http.StatusAccepted, inv)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

// readInput reads the body as the task's JSON input; an empty body is null.
func (g *Gateway) readInput(w http.ResponseWriter, r *http.Request) (any, bool) {
	body, err := readBody(w, r, g.cfg.MaxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body exceeds %d bytes", g.cfg.MaxBody))
		} else {
			writeProblem(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		}
		return nil, false
	}
	if len(body) == 0 {
		return nil, true
	}
	input, err := codec.DecodeJSON(body)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "malformed_json", "the body is not one JSON value: "+err.Error())
		return nil, false
	}
	return input, true
}

// start invokes the task and records the invocation; a goroutine records
// its outcome when it arrives.
func (g *Gateway) start(ns, task string, input any, timeout time.Duration) string {
	id := router.NewID()
	ctx, cancel := context.WithCancel(atasks.WithClient(context.Background(), g.cfg.Client))
	if timeout > 0 {
		ctx, cancel = withTimeout(ctx, cancel, timeout)
	}
	g.store.add(Invocation{ID: id, NS: ns, Task: task, State: "queued", CreatedAt: time.Now().UTC()}, cancel)
	f := atasks.Ref[any, any](ns, task).Start(ctx, input, atasks.WithID(id), atasks.OnState(g.onState))
	g.waiters.Add(1)
	go func() {
		defer g.waiters.Done()
		out, err := f.Wait(g.life)
		if g.life.Err() != nil {
			return // the gateway is closing; the invocation goes on
		}
		g.finish(id, out, err)
	}()
	return id
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
		if e.Child != "" {
			inv.Children = append(inv.Children, e.Child)
		}
	})
}

func (g *Gateway) finish(id string, out any, err error) {
	result, encErr := jsonValue(out)
	g.store.update(id, func(inv *Invocation) {
		now := time.Now().UTC()
		inv.FinishedAt = &now
		switch {
		case err != nil:
			e := asError(err)
			inv.State, inv.Error = e.StateOf(), e
		case encErr != nil:
			inv.State, inv.Error = "failed", &atasks.Error{Code: "bad_output", Message: encErr.Error()}
		default:
			inv.State, inv.Result = "succeeded", result
		}
	})
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
			return inv, true
		case <-ctx.Done():
			return inv, true
		}
	}
}

func (g *Gateway) getInvocation(w http.ResponseWriter, r *http.Request) {
	wait, err := durationParam(r, "wait")
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	g.answer(w, r, min(wait, g.cfg.MaxWait))
}

// cancelInvocation cancels an invocation in flight and answers with its
// resource once final (or after a short wait); on a finished one it changes nothing.
func (g *Gateway) cancelInvocation(w http.ResponseWriter, r *http.Request) {
	g.store.cancel(chi.URLParam(r, "id"))
	g.answer(w, r, 5*time.Second)
}

// answer writes invocation {id} of namespace {ns} after waiting up to wait
// for it to be final.
func (g *Gateway) answer(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	ns, id := chi.URLParam(r, "ns"), chi.URLParam(r, "id")
	inv, ok := g.await(r.Context(), id, wait)
	if !ok || inv.NS != ns {
		writeProblem(w, http.StatusNotFound, "invocation_not_found", fmt.Sprintf("no invocation %q in namespace %q: unknown, or finished more than %v ago", id, ns, g.cfg.Retention))
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
	return "/v1/ns/" + inv.NS + "/invocations/" + inv.ID
}
