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
	active    map[*delivery]struct{} // deliveries whose goroutine runs
	cancelled recentIDs
	leases    map[string]*leaseRecord // invocations whose lease copies may name this server
	gone      map[leaseKey]time.Time  // other servers' lease-gone broadcasts, kept until then
	wg        sync.WaitGroup          // deliveries being run; Add only while !stopping, under mu
	runq      chan *delivery          // to an idle runner (see Transport.runner)

	unserveOnce sync.Once // see Transport.unserve
}

// taskQueue is one served task's queue and its consumers.
//
// Consumers and slots. RabbitMQ 3.10.8, checked against the broker:
//   - basic.qos with global=false sets the prefetch of consumers created
//     after it on the channel; an existing consumer keeps the prefetch it
//     started with (qos 1, consume, qos 5: the consumer still gets one
//     message at a time; a consumer created after the qos 5 gets five).
//   - basic.qos with global=true on a channel that then consumes from a
//     quorum queue is refused with a connection error, 540 NOT_IMPLEMENTED
//     "queue ... does not support global qos".
//   - basic.cancel leaves the consumer's unacknowledged deliveries with the
//     channel: they can still be acked, and return to the queue only if the
//     channel closes first.
//   - x-delivery-count counts every return: a nack with requeue, a closed
//     channel or a dead connection alike; the message is dead-lettered when
//     it would exceed x-delivery-limit. Republishing a copy and acking the
//     original starts the count again.
//
// So a queue's credit (how many unacknowledged deliveries the broker lets
// this process hold) changes only by whole consumers. Per connection, each
// task queue has one base consumer, opened at Serve with prefetch Slots
// (basic.qos(Slots) right before its basic.consume), which lives as long as
// the connection; and extra consumers with prefetch E (extraPrefetch), one
// per E held deliveries that are suspended, rounded up. The credit is then
// at least Slots plus the suspended held deliveries: the held deliveries
// that are not suspended never exceed Slots+E-1 (exactly Slots when E is
// 1), and a suspended parent never keeps its children out, since its
// suspension brought in the credit for one more delivery. In the steady
// state, with no parent awaiting children, a queue has exactly one
// consumer, however large Slots is.
//
// Suspend and Resume must not block; they count and kick the slot manager,
// which opens extra consumers as suspensions need them and cancels idle
// extras beyond what the suspended deliveries need. When every extra holds a
// delivery, the debt is paid by the next extra whose delivery settles: it
// is cancelled just before that delivery is acknowledged (basic.cancel,
// then basic.ack, on the same channel, so the broker sends the retired
// consumer nothing more). Until then the bound is exceeded by the debt. A
// delivery already on its way to a consumer being cancelled is handled
// anyway: returning it would count against its delivery limit.
//
// A delivery stops being held when it is acknowledged, given back, or
// converted into a lease (see lease.go), and when its connection ends: the
// broker then returns it to its queue, while its handler may run on. Such
// handlers count against no credit; the router bounds how many handlers
// compute at once anyway (a worker passes its concurrency as Slots).
//
// Slots are per task queue because quorum queues have no shared prefetch.
// A process serving n tasks may hold up to n*Slots requests while the
// router computes at most its concurrency of them; if the process crashes,
// the requests it held count a delivery each, even those that never ran.
type taskQueue struct {
	task, name string

	mu        sync.Mutex
	consumers map[*consumer]struct{} // consumers of any generation, until ended and settled
	seq       int
}

// consumer is one consumer on a task queue: the base consumer or an extra.
type consumer struct {
	tag       string
	g         *generation
	base      bool // prefetch Slots; otherwise an extra, prefetch extraPrefetch
	held      int  // deliveries held: taken and not yet acked, leased or given back
	suspended int  // of those, the suspended ones
	cancelled bool // basic.cancel sent or about to be, or the broker ended it
	ended     bool // its delivery channel closed
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
	started   bool        // the handler was called
	leased    bool        // converted into a lease: acknowledged, a copy parked
	settled   bool        // its outcome was published (or, once leased, given back)
	abandoned bool        // Close gave it back; its outcome must not be published
	finishing bool        // Close must not give it back: the handler returned, or a lease copy is being settled
	outcome   *wire.Reply // once finishing, the final reply being published
	also      []string    // reply queues of processes that adopted it (see Adopt), besides the caller's

	// Guarded by q.mu.
	suspended bool
	held      bool // counted in c.held
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
	srv := &server{
		h:      h,
		active: map[*delivery]struct{}{},
		leases: map[string]*leaseRecord{},
		gone:   map[leaseKey]time.Time{},
		runq:   make(chan *delivery),
	}
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
// manager (which opens the base consumers), the dead-letter consumer and
// the announcer.
func (g *generation) serve(srv *server) error {
	t := g.t
	ch, err := openChannel(g.conn, "declare")
	if err != nil {
		return err
	}
	defer ch.Close()
	g.declareJournal()
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
	if err := declareDue(ch, t.topo); err != nil {
		return err
	}
	if err := g.followCancels(); err != nil { // before any due request moves on; it follows on anyway
		t.log.Warn("amqp: read the stream of cancels: a delayed call cancelled before every server restarted may run", "err", err)
	}
	due, dueCh, err := g.consumeDueQueue()
	if err != nil {
		return err
	}
	g.slotMu.Lock()
	defer g.slotMu.Unlock()
	if err := g.qos(1); err != nil {
		return err
	}
	g.deadTag = "dead/" + t.id
	dead, err := g.work.Consume(t.topo.dead(), g.deadTag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("amqp: consume %s: %w", t.topo.dead(), err)
	}
	g.srv.Store(srv)
	g.wg.Add(4)
	go g.consumeDead(dead)
	go g.consumeDue(dueCh, due)
	go g.manageSlots(srv)
	go g.announceLoop(srv)
	select {
	case g.kick <- struct{}{}:
	default:
	}
	return nil
}

// qos sets the prefetch of the consumers opened next on the work channel,
// unless it is set already. g.slotMu must be held.
func (g *generation) qos(prefetch int) error {
	if g.prefetch == prefetch {
		return nil
	}
	if err := g.work.Qos(prefetch, 0, false); err != nil {
		return fmt.Errorf("amqp: qos %d: %w", prefetch, err)
	}
	g.prefetch = prefetch
	return nil
}

// manageSlots keeps each task queue's consumers as the comment on
// taskQueue says, whenever something kicks it.
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

// extrasLocked returns how many extra consumers q wants on g (one per
// suspended held delivery) and how many are open. q.mu must be held.
func (q *taskQueue) extrasLocked(g *generation) (want, open int) {
	for c := range q.consumers {
		if c.g != g {
			continue
		}
		want += c.suspended
		if !c.base && !c.cancelled {
			open++
		}
	}
	e := g.t.cfg.extraPrefetch()
	return (want + e - 1) / e, open
}

// reconcile opens q's base consumer if it has none, and opens or cancels
// extra consumers so that they match the suspended held deliveries (as far
// as idle extras allow). g.slotMu must be held.
func (g *generation) reconcile(srv *server, q *taskQueue) error {
	srv.mu.Lock()
	stopping := srv.stopping
	srv.mu.Unlock()
	if stopping {
		return nil
	}

	q.mu.Lock()
	want, open := q.extrasLocked(g)
	hasBase := false
	var idle []*consumer
	for c := range q.consumers {
		switch {
		case c.g != g || c.cancelled:
		case c.base:
			hasBase = true
		case c.held == 0:
			idle = append(idle, c)
		}
	}
	cancel := idle[:max(0, min(open-want, len(idle)))]
	for _, c := range cancel {
		c.cancelled = true
	}
	var opens []*consumer
	if !hasBase {
		opens = append(opens, q.newConsumerLocked(g, true))
	}
	for range want - open {
		opens = append(opens, q.newConsumerLocked(g, false))
	}
	q.mu.Unlock()

	for _, c := range cancel {
		if err := g.work.Cancel(c.tag, false); err != nil {
			return fmt.Errorf("amqp: cancel consumer %s: %w", c.tag, err)
		}
	}
	for i, c := range opens {
		prefetch := g.t.cfg.extraPrefetch()
		if c.base {
			prefetch = g.t.cfg.Slots
		}
		err := g.qos(prefetch)
		var deliveries <-chan amqp.Delivery
		if err == nil {
			deliveries, err = g.work.Consume(q.name, c.tag, false, false, false, false, nil)
			if err != nil {
				err = fmt.Errorf("amqp: consume %s: %w", q.name, err)
			}
		}
		if err != nil {
			q.mu.Lock()
			for _, c := range opens[i:] {
				delete(q.consumers, c)
			}
			q.mu.Unlock()
			return err
		}
		g.wg.Add(1)
		go g.consumeTask(srv, q, c, deliveries)
	}
	return nil
}

// newConsumerLocked adds a consumer of g to q, not yet opened. q.mu must be held.
func (q *taskQueue) newConsumerLocked(g *generation, base bool) *consumer {
	q.seq++
	kind := "extra"
	if base {
		kind = "base"
	}
	c := &consumer{tag: fmt.Sprintf("%s/%s/%s/%d", g.t.id, q.task, kind, q.seq), g: g, base: base}
	q.consumers[c] = struct{}{}
	return c
}

// consumeTask takes the deliveries of one consumer.
func (g *generation) consumeTask(srv *server, q *taskQueue, c *consumer, deliveries <-chan amqp.Delivery) {
	defer g.wg.Done()
	for m := range deliveries {
		g.t.take(g, srv, q, c, m)
	}
	q.mu.Lock()
	c.cancelled, c.ended = true, true
	if c.held == 0 {
		delete(q.consumers, c)
	}
	q.mu.Unlock()
	g.t.kick() // in case the broker cancelled it (say, the queue was deleted)
}

// take starts handling m, or gives it back when serving has stopped.
func (t *Transport) take(g *generation, srv *server, q *taskQueue, c *consumer, m amqp.Delivery) {
	d := &delivery{t: t, srv: srv, q: q, c: c, g: g, msg: m, id: messageID(&m)}
	q.mu.Lock()
	c.held++
	d.held = true
	q.mu.Unlock()
	srv.mu.Lock()
	if srv.stopping {
		srv.mu.Unlock()
		t.giveBack(d)
		d.release()
		return
	}
	srv.active[d] = struct{}{}
	srv.wg.Add(1)
	srv.mu.Unlock()
	select {
	case srv.runq <- d: // an idle runner takes it
	default:
		t.wg.Add(1)
		go t.runner(srv, d)
	}
}

// runnerIdle is how long a runner waits for another delivery before it
// ends.
const runnerIdle = time.Second

// runner runs d, then the deliveries handed to it while it waits idle,
// until it has waited runnerIdle or the transport closes. Reusing
// goroutines keeps their grown stacks: a new goroutine per delivery copied
// its stack, as it grew, on every delivery (a sixth of a worker's CPU in
// the fib benchmark).
func (t *Transport) runner(srv *server, d *delivery) {
	defer t.wg.Done()
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	for {
		t.run(d)
		d = nil // not kept while idle
		idle.Reset(runnerIdle)
		select {
		case d = <-srv.runq:
		case <-idle.C:
			return
		case <-t.killCtx.Done():
			return
		}
	}
}

// run handles one delivery and settles it: the reply is published and
// confirmed first, the request acknowledged after. A lease copy is first
// examined (see examineLease) and runs only when the server that leased
// it is gone without an outcome. A delivery held for LeaseAfter while its
// handler runs is converted into a lease (see lease), so that the broker's
// consumer_timeout never closes the channel under a long task; its reply
// is then published as usual, with nothing left to acknowledge.
func (t *Transport) run(d *delivery) {
	srv := d.srv
	defer srv.wg.Done()
	defer func() {
		srv.mu.Lock()
		delete(srv.active, d)
		srv.mu.Unlock()
	}()
	defer d.release()

	if holder, ok := headerString(d.msg.Headers, headerLeaseHolder); ok && !t.examineLease(d, holder) {
		return
	}
	rep := t.handle(d)
	final := rep != nil && rep.State.Final()
	var msg amqp.Publishing
	var err error
	if final {
		msg, err = replyPublishing(rep, time.Now())
	}
	srv.mu.Lock()
	abandoned, leased := d.abandoned, d.leased
	d.finishing = true
	if final && err == nil {
		d.outcome = rep
		d.finalRoutingLocked(&msg, rep)
	}
	srv.mu.Unlock()
	if abandoned {
		return
	}
	log := t.log.With(d.logAttrs()...)
	if rep != nil && !final {
		d.Notify(rep) // a retry is confirmed in its queue (see Retry): this attempt is settled
	}
	if final {
		if err == nil {
			err = t.publish(t.killCtx, "", d.msg.ReplyTo, msg)
		}
		if err != nil {
			// Left unacknowledged: the broker redelivers it when the
			// connection closes. Once leased, the lease copy does.
			log.Error("amqp: publish reply", "err", err)
			if leased {
				srv.unsettle(d.id)
			}
			return
		}
	}
	srv.mu.Lock()
	d.settled = true
	srv.mu.Unlock()
	if leased {
		return
	}
	if err := d.settle(ack); err != nil && !d.g.isDone() {
		log.Warn("amqp: ack", "err", err)
	}
}

// handle runs the handler for d, unless the request cannot or need not
// run, and returns the reply to publish (nil when it cannot be answered,
// or when Close gave it back before it started).
func (t *Transport) handle(d *delivery) *wire.Reply {
	srv := d.srv
	req, bad := decodeRequest(&d.msg, t.cfg.Namespace, d.q.task)
	if req.ReplyTo == "" || req.ID == "" {
		t.log.Warn("amqp: dropped request that cannot be answered (no reply_to or message_id)", d.logAttrs()...)
		return nil
	}
	fail := func(e *wire.Error) *wire.Reply { return failure(req.ID, req.Task, req.Codec, e) }
	// Retries and runs given back by a graceful stop are not failed deliveries.
	deliveries := req.Attempt - headerInt(d.msg.Headers, headerRetries) - headerInt(d.msg.Headers, headerGivenBack)
	if deliveries > 1 {
		t.cfg.Metrics.Redelivered(t.cfg.Namespace, d.q.task)
	}
	switch {
	case bad != nil:
		return fail(bad)
	case deliveries > t.cfg.DeliveryLimit:
		t.cfg.Metrics.DeadLettered(t.cfg.Namespace, d.q.task)
		return fail(poisonError(t.cfg.DeliveryLimit))
	case !req.Deadline.IsZero() && !time.Now().Before(req.Deadline):
		return fail(&wire.Error{Code: wire.CodeTimeout, Message: "deadline passed before the request was delivered"})
	}
	ctx, cancel := context.WithCancelCause(t.killCtx)
	defer cancel(nil)
	srv.mu.Lock()
	switch {
	case d.abandoned:
		srv.mu.Unlock()
		return nil
	case srv.stopping:
		d.abandoned = true
		srv.mu.Unlock()
		t.giveBack(d)
		return nil
	case srv.cancelled.has(req.ID, time.Now()) && !req.Resent: // sent again by a re-run parent: its cancel was the earlier run's
		srv.mu.Unlock()
		return fail(errCancelled)
	}
	d.cancel = cancel
	d.started = true
	srv.mu.Unlock()
	if !req.Deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadlineCause(ctx, req.Deadline, wire.DeadlinePassed())
		defer cancelDeadline()
	}
	if err := req.AwaitRunAt(ctx); err != nil { // the ladder lets less than a rung go early; clocks differ
		return fail(wire.AsError(err))
	}
	leaseDone := make(chan struct{})
	timer := time.AfterFunc(t.cfg.LeaseAfter, func() {
		defer close(leaseDone)
		t.lease(d, req.Attempt)
	})
	rep := srv.h.Handle(ctx, req, d)
	if !timer.Stop() {
		<-leaseDone // so that run sees whether d was leased
	}
	if rep == nil {
		rep = fail(&wire.Error{Code: wire.CodeTaskFailed, Message: "handler returned no reply"})
	}
	if rep.ID == "" {
		rep.ID = req.ID
	}
	if rep.Task == "" {
		rep.Task = req.Task
	}
	return rep
}

// poisonError is the error of a request delivered more than limit times.
func poisonError(limit int) *wire.Error {
	return &wire.Error{Code: wire.CodePoison, Message: fmt.Sprintf(
		"request dead-lettered after %d deliveries that ended without an acknowledgement (crashed or disconnected workers)", limit)}
}

// ack acknowledges one delivery.
func ack(m *amqp.Delivery) error { return m.Ack(false) }

// requeue returns one delivery to its queue, counting a delivery.
func requeue(m *amqp.Delivery) error { return m.Nack(false, true) }

// settle stops counting d as held and then settles it with op (ack or
// requeue) on its own channel. When d came on an extra consumer that is no
// longer wanted (parents resumed while every extra was busy), that
// consumer is cancelled first, so that the broker sends it nothing after
// the settlement; its other deliveries stay with the channel, to be
// settled as they end. It returns an error when d's connection has ended:
// the broker has returned d to its queue already.
func (d *delivery) settle(op func(*amqp.Delivery) error) error {
	q, c, g := d.q, d.c, d.g
	q.mu.Lock()
	d.releaseLocked()
	retire := false
	if !c.base && !c.cancelled {
		if want, open := q.extrasLocked(g); open > want {
			c.cancelled, retire = true, true
		}
	}
	q.mu.Unlock()
	d.t.kick()
	if g.isDone() {
		return errGenerationLost
	}
	if retire {
		g.slotMu.Lock()
		err := g.work.Cancel(c.tag, false)
		g.slotMu.Unlock()
		if err != nil {
			return fmt.Errorf("amqp: cancel consumer %s: %w", c.tag, err)
		}
	}
	return op(&d.msg)
}

// release stops counting d as held, if it still is, and wakes the slot
// manager. It is idempotent.
func (d *delivery) release() {
	d.q.mu.Lock()
	changed := d.releaseLocked()
	d.q.mu.Unlock()
	if changed {
		d.t.kick()
	}
}

// releaseLocked stops counting d as held and reports whether it was.
// q.mu must be held.
func (d *delivery) releaseLocked() bool {
	if !d.held {
		return false
	}
	d.held = false
	c := d.c
	c.held--
	if d.suspended {
		c.suspended--
	}
	if c.ended && c.held == 0 {
		delete(d.q.consumers, c)
	}
	return true
}

// logAttrs are the attributes of every log line about d's invocation.
func (d *delivery) logAttrs() []any {
	return []any{"task", d.q.task, "invocation_id", d.id, "trace_id", traceID(&d.msg)}
}

// traceID is the trace id of the traceparent header of m, if any.
func traceID(m *amqp.Delivery) string {
	tp, _ := headerString(m.Headers, headerTraceParent)
	return wire.TraceID(tp)
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
		d.t.log.Debug("amqp: notify", append(d.logAttrs(), "err", err)...)
	}
}

// Suspend implements wire.Delivery: d stops occupying a slot, and the slot
// manager opens an extra consumer for it (see taskQueue).
func (d *delivery) Suspend() { d.setSuspended(true) }

// Resume implements wire.Delivery: d occupies a slot again, and the slot
// manager cancels an extra consumer, at once or when one becomes idle.
func (d *delivery) Resume() { d.setSuspended(false) }

func (d *delivery) setSuspended(s bool) {
	q := d.q
	q.mu.Lock()
	if d.suspended == s {
		q.mu.Unlock()
		return
	}
	d.suspended = s
	held := d.held
	if held && s {
		d.c.suspended++
	} else if held {
		d.c.suspended--
	}
	q.mu.Unlock()
	if held {
		d.t.kick()
	}
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
			t.log.Warn("amqp: dropped dead letter that cannot be answered (no reply_to or message_id)", "task", m.RoutingKey, "invocation_id", id, "trace_id", traceID(&m))
			_ = m.Ack(false)
			continue
		}
		reason, queue := lastDeath(m.Headers)
		task, ok := t.topo.taskOfQueue(queue)
		if !ok {
			task = m.RoutingKey
		}
		var e *wire.Error
		switch reason {
		case "expired":
			e = &wire.Error{Code: wire.CodeTimeout, Message: "deadline passed while the request was queued"}
		case "delivery_limit":
			e = poisonError(t.cfg.DeliveryLimit)
		default:
			e = &wire.Error{Code: wire.CodePoison, Message: "request dead-lettered: " + reason}
		}
		t.log.Warn("amqp: answering dead letter", "task", task, "invocation_id", id, "trace_id", traceID(&m), "reason", reason)
		t.cfg.Metrics.DeadLettered(t.cfg.Namespace, task)
		msg, err := replyPublishing(failure(id, task, codecOf(m.ContentType), e), time.Now())
		if err == nil {
			err = g.publish(t.killCtx, "", m.ReplyTo, msg)
		}
		if err != nil {
			if !g.isDone() {
				t.log.Error("amqp: publish dead-letter reply", "task", task, "invocation_id", id, "trace_id", traceID(&m), "err", err)
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
	a := announcement{
		Server: g.t.id, Identity: g.t.cfg.Identity, Tasks: tasks,
		TTLMs: (3 * g.t.cfg.AnnounceInterval).Milliseconds(),
	}
	if l, ok := srv.h.(wire.Loader); ok {
		a.Worker, a.Busy, a.Size = l.Load()
	}
	if d, ok := srv.h.(wire.Describer); ok {
		a.Schemas = map[string]wire.Schema{}
		for _, task := range tasks {
			if s := d.Describe(task); len(s.Input) > 0 || len(s.Output) > 0 {
				a.Schemas[task] = s
			}
		}
	}
	g.control(typeAnnounce, a)
}

// giveBack returns d's request to its task queue without counting a
// delivery: it publishes a copy (see giveBackPublishing) and acks d once
// the copy is confirmed; if that fails, d is nacked with requeue (which
// counts). On a lost connection the broker has returned d already. A
// leased d has nothing to ack: once its copy is confirmed, its lease
// copies are void; if the copy fails, they will run it again.
func (t *Transport) giveBack(d *delivery) {
	srv := d.srv
	srv.mu.Lock()
	leased, started := d.leased, d.started
	srv.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
	defer cancel()
	msg := giveBackPublishing(&d.msg, started, time.Now())
	if leased {
		err := t.publish(ctx, "", d.q.name, msg)
		if err != nil {
			t.log.Warn("amqp: give back leased request", append(d.logAttrs(), "err", err)...)
			srv.unsettle(d.id)
			return
		}
		srv.mu.Lock()
		d.settled = true
		srv.mu.Unlock()
		return
	}
	if d.g.isDone() {
		return
	}
	if err := d.g.publish(ctx, "", d.q.name, msg); err != nil {
		_ = d.settle(requeue)
		return
	}
	_ = d.settle(ack)
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
	g.dueMu.Lock()
	due := g.due
	g.dueMu.Unlock()
	if due != nil {
		if err := due.Cancel("due/"+t.id, false); err != nil {
			t.log.Warn("amqp: cancel consumer of "+t.topo.due(), "err", err)
		}
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
		if !d.finishing && !d.abandoned {
			d.abandoned = true
			back = append(back, d)
		}
	}
	srv.mu.Unlock()
	for _, d := range back {
		t.giveBack(d)
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
