package wire

import (
	"context"
	"encoding/json"
	"errors"
)

// Error is a failure that crosses the wire. Codes are stable strings:
// the ones below, or a task's own.
type Error struct {
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Details   json.RawMessage `json:"details,omitempty"`
	Retryable bool            `json:"retryable"`
}

// Codes used by atasks itself.
const (
	CodeTaskFailed        = "task_failed"         // a task returned a plain error
	CodePanic             = "panic"               // a task panicked
	CodeTaskNotFound      = "task_not_found"      // no server offers the task
	CodeNamespaceNotFound = "namespace_not_found" // the namespace is not configured here
	CodeBadInput          = "bad_input"           // the input does not decode into the task's input type
	CodeBadOutput         = "bad_output"          // the output does not decode into the caller's output type
	CodeUnknownCodec      = "unknown_codec"       // a message names a codec the peer lacks
	CodeCancelled         = "cancelled"           // the invocation was cancelled
	CodeTimeout           = "timeout"             // the invocation's deadline passed
	CodeUnavailable       = "unavailable"         // the transport cannot reach the broker or was closed
	CodePoison            = "poison"              // delivered too often without an outcome (it kept killing workers)
	CodeDuplicateID       = "duplicate_id"        // a call reused the id of a call in flight
	CodeNondeterministic  = "nondeterministic"    // a re-run parent called another task than its first run at the same position
)

// Sentinels for the codes atasks itself uses, to compare with errors.Is:
// an *Error matches one with the same code, so errors.Is(err, ErrTimeout)
// holds for an error decoded off the wire, and also for
// context.DeadlineExceeded; ErrCancelled also matches context.Canceled.
var (
	ErrTaskFailed        = &Error{Code: CodeTaskFailed}        // a task returned a plain error
	ErrPanic             = &Error{Code: CodePanic}             // a task panicked
	ErrTaskNotFound      = &Error{Code: CodeTaskNotFound}      // no server offers the task
	ErrNamespaceNotFound = &Error{Code: CodeNamespaceNotFound} // the namespace is not configured here
	ErrBadInput          = &Error{Code: CodeBadInput}          // the input does not decode into the task's input type
	ErrBadOutput         = &Error{Code: CodeBadOutput}         // the output does not decode into the caller's output type
	ErrUnknownCodec      = &Error{Code: CodeUnknownCodec}      // a message names a codec the peer lacks
	ErrCancelled         = &Error{Code: CodeCancelled}         // the invocation was cancelled
	ErrTimeout           = &Error{Code: CodeTimeout}           // the invocation's deadline passed
	ErrUnavailable       = &Error{Code: CodeUnavailable}       // the transport cannot reach the broker or was closed
	ErrNondeterministic  = &Error{Code: CodeNondeterministic}  // a re-run parent called another task than its first run at the same position
)

// ErrMaybeSent marks (errors.Is) a failed Transport.Send after which the
// request may still reach a server: it was written, but the broker did
// not confirm it. The caller that gives up on it should cancel it.
var ErrMaybeSent = errors.New("the request may have reached the broker")

// Violation is one way a task's input does not fit the task: a "bad_input"
// error lists them in its Details, {"errors":[…]}, and the gateway in its
// problem's errors.
type Violation struct {
	Pointer string `json:"pointer"` // RFC 6901, into the input: "" for the whole, "/a/0"
	Detail  string `json:"detail"`
}

// DeadlinePassed returns the error of an invocation whose deadline, set by
// its caller (a context deadline, ?timeout=), passed.
func DeadlinePassed() *Error {
	return &Error{Code: CodeTimeout, Message: "the invocation's deadline, set by its caller, passed"}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is reports whether target is an *Error with the same code. A "cancelled"
// error also matches context.Canceled and a "timeout" error matches
// context.DeadlineExceeded, so errors decoded off the wire compare like local ones.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	switch target {
	case context.Canceled:
		return e.Code == CodeCancelled
	case context.DeadlineExceeded:
		return e.Code == CodeTimeout
	}
	return false
}

// StateOf returns the final state an invocation that failed with e ends in.
func (e *Error) StateOf() State {
	switch e.Code {
	case CodeCancelled:
		return Cancelled
	case CodeTimeout:
		return TimedOut
	}
	return Failed
}

// AsError converts any error into an *Error: an *Error in err's chain is
// returned as it is, context errors become "cancelled" or "timeout", and
// anything else becomes "task_failed" with err's text.
func AsError(err error) *Error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeTimeout, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCancelled, Message: err.Error()}
	}
	return &Error{Code: CodeTaskFailed, Message: err.Error()}
}
