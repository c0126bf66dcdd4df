// The client over the gateway's real WebSocket (/v1/ws). Needs a global
// WebSocket: Node >= 22, or Node 20 with --experimental-websocket (as the
// package's test script runs it). Skipped, saying why, when there is none or
// when the gateway has no /v1/ws route.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { AtasksClient, AtasksError } from "../index.js";
import { startGateway, hasWebSocketRoute } from "../testutil/gateway.js";
import { contract } from "../testutil/contract.js";

let gw;
let skip = typeof WebSocket === "undefined" ? "no global WebSocket: run node with --experimental-websocket (Node 20) or use Node >= 22" : false;
if (!skip) {
  gw = await startGateway();
  if (!(await hasWebSocketRoute(gw.url))) {
    skip = "the gateway has no /v1/ws route yet";
    await gw.stop();
  }
}
if (skip) console.log(`# WebSocket tests skipped: ${skip}`);

after(async () => {
  if (!skip) await gw?.stop();
});

// counting wraps the global WebSocket to count connections.
function counting() {
  const opened = { n: 0 };
  class CountingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      opened.n++;
    }
  }
  return { opened, WebSocket: CountingWebSocket };
}

describe("WebSocket transport", { skip }, () => {
  contract(() => ({ url: gw.url, options: { transport: "ws" } }));

  it("multiplexes many calls over one connection and reconnects lazily after close()", async () => {
    const { opened, WebSocket } = counting();
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket, transport: "ws" });
    const outs = await Promise.all(Array.from({ length: 100 }, (_, i) => c.call("default", "demo.add", { a: i, b: 1 })));
    assert.deepEqual(outs, Array.from({ length: 100 }, (_, i) => i + 1));
    assert.equal(opened.n, 1);
    c.close();
    assert.equal(await c.call("default", "demo.add", { a: 1, b: 1 }), 2);
    assert.equal(opened.n, 2);
    c.close();
  });

  it("goes over WebSocket by default when one is available", async () => {
    const { opened, WebSocket } = counting();
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket });
    assert.equal(await c.call("default", "demo.add", { a: 2, b: 3 }), 5);
    assert.equal(opened.n, 1);
    assert.equal(c.transport, "ws");
    c.close();
  });

  it("keeps a detached call going after the connection closes", async () => {
    const c = new AtasksClient({ baseUrl: gw.url, transport: "ws" });
    const h = await c.start("default", "demo.sleep", { ms: 300, value: "kept" }, { detach: true });
    c.close();
    await assert.rejects(h.result, { code: "unavailable" });
    const inv = await new AtasksClient({ baseUrl: gw.url, transport: "rest" }).get("default", h.id, { wait: "10s" });
    assert.equal(inv.state, "succeeded");
    assert.equal(inv.result, "kept");
  });

  it("fails the same way as REST: the same code, message, details and retryable", async () => {
    const abortSoon = () => AbortSignal.timeout(150);
    const key = `conflict-${Date.now()}`;
    const failures = [
      ["default", "demo.nope", {}],
      ["nope", "demo.add", { a: 1, b: 1 }],
      ["default", "demo.add", "not an object"],
      ["default", "demo.fail", { code: "busy", message: "later", details: { n: [1, 2] }, retryable: true }],
      ["default", "demo.panic", null],
      ["default", "demo.sleep", { ms: 10000 }, { timeout: "100ms" }],
      ["default", "demo.sleep", { ms: 10000 }, { signal: abortSoon }],
      ["default", "demo.add", { a: 1, b: 1 }, { timeout: "soon" }],
      ["default", "demo.add", { a: 1, b: 1 }, { timeout: "-1s" }],
      ["default", "demo.add", { a: 1, b: 1 }, { timeout: -5 }],
      ["default", "demo.add", { a: 1, b: 1 }, { idempotencyKey: "k".repeat(256) }],
      ["default", "demo.add", { a: 1, b: 1 }, { idempotencyKey: "clé" }],
      ["default", "demo.add", { a: 1n, b: 1 }],
      ["default", "demo.add", { a: 1, b: 1 }, { transport: "pigeon" }],
      ["default", "demo.add", { a: 1, b: 2 }, { idempotencyKey: key }], // the key named {a: 1, b: 1} first
      ["default", "demo.add"],
      ["default", "demo.add", {}],
      ["default", "demo.add", { a: 1, b: 2, c: 3 }],
      ["default", "demo.add", { a: "x", b: 2 }],
      ["default", "demo.add", () => 1],
      ["default", "demo.add", { a: 1, b: 1 }, { delay: "-1s" }],
      ["default", "demo.add", { a: 1, b: 1 }, { delay: "721h" }], // the gateway: bad_frame, 400 bad_request
      ["default", "demo.add", { a: 1, b: 1 }, { delay: "2s", timeout: "1s" }], // the same
    ];
    const shape = (e) => ({
      AtasksError: e instanceof AtasksError,
      name: e.name,
      code: e.code,
      message: e.message.replace(/"\w{26}"/, '"<id>"'),
      details: e.details,
      retryable: e.retryable,
      state: e.invocation?.state,
    });
    const run = async (transport) => {
      const c = new AtasksClient({ baseUrl: gw.url, transport });
      try {
        await c.call("default", "demo.add", { a: 1, b: 1 }, { idempotencyKey: key });
        return await Promise.all(
          failures.map(([ns, task, input, opts = {}]) => {
            const o = { ...opts, signal: opts.signal?.() };
            return c.call(ns, task, input, o).then((out) => ({ resolved: out }), shape);
          }),
        );
      } finally {
        c.close();
      }
    };
    const ws = await run("ws");
    const rest = await run("rest");
    assert.deepEqual(ws, rest);
    assert.deepEqual(
      ws.map((e) => e.code),
      ["task_not_found", "namespace_not_found", "bad_input", "busy", "panic", "timeout", "cancelled"]
        .concat(Array(5).fill("bad_request"), ["bad_input", "bad_request", "idempotency_conflict"], Array(5).fill("bad_input"), Array(3).fill("bad_request")),
    );
    assert.ok(ws.every((e) => e.AtasksError));
    assert.deepEqual(ws[3], { AtasksError: true, name: "AtasksError", code: "busy", message: "later", details: { n: [1, 2] }, retryable: true, state: "failed" });
    // The gateway's bad_input names the fields at fault; the client's own
    // (an input it cannot encode) has no details.
    const pointers = (e) => e.details?.errors?.map((v) => v.pointer);
    assert.deepEqual([2, 15, 16, 17, 18, 12, 19].map((i) => pointers(ws[i])), [[""], [""], ["/a", "/b"], ["/c"], ["/a"], undefined, undefined]);
    assert.deepEqual(ws[0].retryable, false);
  });

  it("names the same invocation by idempotency key over WebSocket and REST", async () => {
    const key = `same-${Date.now()}`;
    const c = new AtasksClient({ baseUrl: gw.url });
    try {
      const a = await c.start("default", "demo.add", { a: 40, b: 2 }, { idempotencyKey: key, transport: "ws" });
      const b = await c.start("default", "demo.add", { a: 40, b: 2 }, { idempotencyKey: key, transport: "rest" });
      const d = await c.start("default", "demo.add", { a: 40, b: 2 }, { idempotencyKey: key, transport: "ws" });
      assert.deepEqual([await a.result, await b.result, await d.result], [42, 42, 42]);
      assert.equal(b.id, a.id);
      assert.equal(d.id, a.id);
    } finally {
      c.close();
    }
  });

  it("sends an input over the gateway's frame limit over REST in auto mode, sparing the connection's other calls", async () => {
    const { opened, WebSocket } = counting();
    const c = new AtasksClient({ baseUrl: gw.url, WebSocket });
    try {
      const slow = c.call("default", "demo.sleep", { ms: 500, value: "spared" });
      const fits = "é".repeat(400_000); // 800 kB of UTF-8: a frame the gateway takes
      assert.equal(await c.call("default", "demo.echo", fits), fits);
      const big = "é".repeat(600_000); // 1.2 MB
      await assert.rejects(c.call("default", "demo.echo", big), { code: "body_too_large", status: 413 });
      assert.equal(await slow, "spared");
      assert.equal(opened.n, 1);
      await assert.rejects(c.call("default", "demo.echo", big, { transport: "ws" }), {
        code: "unavailable",
        message: /code 1009/,
      });
    } finally {
      c.close();
    }
  });
});
