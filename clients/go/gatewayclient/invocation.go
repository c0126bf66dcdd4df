package gatewayclient

import (
	"encoding/json"
	"time"

	"github.com/atasks-go/atasks/wire"
)

// Invocation is one invocation of a task, as the gateway serves it
// (GET /v1/ns/{ns}/invocations/{id}).
type Invocation struct {
	ID         string          `json:"id"`
	NS         string          `json:"ns"`
	Task       string          `json:"task"`
	State      wire.State      `json:"state"` // scheduled, queued, running, or final: succeeded, failed, cancelled, timed_out
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`  // when a worker first reported it running
	FinishedAt *time.Time      `json:"finished_at,omitempty"` // when it became final
	Worker     string          `json:"worker,omitempty"`      // the worker that runs or ran it
	Attempt    int             `json:"attempt,omitempty"`     // its runs so far, from 1: retries, runs cut short by a crash or a drain
	RunAt      *time.Time      `json:"run_at,omitempty"`      // a delayed call's time (WithDelay): it runs no earlier
	Parent     string          `json:"parent,omitempty"`      // for a child: the invocation that called it
	Children   []string        `json:"children,omitempty"`    // ids of the invocations it called
	Result     json.RawMessage `json:"result,omitempty"`      // the task's output when State is succeeded
	Error      *wire.Error     `json:"error,omitempty"`       // why it failed, was cancelled or timed out
}

// Err returns the invocation's error, or nil if it has none (it succeeded
// or is not final yet).
func (inv *Invocation) Err() error {
	if inv.Error == nil {
		return nil
	}
	return inv.Error
}

// Decode decodes the invocation's result into out, as json.Unmarshal does.
// It returns the invocation's error if it has one, and a "bad_output" error
// if the result does not fit out.
func (inv *Invocation) Decode(out any) error {
	if err := inv.Err(); err != nil {
		return err
	}
	result := inv.Result
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	if err := json.Unmarshal(result, out); err != nil {
		return &wire.Error{Code: wire.CodeBadOutput, Message: err.Error()}
	}
	return nil
}
