// The gateway's page: pick a task from the catalog, call it, watch its
// states arrive. It uses the JS client (clients/js), served beside it.
import { AtasksClient, isFinal } from "./atasks-client.js";

// The page's own gateway; ?transport=rest (or ws) forces a transport. A
// gateway with tokens wants one: the page asks for it and keeps it in
// sessionStorage (this tab only), under TOKEN_KEY.
const TOKEN_KEY = "atasks.token";
const forced = new URLSearchParams(location.search).get("transport");
const client = new AtasksClient({
  ...(forced === "rest" || forced === "ws" ? { transport: forced } : {}),
  token: sessionStorage.getItem(TOKEN_KEY) || undefined,
});

// Inputs to start from, for the demo tasks.
const examples = {
  "demo.add": { a: 2, b: 3 },
  "demo.echo": { hello: "wörld ✓" },
  "demo.sleep": { ms: 3000, value: "done" },
  "demo.fib": { n: 10 },
  "demo.gather": { n: 5, ms: 300 },
  "demo.fail": { code: "out_of_stock", message: "no more widgets" },
};

const $ = (sel) => document.querySelector(sel);
const nsSel = $("#ns");
const taskSel = $("#task");
const input = $("#input");
const timeout = $("#timeout");
const formError = $("#form-error");
const calls = $("#calls");

function showTransport() {
  const t = client.transport;
  const pill = $("#transport");
  pill.textContent = t === "ws" ? "WebSocket" : "REST (long-poll)";
  pill.className = `pill ${t}`;
}

function showFormError(msg) {
  formError.textContent = msg;
  formError.hidden = !msg;
}

function option(value, text = value) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

async function loadNamespaces() {
  try {
    const nss = await client.namespaces();
    nsSel.replaceChildren(...nss.map((ns) => option(ns)));
    await loadTasks();
  } catch (err) {
    showFormError(`Cannot read the catalog: ${err.message}`);
    if (err.code === "unauthorized") askToken();
  }
}

// askToken shows the token form: the gateway wants a (valid) token.
function askToken() {
  const form = $("#token-form");
  form.hidden = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("#token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

async function loadTasks() {
  const ns = nsSel.value;
  try {
    const tasks = await client.tasks(ns);
    taskSel.replaceChildren(
      ...tasks.map((t) => option(t.name, t.servers === 1 ? t.name : `${t.name} (${t.servers} servers)`)),
    );
    showFormError("");
    fillExample();
  } catch (err) {
    taskSel.replaceChildren();
    showFormError(`Cannot list the tasks of ${ns}: ${err.message}`);
  }
}

function fillExample() {
  const ex = examples[taskSel.value];
  input.value = ex === undefined ? "null" : JSON.stringify(ex);
}

// json writes a value compactly when short, indented otherwise.
function json(v) {
  const s = JSON.stringify(v);
  return s !== undefined && s.length > 70 ? JSON.stringify(v, null, 2) : String(s);
}

function shortID(id) {
  return id ? id.slice(0, 8) + "…" : "";
}

// Card is one call on the page.
class Card {
  constructor(ns, task, value) {
    const li = $("#call-tpl").content.firstElementChild.cloneNode(true);
    this.li = li;
    this.ns = ns;
    this.ac = new AbortController();
    this.started = performance.now();
    li.dataset.task = task;
    li.querySelector(".name").textContent = ns === "default" ? task : `${ns} / ${task}`;
    const text = JSON.stringify(value);
    li.querySelector(".input").textContent = text.length > 80 ? text.slice(0, 79) + "…" : text;
    li.querySelector(".cancel").addEventListener("click", () => this.cancel());
    this.setState("queued", "sending");
    this.tick = setInterval(() => this.showElapsed(), 100);
    calls.prepend(li);
    $("#empty").hidden = true;
  }

  setState(state, label = state.replace("_", " ")) {
    this.li.dataset.state = state;
    const pill = this.li.querySelector(".state");
    pill.textContent = label;
    pill.className = `state pill ${state}`;
  }

  event(text, cls) {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    this.li.querySelector(".events").append(li);
  }

  showElapsed() {
    const ms = performance.now() - this.started;
    this.li.querySelector(".elapsed").textContent = ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  onState(e) {
    showTransport();
    if (this.ended) return;
    switch (e.type) {
      case "accepted":
        this.li.dataset.id = e.id;
        this.li.querySelector(".id").textContent = `id ${e.id}`;
        this.setState("queued");
        this.event("accepted");
        break;
      case "state":
        if (!this.cancelling) this.setState(e.state);
        if (e.state !== this.shownState || !e.child) {
          this.event(e.worker ? `${e.state} on ${e.worker}` : e.state);
          this.shownState = e.state;
        }
        if (e.child) this.event(`awaits ${shortID(e.child)}`, "child");
        break;
      case "result":
        this.end(e.invocation);
        break;
    }
  }

  cancel() {
    if (this.ended) return;
    this.cancelling = true;
    this.setState(this.li.dataset.state, "cancelling…");
    this.li.querySelector(".cancel").disabled = true;
    this.ac.abort();
  }

  // end shows the final invocation.
  end(inv) {
    if (this.ended) return;
    this.ended = true;
    this.finish();
    this.setState(inv.state);
    this.event(inv.state.replace("_", " "));
    if (inv.state === "succeeded") this.outcome(json(inv.result ?? null), "");
    else this.outcome(errorText(inv.error), inv.state === "failed" ? "bad" : "warn");
  }

  // fail shows an error that came without a final invocation: the gateway
  // refused the call, or it was cancelled before it was accepted.
  fail(err) {
    if (this.ended) return;
    this.ended = true;
    this.finish();
    const state = err.code === "cancelled" ? "cancelled" : "error";
    this.setState(state);
    this.event(state);
    this.outcome(errorText(err), state === "cancelled" ? "warn" : "bad");
  }

  finish() {
    clearInterval(this.tick);
    this.showElapsed();
    this.li.querySelector(".cancel").disabled = true;
  }

  outcome(text, cls) {
    const pre = this.li.querySelector(".outcome");
    pre.textContent = text;
    pre.className = `outcome ${cls}`;
    pre.hidden = false;
  }
}

function errorText(e) {
  if (!e) return "no error given";
  let s = `${e.code}: ${e.message}`;
  if (e.details !== undefined && e.details !== null && !e.status) s += `\n${json(e.details)}`;
  if (e.retryable) s += "\n(retryable)";
  return s;
}

async function submit(ev) {
  ev.preventDefault();
  showFormError("");
  let value;
  try {
    value = input.value.trim() === "" ? null : JSON.parse(input.value);
  } catch (err) {
    showFormError(`The input is not JSON: ${err.message}`);
    input.focus();
    return;
  }
  const ns = nsSel.value;
  const task = taskSel.value;
  if (!task) return;
  const card = new Card(ns, task, value);
  try {
    await client.call(ns, task, value, {
      signal: card.ac.signal,
      timeout: timeout.value.trim() || undefined,
      onState: (e) => card.onState(e),
    });
    // the "result" event has shown the outcome
  } catch (err) {
    if (err.invocation) card.end(err.invocation);
    else if (err.name === "AbortError" && card.li.dataset.id) {
      // the "result" event of the cancel will show the final state; should
      // it not come, say what we know
      setTimeout(() => card.fail(err), 5000);
    } else card.fail(err);
  } finally {
    showTransport();
  }
}

nsSel.addEventListener("change", loadTasks);
taskSel.addEventListener("change", fillExample);
$("#call-form").addEventListener("submit", submit);
$("#clear").addEventListener("click", () => {
  for (const li of [...calls.children]) {
    if (isFinal(li.dataset.state) || li.dataset.state === "error") li.remove();
  }
  $("#empty").hidden = calls.children.length > 0;
});

showTransport();
loadNamespaces();
