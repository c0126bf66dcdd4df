package amqp

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

// What docs/PROTOCOL.md calls the envelope: message types, headers and the
// reply body. Keep the two in step.

// Values of the AMQP type property.
const (
	typeRequest  = "request"
	typeReply    = "reply"
	typeAnnounce = "announce"
	typeLeave    = "leave"
	typeQuery    = "query"
	typeCancel   = "cancel"

	typeLeaseQuery = "lease-query"
	typeLeaseHeld  = "lease-held"
	typeLeaseGone  = "lease-gone"
)

// Header names.
const (
	headerDeadline         = "atasks-deadline"
	headerParent           = "atasks-parent"
	headerTraceParent      = "traceparent"
	headerAttempt          = "atasks-attempt"
	headerMaxAttempts      = "atasks-max-attempts"
	headerQuiet            = "atasks-quiet"
	headerRetries          = "atasks-retries"
	headerGivenBack        = "atasks-given-back"
	headerLeaseHolder      = "atasks-lease-holder"
	headerDeliveryCount    = "x-delivery-count"
	headerDeath            = "x-death"
	headerFirstDeathReason = "x-first-death-reason"
	headerFirstDeathQueue  = "x-first-death-queue"
)

const (
	appID           = "atasks"
	jsonContentType = "application/json"
	jsonCodec       = "json" // the codec of requests without a content type, and of reply bodies without a codec
)

// topology names the broker objects of one prefix and namespace.
type topology struct {
	base string // "<prefix>.<namespace>"
}

func newTopology(prefix, ns string) topology { return topology{base: prefix + "." + ns} }

// tasks is the direct exchange requests are published to, routing key = task name.
func (n topology) tasks() string { return n.base + ".tasks" }

// taskQueue is the quorum queue holding the requests for task.
func (n topology) taskQueue(task string) string { return n.base + ".task." + task }

// control is the fanout exchange carrying announcements, queries and cancels.
func (n topology) control() string { return n.base + ".control" }

// activity is the fanout exchange servers report invocations to, for
// monitors (wire.Monitor).
func (n topology) activity() string { return n.base + ".activity" }

// dlx is the fanout exchange task queues dead-letter to.
func (n topology) dlx() string { return n.base + ".dlx" }

// dead is the quorum queue bound to dlx.
func (n topology) dead() string { return n.base + ".dead" }

// journal is the stream of the namespace's journal (see journal.go).
func (n topology) journal() string { return n.base + ".journal" }

// history is the stream of the namespace's history (see history.go).
func (n topology) history() string { return n.base + ".history" }

// lease names both the fanout exchange lease copies are published to and
// the quorum queue bound to it, which dead-letters expired copies back to
// the tasks exchange.
func (n topology) lease() string { return n.base + ".lease" }

// delay is rung k of the delay ladder.
func (n topology) delay(k int) string { return n.base + ".delay." + strconv.Itoa(k) }

// due is the exchange and the queue delayed requests leave the ladder by.
func (n topology) due() string { return n.base + ".due" }

// cancels is the stream of cancels of delayed requests.
func (n topology) cancels() string { return n.base + ".cancels" }

// retry is the classic queue where retries of task wait about delay (a
// bucket of the ladder retryBucket makes); its messages expire back to
// the tasks exchange, to the task's queue.

func (n topology) retry(task string, bucket time.Duration) string {
	return fmt.Sprintf("%s.retry.%s.%d", n.base, task, bucket.Milliseconds())
}

// taskOfQueue is the task whose queue is name, if name is a task queue.
func (n topology) taskOfQueue(name string) (string, bool) {
	return strings.CutPrefix(name, n.base+".task.")
}

// replyQueue is the reply queue of the caller with the given id.
func (n topology) replyQueue(id string) string { return n.base + ".reply." + id }

// taskQueueArgs are the arguments every task queue is declared with.
func taskQueueArgs(n topology, deliveryLimit int) amqp.Table {
	return amqp.Table{
		"x-queue-type":           "quorum",
		"x-delivery-limit":       int64(deliveryLimit - 1),
		"x-dead-letter-exchange": n.dlx(),
		"x-dead-letter-strategy": "at-least-once",
		"x-overflow":             "reject-publish",
	}
}

// leaseQueueArgs are the arguments the lease queue is declared with.
func leaseQueueArgs(n topology) amqp.Table {
	return amqp.Table{
		"x-queue-type":           "quorum",
		"x-dead-letter-exchange": n.tasks(),
		"x-dead-letter-strategy": "at-least-once",
		"x-overflow":             "reject-publish",
	}
}

// contentType is the content type a body encoded with codec travels with.
func contentType(codec string) string {
	if codec == "" {
		return ""
	}
	return "application/" + codec
}

// codecOf is the codec a message with content type ct is encoded with
// (docs/PROTOCOL.md §2): the subtype of an "application/…" media type. The
// media type is case-insensitive and its parameters are ignored, so
// "application/json; charset=utf-8" is "json"; no content type at all
// means JSON. A media type of another shape is returned whole (lowercased,
// without parameters), so that the router reports it as an unknown codec.
func codecOf(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "" {
		return jsonCodec
	}
	if c, ok := strings.CutPrefix(mt, "application/"); ok && c != "" {
		return c
	}
	return mt
}

// expiration is the per-message TTL for a request with deadline d.
func expiration(d, now time.Time) string {
	ms := d.Sub(now).Milliseconds()
	if d.Sub(now) > time.Duration(ms)*time.Millisecond {
		ms++ // round up: never expire a request before its deadline
	}
	return strconv.FormatInt(max(ms, 0), 10)
}

// requestPublishing is the message that carries req, answered to replyTo.
func requestPublishing(req *wire.Request, replyTo string, now time.Time) amqp.Publishing {
	h := amqp.Table{}
	var exp string
	if !req.Deadline.IsZero() {
		h[headerDeadline] = req.Deadline.UTC().Format(time.RFC3339Nano)
		exp = expiration(req.Deadline, now)
	}
	if req.Parent != "" {
		h[headerParent] = req.Parent
	}
	if req.TraceParent != "" {
		h[headerTraceParent] = req.TraceParent
	}
	if req.MaxAttempts > 0 {
		h[headerMaxAttempts] = int64(req.MaxAttempts)
	}
	if req.Quiet {
		h[headerQuiet] = true
	}
	if req.Journal != "" {
		h[headerJournal] = req.Journal
	}
	if req.Replay {
		h[headerReplay] = true
	}
	if req.Resent {
		h[headerResent] = true
	}
	if !req.RunAt.IsZero() {
		h[headerRunAt] = req.RunAt.UTC().Format(time.RFC3339Nano)
	}
	sent := now
	if !req.Sent.IsZero() {
		sent = req.Sent
	}
	return amqp.Publishing{
		Headers:       h,
		ContentType:   contentType(req.Codec),
		DeliveryMode:  amqp.Persistent,
		CorrelationId: req.ID,
		ReplyTo:       replyTo,
		Expiration:    exp,
		MessageId:     req.ID,
		Timestamp:     sent,
		Type:          typeRequest,
		AppId:         appID,
		Body:          req.Body,
	}
}

// copyOf is a fresh copy of the request in m: the same properties, body
// and headers except those starting "x-" (so its delivery count starts
// again) and the lease holder; its next delivery counts as attempt.
func copyOf(m *amqp.Delivery, attempt int) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range m.Headers {
		if !strings.HasPrefix(k, "x-") && k != headerLeaseHolder {
			h[k] = v
		}
	}
	if attempt > 1 {
		h[headerAttempt] = int64(attempt)
	} else {
		delete(h, headerAttempt)
	}
	return amqp.Publishing{
		Headers:       h,
		ContentType:   m.ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: m.CorrelationId,
		ReplyTo:       m.ReplyTo,
		MessageId:     m.MessageId,
		Timestamp:     m.Timestamp,
		Type:          m.Type,
		AppId:         m.AppId,
		Body:          m.Body,
	}
}

// giveBackPublishing is a copy of the request in m for returning it to its
// queue without counting a delivery (Close gives unfinished work back this
// way). A run that started (run is true) counts as an attempt, which the
// caller sees, but not as a failed delivery: the copy's next delivery is
// the next attempt and atasks-given-back counts it. A request that did not
// run keeps its attempt, and a lease copy that was not run its lease
// holder, so that it is examined again. The expiration is recomputed from
// the deadline.
func giveBackPublishing(m *amqp.Delivery, run bool, now time.Time) amqp.Publishing {
	next := attempt(m.Headers)
	if run {
		next++
	}
	p := copyOf(m, next)
	if run {
		p.Headers[headerGivenBack] = int64(headerInt(m.Headers, headerGivenBack) + 1)
	}
	if holder, ok := headerString(m.Headers, headerLeaseHolder); ok && !run {
		p.Headers[headerLeaseHolder] = holder
	}
	if d, ok := headerString(m.Headers, headerDeadline); ok {
		if t, err := time.Parse(time.RFC3339Nano, d); err == nil {
			p.Expiration = expiration(t, now)
		}
	}
	return p
}

// leasePublishing is a lease copy of the request in m, parked in the lease
// queue for period and naming holder: if run after its holder's death, its
// delivery counts as attempt.
func leasePublishing(m *amqp.Delivery, holder string, attempt int, period time.Duration) amqp.Publishing {
	p := copyOf(m, attempt)
	p.Headers[headerLeaseHolder] = holder
	p.Expiration = strconv.FormatInt(max(period.Milliseconds(), 1), 10)
	return p
}

// messageID is the invocation id a request or dead letter is about.
func messageID(m *amqp.Delivery) string {
	if m.MessageId != "" {
		return m.MessageId
	}
	return m.CorrelationId
}

// headerString reads a string header; AMQP peers send long strings or bytes.
func headerString(h amqp.Table, k string) (string, bool) {
	switch v := h[k].(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// attempt is the delivery attempt of m, from 1: the atasks-attempt header
// (1 when absent) plus the earlier deliveries that ended without an
// acknowledgement, which quorum queues count in x-delivery-count.
func attempt(h amqp.Table) int {
	return max(headerInt(h, headerAttempt), 1) + max(headerInt(h, headerDeliveryCount), 0)
}

// headerTrue reports whether header k is present and neither false nor a
// zero integer.
func headerTrue(h amqp.Table, k string) bool {
	v, present := h[k]
	if b, ok := v.(bool); ok {
		return b
	}
	return present && headerInt(h, k) != 0
}

// headerInt reads a count from an integer header (docs/PROTOCOL.md §2):
// any AMQP integer type, signed or unsigned, 8 to 64 bits, or a string of
// decimal digits (a long string or bytes), as peers such as pika (32-bit
// ints) or string-only clients send them. It is 0 when absent, negative,
// beyond int, or anything else.
func headerInt(h amqp.Table, k string) int {
	var n int64
	switch v := h[k].(type) {
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case uint64:
		n = unsigned(v)
	case uint:
		n = unsigned(uint64(v))
	case string:
		n = decimal(v)
	case []byte:
		n = decimal(string(v))
	}
	if n < 0 || int64(int(n)) != n {
		return 0
	}
	return int(n)
}

// unsigned is v; -1 if v is beyond int64.
func unsigned(v uint64) int64 {
	if v > math.MaxInt64 {
		return -1
	}
	return int64(v)
}

// decimal is the value of s, a decimal integer; -1 if s is not one.
func decimal(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// lastDeath returns the reason and queue of the most recent dead-lettering
// of m: x-death lists the latest first, whereas x-first-death-* keep the
// first (a request may have been dead-lettered out of the lease queue
// before it exhausted its delivery limit).
func lastDeath(h amqp.Table) (reason, queue string) {
	if deaths, ok := h[headerDeath].([]any); ok && len(deaths) > 0 {
		if d, ok := deaths[0].(amqp.Table); ok {
			reason, _ = headerString(d, "reason")
			queue, _ = headerString(d, "queue")
			return reason, queue
		}
	}
	reason, _ = headerString(h, headerFirstDeathReason)
	queue, _ = headerString(h, headerFirstDeathQueue)
	return reason, queue
}

// decodeRequest reads the request in m, which came from the queue of task
// in namespace ns. With a non-nil error, req still carries whatever is
// needed to answer (ID, Codec, ReplyTo).
func decodeRequest(m *amqp.Delivery, ns, task string) (*wire.Request, *wire.Error) {
	req := &wire.Request{
		ID:      messageID(m),
		NS:      ns,
		Task:    task,
		Codec:   codecOf(m.ContentType),
		Body:    m.Body,
		Attempt: attempt(m.Headers),
		ReplyTo: m.ReplyTo,
	}
	req.Parent, _ = headerString(m.Headers, headerParent)
	req.TraceParent, _ = headerString(m.Headers, headerTraceParent)
	req.MaxAttempts = headerInt(m.Headers, headerMaxAttempts)
	req.Retries = headerInt(m.Headers, headerRetries)
	req.Quiet = headerTrue(m.Headers, headerQuiet)
	req.Journal, _ = headerString(m.Headers, headerJournal)
	req.Replay = headerTrue(m.Headers, headerReplay)
	req.Resent = headerTrue(m.Headers, headerResent)
	req.Sent = m.Timestamp
	if s, ok := headerString(m.Headers, headerRunAt); ok {
		req.RunAt, _ = time.Parse(time.RFC3339Nano, s)
	}
	if req.ID == "" {
		return req, &wire.Error{Code: wire.CodeBadInput, Message: "request without message_id"}
	}
	if _, present := m.Headers[headerDeadline]; present {
		s, _ := headerString(m.Headers, headerDeadline)
		d, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return req, &wire.Error{Code: wire.CodeBadInput, Message: fmt.Sprintf("bad %s header %q", headerDeadline, s)}
		}
		req.Deadline = d
	}
	return req, nil
}

// replyEnvelope is the JSON body of every reply message.
type replyEnvelope struct {
	ID        string            `json:"id"`
	Task      string            `json:"task,omitempty"`
	State     wire.State        `json:"state"`
	Child     string            `json:"child,omitempty"`
	ChildNS   string            `json:"child_ns,omitempty"`
	ChildTask string            `json:"child_task,omitempty"`
	Children  []wire.ChildState `json:"children,omitempty"`
	Worker    string            `json:"worker,omitempty"`
	Attempt   int               `json:"attempt,omitempty"`
	Codec     string            `json:"codec,omitempty"`
	Body      []byte            `json:"body,omitempty"`
	Error     *wire.Error       `json:"error,omitempty"`
}

// replyPublishing is the message that carries r. Final replies are
// persistent; state changes are not.
func replyPublishing(r *wire.Reply, now time.Time) (amqp.Publishing, error) {
	body, err := json.Marshal(replyEnvelope{
		ID: r.ID, Task: r.Task, State: r.State, Child: r.Child, ChildNS: r.ChildNS, ChildTask: r.ChildTask, Children: r.Children,
		Worker: r.Worker, Attempt: r.Attempt, Codec: r.Codec, Body: r.Body, Error: r.Err,
	})
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("amqp: encode reply %s: %w", r.ID, err)
	}
	mode := amqp.Transient
	if r.State.Final() {
		mode = amqp.Persistent
	}
	return amqp.Publishing{
		ContentType:   jsonContentType,
		DeliveryMode:  mode,
		CorrelationId: r.ID,
		Timestamp:     now,
		Type:          typeReply,
		AppId:         appID,
		Body:          body,
	}, nil
}

// decodeReply reads a reply message body.
func decodeReply(body []byte) (*wire.Reply, error) {
	var e replyEnvelope
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("amqp: decode reply: %w", err)
	}
	switch e.State {
	case wire.Queued, wire.Running, wire.Succeeded, wire.Failed, wire.Cancelled, wire.TimedOut:
	default:
		return nil, fmt.Errorf("amqp: decode reply: unknown state %q", e.State)
	}
	if e.ID == "" {
		return nil, fmt.Errorf("amqp: decode reply: missing id")
	}
	if len(e.Body) == 0 {
		e.Body = nil
	}
	if e.Codec == "" && e.Body != nil {
		e.Codec = jsonCodec // a body without a codec is JSON, as a request without a content type
	}
	if e.State.Final() && e.State != wire.Succeeded && e.Error == nil {
		return nil, fmt.Errorf("amqp: decode reply %s: state %s without error", e.ID, e.State)
	}
	return &wire.Reply{
		ID: e.ID, Task: e.Task, State: e.State, Child: e.Child, ChildNS: e.ChildNS, ChildTask: e.ChildTask, Children: e.Children,
		Worker: e.Worker, Attempt: e.Attempt, Codec: e.Codec, Body: e.Body, Err: e.Error,
	}, nil
}

// failure is the final reply to request id of task that failed with err.
func failure(id, task, codec string, err *wire.Error) *wire.Reply {
	return &wire.Reply{ID: id, Task: task, State: err.StateOf(), Codec: codec, Err: err}
}

// announcement is the body of announce and leave messages.
type announcement struct {
	Server   string                 `json:"server"`
	Identity string                 `json:"identity,omitempty"`
	Tasks    []string               `json:"tasks,omitempty"`
	Schemas  map[string]wire.Schema `json:"schemas,omitempty"` // of the tasks, those the server knows
	TTLMs    int64                  `json:"ttl_ms,omitempty"`
	Worker   string                 `json:"worker,omitempty"`
	Busy     int                    `json:"busy,omitempty"`
	Size     int                    `json:"size,omitempty"`
}

// cancelRequest is the body of cancel messages.
type cancelRequest struct {
	ID string `json:"id"`
}

// leaseNote is the body of lease-query, lease-held and lease-gone
// messages (docs/PROTOCOL.md §9).
type leaseNote struct {
	// Holder is, in a query and in lease-gone, the holder the lease copies
	// name; in lease-held, the server that runs the invocations now.
	Holder string   `json:"holder"`
	IDs    []string `json:"ids"`
	// TTLMs, in a broadcast lease-gone, is how long to remember it.
	TTLMs int64 `json:"ttl_ms,omitempty"`
}

// controlPublishing is a control message of type typ with a JSON body.
func controlPublishing(typ string, v any, now time.Time) (amqp.Publishing, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("amqp: encode %s: %w", typ, err)
	}
	return amqp.Publishing{
		ContentType:  jsonContentType,
		DeliveryMode: amqp.Transient,
		Timestamp:    now,
		Type:         typ,
		AppId:        appID,
		Body:         body,
	}, nil
}
