// Package metrics holds atasks' Prometheus metrics: a registry per process
// with the Go runtime and process collectors, the handler that serves it at
// /metrics, and the metrics of each part (worker, gateway, AMQP). Labels
// are low-cardinality only: namespaces, tasks, outcomes — never invocation
// ids. Every method is safe on a nil receiver, which records nothing, so a
// part built without metrics pays nothing.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime (goroutines, memory,
// GC) and process (RSS, CPU, open files) collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus text format.
func Handler(reg prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// durationBuckets span a millisecond to ten minutes.
var durationBuckets = prometheus.ExponentialBucketsRange(0.001, 600, 16)

// Invocations counts invocations by namespace, task and outcome, with
// their durations and how many are in flight: the worker's view (those it
// ran) or the gateway's (those it started).
type Invocations struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	retries  *prometheus.CounterVec // the worker's only
}

// NewInvocations registers the invocation metrics of a part ("worker" or
// "gateway") with reg.
func NewInvocations(reg prometheus.Registerer, part string) *Invocations {
	m := &Invocations{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_" + part + "_invocations_total",
			Help: "Invocations (the worker's: attempts) that ended, by namespace, task and outcome: the final state, or queued for an attempt that will be retried.",
		}, []string{"ns", "task", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atasks_" + part + "_invocation_duration_seconds",
			Help:    "How long invocations took, from start to outcome, by namespace and task.",
			Buckets: durationBuckets,
		}, []string{"ns", "task"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atasks_" + part + "_invocations_in_flight",
			Help: "Invocations started and not yet ended, by namespace and task.",
		}, []string{"ns", "task"}),
	}
	reg.MustRegister(m.total, m.duration, m.inFlight)
	if part == "worker" {
		m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_worker_retries_total",
			Help: "Attempts that failed with a retryable error and were scheduled to run again, by namespace and task.",
		}, []string{"ns", "task"})
		reg.MustRegister(m.retries)
	}
	return m
}

// Retried records that an attempt of task in ns will run again.
func (m *Invocations) Retried(ns, task string) {
	if m != nil && m.retries != nil {
		m.retries.WithLabelValues(ns, task).Inc()
	}
}

// Began records that an invocation of task in ns started.
func (m *Invocations) Began(ns, task string) {
	if m != nil {
		m.inFlight.WithLabelValues(ns, task).Inc()
	}
}

// Ended records that an invocation of task in ns that began took d and
// ended in state outcome.
func (m *Invocations) Ended(ns, task, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(ns, task).Dec()
	m.total.WithLabelValues(ns, task, outcome).Inc()
	m.duration.WithLabelValues(ns, task).Observe(d.Seconds())
}

// RegisterSlots registers a process's compute slots, busy and free (the
// sum over its workers), read from busy and size at each scrape.
func RegisterSlots(reg prometheus.Registerer, busy, size func() int) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "atasks_worker_slots_busy", Help: "Compute slots taken by running tasks (a task awaiting children gives its slot up).",
		}, func() float64 { return float64(busy()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "atasks_worker_slots_free", Help: "Compute slots free.",
		}, func() float64 { return float64(size() - busy()) }),
	)
}

// AMQP counts what happens between a process and RabbitMQ, by namespace.
type AMQP struct {
	reconnects    *prometheus.CounterVec
	redeliveries  *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	historyLag    *prometheus.GaugeVec
	historyOffset *prometheus.GaugeVec
}

// NewAMQP registers the AMQP metrics with reg, or takes those registered
// there already.
func NewAMQP(reg prometheus.Registerer) *AMQP {
	m := &AMQP{
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_amqp_reconnects_total", Help: "Connections to the broker made again after one was lost, by namespace.",
		}, []string{"ns"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_amqp_redeliveries_total", Help: "Requests received that had been delivered before (a worker died or gave them back), by namespace and task.",
		}, []string{"ns", "task"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_amqp_dead_letters_total", Help: "Requests dead-lettered after too many deliveries and answered as poison, by namespace and task.",
		}, []string{"ns", "task"}),
		historyLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atasks_amqp_history_lag_seconds", Help: "How long the last marker this process appended to the namespace's history took to be read back by it: how far its reading is behind the history's end (measured every 5s), by namespace.",
		}, []string{"ns"}),
		historyOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atasks_amqp_history_offset", Help: "The offset of the last message this process read from the namespace's history, by namespace.",
		}, []string{"ns"}),
	}
	m.reconnects = reuse(reg, m.reconnects)
	m.redeliveries = reuse(reg, m.redeliveries)
	m.deadLetters = reuse(reg, m.deadLetters)
	m.historyLag = reuse(reg, m.historyLag)
	m.historyOffset = reuse(reg, m.historyOffset)
	return m
}

// reuse registers c with reg, or returns the collector registered as c
// already: the transports of several namespaces share their metrics.
func reuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		return dup.ExistingCollector.(C)
	}
	if err != nil {
		panic(err)
	}
	return c
}

// Reconnected records a new connection to the broker after a lost one.
func (m *AMQP) Reconnected(ns string) {
	if m != nil {
		m.reconnects.WithLabelValues(ns).Inc()
	}
}

// Redelivered records a request of task that arrived again.
func (m *AMQP) Redelivered(ns, task string) {
	if m != nil {
		m.redeliveries.WithLabelValues(ns, task).Inc()
	}
}

// DeadLettered records a request of task answered as poison.
func (m *AMQP) DeadLettered(ns, task string) {
	if m != nil {
		m.deadLetters.WithLabelValues(ns, task).Inc()
	}
}

// HistoryLag records how long a marker took to be read back from the history.
func (m *AMQP) HistoryLag(ns string, d time.Duration) {
	if m != nil {
		m.historyLag.WithLabelValues(ns).Set(d.Seconds())
	}
}

// HistoryRead records the offset of the last message read from the history.
func (m *AMQP) HistoryRead(ns string, offset int64) {
	if m != nil {
		m.historyOffset.WithLabelValues(ns).Set(float64(offset))
	}
}

// Gateway counts the gateway's WebSocket connections and calls and the
// invocation records it keeps.
type Gateway struct {
	wsConns  prometheus.Gauge
	wsCalls  *prometheus.CounterVec
	evicted  prometheus.Counter
	refused  *prometheus.CounterVec
	Invoking *Invocations // the invocations the gateway started
}

// NewGateway registers the gateway's metrics with reg; stored reports how
// many invocation records the gateway keeps, at each scrape.
func NewGateway(reg prometheus.Registerer, stored func() int) *Gateway {
	m := &Gateway{
		wsConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atasks_gateway_ws_connections", Help: "WebSocket connections open.",
		}),
		wsCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_gateway_ws_calls_total", Help: "Calls made over WebSockets, by namespace.",
		}, []string{"ns"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atasks_gateway_results_evicted_total", Help: "Finished invocation records dropped, past the retention or over the cap.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atasks_gateway_refused_total", Help: "Requests and WebSocket messages refused for their credentials (401) or rights (403), by status.",
		}, []string{"status"}),
		Invoking: NewInvocations(reg, "gateway"),
	}
	reg.MustRegister(m.wsConns, m.wsCalls, m.evicted, m.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "atasks_gateway_results_stored", Help: "Invocation records kept, running and finished.",
	}, func() float64 { return float64(stored()) }))
	return m
}

// WSOpened records a WebSocket connection opened; WSClosed, one closed.
func (m *Gateway) WSOpened() {
	if m != nil {
		m.wsConns.Inc()
	}
}

// WSClosed records a WebSocket connection closed.
func (m *Gateway) WSClosed() {
	if m != nil {
		m.wsConns.Dec()
	}
}

// WSCall records a call made over a WebSocket in ns.
func (m *Gateway) WSCall(ns string) {
	if m != nil {
		m.wsCalls.WithLabelValues(ns).Inc()
	}
}

// Evicted records n finished invocation records dropped.
func (m *Gateway) Evicted(n int) {
	if m != nil && n > 0 {
		m.evicted.Add(float64(n))
	}
}

// Refused counts a request or message refused with status (401, 403).
func (m *Gateway) Refused(status int) {
	m.refused.WithLabelValues(strconv.Itoa(status)).Inc()
}
