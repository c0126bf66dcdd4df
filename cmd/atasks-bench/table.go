package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// floorOf names the floor each atasks scenario is compared with.
var floorOf = map[string]string{"sdk": "floor-amqp", "http": "naive-gw", "http-history": "naive-gw", "ws": "floor-amqp", "fib": "floor-amqp", "fib-volatile": "floor-amqp", "embedded": "floor-http"}

// printTable writes one row per result, with each atasks scenario's
// throughput as a percentage of its floor's at the same inflight (a
// one-off's, of its floor's best) and, for http and ws, its p99 as a
// multiple of the floor's; then each one-off's note.
func printTable(w io.Writer, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tinflight\treq/s\tp50\tp99\tp999\terrors\tratio\t")
	for _, r := range results {
		inflight := "-"
		if r.inflight > 0 {
			inflight = strconv.Itoa(r.inflight)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%d\t%s\t\n", r.scenario, inflight, r.throughput,
			fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.p999), r.errors, ratio(r, results))
	}
	_ = tw.Flush()
	for _, r := range results {
		if r.note != "" {
			fmt.Fprintf(w, "%s: %s\n", r.scenario, r.note)
		}
	}
	for _, r := range results {
		if r.firstErr != nil {
			fmt.Fprintf(w, "%s at %d in flight, first error: %v\n", r.scenario, r.inflight, r.firstErr)
		}
	}
}

// ratio describes r against its floor, or "" if it has none or the floor
// was not measured.
func ratio(r result, results []result) string {
	f, ok := floorFor(r, results)
	if !ok || f.throughput == 0 {
		return ""
	}
	s := fmt.Sprintf("%.0f%% of %s", 100*r.throughput/f.throughput, f.scenario)
	if r.inflight == 0 {
		s += fmt.Sprintf("/%d", f.inflight)
	}
	if (r.scenario == "http" || r.scenario == "ws") && f.p99 > 0 {
		s += fmt.Sprintf(", p99 ×%.1f", float64(r.p99)/float64(f.p99))
	}
	return s
}

// floorFor finds r's floor measurement: at r's inflight, or for a one-off
// (inflight 0) the floor's best throughput.
func floorFor(r result, results []result) (result, bool) {
	name, ok := floorOf[r.scenario]
	if !ok {
		return result{}, false
	}
	var best result
	found := false
	for _, f := range results {
		if f.scenario != name {
			continue
		}
		if r.inflight > 0 && f.inflight == r.inflight {
			return f, true
		}
		if r.inflight == 0 && f.throughput > best.throughput {
			best, found = f, true
		}
	}
	return best, found
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
