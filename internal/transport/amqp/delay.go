package amqp

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/atasks-go/atasks/wire"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Delayed requests (wire.Request.RunAt) wait in the broker, on a ladder
// of quorum queues per namespace, "<B>.delay.<k>", whose messages all
// expire after the same time, 0.1 s × 2^k: so they expire in order and on
// time (a per-message TTL expires only at the head of its queue, behind
// longer ones). Expired messages are dead-lettered (at least once) to the
// due exchange and queue, "<B>.due", which every server consumes: a
// message with more than a rung's time left goes to the longest rung not
// longer than what is left, others to their task's queue; then the due
// message is acknowledged. A delay takes at most one hop per rung plus
// as many of the top rung as it needs. See docs/PROTOCOL.md §15.

const (
	headerRunAt = "atasks-run-at" // RFC 3339 time before which a delayed request must not run
	headerTask  = "atasks-task"   // on a delayed request: the task whose queue it goes to when due

	delayFloor = 100 * time.Millisecond // the shortest rung; less than this left runs now
	// DelayRungs is how many rungs the ladder has: "<B>.delay.0" to
	// "<B>.delay.24"; the longest holds messages 0.1 s × 2^24, 19.4 days.
	DelayRungs = 25
)

// delayRung returns the longest rung not longer than d, or -1 when d is
// shorter than the shortest.
func delayRung(d time.Duration) int {
	if d < delayFloor {
		return -1
	}
	return min(bits.Len64(uint64(d/delayFloor))-1, DelayRungs-1)
}

// rungDelay is how long rung k holds its messages.
func rungDelay(k int) time.Duration { return delayFloor << k }

// sendLater publishes req, whose time is d away, to the rung for d.
func (t *Transport) sendLater(ctx context.Context, req *wire.Request, d time.Duration) error {
	msg := requestPublishing(req, t.replyQueue(), time.Now())
	msg.Expiration = "" // the rung's TTL; the deadline's is set when the request goes to its task's queue
	msg.Headers[headerTask] = req.Task
	return t.hop(ctx, delayRung(d), msg)
}

// hop publishes msg to rung k, declaring the ladder first if need be.
func (t *Transport) hop(ctx context.Context, k int, msg amqp.Publishing) error {
	if err := t.declareLadder(ctx); err != nil {
		return err
	}
	return t.publish(ctx, "", t.topo.delay(k), msg)
}

// declareLadder declares the due exchange and queue and every rung, on a
// channel of its own, once per connection.
func (t *Transport) declareLadder(ctx context.Context) error {
	g, err := t.waitGen(ctx)
	if err != nil {
		return err
	}
	g.ladderMu.Lock()
	defer g.ladderMu.Unlock()
	if g.ladder {
		return nil
	}
	ch, err := openChannel(g.conn, "ladder")
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := declareDue(ch, t.topo); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(t.topo.cancels(), true, false, false, false, cancelsArgs()); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", t.topo.cancels(), err)
	}
	for k := range DelayRungs {
		q := t.topo.delay(k)
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
			"x-queue-type":           "quorum",
			"x-message-ttl":          rungDelay(k).Milliseconds(),
			"x-dead-letter-exchange": t.topo.due(),
			"x-dead-letter-strategy": "at-least-once",
			"x-overflow":             "reject-publish",
		}); err != nil {
			return fmt.Errorf("amqp: declare %s: %w", q, err)
		}
	}
	g.ladder = true
	return nil
}

// declareDue declares the due exchange and queue, bound.
func declareDue(ch *amqp.Channel, n topology) error {
	if err := ch.ExchangeDeclare(n.due(), amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", n.due(), err)
	}
	if _, err := ch.QueueDeclare(n.due(), true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", n.due(), err)
	}
	if err := ch.QueueBind(n.due(), "", n.due(), false, nil); err != nil {
		return fmt.Errorf("amqp: bind %s: %w", n.due(), err)
	}
	return nil
}

// dueAtOnce is how many due requests a server moves on at once: many
// come due together, and each waits for the broker's confirms.
const dueAtOnce = 64

// consumeDueQueue starts consuming the due queue on a channel of its own.
func (g *generation) consumeDueQueue() (<-chan amqp.Delivery, *amqp.Channel, error) {
	ch, err := openChannel(g.conn, "due")
	if err != nil {
		return nil, nil, err
	}
	if err := ch.Qos(dueAtOnce, 0, false); err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("amqp: qos: %w", err)
	}
	msgs, err := ch.Consume(g.t.topo.due(), "due/"+g.t.id, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("amqp: consume %s: %w", g.t.topo.due(), err)
	}
	g.dueMu.Lock()
	g.due = ch
	g.dueMu.Unlock()
	return msgs, ch, nil
}

// consumeDue moves the requests that come out of the ladder on, up to
// dueAtOnce at a time, until the generation ends or serving stops. A
// consumer that ends alone (the broker cancelled it) is opened again.
func (g *generation) consumeDue(ch *amqp.Channel, msgs <-chan amqp.Delivery) {
	defer g.wg.Done()
	var moving sync.WaitGroup
	defer moving.Wait()
	for {
		for m := range orClosed(msgs) {
			moving.Go(func() { g.moveOne(&m) })
		}
		if g.ended(time.Second) || g.stopping() {
			return
		}
		if ch != nil {
			_ = ch.Close()
		}
		var err error
		if msgs, ch, err = g.consumeDueQueue(); err != nil {
			g.t.log.Warn("amqp: consume the due queue again", "err", err)
		}
	}
}

// orClosed is msgs, or a closed channel for a nil one (a consume that
// failed): ranging over it ends at once.
func orClosed(msgs <-chan amqp.Delivery) <-chan amqp.Delivery {
	if msgs != nil {
		return msgs
	}
	closed := make(chan amqp.Delivery)
	close(closed)
	return closed
}

// moveOne moves due request m on and acks it, or requeues it a second
// later if it cannot: a move that keeps failing must not spin.
func (g *generation) moveOne(m *amqp.Delivery) {
	if err := g.t.moveDue(m); err != nil {
		g.t.log.Warn("amqp: move a delayed request on; it comes back in a second", "invocation_id", messageID(m), "err", err)
		g.ended(time.Second)
		_ = m.Nack(false, true)
		return
	}
	_ = m.Ack(false)
}

// moveDue sends the delayed request in m to the next rung, or, when its
// time has come, to its task's queue; one cancelled meanwhile is answered
// instead.
func (t *Transport) moveDue(m *amqp.Delivery) error {
	ctx, cancel := context.WithTimeout(t.stopCtx, dialTimeout)
	defer cancel()
	task, _ := headerString(m.Headers, headerTask)
	raw, _ := headerString(m.Headers, headerRunAt)
	runAt, err := time.Parse(time.RFC3339Nano, raw)
	if task == "" || err != nil {
		t.log.Warn("amqp: dropped a delayed request without its task or time", "invocation_id", messageID(m), "task", task, "run_at", raw)
		return nil
	}
	msg := copyOf(m, max(1, headerInt(m.Headers, headerAttempt))) // not the due queue's redeliveries
	if k := delayRung(time.Until(runAt)); k >= 0 {
		return t.hop(ctx, k, msg)
	}
	if t.cancelledLater(messageID(m)) {
		return t.answerCancelled(ctx, m, task)
	}
	req, werr := decodeRequest(m, t.cfg.Namespace, task)
	if werr == nil && !req.Deadline.IsZero() {
		msg.Expiration = expiration(req.Deadline, time.Now())
	}
	if err := t.publish(ctx, t.topo.tasks(), task, msg); err != nil {
		return err
	}
	if m.ReplyTo != "" && !headerTrue(m.Headers, headerQuiet) { // scheduled, now queued
		if note, err := replyPublishing(&wire.Reply{ID: messageID(m), Task: task, State: wire.Queued, Attempt: max(1, headerInt(m.Headers, headerAttempt))}, time.Now()); err == nil {
			_ = t.publish(ctx, "", m.ReplyTo, note)
		}
	}
	return nil
}

// cancelledLater reports whether delayed request id was cancelled: a cancel
// this server remembers (PROTOCOL §6) or one in the stream of cancels.
func (t *Transport) cancelledLater(id string) bool {
	if t.laterCancels.has(id) {
		return true
	}
	srv := t.serving()
	if srv == nil {
		return false
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.cancelled.has(id, time.Now())
}

// answerCancelled tells the caller of the delayed request in m that it was
// cancelled before its time.
func (t *Transport) answerCancelled(ctx context.Context, m *amqp.Delivery, task string) error {
	if m.ReplyTo == "" {
		return nil
	}
	msg, err := replyPublishing(failure(messageID(m), task, "", errCancelled), time.Now())
	if err != nil {
		return err
	}
	return t.publish(ctx, "", m.ReplyTo, msg)
}
