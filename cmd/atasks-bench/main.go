// Command atasks-bench measures atasks against floors taken in the same run:
// a raw amqp091-go request/reply with atasks' durability (floor-amqp) and a
// minimal net/http server (floor-http). Each measurement runs a fixed number
// of workers in a closed loop; see docs/BENCHMARKS.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/atasks-go/atasks/internal/cli"
)

// options are the parsed command-line flags.
type options struct {
	amqpURL    string
	duration   time.Duration
	inflight   []int
	scenarios  []string
	rounds     int
	cpuProfile string
	clean      string // if set, only delete what atasks declared for the demo namespaces under this prefix
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	switch {
	case err == nil && opts.clean != "":
		err = deleteAtasksObjects(&env{amqpURL: opts.amqpURL, prefix: opts.clean}, demoTasks())
	case err == nil:
		err = run(context.Background(), opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "atasks-bench:", err)
		os.Exit(1)
	}
}

// parseFlags parses args into options.
func parseFlags(args []string) (options, error) {
	f := cli.NewFlags("atasks-bench", "atasks-bench measures atasks throughput and latency against floors measured in the same run.")
	url := f.String("amqp-url", "ATASKS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	dur := f.FlagSet.Duration("duration", 5*time.Second, "length of each measurement")
	inflight := f.FlagSet.String("inflight", "1,16,128", "comma-separated numbers of requests in flight (closed-loop workers)")
	scen := f.FlagSet.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	prof := f.FlagSet.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	rounds := f.FlagSet.Int("rounds", 1, "how many times to measure the closed-loop scenarios; each row shows its best round")
	clean := f.FlagSet.String("clean", "", "measure nothing: delete the queues and exchanges atasks declares for the demo namespaces under this prefix (what a run of other tools under it leaves), then exit")
	_ = f.Parse(args)
	opts := options{amqpURL: *url, duration: *dur, cpuProfile: *prof, rounds: *rounds, clean: *clean}
	if opts.rounds < 1 {
		return opts, fmt.Errorf("--rounds: %d, want at least 1", opts.rounds)
	}
	for _, s := range strings.Split(*inflight, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return opts, fmt.Errorf("--inflight: %q is not a positive integer", s)
		}
		opts.inflight = append(opts.inflight, n)
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		if _, ok := scenarios[s]; !ok && oneOffs[s] == nil {
			return opts, fmt.Errorf("--scenarios: unknown scenario %q (want some of %s)", s, strings.Join(allScenarios, ","))
		}
		opts.scenarios = append(opts.scenarios, s)
	}
	return opts, nil
}

// run measures every scenario at every inflight, then prints the table.
func run(ctx context.Context, opts options) error {
	env := &env{amqpURL: opts.amqpURL, prefix: "bench" + randomHex(4)}
	progress("prefix %s, %s per measurement", env.prefix, opts.duration)
	if opts.cpuProfile != "" {
		stop, err := startCPUProfile(opts.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	results, err := measureRounds(ctx, env, opts)
	if err != nil {
		return err
	}
	for _, name := range opts.scenarios {
		if f := oneOffs[name]; f != nil {
			r, err := f(ctx, env)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			progress("%-10s %s", name, r.note)
			results = append(results, r)
		}
	}
	printTable(os.Stdout, results)
	return nil
}

// measureRounds measures the closed-loop scenarios opts.rounds times, each
// round going through the inflights and, for each, through the scenarios
// in order, so that a floor is measured moments before what is compared
// with it. It keeps each scenario's best round at each inflight, in
// scenario order.
func measureRounds(ctx context.Context, env *env, opts options) ([]result, error) {
	best := map[string]result{}
	for round := 1; round <= opts.rounds; round++ {
		for _, n := range opts.inflight {
			for _, name := range opts.scenarios {
				if oneOffs[name] != nil {
					continue
				}
				r, err := measureScenario(ctx, env, name, n, opts.duration)
				if err != nil {
					return nil, fmt.Errorf("%s at %d in flight: %w", name, n, err)
				}
				progress("round %d %-10s inflight %4d: %8.0f req/s  p50 %-9s p99 %-9s p999 %-9s errors %d",
					round, name, n, r.throughput, fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.p999), r.errors)
				key := name + "/" + strconv.Itoa(n)
				if b, ok := best[key]; !ok || r.throughput > b.throughput {
					best[key] = r
				}
			}
		}
	}
	var results []result
	for _, name := range opts.scenarios {
		for _, n := range opts.inflight {
			if r, ok := best[name+"/"+strconv.Itoa(n)]; ok {
				results = append(results, r)
			}
		}
	}
	return results, nil
}

// measureScenario opens scenario name for n in flight, measures it, and closes it.
func measureScenario(ctx context.Context, env *env, name string, n int, d time.Duration) (result, error) {
	t, err := scenarios[name](ctx, env, n)
	if err != nil {
		return result{}, err
	}
	defer t.close()
	r := measure(ctx, t.call, n, d)
	r.scenario, r.inflight = name, n
	return r, nil
}

// startCPUProfile starts profiling the process's CPU into path and returns
// the function that stops it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// progress prints one progress line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
