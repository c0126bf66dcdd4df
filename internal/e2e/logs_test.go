package e2e

import (
	"bufio"
	"encoding/json"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// With --log-format json every line the binaries write is one JSON object;
// each line about an invocation names its namespace, task, id and trace
// id; and the broker password appears nowhere, not even when it is wrong.
func TestLogsAreJSONAndKeepSecrets(t *testing.T) {
	t.Parallel()
	s := newSystem(t)
	secret := "pw-" + s.prefix + "-secret"
	user := "atasks-" + s.prefix
	rabbitmqctl(t, "add_user", user, secret)
	t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
	rabbitmqctl(t, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, secret)
	args := []string{"--amqp-url", u.String(), "--log-format", "json", "--log-level", "debug"}

	w := s.worker(args...)
	gw, base := s.gateway(args...)
	waitServed(t, base, "default", "demo.panic")
	call(t, base, "default", "demo.add", `{"a":1,"b":2}`, "?wait=10s")
	call(t, base, "default", "demo.panic", ``, "?wait=10s")
	call(t, base, "default", "demo.fail", `{"code":"c","message":"m"}`, "?wait=10s")
	u.User = url.UserPassword(user, "wrong-"+secret)
	bad := s.start("gateway", "--amqp-url", u.String(), "--listen", "127.0.0.1:0", "--log-format", "json")
	select {
	case <-bad.done:
	case <-time.After(30 * time.Second):
		t.Fatal("a gateway with a wrong password did not give up")
	}
	gw.stop(t, 30*time.Second)
	w.stop(t, 30*time.Second)

	about := 0
	for _, p := range []*proc{w, gw, bad} {
		out := p.output()
		if strings.Contains(out, secret) {
			t.Errorf("%s wrote the password:\n%s", p.name, out)
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				if p != bad || !strings.HasPrefix(line, "gateway:") { // the exit message is plain
					t.Errorf("%s: not a JSON line: %s", p.name, line)
				}
				continue
			}
			if rec["invocation_id"] == nil {
				continue
			}
			about++
			for _, k := range []string{"ns", "task", "invocation_id", "trace_id"} {
				if v, _ := rec[k].(string); v == "" {
					t.Errorf("%s: a line about an invocation without %s: %s", p.name, k, line)
				}
			}
		}
	}
	if about == 0 {
		t.Error("no line about an invocation: the check saw nothing")
	}
	t.Logf("%d lines about invocations, each with ns, task, invocation_id and trace_id", about)
}

// rabbitmqctl runs rabbitmqctl with args, failing the test if it fails.
func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", args[0], err, out)
	}
}
