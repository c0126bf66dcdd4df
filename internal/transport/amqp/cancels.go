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
	cancelsRead     = time.Minute         // how long a server may take to read the stream at first
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
func (g *generation) followCancels() error {
	t := g.t
	ch, err := openChannel(g.conn, "cancels")
	if err != nil {
		return err
	}
	following := false
	defer func() {
		if !following {
			_ = ch.Close()
		}
	}()
	if _, err := ch.QueueDeclare(t.topo.cancels(), true, false, false, false, cancelsArgs()); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", t.topo.cancels(), err)
	}
	mark := randomID()
	ctx, cancel := context.WithTimeout(t.stopCtx, cancelsRead)
	defer cancel()
	// On this generation: while it connects, the transport has none yet.
	if err := g.publish(ctx, "", t.topo.cancels(), amqp.Publishing{Type: typeCancelsMark, CorrelationId: mark, Timestamp: time.Now(), AppId: appID}); err != nil {
		return err
	}
	if err := ch.Qos(500, 0, false); err != nil {
		return err
	}
	msgs, err := ch.Consume(t.topo.cancels(), "cancels/"+t.id, false, false, false, false, amqp.Table{headerStreamOffset: "first"})
	if err != nil {
		return fmt.Errorf("amqp: consume %s: %w", t.topo.cancels(), err)
	}
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return fmt.Errorf("amqp: reading %s: the channel closed", t.topo.cancels())
			}
			if t.readCancel(&m) == mark {
				following = true
				g.wg.Add(1)
				go g.followOn(msgs)
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("amqp: reading %s: %w", t.topo.cancels(), context.Cause(ctx))
		}
	}
}

// followOn reads the stream of cancels on, until the generation ends.
func (g *generation) followOn(msgs <-chan amqp.Delivery) {
	defer g.wg.Done()
	for m := range msgs {
		g.t.readCancel(&m)
	}
	g.endUnlessDone("the stream of cancels' consumer ended")
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
