package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestREADME runs the shell snippets of the README as a user would, each
// ```sh block in a bash of its own (set -euo pipefail) from the repository's
// root, against this tree's gateway, with two rewrites so that tests never
// touch a gateway the user runs: localhost:8080 becomes a free port (which
// a gateway the block starts listens on, through ATASKS_LISTEN), and
// `go run ./cmd/gateway` the gateway binary built for the tests. A block
// that starts no gateway runs against an embedded one. Comment lines that
// show output ("# {…", "# /…", "# …") must match what the block printed, in
// order; "…" stands for anything. A block right after a line
// "<!-- not run by TestREADME: why -->" is skipped.
func TestREADME(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range shellBlocks(t, filepath.Join(root, "README.md")) {
		t.Run(fmt.Sprintf("line %d", b.line), func(t *testing.T) {
			if b.skip != "" {
				t.Skip(b.skip)
			}
			t.Parallel()
			runBlock(t, root, b)
		})
	}
}

// shellBlock is a ```sh block of a README.
type shellBlock struct {
	line int    // of its first code line
	code string // its lines
	skip string // why it is not run, if it is not
}

// shellBlocks returns the ```sh blocks of the markdown file.
func shellBlocks(t *testing.T, file string) []shellBlock {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []shellBlock
	var cur *shellBlock
	skip := ""
	for i, line := range strings.Split(string(raw), "\n") {
		switch {
		case cur == nil && line == "```sh":
			cur = &shellBlock{line: i + 2, skip: skip}
		case cur == nil:
			if s, ok := strings.CutPrefix(line, "<!-- not run by TestREADME: "); ok {
				skip = strings.TrimSuffix(s, " -->")
			} else if strings.TrimSpace(line) != "" {
				skip = ""
			}
		case line == "```":
			blocks = append(blocks, *cur)
			cur, skip = nil, ""
		default:
			cur.code += line + "\n"
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("%s has no ```sh block", file)
	}
	return blocks
}

// runBlock runs b and checks the output its comments show.
func runBlock(t *testing.T, root string, b shellBlock) {
	addr := freeAddr(t)
	code := strings.NewReplacer("localhost:8080", addr, "127.0.0.1:8080", addr,
		"go run ./cmd/gateway", filepath.Join(bin, "gateway")).Replace(b.code)
	// The user's environment, but none of atasks' own settings: the README
	// assumes a machine where none is set (no broker: embedded mode).
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "ATASKS_") })
	env = append(env, "ATASKS_LISTEN="+addr)
	if !strings.Contains(b.code, "go run ./cmd/gateway") {
		gw := exec.Command(filepath.Join(bin, "gateway"))
		gw.Env = env
		var out bytes.Buffer
		gw.Stdout, gw.Stderr = &out, &out
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = gw.Process.Kill()
			_ = gw.Wait()
		})
		waitStatus(t, "http://"+addr+"/readyz", 200, time.Minute)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Output goes to a file, not a pipe: a process the block leaves in the
	// background would hold a pipe open.
	outFile, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	sh := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", code)
	sh.Dir, sh.Env, sh.Stdout, sh.Stderr = root, env, outFile, outFile
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // what it starts in the background goes with it
	sh.Cancel = func() error { return syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }
	err = sh.Run()
	_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
	out, _ := os.ReadFile(outFile.Name())
	if err != nil {
		t.Fatalf("the block failed (%v):\n%s\n--- output:\n%s", err, code, out)
	}
	rest := string(out)
	for _, line := range strings.Split(b.code, "\n") {
		want, ok := shownOutput(line)
		if !ok {
			continue
		}
		for _, frag := range strings.Split(want, "…") {
			i := strings.Index(rest, frag)
			if i < 0 {
				t.Fatalf("the output has no %q (of %q) where the README shows it:\n%s", frag, want, out)
			}
			rest = rest[i+len(frag):]
		}
	}
}

// shownOutput returns the output a comment line of a snippet shows, if it
// is such a line.
func shownOutput(line string) (string, bool) {
	s, ok := strings.CutPrefix(line, "# ")
	if !ok || s == "" || !strings.ContainsAny(s[:1], "{[/…") {
		return "", false
	}
	return s, true
}
