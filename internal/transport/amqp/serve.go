package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

// cancelMemory is how long a server remembers a cancelled invocation id,
// so that a request cancelled while still queued is answered "cancelled"
// without running.
const cancelMemory = 10 * time.Minute

// errCancelled is the cause of a handler context cancelled by its caller.
var errCancelled = &wire.Error{Code: wire.CodeCancelled, Message: "cancelled by the caller"}

// server is the serving side of a Transport, created by Serve.
type server struct {
	h      wire.Handler
	queues []*taskQueue

	mu        sync.Mutex
	stopping  bool
	active    map[*delivery]struct{} // deliveries whose handler goroutine runs
	cancelled recentIDs
	wg        sync.WaitGroup // handler goroutines; Add only while !stopping, under mu
}

// taskQueue is one served task's queue and its slots.
//
// Slots and prefetch. RabbitMQ 3.10.8, checked against the broker:
//   - basic.qos with global=false sets the prefetch of consumers created
//     after it; an existing consumer keeps the prefetch it started with
//     (qos 1, consume, qos 5: the consumer still gets one message at a time;
//     a consumer created after the qos 5 gets five).
//   - basic.qos with global=true on a channel that then consumes from a
//     quorum queue is refused with a connection error, 540 NOT_IMPLEMENTED
//     "queue ... does not support global qos".
//   - x-delivery-count counts every return: a nack with requeue, a closed
//     channel or a dead connection alike; the message is dead-lettered when
//     it would exceed x-delivery-limit. Republishing a copy and acking the
//     original starts the count again.
//
// So prefetch cannot follow the free slots by changing qos. Instead every
// consumer has prefetch 1, and the slot manager keeps the number of idle
// consumers (those without a delivery) equal to the free slots,
// Slots - computing, where computing counts the deliveries held that are
// not suspended. A delivery that suspends frees its slot: a new consumer
// opens, so an awaited child is never stuck behind its parent. One that
// resumes takes its slot back: an idle consumer is cancelled. Resume never
// blocks, so computing may exceed Slots for a moment; no consumer opens
// until it is below again. A delivery already on its way to a consumer
// being cancelled is computed as well: returning it would count against
// its delivery limit.
//
// Slots are per task queue because quorum queues have no shared prefetch:
// a bound across several queues would have to keep a consumer with credit
// on every served queue while a slot is free (a suspended parent may await
// a child of any of them), so more deliveries than free slots could arrive
// and would sit uncomputed, prefetched; a worker crash would count them
// against their delivery limits though they never ran.
type taskQueue struct {
	task, name string

	mu        sync.Mutex
	computing int                    // deliveries held, not suspended, of any generation
	consumers map[*consumer]struct{} // open consumers, all generations
	seq       int
}

// consumer is one prefetch-1 consumer on a task queue.
type consumer struct {
	tag       string
	g         *generation
	busy      bool // holds a delivery
	cancelled bool // basic.cancel sent or about to be
}

// delivery is one request being handled; it implements wire.Delivery.
type delivery struct {
	t   *Transport
	srv *server
	q   *taskQueue
	c   *consumer
	g   *generation
	msg amqp.Delivery
	id  string

	// Guarded by srv.mu.
	cancel    context.CancelCauseFunc
	abandoned bool // Close gave it back; its outcome must not be published
	finishing bool // the handler returned; its reply is being published

	// Guarded by q.mu.
	suspended bool
	released  bool
}

// serving returns t's server, or nil before Serve.
func (t *Transport) serving() *server {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.srv
}

// Serve starts serving tasks with h: it declares each task's queue (a
// durable quorum queue, see docs/PROTOCOL.md), starts consuming it with up
// to Slots requests computing at once, answers dead-lettered requests of
// the namespace, and announces the tasks to callers. Each request runs in
// its own goroutine. Serve may be called once; serving lasts until Close.
func (t *Transport) Serve(ctx context.Context, tasks []string, h wire.Handler) error {
	if err := t.usable(); err != nil {
		return err
	}
	if len(tasks) == 0 || h == nil {
		return errors.New("amqp: Serve needs tasks and a handler")
	}
	srv := &server{h: h, active: map[*delivery]struct{}{}}
	seen := map[string]bool{}
	for _, task := range tasks {
		if task == "" || seen[task] {
			return fmt.Errorf("amqp: Serve: empty or repeated task name %q", task)
		}
		if len(t.topo.taskQueue(task)) > 255 {
			return fmt.Errorf("amqp: Serve: task name %q too long for a queue name", task)
		}
		seen[task] = true
		srv.queues = append(srv.queues, &taskQueue{
			task: task, name: t.topo.taskQueue(task), consumers: map[*consumer]struct{}{},
		})
	}
	for {
		g, err := t.waitGen(ctx)
		if err != nil {
			return err
		}
		t.setupMu.Lock()
		if err := t.usable(); err != nil {
			t.setupMu.Unlock()
			return err
		}
		if t.serving() != nil {
			t.setupMu.Unlock()
			return errors.New("amqp: Serve called twice")
		}
		err = g.serve(srv)
		if err == nil {
			t.mu.Lock()
			t.srv = srv
			t.mu.Unlock()
		}
		t.setupMu.Unlock()
		if err == nil || !g.isDone() {
			return err
		}
		// The connection ended under us; the next one will serve.
	}
}

// serve declares the task queues on g and starts serving on it: the slot
// manager, the dead-letter consumer and the announcer.
func (g *generation) serve(srv *server) error {
	t := g.t
	ch, err := openChannel(g.conn, "declare")
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, q := range srv.queues {
		if _, err := ch.QueueDeclare(q.name, true, false, false, false, taskQueueArgs(t.topo, t.cfg.DeliveryLimit)); err != nil {
			return fmt.Errorf("amqp: declare %s: %w", q.name, err)
		}
		if err := ch.QueueBind(q.name, q.task, t.topo.tasks(), false, nil); err != nil {
			return fmt.Errorf("amqp: bind %s: %w", q.name, err)
		}
	}
	srv.mu.Lock()
	stopping := srv.stopping
	srv.mu.Unlock()
	if stopping {
		return nil
	}
	g.slotMu.Lock()
	defer g.slotMu.Unlock()
	g.deadTag = "dead/" + t.id
	dead, err := g.work.Consume(t.topo.dead(), g.deadTag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("amqp: consume %s: %w", t.topo.dead(), err)
	}
	g.srv.Store(srv)
	g.wg.Add(3)
	go g.consumeDead(dead)
	go g.manageSlots(srv)
	go g.announceLoop(srv)
	select {
	case g.kick <- struct{}{}:
	default:
	}
	return nil
}

// manageSlots keeps each task queue's idle consumers equal to its free
// slots, whenever something kicks it.
func (g *generation) manageSlots(srv *server) {
	defer g.wg.Done()
	for {
		select {
		case <-g.done:
			return
		case <-g.kick:
		}
		g.slotMu.Lock()
		for _, q := range srv.queues {
			if err := g.reconcile(srv, q); err != nil {
				if !g.isDone() {
					g.t.log.Error("amqp: adjust consumers", "task", q.task, "err", err)
				}
				break
			}
		}
		g.slotMu.Unlock()
	}
}

// reconcile opens or cancels consumers on q so that the idle ones match
// the free slots. g.slotMu must be held.
func (g *generation) reconcile(srv *server, q *taskQueue) error {
	srv.mu.Lock()
	stopping := srv.stopping
	srv.mu.Unlock()

	q.mu.Lock()
	want := 0
	if !stopping {
		want = max(0, g.t.cfg.Slots-q.computing)
	}
	var idle []*consumer
	for c := range q.consumers {
		if c.g == g && !c.busy && !c.cancelled {
			idle = append(idle, c)
		}
	}
	var cancel, open []*consumer
	if len(idle) > want {
		cancel = idle[want:]
		for _, c := range cancel {
			c.cancelled = true
		}
	}
	for range want - len(idle) {
		q.seq++
		c := &consumer{tag: fmt.Sprintf("%s/%s/%d", g.t.id, q.task, q.seq), g: g}
		q.consumers[c] = struct{}{}
		open = append(open, c)
	}
	q.mu.Unlock()

	for _, c := range cancel {
		if err := g.work.Cancel(c.tag, false); err != nil {
			return fmt.Errorf("amqp: cancel consumer %s: %w", c.tag, err)
		}
	}
	for i, c := range open {
		deliveries, err := g.work.Consume(q.name, c.tag, false, false, false, false, nil)
		if err != nil {
			q.mu.Lock()
			for _, c := range open[i:] {
				delete(q.consumers, c)
			}
			q.mu.Unlock()
			return fmt.Errorf("amqp: consume %s: %w", q.name, err)
		}
		g.wg.Add(1)
		go g.consumeTask(srv, q, c, deliveries)
	}
	return nil
}

// consumeTask takes the deliveries of one consumer.
func (g *generation) consumeTask(srv *server, q *taskQueue, c *consumer, deliveries <-chan amqp.Delivery) {
	defer g.wg.Done()
	for m := range deliveries {
		g.t.take(g, srv, q, c, m)
	}
	q.mu.Lock()
	delete(q.consumers, c)
	q.mu.Unlock()
	g.t.kick() // in case the broker cancelled it (say, the queue was deleted)
}

// take starts handling m, or gives it back when serving has stopped.
func (t *Transport) take(g *generation, srv *server, q *taskQueue, c *consumer, m amqp.Delivery) {
	q.mu.Lock()
	c.busy = true
	q.computing++
	q.mu.Unlock()
	d := &delivery{t: t, srv: srv, q: q, c: c, g: g, msg: m, id: messageID(&m)}
	srv.mu.Lock()
	if srv.stopping {
		srv.mu.Unlock()
		g.giveBack(&d.msg, q.name)
		d.release()
		return
	}
	srv.active[d] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()
	go t.run(d)
}

// run handles one delivery and settles it: the reply is published and
// confirmed first, the request acknowledged after.
//
// Not handled yet: tasks running longer than the broker's consumer_timeout
// (30 minutes by default). When a delivery stays unacknowledged that long,
// RabbitMQ closes the channel (406 PRECONDITION_FAILED), which ends this
// generation: every delivery on the channel returns to its queue, counted,
// the long task starts again elsewhere, and after DeliveryLimit rounds it
// is dead-lettered as poison although nothing crashed. On 3.10.8 the
// timeout is node-wide only (the x-consumer-timeout queue argument and
// policy key came in 3.11.15 / 3.12), so an operator can raise or disable
// it in rabbitmq.conf / advanced.config, but the transport cannot, per
// queue. A way to complete such a task exactly once on 3.10.8 with plain
// AMQP, for later:
//   - Lease: a server starting a task it expects to run long declares a
//     per-invocation lease queue (<prefix>.<ns>.lease.<id>, durable,
//     x-message-ttl = lease period, dead-lettering to the tasks exchange
//     with the task's routing key), publishes a copy of the request there,
//     waits for the confirm and only then acks the original, so that it
//     holds no delivery at all while computing. It renews the lease within
//     the period by publishing a fresh copy (confirmed) and then taking and
//     acking the older one (basic.get returns the oldest first), so there is
//     never a moment without a copy. A crashed worker stops renewing, the
//     copy expires and dead-letters back into the task queue: it runs again,
//     as with any crash. On completion the server publishes the reply, waits
//     for the confirm, then deletes the lease queue.
//   - Exactly once: a rerun after a crash is still possible (the reply was
//     confirmed, the lease queue not yet deleted). It becomes harmless once
//     results are kept by invocation id in RabbitMQ (the stream the design
//     plans for deterministic child ids): a server first looks the id up
//     and answers from the kept result instead of running again. Callers
//     already keep only the first final reply per id.
func (t *Transport) run(d *delivery) {
	srv := d.srv
	defer srv.wg.Done()
	defer func() {
		srv.mu.Lock()
		delete(srv.active, d)
		srv.mu.Unlock()
	}()
	defer d.release()

	rep := t.handle(d)
	srv.mu.Lock()
	abandoned := d.abandoned
	d.finishing = true
	srv.mu.Unlock()
	if abandoned {
		return
	}
	log := t.log.With("task", d.q.task, "invocation_id", d.id)
	if rep != nil {
		msg, err := replyPublishing(rep, time.Now())
		if err == nil {
			err = t.publish(t.killCtx, "", d.msg.ReplyTo, msg)
		}
		if err != nil {
			// Left unacknowledged: the broker redelivers it when the
			// connection closes.
			log.Error("amqp: publish reply", "err", err)
			return
		}
	}
	d.release() // before the ack, which lets the broker deliver the next message
	if d.g.isDone() {
		return // the broker has requeued it already
	}
	if err := d.msg.Ack(false); err != nil {
		log.Warn("amqp: ack", "err", err)
	}
}

// handle runs the handler for d, unless the request cannot or need not
// run, and returns the reply to publish (nil when it cannot be answered).
func (t *Transport) handle(d *delivery) *wire.Reply {
	srv := d.srv
	req, bad := decodeRequest(&d.msg, t.cfg.Namespace, d.q.task)
	if req.ReplyTo == "" || req.ID == "" {
		t.log.Warn("amqp: dropped request that cannot be answered (no reply_to or message_id)", "task", d.q.task, "invocation_id", req.ID)
		return nil
	}
	if bad != nil {
		return failure(req.ID, req.Codec, bad)
	}
	if !req.Deadline.IsZero() && !time.Now().Before(req.Deadline) {
		return failure(req.ID, req.Codec, &wire.Error{Code: wire.CodeTimeout, Message: "deadline passed before the request was delivered"})
	}
	ctx, cancel := context.WithCancelCause(t.killCtx)
	defer cancel(nil)
	srv.mu.Lock()
	if srv.cancelled.has(req.ID, time.Now()) {
		srv.mu.Unlock()
		return failure(req.ID, req.Codec, errCancelled)
	}
	d.cancel = cancel
	srv.mu.Unlock()
	if !req.Deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, req.Deadline)
		defer cancelDeadline()
	}
	rep := srv.h.Handle(ctx, req, d)
	if rep == nil {
		rep = failure(req.ID, req.Codec, &wire.Error{Code: wire.CodeTaskFailed, Message: "handler returned no reply"})
	}
	if rep.ID == "" {
		rep.ID = req.ID
	}
	return rep
}

// release frees d's slot and its consumer's prefetch. It is idempotent.
func (d *delivery) release() {
	q := d.q
	q.mu.Lock()
	if d.released {
		q.mu.Unlock()
		return
	}
	d.released = true
	if !d.suspended {
		q.computing--
	}
	d.c.busy = false
	q.mu.Unlock()
	d.t.kick()
}

// Notify implements wire.Delivery: it publishes a state change to the
// caller without waiting for the broker's confirm.
func (d *delivery) Notify(r *wire.Reply) {
	d.srv.mu.Lock()
	abandoned := d.abandoned
	d.srv.mu.Unlock()
	g := d.t.current()
	if abandoned || g == nil {
		return
	}
	msg, err := replyPublishing(r, time.Now())
	if err == nil {
		err = g.pub.PublishWithContext(d.t.killCtx, "", d.msg.ReplyTo, false, false, msg)
	}
	if err != nil {
		d.t.log.Debug("amqp: notify", "invocation_id", d.id, "err", err)
	}
}

// Suspend implements wire.Delivery: d stops occupying a slot, and the slot
// manager opens a consumer for the freed slot.
func (d *delivery) Suspend() { d.setSuspended(true) }

// Resume implements wire.Delivery: d occupies a slot again (see taskQueue).
func (d *delivery) Resume() { d.setSuspended(false) }

func (d *delivery) setSuspended(s bool) {
	q := d.q
	q.mu.Lock()
	if d.released || d.suspended == s {
		q.mu.Unlock()
		return
	}
	d.suspended = s
	if s {
		q.computing--
	} else {
		q.computing++
	}
	q.mu.Unlock()
	d.t.kick()
}

// cancel cancels the handler running invocation id, if any, and remembers
// id so that a request for it that is still queued does not run.
func (srv *server) cancel(id string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.cancelled.add(id, time.Now())
	for d := range srv.active {
		if d.id == id && d.cancel != nil {
			d.cancel(errCancelled)
		}
	}
}

// consumeDead answers dead-lettered requests: the caller of a request that
// exhausted its delivery limit gets a "poison" error, one whose deadline
// passed in the queue a "timeout" error.
func (g *generation) consumeDead(deliveries <-chan amqp.Delivery) {
	defer g.wg.Done()
	t := g.t
	for m := range deliveries {
		id := messageID(&m)
		if id == "" || m.ReplyTo == "" {
			t.log.Warn("amqp: dropped dead letter that cannot be answered (no reply_to or message_id)", "invocation_id", id)
			_ = m.Ack(false)
			continue
		}
		reason, _ := headerString(m.Headers, headerFirstDeathReason)
		var e *wire.Error
		switch reason {
		case "expired":
			e = &wire.Error{Code: wire.CodeTimeout, Message: "deadline passed while the request was queued"}
		case "delivery_limit":
			e = &wire.Error{Code: wire.CodePoison, Message: fmt.Sprintf(
				"request dead-lettered after %d deliveries that ended without an acknowledgement (crashed or disconnected workers)",
				t.cfg.DeliveryLimit)}
		default:
			e = &wire.Error{Code: wire.CodePoison, Message: "request dead-lettered: " + reason}
		}
		t.log.Warn("amqp: answering dead letter", "invocation_id", id, "reason", reason)
		msg, err := replyPublishing(failure(id, codecOf(m.ContentType), e), time.Now())
		if err == nil {
			err = g.publish(t.killCtx, "", m.ReplyTo, msg)
		}
		if err != nil {
			if !g.isDone() {
				t.log.Error("amqp: publish dead-letter reply", "invocation_id", id, "err", err)
			}
			continue // unacknowledged: redelivered on the next connection
		}
		_ = m.Ack(false)
	}
}

// announceLoop announces the served tasks now and every AnnounceInterval.
func (g *generation) announceLoop(srv *server) {
	defer g.wg.Done()
	tick := time.NewTicker(g.t.cfg.AnnounceInterval)
	defer tick.Stop()
	for {
		g.announce(srv)
		select {
		case <-g.done:
			return
		case <-tick.C:
		}
	}
}

// announce tells callers which tasks this server offers, unless it stopped.
func (g *generation) announce(srv *server) {
	srv.mu.Lock()
	stopping := srv.stopping
	srv.mu.Unlock()
	if stopping {
		return
	}
	tasks := make([]string, len(srv.queues))
	for i, q := range srv.queues {
		tasks[i] = q.task
	}
	g.control(typeAnnounce, announcement{
		Server: g.t.id, Identity: g.t.cfg.Identity, Tasks: tasks,
		TTLMs: (3 * g.t.cfg.AnnounceInterval).Milliseconds(),
	})
}

// giveBack returns m to queue without counting a delivery: it publishes a
// copy, and acks m once the copy is confirmed. If that fails, m is nacked
// with requeue (which counts). On a lost connection the broker has
// returned m already.
func (g *generation) giveBack(m *amqp.Delivery, queue string) {
	if g.isDone() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
	defer cancel()
	if err := g.publish(ctx, "", queue, copyPublishing(m, time.Now())); err != nil {
		_ = m.Nack(false, true)
		return
	}
	_ = m.Ack(false)
}

// stopServing stops taking deliveries: it cancels every consumer of the
// current generation and tells callers this server leaves. Later
// generations do not serve.
func (t *Transport) stopServing(srv *server) {
	srv.mu.Lock()
	srv.stopping = true
	srv.mu.Unlock()
	g := t.current()
	if g == nil {
		return
	}
	g.slotMu.Lock()
	var tags []string
	if g.deadTag != "" {
		tags = append(tags, g.deadTag)
	}
	for _, q := range srv.queues {
		q.mu.Lock()
		for c := range q.consumers {
			if c.g == g && !c.cancelled {
				c.cancelled = true
				tags = append(tags, c.tag)
			}
		}
		q.mu.Unlock()
	}
	for _, tag := range tags {
		if err := g.work.Cancel(tag, false); err != nil {
			break // the connection ended: nothing left to cancel
		}
	}
	g.slotMu.Unlock()
	g.control(typeLeave, announcement{Server: t.id})
}

// drain waits until the handlers finish or ctx ends. Then it gives the
// deliveries of the handlers still running back to their queues, cancels
// their contexts and waits for them.
func (t *Transport) drain(ctx context.Context, srv *server) error {
	finished := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	srv.mu.Lock()
	var back []*delivery
	for d := range srv.active {
		if !d.finishing {
			d.abandoned = true
			back = append(back, d)
		}
	}
	srv.mu.Unlock()
	for _, d := range back {
		d.g.giveBack(&d.msg, d.q.name)
	}
	t.kill()
	<-finished
	return ctx.Err()
}

// recentIDs remembers ids for cancelMemory.
type recentIDs struct {
	at    map[string]time.Time
	order []string
}

func (r *recentIDs) add(id string, now time.Time) {
	if r.at == nil {
		r.at = map[string]time.Time{}
	}
	for len(r.order) > 0 {
		old := r.order[0]
		if now.Sub(r.at[old]) < cancelMemory {
			break
		}
		delete(r.at, old)
		r.order = r.order[1:]
	}
	if _, ok := r.at[id]; !ok {
		r.order = append(r.order, id)
	}
	r.at[id] = now
}

func (r *recentIDs) has(id string, now time.Time) bool {
	at, ok := r.at[id]
	return ok && now.Sub(at) < cancelMemory
}
