// Command gateway is the HTTP front of atasks. With no broker configured it
// serves the demo tasks in-process (embedded mode), so one command gives a
// working system; with --amqp-url it fronts the workers behind RabbitMQ.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/cli"
	"github.com/atasks-go/atasks/internal/demo"
	"github.com/atasks-go/atasks/internal/gateway"
	"github.com/atasks-go/atasks/internal/metrics"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	f := cli.NewFlags("gateway", "gateway serves atasks over HTTP/JSON. Without --amqp-url it runs the demo tasks in-process.")
	listen := f.String("listen", "ATASKS_LISTEN", "127.0.0.1:8080", "address to serve HTTP on")
	amqpURL := f.String("amqp-url", "ATASKS_AMQP_URL", "", "RabbitMQ URL; empty runs the demo tasks in-process (embedded mode)")
	identity := f.String("identity", "ATASKS_IDENTITY", "", "stable id of this gateway on the broker: results that arrive while it is down wait for it to come back with the same id; empty is a random id")
	prefix := f.String("prefix", "ATASKS_PREFIX", "atasks", "first part of every exchange and queue name on the broker")
	concurrency := f.Int("concurrency", "ATASKS_CONCURRENCY", 1000, "embedded mode: how many tasks compute at once")
	maxBody := f.Int("max-body", "ATASKS_MAX_BODY", 1<<20, "largest request body in bytes")
	wait := f.Duration("wait", "ATASKS_WAIT", 10*time.Second, "how long an invoke waits for the outcome by default")
	maxWait := f.Duration("max-wait", "ATASKS_MAX_WAIT", 60*time.Second, "cap on ?wait=")
	retention := f.Duration("retention", "ATASKS_RETENTION", 10*time.Minute, "how long finished invocations stay readable")
	maxFinished := f.Int("max-finished", "ATASKS_MAX_FINISHED", 100_000, "how many finished invocations are kept at most, oldest evicted first")
	allowedOrigins := f.String("allowed-origins", "ATASKS_ALLOWED_ORIGINS", "", "comma-separated origins (e.g. https://app.example.com) whose pages may open WebSockets besides the gateway's own host; * for any")
	wsMaxCalls := f.Int("ws-max-calls", "ATASKS_WS_MAX_CALLS", 1000, "how many calls and subscriptions one WebSocket may have open")
	drain := f.Duration("drain", "ATASKS_DRAIN", 30*time.Second, "on SIGINT/SIGTERM, how long running work may take to finish")
	logger := f.Logging()
	tracing := f.Tracing("atasks-gateway")
	_ = f.Parse(args)
	log, err := logger()
	if err != nil {
		return err
	}
	stopTracing, err := tracing()
	if err != nil {
		return err
	}
	defer cli.FlushTraces(stopTracing, log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := metrics.NewRegistry() // served at /metrics: the gateway's, the broker's and, embedded, the worker's
	broker := cli.Broker{URL: *amqpURL, Identity: *identity, Prefix: *prefix, Logger: log, Metrics: metrics.NewAMQP(reg)}
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
	gw, err = gateway.New(gateway.Config{Client: client, MaxBody: int64(*maxBody), DefaultWait: *wait, MaxWait: *maxWait,
		Retention: *retention, MaxFinished: *maxFinished, AwaitUnknown: *identity != "",
		AllowedOrigins: origins(*allowedOrigins), WSMaxCalls: *wsMaxCalls, Metrics: reg})
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	mode, stopWork := "amqp", client.Stop
	if *amqpURL == "" {
		worker, err := atasks.NewWorker(client, atasks.WorkerConfig{Concurrency: *concurrency})
		if err != nil {
			return err
		}
		if err := worker.Start(ctx); err != nil {
			return err
		}
		mode, stopWork = "embedded", worker.Stop
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(gw.Close) // open long-polls answer now instead of holding up the shutdown
	log.Info("gateway listening", "addr", "http://"+ln.Addr().String(), "mode", mode, "namespaces", client.Namespaces())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

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
	log.Info("shutting down", "drain", *drain)
	hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(hctx)
	gw.Close() // idempotent; waits for WebSocket connections to end
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	return errors.Join(err, stopWork(dctx))
}

// origins splits a comma-separated list of origins, dropping blanks.
func origins(list string) []string {
	var out []string
	for o := range strings.SplitSeq(list, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
