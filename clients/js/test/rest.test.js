// The client over REST against a real gateway (see testutil/gateway.js).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { AtasksClient } from "../index.js";
import { startGateway } from "../testutil/gateway.js";
import { contract } from "../testutil/contract.js";

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.stop();
});

describe("REST transport", () => {
  contract(() => ({ url: gw.url, options: { transport: "rest" } }));

  it("long-polls until the outcome when it takes longer than a wait", async () => {
    const c = new AtasksClient({ baseUrl: gw.url, transport: "rest", pollWait: "100ms" });
    const states = [];
    const out = await c.call("default", "demo.gather", { n: 3, ms: 700 }, { onState: (e) => states.push(e) });
    assert.deepEqual(out, [0, 1, 2]);
    assert.equal(states.filter((e) => e.child).length, 3, "each child reported once");
    assert.equal(states.at(-1).type, "result");
  });

  it("close() rejects calls still waiting, as unavailable", async () => {
    const c = new AtasksClient({ baseUrl: gw.url, transport: "rest" });
    const p = c.call("default", "demo.sleep", { ms: 5000 });
    await new Promise((r) => setTimeout(r, 100));
    c.close();
    await assert.rejects(p, { code: "unavailable" });
  });

  it("reports a gateway that does not answer as unavailable and retryable", async () => {
    const c = new AtasksClient({ baseUrl: "http://127.0.0.1:9", transport: "rest" });
    await assert.rejects(c.call("default", "demo.add", { a: 1, b: 2 }), { code: "unavailable", retryable: true });
  });
});

describe("problem+json", () => {
  // problem answers every request with status and the JSON body.
  const problem = (status, body) => async () =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/problem+json" } });

  it("gives a bad_input's errors as the details an error frame has, {errors}", async () => {
    const errors = [
      { pointer: "/a", detail: "got string, want integer" },
      { pointer: "/c", detail: "not a field of this type" },
    ];
    const body = { type: "about:blank", title: "Bad Request", status: 400, detail: "the input does not fit task demo.add", code: "bad_input", retryable: false, errors };
    const c = new AtasksClient({ baseUrl: "http://gw.test", transport: "rest", fetch: problem(400, body) });
    const err = await c.call("default", "demo.add", { a: "x", b: 2, c: 3 }).catch((e) => e);
    assert.deepEqual(
      { code: err.code, message: err.message, details: err.details, retryable: err.retryable, status: err.status },
      { code: "bad_input", message: "the input does not fit task demo.add", details: { errors }, retryable: false, status: 400 },
    );
  });

  it("gives other problems no details", async () => {
    const body = { type: "about:blank", title: "Not Found", status: 404, detail: "no task demo.nope", code: "task_not_found", retryable: false };
    const c = new AtasksClient({ baseUrl: "http://gw.test", transport: "rest", fetch: problem(404, body) });
    const err = await c.call("default", "demo.nope", {}).catch((e) => e);
    assert.deepEqual([err.code, err.status, err.details], ["task_not_found", 404, undefined]);
  });
});

describe("fallback to REST", () => {
  it("uses REST when there is no WebSocket at all", async () => {
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket: null });
    assert.equal(c.transport, "rest");
    assert.equal(await c.call("default", "demo.add", { a: 2, b: 3 }), 5);
  });

  it("falls back to REST when the WebSocket cannot connect, and retries it later", async () => {
    let attempts = 0;
    class FailingWebSocket {
      constructor(url) {
        attempts++;
        assert.equal(url, gw.url.replace("http://", "ws://") + "/v1/ws");
        setTimeout(() => {
          this.onerror?.({ type: "error" });
          this.onclose?.({ code: 1006 });
        }, 5);
      }
      send() {
        throw new Error("not open");
      }
      close() {}
    }
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket: FailingWebSocket, wsRetryMs: 300 });
    assert.equal(c.transport, "ws");
    const outs = await Promise.all([1, 2, 3].map((b) => c.call("default", "demo.add", { a: 1, b })));
    assert.deepEqual(outs, [2, 3, 4]);
    assert.equal(attempts, 1, "calls waiting for one connection share it");
    assert.equal(c.transport, "rest");
    assert.equal(await c.call("default", "demo.add", { a: 1, b: 1 }), 2);
    assert.equal(attempts, 1, "no new attempt right after a failure");
    await new Promise((r) => setTimeout(r, 350));
    assert.equal(await c.call("default", "demo.add", { a: 1, b: 1 }), 2);
    assert.equal(attempts, 2, "tries the WebSocket again after wsRetryMs");
    await assert.rejects(c.call("default", "demo.add", { a: 1, b: 1 }, { transport: "ws" }), { code: "unavailable" });
  });

  it("falls back to REST on an AbortSignal-cancelled call too", async () => {
    class FailingWebSocket {
      constructor() {
        setTimeout(() => this.onclose?.({ code: 1006 }), 5);
      }
      close() {}
    }
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket: FailingWebSocket });
    const h = await c.start("default", "demo.sleep", { ms: 30000 });
    assert.equal((await h.cancel()).state, "cancelled");
  });
});
