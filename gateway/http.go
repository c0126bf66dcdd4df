package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/atasks-go/atasks/internal/router"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/wire"
)

// Problem is an RFC 9457 problem detail; Code is the same stable code that
// errors carry everywhere else in atasks.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Retryable bool   `json:"retryable"` // the same request may succeed later
	// Errors are, with code bad_input, each way the input does not fit the
	// task: a JSON pointer into it and what is wrong there.
	Errors []wire.Violation `json:"errors,omitempty"`
}

// Codes of the gateway's own errors; the others are the wire's.
const (
	codeMalformedJSON      = "malformed_json"
	codeBadRequest         = "bad_request"
	codeBodyTooLarge       = "body_too_large"
	codeNotFound           = "not_found"
	codeMethodNotAllowed   = "method_not_allowed"
	codeInvocationNotFound = "invocation_not_found"
	codeShuttingDown       = "shutting_down"
	codeTooManyInvocations = "too_many_invocations" // the gateway tracks as many unfinished invocations as it may

	codeInvocationExpired   = "invocation_expired"   // finished, then evicted
	codeIdempotencyConflict = "idempotency_conflict" // a key reused for another task or input
)

// writeProblem writes a problem with the status its code maps to.
func writeProblem(w http.ResponseWriter, code, detail string) {
	writeError(w, &atasks.Error{Code: code, Message: detail})
}

// writeError writes err as a problem, its status chosen by its code; it is
// retryable if err is, or if its status is 429 or 503.
func writeError(w http.ResponseWriter, err error) {
	e := asError(err)
	status := statusOf(e.Code)
	if (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	p := Problem{Type: "about:blank", Title: http.StatusText(status), Status: status,
		Detail: e.Message, Code: e.Code, Retryable: e.Retryable || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable}
	if e.Code == wire.CodeBadInput && len(e.Details) > 0 {
		var d struct{ Errors []wire.Violation }
		if json.Unmarshal(e.Details, &d) == nil {
			p.Errors = d.Errors
		}
	}
	_ = json.NewEncoder(w).Encode(p)
}

// statusOf maps an error code to the HTTP status of a problem: the one table.
func statusOf(code string) int {
	switch code {
	case codeMalformedJSON, codeBadRequest, wire.CodeBadInput:
		return http.StatusBadRequest
	case codeNotFound, codeInvocationNotFound, wire.CodeTaskNotFound, wire.CodeNamespaceNotFound:
		return http.StatusNotFound
	case codeUnauthorized:
		return http.StatusUnauthorized
	case codeForbidden, codeOriginNotAllowed, codeHostNotAllowed:
		return http.StatusForbidden
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case codeInvocationExpired:
		return http.StatusGone
	case codeIdempotencyConflict:
		return http.StatusUnprocessableEntity
	case codeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case codeTooManyRequests:
		return http.StatusTooManyRequests
	case wire.CodeUnavailable, codeShuttingDown, codeTooManyInvocations:
		return http.StatusServiceUnavailable
	case wire.CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// allowed lists the methods a path supports, for a 405's Allow header.
func allowed(path string) string {
	switch {
	case strings.Contains(path, "/invocations/"):
		return "GET, DELETE"
	case strings.Contains(path, "/tasks/"):
		return "POST"
	}
	return "GET"
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

// maxDelay is how far ahead a call may be delayed.
const maxDelay = router.MaxDelay

// runAtParams reads ?delay= or ?run_at= (RFC 3339): when a delayed call
// is to run, zero for now. It refuses both at once, a time more than
// maxDelay ahead, and a timeout that ends before it.
func runAtParams(r *http.Request, timeout time.Duration) (time.Time, error) {
	q := r.URL.Query()
	delay, at := q.Get("delay"), q.Get("run_at")
	return runAt(delay, at, timeout, "delay", "run_at")
}

// runAt is when a call given delay or at (either may be "") runs, checked
// as runAtParams says; names are what the caller calls them.
func runAt(delay, at string, timeout time.Duration, delayName, atName string) (time.Time, error) {
	var t time.Time
	switch {
	case delay != "" && at != "":
		return t, fmt.Errorf("give %s or %s, not both", delayName, atName)
	case delay != "":
		d, err := time.ParseDuration(delay)
		if err != nil || d < 0 {
			return t, fmt.Errorf("%s: want a duration such as 90s or 72h, got %q", delayName, delay)
		}
		t = time.Now().Add(d)
	case at != "":
		var err error
		if t, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return t, fmt.Errorf("%s: want an RFC 3339 time such as 2026-12-08T03:00:00Z, got %q", atName, at)
		}
	default:
		return t, nil
	}
	if time.Until(t) > maxDelay {
		return t, fmt.Errorf("%s is more than %v ahead", t.UTC().Format(time.RFC3339), maxDelay)
	}
	if timeout > 0 && time.Now().Add(timeout).Before(t) {
		return t, fmt.Errorf("the timeout (%v) ends before the call is to run (%s): it could only time out", timeout, t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// intParam parses query parameter name as a decimal integer; absent is 0.
func intParam(r *http.Request, name string) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s: want an integer, got %q", name, s)
	}
	return n, nil
}
