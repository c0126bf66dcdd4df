// The JS client's runner of the client conformance suite
// (conformance/README.md): every case of $ATASKS_CONFORMANCE_CASES against
// the gateway at $ATASKS_GATEWAY_URL, over WebSocket, then over REST.
//
//   node --experimental-websocket clients/js/conformance.js
//
// It prints `ok [ws] <name>` or `FAIL [ws] <name>: <why>` per case and
// transport, and exits 0 when all passed, 1 when one failed, 2 when it could
// not run (a missing variable, an unreadable file, a case with a field it
// does not know, no WebSocket, no gateway).
import { readFileSync } from "node:fs";
import { AtasksClient, AtasksError } from "./index.js";

const CASE_TIMEOUT_MS = 30_000;
const TRANSPORTS = /** @type {const} */ (["ws", "rest"]);

const CASE_FIELDS = new Set([
  "name",
  "ns",
  "task",
  "input",
  "input_repeat",
  "wait",
  "timeout",
  "delay",
  "cancel_after_ms",
  "idempotency_key",
  "parallel",
  "expect",
]);
const EXPECT_FIELDS = new Set(["result", "echo", "error"]);
const ERROR_FIELDS = new Set(["code", "message", "details", "retryable", "pointers"]);

// A Go duration (time.ParseDuration) that is not negative: "300ms", "1.5s", "1h2m", "0".
const GO_DURATION = /^\+?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$/;
const UNIT_MS = { ns: 1e-6, us: 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };

/** Unusable is a reason the runner cannot run at all (exit 2). */
class Unusable extends Error {}

/**
 * @typedef {{
 *   name: string, ns?: string, task: string, input?: unknown,
 *   input_repeat?: {text: string, times: number}, wait?: string, timeout?: string, delay?: string,
 *   cancel_after_ms?: number, idempotency_key?: string, parallel?: number,
 *   expect: {result?: unknown, echo?: boolean, error?: {code: string, message?: string, details?: unknown, retryable?: boolean, pointers?: string[]}}
 * }} Case
 */

/** env returns the environment variable name, or stops the runner. */
function env(name) {
  const v = process.env[name];
  if (!v) throw new Unusable(`${name} is not set`);
  return v;
}

/** load reads and checks the cases file; anything it does not understand is Unusable. */
function load(path) {
  let doc;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Unusable(`reading ${path}: ${err instanceof Error ? err.message : err}`);
  }
  if (!isObject(doc)) throw new Unusable(`${path}: not a JSON object`);
  for (const k of Object.keys(doc)) {
    if (k !== "version" && k !== "cases") throw new Unusable(`${path}: unknown field ${JSON.stringify(k)}`);
  }
  if (doc.version !== 1) throw new Unusable(`${path}: version ${JSON.stringify(doc.version)}, this runner knows 1`);
  if (!Array.isArray(doc.cases) || doc.cases.length === 0) throw new Unusable(`${path}: no cases`);
  const names = new Set();
  return doc.cases.map((c, i) => {
    const where = `${path}: case ${i}${isObject(c) && typeof c.name === "string" ? ` (${JSON.stringify(c.name)})` : ""}`;
    checkCase(c, where);
    if (names.has(c.name)) throw new Unusable(`${where}: the name is used twice`);
    names.add(c.name);
    return /** @type {Case} */ (c);
  });
}

function checkCase(c, where) {
  const bad = (why) => new Unusable(`${where}: ${why}`);
  if (!isObject(c)) throw bad("not an object");
  for (const k of Object.keys(c)) if (!CASE_FIELDS.has(k)) throw bad(`unknown field ${JSON.stringify(k)}`);
  const str = (k, required = false) => {
    if (c[k] === undefined ? required : typeof c[k] !== "string" || c[k] === "") throw bad(`${k}: want a non-empty string`);
  };
  const int = (k, min) => {
    if (c[k] !== undefined && !(Number.isInteger(c[k]) && c[k] >= min)) throw bad(`${k}: want an integer >= ${min}`);
  };
  str("name", true);
  str("task", true);
  str("ns");
  const dur = (k) => {
    str(k);
    if (c[k] !== undefined && Number.isNaN(durationMs(c[k]))) throw bad(`${k}: want a Go duration >= 0 such as 300ms`);
  };
  dur("wait");
  dur("timeout");
  dur("delay");
  str("idempotency_key");
  int("cancel_after_ms", 0);
  int("parallel", 1);
  if (c.input_repeat !== undefined) {
    const r = c.input_repeat;
    if (c.input !== undefined) throw bad("both input and input_repeat");
    if (!isObject(r)) throw bad("input_repeat: want an object");
    for (const k of Object.keys(r)) if (k !== "text" && k !== "times") throw bad(`input_repeat: unknown field ${JSON.stringify(k)}`);
    if (typeof r.text !== "string" || !(Number.isInteger(r.times) && r.times >= 0)) {
      throw bad("input_repeat: want {text: string, times: integer >= 0}");
    }
  }
  const e = c.expect;
  if (!isObject(e)) throw bad("expect: want an object");
  for (const k of Object.keys(e)) if (!EXPECT_FIELDS.has(k)) throw bad(`expect: unknown field ${JSON.stringify(k)}`);
  if (Object.keys(e).length !== 1) throw bad("expect: want exactly one of result, echo, error");
  if ("echo" in e && e.echo !== true) throw bad("expect.echo: want true");
  if ("error" in e) {
    const x = e.error;
    if (!isObject(x)) throw bad("expect.error: want an object");
    for (const k of Object.keys(x)) if (!ERROR_FIELDS.has(k)) throw bad(`expect.error: unknown field ${JSON.stringify(k)}`);
    if (typeof x.code !== "string" || x.code === "") throw bad("expect.error.code: want a non-empty string");
    if (x.message !== undefined && typeof x.message !== "string") throw bad("expect.error.message: want a string");
    if (x.retryable !== undefined && typeof x.retryable !== "boolean") throw bad("expect.error.retryable: want a boolean");
    if (x.pointers !== undefined && !(Array.isArray(x.pointers) && x.pointers.every((p) => typeof p === "string"))) {
      throw bad("expect.error.pointers: want a list of strings");
    }
  }
}

/** durationMs returns Go duration s in milliseconds, or NaN when it is not one >= 0. */
function durationMs(s) {
  if (typeof s !== "string" || !GO_DURATION.test(s)) return NaN;
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/g)) ms += Number(n) * UNIT_MS[unit];
  return ms;
}

/**
 * attempt makes one call of case c with input (undefined: without one) and
 * returns its outcome: {value} or {error}, with the invocation id when it
 * was accepted, the final invocation when it arrived, and how long the call
 * took (ms).
 * @param {AtasksClient} client
 * @param {Case} c
 * @param {"ws"|"rest"} transport
 */
async function attempt(client, c, input, transport, run) {
  /** @type {import("./index.js").CallOptions} */
  const opts = { transport };
  /** @type {string|undefined} */
  let id;
  /** @type {import("./index.js").Invocation|undefined} */
  let invocation;
  opts.onState = (ev) => {
    if (ev.type === "accepted") id = ev.id;
    if (ev.type === "result") invocation = ev.invocation;
  };
  if (c.timeout !== undefined) opts.timeout = c.timeout;
  if (c.delay !== undefined) opts.delay = c.delay;
  if (c.idempotency_key !== undefined) opts.idempotencyKey = `${c.idempotency_key}-${run}`;
  let timer;
  if (c.cancel_after_ms !== undefined) {
    const ac = new AbortController();
    opts.signal = ac.signal;
    timer = setTimeout(() => ac.abort(), c.cancel_after_ms);
  }
  const began = performance.now();
  try {
    const value = await client.call(c.ns ?? "default", c.task, input, opts);
    return { value, id, invocation, took: performance.now() - began };
  } catch (error) {
    return { error, id, invocation, took: performance.now() - began };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * runCase runs case c over transport and returns why it failed, or "" when
 * it passed.
 * @param {Case} c
 * @param {"ws"|"rest"} transport
 */
async function runCase(c, transport, { url, run, shared }) {
  // A case without an input makes its call without one; its echo is null.
  const sent = c.input_repeat ? c.input_repeat.text.repeat(c.input_repeat.times) : c.input;
  const input = sent === undefined ? null : sent;
  // A case's wait is how long its first REST request waits: the client's
  // pollWait (which its long-polls then use too). WebSocket has none.
  const client = c.wait && transport === "rest" ? new AtasksClient({ baseUrl: url, transport, pollWait: c.wait }) : shared;
  try {
    const n = c.parallel ?? 1;
    const rounds = c.idempotency_key === undefined ? 1 : 2;
    const ids = [];
    for (let round = 0; round < rounds; round++) {
      const outs = await Promise.all(Array.from({ length: n }, () => attempt(client, c, sent, transport, run)));
      for (const [i, out] of outs.entries()) {
        const which = [rounds > 1 ? `call ${round + 1}` : "", n > 1 ? `parallel call ${i + 1}` : ""].filter(Boolean).join(", ");
        const why = judge(c, input, out) || delayed(c, out) || (await cancelledAtGateway(c, client, out));
        if (why) return which ? `${which}: ${why}` : why;
        ids.push(out.id);
      }
    }
    if (rounds > 1 && new Set(ids).size !== 1) return `the calls with one idempotency key named different invocations: ${ids.join(", ")}`;
    return "";
  } finally {
    if (client !== shared) client.close();
  }
}

/** judge compares an outcome with c.expect; it returns why they differ, or "". */
function judge(c, input, out) {
  const e = c.expect;
  if ("error" in e) {
    if (!("error" in out)) return `succeeded with ${show(out.value)}, want error ${e.error.code}`;
    const err = out.error;
    if (!(err instanceof AtasksError)) return `rejected with ${err?.name ?? typeof err} ${show(err?.message ?? err)}, not an AtasksError`;
    for (const k of ["code", "message", "details", "retryable"]) {
      if (e.error[k] !== undefined && !jsonEqual(err[k], e.error[k])) {
        return `error ${k} ${show(err[k])}, want ${show(e.error[k])} (error ${err.code}: ${err.message})`;
      }
    }
    if (e.error.pointers !== undefined) {
      const got = pointers(err.details);
      const sorted = (ps) => JSON.stringify([...ps].sort());
      if (!got || sorted(got) !== sorted(e.error.pointers)) {
        return `error details ${show(err.details)}: pointers ${show(got)}, want ${show(e.error.pointers)}`;
      }
    }
    return "";
  }
  if ("error" in out) {
    const err = out.error;
    return `failed with ${err instanceof AtasksError ? `${err.code}: ${err.message}` : String(err)}`;
  }
  const want = e.echo ? input : e.result;
  return jsonEqual(out.value, want) ? "" : `result ${show(out.value)}, want ${show(want)}`;
}

/**
 * delayed checks, for a delayed call that succeeded, that it ended no
 * sooner than its delay, and that its invocation started no earlier than
 * its run_at; it returns why not, or "".
 */
function delayed(c, out) {
  const delay = c.delay === undefined ? 0 : durationMs(c.delay);
  if (delay === 0 || "error" in out) return "";
  if (out.took < delay) return `a call delayed ${c.delay} ended ${out.took.toFixed(1)}ms after it began: want no sooner`;
  const inv = out.invocation;
  if (inv === undefined) return "";
  const runAt = instant(inv.run_at);
  const startedAt = instant(inv.started_at);
  if (runAt === undefined || startedAt === undefined || startedAt < runAt) {
    return `a call delayed ${c.delay}: its invocation has run_at ${show(inv.run_at)}, started_at ${show(inv.started_at)}: want it started no earlier`;
  }
  return "";
}

/** instant returns RFC 3339 time s in nanoseconds since 1970 (exact, unlike Date), or undefined when s is not one. */
function instant(s) {
  const m = typeof s === "string" ? /^([^.]+?)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/i.exec(s) : null;
  const ms = m ? Date.parse(m[1] + m[3]) : NaN;
  if (Number.isNaN(ms)) return undefined;
  return BigInt(ms) * 1_000_000n + BigInt((m?.[2] ?? "").padEnd(9, "0"));
}

/**
 * cancelledAtGateway checks, for a call its runner aborted, that the abort
 * reached the gateway: the invocation ended with the expected error code.
 */
async function cancelledAtGateway(c, client, out) {
  if (c.cancel_after_ms === undefined || !("error" in out) || out.error?.name !== "AbortError") return "";
  if (out.id === undefined) return ""; // aborted before it was accepted: nothing started
  const inv = await client.get(c.ns ?? "default", out.id, { wait: "10s" });
  const want = c.expect.error?.code;
  if (inv.state === "succeeded" || inv.error?.code !== want) {
    return `the call was aborted but invocation ${out.id} ended ${inv.state}${inv.error ? ` (${inv.error.code})` : ""}, want error ${want}`;
  }
  return "";
}

/**
 * pointers lists the pointers of a bad_input's details, {errors: [{pointer}]};
 * undefined when they are not that.
 * @returns {string[]|undefined}
 */
function pointers(details) {
  const errors = isObject(details) ? details.errors : undefined;
  if (!Array.isArray(errors) || !errors.every((e) => isObject(e) && typeof e.pointer === "string")) return undefined;
  return errors.map((e) => e.pointer);
}

/** jsonEqual compares two JSON values: numbers by value, objects whatever their key order. */
function jsonEqual(a, b) {
  if (a === b) return true;
  if (typeof a === "number" && typeof b === "number") return a === b || (Number.isNaN(a) && Number.isNaN(b));
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function show(v) {
  const s = v === undefined ? "undefined" : JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 100)}… (${s.length} characters)` : s;
}

function withTimeout(p, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(`no outcome within ${ms / 1000}s`), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function main() {
  const url = env("ATASKS_GATEWAY_URL").replace(/\/+$/, "");
  const cases = load(env("ATASKS_CONFORMANCE_CASES"));
  const run = env("ATASKS_CONFORMANCE_RUN");
  if (typeof WebSocket === "undefined") {
    throw new Unusable("no global WebSocket: run node with --experimental-websocket (Node 20), or Node >= 22");
  }
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`GET /healthz: ${res.status}`);
  } catch (err) {
    throw new Unusable(`the gateway at ${url} does not answer: ${err instanceof Error ? err.message : err}`);
  }

  let failed = 0;
  for (const transport of TRANSPORTS) {
    // One client per transport: its cases run at once over it (over
    // WebSocket, one connection), and print in the file's order.
    const shared = new AtasksClient({ baseUrl: url, transport });
    const results = cases.map((c) =>
      withTimeout(
        runCase(c, transport, { url, run, shared }).catch((err) => `the runner threw: ${err?.stack ?? err}`),
        CASE_TIMEOUT_MS,
      ),
    );
    for (const [i, c] of cases.entries()) {
      const why = await results[i];
      if (why) failed++;
      console.log(why ? `FAIL [${transport}] ${c.name}: ${why}` : `ok [${transport}] ${c.name}`);
    }
    shared.close();
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`conformance.js: ${err instanceof Unusable ? err.message : err?.stack ?? err}`);
    process.exit(2);
  },
);
