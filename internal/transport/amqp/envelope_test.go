package amqp

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/atasks-go/atasks/wire"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{}, false},
		{"amqps", Config{URL: "amqps://u:p@host:5671/vhost"}, false},
		{"bad scheme", Config{URL: "http://host/"}, true},
		{"dot in namespace", Config{Namespace: "a.b"}, true},
		{"space in prefix", Config{Prefix: "a b"}, true},
		{"dot in identity", Config{Identity: "gw.1"}, true},
		{"negative slots", Config{Slots: -1}, true},
		{"most slots", Config{Slots: 65535}, false},
		{"too many slots", Config{Slots: 65536}, true},
		{"tiny lease after", Config{LeaseAfter: time.Millisecond}, true},
		{"negative lease period", Config{LeasePeriod: -time.Second}, true},
		{"negative delivery limit", Config{DeliveryLimit: -2}, true},
		{"tiny announce interval", Config{AnnounceInterval: time.Millisecond}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("New(%+v): %v, want error %v", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestExpiration(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		deadline time.Time
		want     string
	}{
		{now.Add(time.Second), "1000"},
		{now.Add(1500 * time.Microsecond), "2"}, // rounded up, never early
		{now, "0"},
		{now.Add(-time.Hour), "0"},
	}
	for _, tt := range tests {
		if got := expiration(tt.deadline, now); got != tt.want {
			t.Errorf("expiration(%v): %q, want %q", tt.deadline.Sub(now), got, tt.want)
		}
	}
}

func TestCodecContentType(t *testing.T) {
	for _, c := range []string{"json", "cbor", "msgpack"} {
		if got := codecOf(contentType(c)); got != c {
			t.Errorf("codecOf(contentType(%q)) = %q", c, got)
		}
	}
	tests := []struct{ ct, want string }{
		{"application/json", "json"},
		{"application/json; charset=utf-8", "json"},
		{"Application/JSON;charset=UTF-8", "json"},
		{" application/cbor ; x=y", "cbor"},
		{"", "json"},       // no content type: JSON
		{" ; q=1", "json"}, // parameters only: no media type either
		{"text/plain", "text/plain"},
		{"text/plain; charset=utf-8", "text/plain"},
		{"application/", "application/"},
	}
	for _, tt := range tests {
		if got := codecOf(tt.ct); got != tt.want {
			t.Errorf("codecOf(%q) = %q, want %q", tt.ct, got, tt.want)
		}
	}
}

func TestHeaderInt(t *testing.T) {
	tests := []struct {
		v    any
		want int
	}{
		{nil, 0},
		{int8(3), 3},
		{uint8(3), 3},
		{int16(3), 3},
		{uint16(3), 3},
		{int32(3), 3}, // pika's Python int
		{uint32(3), 3},
		{int64(3), 3},
		{uint64(3), 3},
		{3, 3},
		{"3", 3},
		{" 12 ", 12},
		{[]byte("7"), 7},
		{int64(-2), 0},
		{"-2", 0},
		{"3.0", 0},
		{"x", 0},
		{3.0, 0},
		{true, 0},
		{uint64(1 << 63), 0},
	}
	for _, tt := range tests {
		if got := headerInt(amqp.Table{"k": tt.v}, "k"); got != tt.want {
			t.Errorf("headerInt(%T %v) = %d, want %d", tt.v, tt.v, got, tt.want)
		}
	}
}

func TestHeaderTrue(t *testing.T) {
	for v, want := range map[any]bool{nil: false, true: true, false: false, int32(1): true, int8(0): false, "1": true, "yes": false} {
		if got := headerTrue(amqp.Table{"k": v}, "k"); got != want {
			t.Errorf("headerTrue(%T %v) = %v, want %v", v, v, got, want)
		}
	}
	if headerTrue(amqp.Table{}, "k") {
		t.Error("an absent header is true")
	}
}

func TestRequestRoundTrip(t *testing.T) {
	now := time.Now()
	req := &wire.Request{
		ID: "id1", NS: "ns", Task: "add", Codec: "cbor", Body: []byte{1, 2},
		Deadline: now.Add(time.Minute), Parent: "p1", TraceParent: "00-aa-bb-01", Quiet: true,
	}
	p := requestPublishing(req, "reply.q", now)
	m := &amqp.Delivery{
		Headers: p.Headers, ContentType: p.ContentType, MessageId: p.MessageId,
		CorrelationId: p.CorrelationId, ReplyTo: p.ReplyTo, Body: p.Body,
	}
	got, bad := decodeRequest(m, "ns", "add")
	if bad != nil {
		t.Fatal(bad)
	}
	want := *req
	want.Attempt, want.ReplyTo = 1, "reply.q"
	if !got.Deadline.Equal(want.Deadline) {
		t.Errorf("deadline %v, want %v", got.Deadline, want.Deadline)
	}
	got.Deadline = want.Deadline
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("decoded %+v, want %+v", *got, want)
	}

	m.Headers = amqp.Table{headerDeadline: "tomorrow", headerDeliveryCount: int64(2)}
	got, bad = decodeRequest(m, "ns", "add")
	if bad == nil || bad.Code != wire.CodeBadInput {
		t.Errorf("bad deadline header: error %v, want bad_input", bad)
	}
	if got.Attempt != 3 {
		t.Errorf("attempt %d with x-delivery-count 2, want 3", got.Attempt)
	}
}

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		body    string
		wantErr bool
	}{
		{`{"id":"a","state":"succeeded","codec":"json","body":"MQ=="}`, false},
		{`{"id":"a","task":"demo.add","state":"succeeded","codec":"json","body":"MQ=="}`, false},
		{`{"id":"a","state":"running","child":"b"}`, false},
		{`{"id":"a","state":"failed","error":{"code":"poison","message":"m","retryable":false}}`, false},
		{`{"id":"a","state":"failed"}`, true},
		{`{"state":"succeeded"}`, true},
		{`{"id":"a"}`, true},
		{`{"id":"a","state":"0"}`, true},
		{`{"id":"a","state":"succeeded","body":"not base64!"}`, true},
		{`[]`, true},
		{``, true},
	}
	for _, tt := range tests {
		if _, err := decodeReply([]byte(tt.body)); (err != nil) != tt.wantErr {
			t.Errorf("decodeReply(%s): %v, want error %v", tt.body, err, tt.wantErr)
		}
	}
}

func TestReplyCarriesTask(t *testing.T) {
	want := &wire.Reply{ID: "a", Task: "demo.add", State: wire.Succeeded, Codec: "json", Body: []byte("3")}
	p, err := replyPublishing(want, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(p.Body, &env); err != nil || env["task"] != "demo.add" {
		t.Errorf("envelope %s: task %v, want demo.add", p.Body, env["task"])
	}
	got, err := decodeReply(p.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	p, _ = replyPublishing(&wire.Reply{ID: "a", State: wire.Running}, time.Now())
	if strings.Contains(string(p.Body), `"task"`) {
		t.Errorf("envelope without a task: %s, want no task field", p.Body)
	}
}

// A reply's body without a codec is JSON; a reply without a body keeps
// its codec as sent.
func TestReplyCodecDefaultsToJSON(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"id":"a","state":"succeeded","body":"MQ=="}`, "json"},
		{`{"id":"a","state":"succeeded","codec":"cbor","body":"AQ=="}`, "cbor"},
		{`{"id":"a","state":"failed","error":{"code":"poison","message":"m","retryable":false}}`, ""},
	}
	for _, tt := range tests {
		r, err := decodeReply([]byte(tt.body))
		if err != nil {
			t.Fatalf("decodeReply(%s): %v", tt.body, err)
		}
		if r.Codec != tt.want {
			t.Errorf("decodeReply(%s): codec %q, want %q", tt.body, r.Codec, tt.want)
		}
	}
}

func TestAttempt(t *testing.T) {
	tests := []struct {
		name    string
		headers amqp.Table
		want    int
	}{
		{"fresh", nil, 1},
		{"redelivered twice", amqp.Table{headerDeliveryCount: int64(2)}, 3},
		{"leased after attempt 2", amqp.Table{headerAttempt: int64(3)}, 3},
		{"leased, then redelivered", amqp.Table{headerAttempt: int32(3), headerDeliveryCount: int64(1)}, 4},
		{"nonsense", amqp.Table{headerAttempt: "x", headerDeliveryCount: int64(-4)}, 1},
	}
	for _, tt := range tests {
		if got := attempt(tt.headers); got != tt.want {
			t.Errorf("%s: attempt %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestCopies(t *testing.T) {
	now := time.Now()
	deadline := now.Add(time.Minute).UTC().Format(time.RFC3339Nano)
	m := &amqp.Delivery{
		Headers: amqp.Table{
			headerDeadline: deadline, headerParent: "p", headerLeaseHolder: "h",
			headerAttempt: int64(2), headerDeliveryCount: int64(1), headerDeath: []any{},
		},
		ContentType: "application/json", MessageId: "id", CorrelationId: "id", ReplyTo: "r", Type: typeRequest, Body: []byte("1"),
	}
	lease := leasePublishing(m, "me", 4, 1500*time.Millisecond)
	if lease.Expiration != "1500" || lease.Headers[headerLeaseHolder] != "me" || lease.Headers[headerAttempt] != int64(4) {
		t.Errorf("lease copy: expiration %q, headers %v", lease.Expiration, lease.Headers)
	}
	for _, h := range []string{headerDeliveryCount, headerDeath} {
		if _, ok := lease.Headers[h]; ok {
			t.Errorf("lease copy keeps %s", h)
		}
	}
	if lease.MessageId != "id" || lease.ReplyTo != "r" || lease.DeliveryMode != amqp.Persistent || lease.Headers[headerParent] != "p" {
		t.Errorf("lease copy lost properties: %+v", lease)
	}

	ran := giveBackPublishing(m, true, now)
	if _, ok := ran.Headers[headerLeaseHolder]; ok || ran.Headers[headerAttempt] != int64(4) || ran.Headers[headerGivenBack] != int64(1) {
		t.Errorf("give-back of a run request: headers %v, want no holder, attempt 4, given back once", ran.Headers)
	}
	again := giveBackPublishing(&amqp.Delivery{Headers: ran.Headers}, true, now)
	if again.Headers[headerAttempt] != int64(5) || again.Headers[headerGivenBack] != int64(2) {
		t.Errorf("second give-back: headers %v, want attempt 5, given back twice", again.Headers)
	}
	if exp, _ := strconv.Atoi(ran.Expiration); exp < 59_000 || exp > 60_000 {
		t.Errorf("give-back expiration %q, want the minute to the deadline", ran.Expiration)
	}
	unrun := giveBackPublishing(m, false, now)
	if _, counted := unrun.Headers[headerGivenBack]; unrun.Headers[headerLeaseHolder] != "h" || unrun.Headers[headerAttempt] != int64(3) || counted {
		t.Errorf("give-back of an unexamined lease copy: headers %v, want holder h, attempt 3, not counted", unrun.Headers)
	}
	first := giveBackPublishing(&amqp.Delivery{Headers: amqp.Table{}}, false, now)
	if _, ok := first.Headers[headerAttempt]; ok || first.Expiration != "" {
		t.Errorf("give-back of a first delivery that never ran: headers %v, expiration %q; want neither", first.Headers, first.Expiration)
	}
}

func TestLastDeath(t *testing.T) {
	leased := amqp.Table{"reason": "expired", "queue": "p.ns.lease"}
	poisoned := amqp.Table{"reason": "delivery_limit", "queue": "p.ns.task.add"}
	tests := []struct {
		name          string
		headers       amqp.Table
		reason, queue string
	}{
		{"latest first", amqp.Table{headerDeath: []any{poisoned, leased}, headerFirstDeathReason: "expired", headerFirstDeathQueue: "p.ns.lease"}, "delivery_limit", "p.ns.task.add"},
		{"first only", amqp.Table{headerFirstDeathReason: "expired", headerFirstDeathQueue: "p.ns.task.add"}, "expired", "p.ns.task.add"},
		{"none", nil, "", ""},
	}
	for _, tt := range tests {
		if reason, queue := lastDeath(tt.headers); reason != tt.reason || queue != tt.queue {
			t.Errorf("%s: %q %q, want %q %q", tt.name, reason, queue, tt.reason, tt.queue)
		}
	}
	topo := newTopology("p", "ns")
	if task, ok := topo.taskOfQueue("p.ns.task.add"); !ok || task != "add" {
		t.Errorf("taskOfQueue: %q %v", task, ok)
	}
	if _, ok := topo.taskOfQueue("p.ns.lease"); ok {
		t.Error("taskOfQueue of the lease queue")
	}
}

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"a","state":"succeeded","codec":"json","body":"MQ=="}`))
	f.Add([]byte(`{"id":"a","task":"demo.add","state":"succeeded","codec":"json","body":"MQ=="}`))
	f.Add([]byte(`{"id":"a","task":"t","state":"failed","error":{"code":"poison","message":"m","retryable":false}}`))
	f.Add([]byte(`{"id":"a","state":"timed_out","error":{"code":"timeout","message":"m","details":{"x":1},"retryable":true}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeReply(body)
		if err != nil {
			return
		}
		p, err := replyPublishing(r, time.Now())
		if err != nil {
			t.Fatalf("re-encode %+v: %v", r, err)
		}
		again, err := decodeReply(p.Body)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", p.Body, err)
		}
		if a, b := mustJSON(t, r), mustJSON(t, again); a != b {
			t.Fatalf("round trip changed the reply: %s -> %s", a, b)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
