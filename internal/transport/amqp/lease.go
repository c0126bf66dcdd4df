package amqp

import (
	"context"
	"encoding/json"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Leases: how a request outlives the broker's consumer_timeout.
//
// RabbitMQ 3.10 closes a channel (406 PRECONDITION_FAILED) whose delivery
// stayed unacknowledged longer than the node-wide consumer_timeout (30
// minutes by default); the channel's deliveries return to their queues,
// counted, so a long task would start again and again until dead-lettered
// as poison. There is no per-queue timeout on 3.10 (x-consumer-timeout came
// in 3.12). So a server never holds a delivery longer than LeaseAfter:
// then, if the handler still runs, it parks a copy of the request naming
// itself as holder in the lease queue and acknowledges the delivery (see
// lease). The lease queue expires the copy after LeasePeriod, which
// dead-letters it to the tasks exchange with its routing key, the task
// name: the copy is delivered again by the task queue, to any server. That
// server examines it (see examineLease): while the holder (or any server)
// still runs the invocation, the copy is parked again; once the invocation
// is settled, it is dropped; if nobody answers for it and the holder is not
// alive, the request runs again, one attempt later. So a holder killed
// after the lease loses nothing: its request returns within LeasePeriod
// plus the query timeout and runs elsewhere.
//
// RabbitMQ 3.10.8, checked against the broker: quorum queues honour the
// per-message expiration property, but only at the head of the queue (a
// copy parked with a shorter period waits behind older ones); dead-lettering
// keeps the routing keys the copy was published with (the lease queue sets
// no x-dead-letter-routing-key) and removes the expiration property; it adds
// an x-death entry, most recent first, while x-first-death-reason keeps the
// first death (see lastDeath).
//
// A holder's word is needed because a parked copy cannot be taken back.
// When a holder closes, it can no longer answer for the copies still
// parked: it broadcasts lease-gone for the invocations it settled (or gave
// back), and every server that hears it answers for it (see endLeases).

// leaseRecord is an invocation whose lease copies may name this server.
type leaseRecord struct {
	until     time.Time // a copy naming this server may come back until then
	unsettled bool      // its outcome was neither published nor given back: answer "held"
}

// leaseKey is a holder and an invocation whose lease copies it voided.
type leaseKey struct{ holder, id string }

// leaseAnswer is an answer to a lease query.
type leaseAnswer struct {
	held   bool
	server string // with held: who runs the invocation
	task   string // of an adopted answer (see Adopt): the invocation's task
}

// queryTimeout is how long a lease query waits for an answer.
func (t *Transport) queryTimeout() time.Duration { return 2 * t.cfg.AnnounceInterval }

// leaseHorizon is how long after a copy is parked it may still be examined.
func (t *Transport) leaseHorizon() time.Duration { return t.cfg.LeasePeriod + 2*t.queryTimeout() }

// lease converts d into a lease, if its handler still runs and its
// connection lives: it parks a copy naming this server (confirmed) and then
// acknowledges d. attempt is d's attempt; the copy, if it ever runs,
// counts as the next.
func (t *Transport) lease(d *delivery, attempt int) {
	srv := d.srv
	srv.mu.Lock()
	if d.finishing || d.abandoned || d.g.isDone() {
		srv.mu.Unlock()
		return
	}
	srv.noteLeaseLocked(d.id, time.Now().Add(t.leaseHorizon()))
	srv.mu.Unlock()
	log := t.log.With(d.logAttrs()...)
	ctx, cancel := context.WithTimeout(t.killCtx, giveBackTimeout)
	defer cancel()
	if err := d.g.publish(ctx, t.topo.lease(), d.q.task, leasePublishing(&d.msg, t.id, attempt+1, t.cfg.LeasePeriod)); err != nil {
		if !d.g.isDone() {
			log.Warn("amqp: park lease copy", "err", err)
		}
		return
	}
	if err := d.settle(ack); err != nil {
		// The broker has returned d to its queue: it may run elsewhere too.
		log.Warn("amqp: ack leased request", "err", err)
		return
	}
	srv.mu.Lock()
	d.leased = true
	srv.mu.Unlock()
	log.Debug("amqp: request leased", "after", t.cfg.LeaseAfter)
}

// examineLease handles d, a lease copy that names holder, and reports
// whether it must run: only when nobody answers for it and holder is not
// alive. Otherwise it parks d again (naming whoever runs the invocation)
// or drops it (the invocation is settled), and acks it.
func (t *Transport) examineLease(d *delivery, holder string) bool {
	srv := d.srv
	now := time.Now()
	srv.mu.Lock()
	mine, held, gone := holder == t.id, srv.heldLocked(d.id), srv.goneLocked(holder, d.id, now)
	if mine && held {
		srv.noteLeaseLocked(d.id, now.Add(t.leaseHorizon()))
	}
	srv.mu.Unlock()
	switch {
	case mine:
		t.settleLease(d, held, holder)
		return false
	case gone:
		t.settleLease(d, false, "")
		return false
	}
	a, ok := t.askLease(d.g, holder, d.id)
	switch {
	case ok:
		t.settleLease(d, a.held, a.server)
	case d.g.isDone():
		// The broker has returned d to its queue; it is examined again.
	case t.cat.alive(holder, time.Now()):
		t.settleLease(d, true, holder) // alive but silent: ask again next period
	default:
		t.log.Info("amqp: lease holder gone; running the request again", append(d.logAttrs(), "holder", holder)...)
		return true
	}
	return false
}

// settleLease parks d again naming holder (when park is true; confirmed),
// then acks d, unless Close gave d back meanwhile.
func (t *Transport) settleLease(d *delivery, park bool, holder string) {
	srv := d.srv
	srv.mu.Lock()
	if d.abandoned {
		srv.mu.Unlock()
		return
	}
	d.finishing = true
	srv.mu.Unlock()
	if d.g.isDone() {
		return
	}
	if park {
		ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
		defer cancel()
		if err := d.g.publish(ctx, t.topo.lease(), d.q.task, leasePublishing(&d.msg, holder, attempt(d.msg.Headers), t.cfg.LeasePeriod)); err != nil {
			if !d.g.isDone() {
				t.log.Warn("amqp: park lease copy again", append(d.logAttrs(), "err", err)...)
				_ = d.settle(requeue)
			}
			return
		}
	}
	_ = d.settle(ack)
}

// askLease asks the servers of the namespace, through the control exchange,
// about the invocation id whose lease copy names holder, and waits up to
// queryTimeout for the first answer. It reports false without one.
func (t *Transport) askLease(g *generation, holder, id string) (leaseAnswer, bool) {
	corr, answer, forget := t.ask(1)
	defer forget()
	msg, err := controlPublishing(typeLeaseQuery, leaseNote{Holder: holder, IDs: []string{id}}, time.Now())
	if err != nil {
		return leaseAnswer{}, false
	}
	msg.ReplyTo, msg.CorrelationId = g.controlQ, corr
	if err := g.pub.Publish(t.topo.control(), "", false, false, msg); err != nil {
		return leaseAnswer{}, false
	}
	timer := time.NewTimer(t.queryTimeout())
	defer timer.Stop()
	select {
	case a := <-answer:
		return a, true
	case <-timer.C:
	case <-g.done:
	case <-t.killCtx.Done():
	}
	return leaseAnswer{}, false
}

// ask registers a query on the control exchange expecting up to n
// answers: its correlation id, the channel answered passes them to, and
// forget, which stops passing them.
func (t *Transport) ask(n int) (corr string, answer chan leaseAnswer, forget func()) {
	corr, answer = randomID(), make(chan leaseAnswer, n)
	t.mu.Lock()
	t.asks[corr] = answer
	t.mu.Unlock()
	return corr, answer, func() {
		t.mu.Lock()
		delete(t.asks, corr)
		t.mu.Unlock()
	}
}

// answered passes an answer to the query (lease or adopt) with
// correlation id corr, if it still waits.
func (t *Transport) answered(corr string, a leaseAnswer) {
	t.mu.Lock()
	answer := t.asks[corr]
	t.mu.Unlock()
	if answer != nil {
		select {
		case answer <- a:
		default: // answered already
		}
	}
}

// answerLease answers a lease query q, sent by the server whose control
// queue is replyTo: "held" if this server runs the invocation, "gone" if
// this server is the holder and does not, or heard the holder say so;
// nothing otherwise.
func (g *generation) answerLease(srv *server, q leaseNote, replyTo, corr string) {
	t := g.t
	id, now := q.IDs[0], time.Now()
	typ, holder := "", q.Holder
	srv.mu.Lock()
	switch {
	case srv.heldLocked(id):
		// The asker parks the copy again naming this server.
		typ, holder = typeLeaseHeld, t.id
		srv.noteLeaseLocked(id, now.Add(t.leaseHorizon()))
	case q.Holder == t.id || srv.goneLocked(q.Holder, id, now):
		typ = typeLeaseGone
	}
	srv.mu.Unlock()
	if typ == "" {
		return
	}
	msg, err := controlPublishing(typ, leaseNote{Holder: holder, IDs: []string{id}}, now)
	if err == nil {
		msg.CorrelationId = corr
		err = g.pub.Publish("", replyTo, false, false, msg)
	}
	if err != nil && !g.isDone() {
		t.log.Warn("amqp: answer lease query", "invocation_id", id, "err", err)
	}
}

// leaseNoteOf decodes the body of a lease message; a query must name one
// invocation.
func leaseNoteOf(m *amqp.Delivery) (leaseNote, bool) {
	var n leaseNote
	if err := json.Unmarshal(m.Body, &n); err != nil || n.Holder == "" || len(n.IDs) == 0 {
		return n, false
	}
	return n, m.Type != typeLeaseQuery || len(n.IDs) == 1
}

// endLeases tells every server, once Close has drained the handlers, that
// the lease copies still parked naming this server are void: their
// invocations were settled or given back. Invocations whose outcome could
// not be published are left out, so that their copies run them again.
func (t *Transport) endLeases(srv *server) {
	now := time.Now()
	var ids []string
	var until time.Time
	srv.mu.Lock()
	for id, r := range srv.leases {
		if r.unsettled || !now.Before(r.until) || srv.heldLocked(id) {
			continue
		}
		ids = append(ids, id)
		if r.until.After(until) {
			until = r.until
		}
	}
	srv.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	msg, err := controlPublishing(typeLeaseGone, leaseNote{Holder: t.id, IDs: ids, TTLMs: until.Sub(now).Milliseconds() + 1}, now)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
		defer cancel()
		err = t.publish(ctx, t.topo.control(), "", msg)
	}
	if err != nil {
		t.log.Warn("amqp: announce void lease copies", "invocations", len(ids), "err", err)
	}
}

// heldLocked reports whether this server runs invocation id and has not
// settled it, or failed to settle it after its lease. srv.mu must be held.
func (srv *server) heldLocked(id string) bool {
	if r := srv.leases[id]; r != nil && r.unsettled {
		return true
	}
	for d := range srv.active {
		if d.id == id && d.started && !d.abandoned && !d.settled {
			return true
		}
	}
	return false
}

// noteLeaseLocked records that a copy naming this server as holder of id
// may come back until until, and forgets records past. srv.mu must be held.
func (srv *server) noteLeaseLocked(id string, until time.Time) {
	now := time.Now()
	for k, r := range srv.leases {
		if !r.unsettled && !now.Before(r.until) {
			delete(srv.leases, k)
		}
	}
	r := srv.leases[id]
	if r == nil {
		r = &leaseRecord{}
		srv.leases[id] = r
	}
	if until.After(r.until) {
		r.until = until
	}
}

// unsettle records that the outcome of leased invocation id was neither
// published nor given back: this server keeps answering "held" for it
// while it lives, so that its lease copies run it again after it closes.
func (srv *server) unsettle(id string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.noteLeaseLocked(id, time.Now())
	srv.leases[id].unsettled = true
}

// goneLocked reports whether holder said its lease copies of id are void.
// srv.mu must be held.
func (srv *server) goneLocked(holder, id string, now time.Time) bool {
	until, ok := srv.gone[leaseKey{holder, id}]
	return ok && now.Before(until)
}

// rememberGone records a lease-gone broadcast, and forgets those past.
func (srv *server) rememberGone(n leaseNote, now time.Time) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for k, until := range srv.gone {
		if !now.Before(until) {
			delete(srv.gone, k)
		}
	}
	until := now.Add(time.Duration(n.TTLMs) * time.Millisecond)
	for _, id := range n.IDs {
		srv.gone[leaseKey{n.Holder, id}] = until
	}
}
