package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// quorum declares a durable quorum queue.
var quorum = amqp.Table{"x-queue-type": "quorum"}

// floorAMQP is a minimal request/reply over amqp091-go with atasks'
// durability: a durable quorum request queue, persistent messages,
// publisher confirms, and acks only once the reply is confirmed; replies
// go to an exclusive queue. Its server side runs
// in this process on its own connection.
type floorAMQP struct {
	reqQueue, replyQueue string
	cli, srv             *amqp.Connection
	pub                  *amqp.Channel // the client's confirm-mode channel
	nextID               atomic.Uint64
	mu                   sync.Mutex
	waiting              map[string]chan []byte
	done                 sync.WaitGroup
}

// openFloorAMQP declares the floor's queues and starts its server side
// with prefetch inflight.
func openFloorAMQP(_ context.Context, e *env, inflight int) (*target, error) {
	f := &floorAMQP{reqQueue: e.prefix + ".floor", replyQueue: e.prefix + ".floor.reply", waiting: map[string]chan []byte{}}
	if err := f.open(e.amqpURL, inflight); err != nil {
		f.close()
		return nil, err
	}
	return &target{call: f.call, close: f.close}, nil
}

// open connects both sides and starts consuming.
func (f *floorAMQP) open(url string, inflight int) error {
	var err error
	if f.cli, err = amqp.Dial(url); err != nil {
		return err
	}
	if f.srv, err = amqp.Dial(url); err != nil {
		return err
	}
	ch, err := f.cli.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(f.reqQueue, true, false, false, false, quorum); err != nil {
		return fmt.Errorf("declare %s: %w", f.reqQueue, err)
	}
	// Replies go to an exclusive classic queue, as an atasks caller without
	// an identity has (and the shared harness's floor).
	if _, err := ch.QueueDeclare(f.replyQueue, false, true, true, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", f.replyQueue, err)
	}
	if f.pub, err = confirmChannel(f.cli); err != nil {
		return err
	}
	if err := f.consumeReplies(ch); err != nil {
		return err
	}
	return f.serve(inflight)
}

// confirmChannel opens a channel of conn in confirm mode.
func confirmChannel(conn *amqp.Connection) (*amqp.Channel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	return ch, ch.Confirm(false)
}

// consumeReplies hands each reply to the call waiting for its correlation id.
func (f *floorAMQP) consumeReplies(ch *amqp.Channel) error {
	ds, err := ch.Consume(f.replyQueue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	f.done.Go(func() {
		for d := range ds {
			_ = d.Ack(false)
			f.mu.Lock()
			w := f.waiting[d.CorrelationId]
			delete(f.waiting, d.CorrelationId)
			f.mu.Unlock()
			if w != nil {
				w <- d.Body
			}
		}
	})
	return nil
}

// serve consumes requests with prefetch inflight and echoes each body to
// its reply_to, acking the request once the reply is confirmed.
func (f *floorAMQP) serve(inflight int) error {
	ch, err := f.srv.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(inflight, 0, false); err != nil {
		return err
	}
	pub, err := confirmChannel(f.srv)
	if err != nil {
		return err
	}
	ds, err := ch.Consume(f.reqQueue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	f.done.Go(func() {
		for d := range ds {
			go echoReply(pub, d)
		}
	})
	return nil
}

// echoReply publishes d's body to d.ReplyTo and acks d once confirmed; on
// failure it requeues d.
func echoReply(pub *amqp.Channel, d amqp.Delivery) {
	err := publishConfirmed(context.Background(), pub, d.ReplyTo, amqp.Publishing{
		ContentType: d.ContentType, DeliveryMode: amqp.Persistent, CorrelationId: d.CorrelationId, Body: d.Body,
	})
	if err != nil {
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}

// publishConfirmed publishes msg to queue through the default exchange and
// waits for the broker's confirm.
func publishConfirmed(ctx context.Context, ch *amqp.Channel, queue string, msg amqp.Publishing) error {
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, msg)
	if err != nil {
		return err
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("broker nacked the message")
	}
	return nil
}

// call sends one request and waits for its reply.
func (f *floorAMQP) call(ctx context.Context) error {
	_, err := f.roundTrip(ctx, []byte(`"x"`))
	return err
}

// roundTrip sends body as one request and returns its reply's body.
func (f *floorAMQP) roundTrip(ctx context.Context, body []byte) ([]byte, error) {
	id := strconv.FormatUint(f.nextID.Add(1), 10)
	w := make(chan []byte, 1)
	f.mu.Lock()
	f.waiting[id] = w
	f.mu.Unlock()
	err := publishConfirmed(ctx, f.pub, f.reqQueue, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, CorrelationId: id, ReplyTo: f.replyQueue, Body: body,
	})
	if err == nil {
		select {
		case reply := <-w:
			return reply, nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	f.mu.Lock()
	delete(f.waiting, id)
	f.mu.Unlock()
	return nil, err
}

// openNaiveGateway measures the practical ceiling of a gateway over the
// floor: an HTTP handler that publishes the request's body to the floor's
// queue and answers the reply's body, with no catalog, validation, codec,
// records or observability.
func openNaiveGateway(ctx context.Context, e *env, inflight int) (*target, error) {
	f := &floorAMQP{reqQueue: e.prefix + ".naive", replyQueue: e.prefix + ".naive.reply", waiting: map[string]chan []byte{}}
	if err := f.open(e.amqpURL, inflight); err != nil {
		f.close()
		return nil, err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			body, err = f.roundTrip(r.Context(), body)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	return serveHTTP(h, "/", `"x"`, inflight, f.close)
}

// close deletes the floor's queues and disconnects both sides.
func (f *floorAMQP) close() {
	if f.srv != nil {
		_ = f.srv.Close()
	}
	if f.cli != nil {
		if ch, err := f.cli.Channel(); err == nil {
			for _, q := range []string{f.reqQueue, f.replyQueue} {
				if _, err := ch.QueueDelete(q, false, false, false); err != nil {
					progress("delete queue %s: %v", q, err)
				}
			}
		}
		_ = f.cli.Close()
	}
	f.done.Wait()
}
