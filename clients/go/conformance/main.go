// Command conformance runs the client conformance cases (conformance/README.md)
// against a gateway with gatewayclient:
//
//	ATASKS_GATEWAY_URL=http://127.0.0.1:8080 ATASKS_CONFORMANCE_CASES=conformance/cases.json \
//	ATASKS_CONFORMANCE_RUN=$RANDOM go run ./clients/go/conformance
//
// It runs every case over the WebSocket, then over REST, and prints
// "ok [ws] <name>" or "FAIL [ws] <name>: <why>" per case (then the same with
// [rest]), in the file's order. It exits 0 when every case passed over both,
// 1 when one failed and 2 when it could not run (a missing variable, an
// unreadable file, a case it does not understand, no gateway).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/atasks-go/atasks/clients/go/gatewayclient"
)

// caseTimeout bounds each case.
const caseTimeout = 30 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	url, path, runID := os.Getenv("ATASKS_GATEWAY_URL"), os.Getenv("ATASKS_CONFORMANCE_CASES"), os.Getenv("ATASKS_CONFORMANCE_RUN")
	if url == "" || path == "" || runID == "" {
		fmt.Fprintln(os.Stderr, "conformance: set ATASKS_GATEWAY_URL, ATASKS_CONFORMANCE_CASES and ATASKS_CONFORMANCE_RUN")
		return 2
	}
	cases, err := load(path)
	if err == nil {
		err = reachable(url)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 2
	}
	code := 0
	for _, tr := range []gatewayclient.Transport{gatewayclient.TransportWS, gatewayclient.TransportREST} {
		passed, err := runAll(os.Stdout, url, runID, tr, cases)
		if err != nil {
			fmt.Fprintln(os.Stderr, "conformance:", err)
			return 2
		}
		if !passed {
			code = 1
		}
	}
	return code
}

// runAll runs every case at once over transport tr and writes a line per
// case to w, in the file's order; it reports whether every case passed.
// The cases share one client (over the WebSocket, one connection), except
// those whose wait needs a REST client of their own.
func runAll(w io.Writer, url, runID string, tr gatewayclient.Transport, cases []*testCase) (bool, error) {
	shared, err := gatewayclient.New(url, gatewayclient.WithTransport(tr))
	if err != nil {
		return false, err
	}
	defer shared.Close()
	results := make([]chan error, len(cases))
	for i, tc := range cases {
		results[i] = make(chan error, 1)
		go func() { results[i] <- tc.run(url, runID, tr, shared) }()
	}
	passed := true
	for i, tc := range cases {
		if err := <-results[i]; err != nil {
			fmt.Fprintf(w, "FAIL [%s] %s: %s\n", tr, tc.Name, strings.ReplaceAll(err.Error(), "\n", "; "))
			passed = false
			continue
		}
		fmt.Fprintf(w, "ok [%s] %s\n", tr, tc.Name)
	}
	return passed, nil
}

// reachable checks that the gateway at url answers.
func reachable(url string) error {
	c, err := gatewayclient.New(url, gatewayclient.WithTransport(gatewayclient.TransportREST))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Namespaces(ctx); err != nil {
		return fmt.Errorf("the gateway at %s does not answer: %w", url, err)
	}
	return nil
}
