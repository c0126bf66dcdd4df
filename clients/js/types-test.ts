// Compiled by `npm run typecheck` (tsc --noEmit), never run: index.d.ts as a
// user writes against it. A line marked @ts-expect-error must not compile.
import { AtasksClient, AtasksError, FINAL_STATES, isFinal } from "@atasks/client";
import type { BadInputDetails, CallEvent, CallHandle, ClientOptions, FinalState, InputViolation, Invocation, JSONSchema, State, TaskInfo } from "@atasks/client";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(_: T) {}

async function usage(signal: AbortSignal) {
  const options: ClientOptions = { baseUrl: "http://127.0.0.1:8080", transport: "auto", WebSocket: null, pollWait: "30s" };
  const client = new AtasksClient(options);
  new AtasksClient({ WebSocket, fetch, headers: { Authorization: "Bearer x" }, wsRetryMs: 1000, onError: (e, ref) => e.code + ref });
  // @ts-expect-error: not a transport
  new AtasksClient({ transport: "tcp" });

  const sum = await client.call<number>("default", "demo.add", { a: 2, b: 3 });
  expectType<Equal<typeof sum, number>>(true);
  const anything = await client.call("default", "demo.echo");
  expectType<Equal<typeof anything, unknown>>(true);
  await client.call("default", "demo.sleep", { ms: 1 }, {
    signal,
    timeout: 500,
    idempotencyKey: "k",
    detach: true,
    transport: "rest",
    onState: (e: CallEvent) => {
      expectType<Equal<typeof e.type, "accepted" | "state" | "result">>(true);
      const s: State = e.state;
      return [s, e.id, e.child, e.worker, e.invocation?.result];
    },
  });
  await client.call("default", "demo.sleep", {}, { timeout: "5s", signal: AbortSignal.timeout(100) });
  // @ts-expect-error: timeout is a duration or milliseconds
  await client.call("default", "demo.sleep", {}, { timeout: true });
  await client.call("default", "demo.add", { a: 1, b: 2 }, { delay: "300ms", timeout: "5s" });
  await client.call("default", "demo.add", { a: 1, b: 2 }, { delay: 300 });
  // @ts-expect-error: delay is a duration or milliseconds
  await client.call("default", "demo.add", { a: 1, b: 2 }, { delay: new Date() });

  const sums: number[] = await Promise.all([1, 2].map((b) => client.call<number>("default", "demo.add", { a: 1, b })));

  const h: CallHandle<number[]> = await client.start<number[]>("default", "demo.gather", { n: 5, ms: 300 });
  const id: string = h.id;
  const out: number[] = await h.result;
  const done: Invocation<number[]> = await h.done;
  const cancelled: Invocation<number[]> = await h.cancel("enough");
  const sub = await client.subscribe<string>("default", id, { signal, onState: () => {} });
  const later: string = await sub.result;
  // @ts-expect-error: a handle's id is read-only
  h.id = "x";

  const ns: string[] = await client.namespaces({ signal });
  const tasks: TaskInfo[] = await client.tasks("default");
  const servers: number = tasks[0].servers;
  const input: JSONSchema | undefined = tasks[0].schema?.input;
  const required: unknown = typeof input === "object" ? input.required : undefined;
  // @ts-expect-error: a schema is an object or a boolean
  const notSchema: JSONSchema = "integer";
  const inv = await client.get<number>("default", id, { wait: "10s" });
  if (isFinal(inv.state)) {
    expectType<Equal<typeof inv.state, FinalState>>(true);
  }
  const finals: readonly FinalState[] = FINAL_STATES;
  const runAt: string | undefined = inv.run_at;
  const waiting: State = "scheduled";
  // @ts-expect-error: a scheduled invocation has not ended
  const notFinal: FinalState = "scheduled";
  const transport: "ws" | "rest" = client.transport;
  const base: string = client.baseUrl;

  try {
    await client.call("default", "demo.fail", {});
  } catch (err) {
    if (err instanceof AtasksError) {
      const fields: [string, string, unknown, boolean, number | undefined, Invocation | undefined] = [
        err.code,
        err.message,
        err.details,
        err.retryable,
        err.status,
        err.invocation,
      ];
      const name: "AtasksError" | "AbortError" = err.name;
      if (err.code === "bad_input") {
        const violations: InputViolation[] = (err.details as BadInputDetails | undefined)?.errors ?? [];
        const pointers: string[] = violations.map((v) => v.pointer + ": " + v.detail);
        return [fields, name, pointers, required, notSchema];
      }
      const e2: Error = AtasksError.fromInvocation(err.invocation ?? inv);
      return [fields, name, e2];
    }
  }
  client.close();
  return [sum, sums, out, done, cancelled, later, ns, servers, finals, runAt, waiting, notFinal, transport, base];
}
usage;
