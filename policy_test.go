package atasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/atasktest"
	"github.com/atasks-go/atasks/internal/demo"
)

// demo.flaky fails its first two attempts with a retryable error and
// succeeds on the third; the states tell each retry and its attempt.
func TestRetryRetryableFailures(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	var events []atasks.Event
	got, err := demo.Flaky.Call(ctx, demo.FlakyIn{Fail: 2, Value: "ok"}, atasks.OnState(func(e atasks.Event) { events = append(events, e) }))
	if err != nil || got != "ok" {
		t.Fatalf("flaky: %v, %v", got, err)
	}
	var queued []int
	for _, e := range events {
		if e.State == "queued" {
			queued = append(queued, e.Attempt)
		}
	}
	if len(queued) != 2 || queued[0] != 2 || queued[1] != 3 {
		t.Errorf("retries announced for attempts %v, want [2 3] (events %+v)", queued, events)
	}
}

// A non-retryable failure is final at once; a caller's MaxAttempts caps
// the task's own.
func TestRetryOnlyWhatMayBeRetried(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	var attempts int
	count := atasks.OnState(func(e atasks.Event) { attempts = max(attempts, e.Attempt) })
	_, err := demo.Flaky.Call(ctx, demo.FlakyIn{Fail: 2, Permanent: true}, count)
	if !errors.Is(err, &atasks.Error{Code: "broken"}) || attempts != 1 {
		t.Errorf("permanent failure: %v after %d attempts, want broken after 1", err, attempts)
	}
	attempts = 0
	_, err = demo.Flaky.Call(ctx, demo.FlakyIn{Fail: 5}, atasks.MaxAttempts(2), count)
	if !errors.Is(err, &atasks.Error{Code: "flaky"}) || attempts != 2 {
		t.Errorf("MaxAttempts(2): %v after %d attempts, want flaky after 2", err, attempts)
	}
}

var (
	// slowTask sleeps; each attempt may take 200 ms.
	slowTask = atasks.Define(func(ctx context.Context, d time.Duration) (string, error) {
		select {
		case <-time.After(d):
			return "done", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}, atasks.Name("test.slow"), atasks.Timeout(200*time.Millisecond))
)

// A task's timeout ends an attempt that runs too long; a caller's deadline
// that comes sooner wins.
func TestTaskTimeout(t *testing.T) {
	t.Parallel()
	ctx := atasktest.Start(t)
	if got, err := slowTask.Call(ctx, time.Millisecond); err != nil || got != "done" {
		t.Fatalf("quick: %q, %v", got, err)
	}
	start := time.Now()
	if _, err := slowTask.Call(ctx, time.Minute); !errors.Is(err, atasks.ErrTimeout) {
		t.Errorf("too slow: %v, want timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the task's timeout ended it after %v", took)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := slowTask.Call(short, time.Minute); !errors.Is(err, atasks.ErrTimeout) || time.Since(start) >= 200*time.Millisecond {
		t.Errorf("caller's deadline: %v after %v, want timeout before the task's own", err, time.Since(start))
	}
}
