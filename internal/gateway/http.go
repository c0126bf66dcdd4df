package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/wire"
)

// Problem is an RFC 9457 problem detail; Code is the same stable code that
// errors carry everywhere else in atasks.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Code: code})
}

// writeError writes err as a problem, its status chosen by its code.
func writeError(w http.ResponseWriter, err error) {
	e := asError(err)
	writeProblem(w, statusOf(e.Code), e.Code, e.Message)
}

// statusOf maps an error code to the HTTP status a gateway error carries.
func statusOf(code string) int {
	switch code {
	case wire.CodeTaskNotFound, wire.CodeNamespaceNotFound:
		return http.StatusNotFound
	case wire.CodeBadInput:
		return http.StatusBadRequest
	case wire.CodeUnavailable:
		return http.StatusServiceUnavailable
	case wire.CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func asError(err error) *atasks.Error { return wire.AsError(err) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// jsonValue encodes a task's output, decoded by its codec, as JSON.
func jsonValue(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("the output cannot be written as JSON: %w", err)
	}
	return b, nil
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

// durationParam parses query parameter name as a Go duration ("250ms", "3s");
// absent is 0.
func durationParam(r *http.Request, name string) (time.Duration, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New(name + ": want a duration such as 250ms or 5s, got " + fmt.Sprintf("%q", s))
	}
	return d, nil
}
