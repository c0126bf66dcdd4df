package gateway_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/atasks-go/atasks/gateway"
)

// The served copy of the JS client must be the client itself.
func TestWebClientIsCurrent(t *testing.T) {
	t.Parallel()
	canonical, err := os.ReadFile("../clients/js/index.js")
	if err != nil {
		t.Fatal(err)
	}
	served, err := os.ReadFile("web/atasks-client.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, canonical) {
		t.Fatal("gateway/web/atasks-client.js differs from clients/js/index.js: run `go generate ./gateway`")
	}
}

func TestWebRoutes(t *testing.T) {
	t.Parallel()
	srv := setup(t, gateway.Config{})
	get := func(path string, header http.Header) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, string(body)
	}
	tests := []struct {
		path       string
		wantStatus int
		wantType   string
		wantBody   string
	}{
		{"/", 200, "text/html; charset=utf-8", `<script type="module" src="/ui/app.js">`},
		{"/ui/app.js", 200, "text/javascript; charset=utf-8", `from "./atasks-client.js"`},
		{"/ui/atasks-client.js", 200, "text/javascript; charset=utf-8", "export class AtasksClient"},
		{"/ui/style.css", 200, "text/css; charset=utf-8", ".call"},
		{"/ui/index.html", 404, "application/problem+json", `"code":"not_found"`},
		{"/ui/nope.js", 404, "application/problem+json", `"code":"not_found"`},
		{"/ui/", 404, "application/problem+json", `"code":"not_found"`},
		{"/ui/../go.mod", 404, "application/problem+json", `"code":"not_found"`},
		{"/index.html", 404, "application/problem+json", `"code":"not_found"`},
	}
	for _, tc := range tests {
		res, body := get(tc.path, nil)
		if res.StatusCode != tc.wantStatus || res.Header.Get("Content-Type") != tc.wantType || !strings.Contains(body, tc.wantBody) {
			t.Errorf("GET %s: %d %q, body %.80q; want %d %q containing %q",
				tc.path, res.StatusCode, res.Header.Get("Content-Type"), body, tc.wantStatus, tc.wantType, tc.wantBody)
		}
	}

	res, _ := get("/", nil)
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP of /: %q", csp)
	}
	res, _ = get("/ui/app.js", nil)
	etag := res.Header.Get("ETag")
	if res, _ = get("/ui/app.js", http.Header{"If-None-Match": {etag}}); etag == "" || res.StatusCode != http.StatusNotModified {
		t.Errorf("GET /ui/app.js with its ETag %q: %d, want 304", etag, res.StatusCode)
	}
}
