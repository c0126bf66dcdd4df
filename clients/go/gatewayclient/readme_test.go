package gatewayclient_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

var (
	goBlock      = regexp.MustCompile("(?s)```go\n(.*?)```")
	trailComment = regexp.MustCompile(` // .*$`)
)

// TestREADME checks that the Go snippets of ../README.md are lines of
// example_test.go, in order: what the README shows is what the examples run.
// Comments, indentation and import lines are left out of the comparison, and
// the README's gateway address stands for gatewayURL.
func TestREADME(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(examples), "\n")
	i := 0
	for _, want := range snippetLines(string(readme)) {
		for i < len(lines) && !strings.Contains(lines[i], want) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("README line %q is not in example_test.go, after the lines before it", want)
		}
		i++
	}
}

// snippetLines returns the code lines of the Go blocks of a README.
func snippetLines(readme string) []string {
	var out []string
	for _, m := range goBlock.FindAllStringSubmatch(readme, -1) {
		for l := range strings.SplitSeq(m[1], "\n") {
			l = strings.TrimSpace(trailComment.ReplaceAllString(l, ""))
			l = strings.ReplaceAll(l, `"http://127.0.0.1:8080"`, "gatewayURL")
			if l != "" && !strings.HasPrefix(l, "import ") {
				out = append(out, l)
			}
		}
	}
	return out
}
