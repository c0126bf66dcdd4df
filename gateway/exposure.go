package gateway

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Exposure: a gateway without tokens trusts whoever reaches it. On
// loopback that is the local user, but also any web page the local user's
// browser opens: a cross-site form or fetch can POST to 127.0.0.1:8080,
// and a page whose DNS name rebinds to 127.0.0.1 can read answers. So an
// open gateway refuses requests that carry an Origin other than its own
// (or AllowedOrigins), and a Host that is not a loopback name or address
// (or AllowedHosts). Requests without an Origin — curl, programs — are
// not from a browser page and pass. A gateway with tokens needs none of
// this: browsers never attach its bearer tokens by themselves.

// Codes of the problems of exposure.
const (
	codeOriginNotAllowed = "origin_not_allowed"
	codeHostNotAllowed   = "host_not_allowed"
)

// exposed answers r and reports true when r must not reach an open
// gateway: a foreign Origin, or a Host that is not the gateway's own
// loopback name. A gateway with tokens exposes nothing this way.
func (g *Gateway) exposed(w http.ResponseWriter, r *http.Request) bool {
	if len(g.cfg.Tokens) > 0 {
		return false
	}
	if !g.hostAllowed(r.Host) {
		writeProblem(w, codeHostNotAllowed, "this gateway has no tokens and answers only requests to a loopback address or name "+
			"(localhost, 127.0.0.1, [::1]) or to --allowed-hosts, not "+r.Host+" (a page that rebinds its name to this machine could read it otherwise)")
		return true
	}
	if !g.originAllowed(r) {
		writeProblem(w, codeOriginNotAllowed, "this gateway has no tokens and takes no requests from other sites' pages (Origin "+r.Header.Get("Origin")+
			"); allow the site with --allowed-origins, or give the gateway tokens")
		return true
	}
	return false
}

// hostAllowed reports whether host, a request's Host, names a loopback
// address, or is one of AllowedHosts ("*": any).
func (g *Gateway) hostAllowed(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.Trim(name, "[]")
	if strings.EqualFold(name, "localhost") || strings.HasSuffix(strings.ToLower(name), ".localhost") {
		return true
	}
	if ip := net.ParseIP(name); ip != nil && ip.IsLoopback() {
		return true
	}
	return slices.ContainsFunc(g.cfg.AllowedHosts, func(a string) bool { return a == "*" || strings.EqualFold(a, name) || strings.EqualFold(a, host) })
}

// originAllowed reports whether r carries no Origin (not from a browser
// page), the gateway's own, or one of AllowedOrigins ("*": any).
func (g *Gateway) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.ContainsFunc(g.cfg.AllowedOrigins, func(o string) bool {
		return o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}
