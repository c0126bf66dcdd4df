// Package amqp is the RabbitMQ transport of atasks: give a namespace one,
// and its tasks run in whichever process serves them through the same
// broker, on any host; any number of workers share the load.
//
//	billing, err := amqp.New(amqp.Config{URL: "amqp://guest:guest@127.0.0.1:5672/", Namespace: "billing"})
//	if err != nil {
//		log.Fatal(err)
//	}
//	client, err := atasks.NewClient(atasks.Config{Namespaces: []atasks.NamespaceConfig{{Name: "billing", Transport: billing}}})
//
// Requests wait in a durable quorum queue per task and are acknowledged
// only once their outcome is published and confirmed, so a crashed worker's
// invocation runs again elsewhere; the transport reconnects by itself
// after a broker restart, to the next node of a cluster when given
// several URLs. What crosses the broker is specified in docs/PROTOCOL.md,
// enough to write a worker or caller in another language. A worker binary
// gets all of this, flags included, from package cli.
package amqp

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/internal/transport/amqp"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the transport of one namespace. The zero value
// connects to a broker on localhost as guest, for namespace "default".
type Config struct {
	// URL is the broker's AMQP URI (amqps:// for TLS), or the URIs of a
	// cluster's nodes separated by commas: the transport connects to the
	// first that answers, and after a lost connection to the next that
	// answers. Defaults to "amqp://guest:guest@127.0.0.1:5672/".
	URL string
	// TLS configures amqps://: the CA to trust, a client certificate.
	// Defaults to nil: the system's roots, no client certificate.
	TLS *tls.Config
	// Namespace is the atasks namespace the transport carries; name the
	// same one in atasks.NamespaceConfig. It must not contain '.' or
	// white space. Defaults to "default".
	Namespace string
	// Prefix starts the name of everything the transport declares on the
	// broker, so that several installations (or tests) share one broker
	// apart. All processes of an installation must agree on it. Defaults
	// to "atasks".
	Prefix string
	// Identity names this process among the namespace's callers for good:
	// outcomes of its calls that arrive while it is down wait in a durable
	// queue for the next process with the same Identity (at most one runs
	// at a time). Defaults to "": a random name, whose queue is transient:
	// it goes a minute after the process, and with a broker restart (the
	// calls waiting then fail with a retryable "unavailable").
	Identity string
	// History makes the transport's calls a gateway replica's: their
	// requests and outcomes are kept in the namespace's history, a
	// RabbitMQ stream that every transport with History reads whole, so
	// that any gateway replica answers for any invocation (package
	// gateway uses it when its client's transports have it). Identity is
	// then not needed. Defaults to false.
	History bool
	// HistoryMaxAge and HistoryMaxBytes bound how much history the broker
	// retains, and so how far back a replica started afresh knows
	// invocations; every process with History must give the same.
	// Default to 1h and 1 GiB.
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64
	// JournalMaxAge and JournalMaxBytes bound the retention of the
	// journal, where servers keep the outcomes of durable parents'
	// children (atasks.Durable): keep it longer than your longest parent
	// runs. Every server of a namespace must give the same.
	// Default to 24h and 1 GiB.
	JournalMaxAge   time.Duration
	JournalMaxBytes int64
	// Slots is how many requests of each served task the transport holds
	// computing at once; a request awaiting other tasks does not count.
	// A Worker's concurrency is the better bound: give both the same.
	// Defaults to 1000.
	Slots int
	// DeliveryLimit is how many times a request may be delivered without
	// an outcome (its workers crashed) before its caller gets a "poison"
	// error. All servers of a namespace must agree on it. Defaults to 5.
	DeliveryLimit int
	// LeaseAfter is how long a server holds a request unacknowledged
	// before it leases it, so that the broker's consumer_timeout (30
	// minutes by default) never cuts a long task short; keep it below
	// that. Defaults to 10m.
	LeaseAfter time.Duration
	// LeasePeriod is how long a lease lasts before it is renewed: a server
	// killed while it runs a leased request is noticed within about that
	// long. Servers of a namespace should agree on it. Defaults to 1m.
	LeasePeriod time.Duration
	// Logger receives the transport's diagnostics. Defaults to slog.Default().
	Logger *slog.Logger
	// Metrics, if set, receives the transport's Prometheus metrics:
	// reconnects, redeliveries, dead letters, by namespace. The transports
	// of several namespaces may share it. Defaults to nil: none.
	Metrics prometheus.Registerer
}

// New returns the transport cfg describes. It connects when the Client
// using it starts.
func New(cfg Config) (atasks.Transport, error) {
	ic := amqp.Config{URL: cfg.URL, TLS: cfg.TLS, Namespace: cfg.Namespace, Prefix: cfg.Prefix, Identity: cfg.Identity,
		History: cfg.History, HistoryMaxAge: cfg.HistoryMaxAge, HistoryMaxBytes: cfg.HistoryMaxBytes,
		JournalMaxAge: cfg.JournalMaxAge, JournalMaxBytes: cfg.JournalMaxBytes,
		Slots: cfg.Slots, DeliveryLimit: cfg.DeliveryLimit, LeaseAfter: cfg.LeaseAfter, LeasePeriod: cfg.LeasePeriod, Logger: cfg.Logger}
	if cfg.Metrics != nil {
		ic.Metrics = metrics.NewAMQP(cfg.Metrics)
	}
	return amqp.New(ic)
}

// Namespaces returns the configuration of namespaces names (the default
// one if none), each with a transport of its own as cfg describes, for
// atasks.Config.
func Namespaces(cfg Config, names ...string) ([]atasks.NamespaceConfig, error) {
	if len(names) == 0 {
		names = []string{atasks.DefaultNamespace}
	}
	nss := make([]atasks.NamespaceConfig, len(names))
	for i, ns := range names {
		cfg.Namespace = ns
		t, err := New(cfg)
		if err != nil {
			return nil, err
		}
		nss[i] = atasks.NamespaceConfig{Name: ns, Transport: t}
	}
	return nss, nil
}
