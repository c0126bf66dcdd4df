package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/wire"
	"github.com/gorilla/websocket"
)

// wsConns is how many WebSocket connections the ws scenario multiplexes
// its calls over, whatever the number in flight.
const wsConns = 4

// openWS measures demo.echo calls multiplexed over wsConns WebSockets to a
// gateway fronting a worker over AMQP.
func openWS(ctx context.Context, e *env, _ int) (*target, error) {
	r, err := startRemote(ctx, e, 1, workerConcurrency, nil, false, nil)
	if err != nil {
		return nil, err
	}
	base, stopGateway, err := listenGateway(r.caller)
	if err != nil {
		r.stop(e)
		return nil, err
	}
	conns := make([]*wsClient, 0, wsConns)
	closeAll := func() {
		for _, c := range conns {
			c.close()
		}
		stopGateway()
		r.stop(e)
	}
	for range wsConns {
		c, err := dialWS(ctx, base)
		if err != nil {
			closeAll()
			return nil, err
		}
		conns = append(conns, c)
	}
	var next atomic.Uint64
	call := func(ctx context.Context) error {
		c := conns[next.Add(1)%wsConns]
		return c.call(ctx, atasks.DefaultNamespace, demo.Echo.Name(), `"x"`)
	}
	return &target{call: call, close: closeAll}, nil
}

// listenGateway serves a gateway over c on a free loopback port and
// returns its base URL and the function that stops it.
func listenGateway(c *atasks.Client) (string, func(), error) {
	gw, err := gateway.New(gateway.Config{Client: c})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gw.Close()
		return "", nil, err
	}
	srv := &http.Server{Handler: gw}
	srv.RegisterOnShutdown(gw.Close)
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Shutdown(context.Background()) }, nil
}

// wsClient is one WebSocket connection to a gateway, its calls
// multiplexed by ref (docs/WEBSOCKET.md).
type wsClient struct {
	conn     *websocket.Conn
	wmu      sync.Mutex // one writer at a time
	mu       sync.Mutex
	waiting  map[string]chan error // by ref: the call's outcome
	refs     atomic.Uint64
	accepted atomic.Int64 // calls the gateway accepted so far
	done     chan struct{}
}

// wsFrame is the part of a gateway's message the bench reads.
type wsFrame struct {
	Type       string      `json:"type"`
	Ref        string      `json:"ref"`
	Error      *wire.Error `json:"error"`
	Invocation *struct {
		State string      `json:"state"`
		Error *wire.Error `json:"error"`
	} `json:"invocation"`
}

// dialWS opens a WebSocket to the gateway at base and starts reading it.
func dialWS(ctx context.Context, base string) (*wsClient, error) {
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws", nil)
	if err != nil {
		return nil, err
	}
	c := &wsClient{conn: conn, waiting: map[string]chan error{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

// read passes each call's outcome to its waiter until the connection ends,
// then fails the calls still waiting.
func (c *wsClient) read() {
	defer close(c.done)
	for {
		var f wsFrame
		if err := c.conn.ReadJSON(&f); err != nil {
			c.failAll(fmt.Errorf("websocket: %w", err))
			return
		}
		switch f.Type {
		case "accepted":
			c.accepted.Add(1)
		case "result":
			var err error
			if f.Invocation == nil || f.Invocation.State != string(wire.Succeeded) {
				err = errors.New("invocation did not succeed")
				if f.Invocation != nil && f.Invocation.Error != nil {
					err = f.Invocation.Error
				}
			}
			c.settle(f.Ref, err)
		case "error":
			c.settle(f.Ref, f.Error)
		}
	}
}

func (c *wsClient) settle(ref string, err error) {
	c.mu.Lock()
	ch := c.waiting[ref]
	delete(c.waiting, ref)
	c.mu.Unlock()
	if ch != nil {
		ch <- err
	}
}

func (c *wsClient) failAll(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ref, ch := range c.waiting {
		ch <- err
		delete(c.waiting, ref)
	}
}

// call calls task with input (JSON) and waits for its result.
func (c *wsClient) call(ctx context.Context, ns, task, input string) error {
	ref := strconv.FormatUint(c.refs.Add(1), 36)
	ch := make(chan error, 1)
	c.mu.Lock()
	c.waiting[ref] = ch
	c.mu.Unlock()
	frame := `{"type":"call","ref":"` + ref + `","ns":"` + ns + `","task":"` + task + `","input":` + input + `}`
	c.wmu.Lock()
	err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame))
	c.wmu.Unlock()
	if err != nil {
		c.settle(ref, nil)
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errors.New("websocket closed")
	}
}

// close closes the connection and waits for its reader to stop.
func (c *wsClient) close() {
	c.wmu.Lock()
	_ = c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.wmu.Unlock()
	_ = c.conn.Close()
	<-c.done
}
