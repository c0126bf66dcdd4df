package gatewayclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/atasks-go/atasks/wire"
)

// Codes of the errors this client makes itself; the others come from the
// gateway or the task.
const (
	codeBadRequest  = "bad_request"  // the request could not be made (e.g. a bad option; an input that is not JSON is bad_input)
	codeBadResponse = "bad_response" // the gateway's answer is not what its API promises
)

// ProblemError is an error of the gateway itself, an RFC 9457
// application/problem+json answer such as 404 task_not_found, or an HTTP
// error of something in front of it. It unwraps to a *wire.Error with the
// problem's code and detail, so errors.Is and errors.As reach it as they
// reach a task's error.
type ProblemError struct {
	Status int         // the HTTP status, e.g. 404
	Err    *wire.Error // Code: the problem's code, or "http_<status>" without one; Retryable: the problem's, or for 502, 503, 504 without one
}

// Error implements error.
func (e *ProblemError) Error() string { return fmt.Sprintf("%v (HTTP %d)", e.Err, e.Status) }

// Unwrap returns the *wire.Error.
func (e *ProblemError) Unwrap() error { return e.Err }

// problemError turns an HTTP error answer into a *ProblemError.
func problemError(status int, body []byte) error {
	var p struct {
		Code      string          `json:"code"`
		Detail    string          `json:"detail"`
		Retryable *bool           `json:"retryable"`
		Errors    json.RawMessage `json:"errors"` // with bad_input: the fields at fault
	}
	if json.Unmarshal(body, &p) != nil || p.Code == "" {
		p.Code, p.Detail, p.Retryable = fmt.Sprintf("http_%d", status), http.StatusText(status), nil
	}
	retryable := status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
	if p.Retryable != nil {
		retryable = *p.Retryable
	}
	e := &wire.Error{Code: p.Code, Message: p.Detail, Retryable: retryable}
	if len(p.Errors) > 0 { // as a task's error carries them: {"errors":[…]}
		e.Details, _ = json.Marshal(map[string]json.RawMessage{"errors": p.Errors})
	}
	return &ProblemError{Status: status, Err: e}
}

// transportError is a request that got no answer: the context's error if it
// ended, else a retryable "unavailable".
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	return &wire.Error{Code: wire.CodeUnavailable, Message: "gatewayclient: " + err.Error(), Retryable: true}
}
