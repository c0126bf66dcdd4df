// Package gatewayclient calls atasks tasks through a gateway, for Go
// programs that reach a gateway rather than the broker.
//
//	c, err := gatewayclient.New("http://127.0.0.1:8080")
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	sum, err := gatewayclient.CallAs[int](ctx, c, "default", "demo.add", map[string]int{"a": 2, "b": 3})
//
// Calls go over one WebSocket per Client (GET /v1/ws, opened by the first
// call), many at once; over REST if the WebSocket cannot be opened, or when
// WithTransport says so. Over REST a call waits for its outcome in the
// invoking request (?wait=, WithWait), then long-polls the invocation
// (WithPollWait). Every failure is a *wire.Error (the type the SDK calls
// atasks.Error), or wraps one, with the same code over either transport: a
// failed, cancelled or timed-out invocation returns its own error; an error
// of the gateway itself is its code (over REST a *ProblemError, which
// unwraps to the *wire.Error); a gateway that cannot be reached is
// "unavailable". So errors.Is(err, wire.ErrTaskNotFound) and
// errors.As(err, &e) work as with the SDK, whose sentinels are the same
// values (atasks.ErrTaskNotFound is wire.ErrTaskNotFound).
//
// The package needs only package wire of the SDK and gorilla/websocket,
// so a program that imports it does not build in the SDK's broker,
// metrics or codecs.
package gatewayclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks/wire"
	"github.com/gorilla/websocket"
)

// Client calls tasks through one gateway. It is safe for concurrent use.
// Close it when done: it closes the WebSocket.
type Client struct {
	base      string // the gateway's URL, without a trailing slash
	http      *http.Client
	header    http.Header
	wait      time.Duration
	pollWait  time.Duration
	transport Transport
	dialer    *websocket.Dialer
	refs      atomic.Uint64 // the last ref given to a WebSocket call
	dialing   chan struct{} // held while the WebSocket is being opened

	mu     sync.Mutex
	conn   *wsConn   // the shared WebSocket, nil until a call needs it
	wsDown time.Time // in auto mode, calls go over REST until then
	closed bool
}

// Transport is what a Client calls tasks over (WithTransport).
type Transport string

// The transports.
const (
	// TransportAuto calls over the WebSocket, or over REST while it cannot
	// be opened (for 10s after each failed attempt) and for an input too
	// large for one frame of the gateway (1 MiB).
	TransportAuto Transport = "auto"
	// TransportWS calls over the WebSocket only.
	TransportWS Transport = "ws"
	// TransportREST calls over REST only: POST, then long-polls.
	TransportREST Transport = "rest"
)

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends the REST requests with hc. Defaults to
// http.DefaultClient. A Timeout of hc bounds long-polls too: keep it above
// the poll wait. If hc's Transport is an *http.Transport, the WebSocket is
// opened with its Proxy, TLSClientConfig and DialContext too.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithHeader adds a header to every request, the WebSocket's upgrade
// included: e.g. "Authorization", "Bearer "+token for a gateway that needs
// tokens, or a proxy in front of it.
func WithHeader(key, value string) Option { return func(c *Client) { c.header.Add(key, value) } }

// WithTransport sets what calls go over: TransportAuto ("auto"),
// TransportWS ("ws") or TransportREST ("rest"). Get, Cancel, Namespaces and
// Tasks are REST requests whatever it says. Defaults to TransportAuto.
func WithTransport(t Transport) Option { return func(c *Client) { c.transport = t } }

// WithWait sets how long Call's invoking request over REST waits for the
// outcome at the gateway (?wait=) before Call long-polls. A call whose context ends
// during that request is cancelled when the request answers (it names the
// invocation), so keep it short. Defaults to 1s.
func WithWait(d time.Duration) Option { return func(c *Client) { c.wait = d } }

// WithPollWait sets how long each long-poll (over REST) waits for the
// outcome at the gateway, which caps it (60s by default). Defaults to 30s.
func WithPollWait(d time.Duration) Option { return func(c *Client) { c.pollWait = d } }

// New returns a client of the gateway at baseURL, such as
// "http://127.0.0.1:8080".
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("gatewayclient: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gatewayclient: base URL %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{base: strings.TrimSuffix(baseURL, "/"), http: http.DefaultClient, header: http.Header{},
		wait: time.Second, pollWait: 30 * time.Second, transport: TransportAuto, dialing: make(chan struct{}, 1)}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil || c.wait < 0 || c.pollWait <= 0 {
		return nil, errors.New("gatewayclient: want an HTTP client, a wait >= 0 and a poll wait > 0")
	}
	if c.transport != TransportAuto && c.transport != TransportWS && c.transport != TransportREST {
		return nil, fmt.Errorf("gatewayclient: transport %q: want auto, ws or rest", c.transport)
	}
	c.dialer = newDialer(c.http)
	return c, nil
}

// Close closes the WebSocket, if open, and makes every later method fail
// with "unavailable" (not retryable). Calls and waits in flight over the
// WebSocket return that error; their invocations go on at the gateway
// (cancel a call's context first to cancel it). It returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.conn, c.closed = nil, true
	c.mu.Unlock()
	if conn != nil {
		conn.close()
	}
	return nil
}

// isClosed tells whether Close was called.
func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// errClosed is the error of a method of a closed Client.
func errClosed() error {
	return &wire.Error{Code: wire.CodeUnavailable, Message: "gatewayclient: the client is closed"}
}

// Namespaces lists the namespaces the gateway serves.
func (c *Client) Namespaces(ctx context.Context) ([]string, error) {
	var body struct {
		Namespaces []string `json:"namespaces"`
	}
	err := c.getJSON(ctx, "/v1/ns", &body)
	return body.Namespaces, err
}

// TaskInfo describes a task some server offers in a namespace.
type TaskInfo struct {
	Name    string `json:"name"`
	Codec   string `json:"codec"`   // how the gateway encodes the task's input: "json", "cbor", …
	Servers int    `json:"servers"` // how many processes serve it now
}

// Tasks lists the tasks served in namespace ns.
func (c *Client) Tasks(ctx context.Context, ns string) ([]TaskInfo, error) {
	var body struct {
		Tasks []TaskInfo `json:"tasks"`
	}
	err := c.getJSON(ctx, "/v1/ns/"+url.PathEscape(ns)+"/tasks", &body)
	return body.Tasks, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	res, err := c.send(ctx, http.MethodGet, path, nil, nil, nil)
	if err != nil {
		return err
	}
	return decodeBody(res, v)
}

// Get returns invocation id of namespace ns. With wait > 0 it long-polls:
// it answers once the invocation is final or wait has passed. The error is
// about the request only; the invocation's own is its Error.
func (c *Client) Get(ctx context.Context, ns, id string, wait time.Duration) (*Invocation, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	res, err := c.send(ctx, http.MethodGet, invocationPath(ns, id), q, nil, nil)
	if err != nil {
		return nil, err
	}
	return decodeInvocation(res)
}

// Cancel cancels invocation id of namespace ns and, through its context, its
// children, and returns it once final: normally cancelled, or in the state it
// reached first. Cancelling a finished invocation changes nothing. The error
// is about the request only.
func (c *Client) Cancel(ctx context.Context, ns, id string) (*Invocation, error) {
	res, err := c.send(ctx, http.MethodDelete, invocationPath(ns, id), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return decodeInvocation(res)
}

func invocationPath(ns, id string) string {
	return "/v1/ns/" + url.PathEscape(ns) + "/invocations/" + url.PathEscape(id)
}

// response is a successful answer of the gateway.
type response struct {
	status int
	body   []byte
}

// send makes one request; an answer of 300 or more is an error.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body []byte, h http.Header) (*response, error) {
	if c.isClosed() {
		return nil, errClosed()
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, &wire.Error{Code: codeBadRequest, Message: "gatewayclient: " + err.Error()}
	}
	for _, hs := range []http.Header{c.header, h} {
		for k, vs := range hs {
			req.Header[k] = append(req.Header[k], vs...)
		}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, transportError(ctx, fmt.Errorf("%s %s: reading the answer: %w", method, u, err))
	}
	if res.StatusCode >= 300 {
		return nil, problemError(res.StatusCode, b)
	}
	return &response{status: res.StatusCode, body: b}, nil
}

func decodeBody(res *response, v any) error {
	if err := json.Unmarshal(res.body, v); err != nil {
		return &wire.Error{Code: codeBadResponse, Message: "gatewayclient: the gateway's answer is not the expected JSON: " + err.Error()}
	}
	return nil
}

func decodeInvocation(res *response) (*Invocation, error) {
	var inv Invocation
	if err := decodeBody(res, &inv); err != nil {
		return nil, err
	}
	if inv.ID == "" || inv.State == "" {
		return nil, &wire.Error{Code: codeBadResponse, Message: "gatewayclient: the gateway's answer is not an invocation"}
	}
	return &inv, nil
}

// ctxError is the error of a call whose context ended: "cancelled" or
// "timeout", so that errors.Is(err, ctx.Err()) holds.
func ctxError(ctx context.Context) error { return wire.AsError(ctx.Err()) }
