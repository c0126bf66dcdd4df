package amqp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/atasks-go/atasks/wire"
)

// wait bounds every wait of these tests.
const wait = 15 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

var (
	brokerOnce sync.Once
	brokerErr  error
)

// brokerURL returns the broker the tests use: $ATASKS_AMQP_URL, or the
// local default. Without a reachable broker the test fails under CI=true
// and is skipped elsewhere, saying how to get one.
func brokerURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("ATASKS_AMQP_URL")
	if url == "" {
		url = Config{}.WithDefaults().URL
	}
	brokerOnce.Do(func() {
		conn, err := amqp.Dial(url)
		if err == nil {
			_ = conn.Close()
		}
		brokerErr = err
	})
	if brokerErr != nil {
		msg := fmt.Sprintf("no RabbitMQ at %s: %v\n"+
			"Start one (Debian: apt-get install rabbitmq-server && rabbitmq-server -detached; "+
			"Docker: docker run -d -p 5672:5672 rabbitmq:3.10) or point ATASKS_AMQP_URL at one.", url, brokerErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return url
}

// testLogger discards unless ATASKS_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("ATASKS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fixture is one test's share of the broker: a unique prefix, and the
// broker objects to delete when the test ends.
type fixture struct {
	t      *testing.T
	url    string
	prefix string

	mu         sync.Mutex
	transports []*Transport
	queues     []string
}

// newFixture registers deleting the test's broker objects; since t.Cleanup
// runs in reverse, that happens after the transports are closed.
func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, url: brokerURL(t), prefix: "t" + randomID()}
	t.Cleanup(f.deleteAll)
	return f
}

// config is cfg completed for this test: URL, prefix, connection name.
func (f *fixture) config(cfg Config, role string) Config {
	if cfg.URL == "" {
		cfg.URL = f.url
	}
	cfg.Prefix = f.prefix
	cfg.ConnectionName = f.t.Name() + " " + role
	cfg.Logger = testLogger()
	return cfg
}

// transport returns a new, unopened transport.
func (f *fixture) transport(cfg Config, role string) *Transport {
	f.t.Helper()
	tr, err := New(f.config(cfg, role))
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.transports = append(f.transports, tr)
	f.mu.Unlock()
	return tr
}

// open returns an opened transport that Cleanup closes.
func (f *fixture) open(cfg Config, role string, deliver func(*wire.Reply)) *Transport {
	f.t.Helper()
	tr := f.transport(cfg, role)
	f.opened(tr, deliver)
	return tr
}

// opened opens tr, which Cleanup closes.
func (f *fixture) opened(tr *Transport, deliver func(*wire.Reply)) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.Open(ctx, deliver); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = tr.Close(ctx)
	})
}

// serve starts tr serving tasks with h.
func (f *fixture) serve(tr *Transport, h wire.Handler, tasks ...string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.Serve(ctx, tasks, h); err != nil {
		f.t.Fatal(err)
	}
}

// addQueue records a queue declared outside the fixture's transports.
func (f *fixture) addQueue(name string) {
	f.mu.Lock()
	f.queues = append(f.queues, name)
	f.mu.Unlock()
}

// channel returns a channel on a connection of the test's own.
func (f *fixture) channel() *amqp.Channel {
	f.t.Helper()
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(f.t.Name() + " test")
	conn, err := amqp.DialConfig(f.url, amqp.Config{Properties: props})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		f.t.Fatal(err)
	}
	return ch
}

// deleteAll deletes every queue and exchange the test's transports declared.
func (f *fixture) deleteAll() {
	queues := map[string]bool{}
	exchanges := map[string]bool{}
	f.mu.Lock()
	for _, q := range f.queues {
		queues[q] = true
	}
	for _, tr := range f.transports {
		queues[tr.replyQueue()] = true
		queues[tr.topo.dead()] = true
		queues[tr.topo.lease()] = true
		exchanges[tr.topo.lease()] = true
		exchanges[tr.topo.tasks()] = true
		exchanges[tr.topo.control()] = true
		exchanges[tr.topo.dlx()] = true
		exchanges[tr.topo.activity()] = true
		exchanges[tr.topo.due()] = true
		queues[tr.topo.due()] = true
		queues[tr.topo.cancels()] = true
		for k := range DelayRungs {
			queues[tr.topo.delay(k)] = true
		}
		tr.retryQueues.Range(func(q, _ any) bool { queues[q.(string)] = true; return true })
		if srv := tr.serving(); srv != nil {
			queues[tr.topo.journal()] = true
			for _, q := range srv.queues {
				queues[q.name] = true
			}
		}
	}
	f.mu.Unlock()
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(f.t.Name() + " cleanup")
	conn, err := amqp.DialConfig(f.url, amqp.Config{Properties: props})
	if err != nil {
		f.t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	del := func(kind, name string, op func(*amqp.Channel) error) {
		ch, err := conn.Channel()
		if err == nil {
			err = op(ch)
			_ = ch.Close()
		}
		if err != nil {
			f.t.Errorf("cleanup: delete %s %s: %v", kind, name, err)
		}
	}
	for q := range queues {
		del("queue", q, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err })
	}
	for x := range exchanges {
		del("exchange", x, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) })
	}
}

// inbox sorts replies by invocation id.
type inbox struct {
	mu   sync.Mutex
	byID map[string]chan *wire.Reply
}

func newInbox() *inbox { return &inbox{byID: map[string]chan *wire.Reply{}} }

func (b *inbox) ch(id string) chan *wire.Reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.byID[id]
	if !ok {
		c = make(chan *wire.Reply, 64)
		b.byID[id] = c
	}
	return c
}

func (b *inbox) deliver(r *wire.Reply) {
	select {
	case b.ch(r.ID) <- r:
	default:
	}
}

// final returns the first final reply for id, or nil after wait.
func (b *inbox) final(id string) *wire.Reply {
	timeout := time.After(wait)
	for {
		select {
		case r := <-b.ch(id):
			if r.State.Final() {
				return r
			}
		case <-timeout:
			return nil
		}
	}
}

// slowHandler counts its runs in runs, takes d (or until its context ends)
// and answers with the attempt number.
func slowHandler(runs *atomic.Int32, d time.Duration) handlerFunc {
	return func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		runs.Add(1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return &wire.Reply{ID: req.ID, State: wire.Cancelled, Err: wire.AsError(ctx.Err())}
		}
		return succeeded(req, strconv.Itoa(req.Attempt))
	}
}

// handlerFunc adapts a function to wire.Handler.
type handlerFunc func(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply

func (f handlerFunc) Handle(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
	return f(ctx, req, d)
}

func request(task, body string) *wire.Request {
	return &wire.Request{ID: randomID(), NS: "default", Task: task, Codec: "json", Body: []byte(strconv.Quote(body))}
}

func succeeded(req *wire.Request, body string) *wire.Reply {
	return &wire.Reply{ID: req.ID, State: wire.Succeeded, Codec: req.Codec, Body: []byte(body)}
}

// send sends req through tr, failing the test on error.
func send(t *testing.T, tr *Transport, req *wire.Request) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.Send(ctx, req); err != nil {
		t.Fatalf("send %s: %v", req.Task, err)
	}
}

// wantFinal fails unless b gets a final reply for id in state.
func wantFinal(t *testing.T, b *inbox, id string, state wire.State) *wire.Reply {
	t.Helper()
	r := b.final(id)
	if r == nil {
		t.Fatalf("no final reply for %s within %v", id, wait)
	}
	if r.State != state {
		t.Fatalf("final reply for %s: %s (%v), want %s", id, r.State, r.Err, state)
	}
	return r
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(wait):
		return false
	}
}

// rabbitmqctl returns the path of rabbitmqctl, which the tests use to
// look at the broker from its side. Without it a test fails under CI=true
// and is skipped elsewhere.
func rabbitmqctl(t *testing.T, why string) string {
	t.Helper()
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		msg := "rabbitmqctl not found: " + why
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return ctl
}

// queueCounts returns the ready and unacknowledged messages of queue, as
// the broker counts them.
func queueCounts(t *testing.T, queue string) (ready, unacked int) {
	t.Helper()
	ctl := rabbitmqctl(t, "it counts unacknowledged messages")
	out, err := exec.Command(ctl, "list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged").Output()
	if err != nil {
		t.Fatalf("rabbitmqctl list_queues: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 3 && fields[0] == queue {
			ready, _ = strconv.Atoi(fields[1])
			unacked, _ = strconv.Atoi(fields[2])
			return ready, unacked
		}
	}
	t.Fatalf("queue %s not listed by rabbitmqctl", queue)
	return 0, 0
}

// waitQueue waits until queue has the given consumers and ready messages,
// as queue.declare-ok reports them.
func waitQueue(t *testing.T, ch *amqp.Channel, queue string, consumers, ready int) {
	t.Helper()
	timeout := time.After(wait)
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Consumers == consumers && q.Messages == ready {
			return
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-timeout:
			t.Fatalf("queue %s has %d consumers, %d ready; want %d, %d", queue, q.Consumers, q.Messages, consumers, ready)
		}
	}
}

// noMoreFinal fails if b gets another final reply for id within d.
func noMoreFinal(t *testing.T, b *inbox, id string, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case r := <-b.ch(id):
			if r.State.Final() {
				t.Errorf("second final reply for %s: %s (%v) %s", id, r.State, r.Err, r.Body)
			}
		case <-timeout:
			return
		}
	}
}
