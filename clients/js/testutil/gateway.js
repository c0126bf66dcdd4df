// Starts a real gateway for the tests: ATASKS_GATEWAY_URL when set (nothing
// is started), else the binary at ATASKS_GATEWAY_BIN, else one built here
// with `go build ./cmd/gateway`, on a free port of 127.0.0.1.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** freePort asks the kernel for a free port on 127.0.0.1 and releases it. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * startGateway returns {url, stop()} of a gateway serving the demo tasks.
 * extraArgs go to the binary.
 */
export async function startGateway(extraArgs = []) {
  if (process.env.ATASKS_GATEWAY_URL) {
    return { url: process.env.ATASKS_GATEWAY_URL.replace(/\/+$/, ""), stop: async () => {} };
  }
  let bin = process.env.ATASKS_GATEWAY_BIN;
  let tmp;
  if (!bin) {
    tmp = mkdtempSync(join(tmpdir(), "atasks-js-"));
    bin = join(tmp, "gateway");
    execFileSync("go", ["build", "-o", bin, "./cmd/gateway"], { cwd: repoRoot, stdio: ["ignore", "inherit", "inherit"] });
  }
  // Another process may take the port between freePort and the gateway's
  // listen: try a few.
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      const gw = await launch(bin, port, extraArgs);
      return {
        url: gw.url,
        log: gw.log,
        stop: async () => {
          await gw.stop();
          if (tmp) rmSync(tmp, { recursive: true, force: true });
        },
      };
    } catch (err) {
      lastErr = err;
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  throw lastErr;
}

async function launch(bin, port, extraArgs) {
  const url = `http://127.0.0.1:${port}`;
  // Embedded mode whatever $ATASKS_AMQP_URL says: the tests need the demo tasks in-process.
  const proc = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--amqp-url=", "--log-level", "warn", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  let gone = false;
  exited.then(() => (gone = true));

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (gone) throw new Error(`gateway exited before answering /healthz:\n${log}`);
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`gateway did not answer ${url}/healthz within 30s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    log: () => log,
    stop: async () => {
      if (gone) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** hasWebSocketRoute tells whether the gateway at url serves /v1/ws. */
export async function hasWebSocketRoute(url) {
  const res = await fetch(`${url}/v1/ws`);
  const text = await res.text();
  if (res.status !== 404) return true;
  try {
    return JSON.parse(text).code !== "not_found";
  } catch {
    return true;
  }
}
