package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
)

// floorResponse is the floor HTTP server's fixed answer.
const floorResponse = `{"state":"succeeded","result":3}`

// openFloorHTTP starts a minimal net/http server answering fixed JSON.
func openFloorHTTP(_ context.Context, _ *env, inflight int) (*target, error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, floorResponse)
	})
	return serveHTTP(h, "/", `{"a":1,"b":2}`, inflight, nil)
}

// serveHTTP serves h on 127.0.0.1:0 and returns a target that POSTs body
// to path with a client keeping inflight idle connections; closing it
// shuts the server down, then runs after (if any).
func serveHTTP(h http.Handler, path, body string, inflight int, after func()) (*target, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: inflight, MaxIdleConns: inflight}
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + path
	call := func(ctx context.Context) error { return post(ctx, client, url, body) }
	closeFn := func() {
		tr.CloseIdleConnections()
		_ = srv.Shutdown(context.Background())
		if after != nil {
			after()
		}
	}
	return &target{call: call, close: closeFn}, nil
}

// post POSTs body to url as JSON and wants 200.
func post(ctx context.Context, client *http.Client, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return &statusError{status: res.StatusCode, body: string(b)}
	}
	return nil
}

// statusError is an HTTP answer other than 200.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return "HTTP " + http.StatusText(e.status) + ": " + e.body }
