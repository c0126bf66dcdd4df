// Shared by the browser tests: Debian's chromium ($ATASKS_CHROMIUM, default
// /usr/bin/chromium) driven by playwright-core, which never downloads a
// browser; where screenshots go; and a page that records its errors.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const chromiumPath = process.env.ATASKS_CHROMIUM || "/usr/bin/chromium";

/** outDir is where screenshots go: browser-test/out/ or $ATASKS_SCREENSHOT_DIR. */
export const outDir = process.env.ATASKS_SCREENSHOT_DIR || join(dirname(fileURLToPath(import.meta.url)), "out");

/**
 * skipReason is false when chromium is there, else why the tests skip.
 * Under CI=true a missing chromium throws instead: there it must run.
 */
export const skipReason = (() => {
  if (existsSync(chromiumPath)) return false;
  const msg = `no chromium at ${chromiumPath} (apt-get install chromium, or set ATASKS_CHROMIUM)`;
  if (process.env.CI === "true") throw new Error(`browser test: ${msg}; under CI=true it must run`);
  console.log(`# browser test skipped: ${msg}`);
  return msg;
})();

/** launch starts chromium headless; close() ends it and removes its profile. */
export async function launch({ viewport = { width: 1200, height: 820 } } = {}) {
  const { chromium } = await import("playwright-core");
  const userDataDir = mkdtempSync(join(tmpdir(), "atasks-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
      ],
      viewport,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * newPage opens a page that pushes its uncaught errors and console errors
 * (CSP violations among them) to errors, and records its WebSockets:
 * {url, sent: [payload], received: [payload]}.
 */
export async function newPage(context, errors) {
  const page = await context.newPage();
  const sockets = [];
  page.on("pageerror", (err) => errors.push(`pageerror: ${err}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("websocket", (ws) => {
    const s = { url: ws.url(), sent: [], received: [], closed: false };
    ws.on("framesent", (f) => s.sent.push(f.payload));
    ws.on("framereceived", (f) => s.received.push(f.payload));
    ws.on("close", () => (s.closed = true));
    sockets.push(s);
  });
  return { page, sockets };
}

/** screenshot saves a full-page screenshot as outDir/name and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(outDir, { recursive: true });
  const path = join(outDir, name);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** until polls fn every 50 ms until it returns a truthy value, which it returns. */
export async function until(fn, { timeout = 10_000, what = "a condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
