package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// floorOf names the floor each atasks scenario is compared with.
var floorOf = map[string]string{"sdk": "floor-amqp", "http": "floor-amqp", "embedded": "floor-http"}

// printTable writes one row per result, with each atasks scenario's
// throughput as a percentage of its floor's at the same inflight and, for
// http, its p99 as a multiple of floor-amqp's.
func printTable(w io.Writer, results []result) {
	byKey := map[string]result{}
	for _, r := range results {
		byKey[r.scenario+"/"+strconv.Itoa(r.inflight)] = r
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tinflight\treq/s\tp50\tp99\tp999\terrors\tratio\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%s\t\n", r.scenario, r.inflight, r.throughput,
			fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.p999), r.errors, ratio(r, byKey))
	}
	_ = tw.Flush()
	for _, r := range results {
		if r.firstErr != nil {
			fmt.Fprintf(w, "%s at %d in flight, first error: %v\n", r.scenario, r.inflight, r.firstErr)
		}
	}
}

// ratio describes r against its floor at the same inflight, or "" if it
// has none or the floor was not measured.
func ratio(r result, byKey map[string]result) string {
	name, ok := floorOf[r.scenario]
	if !ok {
		return ""
	}
	f, ok := byKey[name+"/"+strconv.Itoa(r.inflight)]
	if !ok || f.throughput == 0 {
		return ""
	}
	s := fmt.Sprintf("%.0f%% of %s", 100*r.throughput/f.throughput, name)
	if r.scenario == "http" && f.p99 > 0 {
		s += fmt.Sprintf(", p99 ×%.1f", float64(r.p99)/float64(f.p99))
	}
	return s
}

// fmtDur prints d with three significant digits at most.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
