package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// testCase is one case of cases.json; its fields are described in
// conformance/README.md.
type testCase struct {
	Name           string          `json:"name"`
	NS             string          `json:"ns"`
	Task           string          `json:"task"`
	Input          json.RawMessage `json:"input"`
	InputRepeat    *repeat         `json:"input_repeat"`
	Wait           string          `json:"wait"`
	Timeout        string          `json:"timeout"`
	Delay          string          `json:"delay"`
	CancelAfterMS  int             `json:"cancel_after_ms"`
	IdempotencyKey string          `json:"idempotency_key"`
	Parallel       int             `json:"parallel"`
	Expect         expect          `json:"expect"`

	input   json.RawMessage // the input to send, Input or InputRepeat's; null when the case has none
	noInput bool            // the case has no input: the call is made without one
	wait    time.Duration
	timeout time.Duration
	delay   time.Duration
}

type repeat struct {
	Text  string `json:"text"`
	Times int    `json:"times"`
}

// expect is what a call must meet: exactly one of its fields is set.
type expect struct {
	Result json.RawMessage `json:"result"` // JSON null is "null", absent is nil
	Echo   bool            `json:"echo"`
	Error  *wantError      `json:"error"`
}

// wantError is the error a call must fail with: Code always, the others
// when given.
type wantError struct {
	Code      string          `json:"code"`
	Message   *string         `json:"message"`
	Details   json.RawMessage `json:"details"`
	Retryable *bool           `json:"retryable"`
	Pointers  []string        `json:"pointers"` // of Details' errors, in any order
}

// load reads and checks the cases of the file at path; an unknown field
// anywhere is an error.
func load(path string) ([]*testCase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Version int         `json:"version"`
		Cases   []*testCase `json:"cases"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if file.Version != 1 {
		return nil, fmt.Errorf("%s: version %d, want 1", path, file.Version)
	}
	names := map[string]bool{}
	for i, tc := range file.Cases {
		if names[tc.Name] {
			return nil, fmt.Errorf("%s: case %d: name %q is not unique", path, i, tc.Name)
		}
		names[tc.Name] = true
		if err := tc.prepare(); err != nil {
			return nil, fmt.Errorf("%s: case %d (%q): %w", path, i, tc.Name, err)
		}
	}
	return file.Cases, nil
}

// prepare checks tc and fills its unexported fields.
func (tc *testCase) prepare() error {
	var err error
	if tc.wait, err = duration(tc.Wait); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	if tc.timeout, err = duration(tc.Timeout); err != nil {
		return fmt.Errorf("timeout: %w", err)
	}
	if tc.delay, err = duration(tc.Delay); err != nil {
		return fmt.Errorf("delay: %w", err)
	}
	e := tc.Expect
	switch {
	case tc.Name == "" || tc.Task == "":
		return errors.New("name and task are required")
	case tc.Input != nil && tc.InputRepeat != nil:
		return errors.New("both input and input_repeat")
	case tc.Parallel < 0 || tc.CancelAfterMS < 0:
		return errors.New("parallel and cancel_after_ms must not be negative")
	case count(e.Result != nil, e.Echo, e.Error != nil) != 1:
		return errors.New("expect: want exactly one of result, echo (true) and error")
	case e.Error != nil && e.Error.Code == "":
		return errors.New("expect.error: code is required")
	}
	tc.input = tc.Input // JSON null is "null", absent is nil
	if tc.InputRepeat != nil {
		tc.input, err = json.Marshal(strings.Repeat(tc.InputRepeat.Text, tc.InputRepeat.Times))
	} else if tc.input == nil {
		tc.input, tc.noInput = json.RawMessage("null"), true
	}
	return err
}

func duration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
