package cli

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
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// RunWorker is the worker command: it parses args, serves the tasks the
// program defines (atasks.DefaultRegistry) through RabbitMQ until SIGINT or
// SIGTERM, then drains. Worker binaries call it after defining their tasks.
func RunWorker(args []string) error {
	f := NewFlags("worker", "worker serves the atasks tasks this program defines through RabbitMQ.")
	amqpURL := f.String("amqp-url", "ATASKS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	prefix := f.String("prefix", "ATASKS_PREFIX", "atasks", "first part of every exchange and queue name")
	concurrency := f.Int("concurrency", "ATASKS_CONCURRENCY", 1000, "how many tasks compute at once; a task awaiting others does not count")
	tasks := f.String("tasks", "ATASKS_TASKS", "", "comma-separated tasks to serve, as name or ns/name; empty serves all")
	namespaces := f.String("namespaces", "ATASKS_NAMESPACES", "", "comma-separated namespaces to serve; empty serves every one the program defines tasks in")
	leaseAfter := f.Duration("lease-after", "ATASKS_LEASE_AFTER", 10*time.Minute, "how long a task may hold its request before the worker leases it; keep it below the broker's consumer_timeout (30m by default)")
	drain := f.Duration("drain", "ATASKS_DRAIN", 30*time.Second, "on SIGINT/SIGTERM, how long running tasks may take to finish before they are cancelled and returned to the queue")
	metricsListen := f.String("metrics-listen", "ATASKS_METRICS_LISTEN", "", "address to serve Prometheus metrics on at /metrics (e.g. 127.0.0.1:9464); empty serves none")
	logger := f.Logging()
	tracing := f.Tracing("atasks-worker")
	brokerTLS := f.BrokerTLS()
	_ = f.Parse(args)
	log, err := logger()
	if err != nil {
		return err
	}
	tlsConfig, err := brokerTLS()
	if err != nil {
		return err
	}
	stopTracing, err := tracing()
	if err != nil {
		return err
	}
	defer FlushTraces(stopTracing, log)
	if *amqpURL == "" {
		return errors.New("--amqp-url is required: a worker serves through RabbitMQ (for everything in one process, run the gateway without it)")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := metrics.NewRegistry()
	broker := Broker{URL: *amqpURL, Prefix: *prefix, Slots: *concurrency, LeaseAfter: *leaseAfter, Logger: log, Metrics: reg, TLS: tlsConfig}
	served := List(*namespaces)
	if len(served) == 0 {
		served = atasks.DefaultRegistry().Namespaces()
	}
	if len(served) == 0 {
		return errors.New("this program defines no task to serve: define tasks with atasks.Define before calling the worker")
	}
	nss, err := broker.Namespaces(served)
	if err != nil {
		return err
	}
	name := WorkerName()
	client, err := atasks.NewClient(atasks.Config{Namespaces: nss, Worker: name, Logger: log, Metrics: reg})
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return BrokerHint(err, *amqpURL)
	}
	cfg := atasks.WorkerConfig{Concurrency: *concurrency}
	if *tasks != "" {
		cfg.Tasks = strings.Split(*tasks, ",")
	}
	worker, err := atasks.NewWorker(client, cfg)
	if err != nil {
		return err
	}
	if err := worker.Start(ctx); err != nil {
		return err
	}
	if *metricsListen != "" {
		stopMetrics, err := serveMetrics(*metricsListen, reg, client.Ready, log)
		if err != nil {
			_ = worker.Stop(context.Background())
			return err
		}
		defer stopMetrics()
	}
	log.Info("worker serving", "worker", name, "namespaces", client.Namespaces(), "concurrency", *concurrency)
	<-ctx.Done()
	// Stop takes no new tasks, lets running ones finish until the drain
	// deadline, cancels the rest (they return to the queue) and disconnects.
	log.Info("draining", "drain", *drain)
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	err = worker.Stop(dctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// As designed: what still ran went back to its queue for another worker.
		log.Info("drained: tasks still running at the deadline were given back to their queues", "drain", *drain)
		err = nil
	}
	return errors.Join(err, client.Stop(context.Background()))
}

// serveMetrics serves reg at /metrics and the worker's readiness at
// /readyz (200 while ready says nil, else 503 with why) on addr until the
// returned function is called.
func serveMetrics(addr string, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", ListenHint(err, addr, "metrics-listen", "ATASKS_METRICS_LISTEN"))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
	return func() { _ = srv.Close() }, nil
}
