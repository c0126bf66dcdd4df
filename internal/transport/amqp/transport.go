// Package amqp is the RabbitMQ transport of atasks, built on amqp091-go.
//
// docs/PROTOCOL.md describes what it puts on the wire: exchanges, queues,
// properties, headers and bodies. In short: requests go to a durable quorum
// queue per task through a direct exchange and are acknowledged only after
// their final reply is confirmed by the broker; replies go to the caller's
// reply queue; announcements, queries and cancels travel on a fanout
// control exchange; requests that exhaust their delivery limit are
// dead-lettered and answered with a "poison" error by any server of the
// namespace.
//
// A Transport keeps one connection at a time (a "generation") with three
// channels: one in confirm mode for publishing, one for task and dead-letter
// consumers (one consumer with prefetch Slots per served task, plus one with
// prefetch 1 per suspended request; see taskQueue), one for replies and
// control messages. A request held longer than LeaseAfter is converted into
// a lease, so that the broker's consumer_timeout never fires (see lease.go). When
// the connection or any of its channels fails, the supervisor dials a new
// connection with backoff, declares the topology again and resumes
// consuming; see supervise.
package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/singleflight"

	"github.com/atasks-go/atasks/internal/shrink"
	"github.com/atasks-go/atasks/wire"
)

const (
	dialTimeout     = 10 * time.Second
	replyPrefetch   = 256
	ephemeralExpiry = time.Minute // x-expires of a reply queue without Identity
	// replyCheckTimeout bounds a reconnect's check of the reply queue.
	replyCheckTimeout = 5 * time.Second
	minBackoff        = 100 * time.Millisecond
	maxBackoff        = 5 * time.Second
	giveBackTimeout   = 5 * time.Second
)

var (
	_ wire.Transport = (*Transport)(nil)
	_ wire.Checker   = (*Transport)(nil)
	_ wire.Delivery  = (*delivery)(nil)
)

// errGenerationLost says a connection ended under an operation; the
// operation may be retried on the next connection.
var errGenerationLost = errors.New("amqp: connection lost")

// Transport carries atasks requests and replies over RabbitMQ. It
// implements wire.Transport; create it with New.
type Transport struct {
	cfg  Config
	log  *slog.Logger
	topo topology
	id   string // this instance, random: server id in announcements
	// replyQ is the name of the reply queue: the history's with History;
	// otherwise one of this transport's, replaced when its node is out of
	// reach (see replaceReplyQueue).
	replyQ        atomic.Pointer[string]
	replyReplaced atomic.Bool // replaced, and the calls waiting on the old one not failed yet
	cat           *catalog
	hist          *history // with Config.History, else nil

	journal   journalReads // Kept calls waiting for a read of the journal
	journalOK atomic.Bool  // the journal is declared (see Journal)

	laterCancels laterCancels // cancels of delayed requests, from the stream of cancels (cancels.go)

	deliver func(*wire.Reply)

	// setupMu serialises Serve with connect, so that every generation
	// serves exactly when t.srv is set.
	setupMu sync.Mutex

	mu         sync.Mutex
	opened     bool
	closed     bool
	gen        *generation   // the live connection; nil while reconnecting
	genChanged chan struct{} // closed and replaced whenever gen changes
	srv        *server
	inflight   shrink.Map[string, time.Time] // sent requests without a final reply yet: their RunAt
	asks       map[string]chan leaseAnswer   // lease queries waiting, by correlation id

	retryQueues  sync.Map // retry queue name → when it was last declared (see declareRetry)
	queues       sync.Map // task → queueState (see queueExists)
	queueChecks  singleflight.Group
	nextURL      atomic.Uint32 // which of the URLs the next dial tries first
	watchedUntil atomic.Int64  // UnixNano until which a monitor watches (see Report)

	stopCtx    context.Context // ends reconnecting; cancelled last by Close
	stop       context.CancelFunc
	killCtx    context.Context // parent of handler contexts and reply publishes
	kill       context.CancelFunc
	wg         sync.WaitGroup // the supervisor and the runners (see runner); Add only before serving stops
	background sync.WaitGroup // awaitConfirm and flushAccepted goroutines; Add only under mu while !closed
}

// New returns a Transport for cfg, with defaults applied. It does not
// connect: Open does.
func New(cfg Config) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	id := randomID()
	replyID := cfg.Identity
	if replyID == "" {
		replyID = id
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = "atasks " + cfg.Namespace + " " + replyID
	}
	t := &Transport{
		cfg:        cfg,
		log:        cfg.Logger.With("ns", cfg.Namespace),
		topo:       newTopology(cfg.Prefix, cfg.Namespace),
		id:         id,
		cat:        newCatalog(),
		genChanged: make(chan struct{}),
		asks:       map[string]chan leaseAnswer{},
	}
	reply := t.topo.replyQueue(replyID)
	if cfg.History {
		t.hist = newHistory()
		reply = t.topo.history()
	}
	t.replyQ.Store(&reply)
	t.stopCtx, t.stop = context.WithCancel(context.Background())
	t.killCtx, t.kill = context.WithCancel(context.Background())
	return t, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// unavailable is the error of operations the transport cannot carry out now.
func unavailable(msg string) *wire.Error {
	return &wire.Error{Code: wire.CodeUnavailable, Message: msg, Retryable: true}
}

// Open connects to the broker, declares the namespace's topology and starts
// consuming replies. Replies to requests sent through t are passed to
// deliver. The first connection must succeed before ctx ends; after that t
// reconnects by itself.
func (t *Transport) Open(ctx context.Context, deliver func(*wire.Reply)) error {
	if deliver == nil {
		return errors.New("amqp: Open with nil deliver")
	}
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return unavailable("transport closed")
	case t.opened:
		t.mu.Unlock()
		return errors.New("amqp: Open called twice")
	}
	t.opened = true
	t.deliver = deliver
	t.mu.Unlock()
	g, err := t.connect(ctx, true)
	if err != nil {
		t.mu.Lock()
		t.opened = false
		t.mu.Unlock()
		return err
	}
	t.log.Info("amqp: connected", "url", redacted(g.url))
	t.wg.Add(1)
	go t.supervise(g)
	if t.hist != nil {
		t.wg.Add(1)
		go t.probeHistory()
	}
	return nil
}

// usable reports why t cannot take new work, if it cannot.
func (t *Transport) usable() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !t.opened:
		return errors.New("amqp: transport not open")
	case t.closed:
		return unavailable("transport closed")
	}
	return nil
}

// Send publishes req to its task's queue and returns once the broker has
// confirmed it, or once ctx ends after the request was written (a broker
// that blocks publishing holds it; the call fails later if the broker does
// not confirm it). It returns a "task_not_found" error when no server has
// announced req.Task within LookupTimeout. While the broker is unreachable
// it waits for a reconnect until ctx ends.
func (t *Transport) Send(ctx context.Context, req *wire.Request) error {
	if err := t.usable(); err != nil {
		return err
	}
	if req.ID == "" {
		return &wire.Error{Code: wire.CodeBadInput, Message: "request without id"}
	}
	if req.NS != "" && req.NS != t.cfg.Namespace {
		return &wire.Error{Code: wire.CodeNamespaceNotFound, Message: fmt.Sprintf("transport carries namespace %q, not %q", t.cfg.Namespace, req.NS)}
	}
	if err := t.offered(ctx, req.Task); err != nil {
		return err
	}
	t.track(req.ID, req.RunAt)
	var err error
	if wait := time.Until(req.RunAt); delayRung(wait) >= 0 {
		err = t.sendLater(ctx, req, wait)
	} else {
		err = t.publish(ctx, t.topo.tasks(), req.Task, requestPublishing(req, t.replyQueue(), time.Now()))
	}
	var u *unconfirmedError
	switch {
	case errors.As(err, &u):
		// Written, but not confirmed before ctx ended: the broker may run
		// it yet, so the call goes on (a caller that gave up cancels it),
		// and fails if the broker does not take it after all.
		t.mu.Lock()
		if !t.closed {
			t.background.Add(1)
			go t.awaitConfirm(req.ID, req.Task, u.dc)
		}
		t.mu.Unlock()
	case err != nil:
		t.untrack(req.ID)
		return err
	}
	return nil
}

// awaitConfirm waits for the broker's confirm of invocation id's request,
// which Send stopped waiting for. If the broker refuses it, or the
// connection ends before its confirm, the call fails as "unavailable"
// (retryable; the request may still have reached the broker).
func (t *Transport) awaitConfirm(id, task string, dc *amqp.DeferredConfirmation) {
	defer t.background.Done()
	<-dc.Done() // also when the channel closes: then not acked
	if !dc.Acked() && t.untrack(id) {
		t.deliver(failure(id, task, "", unavailable("the broker did not confirm the request before the connection ended; it may still run")))
	}
}

// Cancel broadcasts a cancel for invocation id to every server of the
// namespace; the one running it cancels its handler's context, and all of
// them remember id for a while so that it does not start later.
func (t *Transport) Cancel(ctx context.Context, id string) error {
	if err := t.usable(); err != nil {
		return err
	}
	msg, err := controlPublishing(typeCancel, cancelRequest{ID: id}, time.Now())
	if err != nil {
		return err
	}
	t.mu.Lock()
	runAt, _ := t.inflight.Get(id)
	t.mu.Unlock()
	var lasting error
	if time.Until(runAt) > 0 { // delayed: the cancel must last until then
		lasting = t.appendCancel(ctx, id, runAt)
	}
	return errors.Join(lasting, t.publish(ctx, t.topo.control(), "", msg))
}

// Catalog lists the tasks that servers have announced, with how many
// servers offer each. Right after Open it first waits up to LookupTimeout
// for the servers' first announcements.
func (t *Transport) Catalog(ctx context.Context) ([]wire.TaskInfo, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.cat.settle(ctx, t.cfg.LookupTimeout); err != nil {
		return nil, err
	}
	infos := t.cat.list(time.Now())
	// A task whose servers are gone is listed while its queue exists;
	// when the broker cannot tell soon, it stays listed.
	qctx, cancel := context.WithTimeout(ctx, t.cfg.LookupTimeout)
	defer cancel()
	return slices.DeleteFunc(infos, func(ti wire.TaskInfo) bool {
		if ti.Servers > 0 {
			return false
		}
		exists, err := t.queueExists(qctx, ti.Name)
		if err == nil && !exists {
			t.cat.forget(ti.Name)
		}
		return err == nil && !exists
	}), nil
}

// How long what the broker said of a task queue holds without asking
// again: that it exists, that it does not.
const (
	queueMemory   = 30 * time.Second
	noQueueMemory = 2 * time.Second
)

// queueCheckTimeout bounds one question to the broker about a task queue.
const queueCheckTimeout = 10 * time.Second

// queueState is what the broker last said of a task queue, and when.
type queueState struct {
	exists bool
	at     time.Time
}

// offered returns nil when requests for task can be sent: a live server
// offers it, or its durable queue exists, where requests wait for the next
// server (every server of the task is gone for now: a rolling restart, a
// crash). Otherwise it returns "task_not_found", or "unavailable" when the
// broker cannot tell before ctx ends.
func (t *Transport) offered(ctx context.Context, task string) error {
	if t.cat.offers(task, time.Now()) {
		return nil
	}
	if exists, known := t.queueKnown(task); known && exists {
		return nil
	}
	err := t.cat.lookup(ctx, task, t.cfg.LookupTimeout, t.query)
	var e *wire.Error
	if !errors.As(err, &e) || e.Code != wire.CodeTaskNotFound {
		return err
	}
	exists, err := t.queueExists(ctx, task)
	switch {
	case err != nil:
		return err
	case !exists:
		return e
	}
	return nil
}

// queueKnown returns what the broker said of task's queue, if it said so
// recently enough.
func (t *Transport) queueKnown(task string) (exists, known bool) {
	v, ok := t.queues.Load(task)
	if !ok {
		return false, false
	}
	q := v.(queueState)
	memory := noQueueMemory
	if q.exists {
		memory = queueMemory
	}
	return q.exists, time.Since(q.at) < memory
}

// queueExists reports whether task's queue exists on the broker (a
// passive declare), unless the broker said so recently. Concurrent
// questions about one queue share one declare; ctx bounds the wait.
func (t *Transport) queueExists(ctx context.Context, task string) (bool, error) {
	if exists, known := t.queueKnown(task); known {
		return exists, nil
	}
	answer := t.queueChecks.DoChan(task, func() (any, error) {
		cctx, cancel := context.WithTimeout(t.stopCtx, queueCheckTimeout)
		defer cancel()
		g, err := t.waitOpen(cctx)
		if err != nil {
			return false, err
		}
		exists, err := g.queueExists(t.topo.taskQueue(task))
		if err == nil {
			t.queues.Store(task, queueState{exists, time.Now()})
		}
		return exists, err
	})
	select {
	case a := <-answer:
		if a.Err != nil {
			return false, a.Err
		}
		return a.Val.(bool), nil
	case <-ctx.Done():
		return false, notNow(ctx, "the broker did not say whether task "+task+" has a queue")
	}
}

// Unserve stops serving for good, as steps 2 to 5 of Close; the
// transport goes on carrying this process's calls.
func (t *Transport) Unserve(ctx context.Context) error {
	t.setupMu.Lock() // so that a Serve in progress completes first
	srv := t.serving()
	t.setupMu.Unlock()
	if srv == nil {
		return nil
	}
	return t.unserve(ctx, srv)
}

// unserve does steps 2 to 5 of Close, once; later calls do nothing.
func (t *Transport) unserve(ctx context.Context, srv *server) (err error) {
	srv.unserveOnce.Do(func() {
		t.stopServing(srv)
		err = t.drain(ctx, srv)
		t.endLeases(srv)
	})
	return err
}

// Close stops serving and disconnects. Shutdown order:
//  1. Send, Cancel and Serve start failing with "unavailable".
//  2. Serving stops (unless Unserve did it): every task and dead-letter consumer is cancelled
//     (basic.cancel), callers are told this server leaves; a delivery that
//     still arrives is returned to its queue unstarted.
//  3. Running handlers may finish and have their replies confirmed until
//     ctx ends.
//  4. The deliveries of handlers still running are returned to their queues
//     as fresh copies (so the return does not count towards DeliveryLimit),
//     then the handlers' contexts are cancelled and Close waits for them to
//     return.
//  5. Servers are told that the lease copies still parked naming this
//     server are void (lease-gone): it settled or gave back their requests.
//  6. Without Identity, the reply queue is deleted (replies still on their
//     way are lost with it; with Identity they wait for the next process).
//  7. The supervisor closes the connection and waits for the goroutines of
//     the last generation (consumers, slot manager, announcer, watcher).
//  8. Calls still waiting for a reply get a final "unavailable" reply; no
//     reply is delivered after Close returns.
//
// Close returns ctx's error when it had to cancel running handlers.
func (t *Transport) Close(ctx context.Context) error {
	t.setupMu.Lock() // so that a Serve in progress completes first
	t.mu.Lock()
	wasOpen := t.opened && !t.closed
	t.closed = true
	srv := t.srv
	t.mu.Unlock()
	t.setupMu.Unlock()
	if !wasOpen {
		return nil
	}

	var err error
	if srv != nil {
		err = t.unserve(ctx, srv)
	}
	if t.cfg.Identity == "" && t.hist == nil {
		t.deleteReplyQueue()
	}
	t.kill()
	t.stop()
	t.wg.Wait()
	t.background.Wait() // their connection has closed: each has ended or fails its call now

	t.failInflight("transport closed before the reply arrived")
	return err
}

// deleteReplyQueue deletes the reply queue of a transport without
// Identity, if connected; otherwise x-expires deletes it later.
func (t *Transport) deleteReplyQueue() {
	g := t.current()
	if g == nil {
		return
	}
	ch, err := openChannel(g.conn, "delete")
	if err == nil {
		_, err = ch.QueueDelete(t.replyQueue(), false, false, false)
		_ = ch.Close()
	}
	if err != nil {
		t.log.Warn("amqp: delete reply queue", "queue", t.replyQueue(), "err", err)
	}
}

// replyQueue returns the name of the reply queue.
func (t *Transport) replyQueue() string { return *t.replyQ.Load() }

// replaceReplyQueue gives the transport a reply queue of a new name: the
// old one's node does not answer (cut off from the rest of the cluster,
// which has not yet declared it down), and anything touching the old
// queue would wait for it. The old queue expires once its node is back.
func (t *Transport) replaceReplyQueue() {
	name := t.topo.replyQueue(randomID())
	t.replyQ.Store(&name)
	t.replyReplaced.Store(true)
}

func (t *Transport) track(id string, runAt time.Time) {
	t.mu.Lock()
	t.inflight.Set(id, runAt)
	t.mu.Unlock()
}

// untrack stops tracking invocation id and reports whether it was
// tracked: of the goroutines that end a call, only the one that untracks
// it delivers its outcome.
func (t *Transport) untrack(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.inflight.Get(id)
	t.inflight.Delete(id)
	return ok
}

// received passes a reply to the router.
func (t *Transport) received(r *wire.Reply) {
	if r.State.Final() {
		t.untrack(r.ID)
	}
	t.deliver(r)
}

// failInflight ends every call waiting for a reply with a retryable
// "unavailable" error: the transport closed, or the reply queue was lost
// with the replies in it.
func (t *Transport) failInflight(why string) {
	t.mu.Lock()
	ids := make([]string, 0, t.inflight.Len())
	later := map[string]bool{}
	for id, runAt := range t.inflight.All {
		ids = append(ids, id)
		later[id] = !runAt.IsZero()
	}
	t.inflight = shrink.Map[string, time.Time]{}
	t.mu.Unlock()
	for _, id := range ids {
		e := unavailable(why)
		if later[id] { // it may still run at its time: calling again would run it twice
			e = &wire.Error{Code: wire.CodeUnavailable, Message: why + "; the delayed call may still run at its time, its outcome unseen"}
		}
		t.deliver(failure(id, "", "", e))
	}
}

// current returns the live generation, or nil while reconnecting.
func (t *Transport) current() *generation {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen == nil || t.gen.isDone() {
		return nil
	}
	return t.gen
}

func (t *Transport) setGen(g *generation) {
	t.mu.Lock()
	t.gen = g
	close(t.genChanged)
	t.genChanged = make(chan struct{})
	t.mu.Unlock()
}

// waitGen returns the live generation, waiting for a reconnect if needed.
func (t *Transport) waitGen(ctx context.Context) (*generation, error) {
	for {
		t.mu.Lock()
		g, changed := t.gen, t.genChanged
		t.mu.Unlock()
		if g != nil && !g.isDone() {
			return g, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, notNow(ctx, "not connected to the broker")
		case <-t.stopCtx.Done():
			return nil, unavailable("transport closed")
		}
	}
}

// waitOpen returns the live generation once the broker does not block it,
// waiting for a reconnect or the end of a block if needed: what is
// published on it then reaches the broker.
func (t *Transport) waitOpen(ctx context.Context) (*generation, error) {
	for {
		g, err := t.waitGen(ctx)
		if err != nil {
			return nil, err
		}
		reason, unblocked := g.blocked()
		if unblocked == nil {
			return g, nil
		}
		select {
		case <-unblocked:
		case <-g.done:
		case <-ctx.Done():
			return nil, notNow(ctx, "the broker blocks publishing ("+reason+")")
		case <-t.stopCtx.Done():
			return nil, unavailable("transport closed")
		}
	}
}

// notNow is the error of an operation whose ctx ended while it waited for
// the broker: "unavailable" (retryable) saying why, unless the caller
// cancelled it.
func notNow(ctx context.Context, why string) error {
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return ctx.Err()
	}
	return unavailable("amqp: " + why)
}

// Check implements wire.Checker: nil while the transport is connected and
// the broker does not block it, else a retryable "unavailable" error
// saying which.
func (t *Transport) Check(context.Context) error {
	if err := t.usable(); err != nil {
		return err
	}
	g := t.current()
	if g == nil {
		return unavailable("amqp: not connected to the broker; reconnecting")
	}
	if reason, unblocked := g.blocked(); unblocked != nil {
		return unavailable("amqp: the broker blocks publishing (" + reason + ")")
	}
	return t.historyReady()
}

// publish publishes msg and waits for the broker's confirm. When the
// connection is lost before the confirm, it publishes again on the next
// one, until ctx ends: duplicates are harmless, losses are not.
// Goroutines of a generation must not call it (they would wait for the
// next generation, which waits for them); they use generation.publish.
func (t *Transport) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	for tried := false; ; tried = true {
		g, err := t.waitOpen(ctx)
		if err != nil && tried {
			return maybeSent(err) // an earlier connection may have taken it
		}
		if err != nil {
			return err
		}
		err = g.publish(ctx, exchange, key, msg)
		if !errors.Is(err, errGenerationLost) {
			return err
		}
	}
}

// query asks every server to announce its tasks now.
func (t *Transport) query() {
	if g := t.current(); g != nil {
		g.control(typeQuery, struct{}{})
	}
}

// kick wakes the current generation's slot manager.
func (t *Transport) kick() {
	if g := t.current(); g != nil {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
}

// supervise owns the connection: it waits for the generation to end,
// then reconnects with exponential backoff (100ms doubling to 5s, with
// jitter) until it succeeds or Close stops it. Each new generation
// declares the topology again, checks that the reply queue survived (if
// not, calls waiting for replies fail with "unavailable"), resumes
// consuming replies and control messages, and, when serving, redeclares
// the task queues and opens their consumers. Handlers of the
// old generation keep running; their replies are published on the new
// connection, and their acks are skipped (the broker has already returned
// those deliveries to their queues, so they will run again: at least once).
func (t *Transport) supervise(g *generation) {
	defer t.wg.Done()
	for {
		select {
		case <-g.done:
		case <-t.stopCtx.Done():
		}
		t.mu.Lock()
		if t.gen == g {
			t.gen = nil
			close(t.genChanged)
			t.genChanged = make(chan struct{})
		}
		t.mu.Unlock()
		_ = g.conn.Close()
		g.wg.Wait()
		if t.stopCtx.Err() != nil {
			return
		}
		t.log.Warn("amqp: connection lost; reconnecting", "err", g.cause())
		if g = t.reconnect(); g == nil {
			return
		}
		t.log.Info("amqp: reconnected", "url", redacted(g.url))
		t.cfg.Metrics.Reconnected(t.cfg.Namespace)
	}
}

// reconnect dials until it has a new generation, or returns nil when Close
// stops it.
func (t *Transport) reconnect() *generation {
	delay := minBackoff
	for {
		g, err := t.connect(t.stopCtx, false)
		if err == nil {
			return g
		}
		t.log.Warn("amqp: reconnect failed", "err", err, "retry_in", delay)
		timer := time.NewTimer(delay/2 + time.Duration(randomUint64()%uint64(delay)))
		select {
		case <-timer.C:
		case <-t.stopCtx.Done():
			timer.Stop()
			return nil
		}
		delay = min(2*delay, maxBackoff)
	}
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// dialer dials the broker until ctx ends, with the handshake deadline
// amqp091-go expects its Dial functions to set (it clears it once open).
func dialer(ctx context.Context) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
}
