package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
	"github.com/atasks-go/atasks/wire"
)

// run runs tc over transport tr with client shared, or over REST with a
// client of its own for its wait; nil means it passed. Over the WebSocket a
// case's wait means nothing.
func (tc *testCase) run(url, runID string, tr gatewayclient.Transport, shared *gatewayclient.Client) error {
	c := shared
	if tc.Wait != "" && tr == gatewayclient.TransportREST {
		var err error
		if c, err = gatewayclient.New(url, gatewayclient.WithTransport(tr), gatewayclient.WithWait(tc.wait)); err != nil {
			return err
		}
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	defer cancel()
	n := max(tc.Parallel, 1)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = tc.once(ctx, c, runID) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && n > 1 {
			err = fmt.Errorf("call %d of %d: %w", i+1, n, err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// once makes the case's call, twice with the same key if it has an
// idempotency key.
func (tc *testCase) once(ctx context.Context, c *gatewayclient.Client, runID string) error {
	var opts []gatewayclient.CallOption
	if tc.timeout > 0 {
		opts = append(opts, gatewayclient.WithTimeout(tc.timeout))
	}
	if tc.delay > 0 {
		opts = append(opts, gatewayclient.WithDelay(tc.delay))
	}
	if tc.IdempotencyKey == "" {
		_, err := tc.call(ctx, c, opts)
		return err
	}
	opts = append(opts, gatewayclient.WithIdempotencyKey(tc.IdempotencyKey+"-"+runID))
	first, err := tc.call(ctx, c, opts)
	if err != nil {
		return fmt.Errorf("first call: %w", err)
	}
	second, err := tc.call(ctx, c, opts)
	if err != nil {
		return fmt.Errorf("second call: %w", err)
	}
	if first != second {
		return fmt.Errorf("the same key named invocations %q and %q", first, second)
	}
	return nil
}

// call makes one call, cancelled after CancelAfterMS if set, checks its
// outcome and returns its invocation id.
func (tc *testCase) call(ctx context.Context, c *gatewayclient.Client, opts []gatewayclient.CallOption) (string, error) {
	if tc.CancelAfterMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer time.AfterFunc(time.Duration(tc.CancelAfterMS)*time.Millisecond, cancel).Stop()
	}
	ns := tc.NS
	if ns == "" {
		ns = "default"
	}
	var in any = tc.input
	if tc.noInput {
		in = nil
	}
	began := time.Now()
	inv, err := c.Call(ctx, ns, tc.Task, in, opts...)
	var id string
	if inv != nil {
		id = inv.ID
	}
	if err == nil && tc.delay > 0 {
		if took := time.Since(began); took < tc.delay || inv.RunAt == nil || inv.StartedAt == nil || inv.StartedAt.Before(*inv.RunAt) {
			return id, fmt.Errorf("a call delayed %v ended %v after it began, started at %v, run_at %v: want no sooner", tc.delay, took, inv.StartedAt, inv.RunAt)
		}
	}
	return id, tc.check(inv, err)
}

// check tells how the outcome of a call misses the case's expect.
func (tc *testCase) check(inv *gatewayclient.Invocation, err error) error {
	if tc.Expect.Error != nil {
		if err := tc.Expect.Error.check(err); err != nil {
			return err
		}
		return tc.cancelled(inv)
	}
	if err != nil {
		return fmt.Errorf("want a result, got error %w", err)
	}
	want := tc.Expect.Result
	if tc.Expect.Echo {
		want = tc.input
	}
	if !jsonEqual(inv.Result, want) {
		return fmt.Errorf("want result %s, got %s", short(want), short(inv.Result))
	}
	return nil
}

// cancelled checks, for a call the case cancels, that the cancel reached
// the gateway: the invocation, if it was accepted, ended with the expected
// error.
func (tc *testCase) cancelled(inv *gatewayclient.Invocation) error {
	if tc.CancelAfterMS == 0 || inv == nil {
		return nil
	}
	if want := tc.Expect.Error.Code; !inv.State.Final() || inv.Error == nil || inv.Error.Code != want {
		return fmt.Errorf("the call was cancelled, but invocation %s is %s (error %v), want it ended with error %q", inv.ID, inv.State, inv.Error, want)
	}
	return nil
}

func (w *wantError) check(err error) error {
	var got *wire.Error
	if err == nil {
		return fmt.Errorf("want error %q, got a result", w.Code)
	}
	if !errors.As(err, &got) {
		return fmt.Errorf("want error %q, got %v (%T)", w.Code, err, err)
	}
	var diffs []string
	if got.Code != w.Code {
		diffs = append(diffs, fmt.Sprintf("code %q, want %q", got.Code, w.Code))
	}
	if w.Message != nil && got.Message != *w.Message {
		diffs = append(diffs, fmt.Sprintf("message %q, want %q", got.Message, *w.Message))
	}
	if w.Details != nil && !jsonEqual(got.Details, w.Details) {
		diffs = append(diffs, fmt.Sprintf("details %s, want %s", short(got.Details), short(w.Details)))
	}
	if w.Retryable != nil && got.Retryable != *w.Retryable {
		diffs = append(diffs, fmt.Sprintf("retryable %t, want %t", got.Retryable, *w.Retryable))
	}
	if w.Pointers != nil {
		switch ps, err := pointers(got.Details); {
		case err != nil:
			diffs = append(diffs, fmt.Sprintf("%v, want pointers %q", err, w.Pointers))
		case !samePointers(ps, w.Pointers):
			diffs = append(diffs, fmt.Sprintf("details %s: pointers %q, want %q", short(got.Details), ps, w.Pointers))
		}
	}
	if diffs != nil {
		return fmt.Errorf("error %v: %s", err, strings.Join(diffs, ", "))
	}
	return nil
}

// pointers lists the pointers of a bad_input's details, {"errors":
// [{"pointer": …}, …]}.
func pointers(details json.RawMessage) ([]string, error) {
	var d struct {
		Errors []struct {
			Pointer *string `json:"pointer"`
		} `json:"errors"`
	}
	if len(details) == 0 {
		return nil, errors.New("no details")
	}
	if json.Unmarshal(details, &d) != nil || d.Errors == nil {
		return nil, fmt.Errorf(`details %s: not {"errors": [{"pointer": …}, …]}`, short(details))
	}
	ps := make([]string, 0, len(d.Errors))
	for _, e := range d.Errors {
		if e.Pointer == nil {
			return nil, fmt.Errorf("details %s: an error without a pointer", short(details))
		}
		ps = append(ps, *e.Pointer)
	}
	return ps, nil
}

// samePointers tells whether a and b hold the same pointers, in any order.
func samePointers(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// short abbreviates JSON for a message.
func short(b json.RawMessage) string {
	if len(b) > 200 {
		return fmt.Sprintf("%s… (%d bytes)", b[:200], len(b))
	}
	return string(b)
}

// jsonEqual tells whether two JSON texts hold the same value, numbers
// compared by value; an empty text is null.
func jsonEqual(a, b json.RawMessage) bool {
	va, errA := decode(a)
	vb, errB := decode(b)
	return errA == nil && errB == nil && equal(va, vb)
}

func decode(b json.RawMessage) (any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		x, okA := new(big.Rat).SetString(string(a))
		y, okB := new(big.Rat).SetString(string(b))
		return ok && okA && okB && x.Cmp(y) == 0
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !equal(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, va := range a {
			if vb, ok := b[k]; !ok || !equal(va, vb) {
				return false
			}
		}
		return true
	}
	return a == b
}
