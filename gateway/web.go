package gateway

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The page at / lets a person call tasks from a browser: web/index.html
// and its assets, served under /ui/. web/atasks-client.js is a copy of the
// JS client, clients/js/index.js, which a go:embed cannot reach; `go
// generate ./gateway` refreshes it and TestWebClientIsCurrent
// fails while it is stale.
//
//go:generate cp ../clients/js/index.js web/atasks-client.js
//go:embed web
var webFS embed.FS

// webFile is an embedded file ready to serve.
type webFile struct {
	body        []byte
	contentType string
	etag        string
}

// webFiles are the files of web/ by name, read once.
var webFiles = func() map[string]webFile {
	files := map[string]webFile{}
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		files[p[len("web/"):]] = webFile{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("gateway: reading the embedded web files: " + err.Error())
	}
	return files
}()

// webCSP keeps the page to its own origin: no external scripts, styles or
// connections besides the gateway's HTTP API and WebSocket.
const webCSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// mountWeb serves the call page at GET /, the dashboard at GET /dashboard
// and their assets at GET /ui/{file}.
func mountWeb(r chi.Router) {
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { serveWebFile(w, r, "index.html") })
	r.Get("/dashboard", func(w http.ResponseWriter, r *http.Request) { serveWebFile(w, r, "dashboard.html") })
	r.Get("/ui/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := chi.URLParam(r, "file")
		if strings.HasSuffix(name, ".html") {
			name = "" // pages are served at their routes only
		}
		serveWebFile(w, r, name)
	})
}

func serveWebFile(w http.ResponseWriter, r *http.Request, name string) {
	f, ok := webFiles[name]
	if !ok {
		writeProblem(w, codeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-cache") // revalidate: the ETag answers 304 while unchanged
	h.Set("ETag", f.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if strings.HasSuffix(name, ".html") {
		h.Set("Content-Security-Policy", webCSP)
		h.Set("Referrer-Policy", "no-referrer")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
