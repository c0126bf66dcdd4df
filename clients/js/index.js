// @atasks/client: a dependency-free client for the atasks gateway, for
// browsers and Node >= 20.
//
// Calls go over one shared WebSocket (/v1/ws, docs/WEBSOCKET.md) when a
// WebSocket implementation is at hand, many calls multiplexed by ref; over
// REST (POST ?wait=, then long-poll GET ?wait=) when none is, when the
// connection cannot be opened, or when asked with {transport: "rest"}.

/** The states an invocation ends in. */
export const FINAL_STATES = Object.freeze(["succeeded", "failed", "cancelled", "timed_out"]);

/** isFinal tells whether an invocation in state s has ended. */
export function isFinal(s) {
  return FINAL_STATES.includes(s);
}

// How long the first POST of a cancellable REST call waits: short, so that
// the invocation's id (needed to cancel it) is known soon.
const CANCELLABLE_FIRST_WAIT = "200ms";

// The gateway's default read limit of a WebSocket frame (its --max-body). A
// larger frame makes it close the connection (1009), losing every call on
// it, so in "auto" mode a call that big goes over REST instead, where the
// gateway answers it alone (413 body_too_large, or the outcome if its limit
// is higher).
const WS_FRAME_LIMIT = 1 << 20;

// The longest Idempotency-Key the gateway takes, in bytes, on both transports.
const IDEMPOTENCY_KEY_MAX = 255;

// The longest delay of a call the gateway takes: 30 days, in nanoseconds.
const DELAY_MAX_NS = 30 * 24 * 3600e9;

/**
 * AtasksError is how every failure reaches the caller: a failed, cancelled or
 * timed-out invocation (its typed error, with the invocation resource), an
 * error of the gateway itself (problem+json or a WebSocket error frame, its
 * code), or a transport problem ("unavailable").
 */
export class AtasksError extends Error {
  constructor(code, message, { details, retryable = false, invocation, status, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "AtasksError";
    this.code = code;
    this.details = details;
    this.retryable = retryable;
    if (invocation !== undefined) this.invocation = invocation;
    if (status !== undefined) this.status = status;
  }

  /** fromInvocation returns the error of a final invocation that did not succeed. */
  static fromInvocation(inv) {
    const e = inv.error ?? { code: inv.state, message: `invocation ended ${inv.state}` };
    return new AtasksError(e.code, e.message, { details: e.details, retryable: !!e.retryable, invocation: inv });
  }
}

// abortError is the rejection of a call its caller aborted: an AtasksError
// with code "cancelled" that also looks like a DOMException AbortError.
function abortError(reason) {
  const err = new AtasksError("cancelled", "the call was aborted", { cause: reason });
  err.name = "AbortError";
  return err;
}

function unavailable(message, cause) {
  return new AtasksError("unavailable", message, { retryable: true, cause });
}

// badRequest is the error of an option the client refuses before sending
// anything, so that it fails the same way over WebSocket and REST (where
// the gateway would answer bad_frame and bad_request).
function badRequest(message) {
  return new AtasksError("bad_request", message);
}

// encodeInput encodes a call's input as JSON.stringify does (absent is
// null). An input it cannot encode throws a bad_input AtasksError, the
// code of an input that does not fit the task: one that makes it throw (a
// BigInt, a cycle) or that it turns into nothing (a function, a symbol).
function encodeInput(input) {
  let body;
  try {
    body = JSON.stringify(input === undefined ? null : input);
  } catch (err) {
    throw new AtasksError("bad_input", `the input cannot be encoded as JSON: ${err.message}`, { cause: err });
  }
  if (body === undefined) throw new AtasksError("bad_input", `the input cannot be encoded as JSON: JSON.stringify encodes this ${typeof input} as nothing`);
  return body;
}

// A Go duration (time.ParseDuration): "300ms", "1.5s", "1h2m", "0".
const GO_DURATION = /^[-+]?(?:0|(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$/;

// duration turns a duration option (name says which) into a Go duration:
// numbers are milliseconds. It throws a bad_request AtasksError for a value
// the gateway would refuse: not a duration, or negative.
function duration(name, v) {
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) throw badRequest(`${name}: want milliseconds >= 0, got ${v}`);
    return `${Math.round(v)}ms`;
  }
  const s = String(v);
  if (!GO_DURATION.test(s) || (s[0] === "-" && /[1-9]/.test(s))) {
    throw badRequest(`${name}: want a duration >= 0 such as 250ms or 5s, got ${JSON.stringify(s)}`);
  }
  return s;
}

// Nanoseconds per unit of a Go duration.
const UNIT_NS = { ns: 1, us: 1e3, "\u00b5s": 1e3, "\u03bcs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

// nanoseconds returns the length of a Go duration duration() returned (not
// negative) in nanoseconds.
function nanoseconds(s) {
  let ns = 0;
  for (const [, n, unit] of s.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/g)) ns += Number(n) * UNIT_NS[unit];
  return ns;
}

// delayOption turns a call's delay option into a Go duration as duration()
// does, and also refuses what the gateway would refuse of a delayed call
// (so that it fails the same way over WebSocket and REST): a delay over 30
// days, or one past the end of the call's timeout (it could only time out).
function delayOption(v, timeout) {
  const delay = duration("delay", v);
  if (delay === undefined) return undefined;
  const ns = nanoseconds(delay);
  if (ns > DELAY_MAX_NS) throw badRequest(`delay: at most 720h (30 days), got ${delay}`);
  const deadline = timeout === undefined ? 0 : nanoseconds(timeout);
  if (deadline > 0 && deadline < ns) {
    throw badRequest(`delay: the timeout (${timeout}) ends before the call is to run (after ${delay}): it could only time out`);
  }
  return delay;
}

// idempotencyKey checks a key: printable ASCII, so that it is the same bytes
// in a WebSocket frame and in an HTTP header, and at most 255 of them.
function idempotencyKey(k) {
  if (k === undefined || k === null || k === "") return undefined;
  const s = String(k);
  if (!/^[\x20-\x7e]+$/.test(s)) throw badRequest("idempotencyKey: want printable ASCII characters only");
  if (s.length > IDEMPOTENCY_KEY_MAX) throw badRequest(`idempotencyKey: at most ${IDEMPOTENCY_KEY_MAX} characters, got ${s.length}`);
  return s;
}

// overUtf8 tells whether s takes more than limit bytes in UTF-8.
function overUtf8(s, limit) {
  if (s.length * 3 <= limit) return false;
  return new TextEncoder().encode(s).length > limit;
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const ignore = () => {};

/**
 * Op tracks one call or subscription, whatever carries it: it holds the
 * promises of its handle, reports events, and settles once.
 */
class Op {
  constructor({ kind, ns, task, id, onState, detach }) {
    this.kind = kind; // "call" | "subscribe"
    this.ns = ns;
    this.task = task;
    this.id = id;
    this.detach = !!detach;
    this.onState = onState;
    this.accepted = deferred(); // resolves with the id
    this.result = deferred(); // the task's result, or an AtasksError
    this.done = deferred(); // the final invocation resource
    this.accepted.promise.catch(ignore);
    this.done.promise.catch(ignore);
    this.aborted = false;
    this.settled = false;
    this.onAbort = null; // set by the transport carrying the op
    this.poll = null; // the AbortController of a REST long-poll
    this.lastState = undefined;
    this.children = 0;
    this.cleanups = []; // run once the op settles or is aborted
    if (id !== undefined) this.accepted.resolve(id);
  }

  // onSettle runs f once the op is settled or aborted (e.g. to remove the
  // caller's abort listener, which may outlive many calls).
  onSettle(f) {
    if (this.settled || this.aborted) f();
    else this.cleanups.push(f);
  }

  #cleanup() {
    const fs = this.cleanups;
    this.cleanups = [];
    for (const f of fs) f();
  }

  emit(ev) {
    if (!this.onState) return;
    try {
      this.onState({ ns: this.ns, task: this.task, ...ev });
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  accept(id, task) {
    this.id = id;
    if (task) this.task = task;
    this.lastState = "queued";
    this.accepted.resolve(id);
    this.emit({ type: "accepted", id, state: "queued" });
  }

  // observe reports what changed in an invocation resource: REST sees
  // resources, not events, so it tells what happened since the last one
  // (running, each new child) as the events WebSocket would have pushed.
  observe(inv) {
    if (inv.task) this.task = inv.task;
    if (this.id === undefined) this.accept(inv.id, inv.task);
    const now = isFinal(inv.state) ? (inv.started_at ? "running" : this.lastState) : inv.state;
    if (now !== this.lastState) {
      this.lastState = now;
      this.emit({ type: "state", id: inv.id, state: now, worker: inv.worker });
    }
    const children = inv.children ?? [];
    for (; this.children < children.length; this.children++) {
      this.emit({ type: "state", id: inv.id, state: now, child: children[this.children], worker: inv.worker });
    }
  }

  finish(inv) {
    if (this.settled) return;
    this.observe(inv);
    this.settled = true;
    this.#cleanup();
    this.emit({ type: "result", id: inv.id, state: inv.state, invocation: inv });
    this.done.resolve(inv);
    if (inv.state === "succeeded") this.result.resolve(inv.result === undefined ? null : inv.result);
    else this.result.reject(AtasksError.fromInvocation(inv));
  }

  fail(err) {
    if (this.settled) return;
    this.settled = true;
    this.#cleanup();
    this.poll?.abort();
    this.accepted.reject(err);
    this.result.reject(err);
    this.done.reject(err);
  }

  // abort rejects the result at once; done waits for the final resource the
  // cancel brings (or fails with the same error when there is none).
  abort(reason) {
    if (this.settled || this.aborted) return;
    this.aborted = true;
    this.#cleanup();
    const err = abortError(reason);
    this.accepted.reject(err);
    this.result.reject(err);
    if (this.onAbort) this.onAbort();
    else this.fail(err);
  }

  handle() {
    const op = this;
    return {
      get id() {
        return op.id;
      },
      ns: op.ns,
      get task() {
        return op.task;
      },
      result: op.result.promise,
      done: op.done.promise,
      cancel(reason) {
        op.abort(reason);
        return op.done.promise;
      },
    };
  }
}

/**
 * WsConnection is one WebSocket to /v1/ws carrying many ops, by ref.
 */
class WsConnection {
  constructor(url, WebSocketImpl, { protocols, onClosed, onFrameError }) {
    this.ops = new Map();
    this.closed = false;
    this.onClosed = onClosed;
    this.onFrameError = onFrameError;
    this.ready = new Promise((resolve, reject) => {
      let ws;
      try {
        ws = protocols ? new WebSocketImpl(url, protocols) : new WebSocketImpl(url);
      } catch (err) {
        this.closed = true;
        reject(unavailable(`WebSocket ${url}: ${err.message}`, err));
        return;
      }
      this.ws = ws;
      let open = false;
      ws.onopen = () => {
        open = true;
        resolve(this);
      };
      ws.onerror = (ev) => {
        if (!open) reject(unavailable(`WebSocket ${url} could not be opened`, ev?.error ?? ev));
      };
      ws.onclose = (ev) => {
        if (!open) reject(unavailable(`WebSocket ${url} closed while opening (code ${ev?.code})`));
        this.#closed(ev);
      };
      ws.onmessage = (ev) => this.#message(ev.data);
    });
    this.ready.catch(ignore);
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  // start sends op's call or subscribe frame, encoded, under ref.
  start(ref, op, frame) {
    this.ws.send(frame);
    this.ops.set(ref, op);
    op.onAbort = () => {
      if (!this.closed) this.send({ type: "cancel", ref });
    };
  }

  close(code = 1000, reason = "client closed") {
    if (this.closed) return;
    try {
      this.ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  #message(data) {
    if (typeof data !== "string") return; // the protocol is text frames only
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m === null || typeof m !== "object") return;
    const op = m.ref === undefined ? undefined : this.ops.get(m.ref);
    switch (m.type) {
      case "accepted":
        if (op && op.id === undefined) op.accept(m.id, m.task);
        return;
      case "state":
        if (!op) return;
        if (m.child) op.children++;
        op.lastState = m.state;
        op.emit({ type: "state", id: m.id, state: m.state, child: m.child, worker: m.worker });
        return;
      case "result":
        if (!op) return;
        this.ops.delete(m.ref);
        op.finish(m.invocation);
        return;
      case "error": {
        const e = m.error ?? {};
        // An error for a call or subscription not yet under way means it did
        // not start; one about a later frame (a cancel) changes nothing.
        const err = new AtasksError(e.code ?? "error", e.message ?? "the gateway refused the frame", {
          details: e.details,
          retryable: !!e.retryable,
        });
        if (op && !op.settled && (op.id === undefined || op.kind === "subscribe") && op.lastState === undefined) {
          this.ops.delete(m.ref);
          op.fail(err);
          return;
        }
        if (this.onFrameError) this.onFrameError(err, m.ref);
        return;
      }
    }
  }

  #closed(ev) {
    if (this.closed) return;
    this.closed = true;
    const ops = [...this.ops.values()];
    this.ops.clear();
    this.onClosed(ops, ev);
  }
}

/**
 * AtasksClient calls tasks through an atasks gateway.
 */
export class AtasksClient {
  #base;
  #fetch;
  #WebSocket;
  #transport;
  #headers;
  #protocols; // the WebSocket subprotocols that carry the token, if any
  #pollWait;
  #wsRetryMs;
  #onError;
  #conn = null; // the shared WsConnection, or null until the next call
  #wsDownUntil = 0; // until then, "auto" goes straight to REST
  #ref = 0;
  #rest = new Set(); // AbortControllers of REST requests in flight

  constructor(options = {}) {
    const base = options.baseUrl ?? globalThis.location?.origin;
    if (!base) throw new TypeError("AtasksClient: baseUrl is required outside a browser");
    this.#base = String(base).replace(/\/+$/, "");
    this.#fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!this.#fetch) throw new TypeError("AtasksClient: no fetch; pass options.fetch");
    // options.WebSocket: null means "never WebSocket"; absent means the global one.
    this.#WebSocket = options.WebSocket !== undefined ? options.WebSocket : globalThis.WebSocket;
    this.#transport = options.transport ?? "auto";
    if (!["auto", "ws", "rest"].includes(this.#transport)) {
      throw new TypeError(`AtasksClient: transport must be "auto", "ws" or "rest", got ${this.#transport}`);
    }
    this.#headers = { ...(options.headers ?? {}) };
    if (options.token !== undefined && options.token !== null) {
      if (typeof options.token !== "string" || options.token === "") {
        throw new TypeError("AtasksClient: token must be a non-empty string");
      }
      // REST sends it in Authorization; a WebSocket, which cannot carry
      // headers from a browser, as a subprotocol beside "atasks".
      this.#headers.Authorization ??= `Bearer ${options.token}`;
      this.#protocols = ["atasks", `bearer.${base64url(options.token)}`];
    }
    this.#pollWait = options.pollWait ?? "30s";
    this.#wsRetryMs = options.wsRetryMs ?? 10_000;
    this.#onError = options.onError;
  }

  /** baseUrl is the gateway's address. */
  get baseUrl() {
    return this.#base;
  }

  /**
   * transport tells how the next call in "auto" mode would go: "ws" when a
   * WebSocket is open or worth trying, else "rest".
   */
  get transport() {
    if (this.#transport === "rest") return "rest";
    if (this.#conn && !this.#conn.closed) return "ws";
    if (this.#transport === "ws") return "ws";
    return this.#WebSocket && Date.now() >= this.#wsDownUntil ? "ws" : "rest";
  }

  /** namespaces lists the namespaces the gateway serves. */
  async namespaces(opts = {}) {
    const body = await this.#json("GET", "/v1/ns", undefined, opts.signal);
    return body.namespaces;
  }

  /** tasks lists the tasks served in namespace ns: [{name, servers}]. */
  async tasks(ns, opts = {}) {
    const body = await this.#json("GET", `/v1/ns/${enc(ns)}/tasks`, undefined, opts.signal);
    return body.tasks;
  }

  /** get returns invocation id of ns, waiting up to opts.wait for it to end. */
  async get(ns, id, opts = {}) {
    const wait = duration("wait", opts.wait);
    const q = wait ? `?wait=${encodeURIComponent(wait)}` : "";
    return this.#json("GET", `/v1/ns/${enc(ns)}/invocations/${enc(id)}${q}`, undefined, opts.signal);
  }

  /**
   * call invokes task of namespace ns with input and resolves with its
   * result; it rejects with an AtasksError.
   */
  call(ns, task, input, opts = {}) {
    return this.#begin(ns, task, input, opts, !!opts.signal).result.promise;
  }

  /**
   * start invokes the task and resolves, once the gateway accepted it, with
   * a handle: {id, ns, task, result, done, cancel()}.
   */
  async start(ns, task, input, opts = {}) {
    const op = this.#begin(ns, task, input, opts, true);
    op.result.promise.catch(ignore); // the caller may only look at done
    await op.accepted.promise;
    return op.handle();
  }

  /**
   * subscribe follows invocation id of namespace ns, started anywhere; it
   * resolves with the same handle as start. Its cancel() cancels the
   * invocation; aborting opts.signal only stops following it.
   */
  async subscribe(ns, id, opts = {}) {
    const op = new Op({ kind: "subscribe", ns, id, onState: opts.onState });
    op.result.promise.catch(ignore);
    if (!checkTransport(op, opts.transport)) return op.handle();
    const signal = opts.signal;
    if (signal) {
      if (signal.aborted) {
        op.fail(abortError(signal.reason));
        return op.handle();
      }
      const onAbort = () => op.fail(abortError(signal.reason));
      signal.addEventListener("abort", onAbort, { once: true });
      op.onSettle(() => signal.removeEventListener("abort", onAbort));
    }
    this.#dispatch(
      op,
      opts.transport,
      (conn) => {
        const ref = this.#nextRef();
        conn.start(ref, op, JSON.stringify({ type: "subscribe", ref, ns, id }));
      },
      () => this.#restFollow(op),
    );
    return op.handle();
  }

  /**
   * close closes the WebSocket (the gateway then cancels its calls that were
   * not detached) and stops every wait; pending calls reject with
   * "unavailable". The client can still be used afterwards.
   */
  close() {
    const closed = () => new AtasksError("unavailable", "the client was closed");
    const conn = this.#conn;
    this.#conn = null;
    if (conn) {
      const ops = [...conn.ops.values()];
      conn.ops.clear();
      conn.close();
      for (const op of ops) op.fail(closed());
    }
    for (const ac of this.#rest) ac.abort(closed());
    this.#rest.clear();
  }

  #nextRef() {
    return String(++this.#ref);
  }

  // begin starts a call; cancellable says whether it may be cancelled
  // (which over REST needs its id soon).
  #begin(ns, task, input, opts, cancellable) {
    const op = new Op({ kind: "call", ns, task, onState: opts.onState, detach: opts.detach });
    if (!checkTransport(op, opts.transport)) return op;
    // Options and input are checked here, the same way whatever carries the
    // call: it fails before anything is sent.
    let timeout, delay, key, body;
    try {
      timeout = duration("timeout", opts.timeout);
      delay = delayOption(opts.delay, timeout);
      key = idempotencyKey(opts.idempotencyKey);
      body = encodeInput(input);
    } catch (err) {
      op.fail(err instanceof AtasksError ? err : badRequest(`options: ${err.message}`));
      return op;
    }
    const signal = opts.signal;
    if (signal) {
      if (signal.aborted) {
        op.abort(signal.reason);
        return op;
      }
      const onAbort = () => op.abort(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      op.onSettle(() => signal.removeEventListener("abort", onAbort));
    }
    const head = { type: "call", ref: "", ns, task };
    if (timeout) head.timeout = timeout;
    if (delay) head.delay = delay;
    if (key) head.idempotency_key = key;
    if (opts.detach) head.detach = true;
    // The frame is built around the input already encoded, so a large input
    // is encoded once.
    const frame = (ref) => JSON.stringify({ ...head, ref }).slice(0, -1) + `,"input":${body}}`;
    let transport = opts.transport ?? this.#transport;
    if (transport === "auto" && overUtf8(frame(""), WS_FRAME_LIMIT - 32)) transport = "rest";
    this.#dispatch(
      op,
      transport,
      (conn) => {
        const ref = this.#nextRef();
        conn.start(ref, op, frame(ref));
      },
      () => this.#restCall(op, body, { timeout, delay, idempotencyKey: key, cancellable }),
    );
    return op;
  }

  // dispatch runs op over the WebSocket when the mode allows and it opens,
  // else over REST.
  #dispatch(op, transport = this.#transport, overWS, overREST) {
    const ws = transport === "ws" || (transport === "auto" && this.#WebSocket && Date.now() >= this.#wsDownUntil);
    if (!ws) {
      overREST();
      return;
    }
    this.#connect().then(
      (conn) => {
        if (op.aborted || op.settled) {
          if (!op.settled) op.fail(abortError());
          return;
        }
        try {
          overWS(conn);
        } catch (err) {
          op.fail(unavailable(`sending over the WebSocket: ${err.message}`, err));
        }
      },
      (err) => {
        if (transport === "ws") op.fail(err);
        else if (op.aborted) op.fail(abortError());
        else overREST();
      },
    );
  }

  #connect() {
    if (!this.#WebSocket) return Promise.reject(unavailable("no WebSocket implementation: pass options.WebSocket"));
    if (this.#conn && !this.#conn.closed) return this.#conn.ready;
    const url = this.#base.replace(/^http/, "ws") + "/v1/ws";
    const conn = new WsConnection(url, this.#WebSocket, {
      protocols: this.#protocols,
      onClosed: (ops, ev) => {
        if (this.#conn === conn) this.#conn = null;
        this.#lost(ops, ev);
      },
      onFrameError: this.#onError,
    });
    this.#conn = conn;
    conn.ready.catch(() => {
      if (this.#conn === conn) this.#conn = null;
      this.#wsDownUntil = Date.now() + this.#wsRetryMs;
    });
    return conn.ready;
  }

  // lost handles the ops of a WebSocket that closed: the gateway goes on
  // with subscriptions, detached calls and cancelled ones (whose final state
  // is wanted), which REST follows; it cancelled the others.
  #lost(ops, ev) {
    const why = ev?.code ? ` (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})` : "";
    for (const op of ops) {
      if (op.settled) continue;
      if (op.id !== undefined && (op.kind === "subscribe" || op.detach || op.aborted)) {
        op.onAbort = null;
        this.#restFollow(op);
      } else {
        op.fail(unavailable(`the WebSocket connection closed${why} before the outcome arrived`));
      }
    }
  }

  // restCall invokes over REST: POST ?wait=, then long-poll until final;
  // body is the input, encoded.
  async #restCall(op, body, { timeout, delay, idempotencyKey, cancellable }) {
    op.onAbort = ignore; // an abort during the POST is seen when it answers
    const q = new URLSearchParams({ wait: cancellable ? CANCELLABLE_FIRST_WAIT : this.#pollWait });
    if (timeout) q.set("timeout", timeout);
    if (delay) q.set("delay", delay);
    const headers = { "Content-Type": "application/json" };
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    let inv;
    try {
      // Not tied to the caller's signal: an abort during the POST must still
      // learn the id, to cancel the invocation.
      inv = await this.#json("POST", `/v1/ns/${enc(op.ns)}/tasks/${enc(op.task)}?${q}`, body, undefined, headers);
    } catch (err) {
      if (op.aborted) op.fail(abortError());
      else op.fail(err);
      return;
    }
    op.observe(inv);
    if (isFinal(inv.state)) {
      op.finish(inv);
      return;
    }
    await this.#restFollow(op);
  }

  // restFollow long-polls invocation op.id until it is final; an abort of op
  // sends DELETE, whose answer is the final resource.
  async #restFollow(op) {
    const path = `/v1/ns/${enc(op.ns)}/invocations/${enc(op.id)}`;
    const poll = new AbortController();
    op.poll = poll;
    op.onAbort = () => poll.abort();
    try {
      while (!op.settled && !op.aborted) {
        let inv;
        try {
          inv = await this.#json("GET", `${path}?wait=${encodeURIComponent(this.#pollWait)}`, undefined, poll.signal);
        } catch (err) {
          if (op.aborted) break;
          throw err;
        }
        op.observe(inv);
        if (isFinal(inv.state)) {
          op.finish(inv);
          return;
        }
      }
      if (op.aborted && !op.settled) {
        const inv = await this.#json("DELETE", path);
        op.finish(inv);
      }
    } catch (err) {
      op.fail(err);
    }
  }

  // json makes one request and returns its JSON body; problem+json and
  // failures to connect reject with an AtasksError.
  async #json(method, path, body, signal, headers = {}) {
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal.reason);
    if (signal) {
      if (signal.aborted) throw abortError(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    this.#rest.add(ac);
    let res, text;
    try {
      res = await this.#fetch(this.#base + path, {
        method,
        body,
        headers: { Accept: "application/json", ...this.#headers, ...headers },
        signal: ac.signal,
      });
      text = await res.text();
    } catch (err) {
      if (signal?.aborted) throw abortError(signal.reason);
      if (ac.signal.aborted && ac.signal.reason instanceof AtasksError) throw ac.signal.reason;
      throw unavailable(`${method} ${this.#base}${path}: ${err.message}`, err);
    } finally {
      this.#rest.delete(ac);
      signal?.removeEventListener("abort", onAbort);
    }
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      // A problem+json: the same code, message, details and retryable as
      // the gateway's error frame for the same failure over WebSocket. A
      // bad_input's errors (each field at fault) are the frame's details
      // {errors}, as a task's own bad_input carries them.
      const p = parsed && typeof parsed === "object" ? parsed : {};
      throw new AtasksError(p.code ?? `http_${res.status}`, p.detail ?? p.title ?? `${res.status} ${res.statusText}`, {
        status: res.status,
        retryable: typeof p.retryable === "boolean" ? p.retryable : res.status === 503,
        details: Array.isArray(p.errors) ? { errors: p.errors } : p.details,
      });
    }
    if (parsed === undefined) throw new AtasksError("bad_response", `${method} ${path}: the gateway's answer is not JSON`);
    return parsed;
  }
}

// checkTransport fails op when a call's transport option is not one of
// "auto", "ws", "rest" (absent is the client's).
function checkTransport(op, transport) {
  if (transport === undefined || ["auto", "ws", "rest"].includes(transport)) return true;
  op.fail(badRequest(`transport: want "auto", "ws" or "rest", got ${JSON.stringify(transport)}`));
  return false;
}

// base64url encodes s's UTF-8 bytes in unpadded base64url, as the
// gateway's bearer subprotocol wants a token.
function base64url(s) {
  let bin = "";
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function enc(s) {
  return encodeURIComponent(String(s));
}
