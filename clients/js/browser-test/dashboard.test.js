// The gateway's dashboard (/dashboard) in a real browser: Debian's chromium
// driven by playwright-core. It starts a gateway (testutil/gateway.js,
// embedded mode), opens the dashboard, makes real calls through REST and
// checks what the dashboard shows of them over its monitor feed
// (docs/WEBSOCKET.md, "Monitoring"): states, durations, error codes, call
// trees, workers and per-task counts; what it shows of calls made, or
// ended, while no dashboard was open (the gateway's own records); that a
// big call tree is one row until opened; each task's input schema, from the
// catalog, with a gateway's token too; then that it reconnects when its
// socket closes. Screenshots go to browser-test/out/dashboard*.png.
//
// Without chromium it skips, saying so; under CI=true it fails instead.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startGateway } from "../testutil/gateway.js";
import { skipReason as skip, launch, newPage, screenshot, until } from "./chromium.js";

let gw, browser;
const pageErrors = [];

before(async () => {
  if (skip) return;
  gw = await startGateway();
  browser = await launch({ viewport: { width: 1200, height: 820 } });
});

// Pages a case opened: closed after it, even when it failed, so that no
// dashboard stays open (and keeps the workers reporting) into the next.
const pages = [];

afterEach(async () => {
  for (const page of pages.splice(0)) await page.close().catch(() => {});
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

// call invokes a task in namespace default through REST, waiting up to
// wait for its end, and returns the invocation resource.
async function call(task, input, wait = "0s") {
  const res = await fetch(`${gw.url}/v1/ns/default/tasks/${task}?wait=${wait}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(input),
  });
  const body = await res.json();
  assert.ok(res.status === 200 || res.status === 202, `POST ${task}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

// invocation reads invocation id of namespace default through REST,
// waiting up to wait for its end.
async function invocation(id, wait = "0s") {
  const res = await fetch(`${gw.url}/v1/ns/default/invocations/${id}?wait=${wait}`);
  const body = await res.json();
  assert.equal(res.status, 200, `GET ${id}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

// shot runs fn, then saves a screenshot of page as name whether fn passed
// or not, so that a failing case shows what the page showed.
async function shot(page, name, fn) {
  try {
    await fn();
  } finally {
    const path = await screenshot(page, name);
    console.log(`# screenshot: ${path}`);
  }
}

// openDashboard loads /dashboard and waits for its feed's snapshot.
async function openDashboard(context) {
  const { page, sockets } = await newPage(context, pageErrors);
  pages.push(page);
  const res = await page.goto(`${gw.url}/dashboard`);
  assert.equal(res.status(), 200, `GET /dashboard: ${res.status()}`);
  assert.match(res.headers()["content-security-policy"] ?? "", /default-src 'self'/, "/dashboard has the page's CSP");
  await page.locator("#conn[data-state='live']").waitFor({ timeout: 10_000 });
  return { page, sockets };
}

// seconds reads a duration as the dashboard writes it: "12 ms", "3.4 s", "1m 05s".
function seconds(text) {
  const t = text.trim();
  let m;
  if ((m = /^(\d+) ms$/.exec(t))) return Number(m[1]) / 1000;
  if ((m = /^([\d.]+) s$/.exec(t))) return Number(m[1]);
  if ((m = /^(\d+)m (\d+)s$/.exec(t))) return Number(m[1]) * 60 + Number(m[2]);
  throw new Error(`not a duration: ${JSON.stringify(text)}`);
}

const row = (page, id) => page.locator(`#invocations tbody tr[data-id='${id}']`);
const stateOf = (page, id, state) => page.locator(`#invocations tbody tr[data-id='${id}'][data-state='${state}']`);
const selectedTree = (page, id) => page.locator(`#tree .tree-sel[data-id='${id}']`);
const childNodes = (page) => page.locator("#tree .tree-sel > ul.tree > li.node");
const expandAll = (page) => page.locator("#tree button[data-action='expand-all']").click();
const inFlight = async (page) => (await page.locator("#inv-sum").textContent()).trim();

// taskFlight reads default/task's count in flight as shown; "" without a row.
async function taskFlight(page, task) {
  const cell = page.locator(`#tasks tbody tr[data-ns='default'][data-task='${task}'] td.flight`);
  if ((await cell.count()) === 0) return "";
  return (await cell.textContent()).trim();
}

// taskCount reads a per-task counter ("ended" or "failed") of default/task; 0 without a row.
async function taskCount(page, task, col) {
  const cell = page.locator(`#tasks tbody tr[data-ns='default'][data-task='${task}'] td.${col}`);
  if ((await cell.count()) === 0) return 0;
  return Number(await cell.textContent());
}

describe("the gateway's dashboard in chromium", { skip, timeout: 180_000 }, () => {
  // First, while no dashboard has ever been open: the gateway's own records
  // are all there is to show.
  it("shows, once opened, the calls made before it: their states and what is in flight", async () => {
    const add = await call("demo.add", { a: 20, b: 22 }, "10s");
    assert.equal(add.result, 42);
    const sleep = await call("demo.sleep", { ms: 5000, value: "slow" });
    await until(async () => (await invocation(sleep.id)).state === "running", { what: "demo.sleep running, by REST" });

    const { page } = await openDashboard(browser.context);
    await shot(page, "dashboard-opened-late.png", async () => {
      await stateOf(page, sleep.id, "running").waitFor({ timeout: 3_000 });
      await stateOf(page, add.id, "succeeded").waitFor({ timeout: 3_000 });
      assert.ok(await page.locator("#inv-empty").isHidden(), "not 'No invocations yet'");
      assert.match(await inFlight(page), /^1 in flight/, "the running sleep is in flight");
      assert.equal(await row(page, sleep.id).locator("td.task .name").textContent(), "demo.sleep");
      const dur = row(page, sleep.id).locator("td.dur");
      assert.ok(await dur.evaluate((td) => td.classList.contains("live")), "its duration ticks");
      await until(async () => (await taskFlight(page, "demo.sleep")) === "1", { what: "demo.sleep's 1 in flight in the tasks table" });
    });
    // ... and it ends, live
    await stateOf(page, sleep.id, "succeeded").waitFor({ timeout: 10_000 });
    await until(async () => /^0 in flight/.test(await inFlight(page)), { what: "0 in flight once the sleep ended" });
    await page.close();
  });

  it("shows invocations live, their call trees, workers and per-task counts", async () => {
    const { page, sockets } = await openDashboard(browser.context);
    assert.equal(await page.title(), "atasks dashboard");
    assert.equal(await page.locator("header a[href='/']").count(), 1, "a link back to the call page");
    assert.equal(sockets.length, 1);
    assert.match(sockets[0].url, /\/v1\/ws$/);
    assert.deepEqual(JSON.parse(sockets[0].sent[0]), { type: "monitor", ref: "m" });

    // A recursive call: fib(6) is 25 invocations, five levels deep.
    const fib = await call("demo.fib", { n: 6 }, "10s");
    assert.equal(fib.state, "succeeded");
    assert.equal(fib.result, 8);
    await stateOf(page, fib.id, "succeeded").waitFor({ timeout: 10_000 });
    const fibRow = row(page, fib.id);
    assert.equal(await fibRow.locator("td.task .name").textContent(), "demo.fib");
    assert.equal(await fibRow.locator("td.ns").textContent(), "default");
    assert.equal((await fibRow.locator("td.state").textContent()).trim(), "succeeded");
    assert.ok(await fibRow.locator("td.state .pill.succeeded").count(), "a green state pill");
    assert.notEqual((await fibRow.locator("td.worker").textContent()).trim(), "", "the worker that ran it");
    seconds(await fibRow.locator("td.dur").textContent());
    assert.equal(await fibRow.locator("td.error").textContent(), "");

    // Its tree: top-level, two children, each clickable down to a leaf.
    await fibRow.click();
    await selectedTree(page, fib.id).waitFor();
    assert.match(await page.locator("#tree .path").textContent(), /Top-level/);
    await until(async () => (await childNodes(page).count()) === 2, { what: "fib(6)'s two children in its tree" });
    assert.deepEqual(
      await childNodes(page).evaluateAll((lis) => lis.map((li) => li.dataset.state)),
      ["succeeded", "succeeded"],
      "both children seen, and ended",
    );
    // a child expands in place to show the grandchildren
    const first = childNodes(page).first();
    await first.locator(":scope > .node-row > button.toggle").click();
    await until(async () => (await first.locator(":scope > ul.tree > li.node").count()) === 2, { what: "grandchildren" });
    // expanding everything shows every descendant: 24
    await page.locator("#tree button[data-action='expand-all']").click();
    await until(async () => (await page.locator("#tree li.node").count()) === 24, {
      what: "fib(6)'s 24 descendants in its expanded tree",
    });
    await screenshot(page, "dashboard-tree.png");

    // down, one level at a time, always to the first child, until a leaf
    const path = [fib.id];
    for (;;) {
      const kids = childNodes(page);
      const n = await kids.count();
      if (n === 0) break;
      assert.equal(n, 2, "every fib(n≥2) awaits two children");
      const child = await kids.first().getAttribute("data-id");
      await kids.first().locator(":scope > .node-row > button.go").click();
      await selectedTree(page, child).waitFor();
      assert.equal(
        await page.locator("#tree .path button.parent").getAttribute("data-id"),
        path.at(-1),
        "the child names its parent",
      );
      path.push(child);
      assert.ok(path.length <= 6, "fib(6) is at most five levels deep");
    }
    // fib(6) → fib(5 or 4) → …: the first child is whichever started first
    assert.ok(path.length >= 4, `a leaf ${path.length - 1} levels down, below a grandchild`);
    assert.match(await page.locator("#tree .tree-sel > p.empty").textContent(), /leaf/);
    assert.equal(await page.locator("#tree .path button.go").count(), path.length - 1, "the leaf shows its ancestors");
    assert.deepEqual(
      await page.locator("#tree .path button.go").evaluateAll((bs) => bs.map((b) => b.dataset.id)),
      path.slice(0, -1),
      "root first",
    );
    assert.equal(await page.locator("#tree .sel-head .name").textContent(), "demo.fib");
    assert.equal(await row(page, path.at(-1)).getAttribute("class"), "selected", "the leaf's row is highlighted");
    // and up again through the parent link
    await page.locator("#tree .path button.parent").click();
    await selectedTree(page, path.at(-2)).waitFor();
    await page.locator(`#tree .path button.go[data-id='${fib.id}']`).click();
    await selectedTree(page, fib.id).waitFor();

    // A running call: its duration ticks, then it ends.
    const sleep = await call("demo.sleep", { ms: 3000, value: "done" });
    await stateOf(page, sleep.id, "running").waitFor({ timeout: 5_000 });
    const dur = row(page, sleep.id).locator("td.dur");
    assert.ok(await dur.evaluate((td) => td.classList.contains("live")), "a running duration is live");
    const d0 = seconds(await dur.textContent());
    await until(async () => seconds(await dur.textContent()) >= d0 + 0.4, { what: "the running duration to tick" });
    assert.equal((await row(page, sleep.id).locator("td.state").textContent()).trim(), "running");
    // it holds a compute slot of its worker: the card's bar shows it (stats come every second)
    const card = page.locator("#workers .worker[data-ns='default']").first();
    await until(async () => Number(await card.getAttribute("data-busy")) >= 1, {
      timeout: 2_500,
      what: "a busy slot on the default worker's card while demo.sleep runs",
    });
    assert.match(await card.locator(".slots-text").textContent(), /^[1-9]\d* busy · /);
    assert.ok(await card.locator(".slots").evaluate((bar) => bar.querySelector(".busy").offsetWidth > 0), "a visible busy bar");
    await row(page, sleep.id).click();
    await selectedTree(page, sleep.id).waitFor();
    assert.equal(await page.locator("#tree .sel-head .pill").textContent(), "running");
    await screenshot(page, "dashboard-running.png");

    // A failure shows its code.
    const fail = await call("demo.fail", { code: "out_of_stock", message: "no more" }, "10s");
    assert.equal(fail.state, "failed");
    await stateOf(page, fail.id, "failed").waitFor({ timeout: 10_000 });
    assert.equal(await row(page, fail.id).locator("td.error").textContent(), "out_of_stock");
    assert.ok(await row(page, fail.id).locator("td.state .pill.failed").count(), "a red state pill");

    await stateOf(page, sleep.id, "succeeded").waitFor({ timeout: 10_000 });
    const final = seconds(await dur.textContent());
    assert.ok(final >= 2.9 && final < 6, `the sleep took ${final} s`);
    assert.ok(!(await dur.evaluate((td) => td.classList.contains("live"))), "an ended duration stays");
    assert.equal(await page.locator("#tree .sel-head .pill").textContent(), "succeeded", "the tree follows the end");

    // Newest first: the calls; the leaf selected above shows under its
    // ancestors, opened to show it.
    const rowIDs = () => page.locator("#invocations tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
    let ids = await rowIDs();
    assert.ok(ids.indexOf(fail.id) < ids.indexOf(fib.id), "the failure above the older fib");
    assert.ok(ids.indexOf(fib.id) < ids.indexOf(path[1]), "a child under its parent");
    assert.equal(await row(page, path[1]).getAttribute("data-depth"), "1");
    // Every invocation, flat: a child above its parent, which started before it.
    await page.locator("#roots").uncheck();
    ids = await rowIDs();
    assert.ok(ids.indexOf(path[1]) < ids.indexOf(fib.id), "a child above its parent, which started before it");
    await page.locator("#roots").check();

    // Workers: a card per server, with its slots, free again.
    await until(async () => (await card.getAttribute("data-busy")) === "0", { what: "the slot freed" });
    assert.ok(Number(await card.getAttribute("data-size")) > 0, "a server with compute slots");
    assert.match(await card.locator(".slots-text").textContent(), /^0 busy · \d+ free · \d+ slots?$/);
    assert.equal(await page.locator("#workers .worker[data-ns='seed']").count(), 1, "the seed namespace's server too");
    assert.equal(await card.locator(".slots .busy").count(), 1, "a slots bar");
    assert.ok(
      (await card.locator(".served .chip").allTextContents()).includes("demo.fib"),
      "the card lists the tasks it serves",
    );
    assert.notEqual((await card.locator(".wname").textContent()).trim(), "");

    // Per-task counts (stats, every second).
    await until(async () => (await taskCount(page, "demo.fib", "ended")) >= 25, { what: "demo.fib ended ≥ 25" });
    await until(async () => (await taskCount(page, "demo.fail", "failed")) >= 1, { what: "demo.fail failed ≥ 1" });
    await until(async () => (await taskCount(page, "demo.sleep", "ended")) >= 1, { what: "demo.sleep ended ≥ 1" });
    assert.equal(await taskCount(page, "demo.fib", "failed"), 0);
    assert.equal(await taskCount(page, "demo.sleep", "failed"), 0);
    // ... and moving
    const addBefore = await taskCount(page, "demo.add", "ended");
    const failBefore = await taskCount(page, "demo.fail", "failed");
    for (let i = 0; i < 3; i++) assert.equal((await call("demo.add", { a: i, b: 1 }, "10s")).result, i + 1);
    await call("demo.fail", { code: "again", message: "once more" }, "10s");
    await until(async () => (await taskCount(page, "demo.add", "ended")) === addBefore + 3, {
      what: `demo.add ended to reach ${addBefore + 3}`,
    });
    await until(async () => (await taskCount(page, "demo.fail", "failed")) === failBefore + 1, {
      what: `demo.fail failed to reach ${failBefore + 1}`,
    });
    const rate = await page.locator("#tasks tr[data-task='demo.add'] td.rate").textContent();
    assert.match(rate, /^\d+(\.\d)?\/s$/);
    assert.ok(parseFloat(rate) > 0, `demo.add's rate ${rate}`);

    // Filters: top-level only (the default) hides fib's 24 descendants
    // once its row is closed; text narrows.
    assert.ok(await page.locator("#roots").isChecked(), "top-level only by default");
    await row(page, fib.id).locator("td.task button.toggle").click();
    await until(async () => (await page.locator("#invocations tbody tr:not([data-depth='0'])").count()) === 0, {
      what: "only top-level rows",
    });
    assert.equal(await row(page, fib.id).count(), 1);
    assert.equal(await row(page, path[1]).count(), 0);
    await page.locator("#filter").fill("out_of");
    await until(async () => (await page.locator("#invocations tbody tr").count()) === 1, { what: "one row for 'out_of'" });
    assert.equal(await page.locator("#invocations tbody tr").getAttribute("data-id"), fail.id);
    await page.locator("#filter").fill("");
    await page.locator("#roots").uncheck();
    await until(async () => (await row(page, path[1]).count()) === 1, { what: "all rows back" });
    await page.locator("#roots").check();

    // The final picture: fib's tree open beside the table, and its row
    // opened in the table.
    await row(page, fib.id).click();
    await row(page, fib.id).locator("td.task button.toggle").click();
    await until(async () => (await page.locator(`#invocations tbody tr[data-parent='${fib.id}']`).count()) === 2, {
      what: "fib's two child rows under it",
    });
    await selectedTree(page, fib.id).waitFor();
    await childNodes(page).first().locator(":scope > .node-row > button.toggle").click();
    const picture = await screenshot(page, "dashboard.png");
    console.log(`# screenshot: ${picture}`);
    await page.close();
  });

  it("shows a call across namespaces in one tree", async () => {
    const { page } = await openDashboard(browser.context);
    // demo.seed (default) awaits seed's request_parallel, which awaits ten tasks
    const seed = await call("demo.seed", null, "20s");
    assert.equal(seed.state, "succeeded");
    await stateOf(page, seed.id, "succeeded").waitFor({ timeout: 10_000 });
    await row(page, seed.id).click();
    await selectedTree(page, seed.id).waitFor();
    const child = childNodes(page).first();
    await until(async () => (await childNodes(page).count()) === 1, { what: "demo.seed's one child" });
    assert.equal((await child.locator(":scope > .node-row > button.go").textContent()).trim(), "seed / request_parallel");
    const rp = await child.getAttribute("data-id");
    await child.locator(":scope > .node-row > button.go").click();
    await selectedTree(page, rp).waitFor();
    await until(async () => (await childNodes(page).count()) === 10, { what: "request_parallel's ten children" });
    assert.equal((await page.locator("#tree .path button.parent").textContent()).trim(), "default / demo.seed");
    await screenshot(page, "dashboard-across.png");
    await page.close();
  });

  it("reconnects when its socket closes, and catches up", async () => {
    const { page } = await newPage(browser.context, pageErrors);
    pages.push(page);
    const routed = [];
    await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
      ws.connectToServer();
      routed.push(ws);
    });
    await page.goto(`${gw.url}/dashboard`);
    await page.locator("#conn[data-state='live']").waitFor({ timeout: 10_000 });
    const before = await call("demo.add", { a: 1, b: 1 }, "10s");
    await stateOf(page, before.id, "succeeded").waitFor({ timeout: 10_000 });

    routed[0].close({ code: 1012, reason: "test restart" });
    await page.locator("#conn[data-state='reconnecting']").waitFor({ timeout: 5_000 });
    assert.match(await page.locator("#conn").textContent(), /^reconnecting in \d+ s$/);
    // made while the page is away: the snapshot brings it
    const missed = await call("demo.fail", { code: "while_away", message: "x" }, "10s");
    await page.locator("#conn[data-state='live']").waitFor({ timeout: 10_000 });
    assert.equal(routed.length, 2, "one new socket");
    await stateOf(page, missed.id, "failed").waitFor({ timeout: 10_000 });
    assert.equal(await row(page, missed.id).locator("td.error").textContent(), "while_away");
    assert.equal(await row(page, before.id).count(), 1, "what was shown stays");
    assert.ok(await page.locator("#feed-error").isHidden(), "the close's notice is gone once live");
    // and goes on live
    const after = await call("demo.sleep", { ms: 600 });
    await stateOf(page, after.id, "succeeded").waitFor({ timeout: 10_000 });

    // A link to an invocation's tree: #inv=<id>
    await page.goto(`${gw.url}/dashboard#inv=${missed.id}`);
    await page.reload();
    await selectedTree(page, missed.id).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#tree .sel-head .pill").textContent(), "failed");
    assert.match(await page.locator("#tree .facts").textContent(), /while_away/);
    await page.close();
  });

  it("says so when the gateway refuses the feed", async () => {
    const { page } = await newPage(browser.context, pageErrors);
    pages.push(page);
    await page.routeWebSocket(/\/v1\/ws$/, (ws) => {
      // a gateway without the monitor feed, as an older one answers
      ws.onMessage((m) => {
        const f = JSON.parse(m);
        ws.send(JSON.stringify({ type: "error", ref: f.ref, error: { code: "unknown_type", message: `type "${f.type}" is none of call, cancel, subscribe`, retryable: false } }));
      });
    });
    await page.goto(`${gw.url}/dashboard`);
    await page.locator("#conn[data-state='error']").waitFor({ timeout: 10_000 });
    assert.match(await page.locator("#feed-error").textContent(), /no monitor feed: unknown_type/);
    assert.ok(await page.locator("#feed-error").isVisible());
    await page.close();
  });

  it("shows how calls went that ended while no dashboard was open, never 'running'", async () => {
    const first = await openDashboard(browser.context);
    const sleep = await call("demo.sleep", { ms: 2500, value: "unseen end" });
    // demo.seed → seed's request_parallel → 5 task_one (1 s) and 5 task_two (2 s)
    const seed = await call("demo.seed", null);
    await stateOf(first.page, sleep.id, "running").waitFor({ timeout: 5_000 });
    await stateOf(first.page, seed.id, "running").waitFor({ timeout: 5_000 });
    await row(first.page, seed.id).click();
    await until(async () => (await childNodes(first.page).count()) === 1, { what: "demo.seed's child" });
    await expandAll(first.page);
    // request_parallel and its task_two (2 s) at least: task_one (1 s) may be over
    await until(async () => (await first.page.locator("#tree li.node[data-state='running']").count()) >= 6, {
      what: "request_parallel and its children running",
    });
    // No dashboard open: the workers stop reporting, so the ends go unseen.
    await first.page.close();
    assert.equal((await invocation(sleep.id, "10s")).state, "succeeded");
    assert.equal((await invocation(seed.id, "10s")).state, "succeeded");

    const { page } = await openDashboard(browser.context);
    await shot(page, "dashboard-ended-unseen.png", async () => {
      // the gateway's record of each call wins: it ended
      await stateOf(page, sleep.id, "succeeded").waitFor({ timeout: 3_000 });
      await stateOf(page, seed.id, "succeeded").waitFor({ timeout: 3_000 });
      const dur = row(page, sleep.id).locator("td.dur");
      assert.ok(!(await dur.evaluate((td) => td.classList.contains("live"))), "an ended duration does not tick");
      const took = seconds(await dur.textContent());
      assert.ok(took >= 2.3 && took < 4, `the sleep took ${took} s`);
      assert.match(await inFlight(page), /^0 in flight/);
      // demo.seed's child ended as demo.seed reported; of the grandchildren
      // the gateway knows nothing: they may have ended, so "unknown",
      // never "running"
      await row(page, seed.id).click();
      await selectedTree(page, seed.id).waitFor();
      await until(async () => (await childNodes(page).count()) === 1, { what: "demo.seed's child in its tree" });
      assert.equal(await childNodes(page).getAttribute("data-state"), "succeeded");
      await expandAll(page);
      const states = await page.locator("#tree li.node li.node").evaluateAll((lis) => lis.map((li) => li.dataset.state));
      assert.equal(states.length, 10, "request_parallel's ten children");
      assert.ok(!states.includes("running"), `never running: ${states}`);
      assert.ok(states.filter((s) => s === "unknown").length >= 5, `task_two's five (2 s) ended unseen: ${states}`);
      assert.equal(await page.locator("#tree .dur.live").count(), 0, "no duration ticks in the tree");
      await page.locator("#roots").uncheck(); // every invocation
      await until(async () => (await page.locator("#invocations tbody tr[data-state='unknown']").count()) >= 5, {
        what: "the unknown rows in the flat list",
      });
      assert.equal(await page.locator("#invocations tbody tr[data-state='running']").count(), 0, "no row says running");
    });
  });

  it("shows a big call tree as one top-level row, its children collapsed under it", async () => {
    const { page } = await openDashboard(browser.context);
    await shot(page, "dashboard-collapsed.png", async () => {
      const before = await taskCount(page, "demo.fib", "ended");
      const fib = await call("demo.fib", { n: 10 }, "20s"); // 177 invocations
      assert.equal(fib.result, 55);
      await stateOf(page, fib.id, "succeeded").waitFor({ timeout: 10_000 });
      await until(async () => (await taskCount(page, "demo.fib", "ended")) >= before + 177, { what: "fib(10)'s 177 ends counted" });
      await page.waitForTimeout(500); // the feed's last changes, had they rows
      const fibRows = page.locator("#invocations tbody tr[data-task='demo.fib']");
      assert.ok((await fibRows.count()) <= 2, `only the top-level fib calls have rows (fib 6 and fib 10), not ${await fibRows.count()}`);
      const top = row(page, fib.id);
      assert.equal(await top.locator("td.task .kids").textContent(), "2 children");
      const toggle = top.locator("td.task button.toggle");
      assert.equal(await toggle.getAttribute("aria-expanded"), "false");

      // opened, it shows its two children under it, named by their task
      await toggle.click();
      const kids = page.locator(`#invocations tbody tr[data-parent='${fib.id}']`);
      await until(async () => (await kids.count()) === 2, { what: "fib(10)'s two child rows" });
      assert.deepEqual(await kids.locator("td.task .name").allTextContents(), ["demo.fib", "demo.fib"]);
      const ids = await page.locator("#invocations tbody tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
      const at = ids.indexOf(fib.id);
      const kidIDs = await kids.evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
      assert.deepEqual(ids.slice(at + 1, at + 3), kidIDs, "right under their parent");
      assert.equal(await kids.first().getAttribute("data-depth"), "1");

      // an id links to its tree
      const child = kidIDs[0];
      const link = kids.first().locator(`td.id a[href='#inv=${child}']`);
      assert.equal(await link.textContent(), child.slice(0, 8));
      await link.click();
      await selectedTree(page, child).waitFor();
      assert.equal(new URL(page.url()).hash, `#inv=${child}`);
      assert.equal(await page.locator("#tree .path button.parent").getAttribute("data-id"), fib.id);
      assert.equal(await row(page, child).getAttribute("class"), "selected");
      await until(async () => (await childNodes(page).count()) === 2, { what: "the child's own two children" });
      assert.deepEqual(await childNodes(page).locator(":scope > .node-row > button.go").allTextContents(), ["demo.fib", "demo.fib"]);
    });
    await page.close();
  });

  it("shows each task's input schema, demo.add's fields a and b required integers, opening to the JSON Schema", async () => {
    const { page } = await openDashboard(browser.context);
    const taskRow = (task, ns = "default") => page.locator(`#tasks tbody tr[data-ns='${ns}'][data-task='${task}']:not(.schema-row)`);
    const sig = (task, ns = "default") => taskRow(task, ns).locator("td.task button.sig");
    const fields = (task) =>
      sig(task)
        .locator(".schema-sum.input .field")
        .evaluateAll((fs) => fs.map((f) => ({ name: f.dataset.field, type: f.dataset.type, required: f.dataset.required === "true" })));
    await shot(page, "dashboard-schema.png", async () => {
      await sig("demo.add").waitFor({ timeout: 10_000 });
      assert.deepEqual(await fields("demo.add"), [
        { name: "a", type: "integer", required: true },
        { name: "b", type: "integer", required: true },
      ]);
      assert.equal((await sig("demo.add").textContent()).trim(), "{a*: integer, b*: integer} → integer");
      assert.equal(await sig("demo.add").locator(".schema-sum.input .more").count(), 0, "no other field is allowed");
      assert.match(await sig("demo.add").locator(".field[data-field='a']").getAttribute("title"), /^a: integer, required — the first term$/);
      // an optional field says so; a task that takes anything says that
      assert.deepEqual(await fields("demo.sleep"), [
        { name: "ms", type: "integer", required: true },
        { name: "value", type: "any", required: false },
      ]);
      assert.equal((await sig("demo.echo").textContent()).trim(), "any → any");
      assert.equal((await sig("demo.gather").locator(".schema-sum.output").textContent()).trim(), "integer[]");
      // every served task is listed, run or not, the seed namespace's too
      assert.equal((await taskRow("demo.flaky").locator("td.ended").textContent()).trim(), "0");
      await sig("task_three", "seed").waitFor();
      assert.ok(await page.locator("#tasks-legend").isVisible(), "a legend says what * means");

      // opened, it shows the JSON Schema whole, under the row
      assert.equal(await sig("demo.add").getAttribute("aria-expanded"), "false");
      await sig("demo.add").click();
      const whole = page.locator("#tasks tbody tr.schema-row[data-task='demo.add']");
      await whole.waitFor();
      assert.equal(await sig("demo.add").getAttribute("aria-expanded"), "true");
      const input = JSON.parse(await whole.locator(".schema-part.input pre").textContent());
      assert.deepEqual(input.required, ["a", "b"]);
      assert.deepEqual(input.properties.a, { type: "integer", description: "the first term" });
      assert.equal(input.properties.b.type, "integer");
      assert.equal(input.additionalProperties, false);
      assert.deepEqual(JSON.parse(await whole.locator(".schema-part.output pre").textContent()), { type: "integer" });
      // right under its task's row, and it stays open as the counts move
      const rows = () => page.locator("#tasks tbody tr").evaluateAll((trs) => trs.map((tr) => `${tr.className}|${tr.dataset.task}`));
      const at = (await rows()).indexOf("|demo.add");
      assert.equal((await rows())[at + 1], "schema-row|demo.add");
      const before = await taskCount(page, "demo.add", "ended");
      assert.equal((await call("demo.add", { a: 2, b: 2 }, "10s")).result, 4);
      await until(async () => (await taskCount(page, "demo.add", "ended")) === before + 1, { what: "demo.add's count to move" });
      assert.ok(await whole.isVisible(), "still open");
      await sig("demo.add").scrollIntoViewIfNeeded();
    });
    // and closes again
    await sig("demo.add").click();
    await until(async () => (await page.locator("#tasks tbody tr.schema-row").count()) === 0, { what: "the schema row to close" });
    await page.close();
  });

  it("reads the schemas with the token the call page keeps, on a gateway with tokens", async () => {
    const token = "dashboard-test-token-0123456789";
    const dir = mkdtempSync(join(tmpdir(), "atasks-tokens-"));
    const file = join(dir, "tokens");
    writeFileSync(file, `viewer sha256:${createHash("sha256").update(token).digest("hex")} *:read\n`);
    const guarded = await startGateway(["--tokens", file]);
    try {
      const { page } = await newPage(browser.context, pageErrors);
      pages.push(page);
      const auth = [];
      page.on("request", (r) => {
        if (new URL(r.url()).pathname.startsWith("/v1/ns")) auth.push(r.headers().authorization);
      });
      await page.addInitScript((t) => sessionStorage.setItem("atasks.token", t), token);
      await page.goto(`${guarded.url}/dashboard`);
      await page.locator("#conn[data-state='live']").waitFor({ timeout: 10_000 });
      const sig = page.locator("#tasks tbody tr[data-ns='default'][data-task='demo.add'] td.task button.sig");
      await sig.waitFor({ timeout: 10_000 });
      assert.equal((await sig.textContent()).trim(), "{a*: integer, b*: integer} → integer");
      assert.ok(auth.length >= 2, `the namespaces, then each one's tasks: ${auth.length} requests`);
      assert.ok(auth.every((a) => a === `Bearer ${token}`), "each carries the token");
      await page.close();
    } finally {
      await guarded.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("raised no errors in the page", () => {
    assert.deepEqual(pageErrors, []);
  });
});
