package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

// The journal (docs/DURABILITY.md, docs/PROTOCOL.md §14): a RabbitMQ
// stream per namespace, "<prefix>.<ns>.journal", declared by servers. A
// request whose atasks-journal header names it is a durable parent's
// child: its server routes the final reply to the journal too (CC), with
// the parent's id in atasks-parent, unless the child was cancelled (most
// often by its parent's own end). Nobody reads it while nothing crashes.
// A parent that runs again reads it (Kept), from its request's timestamp
// to a marker it appends, for its children's outcomes; reads asked for
// while one is under way share the next. A child that was running when
// its parent died is found by asking the namespace's servers (Adopt).

// Message types and headers of the journal.
const (
	typeJournalMark = "journal-mark"
	typeAdopt       = "adopt"
	typeAdopted     = "adopted"

	headerJournal = "atasks-journal"
	headerReplay  = "atasks-replay"
	headerResent  = "atasks-resent"
)

// journalSegment is the journal's segment size (see historySegment).
const journalSegment = 16 << 20

// journalSkew is how much earlier than a request's timestamp Kept starts
// reading: the timestamp is the sender's clock in whole seconds, the
// stream's the broker's (hosts kept in time by NTP).
const journalSkew = 2 * time.Second

// journalReadTimeout bounds one read of the journal.
const journalReadTimeout = time.Minute

// adoptWait is how long Adopt waits for a server to say it runs the
// invocation.
const adoptWait = 2 * time.Second

// journalArgs are the arguments of the journal stream.
func (c Config) journalArgs() amqp.Table {
	return amqp.Table{
		"x-queue-type":                    "stream",
		"x-max-age":                       formatAge(c.JournalMaxAge),
		"x-max-length-bytes":              c.JournalMaxBytes,
		"x-stream-max-segment-size-bytes": int64(journalSegment),
	}
}

// declareJournal declares the namespace's journal on a channel of its
// own. A journal the broker refuses (no streams, other arguments, no
// permission) is logged, and the transport serves without durability.
func (g *generation) declareJournal() {
	t := g.t
	ch, err := openChannel(g.conn, "journal")
	if err == nil {
		_, err = ch.QueueDeclare(t.topo.journal(), true, false, false, false, t.cfg.journalArgs())
		_ = ch.Close()
	}
	t.journalOK.Store(err == nil)
	if err != nil {
		t.log.Warn("amqp: declare the journal: parents run their children again after a crash", "queue", t.topo.journal(), "err", err)
	}
}

// Journal implements wire.Journaler: the namespace's journal, once
// declared.
func (t *Transport) Journal() string {
	if !t.journalOK.Load() {
		return ""
	}
	return t.topo.journal()
}

// journalReads are the reads of the journal asked for and not yet done.
type journalReads struct {
	mu      sync.Mutex
	waiting []*journalAsk
	reading bool // a goroutine runs rounds
}

// journalAsk is one Kept call waiting for a round.
type journalAsk struct {
	parent string
	since  time.Time
	from   int64 // if positive, the offset to read from instead of since
	kept   map[string]*wire.Reply
	next   int64 // the offset after the round's marker
	err    error
	done   chan struct{}
}

// Kept implements wire.Journaler.
func (t *Transport) Kept(ctx context.Context, parent string, since time.Time, from int64) (map[string]*wire.Reply, int64, error) {
	a := &journalAsk{parent: parent, since: since, from: from, kept: map[string]*wire.Reply{}, done: make(chan struct{})}
	j := &t.journal
	j.mu.Lock()
	j.waiting = append(j.waiting, a)
	start := !j.reading
	j.reading = true
	j.mu.Unlock()
	if start {
		go t.readJournal()
	}
	select {
	case <-a.done:
		return a.kept, a.next, a.err
	case <-ctx.Done():
		return nil, 0, context.Cause(ctx)
	}
}

// readJournal reads the journal once for every batch of asks that came in
// while the last read was under way, until none waits.
func (t *Transport) readJournal() {
	j := &t.journal
	for {
		j.mu.Lock()
		asks := j.waiting
		j.waiting = nil
		if len(asks) == 0 {
			j.reading = false
			j.mu.Unlock()
			return
		}
		j.mu.Unlock()
		err := t.journalRound(asks)
		for _, a := range asks {
			a.err = err
			close(a.done)
		}
	}
}

// journalRound reads the journal for asks on a connection of its own (a
// stream a moment old may refuse its consumer with 541, which closes the
// connection), retrying while the stream is starting.
func (t *Transport) journalRound(asks []*journalAsk) error {
	ctx, cancel := context.WithTimeout(t.stopCtx, journalReadTimeout)
	defer cancel()
	for {
		err := t.journalPass(ctx, asks)
		var amqpErr *amqp.Error
		starting := errors.As(err, &amqpErr) && (amqpErr.Code == amqp.PreconditionFailed || amqpErr.Code == amqp.InternalError)
		if err == nil || !starting {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(historyRetry):
		}
	}
}

// journalPass appends a marker to the journal, then reads it from the
// earliest ask's since to the marker, keeping the final replies to the
// asks' parents.
func (t *Transport) journalPass(ctx context.Context, asks []*journalAsk) error {
	g, err := t.waitGen(ctx)
	if err != nil {
		return err
	}
	cfg := g.dialCfg
	cfg.Dial = dialer(ctx) // the generation's ended with its connect
	conn, err := amqp.DialConfig(g.url, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	mark := randomID()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", t.topo.journal(), false, false,
		amqp.Publishing{Type: typeJournalMark, CorrelationId: mark, Timestamp: time.Now(), AppId: appID})
	if err != nil {
		return err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("amqp: the broker did not take the journal's marker: %v", err)
	}
	byParent := map[string][]*journalAsk{}
	for _, a := range asks {
		byParent[a.parent] = append(byParent[a.parent], a)
	}
	if err := ch.Qos(500, 0, false); err != nil {
		return err
	}
	ms, err := ch.ConsumeWithContext(ctx, t.topo.journal(), "journal/"+t.id+"/"+mark, false, false, false, false,
		amqp.Table{headerStreamOffset: roundStart(asks)})
	if err != nil {
		return err
	}
	for n := 1; ; n++ {
		var m amqp.Delivery
		var ok bool
		select {
		case m, ok = <-ms:
		case <-ctx.Done():
			return fmt.Errorf("amqp: reading the journal: %w", context.Cause(ctx))
		}
		if !ok {
			return fmt.Errorf("amqp: reading the journal: the channel closed")
		}
		if m.Type == typeJournalMark && m.CorrelationId == mark {
			off, _ := m.Headers[headerStreamOffset].(int64)
			for _, a := range asks {
				a.next = off + 1
			}
			return nil
		}
		if n%100 == 0 {
			_ = m.Ack(true) // a stream's acks only give credit
		}
		parent, _ := headerString(m.Headers, headerParent)
		if m.Type != typeReply || byParent[parent] == nil {
			continue
		}
		r, err := decodeReply(m.Body)
		if err != nil || !r.State.Final() {
			continue
		}
		for _, a := range byParent[parent] {
			if _, seen := a.kept[r.ID]; !seen {
				a.kept[r.ID] = r
			}
		}
	}
}

// roundStart is where a round reading for asks starts: the earliest
// offset if every ask has one, else (an offset is no earlier than its
// ask's since) the earliest since less journalSkew, or the first message
// retained if a request had no timestamp.
func roundStart(asks []*journalAsk) any {
	from, since := int64(-1), time.Time{}
	for _, a := range asks {
		switch {
		case a.from > 0 && (from < 0 || a.from < from):
			from = a.from
		case a.from > 0:
		case a.since.IsZero():
			return "first"
		case since.IsZero() || a.since.Before(since):
			since = a.since
		}
	}
	if since.IsZero() {
		return from
	}
	return since.Add(-journalSkew)
}

// Adopt implements wire.Journaler: it asks the namespace's servers, on
// its control exchange, to send the outcome of invocation id to this
// transport's reply queue too, and waits until the one that runs it says
// so, every live server has said it does not, or adoptWait passes (a
// server that died lingers in the catalog for a while).
func (t *Transport) Adopt(ctx context.Context, id, task string) (string, error) {
	g, err := t.waitGen(ctx)
	if err != nil {
		return "", err
	}
	live := len(t.cat.serverList(time.Now())) // none heard of yet: wait for an answer until adoptWait
	corr, answer, forget := t.ask(live + 1)
	defer forget()
	msg, err := controlPublishing(typeAdopt, adoption{ID: id, Task: task, ReplyTo: t.replyQueue()}, time.Now())
	if err != nil {
		return "", err
	}
	msg.ReplyTo, msg.CorrelationId = g.controlQ, corr
	t.track(id, time.Time{}) // its outcome may come before the answer
	adopted := false
	defer func() {
		if !adopted {
			t.untrack(id)
		}
	}()
	if err := g.pub.Publish(t.topo.control(), "", false, false, msg); err != nil {
		return "", unavailable("amqp: ask who runs " + id + ": " + err.Error())
	}
	timer := time.NewTimer(adoptWait)
	defer timer.Stop()
	for answers := 0; ; {
		select {
		case a := <-answer:
			if a.held {
				adopted = a.task == task
				return a.task, nil
			}
			if answers++; live > 0 && answers >= live {
				return "", nil
			}
		case <-timer.C:
			return "", nil
		case <-g.done:
			return "", unavailable("amqp: connection lost while asking who runs " + id)
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
}

// adoption is the body of an adopt message: send the outcome of
// invocation ID, of Task, to ReplyTo too; and of its answer, adopted:
// Task is the task of invocation ID.
type adoption struct {
	ID      string `json:"id"`
	Task    string `json:"task"`
	ReplyTo string `json:"reply_to,omitempty"`
}

// answerAdopt answers an adopt message, sent by the process whose control
// queue is replyTo: if this server runs the invocation, and it is of the
// task asked for, its outcome will go to a.ReplyTo too, or, if it is being
// published, goes there now. The answer names its task, or no task if
// this server does not run it.
func (g *generation) answerAdopt(srv *server, a adoption, replyTo, corr string) {
	t := g.t
	srv.mu.Lock()
	var d *delivery
	for x := range srv.active {
		if x.id == a.ID && x.started && !x.abandoned {
			d = x
			break
		}
	}
	var outcome *wire.Reply
	if d != nil && d.q.task == a.Task {
		if d.outcome == nil && !slices.Contains(d.also, a.ReplyTo) {
			d.also = append(d.also, a.ReplyTo)
		}
		outcome = d.outcome
	}
	srv.mu.Unlock()
	running := ""
	if d != nil {
		running = d.q.task
	}
	if outcome != nil {
		msg, err := replyPublishing(outcome, time.Now())
		if err == nil {
			err = g.pub.Publish("", a.ReplyTo, false, false, msg)
		}
		if err != nil {
			return
		}
	}
	msg, err := controlPublishing(typeAdopted, adoption{ID: a.ID, Task: running}, time.Now())
	if err == nil {
		msg.CorrelationId = corr
		err = g.pub.Publish("", replyTo, false, false, msg)
	}
	if err != nil && !g.isDone() {
		t.log.Warn("amqp: answer adopt", "invocation_id", a.ID, "err", err)
	}
}

// finalRoutingLocked adds to msg, the outcome of d, the queues it goes to
// besides the caller's: the journal named in the request (with the
// parent's id), unless d was cancelled, and the processes that adopted
// it. srv.mu must be held.
func (d *delivery) finalRoutingLocked(msg *amqp.Publishing, rep *wire.Reply) {
	var cc []any
	if j, ok := headerString(d.msg.Headers, headerJournal); ok && strings.HasSuffix(j, ".journal") && kept(rep.State) {
		cc = append(cc, j)
	}
	for _, q := range d.also {
		cc = append(cc, q)
	}
	if len(cc) == 0 {
		return
	}
	msg.Headers = amqp.Table{"CC": cc}
	if parent, ok := headerString(d.msg.Headers, headerParent); ok {
		msg.Headers[headerParent] = parent
	}
}

// kept reports whether an outcome in state s goes to the journal: not a
// cancelled one, most often its parent's own doing (its end, or a graceful
// stop giving it back), nor one timed out, maybe at the deadline of the
// parent's run that died.
func kept(s wire.State) bool { return s != wire.Cancelled && s != wire.TimedOut }

// decodeAdoption reads an adopt message's body.
func decodeAdoption(m *amqp.Delivery) (adoption, bool) {
	var a adoption
	err := json.Unmarshal(m.Body, &a)
	return a, err == nil && a.ID != ""
}
