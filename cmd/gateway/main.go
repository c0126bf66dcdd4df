// Command gateway is the HTTP front of atasks. With no broker configured it
// serves the demo tasks in-process (embedded mode), so one command gives a
// working system; with --amqp-url it fronts the workers behind RabbitMQ.
//
// `gateway hash-token` reads a token on its standard input and prints its
// hash, as a tokens file (--tokens) wants it.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/cli"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
	"github.com/atasks-go/atasks/internal/metrics"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "hash-token" {
		err = hashToken(os.Stdin, os.Stdout)
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, os.Args[1:], nil)
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down; listening, if not nil,
// hears the address it serves on once it does.
func run(ctx context.Context, args []string, listening func(net.Addr)) error {
	f := cli.NewFlags("gateway", "gateway serves atasks over HTTP/JSON. Without --amqp-url it runs the demo tasks in-process.\n`gateway hash-token < file` prints the hash of the token in file, for --tokens.")
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
	defer cli.FlushTraces(stopTracing, log)
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
	broker := cli.Broker{URL: *o.amqpURL, Identity: *o.identity, Prefix: *o.prefix, Logger: log, Metrics: metrics.NewAMQP(reg), TLS: brokerTLS}
	nss, err := demo.Namespaces(broker.Transports())
	if err != nil {
		return err
	}
	// The gateway adopts outcomes that arrive for invocations it started in
	// an earlier life (with --identity, they waited in its reply queue).
	var gw *gateway.Gateway
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss, Worker: cli.WorkerName(), Logger: log, Metrics: reg,
		OnOrphan: func(o atasks.Outcome) { gw.Adopt(o) }})
	if err != nil {
		return err
	}
	cfg, err := o.gatewayConfig(client, reg, tokens)
	if err != nil {
		return err
	}
	if gw, err = gateway.New(cfg); err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return cli.BrokerHint(err, *o.amqpURL)
	}
	mode, stopWork, err := o.startWork(ctx, client)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *o.listen)
	if err != nil {
		return cli.ListenHint(err, *o.listen, "listen", "ATASKS_LISTEN")
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
	return "embedded", worker.Stop, nil
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
