// The gateway's page in a real browser: Debian's chromium driven by
// playwright-core (which never downloads a browser here). It starts a
// gateway (testutil/gateway.js), calls demo.add and demo.gather and cancels
// a demo.sleep through the page, checks what the page shows, and saves a
// screenshot to browser-test/out/ (or $ATASKS_SCREENSHOT_DIR).
//
// Without chromium ($ATASKS_CHROMIUM, default /usr/bin/chromium) it skips,
// saying so; under CI=true it fails instead.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startGateway, hasWebSocketRoute } from "../testutil/gateway.js";
import { launch, outDir, skipReason as skip } from "./chromium.js";

let gw, browser, context, wsRoute;
const pageErrors = [];

before(async () => {
  if (skip) return;
  gw = await startGateway();
  wsRoute = await hasWebSocketRoute(gw.url);
  browser = await launch();
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

// openPage loads the page and records its errors and WebSockets.
async function openPage(query = "") {
  const page = await context.newPage();
  const sockets = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("websocket", (ws) => {
    const s = { url: ws.url(), sent: [] };
    ws.on("framesent", (f) => s.sent.push(f.payload));
    sockets.push(s);
  });
  await page.goto(`${gw.url}/${query}`);
  await page.locator("#task option[value='demo.add']").waitFor({ state: "attached" });
  return { page, sockets };
}

async function callTask(page, task, input) {
  await page.selectOption("#ns", "default");
  await page.locator(`#task option[value='${task}']`).waitFor({ state: "attached" });
  await page.selectOption("#task", task);
  await page.fill("#input", input);
  await page.click("#call");
  return page.locator(`li.call[data-task='${task}']`).first();
}

async function outcomeOf(card, state) {
  await card.locator(`xpath=self::*[@data-state='${state}']`).waitFor({ timeout: 15_000 });
  return (await card.locator(".outcome").textContent()).trim();
}

describe("the gateway's page in chromium", { skip }, () => {
  it("calls tasks side by side and cancels one, over WebSocket when the gateway has it", async () => {
    const { page, sockets } = await openPage();
    assert.equal(await page.title(), "atasks gateway");

    const sleep = await callTask(page, "demo.sleep", '{"ms":30000}');
    await sleep.locator("xpath=self::*[@data-state='running']").waitFor();
    const add = await callTask(page, "demo.add", '{"a":2,"b":3}');
    const gather = await callTask(page, "demo.gather", '{"n":5,"ms":300}');

    assert.equal(JSON.parse(await outcomeOf(add, "succeeded")), 5);
    assert.deepEqual(JSON.parse(await outcomeOf(gather, "succeeded")), [0, 1, 2, 3, 4]);
    assert.equal(await gather.locator(".events li.child").count(), 5, "gather shows its five children");
    assert.match(await gather.locator(".id").textContent(), /^id \w+$/);

    assert.equal(await sleep.getAttribute("data-state"), "running", "the sleep runs on");
    mkdirSync(outDir, { recursive: true });
    await page.screenshot({ path: join(outDir, "page-running.png"), fullPage: true });
    await sleep.locator("button.cancel").click();
    assert.match(await outcomeOf(sleep, "cancelled"), /^cancelled: /);
    assert.equal(await sleep.locator(".state").textContent(), "cancelled");
    assert.ok(await sleep.locator("button.cancel").isDisabled());

    const transport = (await page.locator("#transport").textContent()).trim();
    if (wsRoute) {
      assert.equal(transport, "WebSocket");
      assert.equal(sockets.length, 1, "one WebSocket carries every call");
      assert.match(sockets[0].url, /\/v1\/ws$/);
      const frames = sockets[0].sent.map((p) => JSON.parse(p));
      assert.deepEqual(
        frames.filter((f) => f.type === "call").map((f) => f.task),
        ["demo.sleep", "demo.add", "demo.gather"],
      );
      assert.ok(frames.some((f) => f.type === "cancel"), "the cancel went over the WebSocket");
    } else {
      console.log("# the gateway has no /v1/ws: the page went over REST");
      assert.equal(transport, "REST (long-poll)");
    }

    const shot = join(outDir, "page.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
    await page.close();
  });

  it("works over REST too (?transport=rest) and shows errors", async () => {
    const { page, sockets } = await openPage("?transport=rest");
    assert.equal((await page.locator("#transport").textContent()).trim(), "REST (long-poll)");
    const add = await callTask(page, "demo.add", '{"a":40,"b":2}');
    assert.equal(JSON.parse(await outcomeOf(add, "succeeded")), 42);
    const sleep = await callTask(page, "demo.sleep", '{"ms":30000}');
    await sleep.locator("xpath=self::*[@data-state='running']").waitFor();
    await sleep.locator("button.cancel").click();
    assert.match(await outcomeOf(sleep, "cancelled"), /^cancelled: /);
    const fail = await callTask(page, "demo.fail", '{"code":"out_of_stock","message":"no more"}');
    assert.equal(await outcomeOf(fail, "failed"), "out_of_stock: no more");
    await page.fill("#input", "{not json");
    await page.click("#call");
    assert.match(await page.locator("#form-error").textContent(), /not JSON/);
    assert.equal(sockets.length, 0, "no WebSocket in REST mode");
    mkdirSync(outDir, { recursive: true });
    await page.screenshot({ path: join(outDir, "page-rest.png"), fullPage: true });
    await page.close();
  });

  it("raised no errors in the page", () => {
    assert.deepEqual(pageErrors, []);
  });
});
