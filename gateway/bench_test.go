package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/gateway"
)

// BenchmarkInvoke posts demo.add to an embedded gateway, and, as the floor
// measured in the same run, to a minimal Go HTTP server answering a fixed
// JSON body: the ratio of the two is the gateway's own cost over plain HTTP.
func BenchmarkInvoke(b *testing.B) {
	floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"state":"succeeded","result":3}`)
	}))
	defer floor.Close()
	srv := setup(b, gateway.Config{})
	for _, bc := range []struct{ name, url string }{
		{"floor", floor.URL + "/"},
		{"gateway", srv.URL + "/v1/ns/default/tasks/demo.add"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := http.Post(bc.url, "application/json", strings.NewReader(`{"a":1,"b":2}`))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
		})
	}
}
