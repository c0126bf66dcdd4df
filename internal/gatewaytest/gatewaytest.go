// Package gatewaytest serves the demo tasks in-process behind a gateway,
// as `gateway` without --amqp-url does, for the tests of the gateway and of
// what talks to one.
package gatewaytest

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/demo"
)

// Server is a gateway over a loopback client whose worker serves the demo
// tasks.
type Server struct {
	URL     string
	HTTP    *httptest.Server
	Client  *atasks.Client
	Gateway *gateway.Gateway

	worker *atasks.Worker
}

// Start serves the demo tasks of namespaces nss (nil: the demo's own) behind
// a gateway of cfg; cfg.Client is the server's, and cfg.Metrics, if set,
// gets the worker's metrics too.
func Start(cfg gateway.Config, nss []atasks.NamespaceConfig) (*Server, error) {
	if nss == nil {
		var err error
		if nss, err = demo.Namespaces(nil); err != nil {
			return nil, err
		}
	}
	ccfg := atasks.Config{Namespaces: nss}
	if cfg.Metrics != nil {
		ccfg.Metrics = cfg.Metrics
	}
	client, err := atasks.NewClient(ccfg)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	s := &Server{Client: client}
	if s.worker, err = atasks.NewWorker(client, atasks.WorkerConfig{}); err == nil {
		err = s.worker.Start(ctx)
	}
	if err == nil {
		cfg.Client = client
		s.Gateway, err = gateway.New(cfg)
	}
	if err != nil {
		return nil, errors.Join(err, client.Stop(ctx))
	}
	s.HTTP = httptest.NewServer(s.Gateway)
	s.URL = s.HTTP.URL
	return s, nil
}

// New is Start for test t, which it fails on error; the server closes at
// the test's end.
func New(t testing.TB, cfg gateway.Config, nss []atasks.NamespaceConfig) *Server {
	t.Helper()
	s, err := Start(cfg, nss)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Close stops serving HTTP, drains the worker for up to 10 s (calls of
// WebSockets that closed meanwhile are cancelled), then stops the
// gateway's waits, closing its WebSockets.
func (s *Server) Close() error {
	s.HTTP.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := errors.Join(s.worker.Stop(ctx), s.Client.Stop(ctx))
	s.Gateway.Close()
	return err
}
