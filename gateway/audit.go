package gateway

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
)

// refused records a request (or WebSocket message) refused with status
// 401 or 403: a log line, the audit trail, and a metric. It names the
// token by its name, never by the token itself, and the client by address.
func (g *Gateway) refused(r *http.Request, c caller, status int, why string) {
	g.metrics.Refused(status)
	token := ""
	if c.token != nil {
		token = c.token.Name
	}
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	g.cfg.Logger.LogAttrs(r.Context(), slog.LevelWarn, "request refused", slog.String("status", strconv.Itoa(status)),
		slog.String("token", token), slog.String("client", client), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.String("why", why))
}
