package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/metrics"
)

// RunGateway is the gateway command: `hash-token` prints the hash of a
// token read on standard input; otherwise it serves (see Gateway) until
// SIGINT or SIGTERM.
func RunGateway(args []string) error {
	if len(args) > 0 && args[0] == "hash-token" {
		return hashToken(os.Stdin, os.Stdout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Gateway(ctx, args, nil)
}

// Gateway serves the gateway args configure until ctx ends, then shuts
// down; listening, if not nil, hears the address it serves on once it
// does. Over RabbitMQ (--amqp-url) it fronts --namespaces, by default
// those the program defines tasks in; without a broker it serves the
// program's own tasks in-process (embedded mode).
func Gateway(ctx context.Context, args []string, listening func(net.Addr)) error {
	f := NewFlags("gateway", "gateway serves atasks over HTTP/JSON. Without --amqp-url it runs this program's tasks in-process.\n`gateway hash-token < file` prints the hash of the token in file, for --tokens.")
	o := defineFlags(f)
	_ = f.Parse(args)
	log, err := o.logger()
	if err != nil {
		return err
	}
	stopTracing, err := o.tracing()
	if err != nil {
		return err
	}
	defer FlushTraces(stopTracing, log)
	tokens, err := o.security()
	if err != nil {
		return err
	}
	if len(tokens) == 0 && *o.insecure {
		log.Warn("serving without tokens (--insecure): anyone who reaches the gateway may invoke, read and cancel every task", "listen", *o.listen)
	}

	brokerTLS, err := o.brokerTLS()
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry() // served at /metrics: the gateway's, the broker's and, embedded, the worker's
	if *o.history && *o.amqpURL == "" {
		return errors.New("--history needs --amqp-url: an embedded gateway has no replicas")
	}
	if *o.history && *o.identity != "" {
		log.Warn("--identity is not used with --history: outcomes wait in the shared history, not in a reply queue of this gateway's own")
	}
	broker := Broker{URL: *o.amqpURL, Identity: *o.identity, Prefix: *o.prefix, Logger: log, Metrics: reg, TLS: brokerTLS,
		History: *o.history, HistoryMaxAge: *o.historyMaxAge, HistoryMaxBytes: int64(*o.historyMaxBytes)}
	nss, err := broker.Namespaces(o.fronted())
	if err != nil {
		return err
	}
	// The gateway adopts outcomes that arrive for invocations it started in
	// an earlier life (with --identity, they waited in its reply queue).
	var gw *gateway.Gateway
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss, Worker: WorkerName(), Logger: log, Metrics: reg,
		OnOrphan: func(o atasks.Outcome) { gw.Adopt(o) }})
	if err != nil {
		return err
	}
	cfg, err := o.gatewayConfig(client, reg, tokens, log)
	if err != nil {
		return err
	}
	if gw, err = gateway.New(cfg); err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return BrokerHint(err, *o.amqpURL)
	}
	mode, stopWork, err := o.startWork(ctx, client)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *o.listen)
	if err != nil {
		return ListenHint(err, *o.listen, "listen", "ATASKS_LISTEN")
	}
	if listening != nil {
		listening(ln.Addr())
	}
	return o.serve(ctx, gw, ln, log.With("mode", mode, "namespaces", client.Namespaces(), "tokens", len(tokens)), stopWork)
}

// startWork starts the embedded worker when there is no broker; it returns
// the mode and what drains the work at shutdown.
func (o *options) startWork(ctx context.Context, client *atasks.Client) (string, func(context.Context) error, error) {
	if *o.amqpURL != "" {
		return "amqp", client.Stop, nil
	}
	worker, err := atasks.NewWorker(client, atasks.WorkerConfig{Concurrency: *o.concurrency})
	if err != nil {
		return "", nil, err
	}
	if err := worker.Start(ctx); err != nil {
		return "", nil, err
	}
	return "embedded", func(ctx context.Context) error { return errors.Join(worker.Stop(ctx), client.Stop(ctx)) }, nil
}

// serve serves gw on ln until ctx ends, then shuts down; stopWork drains
// the work.
func (o *options) serve(ctx context.Context, gw *gateway.Gateway, ln net.Listener, log *slog.Logger, stopWork func(context.Context) error) error {
	srv := o.server(gw, log)
	srv.RegisterOnShutdown(gw.Close) // open long-polls answer now instead of holding up the shutdown
	scheme := "http://"
	if srv.TLSConfig != nil {
		scheme = "https://"
	}
	log.Info("gateway listening", "addr", scheme+ln.Addr().String())
	served := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Shutdown order: stop taking HTTP requests, answer open long-polls
	// (gw.Close, on shutdown) and let open requests finish, for up to 10 s;
	// then, for up to --drain, drain the embedded worker (running tasks
	// finish) or disconnect from the broker (tasks go on in the workers; with
	// --identity their outcomes wait for our return).
	log.Info("shutting down", "drain", *o.drain)
	hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(hctx)
	gw.Close() // idempotent; waits for WebSocket connections to end
	dctx, cancel := context.WithTimeout(context.Background(), *o.drain)
	defer cancel()
	return errors.Join(err, stopWork(dctx))
}

// server returns the HTTP server of gw, with o's timeouts and TLS.
func (o *options) server(gw *gateway.Gateway, log *slog.Logger) *http.Server {
	// WebSockets are hijacked: the upgrade clears these deadlines and the
	// connection keeps its own (docs/WEBSOCKET.md). Long-polls move their
	// write deadline past their wait (gateway.Config.WriteTimeout).
	srv := &http.Server{Handler: gw, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ReadHeaderTimeout: *o.readHeaderTimeout, ReadTimeout: *o.readTimeout,
		WriteTimeout: *o.writeTimeout, IdleTimeout: *o.idleTimeout}
	if o.cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*o.cert}, MinVersion: tls.VersionTLS12}
	}
	return srv
}
