package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/atasks-go/atasks/internal/metrics"
)

// maxSlots is the largest Slots: basic.qos takes a 16-bit prefetch count.
const maxSlots = 65535

// Config configures a Transport. The zero value is usable: every field has
// a default, applied by WithDefaults.
type Config struct {
	// URL is the broker's AMQP URI, or the URIs of the nodes of a cluster
	// separated by commas; amqps:// connects over TLS. A transport connects
	// to the first that answers, and after a lost connection to the next
	// one that answers, in turn.
	// Defaults to "amqp://guest:guest@127.0.0.1:5672/".
	URL string

	// TLS configures amqps:// connections: the CA to trust, a client
	// certificate. Defaults to nil: the system's roots, no client certificate.
	TLS *tls.Config

	// Namespace is the atasks namespace this transport carries. Every name
	// the transport declares on the broker includes it. It must not contain
	// '.' or white space.
	// Defaults to "default".
	Namespace string

	// Prefix starts the name of every exchange and queue the transport
	// declares, so that several atasks installations (or tests) can share
	// one broker without seeing each other. It must not contain '.' or
	// white space.
	// Defaults to "atasks".
	Prefix string

	// Identity is this process's stable name among the namespace's callers.
	// When set, the reply queue is a durable quorum queue named after it:
	// replies published while the process is down wait there for the next
	// process that opens with the same Identity, so results survive a
	// restart. At most one live process may use an Identity at a time. It
	// must not contain '.' or white space.
	// Defaults to "", which means a random id and a transient reply queue
	// that the broker deletes a minute after the process stops consuming
	// from it, or when it restarts.
	Identity string

	// History makes this transport's calls a gateway replica's: they are
	// answered through the namespace's history, a RabbitMQ stream that
	// every transport with History shares ("<Prefix>.<Namespace>.history").
	// A request is copied there as it is sent, servers answer there, and
	// the transport reads the whole history, from the oldest message
	// retained, passing every request, reply and claim to the function
	// given to its History's Follow. Identity then names nothing durable:
	// the history outlives every process. See docs/PROTOCOL.md §11.
	// Defaults to false: a reply queue of this process's own.
	History bool

	// HistoryMaxAge and HistoryMaxBytes bound the history's retention:
	// the stream's x-max-age and x-max-length-bytes, applied a segment
	// (16 MiB) at a time. Every transport with History must give the same:
	// the broker refuses a declaration with other arguments.
	// Default to 1h and 1 GiB.
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64

	// JournalMaxAge and JournalMaxBytes bound the retention of the
	// namespace's journal ("<Prefix>.<Namespace>.journal", a stream that
	// servers declare), where servers copy the outcomes of durable parents'
	// children (docs/DURABILITY.md): keep it longer than the longest
	// parent runs. Every server of the namespace must give the same.
	// Default to 24h and 1 GiB.
	JournalMaxAge   time.Duration
	JournalMaxBytes int64

	// Slots is how many requests of each served task this transport holds
	// computing at once. A request whose handler is suspended (awaiting
	// other tasks) does not occupy a slot, nor does one converted into a
	// lease (see LeaseAfter). Slots is per task, not per process: quorum
	// queues have no channel-wide prefetch. Each task queue has one consumer
	// with prefetch Slots, plus extra ones for held requests that are
	// suspended (see the comment on taskQueue). At most 65535, the largest
	// AMQP prefetch count.
	// Defaults to 1000, the default concurrency of an atasks worker (which
	// passes its own concurrency here), so that one task may use all of it.
	Slots int

	// DeliveryLimit is how many times a request may be delivered to servers
	// before it is dead-lettered as poison and its caller gets a "poison"
	// error. Every delivery that ends without an acknowledgement counts: a
	// crashed or disconnected worker, not a graceful Close. All servers of a
	// namespace must agree on it, because it is an argument of the task
	// queues (x-delivery-limit = DeliveryLimit-1).
	// Defaults to 5.
	DeliveryLimit int

	// LeaseAfter is how long a server holds a request unacknowledged while
	// its handler runs. Then it converts the delivery into a lease: it parks
	// a copy of the request in the namespace's lease queue, which returns it
	// to the task queue after LeasePeriod, and acknowledges the delivery; the
	// handler keeps running, and whoever receives the returning copy renews
	// the lease while the handler runs, or runs the request again if its
	// server died (docs/PROTOCOL.md §9). Set it well below the broker's
	// consumer_timeout (30 minutes by default on RabbitMQ 3.10; the node-wide
	// rabbit.consumer_timeout setting), which closes the channel of a
	// delivery unacknowledged for longer, so that its tasks rerun.
	// Defaults to 10m.
	LeaseAfter time.Duration

	// LeasePeriod is how long a lease copy stays parked before it returns:
	// a server killed while it runs a leased request is noticed within
	// LeasePeriod plus two AnnounceIntervals, and every LeasePeriod each
	// leased request costs one copy and one lease query. Servers of a
	// namespace should agree on it: the lease queue expires copies in order,
	// so one with a shorter period waits behind those parked before it.
	// Defaults to 1m.
	LeasePeriod time.Duration

	// AnnounceInterval is how often a serving transport announces its tasks
	// on the namespace's control exchange. Callers forget a server that has
	// not announced for three intervals.
	// Defaults to 5s.
	AnnounceInterval time.Duration

	// LookupTimeout is how long Send waits to hear from a server of a task it
	// has not heard of before it returns a "task_not_found" error, and how
	// long after Open Catalog waits for the first announcements.
	// Defaults to 500ms.
	LookupTimeout time.Duration

	// ConnectionName is the connection_name client property, shown by
	// rabbitmqctl list_connections and the management UI.
	// Defaults to "atasks <Namespace> <Identity or random id>".
	ConnectionName string

	// Logger receives the transport's diagnostics.
	// Defaults to slog.Default().
	Logger *slog.Logger

	// Metrics counts reconnections, redeliveries and dead letters.
	// Defaults to nil: none.
	Metrics *metrics.AMQP
}

// WithDefaults returns a copy of c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.URL == "" {
		c.URL = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.Prefix == "" {
		c.Prefix = "atasks"
	}
	if c.Slots == 0 {
		c.Slots = 1000
	}
	if c.HistoryMaxAge == 0 {
		c.HistoryMaxAge = time.Hour
	}
	if c.HistoryMaxBytes == 0 {
		c.HistoryMaxBytes = 1 << 30
	}
	if c.JournalMaxAge == 0 {
		c.JournalMaxAge = 24 * time.Hour
	}
	if c.JournalMaxBytes == 0 {
		c.JournalMaxBytes = 1 << 30
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = 5
	}
	if c.LeaseAfter == 0 {
		c.LeaseAfter = 10 * time.Minute
	}
	if c.LeasePeriod == 0 {
		c.LeasePeriod = time.Minute
	}
	if c.AnnounceInterval == 0 {
		c.AnnounceInterval = 5 * time.Second
	}
	if c.LookupTimeout == 0 {
		c.LookupTimeout = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// urls returns the URLs of c.URL, in order.
func (c Config) urls() []string {
	var urls []string
	for _, u := range strings.Split(c.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// validate reports the first setting of c that cannot work.
func (c Config) validate() error {
	for _, raw := range c.urls() {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("amqp: URL: %w", err)
		}
		if u.Scheme != "amqp" && u.Scheme != "amqps" {
			return fmt.Errorf("amqp: URL scheme %q, want amqp or amqps", u.Scheme)
		}
	}
	for _, f := range []struct{ name, value string }{
		{"Namespace", c.Namespace}, {"Prefix", c.Prefix}, {"Identity", c.Identity},
	} {
		if strings.ContainsAny(f.value, ". \t\r\n") {
			return fmt.Errorf("amqp: %s %q contains '.' or white space", f.name, f.value)
		}
	}
	switch {
	case c.Slots < 1 || c.Slots > maxSlots:
		return fmt.Errorf("amqp: Slots %d out of range 1..%d", c.Slots, maxSlots)
	case c.DeliveryLimit < 1:
		return fmt.Errorf("amqp: DeliveryLimit %d, want at least 1", c.DeliveryLimit)
	case c.LeaseAfter < 10*time.Millisecond:
		return errors.New("amqp: LeaseAfter below 10ms")
	case c.LeasePeriod < 10*time.Millisecond:
		return errors.New("amqp: LeasePeriod below 10ms")
	case c.AnnounceInterval < 10*time.Millisecond:
		return errors.New("amqp: AnnounceInterval below 10ms")
	case c.HistoryMaxAge < time.Second || c.HistoryMaxBytes < historySegment:
		return fmt.Errorf("amqp: history retention below 1s or %d bytes", historySegment)
	case c.JournalMaxAge < time.Second || c.JournalMaxBytes < journalSegment:
		return fmt.Errorf("amqp: journal retention below 1s or %d bytes", journalSegment)
	case c.LookupTimeout < 0:
		return errors.New("amqp: negative LookupTimeout")
	}
	return nil
}

// extraPrefetch is the prefetch of an extra consumer (see taskQueue): one
// credit per suspended delivery with few Slots, so that the bound on held
// deliveries stays exact; with many, a consumer per suspension would cost
// the broker a consume and a cancel per await.
func (c Config) extraPrefetch() int { return min(64, max(1, c.Slots/16)) }
