// The behaviour every transport of the client must show against a real
// gateway: run by test/rest.test.js and test/ws.test.js.
import { it } from "node:test";
import assert from "node:assert/strict";
import { AtasksClient, AtasksError } from "../index.js";

/**
 * contract registers the tests; env() returns {url, options} once the
 * gateway is up (in a before hook of the caller).
 */
export function contract(env) {
  const client = (more = {}) => new AtasksClient({ baseUrl: env().url, ...env().options, ...more });

  it("lists namespaces and tasks", async () => {
    const c = client();
    assert.deepEqual(await c.namespaces(), ["default", "seed"]);
    const names = (await c.tasks("default")).map((t) => t.name);
    for (const n of ["demo.add", "demo.echo", "demo.fib", "demo.gather", "demo.sleep", "demo.fail", "demo.panic"]) {
      assert.ok(names.includes(n), `${n} in ${names}`);
    }
    await assert.rejects(c.tasks("nope"), { name: "AtasksError", code: "namespace_not_found", status: 404 });
    const add = (await c.tasks("default")).find((t) => t.name === "demo.add");
    assert.deepEqual(add.schema.input.required, ["a", "b"]);
    assert.deepEqual(Object.keys(add.schema.input.properties), ["a", "b"]);
    assert.equal(add.schema.input.properties.a.type, "integer");
    assert.equal(add.schema.input.additionalProperties, false);
    assert.equal(add.schema.output.type, "integer");
  });

  it("refuses an input that does not fit the task's schema, naming each field at fault", async () => {
    const c = client();
    try {
      // [input, the pointers of details.errors]; absent input is null
      const cases = [
        [undefined, [""]],
        [null, [""]],
        ["not an object", [""]],
        [{}, ["/a", "/b"]],
        [{ a: 1, b: 2, c: 3 }, ["/c"]],
        [{ a: "x", b: 2 }, ["/a"]],
        [{ a: 1.5, b: 2, c: 3 }, ["/a", "/c"]],
      ];
      for (const [input, pointers] of cases) {
        const err = await c.call("default", "demo.add", input).then(
          (out) => assert.fail(`${JSON.stringify(input)}: resolved with ${out}`),
          (e) => e,
        );
        const what = JSON.stringify(input) ?? "no input";
        assert.ok(err instanceof AtasksError, what);
        assert.equal(err.code, "bad_input", what);
        assert.equal(err.retryable, false, what);
        assert.equal(err.invocation, undefined, `${what}: refused before anything is queued`);
        assert.match(err.message, /demo\.add/, what);
        assert.deepEqual(Object.keys(err.details), ["errors"], what);
        assert.deepEqual(err.details.errors.map((e) => e.pointer).sort(), pointers, what);
        assert.ok(err.details.errors.every((e) => typeof e.detail === "string" && e.detail), what);
        await assert.rejects(c.start("default", "demo.add", input), { code: "bad_input" }, `${what}: start`);
      }
      assert.deepEqual(await c.call("default", "demo.echo", { c: 3 }), { c: 3 }, "demo.echo takes anything");
    } finally {
      c.close();
    }
  });

  it("refuses an input JSON cannot encode as bad_input, sending nothing", async () => {
    const sent = [];
    const fetching = (url, init) => {
      sent.push(url);
      return fetch(url, init);
    };
    const c = client({ fetch: fetching });
    try {
      const cyclic = { a: 1 };
      cyclic.self = cyclic;
      for (const input of [1n, { a: 1n, b: 1 }, cyclic, () => 1, Symbol("s")]) {
        await assert.rejects(
          c.call("default", "demo.add", input),
          (e) => e instanceof AtasksError && e.code === "bad_input" && /cannot be encoded as JSON/.test(e.message) && e.details === undefined,
          typeof input,
        );
      }
      assert.deepEqual(sent, []);
    } finally {
      c.close();
    }
  });

  it("calls demo.add", async () => {
    const c = client();
    try {
      assert.equal(await c.call("default", "demo.add", { a: 2, b: 3 }), 5);
    } finally {
      c.close();
    }
  });

  it("echoes unicode and nested values unchanged", async () => {
    const c = client();
    try {
      const v = { s: "héllo wörld ✓ 日本語 😀 \u0000 \u2028", n: [1, 2.5, -3e10, null, true], o: { "ключ": "значение" } };
      assert.deepEqual(await c.call("default", "demo.echo", v), v);
      assert.equal(await c.call("default", "demo.echo", "😀"), "😀");
      assert.equal(await c.call("default", "demo.echo"), null, "no input is null");
    } finally {
      c.close();
    }
  });

  it("calls demo.fib and reports its states and children", async () => {
    const c = client();
    try {
      const events = [];
      assert.equal(await c.call("default", "demo.fib", { n: 10 }, { onState: (e) => events.push(e) }), 55);
      assert.equal(events[0].type, "accepted");
      assert.equal(events[0].state, "queued");
      assert.ok(events[0].id);
      assert.ok(events.some((e) => e.type === "state" && e.state === "running"), "a running event");
      assert.equal(events.filter((e) => e.child).length, 2, "fib(10) awaits two children");
      const last = events.at(-1);
      assert.equal(last.type, "result");
      assert.equal(last.invocation.state, "succeeded");
      assert.equal(last.invocation.result, 55);
      assert.equal(events.filter((e) => e.type === "result").length, 1);
    } finally {
      c.close();
    }
  });

  it("rejects with the task's typed error", async () => {
    const c = client();
    try {
      const err = await c.call("default", "demo.fail", { code: "out_of_stock", message: "no more" }).then(
        () => assert.fail("resolved"),
        (e) => e,
      );
      assert.ok(err instanceof AtasksError);
      assert.equal(err.code, "out_of_stock");
      assert.equal(err.message, "no more");
      assert.equal(err.retryable, false);
      assert.equal(err.invocation.state, "failed");
      assert.equal(err.invocation.task, "demo.fail");
      await assert.rejects(c.call("default", "demo.panic", null), (e) => e.code === "panic" && e.invocation.state === "failed");
      await assert.rejects(
        c.call("default", "demo.add", { a: "two" }),
        (e) => e.code === "bad_input" && e.details.errors.map((v) => v.pointer).sort().join() === "/a,/b",
      );
    } finally {
      c.close();
    }
  });

  it("rejects unknown tasks and namespaces with the gateway's code", async () => {
    const c = client();
    try {
      await assert.rejects(c.call("default", "demo.nope", {}), (e) => e instanceof AtasksError && e.code === "task_not_found");
      await assert.rejects(c.call("nope", "demo.add", {}), (e) => e instanceof AtasksError && e.code === "namespace_not_found");
      assert.equal(await c.call("default", "demo.add", { a: 1, b: 1 }), 2, "the client still works");
    } finally {
      c.close();
    }
  });

  it("cancels demo.sleep through an AbortSignal", async () => {
    const c = client();
    try {
      const ac = new AbortController();
      let id;
      const started = Date.now();
      const p = c.call("default", "demo.sleep", { ms: 30000 }, {
        signal: ac.signal,
        onState: (e) => {
          if (e.type === "accepted") id = e.id;
          if (e.type === "state" && e.state === "running") ac.abort();
        },
      });
      const err = await p.then(() => assert.fail("resolved"), (e) => e);
      assert.ok(err instanceof AtasksError);
      assert.equal(err.name, "AbortError");
      assert.equal(err.code, "cancelled");
      assert.ok(Date.now() - started < 10_000, "rejected at once");
      assert.ok(id, "the call was accepted before the abort");
      const inv = await c.get("default", id, { wait: "10s" });
      assert.equal(inv.state, "cancelled");
      assert.equal(inv.error.code, "cancelled");
    } finally {
      c.close();
    }
  });

  it("rejects at once on an already aborted signal", async () => {
    const c = client();
    try {
      let events = 0;
      const signal = AbortSignal.abort();
      await assert.rejects(c.call("default", "demo.add", { a: 1, b: 2 }, { signal, onState: () => events++ }), {
        name: "AbortError",
        code: "cancelled",
      });
      assert.equal(events, 0, "nothing started");
    } finally {
      c.close();
    }
  });

  it("times out with the invocation's deadline", async () => {
    const c = client();
    try {
      for (const timeout of ["200ms", 200]) {
        const err = await c.call("default", "demo.sleep", { ms: 10000 }, { timeout }).then(
          () => assert.fail("resolved"),
          (e) => e,
        );
        assert.equal(err.code, "timeout");
        assert.equal(err.invocation.state, "timed_out");
      }
    } finally {
      c.close();
    }
  });

  it("delays a call: scheduled until its run_at, run no earlier", async () => {
    const c = client();
    try {
      const states = [];
      const began = Date.now();
      const out = await c.call("default", "demo.add", { a: 2, b: 5 }, { delay: "300ms", onState: (e) => states.push(e) });
      assert.equal(out, 7);
      assert.ok(Date.now() - began >= 300, `ended ${Date.now() - began}ms after it began`);
      const inv = states.at(-1).invocation;
      assert.equal(inv.state, "succeeded");
      assert.ok(inv.run_at && inv.started_at, JSON.stringify(inv));
      assert.ok(Date.parse(inv.started_at) >= Date.parse(inv.run_at), JSON.stringify(inv));

      const h = await c.start("default", "demo.add", { a: 1, b: 1 }, { delay: 60_000 });
      const waiting = await c.get("default", h.id);
      assert.equal(waiting.state, "scheduled");
      assert.ok(Date.parse(waiting.run_at) - Date.parse(waiting.created_at) > 50_000, JSON.stringify(waiting));
      const cancelled = await h.cancel();
      assert.equal(cancelled.state, "cancelled");
      assert.equal(cancelled.started_at, undefined, "it never ran");
    } finally {
      c.close();
    }
  });

  it("runs many calls in parallel", async () => {
    const c = client();
    try {
      const started = Date.now();
      const calls = Array.from({ length: 50 }, (_, i) => c.call("default", "demo.sleep", { ms: 500, value: i }));
      calls.push(c.call("default", "demo.gather", { n: 5, ms: 300 }));
      calls.push(c.call("default", "demo.fail", { code: "x", message: "y" }).catch((e) => e.code));
      const out = await Promise.all(calls);
      assert.deepEqual(out.slice(0, 50), Array.from({ length: 50 }, (_, i) => i));
      assert.deepEqual(out[50], [0, 1, 2, 3, 4]);
      assert.equal(out[51], "x");
      assert.ok(Date.now() - started < 5000, `in parallel, took ${Date.now() - started}ms`);
    } finally {
      c.close();
    }
  });

  it("starts a call, then cancels it through its handle", async () => {
    const c = client();
    try {
      const h = await c.start("default", "demo.sleep", { ms: 30000 });
      assert.match(h.id, /^\w+$/);
      assert.equal(h.ns, "default");
      assert.equal(h.task, "demo.sleep");
      const inv = await h.cancel();
      assert.equal(inv.state, "cancelled");
      assert.equal(inv.id, h.id);
      await assert.rejects(h.result, { code: "cancelled" });

      const h2 = await c.start("default", "demo.add", { a: 20, b: 22 });
      assert.equal(await h2.result, 42);
      assert.equal((await h2.done).state, "succeeded");
    } finally {
      c.close();
    }
  });

  it("subscribes to an invocation started elsewhere", async () => {
    const c = client();
    try {
      const res = await fetch(`${env().url}/v1/ns/default/tasks/demo.sleep?wait=0s`, {
        method: "POST",
        body: JSON.stringify({ ms: 300, value: "later" }),
      });
      assert.equal(res.status, 202);
      const { id } = await res.json();
      const events = [];
      const h = await c.subscribe("default", id, { onState: (e) => events.push(e.type) });
      assert.equal(h.id, id);
      assert.equal(await h.result, "later");
      assert.equal(events.at(-1), "result");
      const missing = await c.subscribe("default", "nosuchinvocation");
      await assert.rejects(missing.result, { code: "invocation_not_found" });
    } finally {
      c.close();
    }
  });
}
