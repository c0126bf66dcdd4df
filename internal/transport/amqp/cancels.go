package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A cancel of a delayed request must outlast every process until the
// request's time (PROTOCOL §15). A caller that cancels a delayed request it
// sent also appends {id, run_at} to the namespace's stream of cancels,
// "<B>.cancels"; every server reads the stream from its first message, to
// a marker it appends, before it moves due requests on, and follows it
// after; a due request whose id it holds is answered cancelled.

const (
	typeDelayCancel = "cancel"
	typeCancelsMark = "cancels-mark"
	cancelsMaxAge   = 31 * 24 * time.Hour // beyond the 30 days a call may be delayed
)

// delayCancel is the body of a message in the stream of cancels.
type delayCancel struct {
	ID    string    `json:"id"`
	RunAt time.Time `json:"run_at"`
}

// cancelsArgs are the stream of cancels' arguments.
func cancelsArgs() amqp.Table {
	return amqp.Table{"x-queue-type": "stream", "x-max-age": formatAge(cancelsMaxAge)}
}

// laterCancels are the cancelled delayed requests a server knows of, by
// id, with their time.
type laterCancels struct {
	mu     sync.Mutex
	at     map[string]time.Time
	pruned int // how many there were after the last pruning
}

// add keeps c as long as the stream keeps it (its request may wait in the
// due queue long past its time, while no server runs); past that, the
// oldest go whenever the set has doubled.
func (l *laterCancels) add(c delayCancel, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at == nil {
		l.at = map[string]time.Time{}
	}
	l.at[c.ID] = c.RunAt
	if len(l.at) < 2*max(l.pruned, 1024) {
		return
	}
	for id, at := range l.at {
		if now.Sub(at) > cancelsMaxAge {
			delete(l.at, id)
		}
	}
	l.pruned = len(l.at)
}

func (l *laterCancels) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.at[id]
	return ok
}

// appendCancel records the cancel of delayed request id, due at runAt.
func (t *Transport) appendCancel(ctx context.Context, id string, runAt time.Time) error {
	if err := t.declareLadder(ctx); err != nil { // the stream with it
		return err
	}
	body, err := json.Marshal(delayCancel{ID: id, RunAt: runAt})
	if err != nil {
		return err
	}
	return t.publish(ctx, "", t.topo.cancels(), amqp.Publishing{Type: typeDelayCancel, ContentType: jsonContentType,
		DeliveryMode: amqp.Persistent, Timestamp: time.Now(), AppId: appID, Body: body})
}

// followCancels reads the stream of cancels on a channel of its own to a
// marker it appends, then goes on reading it until the generation ends.
// If it cannot read to its marker within dialTimeout (say, the stream has
// no leader for a while), it says so and goes on reading anyway.
func (g *generation) followCancels() error {
	t := g.t
	ctx, cancel := context.WithTimeout(t.stopCtx, dialTimeout)
	defer cancel()
	mark := randomID()
	msgs, ch, err := g.consumeCancels("first") // declares the stream, before the marker
	if err == nil {
		// On this generation: while it connects, the transport has none yet.
		err = g.publish(ctx, "", t.topo.cancels(), amqp.Publishing{Type: typeCancelsMark, CorrelationId: mark, Timestamp: time.Now(), AppId: appID})
	}
	if err == nil {
		err = g.readToMark(ctx, msgs, mark)
	}
	g.wg.Add(1)
	go g.followOn(ch, msgs)
	return err
}

// readToMark reads the stream of cancels until mark, or ctx's end.
func (g *generation) readToMark(ctx context.Context, msgs <-chan amqp.Delivery, mark string) error {
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return fmt.Errorf("amqp: reading %s: the channel closed", g.t.topo.cancels())
			}
			if g.t.readCancel(&m) == mark {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("amqp: reading %s: %w", g.t.topo.cancels(), context.Cause(ctx))
		}
	}
}

// consumeCancels consumes the stream of cancels from offset on a channel
// of its own, declaring it first.
func (g *generation) consumeCancels(offset any) (<-chan amqp.Delivery, *amqp.Channel, error) {
	t := g.t
	ch, err := openChannel(g.conn, "cancels")
	if err != nil {
		return nil, nil, err
	}
	if _, err = ch.QueueDeclare(t.topo.cancels(), true, false, false, false, cancelsArgs()); err == nil {
		err = ch.Qos(500, 0, false)
	}
	var msgs <-chan amqp.Delivery
	if err == nil {
		msgs, err = ch.Consume(t.topo.cancels(), "cancels/"+t.id, false, false, false, false, amqp.Table{headerStreamOffset: offset})
	}
	if err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("amqp: consume %s: %w", t.topo.cancels(), err)
	}
	return msgs, ch, nil
}

// followOn reads the stream of cancels on until the generation ends. A
// consumer that ends alone (the broker cancels it when the stream's
// member it reads from goes) is opened again from where it stopped.
func (g *generation) followOn(ch *amqp.Channel, msgs <-chan amqp.Delivery) {
	defer g.wg.Done()
	var next any = "first"
	for {
		for m := range orClosed(msgs) {
			g.t.readCancel(&m)
			if off, ok := m.Headers[headerStreamOffset].(int64); ok {
				next = off + 1
			}
		}
		if ch != nil {
			_ = ch.Close()
		}
		if g.ended(time.Second) {
			return
		}
		var err error
		if msgs, ch, err = g.consumeCancels(next); err != nil {
			g.t.log.Warn("amqp: follow the stream of cancels again", "err", err)
		}
	}
}

// readCancel takes in the cancel in m, acks it (a stream's acks give
// credit) and returns m's marker, if it is one.
func (t *Transport) readCancel(m *amqp.Delivery) (mark string) {
	_ = m.Ack(false)
	switch m.Type {
	case typeCancelsMark:
		return m.CorrelationId
	case typeDelayCancel:
		var c delayCancel
		if err := json.Unmarshal(m.Body, &c); err == nil && c.ID != "" {
			t.laterCancels.add(c, time.Now())
		}
	}
	return ""
}
