package cli

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/amqp"
	"github.com/prometheus/client_golang/prometheus"
)

// Broker is how the binaries reach RabbitMQ.
type Broker struct {
	URL      string // one URL, or several separated by commas; empty: no broker, loopback
	Identity string // stable id of this process among callers; see amqp.Config.Identity
	Prefix   string // first part of every exchange and queue name
	Slots    int    // per served task, how many deliveries compute at once
	// LeaseAfter is how long a worker holds a request before it leases it,
	// to outlive the broker's consumer_timeout; see amqp.Config.LeaseAfter.
	LeaseAfter time.Duration
	Logger     *slog.Logger
	Metrics    prometheus.Registerer // nil: none
	TLS        *tls.Config           // for amqps://; nil: the system's roots
	// History shares the namespaces' history among gateway replicas,
	// retained this long and this large; see amqp.Config.History.
	History         bool
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64
}

// Namespaces returns the configuration of namespaces names: each over
// the broker, or over loopback without a broker URL.
func (b Broker) Namespaces(names []string) ([]atasks.NamespaceConfig, error) {
	if b.URL == "" {
		nss := make([]atasks.NamespaceConfig, len(names))
		for i, ns := range names {
			nss[i] = atasks.NamespaceConfig{Name: ns}
		}
		return nss, nil
	}
	return amqp.Namespaces(amqp.Config{URL: b.URL, Prefix: b.Prefix, Identity: b.Identity, Slots: b.Slots, LeaseAfter: b.LeaseAfter,
		History: b.History, HistoryMaxAge: b.HistoryMaxAge, HistoryMaxBytes: b.HistoryMaxBytes,
		Logger: b.Logger, Metrics: b.Metrics, TLS: b.TLS}, names...)
}

// List splits a comma-separated list, dropping blanks.
func List(s string) []string {
	var out []string
	for e := range strings.SplitSeq(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
