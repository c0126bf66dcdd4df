package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxRequests bounds one measurement, whatever its duration.
const maxRequests = 1_000_000

// callTimeout bounds one request; a request that takes longer is an error.
const callTimeout = 30 * time.Second

// target is what a scenario measures: one request per call, and its teardown.
type target struct {
	call  func(ctx context.Context) error
	close func()
}

// result is one measurement.
type result struct {
	scenario       string
	inflight       int
	ok, errors     int
	elapsed        time.Duration
	throughput     float64 // successful requests per second
	p50, p99, p999 time.Duration
	firstErr       error
	note           string // what a one-off scenario measured, for the table
}

// measure runs n workers calling call in a closed loop for d or until
// maxRequests have started, and sums up their latencies.
func measure(ctx context.Context, call func(context.Context) error, n int, d time.Duration) result {
	var started atomic.Int64
	lats := make([][]time.Duration, n)
	errs := make([]int, n)
	firstErr := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := range n {
		wg.Go(func() {
			lats[i], errs[i], firstErr[i] = loop(ctx, call, deadline, &started)
		})
	}
	wg.Wait()
	return summarize(lats, errs, firstErr, time.Since(start))
}

// loop is one closed-loop worker: it calls until deadline or until the
// shared count reaches maxRequests, returning its latencies and errors.
func loop(ctx context.Context, call func(context.Context) error, deadline time.Time, started *atomic.Int64) ([]time.Duration, int, error) {
	var lats []time.Duration
	var errs int
	var first error
	for time.Now().Before(deadline) && started.Add(1) <= maxRequests {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		t0 := time.Now()
		err := call(cctx)
		lat := time.Since(t0)
		cancel()
		if err != nil {
			errs++
			if first == nil {
				first = err
			}
			continue
		}
		lats = append(lats, lat)
	}
	return lats, errs, first
}

// summarize merges the workers' latencies into a result.
func summarize(lats [][]time.Duration, errs []int, firstErr []error, elapsed time.Duration) result {
	all := slices.Concat(lats...)
	slices.Sort(all)
	r := result{ok: len(all), elapsed: elapsed}
	for i, e := range errs {
		r.errors += e
		if r.firstErr == nil {
			r.firstErr = firstErr[i]
		}
	}
	r.throughput = float64(r.ok) / elapsed.Seconds()
	r.p50, r.p99, r.p999 = quantile(all, 0.50), quantile(all, 0.99), quantile(all, 0.999)
	return r
}

// quantile returns the q-quantile of sorted (nearest rank), 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
