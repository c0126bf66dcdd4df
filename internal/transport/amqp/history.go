package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

// The history (Config.History, docs/PROTOCOL.md §13): a RabbitMQ stream
// per namespace, "<prefix>.<ns>.history", that the transports with History
// share as their reply queue. A call whose id is handed out before its
// outcome (the gateway's 202, a WebSocket call, one with an idempotency
// key) is recorded there as accepted (Record), many calls to a message (a
// group commit: the calls recorded while one message is on its way go in
// the next); the others are known by their replies. Servers answer to the stream like to any reply queue. Each such
// transport reads the stream whole, from the oldest message retained, and
// resumes after the last offset it read on a new connection: it passes
// replies to its own calls to the router, and every accepted request,
// reply and claim to the Follow function. Sync appends a marker and waits
// until it reads it back: then it has read everything appended before.

// Message types and headers of the history's own messages.
const (
	typeAccepted = "accepted"
	typeClaim    = "claim"
	typeSync     = "sync"

	headerKey          = "atasks-idempotency-key"
	headerFingerprint  = "atasks-fingerprint"
	headerStreamOffset = "x-stream-offset"
)

// historySegment is the history's segment size: retention drops whole
// segments, so smaller ones keep it close to HistoryMaxAge.
const historySegment = 16 << 20

// historyProbe is how often a transport measures its history's lag.
const historyProbe = 5 * time.Second

// syncTimeout bounds one round of Sync.
const syncTimeout = time.Minute

// history is a transport's reading of its namespace's history.
type history struct {
	follow   atomic.Pointer[func(wire.Event)]
	next     atomic.Int64  // the offset the next connection reads from; -1: the first retained
	caughtUp chan struct{} // closed once a Sync after Open returned

	mu       sync.Mutex
	marks    map[string]chan struct{} // markers appended and not yet read back, by id
	pending  *syncRound               // the round new Sync calls join; nil: none
	running  *syncRound               // the round whose marker is out; nil: none
	accepted *acceptedBatch           // the requests the next accepted message records; nil: none
	flushing bool                     // an accepted message is on its way
}

// acceptedBatch is the requests one accepted message records.
type acceptedBatch struct {
	entries []acceptedEntry
	done    chan struct{} // closed once the message is confirmed, or could not be
	err     error         // why it could not be, set before done is closed
}

// acceptedEntry is one request in an accepted message (the JSON array
// that is its body).
type acceptedEntry struct {
	ID     string    `json:"id"`
	Task   string    `json:"task"`
	Parent string    `json:"parent,omitempty"`
	At     time.Time `json:"at"`
}

// syncRound is one marker that every Sync call made before it was
// appended waits for.
type syncRound struct {
	after *syncRound // the round it waits for before it appends
	done  chan struct{}
	err   error
}

func newHistory() *history {
	h := &history{caughtUp: make(chan struct{}), marks: map[string]chan struct{}{}}
	h.next.Store(-1)
	return h
}

// History implements wire.Historian: the namespace's history, or nil
// without Config.History.
func (t *Transport) History() wire.History {
	if t.hist == nil {
		return nil
	}
	return (*historyLog)(t)
}

// historyLog is a Transport seen as its wire.History.
type historyLog Transport

var _ wire.History = (*historyLog)(nil)

// Follow implements wire.History.
func (l *historyLog) Follow(fn func(wire.Event)) error {
	t := (*Transport)(l)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.opened {
		return errors.New("amqp: Follow after Open: the history's first events are read already")
	}
	t.hist.follow.Store(&fn)
	return nil
}

// Sync implements wire.History. Calls made while a marker is out share
// the next one.
func (l *historyLog) Sync(ctx context.Context) error {
	t := (*Transport)(l)
	h := t.hist
	h.mu.Lock()
	r := h.pending
	if r == nil {
		r = &syncRound{after: h.running, done: make(chan struct{})}
		h.pending = r
		go t.syncRound(r)
	}
	h.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return notNow(ctx, "reading the history: "+ctx.Err().Error())
	}
}

// syncRound appends r's marker once the round before it has ended, and
// ends r when the marker is read back.
func (t *Transport) syncRound(r *syncRound) {
	h := t.hist
	if r.after != nil {
		<-r.after.done
	}
	h.mu.Lock()
	h.pending, h.running = nil, r
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.stopCtx, syncTimeout)
	defer cancel()
	r.err = t.appendMark(ctx, amqp.Publishing{Type: typeSync})
	h.mu.Lock()
	if h.running == r {
		h.running = nil
	}
	h.mu.Unlock()
	close(r.done)
}

// Claim implements wire.History.
func (l *historyLog) Claim(ctx context.Context, c wire.Claim) error {
	return (*Transport)(l).appendMark(ctx, amqp.Publishing{
		Type: typeClaim, MessageId: c.ID,
		Headers: amqp.Table{headerKey: c.Key, headerFingerprint: c.Fingerprint},
	})
}

// appendMark appends msg to the history under a fresh correlation id and
// returns once this transport has read it back.
func (t *Transport) appendMark(ctx context.Context, msg amqp.Publishing) error {
	h := t.hist
	id := randomID()
	read := make(chan struct{})
	h.mu.Lock()
	h.marks[id] = read
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.marks, id)
		h.mu.Unlock()
	}()
	msg.CorrelationId, msg.Timestamp, msg.AppId, msg.DeliveryMode = id, time.Now(), appID, amqp.Persistent
	if err := t.publish(ctx, "", t.replyQueue(), msg); err != nil {
		return err
	}
	select {
	case <-read:
		return nil
	case <-ctx.Done():
		return notNow(ctx, "reading the history: "+ctx.Err().Error())
	}
}

// declareHistory declares the history stream on ch.
func (g *generation) declareHistory(ch *amqp.Channel) error {
	t := g.t
	if _, err := ch.QueueDeclare(t.replyQueue(), true, false, false, false, t.cfg.historyArgs()); err != nil {
		return fmt.Errorf("amqp: declare %s (every process with History must give it the same retention): %w", t.replyQueue(), err)
	}
	return nil
}

// Record implements wire.History: many calls go in one accepted message.
func (l *historyLog) Record(ctx context.Context, req *wire.Request) error {
	t := (*Transport)(l)
	h := t.hist
	h.mu.Lock()
	b := h.accepted
	if b == nil {
		b = &acceptedBatch{done: make(chan struct{})}
		h.accepted = b
	}
	b.entries = append(b.entries, acceptedEntry{ID: req.ID, Task: req.Task, Parent: req.Parent, At: time.Now().UTC()})
	start := !h.flushing
	h.flushing = true
	h.mu.Unlock()
	if start {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			h.mu.Lock()
			h.accepted, h.flushing = nil, false
			h.mu.Unlock()
			b.err = unavailable("transport closed")
			close(b.done)
			return b.err
		}
		t.background.Add(1)
		t.mu.Unlock()
		go t.flushAccepted()
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return notNow(ctx, "recording the call in the history: "+ctx.Err().Error())
	}
}

// flushAccepted publishes accepted messages, one at a time, until no
// request waits to be recorded.
func (t *Transport) flushAccepted() {
	defer t.background.Done()
	h := t.hist
	for {
		h.mu.Lock()
		b := h.accepted
		h.accepted = nil
		h.flushing = b != nil
		h.mu.Unlock()
		if b == nil {
			return
		}
		body, err := json.Marshal(b.entries)
		if err == nil {
			ctx, cancel := context.WithTimeout(t.stopCtx, syncTimeout)
			err = t.publish(ctx, "", t.replyQueue(), amqp.Publishing{Type: typeAccepted, ContentType: jsonContentType,
				DeliveryMode: amqp.Persistent, Timestamp: time.Now(), AppId: appID, Body: body})
			cancel()
		}
		b.err = err
		close(b.done)
	}
}

// awaitHistoryReplica waits until the history can be consumed on this
// generation's node: a stream declared a moment ago (say, by another
// replica starting at the same time) refuses consumers with 406
// PRECONDITION_FAILED "does not have a replica on the local node", or 541
// INTERNAL_ERROR (which closes the connection), until its member has
// started. It tries a consumer on a connection of its own to the same
// node every historyRetry until one is accepted (and closes it), or
// historyReplicaWait passes.
func (g *generation) awaitHistoryReplica() error {
	deadline := time.Now().Add(historyReplicaWait)
	for {
		err := g.probeHistoryConsumer()
		var amqpErr *amqp.Error
		starting := errors.As(err, &amqpErr) && (amqpErr.Code == amqp.PreconditionFailed || amqpErr.Code == amqp.InternalError)
		if err == nil || !starting || time.Now().After(deadline) {
			return err
		}
		time.Sleep(historyRetry)
	}
}

// probeHistoryConsumer opens a consumer of the history on a connection of
// its own to this generation's node, and closes it.
func (g *generation) probeHistoryConsumer() error {
	conn, err := amqp.DialConfig(g.url, g.dialCfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(1, 0, false)
	}
	if err == nil {
		_, err = ch.Consume(g.t.replyQueue(), "probe/"+g.t.id, false, false, false, false, amqp.Table{headerStreamOffset: "next"})
	}
	return err
}

// historyReplicaWait bounds awaitHistoryReplica; historyRetry is its pace.
const (
	historyReplicaWait = 30 * time.Second
	historyRetry       = 100 * time.Millisecond
)

// historyArgs are the arguments of the history stream.
func (c Config) historyArgs() amqp.Table {
	return amqp.Table{
		"x-queue-type":                    "stream",
		"x-max-age":                       formatAge(c.HistoryMaxAge),
		"x-max-length-bytes":              c.HistoryMaxBytes,
		"x-stream-max-segment-size-bytes": int64(historySegment),
	}
}

// formatAge writes d as a stream's x-max-age, in whole seconds (at least one).
func formatAge(d time.Duration) string {
	return strconv.FormatInt(int64(max(d.Round(time.Second), time.Second)/time.Second), 10) + "s"
}

// historyOffset is the x-stream-offset argument of a new consumer of the
// history: where the last one stopped, or the first message retained.
func (h *history) offset() amqp.Table {
	if next := h.next.Load(); next >= 0 {
		return amqp.Table{headerStreamOffset: next}
	}
	return amqp.Table{headerStreamOffset: "first"}
}

// readHistory handles one message of the history: a reply to a call in
// flight goes to the router; every accepted request, reply and claim to
// the Follow function; a marker ends what waits for it.
func (t *Transport) readHistory(m *amqp.Delivery) {
	h := t.hist
	if off, ok := m.Headers[headerStreamOffset].(int64); ok {
		h.next.Store(off + 1)
		t.cfg.Metrics.HistoryRead(t.cfg.Namespace, off)
	}
	fn := h.follow.Load()
	e := wire.Event{At: appended(m.Timestamp)}
	switch m.Type {
	case typeAccepted:
		var entries []acceptedEntry
		if err := json.Unmarshal(m.Body, &entries); err != nil {
			t.log.Warn("amqp: dropped undecodable accepted message in the history", "err", err)
			break
		}
		for _, a := range entries {
			if fn != nil && a.ID != "" {
				(*fn)(wire.Event{At: a.At, Request: &wire.Request{ID: a.ID, NS: t.cfg.Namespace, Task: a.Task, Parent: a.Parent}})
			}
		}
	case typeReply:
		r, err := decodeReply(m.Body)
		if err != nil {
			t.log.Warn("amqp: dropped undecodable reply", "err", err, "correlation_id", m.CorrelationId)
			break
		}
		if t.tracked(r.ID) {
			t.received(r)
		}
		e.Reply = r
	case typeClaim:
		key, _ := headerString(m.Headers, headerKey)
		fp, _ := headerString(m.Headers, headerFingerprint)
		e.Claim = &wire.Claim{Key: key, Fingerprint: fp, ID: m.MessageId}
		e.At = m.Timestamp // every reader judges a claim's age alike (gateway: claimVoidAfter)
	}
	if fn != nil && (e.Reply != nil || e.Claim != nil) {
		(*fn)(e)
	}
	h.mu.Lock()
	if read, ok := h.marks[m.CorrelationId]; ok {
		close(read)
		delete(h.marks, m.CorrelationId)
	}
	h.mu.Unlock()
}

// appended is when a message with AMQP timestamp ts was appended: ts,
// which AMQP carries in whole seconds, or now if that is sooner than two
// seconds after ts (a message read as it is appended).
func appended(ts time.Time) time.Time {
	if now := time.Now(); now.Sub(ts) < 2*time.Second {
		return now
	}
	return ts
}

// probeHistory syncs once after Open, which makes the transport ready
// (see Check), then every historyProbe, recording how long a marker takes
// to be read back as the history's lag, until Close.
func (t *Transport) probeHistory() {
	defer t.wg.Done()
	tick := time.NewTicker(historyProbe)
	defer tick.Stop()
	for {
		began := time.Now()
		err := (*historyLog)(t).Sync(t.stopCtx)
		switch {
		case err == nil:
			t.cfg.Metrics.HistoryLag(t.cfg.Namespace, time.Since(began))
			select {
			case <-t.hist.caughtUp:
			default:
				close(t.hist.caughtUp)
			}
		case !errors.Is(err, context.Canceled) && t.stopCtx.Err() == nil:
			t.log.Warn("amqp: reading the history", "err", err)
		}
		select {
		case <-tick.C:
		case <-t.stopCtx.Done():
			return
		}
	}
}

// historyReady is nil once the transport has read the history retained
// when it opened, else why not.
func (t *Transport) historyReady() error {
	if t.hist == nil {
		return nil
	}
	select {
	case <-t.hist.caughtUp:
		return nil
	default:
		return unavailable("amqp: reading the history retained before this process started")
	}
}

// tracked reports whether invocation id is a call of this transport
// waiting for its outcome.
func (t *Transport) tracked(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.inflight.Get(id)
	return ok
}
