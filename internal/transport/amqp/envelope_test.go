package amqp

import (
	"encoding/json"
	"reflect"
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
		{"too many slots", Config{Slots: 1001}, true},
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
	if got := codecOf("text/plain"); got != "text/plain" {
		t.Errorf("codecOf(text/plain) = %q, want it whole", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	now := time.Now()
	req := &wire.Request{
		ID: "id1", NS: "ns", Task: "add", Codec: "cbor", Body: []byte{1, 2},
		Deadline: now.Add(time.Minute), Parent: "p1", TraceParent: "00-aa-bb-01",
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

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"a","state":"succeeded","codec":"json","body":"MQ=="}`))
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
