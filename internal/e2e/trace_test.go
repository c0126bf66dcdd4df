package e2e

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/internal/demo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// demo.fib 5 called from this process, with the SDK's in-memory exporter,
// runs on two worker processes that export over OTLP to a collector this
// test serves: the spans of all three processes form one tree, each "run"
// under its "call", each child's "call" under its parent's "run".
func TestTracesAcrossProcesses(t *testing.T) {
	t.Parallel()
	col := newCollector(t)
	s := newSystem(t)
	w1, w2 := s.worker("--otlp-endpoint", col.url), s.worker("--otlp-endpoint", col.url)
	local := tracetest.NewInMemoryExporter()
	ctx := s.clientWith(t, atasks.Config{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(local))})
	if got, err := demo.Fib.Call(ctx, demo.FibIn{N: 5}); err != nil || got != 5 {
		t.Fatalf("fib 5 = %d, %v", got, err)
	}
	w1.stop(t, 30*time.Second) // a worker exports the spans it still holds as it stops
	w2.stop(t, 30*time.Second)

	spans := col.all()
	for _, ss := range local.GetSpans() {
		spans = append(spans, span{name: ss.Name, trace: ss.SpanContext.TraceID().String(), id: ss.SpanContext.SpanID().String(),
			parent: parentOf(ss), attrs: attrsOf(ss)})
	}
	byID := map[string]span{}
	count := map[string]int{}
	for _, sp := range spans {
		byID[sp.id] = sp
		count[sp.name]++
	}
	const invocations = 15 // demo.fib 5 and all its descendants
	if count["call demo.fib"] != invocations || count["run demo.fib"] != invocations {
		t.Fatalf("spans: %v; want %d calls and %d runs", count, invocations, invocations)
	}
	for _, sp := range spans {
		if sp.trace != spans[0].trace {
			t.Errorf("%s %s: trace %s, not %s", sp.name, sp.attrs["atasks.invocation_id"], sp.trace, spans[0].trace)
		}
		parent, hasParent := byID[sp.parent]
		switch {
		case sp.name == "run demo.fib" && (!hasParent || parent.name != "call demo.fib" || parent.attrs["atasks.invocation_id"] != sp.attrs["atasks.invocation_id"]):
			t.Errorf("run %s: parent %+v, want the call of the same invocation", sp.attrs["atasks.invocation_id"], parent)
		case sp.name == "call demo.fib" && sp.attrs["atasks.parent_id"] == "" && hasParent:
			t.Errorf("the top call has a parent: %+v", parent)
		case sp.name == "call demo.fib" && sp.attrs["atasks.parent_id"] != "" && (!hasParent || parent.name != "run demo.fib" || parent.attrs["atasks.invocation_id"] != sp.attrs["atasks.parent_id"]):
			t.Errorf("call %s: parent %+v, want the run of invocation %s", sp.attrs["atasks.invocation_id"], parent, sp.attrs["atasks.parent_id"])
		}
	}
}

// span is what the test reads of a span, from either exporter.
type span struct {
	name, trace, id, parent string
	attrs                   map[string]string
}

func parentOf(s tracetest.SpanStub) string {
	if !s.Parent.IsValid() {
		return ""
	}
	return s.Parent.SpanID().String()
}

func attrsOf(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// collector is an OTLP/HTTP trace receiver keeping every span it gets.
type collector struct {
	url   string
	mu    sync.Mutex
	spans []span
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "want an OTLP protobuf export at /v1/traces", http.StatusBadRequest)
			return
		}
		c.add(&req)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

func (c *collector) add(req *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, kv := range s.GetAttributes() {
					attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				c.spans = append(c.spans, span{name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()),
					id: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId()), attrs: attrs})
			}
		}
	}
}

func (c *collector) all() []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]span(nil), c.spans...)
}
