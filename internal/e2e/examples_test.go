package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atasks-go/atasks"
	"github.com/atasks-go/atasks/clients/go/gatewayclient"
)

// billingTasks are the tasks examples/billing defines, in namespace billing.
var billingTasks = []string{"billing.authorize", "billing.capture", "billing.charge", "billing.charge_all"}

// buildBilling builds examples/billing's commands into bin (billing-worker,
// billing-call) as a user's module would be built: from its own go.mod,
// outside this module, so an import of atasks' internal/ packages fails
// the build, and with the go.sum it ships (no -mod=mod). It runs once;
// it returns the build's output and error.
var buildBilling = sync.OnceValues(func() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-race", "-o", bin+"/", "./cmd/billing-worker", "./cmd/billing-call")
	cmd.Dir = filepath.Join("..", "..", "examples", "billing")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	return cmd.CombinedOutput()
})

// receipt is billing.Receipt, as the clients see it.
type receipt struct {
	Account         string `json:"account"`
	AmountCents     int64  `json:"amount_cents"`
	AuthorizationID string `json:"authorization_id"`
	CaptureID       string `json:"capture_id"`
	CaptureAttempt  int    `json:"capture_attempt"`
}

// wantFunds is the details of the insufficient_funds error of a charge of
// 5000 cents to alice, who has 1000.
const wantFunds = `{"account":"alice","balance_cents":1000,"amount_cents":5000}`

// An example module of the user's own tasks (examples/billing), built
// outside this module: its worker binary serves them through RabbitMQ, the
// stock gateway fronts their namespace, and curl, the Python, JS and Go
// gateway clients, and a Go program calling through RabbitMQ with the SDK
// see a task awaiting others, a typed error with its details, and a task
// that succeeds on a later attempt of its retry policy.
func TestExampleBilling(t *testing.T) {
	t.Parallel()
	if out, err := buildBilling(); err != nil {
		t.Fatalf("building examples/billing as a module of its own (after a change to atasks' go.mod, run `go mod tidy` there): %v\n%s", err, out)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	s := newSystem(t)
	s.extra = map[string][]string{"billing": billingTasks}
	s.observed("billing-worker")
	_, base := s.gateway("--namespaces", "billing")
	for _, task := range billingTasks {
		waitServed(t, base, "billing", task)
	}

	t.Run("catalog", func(t *testing.T) {
		t.Parallel()
		body, status := curl(t, base+"/v1/ns/billing/tasks")
		var cat struct {
			NS    string `json:"ns"`
			Tasks []struct {
				Name    string `json:"name"`
				Servers int    `json:"servers"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal(body, &cat); status != 200 || err != nil {
			t.Fatalf("GET /v1/ns/billing/tasks: %d %s", status, body)
		}
		var names []string
		for _, x := range cat.Tasks {
			names = append(names, x.Name)
			if x.Servers != 1 {
				t.Errorf("%s: %d servers, want 1", x.Name, x.Servers)
			}
		}
		slices.Sort(names)
		if cat.NS != "billing" || !slices.Equal(names, billingTasks) {
			t.Errorf("the catalog of billing: %s %v, want %v", cat.NS, names, billingTasks)
		}
		body, _ = curl(t, base+"/v1/ns")
		if got := strings.TrimSpace(string(body)); got != `{"namespaces":["billing"]}` {
			t.Errorf("GET /v1/ns: %s", got)
		}
	})

	t.Run("curl", func(t *testing.T) {
		t.Parallel()
		post := func(task, input string) invocation {
			t.Helper()
			body, status := curl(t, "-X", "POST", base+"/v1/ns/billing/tasks/"+task+"?wait=30s", "-d", input)
			var inv invocation
			if err := json.Unmarshal(body, &inv); err != nil {
				t.Fatalf("POST %s: %d %s", task, status, body)
			}
			inv.status = status
			return inv
		}

		inv := post("billing.charge", `{"account":"acme","amount_cents":1200,"provider_failures":2}`)
		var r receipt
		if inv.status != 200 || inv.State != "succeeded" || json.Unmarshal(inv.Result, &r) != nil ||
			r.Account != "acme" || r.AmountCents != 1200 || r.CaptureAttempt != 3 {
			t.Fatalf("charge with a flaky provider: %d %s %s %+v", inv.status, inv.State, inv.Result, inv.Error)
		}
		if len(inv.Children) != 2 {
			t.Fatalf("charge awaited %d children, want 2 (authorize, capture)", len(inv.Children))
		}
		// The gateway keeps of a child what its parent reported: its task
		// and how it ended; the capture's attempt is in the receipt.
		for i, want := range []struct{ task, id string }{{"billing.authorize", r.AuthorizationID}, {"billing.capture", r.CaptureID}} {
			res, err := http.Get(base + "/v1/ns/billing/invocations/" + inv.Children[i])
			if err != nil {
				t.Fatal(err)
			}
			child := read(t, res)
			if child.Task != want.task || !childSucceeded(child.State) || !strings.HasSuffix(want.id, "_"+child.ID) {
				t.Errorf("child %d: %s %s id %s; want %s succeeded, the receipt's %s", i, child.Task, child.State, child.ID, want.task, want.id)
			}
		}

		body, status := curl(t, "-X", "POST", base+"/v1/ns/billing/tasks/billing.charge?wait=30s", "-d", `{"account":"alice","amount_cents":5000}`)
		var failed struct {
			State string `json:"state"`
			Error struct {
				Code      string          `json:"code"`
				Details   json.RawMessage `json:"details"`
				Retryable bool            `json:"retryable"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &failed); err != nil || status != 200 || failed.State != "failed" ||
			failed.Error.Code != "insufficient_funds" || string(failed.Error.Details) != wantFunds || failed.Error.Retryable {
			t.Errorf("charge beyond the balance: %d %s; want 200, failed, insufficient_funds with %s", status, body, wantFunds)
		}

		inv = post("billing.capture", `{"authorization_id":"auth_curl","amount_cents":100,"provider_failures":1}`)
		if inv.State != "succeeded" || inv.Attempt != 2 || !strings.Contains(string(inv.Result), `"attempt":2`) {
			t.Errorf("capture with a flaky provider: %s attempt %d %s %+v", inv.State, inv.Attempt, inv.Result, inv.Error)
		}

		inv = post("billing.charge_all", `[{"account":"acme","amount_cents":100},{"account":"alice","amount_cents":200,"provider_failures":1}]`)
		var rs []receipt
		if inv.State != "succeeded" || json.Unmarshal(inv.Result, &rs) != nil || len(rs) != 2 || len(inv.Children) != 2 ||
			rs[0].Account != "acme" || rs[1].Account != "alice" || rs[1].CaptureAttempt != 2 {
			t.Errorf("charge_all: %s %s children %v %+v", inv.State, inv.Result, inv.Children, inv.Error)
		}
	})

	t.Run("python", func(t *testing.T) {
		t.Parallel()
		var got clientReport
		runClient(t, base, &got, []string{"PYTHONPATH=" + filepath.Join(root, "clients", "python")},
			"/usr/bin/python3", "-c", pythonBilling)
		got.check(t)
	})

	for _, transport := range []string{"ws", "rest"} {
		t.Run("js-"+transport, func(t *testing.T) {
			t.Parallel()
			var got clientReport
			runClient(t, base, &got, []string{"ATASKS_JS_CLIENT=file://" + filepath.Join(root, "clients", "js", "index.js"), "ATASKS_TRANSPORT=" + transport},
				"node", "--experimental-websocket", "--input-type=module", "-e", jsBilling)
			got.check(t)
		})
	}

	t.Run("go", func(t *testing.T) {
		t.Parallel()
		within(t, time.Minute, "the Go client's calls", func() { goBilling(t, base) })
	})

	t.Run("sdk", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		charge := func(args ...string) (stdout, stderr string, err error) {
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "billing-call"), append(args, "-timeout", "30s")...)
			cmd.Env = append(os.Environ(), "ATASKS_AMQP_URL="+s.url, "ATASKS_PREFIX="+s.prefix)
			var out, errs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errs
			err = cmd.Run()
			return out.String(), errs.String(), err
		}
		out, errs, err := charge("-account", "acme", "-amount", "700", "-provider-failures", "1")
		var r receipt
		if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.AmountCents != 700 || r.CaptureAttempt != 2 {
			t.Errorf("billing-call through RabbitMQ: %v\n%s%s", err, out, errs)
		}
		_, errs, err = charge("-account", "alice", "-amount", "5000")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 ||
			!strings.Contains(errs, "insufficient_funds: balance is 1000, the charge 5000 (details: account alice has 1000 cents, 5000 asked)") {
			t.Errorf("billing-call beyond the balance: %v\n%s", err, errs)
		}
	})
}

// childSucceeded tells whether a succeeded child's state, as the gateway
// has it from the parent's final reply, is right.
func childSucceeded(state string) bool { return state == "succeeded" }

// curl runs curl -s with args and returns the body and the HTTP status.
func curl(t *testing.T, args ...string) ([]byte, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append([]string{"-s", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	i := bytes.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(string(out[i+1:]))
	if err != nil {
		t.Fatalf("curl %v: no status in %q", args, out)
	}
	return out[:i], status
}

// clientReport is what the Python and JS scripts saw, printed as JSON:
// a charge whose capture the provider refused once, a charge beyond the
// balance, a capture started and followed to its end, the catalog.
type clientReport struct {
	Receipt receipt `json:"receipt"`
	Error   struct {
		Code      string          `json:"code"`
		Details   json.RawMessage `json:"details"`
		Retryable bool            `json:"retryable"`
		State     string          `json:"state"`
	} `json:"error"`
	Capture struct {
		State   string `json:"state"`
		Attempt int    `json:"attempt"`
	} `json:"capture"`
	Tasks []string `json:"tasks"`
}

func (r clientReport) check(t *testing.T) {
	t.Helper()
	if r.Receipt.Account != "acme" || r.Receipt.AmountCents != 1200 || r.Receipt.CaptureAttempt != 2 ||
		!strings.HasPrefix(r.Receipt.AuthorizationID, "auth_") || !strings.HasPrefix(r.Receipt.CaptureID, "cap_") {
		t.Errorf("receipt: %+v", r.Receipt)
	}
	var details, want any
	_ = json.Unmarshal(r.Error.Details, &details)
	_ = json.Unmarshal([]byte(wantFunds), &want)
	if r.Error.Code != "insufficient_funds" || r.Error.State != "failed" || r.Error.Retryable || !jsonEqual(details, want) {
		t.Errorf("error: %s %s retryable %v details %s; want insufficient_funds, failed, %s",
			r.Error.Code, r.Error.State, r.Error.Retryable, r.Error.Details, wantFunds)
	}
	if r.Capture.State != "succeeded" || r.Capture.Attempt != 2 {
		t.Errorf("capture: %+v, want succeeded at attempt 2", r.Capture)
	}
	slices.Sort(r.Tasks)
	if !slices.Equal(r.Tasks, billingTasks) {
		t.Errorf("tasks: %v, want %v", r.Tasks, billingTasks)
	}
}

// jsonEqual compares two decoded JSON values.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// runClient runs a client's script, with ATASKS_GATEWAY_URL set to the
// gateway at base and env added, for at most a minute, and decodes the
// JSON it prints last into report.
func runClient(t *testing.T, base string, report any, env []string, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), "ATASKS_GATEWAY_URL="+base), env...)
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", argv[0], err, out.String(), errs.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), report); err != nil {
		t.Fatalf("%s printed no report: %v\n%s%s", argv[0], err, out.String(), errs.String())
	}
}

// pythonBilling is the Python client's part, with the blocking API.
const pythonBilling = `
import json, os
from atasks_client import AtasksError, BlockingClient

with BlockingClient(os.environ["ATASKS_GATEWAY_URL"]) as client:
    report = {"receipt": client.call("billing", "billing.charge", {"account": "acme", "amount_cents": 1200, "provider_failures": 1})}
    try:
        client.call("billing", "billing.charge", {"account": "alice", "amount_cents": 5000})
    except AtasksError as err:
        report["error"] = {"code": err.code, "details": err.details, "retryable": err.retryable, "state": err.state}
    handle = client.start("billing", "billing.capture", {"authorization_id": "auth_py", "amount_cents": 100, "provider_failures": 1})
    handle.result(timeout=30)
    report["capture"] = client.get("billing", handle.id)
    report["tasks"] = [task["name"] for task in client.tasks("billing")]
print(json.dumps(report))
`

// jsBilling is the JS client's part, over $ATASKS_TRANSPORT.
const jsBilling = `
const { AtasksClient, AtasksError } = await import(process.env.ATASKS_JS_CLIENT);
const client = new AtasksClient({ baseUrl: process.env.ATASKS_GATEWAY_URL, transport: process.env.ATASKS_TRANSPORT });
const report = {};
report.receipt = await client.call("billing", "billing.charge", { account: "acme", amount_cents: 1200, provider_failures: 1 });
try {
  await client.call("billing", "billing.charge", { account: "alice", amount_cents: 5000 });
} catch (err) {
  if (!(err instanceof AtasksError)) throw err;
  report.error = { code: err.code, details: err.details, retryable: err.retryable, state: err.invocation?.state };
}
const handle = await client.start("billing", "billing.capture", { authorization_id: "auth_js", amount_cents: 100, provider_failures: 1 });
await handle.result;
report.capture = await handle.done;
report.tasks = (await client.tasks("billing")).map((task) => task.name);
client.close();
console.log(JSON.stringify(report));
`

// goBilling calls the billing tasks with the Go gateway client. It reports
// failures with t.Errorf only: it runs inside within.
func goBilling(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c, err := gatewayclient.New(base)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()

	inv, err := c.Call(ctx, "billing", "billing.charge", map[string]any{"account": "acme", "amount_cents": 1200, "provider_failures": 1})
	var r receipt
	if err != nil || inv.Decode(&r) != nil || r.CaptureAttempt != 2 || len(inv.Children) != 2 {
		t.Errorf("charge: %v %+v", err, inv)
	} else if capt, err := c.Get(ctx, "billing", inv.Children[1], 0); err != nil || capt.Task != "billing.capture" || !childSucceeded(string(capt.State)) {
		t.Errorf("the charge's capture: %v %+v", err, capt)
	}

	inv, err = c.Call(ctx, "billing", "billing.charge", map[string]any{"account": "alice", "amount_cents": 5000})
	var e *atasks.Error
	if !errors.Is(err, &atasks.Error{Code: "insufficient_funds"}) || !errors.As(err, &e) || inv == nil || inv.State != "failed" {
		t.Errorf("charge beyond the balance: %v %+v", err, inv)
	} else {
		var d struct {
			Account      string `json:"account"`
			BalanceCents int64  `json:"balance_cents"`
			AmountCents  int64  `json:"amount_cents"`
		}
		if err := json.Unmarshal(e.Details, &d); err != nil || d.Account != "alice" || d.BalanceCents != 1000 || d.AmountCents != 5000 {
			t.Errorf("insufficient_funds details: %s", e.Details)
		}
	}

	rs, err := gatewayclient.CallAs[[]receipt](ctx, c, "billing", "billing.charge_all",
		[]map[string]any{{"account": "acme", "amount_cents": 100}, {"account": "acme", "amount_cents": 200, "provider_failures": 2}})
	if err != nil || len(rs) != 2 || rs[0].AmountCents != 100 || rs[1].AmountCents != 200 || rs[1].CaptureAttempt != 3 {
		t.Errorf("charge_all: %v %+v", err, rs)
	}

	tasks, err := c.Tasks(ctx, "billing")
	var names []string
	for _, x := range tasks {
		names = append(names, x.Name)
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, billingTasks) {
		t.Errorf("tasks: %v %v", err, names)
	}
}
