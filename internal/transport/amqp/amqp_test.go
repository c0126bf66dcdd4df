package amqp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/internal/router"
	"github.com/atasks-go/atasks/transporttest"
	"github.com/atasks-go/atasks/wire"
)

func ignore(*wire.Reply) {}

func TestConformance(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, func(t *testing.T) (wire.Transport, wire.Transport) {
		f := newFixture(t)
		caller := f.transport(Config{Namespace: transporttest.Namespace}, "caller")
		server := f.transport(Config{Namespace: transporttest.Namespace, Slots: 1}, "server")
		return caller, server
	}, transporttest.Options{Queues: true})
}

func TestCompetingServers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	var mu sync.Mutex
	started := map[string]bool{}
	both := make(chan struct{})
	var bothOnce sync.Once
	for _, name := range []string{"s1", "s2"} {
		srv := f.open(Config{Slots: 1}, name, ignore)
		f.serve(srv, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
			mu.Lock()
			started[name] = true
			if len(started) == 2 {
				bothOnce.Do(func() { close(both) })
			}
			mu.Unlock()
			select {
			case <-both:
			case <-time.After(wait):
			}
			return succeeded(req, strconv.Quote(name))
		}), "work")
	}
	// Each server holds one request at a time, so the first two requests
	// can only both start if each server took one.
	var reqs []*wire.Request
	for i := range 20 {
		reqs = append(reqs, request("work", strconv.Itoa(i)))
	}
	for _, req := range reqs {
		send(t, caller, req)
	}
	served := map[string]int{}
	for _, req := range reqs {
		r := wantFinal(t, in, req.ID, wire.Succeeded)
		served[string(r.Body)]++
	}
	if served[`"s1"`] == 0 || served[`"s2"`] == 0 {
		t.Errorf("requests served per server: %v, want both to serve", served)
	}
}

func TestSendConfirmedAndPersistent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1}, "server", ignore)
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		started <- struct{}{}
		<-release
		return succeeded(req, `"ok"`)
	}), "hold")
	first := request("hold", "first")
	send(t, caller, first)
	<-started

	// The only slot is taken: once Send returns, the broker has confirmed
	// the request, so it must be in the queue, ready.
	req := request("hold", "second")
	req.Parent = "parent-id"
	req.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req.Deadline = time.Now().Add(time.Minute)
	send(t, caller, req)
	ch := f.channel()
	name := server.topo.taskQueue("hold")
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Fatalf("queue %s holds %d ready messages right after Send, want 1", name, q.Messages)
	}
	m, ok, err := ch.Get(name, false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	exp, _ := strconv.Atoi(m.Expiration)
	checks := []struct {
		what      string
		got, want any
	}{
		{"delivery mode", m.DeliveryMode, uint8(2)},
		{"content type", m.ContentType, "application/json"},
		{"message id", m.MessageId, req.ID},
		{"correlation id", m.CorrelationId, req.ID},
		{"reply to", m.ReplyTo, caller.replyQueue()},
		{"type", m.Type, "request"},
		{"deadline header", m.Headers[headerDeadline], req.Deadline.UTC().Format(time.RFC3339Nano)},
		{"parent header", m.Headers[headerParent], req.Parent},
		{"traceparent header", m.Headers[headerTraceParent], req.TraceParent},
		{"expiration within the minute", exp > 50_000 && exp <= 60_000, true},
		{"routing key", m.RoutingKey, "hold"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if err := m.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	close(release)
	wantFinal(t, in, first.ID, wire.Succeeded)
	wantFinal(t, in, req.ID, wire.Succeeded)
}

// waitNewGen waits until tr runs on a generation other than old.
func waitNewGen(t *testing.T, tr *Transport, old *generation) {
	t.Helper()
	timeout := time.After(wait)
	for {
		tr.mu.Lock()
		g, changed := tr.gen, tr.genChanged
		tr.mu.Unlock()
		if g != nil && g != old && !g.isDone() {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s did not reconnect within %v", tr.cfg.ConnectionName, wait)
		}
	}
}

// testReconnect breaks the connections of a caller and a server while two
// calls run, and checks that both calls end (succeeded, or failed with a
// retryable error) and that new calls work.
func testReconnect(t *testing.T, f *fixture, breakConns func(...*Transport)) {
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 2}, "server", ignore)
	started := make(chan string, 8)
	release := make(chan struct{})
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		started <- req.ID
		select {
		case <-release:
		case <-time.After(wait):
		}
		return succeeded(req, `"done"`)
	}), "slow")
	r1, r2 := request("slow", "1"), request("slow", "2")
	send(t, caller, r1)
	send(t, caller, r2)
	<-started
	<-started

	oldCaller, oldServer := caller.current(), server.current()
	breakConns(caller, server)
	waitNewGen(t, caller, oldCaller)
	waitNewGen(t, server, oldServer)
	close(release)
	for _, req := range []*wire.Request{r1, r2} {
		r := in.final(req.ID)
		switch {
		case r == nil:
			t.Fatalf("call %s hung across the reconnect", req.ID)
		case r.State == wire.Succeeded:
		case r.Err != nil && r.Err.Code == wire.CodeUnavailable && r.Err.Retryable:
		default:
			t.Errorf("call %s ended %s (%v), want success or a retryable error", req.ID, r.State, r.Err)
		}
	}
	r3 := request("slow", "3")
	send(t, caller, r3)
	wantFinal(t, in, r3.ID, wire.Succeeded)
}

func TestReconnectAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	testReconnect(t, newFixture(t), func(trs ...*Transport) {
		for _, tr := range trs {
			_ = tr.current().conn.Close()
		}
	})
}

func TestReconnectAfterBrokerClosesConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctl := rabbitmqctl(t, "it closes connections from the broker's side")
	testReconnect(t, f, func(trs ...*Transport) {
		out, err := exec.Command(ctl, "list_connections", "-q", "--no-table-headers", "pid", "client_properties").Output()
		if err != nil {
			t.Fatalf("rabbitmqctl list_connections: %v", err)
		}
		var wg sync.WaitGroup
		for _, tr := range trs {
			property := `{"connection_name","` + tr.cfg.ConnectionName + `"}`
			var pid string
			for line := range strings.Lines(string(out)) {
				if p, props, ok := strings.Cut(strings.TrimSpace(line), "\t"); ok && strings.Contains(props, property) {
					pid = p
				}
			}
			if pid == "" {
				t.Fatalf("connection %q not listed by rabbitmqctl", tr.cfg.ConnectionName)
			}
			wg.Go(func() {
				if out, err := exec.Command(ctl, "close_connection", pid, "test: broker closes connection").CombinedOutput(); err != nil {
					t.Errorf("rabbitmqctl close_connection: %v: %s", err, out)
				}
			})
		}
		wg.Wait()
	})
}

func TestSuspendHoldsNothingBehindParent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1}, "server", ignore)
	childRunning := make(chan struct{})
	releaseChild := make(chan struct{})
	f.serve(server, handlerFunc(func(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
		switch string(req.Body) {
		case `"parent"`:
			child := request("nest", "child")
			child.Parent = req.ID
			d.Suspend()
			if err := caller.Send(ctx, child); err != nil {
				return &wire.Reply{ID: req.ID, State: wire.Failed, Err: wire.AsError(err)}
			}
			r := in.final(child.ID)
			d.Resume()
			if r == nil {
				return &wire.Reply{ID: req.ID, State: wire.Failed, Err: &wire.Error{Code: "no_child_reply"}}
			}
			return succeeded(req, string(r.Body))
		case `"child"`:
			close(childRunning)
			<-releaseChild
			return succeeded(req, `"child done"`)
		}
		return succeeded(req, string(req.Body))
	}), "nest")
	parent := request("nest", "parent")
	send(t, caller, parent)
	if !closed(childRunning) {
		t.Fatal("the child never ran while its parent was suspended on the only slot")
	}
	extra := request("nest", "extra")
	send(t, caller, extra)
	q, err := f.channel().QueueDeclarePassive(server.topo.taskQueue("nest"), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The parent (suspended) and the child (computing) hold one consumer
	// each; with no free slot there is no third consumer, and the extra
	// request waits in the queue instead of in this process.
	if q.Messages != 1 || q.Consumers != 2 {
		t.Errorf("queue has %d ready, %d consumers; want 1 ready, 2 consumers", q.Messages, q.Consumers)
	}
	close(releaseChild)
	if r := wantFinal(t, in, parent.ID, wire.Succeeded); string(r.Body) != `"child done"` {
		t.Errorf("parent returned %s", r.Body)
	}
	wantFinal(t, in, extra.ID, wire.Succeeded)
	// Nobody suspended: back to the base consumer alone.
	waitQueue(t, f.channel(), server.topo.taskQueue("nest"), 1, 0)
}

// A parent that resumes while the extra consumer its suspension opened
// holds its child leaves a debt: that consumer is cancelled before the
// child is acknowledged, so no third request comes in while the parent
// computes on the only slot.
func TestResumeCancelsBusyExtraBeforeAck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1}, "server", ignore)
	childStarted, parentResumed := make(chan struct{}), make(chan struct{})
	releaseChild, releaseParent, extraRan := make(chan struct{}), make(chan struct{}), make(chan struct{})
	f.serve(server, handlerFunc(func(ctx context.Context, req *wire.Request, d wire.Delivery) *wire.Reply {
		switch string(req.Body) {
		case `"parent"`:
			child := request("debt", "child")
			child.Parent = req.ID
			d.Suspend()
			if err := caller.Send(ctx, child); err != nil {
				return &wire.Reply{ID: req.ID, State: wire.Failed, Err: wire.AsError(err)}
			}
			<-childStarted
			d.Resume()
			close(parentResumed)
			<-releaseParent
		case `"child"`:
			close(childStarted)
			<-releaseChild
		case `"extra"`:
			close(extraRan)
		}
		return succeeded(req, `""`)
	}), "debt")
	name := server.topo.taskQueue("debt")
	ch := f.channel()
	parent, extra := request("debt", "parent"), request("debt", "extra")
	send(t, caller, parent)
	if !closed(parentResumed) {
		t.Fatal("the parent never resumed")
	}
	send(t, caller, extra)
	waitQueue(t, ch, name, 2, 1) // base (parent) and the busy extra (child)
	close(releaseChild)
	waitQueue(t, ch, name, 1, 1) // the extra is gone, and did not take the request
	select {
	case <-extraRan:
		t.Fatal("a request ran while the resumed parent held the only slot")
	default:
	}
	close(releaseParent)
	for _, id := range []string{parent.ID, extra.ID} {
		wantFinal(t, in, id, wire.Succeeded)
	}
}

// A server with many slots has one consumer per task queue, opened at
// once, which takes many requests at a time.
func TestOneConsumerPerTaskQueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	server := f.open(Config{Slots: 1000}, "server", ignore)
	const parallel = 50
	var mu sync.Mutex
	started := 0
	all := make(chan struct{})
	tasks := []string{"a", "b", "c", "d", "e"}
	begin := time.Now()
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		if req.Task == "a" {
			mu.Lock()
			if started++; started == parallel {
				close(all)
			}
			mu.Unlock()
			if !closed(all) {
				return &wire.Reply{ID: req.ID, State: wire.Failed, Err: &wire.Error{Code: "not_parallel"}}
			}
		}
		return succeeded(req, `""`)
	}), tasks...)
	ch := f.channel()
	for _, task := range tasks {
		waitQueue(t, ch, server.topo.taskQueue(task), 1, 0)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("serving %d tasks with Slots 1000 took %v", len(tasks), took)
	}
	var reqs []*wire.Request
	for i := range parallel {
		reqs = append(reqs, request("a", strconv.Itoa(i)))
	}
	for _, task := range tasks[1:] {
		reqs = append(reqs, request(task, "x"))
	}
	for _, req := range reqs {
		send(t, caller, req)
	}
	for _, req := range reqs {
		wantFinal(t, in, req.ID, wire.Succeeded)
	}
	for _, task := range tasks {
		waitQueue(t, ch, server.topo.taskQueue(task), 1, 0)
	}
}

// A run that Close stops gives its request back: it counts as an attempt
// the caller sees, never as a failed delivery.
func TestCloseGivesBackWithoutCountingDelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	// A delivery limit of 1: a given-back run must not count as a failed delivery.
	a := f.open(Config{Slots: 1, DeliveryLimit: 1}, "server a", ignore)
	started := make(chan struct{})
	f.serve(a, handlerFunc(func(ctx context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		close(started)
		<-ctx.Done()
		return &wire.Reply{ID: req.ID, State: wire.Cancelled, Err: wire.AsError(ctx.Err())}
	}), "long")
	req := request("long", "x")
	send(t, caller, req)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a handler running past ctx: %v, want context.DeadlineExceeded", err)
	}
	b := f.open(Config{Slots: 1, DeliveryLimit: 1}, "server b", ignore)
	f.serve(b, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, strconv.Itoa(req.Attempt))
	}), "long")
	if r := wantFinal(t, in, req.ID, wire.Succeeded); string(r.Body) != "2" {
		t.Errorf("request given back by Close ran as attempt %s, want 2: the stopped run counts", r.Body)
	}
}

func TestIdentityRepliesSurviveRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in1 := newInbox()
	c1 := f.open(Config{Identity: "gw"}, "caller 1", in1.deliver)
	server := f.open(Config{}, "server", ignore)
	started := make(chan struct{})
	release := make(chan struct{})
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		close(started)
		<-release
		return succeeded(req, `"kept"`)
	}), "job")
	req := request("job", "x")
	send(t, c1, req)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if r := in1.final(req.ID); r == nil || r.Err == nil || r.Err.Code != wire.CodeUnavailable || !r.Err.Retryable {
		t.Errorf("closing caller: final %+v, want a retryable unavailable error", r)
	}
	close(release)
	in2 := newInbox()
	f.open(Config{Identity: "gw"}, "caller 2", in2.deliver)
	if r := wantFinal(t, in2, req.ID, wire.Succeeded); string(r.Body) != `"kept"` {
		t.Errorf("reply after restart: %s", r.Body)
	}
}

// The poison and lease tests run servers in child processes (this test
// binary, re-executed with childEnv set), so that a handler can kill its
// whole process with SIGKILL, as a crashing worker would.
const (
	childEnv         = "ATASKS_AMQP_TEST_CHILD" // the child's prefix
	childIdentityEnv = "ATASKS_AMQP_TEST_CHILD_IDENTITY"
	childNameEnv     = "ATASKS_AMQP_TEST_CHILD_NAME"
	childModeEnv     = "ATASKS_AMQP_TEST_CHILD_MODE" // "poison" or "lease"
	poisonLimit      = 2
)

// Lease settings of the lease tests: a request is leased after
// testLeaseAfter, and its lease copies come back every testLeasePeriod.
const (
	testLeaseAfter  = 300 * time.Millisecond
	testLeasePeriod = 500 * time.Millisecond
	testAnnounce    = 100 * time.Millisecond // lease queries wait two of these
)

// leaseConfig is cfg with the lease tests' settings.
func leaseConfig(cfg Config) Config {
	cfg.LeaseAfter, cfg.LeasePeriod, cfg.AnnounceInterval = testLeaseAfter, testLeasePeriod, testAnnounce
	return cfg
}

// runChild serves until its stdin closes. In mode "poison" it serves task
// "boom": a request with body "poison" kills the process; any other is
// answered with its attempt. In mode "lease" it serves task "long" with the
// lease tests' settings and kills itself once it has leased the request.
func runChild() int {
	cfg := Config{
		URL:            os.Getenv("ATASKS_AMQP_URL"),
		Prefix:         os.Getenv(childEnv),
		Identity:       os.Getenv(childIdentityEnv),
		ConnectionName: os.Getenv(childNameEnv),
		Slots:          1,
		Logger:         testLogger(),
	}
	task := "boom"
	if os.Getenv(childModeEnv) == "lease" {
		cfg, task = leaseConfig(cfg), "long"
	} else {
		cfg.DeliveryLimit = poisonLimit
	}
	tr, err := New(cfg)
	if err != nil {
		return 3
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := tr.Open(ctx, ignore); err != nil {
		return 3
	}
	err = tr.Serve(ctx, []string{task}, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		switch {
		case task == "long":
			waitLeased(tr, req.ID)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case string(req.Body) == `"poison"`:
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
		return succeeded(req, strconv.Itoa(req.Attempt))
	}))
	if err != nil {
		return 3
	}
	_, _ = bufio.NewReader(os.Stdin).ReadString(0) // until the parent closes stdin
	_ = tr.Close(ctx)
	return 0
}

// waitLeased waits until tr has leased (parked and acked) invocation id.
func waitLeased(tr *Transport, id string) bool {
	timeout := time.After(wait)
	for {
		srv := tr.serving()
		srv.mu.Lock()
		leased := false
		for d := range srv.active {
			leased = leased || d.id == id && d.leased
		}
		srv.mu.Unlock()
		if leased {
			return true
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-timeout:
			return false
		}
	}
}

// children starts servers in child processes (see runChild) and stops them
// when the test ends; killed receives a value when one is killed by a signal.
type children struct {
	t      *testing.T
	f      *fixture
	caller *Transport
	mode   string
	n      int
	killed chan struct{}
}

func newChildren(t *testing.T, f *fixture, caller *Transport, mode string) *children {
	return &children{t: t, f: f, caller: caller, mode: mode, killed: make(chan struct{}, 8)}
}

// start starts one more child.
func (cs *children) start() {
	t := cs.t
	cs.n++
	identity := "child" + strconv.Itoa(cs.n)
	cs.f.addQueue(cs.caller.topo.replyQueue(identity))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		"ATASKS_AMQP_URL="+cs.f.url,
		childEnv+"="+cs.f.prefix,
		childIdentityEnv+"="+identity,
		childNameEnv+"="+t.Name()+" "+identity,
		childModeEnv+"="+cs.mode,
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cmd.Wait(); err != nil && !cmd.ProcessState.Exited() {
			cs.killed <- struct{}{} // by a signal
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

func TestPoisonDeadLettered(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{}, "caller", in.deliver)
	// An in-process server of another task answers the namespace's dead letters.
	helper := f.open(Config{}, "dead letters", ignore)
	f.serve(helper, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, `""`)
	}), "other")
	f.addQueue(caller.topo.taskQueue("boom"))
	cs := newChildren(t, f, caller, "poison")
	cs.start()
	waitForTask(t, caller, "boom")

	poison, innocent := request("boom", "poison"), request("boom", "innocent")
	send(t, caller, poison)
	send(t, caller, innocent)
	finals := make(chan *wire.Reply, 2)
	for _, id := range []string{poison.ID, innocent.ID} {
		go func() { finals <- in.final(id) }()
	}
	kills := 0
	got := map[string]*wire.Reply{}
	timeout := time.After(2 * wait)
	for len(got) < 2 {
		select {
		case <-cs.killed:
			kills++
			cs.start()
		case r := <-finals:
			if r == nil {
				t.Fatalf("no final reply within %v (got %d, %d workers killed)", wait, len(got), kills)
			}
			got[r.ID] = r
		case <-timeout:
			t.Fatalf("no final replies (got %d, %d workers killed)", len(got), kills)
		}
	}
	if r := got[poison.ID]; r.State != wire.Failed || r.Err == nil || r.Err.Code != wire.CodePoison {
		t.Errorf("poison request ended %s (%v), want failed with code %q", r.State, r.Err, wire.CodePoison)
	}
	if r := got[innocent.ID]; r.State != wire.Succeeded || string(r.Body) != "1" {
		t.Errorf("innocent request ended %s (%v) on attempt %s, want success on attempt 1", r.State, r.Err, r.Body)
	}
	if kills != poisonLimit {
		t.Errorf("%d workers killed, want %d (DeliveryLimit)", kills, poisonLimit)
	}
}

// waitForTask waits until tr's catalog lists task.
func waitForTask(t *testing.T, tr *Transport, task string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(wait)
	for {
		infos, err := tr.Catalog(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(infos, func(i wire.TaskInfo) bool { return i.Name == task }) {
			return
		}
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("no server announced %s within %v", task, wait)
		}
	}
}

// With several URLs, a transport connects to the first that answers: here
// the second, since nothing listens where the first points.
func TestSeveralURLs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := newInbox()
	caller := f.open(Config{URL: "amqp://guest:guest@127.0.0.1:1/, " + f.url}, "caller", in.deliver)
	server := f.open(Config{URL: f.url + "," + f.url}, "server", ignore)
	f.serve(server, handlerFunc(func(_ context.Context, req *wire.Request, _ wire.Delivery) *wire.Reply {
		return succeeded(req, "ok")
	}), "t")
	req := request("t", "x")
	send(t, caller, req)
	wantFinal(t, in, req.ID, wire.Succeeded)
	if err := caller.Check(context.Background()); err != nil {
		t.Fatalf("connected through the second URL, yet: %v", err)
	}
}

// A peer written from docs/PROTOCOL.md alone publishes requests as its
// client library writes them: content types with parameters or none,
// integer headers of other widths or as decimal strings. A server behind
// the router (which checks codecs) answers them all; the replies it makes
// up without running the task carry the task and no worker or attempt
// (a final reply with either says an attempt ran, §5), and the checks
// come in §4's order: the deadline before the codec.
func TestWireRequestsFromOtherClients(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tr := f.transport(Config{}, "server")
	r, err := router.New(router.Config{NS: "default", Transport: tr, Worker: "w1", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = r.Close(ctx)
	})
	echo := router.Handler{Fn: func(_ context.Context, _ wire.Codec, body []byte) ([]byte, error) { return body, nil }}
	if err := r.Serve(ctx, map[string]router.Handler{"echo": echo}, nil); err != nil {
		t.Fatal(err)
	}

	ch := f.channel()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	cancelledID := randomID()
	note, err := controlPublishing(typeCancel, cancelRequest{ID: cancelledID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx, tr.topo.control(), "", false, false, note); err != nil {
		t.Fatal(err)
	}
	srv := tr.serving()
	for heard := false; !heard; {
		srv.mu.Lock()
		heard = srv.cancelled.has(cancelledID, time.Now())
		srv.mu.Unlock()
		select {
		case <-ctx.Done():
			t.Fatal("the server did not hear the cancel")
		case <-time.After(10 * time.Millisecond):
		}
	}

	type want struct {
		state, code string
		attempt     int // 0: the reply must have no attempt and no worker
	}
	tests := []struct {
		name, contentType string
		headers           amqp.Table
		id                string
		want              want
	}{
		{"charset parameter", "application/json; charset=utf-8", nil, "", want{"succeeded", "", 1}},
		{"no content type", "", nil, "", want{"succeeded", "", 1}},
		{"upper case", "Application/JSON", nil, "", want{"succeeded", "", 1}},
		{"32-bit attempt (pika)", "application/json", amqp.Table{headerAttempt: int32(2)}, "", want{"succeeded", "", 2}},
		{"decimal string attempt", "application/json", amqp.Table{headerAttempt: "3"}, "", want{"succeeded", "", 3}},
		{"unknown codec", "application/msgpack", nil, "", want{"failed", wire.CodeUnknownCodec, 0}},
		{"deadline passed, unknown codec", "application/msgpack", amqp.Table{headerDeadline: past}, "", want{"timed_out", wire.CodeTimeout, 0}},
		{"bad deadline", "application/json", amqp.Table{headerDeadline: "tomorrow"}, "", want{"failed", wire.CodeBadInput, 0}},
		{"poison copy", "application/json", amqp.Table{headerAttempt: uint8(tr.cfg.DeliveryLimit + 1)}, "", want{"failed", wire.CodePoison, 0}},
		{"cancelled", "application/json", nil, cancelledID, want{"cancelled", wire.CodeCancelled, 0}},
	}
	byID := map[string]int{}
	for i, tt := range tests {
		id := tt.id
		if id == "" {
			id = randomID()
		}
		byID[id] = i
		err := ch.PublishWithContext(ctx, tr.topo.tasks(), "echo", false, false, amqp.Publishing{
			ContentType: tt.contentType, MessageId: id, ReplyTo: q.Name, Headers: tt.headers, Body: []byte(`"hi"`),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range tests {
		var m amqp.Delivery
		for {
			select {
			case m = <-replies:
			case <-ctx.Done():
				t.Fatalf("not every request was answered within %v", wait)
			}
			if strings.Contains(string(m.Body), `"state":"running"`) {
				continue
			}
			break
		}
		i, ok := byID[m.CorrelationId]
		if !ok {
			t.Fatalf("reply for no request: %s", m.Body)
		}
		delete(byID, m.CorrelationId)
		tt := tests[i]
		var env struct {
			ID, Task, State, Worker, Codec string
			Attempt                        int
			Body                           []byte
			Error                          *wire.Error
		}
		if err := json.Unmarshal(m.Body, &env); err != nil {
			t.Fatalf("%s: reply %s: %v", tt.name, m.Body, err)
		}
		var code string
		if env.Error != nil {
			code = env.Error.Code
		}
		if m.Type != typeReply || env.ID != m.CorrelationId || env.Task != "echo" || env.State != tt.want.state || code != tt.want.code {
			t.Errorf("%s: reply %s (type %q); want id, task echo, state %s, code %q", tt.name, m.Body, m.Type, tt.want.state, tt.want.code)
		}
		ran := tt.want.attempt > 0
		if ran && (env.Worker != "w1" || env.Attempt != tt.want.attempt || env.Codec != "json" || string(env.Body) != `"hi"`) {
			t.Errorf("%s: reply %s; want worker w1, attempt %d, codec json, body \"hi\"", tt.name, m.Body, tt.want.attempt)
		}
		if !ran && (env.Worker != "" || env.Attempt != 0) {
			t.Errorf("%s: reply %s made up without running, yet with a worker or an attempt", tt.name, m.Body)
		}
	}
}

// A server written from docs/PROTOCOL.md may announce fields atasks'
// servers do not send (codecs) or leave out those it need not: the
// catalog lists its tasks all the same.
func TestAnnounceFromOtherServers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	caller := f.open(Config{}, "caller", ignore)
	ch := f.channel()
	msg := amqp.Publishing{
		ContentType: "application/json; charset=utf-8", Type: typeAnnounce,
		Body: []byte(`{"server":"py-1","tasks":["py.upper"],"ttl_ms":15000,"codecs":["json"],"language":"python"}`),
	}
	if err := ch.PublishWithContext(context.Background(), caller.topo.control(), "", false, false, msg); err != nil {
		t.Fatal(err)
	}
	waitForTask(t, caller, "py.upper")
}
