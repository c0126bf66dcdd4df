package atasks

import (
	"encoding/json"

	"github.com/atasks-go/atasks/wire"
)

// Error is a failure that crosses the wire: a stable Code, a Message, optional
// JSON Details and whether retrying may help. Compare with errors.Is against
// the sentinels below (codes are compared) and reach the details with errors.As.
type Error = wire.Error

// Sentinels for the codes atasks itself uses: the values of package wire,
// so errors.Is(err, ErrTimeout) and errors.Is(err, wire.ErrTimeout) agree.
// errors.Is(err, ErrTimeout) also holds for context.DeadlineExceeded, and
// ErrCancelled for context.Canceled.
var (
	ErrTaskFailed        = wire.ErrTaskFailed
	ErrPanic             = wire.ErrPanic
	ErrTaskNotFound      = wire.ErrTaskNotFound
	ErrNamespaceNotFound = wire.ErrNamespaceNotFound
	ErrBadInput          = wire.ErrBadInput
	ErrBadOutput         = wire.ErrBadOutput
	ErrUnknownCodec      = wire.ErrUnknownCodec
	ErrCancelled         = wire.ErrCancelled
	ErrTimeout           = wire.ErrTimeout
	ErrUnavailable       = wire.ErrUnavailable
	ErrNondeterministic  = wire.ErrNondeterministic
)

// NewError returns an error with the given code and message for a task to
// return. details, if not nil, is encoded as JSON and reaches the caller.
// A task may return any error; one that is not an *Error arrives with code
// "task_failed".
func NewError(code, message string, details any) *Error {
	e := &Error{Code: code, Message: message}
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			b, _ = json.Marshal(err.Error())
		}
		e.Details = b
	}
	return e
}
