// The client over the gateway's real WebSocket (/v1/ws). Needs a global
// WebSocket: Node >= 22, or Node 20 with --experimental-websocket (as the
// package's test script runs it). Skipped, saying why, when there is none or
// when the gateway has no /v1/ws route.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { AtasksClient } from "../index.js";
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
});
