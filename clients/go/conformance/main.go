// Command conformance runs the client conformance cases (conformance/README.md)
// against a gateway with gatewayclient:
//
//	ATASKS_GATEWAY_URL=http://127.0.0.1:8080 ATASKS_CONFORMANCE_CASES=conformance/cases.json \
//	ATASKS_CONFORMANCE_RUN=$RANDOM go run ./clients/go/conformance
//
// It prints "ok <name>" or "FAIL <name>: <why>" per case, in the file's
// order, and exits 0 when every case passed, 1 when one failed and 2 when it
// could not run (a missing variable, an unreadable file, a case it does not
// understand).
package main

import (
	"context"
	"fmt"
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
	// Every case runs at once; the lines come out in the file's order.
	results := make([]chan error, len(cases))
	for i, tc := range cases {
		results[i] = make(chan error, 1)
		go func() { results[i] <- tc.run(url, runID) }()
	}
	code := 0
	for i, tc := range cases {
		if err := <-results[i]; err != nil {
			fmt.Printf("FAIL %s: %s\n", tc.Name, strings.ReplaceAll(err.Error(), "\n", "; "))
			code = 1
			continue
		}
		fmt.Printf("ok %s\n", tc.Name)
	}
	return code
}

// reachable checks that the gateway at url answers.
func reachable(url string) error {
	c, err := gatewayclient.New(url)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Namespaces(ctx); err != nil {
		return fmt.Errorf("the gateway at %s does not answer: %w", url, err)
	}
	return nil
}
