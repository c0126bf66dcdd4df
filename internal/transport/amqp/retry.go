package amqp

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Retries wait in the broker: a copy of the request, its attempt header
// raised, is published to a durable classic queue per task and delay
// bucket, with a per-message expiration of the delay; the queue
// dead-letters expired messages to the tasks exchange with the task's
// routing key, so the copy returns to the task's queue when its delay has
// passed, whichever processes live by then. A queue expires once unused
// for twice its bucket plus a minute (each retry redeclares it).
//
// Messages expire only at the head of their queue; keeping delays within
// 10% of each other per queue keeps a short delay from waiting behind a
// longer one by more than that.

const (
	retryFloor = 100 * time.Millisecond // the smallest bucket
	retryStep  = 1.1                    // each bucket is 10% longer than the last
)

// retryBucket is the smallest bucket of the ladder at least d.
func retryBucket(d time.Duration) time.Duration {
	if d <= retryFloor {
		return retryFloor
	}
	k := math.Ceil(math.Log(float64(d)/float64(retryFloor)) / math.Log(retryStep))
	return time.Duration(math.Ceil(float64(retryFloor)*math.Pow(retryStep, k)/float64(time.Millisecond))) * time.Millisecond
}

// Retry implements wire.Retrier: it publishes a copy of d's request as
// attempt attempt to the retry queue of its delay, and waits for the
// broker's confirm. The caller then acknowledges d.
func (d *delivery) Retry(ctx context.Context, attempt int, delay time.Duration) error {
	t := d.t
	bucket := retryBucket(delay)
	q := t.topo.retry(d.q.task, bucket)
	if err := t.declareRetry(ctx, q, d.q.task, bucket); err != nil {
		return err
	}
	msg := copyOf(&d.msg, attempt)
	msg.Headers[headerRetries] = int64(headerInt(d.msg.Headers, headerRetries) + 1)
	msg.Expiration = strconv.FormatInt(max(delay.Milliseconds(), 1), 10)
	return t.publish(ctx, "", q, msg)
}

// declareRetry declares retry queue q of task for bucket, on its own
// channel (a refusal closes only that), unless it did within half a
// bucket: the queue then lives at least 1.5 buckets plus a minute more,
// longer than any message published to it meanwhile waits.
func (t *Transport) declareRetry(ctx context.Context, q, task string, bucket time.Duration) error {
	if last, ok := t.retryQueues.Load(q); ok && time.Since(last.(time.Time)) < bucket/2 {
		return nil
	}
	g, err := t.waitGen(ctx)
	if err != nil {
		return err
	}
	ch, err := openChannel(g.conn, "retry")
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{
		"x-queue-type":              "classic",
		"x-dead-letter-exchange":    t.topo.tasks(),
		"x-dead-letter-routing-key": task,
		"x-expires":                 (2*bucket + time.Minute).Milliseconds(),
	})
	if err != nil {
		return fmt.Errorf("amqp: declare %s: %w", q, err)
	}
	t.retryQueues.Store(q, time.Now())
	return nil
}
