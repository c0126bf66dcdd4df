// Types of @atasks/client (index.js).

/** Where an invocation stands; the last four are final. "scheduled": a delayed call waits for its run_at. */
export type State = "scheduled" | "queued" | "running" | "succeeded" | "failed" | "cancelled" | "timed_out";

/** The states an invocation ends in. */
export type FinalState = "succeeded" | "failed" | "cancelled" | "timed_out";

/** The states an invocation ends in. */
export declare const FINAL_STATES: readonly ["succeeded", "failed", "cancelled", "timed_out"];

/** isFinal tells whether an invocation in state s has ended. */
export declare function isFinal(s: string): s is FinalState;

/** The typed error of a task: the same shape on every transport. */
export interface ErrorBody {
  code: string;
  message: string;
  details?: unknown;
  retryable: boolean;
}

/** The invocation resource: GET /v1/ns/{ns}/invocations/{id}. */
export interface Invocation<R = unknown> {
  id: string;
  ns: string;
  task: string;
  state: State;
  created_at: string;
  /** A delayed call's time (RFC 3339): it runs no earlier. */
  run_at?: string;
  started_at?: string;
  finished_at?: string;
  worker?: string;
  /** Ids of the invocations this one awaited, in order. */
  children?: string[];
  /** Present when state is "succeeded". */
  result?: R;
  /** Present when state is "failed", "cancelled" or "timed_out". */
  error?: ErrorBody;
}

/** A task the gateway can reach: GET /v1/ns/{ns}/tasks. */
export interface TaskInfo {
  name: string;
  /** How the gateway encodes the task's input: "json", "cbor", … */
  codec?: string;
  /** How many servers serve it. */
  servers: number;
  /** The JSON Schemas of the task's input and result, derived from its Go types; the gateway checks every input against `input` (bad_input). */
  schema?: { input: JSONSchema; output: JSONSchema };
}

/** A JSON Schema (draft 2020-12): an object, or true/false. */
export type JSONSchema = boolean | { [keyword: string]: unknown };

/** One way an input does not fit its task: where (an RFC 6901 pointer into the input, "" for the whole of it) and what is wrong there. */
export interface InputViolation {
  pointer: string;
  detail: string;
}

/** The details of a bad_input error, whichever transport brought it and whoever (the gateway or a worker) found it. */
export interface BadInputDetails {
  errors: InputViolation[];
}

/**
 * What onState hears about a call or subscription, in order: "accepted"
 * (state "queued"), any number of "state" ("running", or awaiting `child`;
 * a delayed call's "scheduled" until its time), then one "result" carrying
 * the final invocation.
 */
export interface CallEvent {
  type: "accepted" | "state" | "result";
  id: string;
  ns: string;
  task?: string;
  state: State;
  /** On "state": the child invocation it started awaiting. */
  child?: string;
  /** On "state": the worker running it. */
  worker?: string;
  /** On "result": the final invocation. */
  invocation?: Invocation;
}

/** Which way calls go: "auto" is WebSocket when possible, else REST. */
export type Transport = "auto" | "ws" | "rest";

/** A WebSocket constructor: the browser's, Node's (>= 22, or 20 with --experimental-websocket), or the `ws` package's. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string[]): WebSocketLike;
}

/** The part of a WebSocket the client uses. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
}

export interface ClientOptions {
  /** The gateway, e.g. "http://127.0.0.1:8080". Defaults to the page's origin in a browser. */
  baseUrl?: string;
  /** Defaults to "auto". */
  transport?: Transport;
  /** Defaults to globalThis.WebSocket; null never uses WebSocket. */
  WebSocket?: WebSocketConstructor | null;
  /** Defaults to globalThis.fetch. */
  fetch?: typeof fetch;
  /** Headers added to every REST request (a browser's WebSocket cannot send headers). */
  headers?: Record<string, string>;
  /** A bearer token of the gateway: sent as `Authorization: Bearer …` over REST and as the subprotocol `bearer.<base64url>` beside `atasks` over WebSocket. */
  token?: string;
  /** How long each REST long-poll waits (Go duration). Defaults to "30s"; the gateway caps it (60s). */
  pollWait?: string;
  /** After the WebSocket failed to open, "auto" uses REST for this long (ms) before trying again. Defaults to 10000. */
  wsRetryMs?: number;
  /** Hears WebSocket error frames that concern no pending call (e.g. bad_frame). */
  onError?: (err: AtasksError, ref?: string) => void;
}

/**
 * Per-call options. An invalid timeout, delay, idempotencyKey or transport
 * rejects with code "bad_request", and an input JSON.stringify cannot
 * encode (a BigInt, a cycle, a function or symbol as the input itself) with
 * code "bad_input", before anything is sent, whatever the transport.
 */
export interface CallOptions {
  /** Aborting cancels the invocation (and its children) and rejects at once with an AbortError-like AtasksError, code "cancelled". */
  signal?: AbortSignal;
  /** The invocation's deadline: a Go duration ("5s", "250ms") or milliseconds, >= 0. Past it the call rejects with code "timeout" (its invocation's state is "timed_out"). */
  timeout?: string | number;
  /** Delays the call: a Go duration ("300ms", "72h") or milliseconds, >= 0, at most 30 days and not past the end of its timeout. The invocation is "scheduled" until its run_at, then runs; cancelling it before then means it never runs. */
  delay?: string | number;
  /** Makes retries safe: sent as idempotency_key (WebSocket) or the Idempotency-Key header (REST), the same keys both ways. Printable ASCII, at most 255 characters. */
  idempotencyKey?: string;
  /** WebSocket: the call survives the connection's close (the client then follows it over REST). */
  detach?: boolean;
  /** Overrides the client's transport for this call. In "auto", a call whose frame would exceed 1 MiB (the gateway's default frame limit) goes over REST. */
  transport?: Transport;
  /** Hears the call's state changes. */
  onState?: (event: CallEvent) => void;
}

export interface SubscribeOptions {
  /** Aborting stops following (the invocation goes on); use the handle's cancel() to cancel it. */
  signal?: AbortSignal;
  transport?: Transport;
  onState?: (event: CallEvent) => void;
}

/** A call under way, or a subscription. */
export interface CallHandle<R = unknown> {
  readonly id: string;
  readonly ns: string;
  readonly task: string | undefined;
  /** The task's result; rejects with an AtasksError. */
  readonly result: Promise<R>;
  /** The final invocation, whatever its state; rejects only when it cannot be had. */
  readonly done: Promise<Invocation<R>>;
  /** Cancels the invocation; resolves with its final resource. */
  cancel(reason?: unknown): Promise<Invocation<R>>;
}

/**
 * Every failure: a failed/cancelled/timed-out invocation (`invocation` set;
 * the task's code, message, details and retryable), an error of the gateway
 * (problem+json or WebSocket error frame: the same code, message, details
 * and retryable either way, plus `status` on REST), "bad_request" for
 * options refused before sending, or "unavailable" (retryable) when the
 * gateway cannot be reached. An input that does not fit the task's schema
 * is "bad_input" with `details` a {@link BadInputDetails}, `{errors: [{pointer, detail}]}`
 * (none for an input the client could not encode). An aborted call's error
 * has name "AbortError" and code "cancelled".
 */
export declare class AtasksError extends Error {
  constructor(
    code: string,
    message: string,
    options?: { details?: unknown; retryable?: boolean; invocation?: Invocation; status?: number; cause?: unknown },
  );
  name: "AtasksError" | "AbortError";
  code: string;
  details?: unknown;
  retryable: boolean;
  invocation?: Invocation;
  /** The HTTP status of a REST error. */
  status?: number;
  static fromInvocation(inv: Invocation): AtasksError;
}

export declare class AtasksClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  /** How the next "auto" call would go. */
  readonly transport: "ws" | "rest";
  namespaces(opts?: { signal?: AbortSignal }): Promise<string[]>;
  tasks(ns: string, opts?: { signal?: AbortSignal }): Promise<TaskInfo[]>;
  /** The invocation (over REST); with wait (Go duration or ms), long-polls until it is final. */
  get<R = unknown>(ns: string, id: string, opts?: { wait?: string | number; signal?: AbortSignal }): Promise<Invocation<R>>;
  /** Calls the task and resolves with its result; rejects with an AtasksError. */
  call<R = unknown>(ns: string, task: string, input?: unknown, opts?: CallOptions): Promise<R>;
  /** Starts the task; resolves once the gateway accepted it. */
  start<R = unknown>(ns: string, task: string, input?: unknown, opts?: CallOptions): Promise<CallHandle<R>>;
  /** Follows an invocation started anywhere. */
  subscribe<R = unknown>(ns: string, id: string, opts?: SubscribeOptions): Promise<CallHandle<R>>;
  /** Closes the WebSocket and rejects pending calls ("unavailable"); the client stays usable. */
  close(): void;
}
