package amqp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atasks-go/atasks/wire"
	amqp "github.com/rabbitmq/amqp091-go"
)

// generation is one connection to the broker and everything bound to it.
//
// Acknowledgements are tied to their generation by construction: a
// delivery is acked through its own amqp.Delivery, whose Acknowledger is
// the *amqp.Channel it arrived on. Delivery tags restart at 1 on every
// channel, so acking tag n on a newer channel would settle some other
// message; an old channel object only ever returns an error. Every
// generation dials a fresh connection (no amqp091-go recovery), and code
// checks isDone before acking to skip the pointless call.
type generation struct {
	t       *Transport
	conn    *amqp.Connection
	url     string        // the URL conn was dialled at
	dialCfg amqp.Config   // and with what
	pub     *amqp.Channel // confirm mode; every message this process publishes
	work    *amqp.Channel // task and dead-letter consumers (see taskQueue)
	in      *amqp.Channel // the reply and control consumers

	controlQ string // this connection's control queue: lease answers come here

	done    chan struct{} // closed when the connection or one of its channels ends
	causeMu sync.Mutex
	err     *amqp.Error // why, if the broker or the network said

	srv  atomic.Pointer[server] // set once serving starts on this generation
	kick chan struct{}          // wakes the slot manager

	// The broker blocks a connection that publishes while one of its
	// resource alarms (memory, disk) is on: it stops reading from it
	// (connection.blocked), so nothing published gets through until the
	// alarm clears (connection.unblocked).
	blockMu   sync.Mutex
	blockedBy string        // the broker's reason while blocked, else ""
	unblocked chan struct{} // closed when the block is lifted; nil while not blocked

	// slotMu serialises the consumer changes on work: the slot manager's,
	// those of stopServing and settle's.
	ladderMu sync.Mutex
	ladder   bool // the delay ladder is declared (see declareLadder)

	slotMu   sync.Mutex
	prefetch int    // the work channel's current basic.qos prefetch count
	deadTag  string // consumer tag on the dead-letter queue, if serving
	dueMu    sync.Mutex
	due      *amqp.Channel // the due queue's consumer's, if serving (delay.go)

	// wg counts this generation's goroutines: watcher, reply and control
	// consumers, and when serving the slot manager, announcer, task and
	// dead-letter consumers. None of them waits for a later generation.
	wg sync.WaitGroup
}

func (g *generation) isDone() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// ended waits up to d for the generation to end and reports whether it
// did (or the transport is closing).
func (g *generation) ended(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-g.done:
		return true
	case <-g.t.stopCtx.Done():
		return true
	case <-timer.C:
		return false
	}
}

// stopping reports whether serving stops (stopServing).
func (g *generation) stopping() bool {
	srv := g.srv.Load()
	if srv == nil {
		return false
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.stopping
}

func (g *generation) cause() error {
	g.causeMu.Lock()
	defer g.causeMu.Unlock()
	if g.err == nil {
		return nil
	}
	return g.err
}

// connect dials a new generation, declares the namespace's topology and
// starts consuming replies and control messages, and, when t serves,
// task requests. first is false on reconnects, which check that the reply
// queue survived.
func (t *Transport) connect(ctx context.Context, first bool) (*generation, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(t.cfg.ConnectionName)
	var tlsConfig *tls.Config
	if t.cfg.TLS != nil {
		tlsConfig = t.cfg.TLS.Clone() // amqp091-go sets its ServerName
	}
	dialCfg := amqp.Config{Properties: props, Dial: dialer(ctx), TLSClientConfig: tlsConfig}
	conn, url, err := t.dial(ctx, dialCfg)
	if err != nil {
		return nil, err
	}
	g := &generation{t: t, conn: conn, url: url, dialCfg: dialCfg, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	ok := false
	defer func() {
		if !ok {
			_ = conn.Close()
			g.wg.Wait()
		}
	}()
	if g.pub, err = openChannel(conn, "publish"); err != nil {
		return nil, err
	}
	if err := g.pub.Confirm(false); err != nil {
		return nil, fmt.Errorf("amqp: confirm mode: %w", err)
	}
	if g.work, err = openChannel(conn, "work"); err != nil {
		return nil, err
	}
	if err := g.work.Qos(1, 0, false); err != nil {
		return nil, fmt.Errorf("amqp: qos: %w", err)
	}
	g.prefetch = 1
	if g.in, err = openChannel(conn, "in"); err != nil {
		return nil, err
	}
	if err := g.in.Qos(replyPrefetch, 0, false); err != nil {
		return nil, fmt.Errorf("amqp: qos: %w", err)
	}
	closes := []chan *amqp.Error{
		conn.NotifyClose(make(chan *amqp.Error, 1)),
		g.pub.NotifyClose(make(chan *amqp.Error, 1)),
		g.work.NotifyClose(make(chan *amqp.Error, 1)),
		g.in.NotifyClose(make(chan *amqp.Error, 1)),
	}
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	g.wg.Add(3)
	go g.watch(closes)
	go g.watchBlocked(blocks)
	go g.probe()

	lost := false
	if !first && t.hist == nil {
		if lost, err = g.replyQueueLost(); err != nil {
			return nil, err
		}
	}
	if err := g.declareCommon(); err != nil {
		return nil, err
	}
	var replies <-chan amqp.Delivery
	if t.hist != nil { // shared with the other readers of the history
		if err := g.awaitHistoryReplica(); err != nil {
			return nil, fmt.Errorf("amqp: consume %s: %w", t.replyQueue(), err)
		}
		replies, err = g.in.Consume(t.replyQueue(), "history/"+t.id, false, false, false, false, t.hist.offset())
	} else {
		replies, err = g.in.Consume(t.replyQueue(), "reply/"+t.id, false, true, false, false, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("amqp: consume %s: %w", t.replyQueue(), err)
	}
	q, err := g.in.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp: declare control queue: %w", err)
	}
	if err := g.in.QueueBind(q.Name, "", t.topo.control(), false, nil); err != nil {
		return nil, fmt.Errorf("amqp: bind %s: %w", q.Name, err)
	}
	g.controlQ = q.Name
	controls, err := g.in.Consume(q.Name, "control/"+t.id, true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp: consume %s: %w", q.Name, err)
	}
	g.wg.Add(2)
	go g.consumeReplies(replies)
	go g.consumeControl(controls)

	t.setupMu.Lock()
	defer t.setupMu.Unlock()
	if srv := t.serving(); srv != nil {
		if err := g.serve(srv); err != nil {
			return nil, err
		}
	}
	if lost || t.replyReplaced.Swap(false) { // replaced by an attempt that failed after, maybe
		t.failInflight("reply queue lost with the connection")
	}
	t.cat.queried(time.Now())
	g.control(typeQuery, struct{}{})
	t.setGen(g)
	ok = true
	return g, nil
}

// dial connects to the first of the broker's URLs that answers, starting
// with the one after the URL of the last connection.
func (t *Transport) dial(ctx context.Context, cfg amqp.Config) (*amqp.Connection, string, error) {
	urls := t.cfg.urls()
	var errs []error
	for range urls {
		i := int(t.nextURL.Add(1)-1) % len(urls)
		conn, err := amqp.DialConfig(urls[i], cfg)
		if err == nil {
			return conn, urls[i], nil
		}
		errs = append(errs, fmt.Errorf("amqp: dial %s: %w", redacted(urls[i]), err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", errors.Join(errs...)
}

// redacted is raw, a URL, without its password.
func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "the broker"
}

func openChannel(conn *amqp.Connection, name string) (*amqp.Channel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open %s channel: %w", name, err)
	}
	return ch, nil
}

// watch ends the generation when the connection or any of its channels
// closes, for whatever reason: the next generation starts from scratch.
func (g *generation) watch(closes []chan *amqp.Error) {
	defer g.wg.Done()
	var err *amqp.Error
	select {
	case err = <-closes[0]:
	case err = <-closes[1]:
	case err = <-closes[2]:
	case err = <-closes[3]:
	}
	g.causeMu.Lock()
	g.err = err
	g.causeMu.Unlock()
	close(g.done)
	_ = g.conn.Close()
}

// watchBlocked follows the broker's connection.blocked and
// connection.unblocked notices until the connection closes.
func (g *generation) watchBlocked(blocks <-chan amqp.Blocking) {
	defer g.wg.Done()
	for b := range blocks {
		g.blockMu.Lock()
		switch {
		case b.Active && g.unblocked == nil:
			g.blockedBy, g.unblocked = b.Reason, make(chan struct{})
			g.t.log.Warn("amqp: the broker blocks publishing", "reason", b.Reason)
		case !b.Active && g.unblocked != nil:
			close(g.unblocked)
			g.blockedBy, g.unblocked = "", nil
			g.t.log.Info("amqp: the broker unblocked publishing")
		}
		g.blockMu.Unlock()
	}
}

// probeInterval is how often a connection publishes a probe.
const probeInterval = time.Second

// probe publishes an empty message that no queue takes every
// probeInterval until the connection ends. The broker blocks a connection
// in an alarm only once it publishes, and says so then: the probe makes
// every connection learn of an alarm within a second, before it writes a
// request the broker would hold until the alarm clears.
func (g *generation) probe() {
	defer g.wg.Done()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
		}
		if _, unblocked := g.blocked(); unblocked != nil {
			continue // blocked already: nothing gets through
		}
		_ = g.pub.Publish("", g.t.cfg.Prefix+probeSuffix, false, false, amqp.Publishing{})
	}
}

// probeSuffix ends the routing key of probes on the default exchange,
// "<prefix>.probe": the name of no queue, so the broker drops them.
const probeSuffix = ".probe"

// blocked returns, while the broker blocks the connection, its reason and
// a channel closed when the block is lifted; else "" and nil.
func (g *generation) blocked() (string, <-chan struct{}) {
	g.blockMu.Lock()
	defer g.blockMu.Unlock()
	return g.blockedBy, g.unblocked
}

// replyQueueLost reports whether the reply queue disappeared while the
// transport was disconnected (x-expires deletes the queue of a caller
// without Identity after a minute without consumer; an operator may delete
// any), taking any replies with it. A transient queue whose node does not
// answer within replyCheckTimeout is given up for lost too, and replaced:
// its node is cut off from this one, and until the cluster declares it
// down (a minute, by Erlang's net_ticktime) nothing could use the queue.
func (g *generation) replyQueueLost() (bool, error) {
	type answer struct {
		exists bool
		err    error
	}
	queue := g.t.replyQueue()
	answered := make(chan answer, 1)
	go func() {
		exists, err := g.queueExists(queue)
		answered <- answer{exists, err}
	}()
	timer := time.NewTimer(replyCheckTimeout)
	defer timer.Stop()
	select {
	case a := <-answered:
		return !a.exists && a.err == nil, a.err
	case <-timer.C:
		if g.t.cfg.Identity != "" { // replies outlive this process: only this queue will do
			return false, unavailable(fmt.Sprintf("amqp: check %s: no answer in %v", queue, replyCheckTimeout))
		}
		g.t.replaceReplyQueue()
		g.t.log.Warn("amqp: the reply queue's node does not answer; replaced the queue", "queue", queue, "new", g.t.replyQueue(), "after", replyCheckTimeout)
		return true, nil
	}
}

// queueExists reports whether queue exists on the broker.
func (g *generation) queueExists(queue string) (bool, error) {
	ch, err := openChannel(g.conn, "check")
	if err != nil {
		return false, unavailable(err.Error())
	}
	_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
		return false, nil // the failed passive declare closed ch
	}
	_ = ch.Close()
	if err != nil {
		return false, unavailable(fmt.Sprintf("amqp: check %s: %v", queue, err))
	}
	return true, nil
}

// declareCommon declares what every transport of the namespace uses: the
// exchanges, the dead-letter and lease queues and this transport's reply
// queue (a durable quorum queue, so replies survive a broker restart;
// without Identity it expires a minute after its consumer goes). It
// uses a channel of its own, so that a refused declaration (say, a queue
// that exists with other arguments) does not end the generation.
func (g *generation) declareCommon() error {
	t := g.t
	ch, err := openChannel(g.conn, "declare")
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, x := range []struct{ name, kind string }{
		{t.topo.tasks(), amqp.ExchangeDirect},
		{t.topo.control(), amqp.ExchangeFanout},
		{t.topo.dlx(), amqp.ExchangeFanout},
		{t.topo.lease(), amqp.ExchangeFanout},
		{t.topo.activity(), amqp.ExchangeFanout},
	} {
		if err := ch.ExchangeDeclare(x.name, x.kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("amqp: declare %s: %w", x.name, err)
		}
	}
	dead := t.topo.dead()
	if _, err := ch.QueueDeclare(dead, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", dead, err)
	}
	if err := ch.QueueBind(dead, "", t.topo.dlx(), false, nil); err != nil {
		return fmt.Errorf("amqp: bind %s: %w", dead, err)
	}
	lease := t.topo.lease()
	if _, err := ch.QueueDeclare(lease, true, false, false, false, leaseQueueArgs(t.topo)); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", lease, err)
	}
	if err := ch.QueueBind(lease, "", lease, false, nil); err != nil {
		return fmt.Errorf("amqp: bind %s: %w", lease, err)
	}
	if t.hist != nil {
		return g.declareHistory(ch)
	}
	// With an Identity, replies outlive this process and the broker: a
	// durable quorum queue. Without, nobody reads them after this process
	// anyway: a transient classic queue, one write fewer per call (a
	// broker restart loses it, and the calls waiting for it fail, retryable).
	args := amqp.Table{"x-queue-type": "quorum"}
	durable := true
	if t.cfg.Identity == "" {
		args = amqp.Table{"x-queue-type": "classic", "x-expires": ephemeralExpiry.Milliseconds()}
		durable = false
	}
	if _, err := ch.QueueDeclare(t.replyQueue(), durable, false, false, false, args); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", t.replyQueue(), err)
	}
	return nil
}

// publish publishes msg on this generation and waits for the broker's
// confirm (a per-message deferred confirmation). It returns
// errGenerationLost when the connection ended first.
func (g *generation) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	dc, err := g.pub.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, msg)
	if err == nil {
		acked, werr := dc.WaitContext(ctx)
		switch {
		case werr == nil && acked:
			return nil
		case werr == nil && !g.pub.IsClosed():
			return unavailable("the broker refused the message") // a nack: not enqueued
		case werr != nil && ctx.Err() != nil:
			return &unconfirmedError{dc: dc, err: maybeSent(notNow(ctx, "the broker has not confirmed the message yet"))}
		case werr != nil:
			err = werr
		default:
			err = errors.New("the channel closed before the broker confirmed the message")
		}
	}
	// The message may be written, or the write failed: either way the
	// connection is going, though the library may not have noticed yet.
	// Give it a moment, then retry the message on the next connection.
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	select {
	case <-g.done:
		return errGenerationLost
	case <-ctx.Done():
		return maybeSent(notNow(ctx, "publishing: "+err.Error()))
	case <-grace.C:
		return maybeSent(unavailable(fmt.Sprintf("amqp: publish to %q key %q: %v", exchange, key, err)))
	}
}

// unconfirmedError is a publish given up while waiting for the confirm of
// a message written on a live connection: the broker may take it yet (it
// holds what a connection sends while it blocks publishing, say); dc says
// whether it did.
type unconfirmedError struct {
	dc  *amqp.DeferredConfirmation
	err error
}

func (e *unconfirmedError) Error() string { return e.err.Error() }
func (e *unconfirmedError) Unwrap() error { return e.err }

// maybeSent marks err, a failed publish, as one whose message may still
// reach the broker.
func maybeSent(err error) error { return fmt.Errorf("%w: %w", wire.ErrMaybeSent, err) }

// closeGrace is how long publish waits, after a failed write, for the
// connection's end to be noticed.
const closeGrace = 2 * time.Second

// control publishes a control message without waiting for its confirm:
// announcements and queries are repeated when they matter.
func (g *generation) control(typ string, v any) {
	msg, err := controlPublishing(typ, v, time.Now())
	if err == nil {
		err = g.pub.Publish(g.t.topo.control(), "", false, false, msg)
	}
	if err != nil && !g.isDone() {
		g.t.log.Warn("amqp: publish "+typ, "err", err)
	}
}

// replyAckBatch is the most replies consumeReplies hands over before it
// acks them, well below the reply prefetch.
const replyAckBatch = 64

// historyAckBatch is the fewest messages of the history consumeReplies
// acks at once: in a stream an ack only gives credit (a new connection
// resumes from the offset read, not from the acks), so a few may wait
// for the next batch, well below the prefetch.
const historyAckBatch = 16

// consumeReplies passes replies to the router and acks them in batches
// (multiple=true): after replyAckBatch of them, or as soon as no more are
// waiting. A reply whose ack the connection took with it is delivered
// again on the next one; callers keep the first final reply of an id.
func (g *generation) consumeReplies(deliveries <-chan amqp.Delivery) {
	defer g.wg.Done()
	var last amqp.Delivery
	pending := 0
	ack := func() {
		if pending > 0 && !g.isDone() {
			_ = last.Ack(true)
		}
		pending = 0
	}
	for {
		var m amqp.Delivery
		var ok bool
		select {
		case m, ok = <-deliveries:
		default:
			if g.t.hist == nil || pending >= historyAckBatch {
				ack() // nothing more waiting: settle what was handed over
			}
			m, ok = <-deliveries
		}
		if !ok {
			return
		}
		if g.t.hist != nil {
			g.t.readHistory(&m)
		} else if r, err := decodeReply(m.Body); err != nil {
			g.t.log.Warn("amqp: dropped undecodable reply", "err", err, "correlation_id", m.CorrelationId)
		} else {
			g.t.received(r)
		}
		last, pending = m, pending+1
		if pending >= replyAckBatch {
			ack()
		}
	}
}

// consumeControl handles announcements, leaves, queries, cancels and the
// lease messages.
func (g *generation) consumeControl(deliveries <-chan amqp.Delivery) {
	defer g.wg.Done()
	t := g.t
	for m := range deliveries {
		switch m.Type {
		case typeAnnounce, typeLeave:
			var a announcement
			if err := json.Unmarshal(m.Body, &a); err != nil || a.Server == "" {
				t.log.Warn("amqp: dropped bad "+m.Type, "err", err)
				continue
			}
			if m.Type == typeLeave {
				t.cat.leave(a.Server)
			} else {
				t.cat.announce(a, time.Now())
			}
		case typeQuery:
			if srv := g.srv.Load(); srv != nil {
				g.announce(srv)
			}
		case typeWatching:
			var w watching
			if err := json.Unmarshal(m.Body, &w); err != nil {
				t.log.Warn("amqp: dropped bad "+m.Type, "err", err)
				continue
			}
			t.watched(time.Duration(w.TTLMs) * time.Millisecond)
		case typeCancel:
			var c cancelRequest
			if err := json.Unmarshal(m.Body, &c); err != nil || c.ID == "" {
				t.log.Warn("amqp: dropped bad cancel", "err", err)
				continue
			}
			if srv := t.serving(); srv != nil {
				srv.cancel(c.ID)
			}
		case typeAdopt:
			a, ok := decodeAdoption(&m)
			if srv := t.serving(); ok && srv != nil && m.ReplyTo != "" {
				g.answerAdopt(srv, a, m.ReplyTo, m.CorrelationId)
			}
		case typeAdopted:
			if a, ok := decodeAdoption(&m); ok {
				t.answered(m.CorrelationId, leaseAnswer{held: a.Task != "", task: a.Task})
			}
		case typeLeaseQuery, typeLeaseHeld, typeLeaseGone:
			n, ok := leaseNoteOf(&m)
			if !ok {
				t.log.Warn("amqp: dropped bad " + m.Type)
				continue
			}
			srv := t.serving()
			switch {
			case m.Type == typeLeaseQuery:
				if srv != nil && m.ReplyTo != "" {
					g.answerLease(srv, n, m.ReplyTo, m.CorrelationId)
				}
			case m.CorrelationId != "":
				t.answered(m.CorrelationId, leaseAnswer{held: m.Type == typeLeaseHeld, server: n.Holder})
			case srv != nil && n.TTLMs > 0:
				srv.rememberGone(n, time.Now())
			}
		default:
			t.log.Warn("amqp: dropped control message of unknown type", "type", m.Type)
		}
	}
}
