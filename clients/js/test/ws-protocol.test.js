// The client's side of docs/WEBSOCKET.md, against a scripted in-memory
// WebSocket: frames sent, multiplexing by ref, error frames, cancel,
// connection loss and lazy reconnect. test/ws.test.js runs the same client
// against the real gateway.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AtasksClient, AtasksError } from "../index.js";

// fakeGateway returns a WebSocket constructor whose sockets hand every
// frame the client sends to onFrame(sock, frame); sock.push(msg) answers.
function fakeGateway(onFrame, { refuse = false } = {}) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = false;
      sockets.push(this);
      setTimeout(() => {
        if (refuse) {
          this.onerror?.({ type: "error" });
          this.onclose?.({ code: 1006 });
        } else this.onopen?.({});
      }, 1);
    }
    send(data) {
      assert.equal(typeof data, "string", "text frames only");
      const frame = JSON.parse(data);
      this.sent.push(frame);
      setTimeout(() => onFrame(this, frame), 1);
    }
    push(msg) {
      if (!this.closed) this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
    }
    drop(code = 1006) {
      if (this.closed) return;
      this.closed = true;
      for (const t of this.timers?.values() ?? []) clearTimeout(t);
      this.onclose?.({ code });
    }
    close(code = 1000) {
      this.drop(code);
    }
  }
  return { WebSocket: FakeWebSocket, sockets };
}

const inv = (id, fields) => ({ id, ns: "default", task: "t", created_at: "2026-01-01T00:00:00Z", ...fields });

// An echoing gateway: accepted, running, then result after input.ms.
function echoing(sock, f) {
  if (f.type === "call") {
    if (f.task === "missing") {
      sock.push({ type: "error", ref: f.ref, error: { code: "task_not_found", message: "no worker serves it" } });
      return;
    }
    const id = "id" + f.ref;
    sock.push({ type: "accepted", ref: f.ref, id, ns: f.ns, task: f.task });
    sock.push({ type: "state", ref: f.ref, id, state: "running", worker: "w:1" });
    sock.timers ??= new Map();
    sock.timers.set(
      f.ref,
      setTimeout(() => {
        sock.push({ type: "result", ref: f.ref, invocation: inv(id, { state: "succeeded", started_at: "x", result: f.input }) });
      }, f.input?.ms ?? 0),
    );
  }
  if (f.type === "cancel") {
    clearTimeout(sock.timers?.get(f.ref));
    const id = "id" + f.ref;
    sock.push({ type: "result", ref: f.ref, invocation: inv(id, { state: "cancelled", error: { code: "cancelled", message: "context canceled", retryable: false } }) });
  }
}

const noFetch = () => Promise.reject(new Error("no REST in this test"));

describe("WebSocket protocol", () => {
  it("sends call frames and matches answers by ref, many calls on one connection", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test:8080/", WebSocket: gw.WebSocket, fetch: noFetch });
    const events = [];
    const [a, b, d] = await Promise.all([
      c.call("default", "t", { ms: 30, v: "slow" }),
      c.call("default", "t", { ms: 0, v: "fast" }, { timeout: "5s", idempotencyKey: "k1", detach: true, onState: (e) => events.push(e) }),
      c.call("default", "t", undefined),
    ]);
    assert.deepEqual([a.v, b.v, d], ["slow", "fast", null]);
    assert.equal(gw.sockets.length, 1);
    assert.equal(gw.sockets[0].url, "ws://gw.test:8080/v1/ws");
    const refs = gw.sockets[0].sent.map((f) => f.ref);
    assert.equal(new Set(refs).size, 3, "distinct refs");
    assert.deepEqual(gw.sockets[0].sent[1], {
      type: "call", ref: refs[1], ns: "default", task: "t", input: { ms: 0, v: "fast" },
      timeout: "5s", idempotency_key: "k1", detach: true,
    });
    assert.equal(gw.sockets[0].sent[2].input, null);
    assert.deepEqual(events.map((e) => [e.type, e.state]), [["accepted", "queued"], ["state", "running"], ["result", "succeeded"]]);
    assert.equal(events[1].worker, "w:1");
    c.close();
  });

  it("turns an error frame about a call into a rejection with its code", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    await assert.rejects(c.call("default", "missing", {}), (e) => e instanceof AtasksError && e.code === "task_not_found");
    assert.deepEqual(await c.call("default", "t", 1), 1, "the connection stays usable");
    c.close();
  });

  it("rejects a failed invocation with its typed error", async () => {
    const gw = fakeGateway((sock, f) => {
      sock.push({ type: "accepted", ref: f.ref, id: "x", ns: f.ns, task: f.task });
      sock.push({ type: "result", ref: f.ref, invocation: inv("x", { state: "failed", error: { code: "oops", message: "m", details: { n: 1 }, retryable: true } }) });
    });
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    await assert.rejects(c.call("default", "t", {}), (e) => e.code === "oops" && e.retryable && e.details.n === 1 && e.invocation.id === "x");
    c.close();
  });

  it("sends cancel on abort, rejects at once, and reports the cancelled outcome", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const ac = new AbortController();
    const events = [];
    const p = c.call("default", "t", { ms: 60_000 }, {
      signal: ac.signal,
      onState: (e) => {
        events.push(e);
        if (e.state === "running") ac.abort();
      },
    });
    await assert.rejects(p, { name: "AbortError", code: "cancelled" });
    while (events.at(-1).type !== "result") await new Promise((r) => setTimeout(r, 1)); // the gateway's answer to the cancel
    const sent = gw.sockets[0].sent;
    assert.deepEqual(sent.at(-1), { type: "cancel", ref: sent[0].ref });
    assert.equal(events.at(-1).type, "result");
    assert.equal(events.at(-1).invocation.state, "cancelled");

    const h = await c.start("default", "t", { ms: 60_000 });
    assert.equal(h.id, "id" + gw.sockets[0].sent.at(-1).ref);
    assert.equal((await h.cancel()).state, "cancelled");
    await assert.rejects(h.result, { code: "cancelled" });
    c.close();
  });

  it("fails calls of a lost connection, follows detached ones over REST, and reconnects on the next call", async () => {
    let accepted = 0; // calls the gateway has answered "accepted" to
    const gw = fakeGateway((sock, f) => {
      echoing(sock, f);
      if (f.type === "call") accepted++;
    });
    const fetched = [];
    const fetch = async (url, init) => {
      fetched.push(`${init.method} ${url}`);
      return new Response(JSON.stringify(inv("idDetached", { state: "succeeded", result: "via REST" })), { status: 200 });
    };
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch });
    const plain = c.call("default", "t", { ms: 60_000 });
    const detached = c.call("default", "t", { ms: 60_000 }, { detach: true });
    while (accepted < 2) await new Promise((r) => setTimeout(r, 1)); // both have ids: the detached one can be followed
    gw.sockets[0].drop();
    await assert.rejects(plain, { code: "unavailable", retryable: true });
    assert.equal(await detached, "via REST");
    assert.match(fetched[0], /^GET http:\/\/gw\.test\/v1\/ns\/default\/invocations\/id\d+\?wait=30s$/);
    assert.equal(await c.call("default", "t", "again"), "again");
    assert.equal(gw.sockets.length, 2, "a new connection for the next call");
    c.close();
  });

  it("ignores frames it cannot use and reports ref-less errors", async () => {
    const errors = [];
    const gw = fakeGateway((sock, f) => {
      sock.push("not json");
      sock.push("42");
      sock.push({ type: "surprise", ref: f.ref });
      sock.push({ type: "result", ref: "nobody", invocation: inv("z", { state: "succeeded" }) });
      sock.push({ type: "error", error: { code: "bad_frame", message: "?" } });
      echoing(sock, f);
    });
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch, onError: (e) => errors.push(e.code) });
    assert.equal(await c.call("default", "t", "ok"), "ok");
    assert.deepEqual(errors, ["bad_frame"]);
    c.close();
  });

  it("subscribes by id and turns invocation_not_found into a rejection", async () => {
    const gw = fakeGateway((sock, f) => {
      assert.equal(f.type, "subscribe");
      if (f.id === "gone") {
        sock.push({ type: "error", ref: f.ref, error: { code: "invocation_not_found", message: "no such invocation" } });
        return;
      }
      sock.push({ type: "state", ref: f.ref, id: f.id, state: "running", child: "kid" });
      sock.push({ type: "result", ref: f.ref, invocation: inv(f.id, { state: "succeeded", result: [1] }) });
    });
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const events = [];
    const h = await c.subscribe("default", "abc", { onState: (e) => events.push(e) });
    assert.deepEqual(await h.result, [1]);
    assert.deepEqual(events.map((e) => e.child ?? e.type), ["kid", "result"]);
    const gone = await c.subscribe("default", "gone");
    await assert.rejects(gone.result, { code: "invocation_not_found" });
    c.close();
  });

  it("closes with close() and rejects what was pending", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const p = c.call("default", "t", { ms: 60_000 });
    await new Promise((r) => setTimeout(r, 20));
    c.close();
    await assert.rejects(p, { code: "unavailable" });
    assert.equal(gw.sockets[0].closed, true);
  });

  it("keeps the code, message, retryable and details of an error frame", async () => {
    const gw = fakeGateway((sock, f) => {
      sock.push({ type: "error", ref: f.ref, error: { code: "too_many_calls", message: "full", retryable: true, details: { open: 1000 } } });
    });
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const err = await c.call("default", "t", 1).then(() => assert.fail("resolved"), (e) => e);
    assert.ok(err instanceof AtasksError);
    assert.deepEqual({ code: err.code, message: err.message, retryable: err.retryable, details: err.details }, {
      code: "too_many_calls",
      message: "full",
      retryable: true,
      details: { open: 1000 },
    });
    c.close();
  });

  it("refuses bad options and unencodable input before sending anything", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const bad = [
      [1, { timeout: "5 seconds" }],
      [1, { timeout: "1.5" }],
      [1, { timeout: "-2ms" }],
      [1, { timeout: NaN }],
      [1, { delay: "-1s" }],
      [1, { delay: -300 }],
      [1, { delay: "later" }],
      [1, { delay: Infinity }],
      [1, { delay: "721h" }], // over the gateway's 30 days
      [1, { delay: "2s", timeout: "1.5s" }], // it could only time out
      [1, { delay: 2000, timeout: 1999 }],
      [1, { idempotencyKey: "x".repeat(256) }],
      [1, { idempotencyKey: "line\nbreak" }],
      [1, { transport: "smoke" }],
    ];
    for (const [input, opts] of bad) {
      await assert.rejects(c.call("default", "t", input, opts), { name: "AtasksError", code: "bad_request" }, JSON.stringify(opts));
    }
    const cyclic = [];
    cyclic.push(cyclic);
    for (const input of [1n, { big: 1n }, cyclic, () => 1, Symbol("s"), { toJSON: () => undefined }]) {
      await assert.rejects(c.call("default", "t", input), { name: "AtasksError", code: "bad_input", retryable: false }, typeof input);
      await assert.rejects(c.start("default", "t", input), { name: "AtasksError", code: "bad_input" }, typeof input);
    }
    await assert.rejects(c.get("default", "x", { wait: "later" }), { code: "bad_request" });
    await assert.rejects(c.subscribe("default", "x", { transport: "smoke" }).then((h) => h.result), { code: "bad_request" });
    assert.equal(gw.sockets.length, 0, "no connection for calls that cannot be sent");
    for (const timeout of ["0", "0s", "1h2m3.5s", ".5s", "250ms", "3us", "3\u00b5s", 0, 1500]) {
      assert.ok(await c.call("default", "t", 1, { timeout }), `timeout ${timeout}`);
    }
    for (const opts of [{ delay: "0" }, { delay: 0 }, { delay: "1ms" }, { delay: "720h" }, { delay: "2s", timeout: "2s" }, { delay: "1h", timeout: 0 }]) {
      assert.ok(await c.call("default", "t", 1, opts), JSON.stringify(opts));
    }
    assert.equal(await c.call("default", "t", 1, { idempotencyKey: "x".repeat(255) }), 1);
    // As JSON.stringify does: what it leaves out of an object is not an error.
    assert.deepEqual(await c.call("default", "t", { a: 1, u: undefined, f: () => 1 }), { a: 1 });
    c.close();
  });

  it("sends a call's delay as delay in its frame, and as ?delay= over REST", async () => {
    const gw = fakeGateway(echoing);
    const urls = [];
    const fetch = async (url) => {
      urls.push(url);
      return new Response(JSON.stringify(inv("r", { state: "succeeded", result: 1 })), { status: 200 });
    };
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch });
    for (const [delay, sent] of [["1.5s", "1.5s"], [300, "300ms"], ["72h", "72h"]]) {
      await c.call("default", "t", 1, { delay, timeout: "100h" });
      assert.deepEqual(gw.sockets[0].sent.at(-1), { type: "call", ref: gw.sockets[0].sent.at(-1).ref, ns: "default", task: "t", input: 1, timeout: "100h", delay: sent });
      await c.call("default", "t", 1, { delay, transport: "rest" });
      assert.equal(new URL(urls.at(-1)).searchParams.get("delay"), sent);
    }
    await c.call("default", "t", 1);
    assert.equal("delay" in gw.sockets[0].sent.at(-1), false, "no delay, none sent");
    c.close();
  });

  it("removes its listener from the caller's signal once a call is done", async () => {
    const gw = fakeGateway(echoing);
    const c = new AtasksClient({ baseUrl: "http://gw.test", WebSocket: gw.WebSocket, fetch: noFetch });
    const listeners = new Set();
    const signal = {
      aborted: false,
      addEventListener: (type, f) => listeners.add(f),
      removeEventListener: (type, f) => listeners.delete(f),
    };
    const outs = await Promise.all(Array.from({ length: 20 }, (_, i) => c.call("default", "t", i, { signal })));
    assert.equal(outs.length, 20);
    assert.equal(listeners.size, 0);
    c.close();
  });
});
