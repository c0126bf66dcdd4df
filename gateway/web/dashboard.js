// The gateway's dashboard: one WebSocket to /v1/ws subscribed with
// {"type":"monitor"} (docs/WEBSOCKET.md, "Monitoring"), rendered live:
// recent calls, each a row with its children collapsed under it, the call
// tree of the one clicked, the workers' slots and per-task counts with
// each task's input schema. It reconnects with backoff when the socket
// closes.
//
// Data flow: the feed's messages update the model (records, servers,
// tasks) and mark what changed; render() redraws at most every
// RENDER_EVERY ms; tick() only rewrites the durations of running
// invocations. The feed's snapshot merges in the gateway's own records,
// and says "unknown" of what may have ended unseen: this page shows
// states as the feed says them. The tasks' schemas come from the catalog
// (GET /v1/ns, GET /v1/ns/{ns}/tasks), read at each snapshot and whenever
// the workers serve other tasks.

const REF = "m";
const MAX_ROWS = 200; // rows of the invocations table, newest first
const MAX_RECORDS = 5000; // invocations kept for the trees; the oldest finished go first
const MAX_CHILDREN_SHOWN = 200; // per node of a tree
const RENDER_EVERY = 150; // ms
const TICK = 100; // ms
const BACKOFF_MIN = 500; // ms, doubling up to BACKOFF_MAX
const BACKOFF_MAX = 15_000;
const FINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const UNKNOWN = "unknown"; // in flight when last seen, and may have ended unseen

const $ = (sel) => document.querySelector(sel);
const connPill = $("#conn");
const feedError = $("#feed-error");
const invBody = $("#invocations tbody");
const treeBox = $("#tree");
const filterInput = $("#filter");
const rootsOnly = $("#roots");

// ---- model ----------------------------------------------------------

// records are the monitored invocations by id, in the order first seen
// (a Map keeps insertion order): {inv, v (bumped on change), seen (local
// ms when first seen), t (when it started, for the order of the table)}.
const records = new Map();
// kids indexes children by parent id from the children's own "parent",
// for children whose parent's record has not (yet) listed them.
const kids = new Map();
let servers = [];
let taskLines = [];
// catalog is the tasks the gateway serves, by ns + "\0" + name: {ns, name,
// schema: {input, output}}, as GET /v1/ns/{ns}/tasks lists them.
let catalog = new Map();
const openSchemas = new Set(); // tasks (ns + "\0" + name) whose schemas are shown whole
let selected = hashID();
const expanded = new Set(); // tree nodes opened by the user
const opened = new Set(); // rows of the invocations table opened, showing their children
let treeIDs = new Set(); // ids the tree shows now: a change to one redraws it

const changed = { invocations: false, tree: false, servers: false, tasks: false };

function isFinal(state) {
  return FINAL.has(state);
}

// inFlight: neither ended nor unknown.
function inFlight(state) {
  return !FINAL.has(state) && state !== UNKNOWN;
}

// hashID is the invocation #inv=<id> names, if any.
function hashID() {
  return location.hash.startsWith("#inv=") ? decodeURIComponent(location.hash.slice(5)) : null;
}

// invLink is a link to invocation id's tree: its id, shortened.
function invLink(id, cls = "inv-link") {
  const a = el("a", cls, id.slice(0, 8));
  a.href = `#inv=${encodeURIComponent(id)}`;
  a.title = `Show the tree of ${id}`;
  return a;
}

function upsert(inv) {
  if (!inv || typeof inv.id !== "string" || !inv.id) return;
  const r = records.get(inv.id);
  if (r) {
    // "the whole record again, latest state": never step back from an end
    if (isFinal(r.inv.state) && !isFinal(inv.state)) return;
    r.inv = inv;
    r.v++;
    r.t = startOf(r);
  } else {
    const r = { inv, v: 0, seen: Date.now() };
    r.t = startOf(r);
    records.set(inv.id, r);
  }
  if (inv.parent) {
    let set = kids.get(inv.parent);
    if (!set) kids.set(inv.parent, (set = new Set()));
    if (!set.has(inv.id)) {
      set.add(inv.id);
      const p = records.get(inv.parent);
      if (p) p.v++; // its row counts its children
    }
  }
  changed.invocations = true;
  if (treeIDs.has(inv.id) || (inv.parent && treeIDs.has(inv.parent)) || inv.id === selected) changed.tree = true;
}

// startOf is when r started by the worker's clock, else when it showed
// here: [ms since the epoch, ns within the ms] (a child often starts in the
// same ms as its parent; started_at has ns).
function startOf(r) {
  const s = r.inv.started_at;
  const t = Date.parse(s);
  if (Number.isNaN(t)) return [r.seen, 0];
  const frac = typeof s === "string" ? /\.(\d+)/.exec(s) : null;
  const ns = frac ? Number(frac[1].padEnd(9, "0").slice(3, 9)) : 0;
  return [t, ns];
}

// evict keeps records under MAX_RECORDS, dropping the oldest finished.
function evict() {
  if (records.size <= MAX_RECORDS) return;
  const target = Math.floor(MAX_RECORDS * 0.9);
  for (const [id, r] of records) {
    if (records.size <= target) break;
    if (inFlight(r.inv.state) || id === selected) continue;
    records.delete(id);
    kids.delete(id);
    if (r.inv.parent) kids.get(r.inv.parent)?.delete(id);
  }
}

// childrenOf lists a record's children: the ids it reported, in the order
// they started, then any other record naming it as parent.
function childrenOf(id) {
  const out = [];
  const seen = new Set();
  for (const c of records.get(id)?.inv.children ?? []) {
    if (typeof c === "string" && !seen.has(c)) {
      seen.add(c);
      out.push(c);
    }
  }
  for (const c of kids.get(id) ?? []) {
    if (!seen.has(c)) {
      seen.add(c);
      out.push(c);
    }
  }
  return out;
}

// durationMs is how long an invocation ran, or has been running so far
// (by this browser's clock against the worker's started_at).
function durationMs(r) {
  if (!r) return null;
  const inv = r.inv;
  if (typeof inv.duration_ms === "number") return inv.duration_ms;
  const start = Date.parse(inv.started_at);
  if (inv.finished_at && !Number.isNaN(start)) return Date.parse(inv.finished_at) - start;
  if (isFinal(inv.state)) return null;
  if (inv.state !== "running") return null;
  const now = Date.now();
  if (!Number.isNaN(start) && now >= start) return now - start;
  return now - r.seen; // a clock behind the worker's: count from when it showed here
}

// ---- formatting -----------------------------------------------------

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  ms = Math.max(0, ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function fmtTime(iso, ms = false) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  const hms = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return ms ? `${hms}.${p(d.getMilliseconds(), 3)}` : hms;
}

function fmtRate(rate) {
  if (typeof rate !== "number" || !Number.isFinite(rate)) return "";
  return rate >= 100 ? `${Math.round(rate)}/s` : `${rate.toFixed(1)}/s`;
}

function stateLabel(state) {
  return String(state ?? "unknown").replace("_", " ");
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function statePill(state) {
  const pill = el("span", `state pill ${state ?? ""}`, stateLabel(state));
  if (state === UNKNOWN) pill.title = "In flight when last seen; it may have ended while no dashboard watched, and the gateway cannot say how";
  return pill;
}

// durSpan is a duration that tick() keeps current while it runs.
function durSpan(id, cls = "dur") {
  const s = el("span", cls);
  s.dataset.id = id;
  setDur(s, records.get(id));
  return s;
}

function setDur(span, r) {
  span.textContent = fmtDuration(durationMs(r));
  span.classList.toggle("live", r?.inv.state === "running");
}

// ---- the invocations table -----------------------------------------
//
// Top-level calls, newest first, each with its children collapsed under
// it (opened by its toggle, or to show the invocation selected); with
// "Top-level only" unchecked, or a filter, every invocation, flat.

const rows = new Map(); // id -> <tr>
const moreRows = new Map(); // parent id -> <tr> saying how many children are not shown
const INDENT = (depth) => 5 + depth * 18; // px, a task cell's left padding at depth

function matches(inv, q) {
  if (!q) return true;
  return [inv.task, inv.ns, inv.state, inv.worker, inv.id, inv.error_code].some(
    (v) => typeof v === "string" && v.toLowerCase().includes(q),
  );
}

// isTop: called from outside any task, or by one this page has not seen.
function isTop(r) {
  return !r.inv.parent || !records.has(r.inv.parent);
}

function renderInvocations() {
  const q = filterInput.value.trim().toLowerCase();
  const nested = rootsOnly.checked && !q;
  // newest first: by start, then by when it showed here
  const all = [...records.values()].reverse().sort((a, b) => b.t[0] - a.t[0] || b.t[1] - a.t[1]);
  const lines = []; // {id, depth, parent} or {more, depth, parent}
  let listed = 0;
  let of = 0;
  for (const r of all) {
    if (nested ? !isTop(r) : !matches(r.inv, q)) continue;
    of++;
    if (lines.length >= MAX_ROWS) continue;
    listed++;
    lines.push({ id: r.inv.id, depth: 0 });
    if (nested && opened.has(r.inv.id)) childLines(lines, r.inv.id, 1, new Set([r.inv.id]));
  }
  const trs = lines.map((l) => (l.more ? moreRow(l) : rowFor(l, nested)));
  const keep = new Set(lines.map((l) => l.id ?? `more\0${l.parent}`));
  for (const id of rows.keys()) if (!keep.has(id)) rows.delete(id);
  for (const p of moreRows.keys()) if (!keep.has(`more\0${p}`)) moreRows.delete(p);
  const current = invBody.children;
  if (current.length !== trs.length || trs.some((tr, i) => current[i] !== tr)) invBody.replaceChildren(...trs);
  $("#inv-empty").hidden = trs.length > 0;
  $("#inv-empty").textContent = records.size ? "Nothing matches the filter." : "No invocations yet: call a task and it shows here.";
  const more = of > listed ? ` · newest ${listed} of ${of}${nested ? " calls" : ""}` : "";
  $("#inv-sum").textContent = `${flightCount()} in flight${more}`;
}

// childLines adds the lines of parent's children, and of theirs if opened.
function childLines(lines, parent, depth, ancestors) {
  const children = childrenOf(parent);
  for (const c of children.slice(0, MAX_CHILDREN_SHOWN)) {
    if (lines.length >= MAX_ROWS) return;
    lines.push({ id: c, depth, parent });
    if (opened.has(c) && records.has(c) && !ancestors.has(c) && depth < 30) {
      childLines(lines, c, depth + 1, new Set([...ancestors, c]));
    }
  }
  if (children.length > MAX_CHILDREN_SHOWN && lines.length < MAX_ROWS) {
    lines.push({ more: children.length - MAX_CHILDREN_SHOWN, depth, parent });
  }
}

// flightCount is how many invocations are in flight: as the gateway
// counts them (its tasks lines), else as this page sees them.
function flightCount() {
  let n = null;
  for (const t of taskLines) if (typeof t?.in_flight === "number") n = (n ?? 0) + t.in_flight;
  if (n !== null) return n;
  n = 0;
  for (const r of records.values()) if (inFlight(r.inv.state)) n++;
  return n;
}

function rowFor(line, nested) {
  const { id, depth } = line;
  const r = records.get(id);
  const inv = r?.inv ?? { id, parent: line.parent };
  let tr = rows.get(id);
  if (!tr) {
    tr = el("tr");
    tr.dataset.id = id;
    tr.tabIndex = 0;
    tr.append(
      el("td", "task"),
      el("td", "ns"),
      el("td", "state"),
      el("td", "worker"),
      durSpanCell(id),
      el("td", "error"),
      el("td", "started num"),
      el("td", "id"),
    );
    rows.set(id, tr);
  }
  tr.classList.toggle("selected", id === selected);
  const n = childrenOf(id).length;
  const open = nested && n > 0 && opened.has(id);
  const key = `${r ? r.v : "-"}|${nested}|${depth}|${n}|${open}`;
  if (tr.key === key) return tr;
  tr.key = key;
  tr.dataset.task = inv.task ?? "";
  tr.dataset.ns = inv.ns ?? "";
  tr.dataset.state = inv.state ?? "";
  tr.dataset.depth = String(depth);
  tr.dataset.parent = inv.parent ?? "";
  tr.title = r ? `${inv.task} ${id}` : `${id}: not seen by this dashboard (yet)`;
  if (nested && n) tr.setAttribute("aria-expanded", String(open));
  else tr.removeAttribute("aria-expanded");
  const [task, ns, state, worker, dur, error, started, idCell] = tr.children;
  task.replaceChildren();
  task.style.paddingLeft = depth ? `${INDENT(depth)}px` : "";
  if (nested) {
    if (n) {
      const t = el("button", "toggle", open ? "▾" : "▸");
      t.type = "button";
      t.tabIndex = -1; // the row takes the keys: → opens, ← closes
      t.dataset.action = "toggle";
      t.setAttribute("aria-expanded", String(open));
      t.setAttribute("aria-label", `${open ? "Hide" : "Show"} its ${n} child${n === 1 ? "" : "ren"}`);
      task.append(t);
    } else {
      task.append(el("span", "toggle-space"));
    }
  }
  if (inv.parent && (!nested || depth === 0)) {
    const mark = el("span", "nested", "↳ ");
    mark.title = records.has(inv.parent) ? `called by ${records.get(inv.parent).inv.task} ${inv.parent}` : `called by ${inv.parent}, not seen here`;
    task.append(mark);
  }
  if (r) task.append(el("span", "name", inv.task ?? "?"));
  else task.append(el("span", "name unseen", "not seen"));
  if (n) task.append(el("span", "kids", `${n} child${n === 1 ? "" : "ren"}`));
  ns.textContent = inv.ns ?? "";
  state.replaceChildren(r ? statePill(inv.state) : "");
  worker.textContent = inv.worker ?? "";
  worker.title = inv.worker ?? "";
  setDur(dur, r);
  error.textContent = inv.error_code ?? "";
  error.title = inv.error_code ?? "";
  started.textContent = fmtTime(inv.started_at);
  idCell.replaceChildren(invLink(id));
  return tr;
}

// moreRow says how many of a parent's children the table leaves out.
function moreRow(line) {
  let tr = moreRows.get(line.parent);
  if (!tr) {
    tr = el("tr", "more");
    tr.append(el("td"));
    tr.firstChild.colSpan = 8;
    moreRows.set(line.parent, tr);
  }
  tr.firstChild.style.paddingLeft = `${INDENT(line.depth) + 16}px`;
  tr.firstChild.textContent = `… and ${line.more} more: the call tree lists them`;
  return tr;
}

function durSpanCell(id) {
  const td = el("td", "dur num");
  td.dataset.id = id;
  return td;
}

function rowEvent(ev) {
  if (ev.target.closest("a")) return; // a link to a tree: hashchange selects it
  const tr = ev.target.closest("tr[data-id]");
  if (!tr) return;
  const id = tr.dataset.id;
  if (ev.type === "click" && ev.target.closest("button[data-action='toggle']")) {
    toggleRow(id, !opened.has(id));
    return;
  }
  if (ev.type === "keydown") {
    if ((ev.key === "ArrowRight" || ev.key === "ArrowLeft") && tr.hasAttribute("aria-expanded")) {
      ev.preventDefault();
      toggleRow(id, ev.key === "ArrowRight");
      return;
    }
    if (ev.key !== "Enter" && ev.key !== " ") return;
  }
  ev.preventDefault();
  select(id === selected && ev.type === "click" ? null : id);
}

function toggleRow(id, open) {
  if (open) opened.add(id);
  else opened.delete(id);
  changed.invocations = true;
  render();
}

// reveal opens the rows above invocation id, so that the table shows it.
function reveal(id) {
  const guard = new Set();
  for (let p = records.get(id)?.inv.parent; p && records.has(p) && !guard.has(p) && guard.size < 50; p = records.get(p).inv.parent) {
    guard.add(p);
    opened.add(p);
  }
}

// ---- the call tree --------------------------------------------------

function select(id) {
  selected = id;
  if (id) reveal(id);
  history.replaceState(null, "", id ? `#inv=${encodeURIComponent(id)}` : location.pathname + location.search);
  changed.tree = true;
  changed.invocations = true; // the selected row's highlight
  for (const [rid, tr] of rows) tr.classList.toggle("selected", rid === id);
  render();
}

// goButton is a link-like button that selects invocation id; it names the
// namespace when it is not ns (a call across namespaces).
function goButton(id, cls = "go", ns = undefined) {
  const r = records.get(id);
  const b = el("button", cls);
  b.type = "button";
  b.dataset.id = id;
  if (r) {
    if (ns !== undefined && r.inv.ns !== ns) b.append(el("span", "other-ns", `${r.inv.ns} / `));
    b.append(el("span", "name", r.inv.task ?? "?"));
    b.title = `Show the tree of ${r.inv.task} ${id}`;
  } else {
    b.classList.add("unseen");
    b.append(el("span", "id", id), el("span", "note", "not seen"));
    b.title = `${id}: not seen by this dashboard (yet)`;
  }
  return b;
}

function renderTree() {
  const ids = new Set();
  const focus = document.activeElement?.closest?.("#tree [data-id]");
  const focusKey = focus ? `${focus.className}|${focus.dataset.id}` : null;
  $("#tree-close").hidden = !selected;
  if (!selected) {
    treeBox.replaceChildren(el("p", "empty", "Click an invocation to see its parent and children."));
    treeIDs = ids;
    return;
  }
  const id = selected;
  ids.add(id);
  const r = records.get(id);
  const box = el("div", "tree-sel");
  box.dataset.id = id;
  box.dataset.state = r?.inv.state ?? "";

  // up: the ancestors, root first
  const chain = [];
  const guard = new Set([id]);
  for (let p = r?.inv.parent; p && !guard.has(p) && chain.length < 50; p = records.get(p)?.inv.parent) {
    guard.add(p);
    chain.unshift(p);
    ids.add(p);
    if (!records.has(p)) break;
  }
  const path = el("nav", "path");
  path.setAttribute("aria-label", "Ancestors");
  if (chain.length) {
    path.append(el("span", "label", "Called by"));
    chain.forEach((p, i) => {
      if (i) path.append(el("span", "sep", "›"));
      path.append(goButton(p, i === chain.length - 1 ? "go parent" : "go", r?.inv.ns));
    });
  } else {
    path.append(el("span", "label", r ? "Top-level: called from outside any task" : ""));
  }
  box.append(path);

  // the invocation itself
  const card = el("div", "sel-card");
  const head = el("div", "sel-head");
  if (r) {
    head.append(el("span", "name", r.inv.task ?? "?"), statePill(r.inv.state), durSpan(id, "dur elapsed"));
    card.append(head);
    const facts = el("dl", "facts");
    const fact = (k, v, cls) => {
      if (v === undefined || v === null || v === "") return;
      facts.append(el("dt", "", k), el("dd", cls ?? "", String(v)));
    };
    fact("ns", r.inv.ns);
    fact("id", id, "mono");
    fact("worker", r.inv.worker, "mono");
    fact("started", fmtTime(r.inv.started_at, true));
    fact("finished", fmtTime(r.inv.finished_at, true));
    fact("error", r.inv.error_code, "mono bad");
    card.append(facts);
  } else {
    head.append(el("span", "name mono", id), el("span", "note", "not seen by this dashboard (yet)"));
    card.append(head);
  }
  box.append(card);

  // down: the children, each expandable
  const children = childrenOf(id);
  const ch = el("div", "children-head");
  ch.append(el("h3", "", children.length ? `Children (${children.length})` : "Children"));
  if (children.some((c) => childrenOf(c).length)) {
    const all = el("button", "quiet expand-all", "Expand all");
    all.type = "button";
    all.dataset.action = "expand-all";
    ch.append(all);
  }
  box.append(ch);
  if (children.length) box.append(treeList(children, ids, new Set([id]), 0, r?.inv.ns));
  else box.append(el("p", "empty", r && !isFinal(r.inv.state) ? "No children so far." : "No children: a leaf."));

  treeBox.replaceChildren(box);
  treeIDs = ids;
  if (focusKey) {
    for (const e of treeBox.querySelectorAll("[data-id]")) {
      if (`${e.className}|${e.dataset.id}` === focusKey) {
        e.focus();
        break;
      }
    }
  }
}

function treeList(children, ids, ancestors, depth, ns) {
  const ul = el("ul", "tree");
  for (const c of children.slice(0, MAX_CHILDREN_SHOWN)) {
    ids.add(c);
    const r = records.get(c);
    const li = el("li", "node");
    li.dataset.id = c;
    li.dataset.state = r?.inv.state ?? "unseen";
    const row = el("div", "node-row");
    const grand = r && !ancestors.has(c) ? childrenOf(c) : [];
    const open = grand.length > 0 && expanded.has(c) && depth < 30;
    if (grand.length) {
      const t = el("button", "toggle", open ? "▾" : "▸");
      t.type = "button";
      t.dataset.id = c;
      t.dataset.action = "toggle";
      t.setAttribute("aria-expanded", String(open));
      t.setAttribute("aria-label", `${open ? "Collapse" : "Expand"} its ${grand.length} children`);
      row.append(t);
    } else {
      row.append(el("span", "toggle-space"));
    }
    row.append(goButton(c, "go", ns));
    if (r) {
      row.append(statePill(r.inv.state), durSpan(c));
      if (grand.length) row.append(el("span", "kids", `${grand.length} child${grand.length === 1 ? "" : "ren"}`));
      if (r.inv.error_code) row.append(el("span", "err", r.inv.error_code));
      row.append(invLink(c, "id"));
    }
    li.append(row);
    if (open) {
      const next = new Set(ancestors);
      next.add(c);
      li.append(treeList(grand, ids, next, depth + 1, r.inv.ns));
    }
    ul.append(li);
  }
  if (children.length > MAX_CHILDREN_SHOWN) ul.append(el("li", "more", `… and ${children.length - MAX_CHILDREN_SHOWN} more`));
  return ul;
}

function treeEvent(ev) {
  const b = ev.target.closest("button[data-id], button[data-action]");
  if (!b) return;
  switch (b.dataset.action) {
    case "toggle":
      if (expanded.has(b.dataset.id)) expanded.delete(b.dataset.id);
      else expanded.add(b.dataset.id);
      changed.tree = true;
      render();
      return;
    case "expand-all": {
      // open every descendant, up to a bound
      const stack = [...childrenOf(selected)];
      const seen = new Set([selected]);
      while (stack.length && seen.size < 1000) {
        const c = stack.pop();
        if (seen.has(c)) continue;
        seen.add(c);
        const g = childrenOf(c);
        if (g.length) {
          expanded.add(c);
          stack.push(...g);
        }
      }
      changed.tree = true;
      render();
      return;
    }
    default:
      select(b.dataset.id);
  }
}

// ---- workers and tasks ----------------------------------------------

const workerCards = new Map(); // ns + "\0" + id -> <li>

function renderServers() {
  const list = servers
    .filter((s) => s && typeof s === "object")
    .sort((a, b) => cmp(a.ns, b.ns) || cmp(a.worker || a.id, b.worker || b.id) || cmp(a.id, b.id));
  const tpl = $("#worker-tpl").content.firstElementChild;
  const cards = [];
  // A worker process has one pool of compute slots for all the namespaces
  // it serves, each of which lists it as a server: count a pool once.
  const pools = new Map();
  for (const s of list) {
    const key = `${s.ns}\0${s.id}`;
    let li = workerCards.get(key);
    if (!li) {
      li = tpl.cloneNode(true);
      workerCards.set(key, li);
    }
    const b = Math.max(0, Number(s.busy) || 0);
    const n = Math.max(0, Number(s.size) || 0); // 0: unbounded
    pools.set(s.worker || `${s.ns}\0${s.id}`, { b, n });
    li.dataset.ns = s.ns ?? "";
    li.dataset.worker = s.worker ?? "";
    li.dataset.busy = String(b);
    li.dataset.size = String(n);
    li.querySelector(".ns").textContent = s.ns ?? "";
    const name = li.querySelector(".wname");
    name.textContent = s.worker || s.id || "?";
    name.title = s.id && s.worker ? `${s.worker} (server ${s.id})` : name.textContent;
    const bar = li.querySelector(".slots");
    bar.querySelector(".busy").style.width = n ? `${Math.min(100, (b / n) * 100)}%` : "0";
    bar.classList.toggle("some", b > 0);
    bar.classList.toggle("full", n > 0 && b >= n);
    bar.classList.toggle("unbounded", n === 0);
    bar.setAttribute("aria-label", n ? `${b} of ${n} slots busy` : `${b} busy, no bound`);
    li.querySelector(".slots-text").textContent = n
      ? `${b} busy · ${Math.max(0, n - b)} free · ${n} slot${n === 1 ? "" : "s"}`
      : `${b} busy · unbounded`;
    const tasks = Array.isArray(s.tasks) ? s.tasks.map(String).sort() : [];
    const served = li.querySelector(".served");
    served.replaceChildren(el("span", "served-label", `${tasks.length} task${tasks.length === 1 ? "" : "s"}:`));
    served.title = tasks.join("\n");
    for (const t of tasks.slice(0, 12)) served.append(el("span", "chip", t));
    if (tasks.length > 12) served.append(el("span", "chip more", `+${tasks.length - 12}`));
    cards.push(li);
  }
  const keep = new Set(list.map((s) => `${s.ns}\0${s.id}`));
  for (const k of workerCards.keys()) if (!keep.has(k)) workerCards.delete(k);
  $("#workers").replaceChildren(...cards);
  $("#workers-empty").hidden = cards.length > 0;
  let busy = 0;
  let size = 0;
  let unbounded = false;
  for (const p of pools.values()) {
    busy += p.b;
    size += p.n;
    unbounded ||= p.n === 0;
  }
  const procs = pools.size === cards.length ? "" : ` on ${pools.size} worker${pools.size === 1 ? "" : "s"}`;
  $("#workers-sum").textContent = cards.length
    ? `${cards.length} server${cards.length === 1 ? "" : "s"}${procs} · ${busy} of ${unbounded ? "∞" : size} slots busy`
    : "";
}

const taskRows = new Map(); // ns + "\0" + task -> <tr>
const schemaRows = new Map(); // ns + "\0" + task -> the <tr> under it showing its schemas whole

// renderTasks lists every task the gateway serves or has seen run: its
// counts, and under its name a summary of its input (and result) schema,
// which opens to the JSON Schemas whole.
function renderTasks() {
  const lines = new Map();
  for (const t of taskLines) if (t && typeof t === "object") lines.set(`${t.ns}\0${t.task}`, t);
  for (const [key, c] of catalog) {
    if (!lines.has(key)) lines.set(key, { ns: c.ns, task: c.name, in_flight: 0, rate: 0, ended: 0, failed: 0 });
  }
  const list = [...lines.values()].sort((a, b) => cmp(a.ns, b.ns) || cmp(a.task, b.task));
  const trs = [];
  let schemas = 0;
  for (const t of list) {
    const key = `${t.ns}\0${t.task}`;
    let tr = taskRows.get(key);
    if (!tr) {
      tr = el("tr");
      tr.dataset.ns = t.ns ?? "";
      tr.dataset.task = t.task ?? "";
      const task = el("td", "task");
      task.append(el("span", "tname", t.task ?? ""));
      tr.append(el("td", "ns", t.ns ?? ""), task, el("td", "flight num"), el("td", "rate num"), el("td", "ended num"), el("td", "failed num"));
      taskRows.set(key, tr);
    }
    const [, task, flight, rate, ended, failed] = tr.children;
    const schema = catalog.get(key)?.schema;
    const open = !!schema && openSchemas.has(key);
    setSignature(task, key, schema, open);
    if (schema) schemas++;
    flight.textContent = String(t.in_flight ?? "");
    flight.classList.toggle("zero", !(t.in_flight > 0));
    rate.textContent = fmtRate(t.rate);
    rate.classList.toggle("zero", !(t.rate > 0));
    bumpText(ended, String(t.ended ?? 0));
    bumpText(failed, String(t.failed ?? 0));
    failed.classList.toggle("bad", (t.failed ?? 0) > 0);
    trs.push(tr);
    if (open) trs.push(schemaRow(key, t, schema));
  }
  for (const k of taskRows.keys()) if (!lines.has(k)) taskRows.delete(k);
  for (const k of schemaRows.keys()) if (!lines.has(k) || !openSchemas.has(k)) schemaRows.delete(k);
  const body = $("#tasks tbody");
  if (body.children.length !== trs.length || trs.some((tr, i) => body.children[i] !== tr)) body.replaceChildren(...trs);
  $("#tasks-empty").hidden = trs.length > 0;
  $("#tasks-legend").hidden = schemas === 0;
}

// setSignature shows, under a task's name, its schema's summary as a
// button that opens the schemas whole; nothing when the catalog has none.
function setSignature(td, key, schema, open) {
  const text = schema ? JSON.stringify(schema) : "";
  let sig = td.querySelector(":scope > button.sig");
  if (td.dataset.schema !== text) {
    td.dataset.schema = text;
    sig?.remove();
    sig = null;
    if (schema) {
      sig = el("button", "sig");
      sig.type = "button";
      sig.dataset.action = "schema";
      sig.dataset.key = key;
      sig.append(signature(schema.input, "input"), el("span", "arrow", " → "), signature(schema.output, "output"));
      td.append(sig);
    }
  }
  if (!sig) return;
  const name = key.replace("\0", " / ");
  sig.setAttribute("aria-expanded", String(open));
  sig.title = `${open ? "Hide" : "Show"} the JSON Schemas of ${name}'s input and result`;
}

// schemaRow is the row under a task's that shows its schemas whole.
function schemaRow(key, t, schema) {
  let tr = schemaRows.get(key);
  if (tr && tr.dataset.schema === JSON.stringify(schema)) return tr;
  tr = el("tr", "schema-row");
  tr.dataset.ns = t.ns ?? "";
  tr.dataset.task = t.task ?? "";
  tr.dataset.schema = JSON.stringify(schema);
  const td = el("td");
  td.colSpan = 6;
  for (const part of ["input", "output"]) {
    const block = el("div", `schema-part ${part}`);
    block.append(el("div", "schema-label", part === "input" ? "Input, checked before a call is queued" : "Result"));
    block.append(el("pre", "schema-json", JSON.stringify(schema[part] ?? {}, null, 2)));
    td.append(block);
  }
  tr.append(td);
  schemaRows.set(key, tr);
  return tr;
}

// signature summarizes a JSON Schema in a line: an object's fields with
// their types, the required ones marked *, "…" when others are allowed;
// any other schema, its type.
function signature(schema, part) {
  const box = el("span", `schema-sum ${part}`);
  const s = deref(schema, schema);
  const props = s && typeof s === "object" && s.properties && typeof s.properties === "object" ? Object.entries(s.properties) : null;
  if (!props || (s.type !== undefined && s.type !== "object")) {
    const type = typeName(schema, schema);
    box.append(el("span", "ftype", type));
    box.dataset.type = type;
    return box;
  }
  const required = new Set(Array.isArray(s.required) ? s.required : []);
  box.dataset.type = "object";
  box.append(el("span", "brace", "{"));
  props.forEach(([name, p], i) => {
    const type = typeName(p, schema);
    const req = required.has(name);
    const f = el("span", req ? "field req" : "field");
    f.dataset.field = name;
    f.dataset.type = type;
    f.dataset.required = String(req);
    f.title = `${name}: ${type}, ${req ? "required" : "optional"}${p && typeof p === "object" && p.description ? ` — ${p.description}` : ""}`;
    f.append(el("span", "fname", name));
    if (req) f.append(el("span", "star", "*"));
    f.append(el("span", "colon", ": "), el("span", "ftype", type));
    if (i) box.append(el("span", "comma", ", "));
    box.append(f);
  });
  if (s.additionalProperties !== false) box.append(el("span", "more", props.length ? ", …" : "…"));
  box.append(el("span", "brace", "}"));
  return box;
}

// deref follows a "#/$defs/…" reference of schema within root.
function deref(schema, root, depth = 0) {
  if (!schema || typeof schema !== "object" || typeof schema.$ref !== "string" || depth > 8) return schema;
  const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(schema.$ref);
  const target = m ? root?.[m[1]]?.[m[2].replaceAll("~1", "/").replaceAll("~0", "~")] : undefined;
  return target === undefined ? schema : deref(target, root, depth + 1);
}

// typeName names a schema's type briefly: "integer", "string[]",
// "string | null", a $ref's name, an enum's values, "any".
function typeName(schema, root, depth = 0) {
  if (schema === true) return "any";
  if (schema === false) return "nothing";
  if (!schema || typeof schema !== "object" || depth > 4) return "any";
  if (typeof schema.$ref === "string") return schema.$ref.split("/").pop();
  if ("const" in schema) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) {
    const vs = schema.enum.slice(0, 4).map((v) => JSON.stringify(v));
    return vs.join(" | ") + (schema.enum.length > 4 ? " | …" : "");
  }
  const alts = schema.anyOf ?? schema.oneOf;
  if (Array.isArray(alts)) return alts.map((a) => typeName(a, root, depth + 1)).join(" | ");
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  if (!types.length) return schema.properties ? "object" : "any";
  return types
    .map((t) => (t === "array" ? `${schema.items === undefined ? "any" : typeName(schema.items, root, depth + 1)}[]` : String(t)))
    .join(" | ");
}

function tasksEvent(ev) {
  const b = ev.target.closest("button[data-action='schema']");
  if (!b) return;
  const key = b.dataset.key;
  if (openSchemas.has(key)) openSchemas.delete(key);
  else openSchemas.add(key);
  changed.tasks = true;
  render();
}

// ---- the catalog: each task's schemas --------------------------------

let catalogLoad = null; // the load under way
let catalogServed = null; // the served tasks (servedKey) when last loaded

// loadCatalog reads the tasks of every namespace the gateway lists, with
// the token the call page keeps, if any. A namespace it cannot read keeps
// what was known of it; a failure leaves the summaries as they were.
function loadCatalog() {
  if (catalogLoad) return catalogLoad;
  catalogServed = servedKey();
  catalogLoad = (async () => {
    try {
      const { namespaces } = await getJSON("/v1/ns");
      const lists = await Promise.all(
        (Array.isArray(namespaces) ? namespaces : []).map((ns) =>
          getJSON(`/v1/ns/${encodeURIComponent(ns)}/tasks`).then(
            (b) => ({ ns, tasks: Array.isArray(b?.tasks) ? b.tasks : [] }),
            () => ({ ns, tasks: null }),
          ),
        ),
      );
      const next = new Map();
      for (const { ns, tasks } of lists) {
        if (tasks === null) {
          for (const [k, v] of catalog) if (v.ns === ns) next.set(k, v);
          continue;
        }
        for (const t of tasks) {
          if (t && typeof t.name === "string") next.set(`${ns}\0${t.name}`, { ns, name: t.name, schema: t.schema && typeof t.schema === "object" ? t.schema : null });
        }
      }
      catalog = next;
      changed.tasks = true;
      scheduleRender();
    } catch {
      // the summaries stay as they were; the next snapshot tries again
    } finally {
      catalogLoad = null;
    }
  })();
  return catalogLoad;
}

// servedKey names the tasks the workers serve now, as the feed says.
function servedKey() {
  const keys = [];
  for (const s of servers) {
    if (s && Array.isArray(s.tasks)) for (const t of s.tasks) keys.push(`${s.ns}\0${t}`);
  }
  return [...new Set(keys)].sort().join("\n");
}

function getJSON(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("atasks.token");
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(path, { headers, cache: "no-store" }).then((res) => {
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return res.json();
  });
}

// bumpText sets a count, flashing it when it changed.
function bumpText(td, text) {
  if (td.textContent === text) return;
  const first = td.textContent === "";
  td.textContent = text;
  if (first) return;
  td.classList.remove("bump");
  void td.offsetWidth; // restart the animation
  td.classList.add("bump");
}

function cmp(a, b) {
  return String(a ?? "").localeCompare(String(b ?? ""));
}

// ---- rendering ------------------------------------------------------

let renderTimer = 0;
let lastRender = 0;

function scheduleRender() {
  if (renderTimer) return;
  const wait = Math.max(0, RENDER_EVERY - (performance.now() - lastRender));
  renderTimer = setTimeout(render, wait);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = 0;
  lastRender = performance.now();
  evict();
  if (changed.invocations) renderInvocations();
  if (changed.tree) renderTree();
  if (changed.servers) renderServers();
  if (changed.tasks) renderTasks();
  changed.invocations = changed.tree = changed.servers = changed.tasks = false;
}

// tick moves the durations of running invocations on.
function tick() {
  for (const s of document.querySelectorAll(".dur.live")) setDur(s, records.get(s.dataset.id));
}

// ---- the feed -------------------------------------------------------

let ws = null;
let attempt = 0; // reconnects since the last snapshot
let retryTimer = 0;
let countdown = 0;

function setConn(state, text) {
  connPill.dataset.state = state;
  connPill.className = `pill conn-${state}`;
  connPill.textContent = text;
}

function showFeedError(text) {
  feedError.textContent = text;
  feedError.hidden = !text;
}

// wsProtocols offers the token the call page keeps in sessionStorage (a
// gateway with tokens wants one; browsers cannot send headers on a
// WebSocket) as the subprotocol bearer.<base64url>, beside "atasks".
function wsProtocols() {
  const token = sessionStorage.getItem("atasks.token");
  if (!token) return ["atasks"];
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(token)));
  return ["atasks", "bearer." + b64.replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "")];
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  setConn("connecting", "connecting…");
  const url = new URL("/v1/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let sock;
  try {
    sock = new WebSocket(url, wsProtocols());
  } catch (err) {
    showFeedError(`Cannot open ${url}: ${err.message}`);
    reconnectLater();
    return;
  }
  ws = sock;
  sock.addEventListener("open", () => {
    setConn("connecting", "subscribing…");
    sock.send(JSON.stringify({ type: "monitor", ref: REF }));
  });
  sock.addEventListener("message", (ev) => {
    if (ws !== sock || typeof ev.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg && typeof msg === "object") onMessage(msg, sock);
  });
  sock.addEventListener("close", (ev) => {
    if (ws !== sock) return;
    ws = null;
    if (ev.code !== 1000 && ev.code !== 1005 && ev.code !== 1006) {
      showFeedError(`The gateway closed the feed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""}).`);
    }
    reconnectLater();
  });
}

function reconnectLater() {
  const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** attempt) * (0.8 + Math.random() * 0.4);
  attempt++;
  const at = Date.now() + delay;
  const show = () => setConn("reconnecting", `reconnecting in ${Math.max(1, Math.ceil((at - Date.now()) / 1000))} s`);
  show();
  clearInterval(countdown);
  countdown = setInterval(show, 1000);
  retryTimer = setTimeout(connect, delay);
}

function onMessage(msg, sock) {
  switch (msg.type) {
    case "snapshot":
      if (msg.ref !== REF) return;
      attempt = 0;
      showFeedError("");
      setConn("live", "live");
      onSnapshot(msg);
      break;
    case "activity":
      if (msg.ref !== REF) return;
      upsert(msg.invocation);
      break;
    case "stats":
      if (msg.ref !== REF) return;
      setStats(msg);
      break;
    case "error": {
      if (msg.ref !== undefined && msg.ref !== REF) return;
      const e = msg.error ?? {};
      const what = e.code === "unknown_type" ? "This gateway has no monitor feed" : "The gateway refused the monitor feed";
      showFeedError(`${what}: ${e.code ?? "error"}: ${e.message ?? ""}`);
      if (e.retryable) {
        setConn("reconnecting", "retrying…");
        const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** attempt++);
        retryTimer = setTimeout(() => {
          if (ws === sock && sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: "monitor", ref: REF }));
        }, delay);
      } else {
        setConn("error", "no feed");
      }
      break;
    }
    // a ref of ours ended some other way, or a type this page does not know: ignore
  }
  scheduleRender();
}

function onSnapshot(msg) {
  const fresh = Array.isArray(msg.invocations) ? msg.invocations : [];
  // After a reconnect: what ended stays, what was in flight and is not in
  // the snapshot is stale (its end may have been missed).
  const inSnapshot = new Set(fresh.map((i) => i?.id));
  for (const [id, r] of records) {
    if (!isFinal(r.inv.state) && !inSnapshot.has(id)) {
      records.delete(id);
      if (r.inv.parent) kids.get(r.inv.parent)?.delete(id);
    }
  }
  for (const inv of fresh) upsert(inv);
  if (selected) reveal(selected);
  changed.invocations = changed.tree = true;
  setStats(msg);
  loadCatalog();
}

// setStats takes the servers and tasks of a snapshot or stats message,
// where both lists are whole: a missing one is empty.
function setStats(msg) {
  servers = Array.isArray(msg.servers) ? msg.servers : [];
  taskLines = Array.isArray(msg.tasks) ? msg.tasks : [];
  changed.servers = changed.tasks = true;
  changed.invocations = true; // the count in flight
  // workers that serve other tasks than when the catalog was read: read it again
  if (catalogServed !== null && servedKey() !== catalogServed) loadCatalog();
}

// ---- wiring ---------------------------------------------------------

invBody.addEventListener("click", rowEvent);
invBody.addEventListener("keydown", rowEvent);
treeBox.addEventListener("click", treeEvent);
$("#tasks tbody").addEventListener("click", tasksEvent);
$("#tree-close").addEventListener("click", () => select(null));
filterInput.addEventListener("input", () => {
  changed.invocations = true;
  scheduleRender();
});
rootsOnly.addEventListener("change", () => {
  changed.invocations = true;
  render();
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && selected && ev.target === document.body) select(null);
});
window.addEventListener("hashchange", () => {
  const id = hashID();
  if (id !== selected) select(id);
});
window.addEventListener("online", () => {
  if (!ws) connect();
});

changed.invocations = changed.tree = changed.servers = changed.tasks = true;
render();
setInterval(tick, TICK);
connect();
