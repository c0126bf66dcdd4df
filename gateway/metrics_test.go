package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/gateway"
	"github.com/atasks-go/atasks/internal/gatewaytest"
	"github.com/atasks-go/atasks/internal/metrics"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Calls move the counters that /metrics shows, in the Prometheus text
// format: the gateway's invocations by outcome, the embedded worker's,
// its slots, WebSocket connections and calls, and the records kept.
func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	srv := gatewaytest.New(t, gateway.Config{Metrics: reg}, nil) // a worker of 1000 slots
	if _, err := atasks.NewWorker(srv.Client, atasks.WorkerConfig{}); err == nil {
		t.Fatal("a second worker on the gateway's client was taken") // its slots would count twice
	}

	do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", `{"a":1,"b":2}`)
	do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.add", `{"a":3,"b":4}`)
	do(t, "POST", srv.URL+"/v1/ns/default/tasks/demo.fail", `{"code":"nope","message":"no"}`)
	c := wsDial(t, srv.HTTP)
	wsCall(t, c, "1", "demo.echo", `"x"`)
	wsUntil(t, c, "1", "result") // its outcome is counted

	got := scrape(t, srv.URL)
	for _, want := range []struct {
		name   string
		labels string
		value  float64
	}{
		{"atasks_gateway_invocations_total", `ns=default,outcome=succeeded,task=demo.add`, 2},
		{"atasks_gateway_invocations_total", `ns=default,outcome=failed,task=demo.fail`, 1},
		{"atasks_gateway_invocations_total", `ns=default,outcome=succeeded,task=demo.echo`, 1},
		{"atasks_gateway_invocations_in_flight", `ns=default,task=demo.add`, 0},
		{"atasks_worker_invocations_total", `ns=default,outcome=succeeded,task=demo.add`, 2},
		{"atasks_worker_invocations_total", `ns=default,outcome=failed,task=demo.fail`, 1},
		{"atasks_worker_slots_busy", ``, 0},
		{"atasks_worker_slots_free", ``, 1000},
		{"atasks_gateway_ws_connections", ``, 1},
		{"atasks_gateway_ws_calls_total", `ns=default`, 1},
		{"atasks_gateway_results_stored", ``, 4},
	} {
		if v, ok := got[want.name+"{"+want.labels+"}"]; !ok || v != want.value {
			t.Errorf("%s{%s} = %v (present: %v), want %v", want.name, want.labels, v, ok, want.value)
		}
	}
	if v := got["atasks_gateway_invocation_duration_seconds_count{ns=default,task=demo.add}"]; v != 2 {
		t.Errorf("duration histogram count %v, want 2", v)
	}
	if got["go_goroutines{}"] == 0 || got["process_resident_memory_bytes{}"] == 0 {
		t.Errorf("runtime and process collectors missing")
	}
	for series := range got {
		if strings.Contains(series, "invocation_id") {
			t.Errorf("an invocation id as a label: %s", series)
		}
	}
}

// scrape reads base's /metrics into "name{k=v,…}" → value, labels sorted
// by name; histograms give their _count.
func scrape(t *testing.T, base string, header ...map[string]string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range header {
		for k, v := range h {
			req.Header.Set(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[name+key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name+key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"+key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
