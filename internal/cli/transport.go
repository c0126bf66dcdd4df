package cli

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/metrics"
	"github.com/atasks-go/atasks/internal/transport/amqp"
)

// Broker is how the binaries reach RabbitMQ.
type Broker struct {
	URL      string // empty: no broker, loopback
	Identity string // stable id of this process among callers; see amqp.Config.Identity
	Prefix   string // first part of every exchange and queue name
	Slots    int    // per served task, how many deliveries compute at once
	// LeaseAfter is how long a worker holds a request before it leases it,
	// to outlive the broker's consumer_timeout; see amqp.Config.LeaseAfter.
	LeaseAfter time.Duration
	Logger     *slog.Logger
	Metrics    *metrics.AMQP // nil: none
	TLS        *tls.Config   // for amqps://; nil: the system's roots
}

// Transports returns a constructor of each namespace's transport for
// demo.Namespaces: nil (loopback) without a broker URL, else AMQP.
func (b Broker) Transports() func(ns string) (atasks.Transport, error) {
	if b.URL == "" {
		return nil
	}
	return func(ns string) (atasks.Transport, error) {
		return amqp.New(amqp.Config{URL: b.URL, Namespace: ns, Prefix: b.Prefix, Identity: b.Identity, Slots: b.Slots, LeaseAfter: b.LeaseAfter, Logger: b.Logger, Metrics: b.Metrics, TLS: b.TLS})
	}
}
