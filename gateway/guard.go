package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// guard is the middleware in front of every route. A gateway without
// tokens first refuses requests from other sites' pages (exposure.go).
// For an operation of the API document that access lists, it
// authenticates the caller (401), takes one request from its rate (429),
// checks its rights (403) and counts the request in flight (429), in that
// order; then, for any operation, it checks the request against the
// document (413, 400). Requests for paths or methods the document lacks
// pass on, for the router's 404 or 405 — under /v1/ only once admitted as
// any known token (under /v1/ns/{ns}/, one with a right in ns), so that
// they tell a stranger nothing, not even whether a namespace exists.
func (g *Gateway) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.exposed(w, r) {
			return
		}
		route, params, err := g.validator.routes.FindRoute(r)
		if err != nil {
			if n, ns, api := unmatched(r.URL.Path); api {
				_, release, ok := g.admit(w, r, n, ns, false)
				if !ok {
					return
				}
				defer release()
			}
			next.ServeHTTP(w, r)
			return
		}
		// params are escaped as chi's URL parameters are: the namespace
		// checked here is the one the handler serves.
		ns := params["ns"]
		if n, secured := access[route.Operation.OperationID]; secured {
			c, release, ok := g.admit(w, r, n, ns, route.Operation.OperationID == "webSocket")
			if !ok {
				return
			}
			defer release()
			r = r.WithContext(withCaller(r.Context(), c))
		}
		if g.validator.check(w, r, route, params, g.bodyLimit(ns)) {
			next.ServeHTTP(w, r)
		}
	})
}

// unmatched returns what a request for path, which the API document
// lacks, needs to reach the router's 404 or 405: under /v1/ns/{ns}/, a
// right in ns; elsewhere under /v1/, any known token. api is false for
// paths outside the API (the pages), which pass as they are.
func unmatched(path string) (n need, ns string, api bool) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return need{}, "", false
	}
	if rest, ok = strings.CutPrefix(rest, "ns/"); ok {
		ns, _, _ = strings.Cut(rest, "/")
		if ns, err := url.PathUnescape(ns); err == nil && ns != "" {
			return need{anyRight: true}, ns, true
		}
	}
	return need{}, "", true
}

// admit lets r in if its caller is known (or the gateway open), within its
// rate, may do what n asks in namespace ns, and has room in flight; else it
// answers r. ws says r is a WebSocket upgrade. Once r is served, release
// ends its count in flight.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, n need, ns string, ws bool) (c caller, release func(), ok bool) {
	c, fail := g.authenticate(r, ws)
	key := limitKey(c, r) // unknown callers are limited by IP
	if wait := g.limits.allow(key); wait > 0 {
		writeTooMany(w, tooFast(wait), wait)
		return c, nil, false
	}
	if fail != nil {
		g.refused(r, c, http.StatusUnauthorized, fail.detail)
		writeUnauthorized(w, fail)
		return c, nil, false
	}
	if err := g.permit(c, n, ns); err != nil {
		g.refused(r, c, http.StatusForbidden, err.Error())
		writeError(w, err)
		return c, nil, false
	}
	if !g.limits.acquire(key) {
		writeTooMany(w, tooMany(g.cfg.MaxInFlight), time.Second)
		return c, nil, false
	}
	return c, func() { g.limits.release(key) }, true
}

// bodyLimit is the most bytes a request body or WebSocket call frame for
// namespace ns may hold.
func (g *Gateway) bodyLimit(ns string) int64 {
	if n, ok := g.cfg.MaxBodyNS[ns]; ok {
		return n
	}
	return g.cfg.MaxBody
}

// frameLimit is the most bytes a WebSocket frame may hold: the largest
// body limit of any namespace.
func (g *Gateway) frameLimit() int64 {
	n := g.cfg.MaxBody
	for _, m := range g.cfg.MaxBodyNS {
		n = max(n, m)
	}
	return n
}

// extendWrite moves the write deadline of a request about to wait up to
// wait to Config.WriteTimeout after the wait: the server's WriteTimeout
// counts from the request's start, and a long-poll may outlast it.
func (g *Gateway) extendWrite(w http.ResponseWriter, wait time.Duration) {
	if g.cfg.WriteTimeout > 0 && wait > 0 {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + g.cfg.WriteTimeout))
	}
}
