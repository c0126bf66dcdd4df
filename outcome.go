package atasks

import (
	"github.com/atasks-go/atasks/internal/codec"
	"github.com/atasks-go/atasks/wire"
)

// Outcome is how an invocation ended, as an orphan: no call in this process
// awaits it (see Config.OnOrphan).
type Outcome struct {
	ID    string
	NS    string
	Task  string // "" when the server did not say
	State State
	Err   *Error // set unless State is succeeded

	body   []byte
	codecs *codec.Registry
	codec  string
}

// Decode decodes the output of a succeeded invocation into the value v points to.
func (o Outcome) Decode(v any) error {
	if o.Err != nil {
		return o.Err
	}
	c, err := o.codecs.Get(o.codec)
	if err != nil {
		return err
	}
	if err := c.Unmarshal(o.body, v); err != nil {
		return &Error{Code: wire.CodeBadOutput, Message: err.Error()}
	}
	return nil
}

// orphanFunc adapts fn to the router, for namespace ns.
func orphanFunc(fn func(Outcome), ns string, codecs *codec.Registry) func(*wire.Reply) {
	if fn == nil {
		return nil
	}
	return func(r *wire.Reply) {
		fn(Outcome{ID: r.ID, NS: ns, Task: r.Task, State: r.State, Err: r.Err, body: r.Body, codecs: codecs, codec: r.Codec})
	}
}
