package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/atasks-go/atasks/wire"
	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	typeActivity = "activity"
	typeWatching = "watching" // on the control exchange: a monitor watches for ttl_ms

	// watchQueueLength bounds a monitor's queue: when it falls behind, the
	// oldest activities are dropped, never the broker's memory.
	watchQueueLength = 10_000

	// watchPrefetch is how many activities a watcher holds unacknowledged.
	watchPrefetch = 256
)

// watching is the body of watching messages.
type watching struct {
	TTLMs int64 `json:"ttl_ms"`
}

// watched notes that a monitor watches for ttl from now.
func (t *Transport) watched(ttl time.Duration) {
	until := time.Now().Add(ttl).UnixNano()
	for {
		old := t.watchedUntil.Load()
		if old >= until || t.watchedUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// Report implements wire.Monitor: while some monitor watches the
// namespace (it says so on the control exchange every AnnounceInterval),
// it publishes a to the activity exchange, transient and unconfirmed;
// otherwise it costs nothing.
func (t *Transport) Report(a wire.Activity) {
	if time.Now().UnixNano() > t.watchedUntil.Load() {
		return
	}
	g := t.current()
	if g == nil {
		return
	}
	body, err := json.Marshal(a)
	if err == nil {
		err = g.pub.Publish(t.topo.activity(), "", false, false, amqp.Publishing{
			ContentType: jsonContentType, DeliveryMode: amqp.Transient, Type: typeActivity, AppId: appID, Body: body,
		})
	}
	if err != nil && !g.isDone() {
		t.log.Debug("amqp: report activity", "task", a.Task, "invocation_id", a.ID, "err", err)
	}
}

// Watch implements wire.Monitor: it binds a queue of its own (exclusive,
// dropped with the connection, at most watchQueueLength messages) to the
// activity exchange and passes what arrives to fn, on every connection in
// turn, until ctx ends.
func (t *Transport) Watch(ctx context.Context, fn func(wire.Activity)) error {
	if err := t.usable(); err != nil {
		return err
	}
	for {
		g, err := t.waitGen(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := t.watchOn(ctx, g, fn); err != nil && !g.isDone() && ctx.Err() == nil {
			t.log.Warn("amqp: watch activity", "err", err)
			select { // not a lost connection: try again in a moment
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// watchOn watches g's connection until it or ctx ends.
func (t *Transport) watchOn(ctx context.Context, g *generation, fn func(wire.Activity)) error {
	ch, err := openChannel(g.conn, "watch")
	if err != nil {
		return err
	}
	defer ch.Close()
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-max-length": watchQueueLength, "x-overflow": "drop-head"})
	if err == nil {
		err = ch.QueueBind(q.Name, "", t.topo.activity(), false, nil)
	}
	if err == nil { // acked one by one, so that a watcher that falls behind leaves them in the bounded queue
		err = ch.Qos(watchPrefetch, 0, false)
	}
	var msgs <-chan amqp.Delivery
	if err == nil {
		msgs, err = ch.Consume(q.Name, "", false, true, false, false, nil)
	}
	if err != nil {
		return fmt.Errorf("amqp: watch queue: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx) // ends sayWatching with this channel
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	go t.sayWatching(ctx, g)
	for m := range msgs {
		var a wire.Activity
		if err := json.Unmarshal(m.Body, &a); err != nil || a.ID == "" {
			t.log.Debug("amqp: dropped bad activity", "err", err)
		} else {
			fn(a)
		}
		_ = m.Ack(false)
	}
	return nil
}

// Servers implements wire.Monitor: the servers whose announcements are
// live, as they announced themselves.
func (t *Transport) Servers(context.Context) ([]wire.ServerInfo, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	return t.cat.serverList(time.Now()), nil
}

// sayWatching tells the namespace's servers, now and every
// AnnounceInterval until ctx or g ends, that a monitor watches.
func (t *Transport) sayWatching(ctx context.Context, g *generation) {
	tick := time.NewTicker(t.cfg.AnnounceInterval)
	defer tick.Stop()
	for {
		g.control(typeWatching, watching{TTLMs: (3 * t.cfg.AnnounceInterval).Milliseconds()})
		select {
		case <-ctx.Done():
			return
		case <-g.done:
			return
		case <-tick.C:
		}
	}
}
