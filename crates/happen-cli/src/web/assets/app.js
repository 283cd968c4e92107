// happen web: one event stream (/api/stream) and a few JSON calls; DOM and SVG by hand.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
// `?once`: render what the server kept, then stop (a headless browser's snapshot)
const once = params.has("once");
const SVGNS = "http://www.w3.org/2000/svg";
const MAX_TAIL = 500;
const HISTORY = 60;

const state = {
  nodes: null,
  history: {},
  // per node: the queue-wait and handler-time buckets of each snapshot's interval
  heat: {},
  held: [],
  selected: params.get("node"),
  txn: params.get("txn"),
  byEvent: new Map(),
};

const $ = (id) => document.getElementById(id);

function api(path, extra) {
  const u = new URL(path, location.href);
  if (token) u.searchParams.set("token", token);
  for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, v);
  return u.toString();
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function badge(id, text, kind) {
  const b = $(id);
  b.textContent = text;
  b.className = "badge " + kind;
}

function clock(us) {
  const d = new Date(us / 1000);
  return d.toISOString().slice(11, 23);
}

function micros(us) {
  if (!us) return "-";
  if (us < 1000) return us + "µs";
  if (us < 1e6) return (us / 1000).toFixed(1) + "ms";
  return (us / 1e6).toFixed(2) + "s";
}

function short(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function rate(r) {
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

// green → amber → red with the queue's share of its high-water mark
function pressureColour(p, under) {
  if (under) return "#d0443c";
  if (p >= 0.5) return "#d99a1e";
  return "#2f9e6b";
}

// ---- the event stream ----

let source = null;

function connect() {
  if (source) source.close();
  const extra = {};
  const p = $("filter").value.trim();
  if (p) extra.pattern = p;
  if (once) extra.once = "1";
  source = new EventSource(api("api/stream", extra));
  source.onopen = () => badge("conn-page", "page: connected", "ok");
  source.onerror = () => {
    if (once) { source.close(); finishOnce(); return; }
    badge("conn-page", "page: connection to happen web lost, retrying…", "bad");
  };
  source.addEventListener("status", (m) => onStatus(JSON.parse(m.data)));
  source.addEventListener("event", (m) => onEvent(JSON.parse(m.data)));
  source.addEventListener("reply", (m) => onReply(JSON.parse(m.data)));
  source.addEventListener("completion", (m) => onCompletion(JSON.parse(m.data)));
  source.addEventListener("nodes", (m) => onNodes(JSON.parse(m.data)));
  source.addEventListener("durable", (m) => onDurable(JSON.parse(m.data)));
  source.addEventListener("gap", () => { $("tail").replaceChildren(); });
}

function onStatus(s) {
  if (s.nats === "connected") badge("conn-nats", "nats: connected", "ok");
  else if (s.nats === "disconnected") badge("conn-nats", "nats: disconnected, reconnecting…", "bad");
  else badge("conn-nats", "nats: " + (s.error || s.nats), "bad");
}

// ---- live tail ----

function onEvent(e) {
  if ($("pause").checked) {
    state.held.push(e);
    $("filter-note").textContent = state.held.length + " new while paused";
    return;
  }
  addTail(e);
}

function addTail(e) {
  const li = el("li", { "data-type": e.type, "data-id": e.id, "data-corr": e.correlationId, title: e.correlationId },
    el("span", { class: "time" }, clock(e.receivedUs)), " ",
    el("span", { class: "t" }, e.type), " ",
    el("span", { class: "route" }, `${e.sender} → ${e.target === null ? "*" : e.target}${e.kind === "tell" ? " (tell)" : ""}`), " ",
    el("span", { class: "ids" }, e.correlationId.slice(0, 12)), " ",
    el("span", { class: "p" }, e.payload === undefined ? "" : JSON.stringify(e.payload)));
  li.addEventListener("click", () => showTxn(e.correlationId));
  const tail = $("tail");
  tail.prepend(li);
  state.byEvent.set(e.id, li);
  while (tail.children.length > MAX_TAIL) {
    const last = tail.lastElementChild;
    state.byEvent.delete(last.dataset.id);
    last.remove();
  }
}

function markReply(r) {
  const li = state.byEvent.get(r.eventId);
  if (li) {
    li.dataset.status = r.reply.status;
    li.querySelector(".route").append(` ${r.durationMs.toFixed(1)}ms`);
  }
}

// a tell's or broadcast's end at one node (its completion record)
function markCompletion(c) {
  const li = state.byEvent.get(c.eventId);
  if (!li) return;
  if (li.dataset.status !== "error") li.dataset.status = c.outcome;
  const span = li.querySelector(".done") || li.querySelector(".route").appendChild(el("span", { class: "done" }));
  const best = Math.max(Number(span.dataset.ms || 0), c.durationMs);
  span.dataset.ms = String(best);
  span.textContent = ` ${best.toFixed(1)}ms`;
}

function onCompletion(c) {
  markCompletion(c);
  if (state.txn === c.correlationId) later("txn", () => loadTxn(state.txn), 200);
  if (c.outcome === "error") later("errors", loadErrors, 300);
}

function onReply(r) {
  markReply(r);
  if (state.txn === r.correlationId) later("txn", () => loadTxn(state.txn), 200);
  if (r.reply.status === "error") later("errors", loadErrors, 300);
}

const timers = {};
function later(key, f, ms) {
  if (timers[key]) return;
  timers[key] = setTimeout(() => { timers[key] = null; f(); }, ms);
}

// ---- nodes ----

function onNodes(snap) {
  for (const n of snap.nodes) {
    const h = state.history[n.id] || (state.history[n.id] = []);
    h.push(n.active + n.queued);
    if (h.length > HISTORY) h.shift();
    const heat = state.heat[n.id] || (state.heat[n.id] = { queueWait: [], handlerTime: [] });
    for (const k of ["queueWait", "handlerTime"]) {
      heat[k].push(n[k] ? n[k].buckets : []);
      if (heat[k].length > HISTORY) heat[k].shift();
    }
  }
  renderNodes(snap);
}

function renderNodes(snap) {
  state.nodes = snap;
  const replicas = snap.nodes.reduce((a, n) => a + n.replicas.length, 0);
  $("summary").textContent = `${snap.nodes.length} nodes, ${replicas} replicas, ${snap.processes} processes`;
  renderTable(snap);
  renderMap(snap);
  $("warnings").replaceChildren(...(snap.warnings || []).map((w) =>
    el("li", { class: "warning", "data-kind": w.kind, "data-node": w.node, "data-level": w.level },
      `${w.level === "critical" ? "✖" : "⚠"} ${w.node}: ${w.message} (${w.kind}, since ${clock(w.sinceUs)})`,
      w.correlationId ? " " : null,
      w.correlationId ? el("a", { class: "txn-link", "data-corr": w.correlationId, onclick: () => showTxn(w.correlationId) }, "transaction") : null)));
  if (state.selected) renderDetail(state.selected);
}

function sparkline(values) {
  const w = 80, h = 18, max = Math.max(1, ...values);
  const s = svg("svg", { width: w, height: h, class: "spark" });
  const pts = values.map((v, i) => `${(i / Math.max(1, HISTORY - 1)) * w},${h - 1 - (v / max) * (h - 2)}`).join(" ");
  s.append(svg("polyline", { points: pts, fill: "none", stroke: "#3a6fd8", "stroke-width": 1.2 }));
  return s;
}

function renderTable(snap) {
  const body = $("nodes").tBodies[0];
  body.replaceChildren(...snap.nodes.map((n) => {
    const p = Math.min(1, n.pressure || 0);
    const bar = el("span", { class: "bar" });
    const fill = el("i");
    fill.style.width = Math.round(p * 100) + "%";
    fill.style.background = pressureColour(p, n.underPressure > 0);
    bar.append(fill);
    const label = n.underPressure > 0 ? `high (${n.underPressure}/${n.replicas.length})` : "normal";
    const tr = el("tr", { class: "node" + (state.selected === n.id ? " selected" : ""), "data-node": n.id,
      "data-pressure": p.toFixed(2), "data-under-pressure": String(n.underPressure > 0), "data-queued": n.queued },
      el("td", {}, n.id), el("td", {}, n.replicas.length),
      el("td", {}, `${n.maxConcurrent} / ${n.queueLimit} (high ${n.highWater})`),
      el("td", {}, n.active), el("td", {}, n.queued),
      el("td", { class: "pressure" }, bar, " ", label),
      el("td", {}, rate(n.rates.accepted)), el("td", {}, rate(n.rates.rejected)), el("td", {}, rate(n.rates.failed)),
      el("td", {}, micros(n.queueWaitP99Us)), el("td", {}, n.handlerTime ? micros(n.handlerTime.p99Us) : "-"),
      el("td", {}, sparkline(state.history[n.id] || [])));
    tr.addEventListener("click", () => { state.selected = n.id; renderTable(state.nodes); renderDetail(n.id); });
    return tr;
  }));
}

function renderDetail(id) {
  const n = state.nodes && state.nodes.nodes.find((x) => x.id === id);
  const d = $("node-detail");
  if (!n) { d.textContent = ""; return; }
  d.replaceChildren(el("b", {}, n.id), ` — totals: accepted ${n.accepted}, rejected ${n.rejected}, displaced ${n.displaced}, completed ${n.completed}, failed ${n.failed}, cancelled ${n.cancelled}, unobserved failures ${n.unobservedFailures}, engine faults ${n.engineFaults}; displaced/s ${rate(n.rates.displaced)}`,
    el("br"), ...n.replicas.map((r) => el("div", {},
      `replica ${r.replica.slice(0, 8)} (${r.process}): active ${r.active}/${r.maxConcurrent}, queued ${r.queued}/${r.queueLimit}, peak ${r.peakQueued}, wait p50/p99 ${micros(r.queueWaitP50Us)}/${micros(r.queueWaitP99Us)}${r.underPressure ? ", under pressure" : ""}`)),
    ...n.replicas.map((r) => transportLine(r.replica)).filter((x) => x),
    histogram("queue wait", "queue-wait", n.queueWait, (state.heat[n.id] || {}).queueWait),
    histogram("handler time", "handler-time", n.handlerTime, (state.heat[n.id] || {}).handlerTime));
}

// The transport counters of the process serving a replica (discovery's `transport`), with
// rates since the previous snapshot; nothing for a process that predates them.
function transportLine(replica) {
  const t = state.nodes && state.nodes.transports && state.nodes.transports[replica];
  if (!t) return null;
  const c = t.counters, r = t.rates;
  const per = (k) => `${c[k] || 0} (${rate(r[k] || 0)}/s)`;
  return el("div", { class: "transport", "data-replica": replica, "data-sent": c.sent || 0, "data-replies": c.replies || 0 },
    `process ${replica.slice(0, 8)} (${t.name}) transport: sent ${per("sent")}, broadcasts ${per("broadcasts")}, replies ${per("replies")}, ` +
    `disconnects ${c.disconnects || 0}, failed on disconnect ${c.failedOnDisconnect || 0}, rejected while disconnected ${c.rejectedWhileDisconnected || 0}, ` +
    `failed (replica gone) ${c.failedReplicaGone || 0}, answers replayed ${c.answersReplayed || 0}, slow consumer ${c.slowConsumer || 0}, ` +
    `bad input ${(c.malformed || 0) + (c.oversized || 0) + (c.protocolErrors || 0)}, completion records ${c.completionsPublished || 0}`);
}

// A node's histogram over time: one column per snapshot (oldest left), one row per log2 µs
// bucket (shortest at the bottom), darker for more events; with the latest percentiles.
function histogram(title, kind, h, columns) {
  if (!h) return el("div", { class: "histogram none", "data-kind": kind }, `${title}: none measured (nothing waited, the node does not time it, or an older process)`);
  const cols = (columns && columns.length) ? columns : [h.buckets];
  const rows = Math.max(1, ...cols.map((c) => c.length));
  const max = Math.max(1, ...cols.flat());
  const W = 240, cell = Math.max(2, Math.floor(W / HISTORY)), rh = 4, H = rows * rh;
  const s = svg("svg", { width: W, height: H, class: "heatmap", "data-kind": kind, "data-count": h.count, "data-total": h.total });
  cols.forEach((c, x) => c.forEach((n, y) => {
    if (!n) return;
    const a = 0.15 + 0.85 * Math.log(1 + n) / Math.log(1 + max);
    s.append(svg("rect", { x: W - (cols.length - x) * cell, y: H - (y + 1) * rh, width: cell, height: rh, fill: "#3a6fd8", "fill-opacity": a.toFixed(2) },
      undefined));
  }));
  s.append(svg("title", {}, `${title}: log2 µs buckets per snapshot (rows: <1µs at the bottom up to <${micros(2 ** (rows - 1))})`));
  return el("div", { class: "histogram", "data-kind": kind },
    `${title}: p50 ${micros(h.p50Us)}, p99 ${micros(h.p99Us)} over ${h.count} in the last interval (${h.total} in all) `, s);
}

function renderMap(snap) {
  const map = $("map");
  const W = 560, H = 280, cx = W / 2, cy = H / 2 - 8, RX = W / 2 - 80, RY = H / 2 - 42;
  const ids = snap.nodes.map((n) => n.id);
  for (const e of snap.edges) for (const id of [e.from, e.to]) if (!ids.includes(id)) ids.push(id);
  const pos = {};
  ids.forEach((id, i) => {
    const a = (i / Math.max(1, ids.length)) * 2 * Math.PI - Math.PI / 2;
    pos[id] = [cx + RX * Math.cos(a), cy + RY * Math.sin(a)];
  });
  const kids = [svg("defs", {})];
  kids[0].append(Object.assign(svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: "userSpaceOnUse", orient: "auto" })));
  kids[0].firstChild.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa3b2" }));
  for (const e of snap.edges) {
    const [ax, ay] = pos[e.from], [bx, by] = pos[e.to];
    const len = Math.max(1, Math.hypot(bx - ax, by - ay));
    const [x1, y1, x2, y2] = [ax + (bx - ax) * 18 / len, ay + (by - ay) * 18 / len, bx - (bx - ax) * 22 / len, by - (by - ay) * 22 / len];
    const g = svg("g", { class: "edge", "data-from": e.from, "data-to": e.to });
    g.append(svg("line", { x1, y1, x2, y2, stroke: e.rate > 0 ? "#6f8fc9" : "#c3c8d0", "stroke-width": 1 + Math.log2(1 + e.rate), "marker-end": "url(#arrow)" }));
    const label = e.rate > 0 ? rate(e.rate) + "/s" : e.total + " seen";
    g.append(svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, "text-anchor": "middle", class: "dur" }, label));
    kids.push(g);
  }
  for (const id of ids) {
    const n = snap.nodes.find((x) => x.id === id);
    const [x, y] = pos[id];
    const g = svg("g", { class: "map-node", "data-node": id });
    const fill = n ? pressureColour(Math.min(1, n.pressure || 0), n.underPressure > 0) : "#c9ced6";
    g.append(svg("circle", { cx: x, cy: y, r: 14 + (n ? Math.min(10, n.replicas.length * 3) : 0), fill, opacity: 0.85 }));
    g.append(svg("text", { x, y: y + 32, "text-anchor": "middle" }, n ? `${id} ×${n.replicas.length}` : id));
    if (n) g.append(svg("text", { x, y: y + 4, "text-anchor": "middle", fill: "#fff" }, String(n.active + n.queued)));
    g.addEventListener("click", () => { state.selected = id; if (state.nodes) renderTable(state.nodes); renderDetail(id); });
    kids.push(g);
  }
  map.replaceChildren(...kids);
}

// ---- transaction waterfall ----

function showTxn(corr) {
  state.txn = corr;
  $("txn").value = corr;
  loadTxn(corr);
}

async function loadTxn(corr) {
  if (!corr) return;
  const r = await fetch(api("api/transactions/" + encodeURIComponent(corr), replay.on ? { at: replay.at } : {}));
  const body = await r.json();
  if (!r.ok) { $("txn-note").textContent = body.error; $("waterfall").replaceChildren(); return; }
  $("txn-note").textContent = "";
  renderWaterfall(body);
}

// One row per step; a broadcast's (or a tell's taken by several replicas) completions each
// get a row of their own under it: the receiving node, its duration and outcome.
function renderWaterfall(t) {
  const rows = [];
  const walk = (b, depth) => {
    rows.push([b, depth]);
    const done = b.completions || [];
    if (b.kind === "broadcast" || done.length > 1) {
      for (const c of done) rows.push([{ receiver: c, receivedUs: b.receivedUs, durationMs: c.durationMs, parent: b }, depth + 1]);
    }
    for (const c of b.children) walk(c, depth + 1);
  };
  for (const r of t.roots) walk(r, 0);
  const start = Math.min(...rows.map(([b]) => b.receivedUs));
  const end = Math.max(...rows.map(([b]) => b.receivedUs + (b.durationMs || 0) * 1000));
  const span = Math.max(1, end - start);
  const W = 560, label = 230, row = 22, top = 18;
  const H = top + rows.length * row + 6;
  const s = $("waterfall");
  s.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const x = (us) => label + ((us - start) / span) * (W - label - 60);
  const kids = [svg("text", { x: 4, y: 12, class: "dur" }, `${t.correlationId} · ${t.events} events · ${(span / 1000).toFixed(1)} ms`)];
  rows.forEach(([b, depth], i) => {
    const y = top + i * row;
    if (b.receiver) { kids.push(receiverRow(b, depth, y, x, row)); return; }
    const status = b.outcome || (b.reply ? b.reply.status : (b.kind === "send" ? "pending" : b.kind));
    const g = svg("g", { class: "step", "data-type": b.type, "data-depth": depth, "data-index": i, "data-status": status, "data-id": b.id, "data-kind": b.kind });
    if (b.durationMs !== undefined) g.setAttribute("data-duration-ms", b.durationMs.toFixed(3));
    const colour = status === "error" ? "#d0443c" : status === "ok" || status === "stream" ? "#2f9e6b" : "#9aa3b2";
    g.append(svg("text", { x: 4 + depth * 12, y: y + 14 }, short(`${b.type}  ${b.sender} → ${b.target === null ? "*" : b.target}`, 36 - depth * 2)));
    const x1 = x(b.receivedUs), x2 = b.durationMs !== undefined ? x(b.receivedUs + b.durationMs * 1000) : x1 + 3;
    g.append(svg("rect", { x: x1, y: y + 4, width: Math.max(3, x2 - x1), height: row - 8, rx: 2, fill: colour }));
    const done = b.completions || [];
    const note = b.durationMs !== undefined
      ? `${b.durationMs.toFixed(1)} ms${b.kind === "broadcast" ? ` (${done.length} node${done.length === 1 ? "" : "s"})` : ""}`
      : (b.kind === "send" ? "no reply seen" : `${b.kind}, no completion record`);
    const error = b.reply && b.reply.error ? b.reply.error : (done.find((c) => c.error) || {}).error;
    const err = error ? ` ${error.kind}${error.code ? " " + error.code : ""}` : "";
    g.append(svg("text", { x: Math.max(x1, x2) + 4, y: y + 14, class: "dur" }, note + err));
    const tip = svg("title", {}, `${b.id}\n+${b.offsetMs.toFixed(1)} ms${error ? "\n" + error.message : ""}`);
    g.append(tip);
    kids.push(g);
  });
  s.replaceChildren(...kids);
}

function receiverRow(r, depth, y, x, row) {
  const c = r.receiver;
  const g = svg("g", { class: "receiver", "data-node": c.node, "data-status": c.outcome, "data-duration-ms": c.durationMs.toFixed(3), "data-parent": r.parent.id });
  g.append(svg("text", { x: 4 + depth * 12, y: y + 14, class: "dur" }, short(`↳ ${c.node}`, 36 - depth * 2)));
  const x1 = x(r.receivedUs), x2 = x(r.receivedUs + c.durationMs * 1000);
  g.append(svg("rect", { x: x1, y: y + 7, width: Math.max(3, x2 - x1), height: row - 14, rx: 2, fill: c.outcome === "error" ? "#d0443c" : "#7cc4a0" }));
  const err = c.error ? ` ${c.error.kind}${c.error.code ? " " + c.error.code : ""}` : "";
  g.append(svg("text", { x: Math.max(x1, x2) + 4, y: y + 14, class: "dur" }, `${c.durationMs.toFixed(1)} ms${err}`));
  g.append(svg("title", {}, `${c.node} at ${(c.replica || "").slice(0, 8)}: admitted ${clock(c.startedUs)}, ended ${clock(c.endedUs)}${c.error ? "\n" + c.error.message : ""}`));
  return g;
}

// ---- durable ----

function onDurable(d) {
  if (!d || !d.stream) return;
  $("durable-view").hidden = false;
  const nodes = new Set([...d.consumers.map((c) => c.node), ...Object.keys(d.deadLetters)]);
  $("durable").tBodies[0].replaceChildren(...[...nodes].sort().map((id) => {
    const c = d.consumers.find((x) => x.node === id) || {};
    return el("tr", { class: "durable-node", "data-node": id, "data-dead": d.deadLetters[id] || 0 },
      el("td", {}, id), el("td", {}, c.pending ?? "-"), el("td", {}, c.ackPending ?? "-"),
      el("td", {}, c.redelivered ?? "-"), el("td", {}, d.deadLetters[id] || 0));
  }));
  $("dead-letters").replaceChildren(...d.latestDeadLetters.map((l) =>
    el("li", { class: "dead-letter", "data-node": l.node || "" },
      `#${l.sequence} ${l.type} at ${l.node} after ${l.deliveries} deliveries: ${l.errorKind}${l.errorCode ? " " + l.errorCode : ""}: ${l.errorMessage}`)));
}

// ---- errors ----

async function loadErrors() {
  const r = await fetch(api("api/errors"));
  if (!r.ok) return;
  renderErrors(await r.json());
}

function renderErrors(body) {
  $("errors").tBodies[0].replaceChildren(...body.groups.map((g) => {
    const ex = g.latest[0];
    const origin = ex && ex.error.chain && ex.error.chain.length ? ex.error.chain[ex.error.chain.length - 1] : null;
    const link = ex ? el("a", { onclick: () => showTxn(ex.correlationId) }, ex.eventType) : "";
    return el("tr", { class: "error-group", "data-kind": g.kind, "data-node": g.node, "data-code": g.code },
      el("td", {}, g.kind), el("td", {}, g.node), el("td", {}, g.code), el("td", {}, g.count),
      el("td", { class: "msg" }, link, ex ? ": " + ex.error.message : "",
        origin ? el("div", { class: "origin" }, `origin: ${origin.kind} at ${origin.node || "?"}${origin.code ? " (" + origin.code + ")" : ""}`) : null));
  }));
}

// ---- one-shot rendering and start ----

async function finishOnce() {
  try {
    if (!state.nodes) {
      const r = await fetch(api("api/nodes"));
      if (r.ok) onNodes(await r.json());
    }
    await loadErrors();
    const d = await fetch(api("api/durable"));
    if (d.ok) onDurable(await d.json());
    if (state.txn) await loadTxn(state.txn);
  } finally {
    document.body.dataset.ready = "1";
  }
}

// ---- replay: a recording shown as of the scrubber's time ----

const replay = { on: false, start: 0, end: 0, at: 0 };

async function startReplay(r) {
  replay.on = true;
  replay.start = r.startUs;
  replay.end = r.endUs;
  $("replay-bar").hidden = false;
  $("tail-view").querySelector("h2").textContent = "Tail (up to the scrubber)";
  badge("conn-page", "replay: " + r.file, "ok");
  badge("conn-nats", `${r.events} events, ${r.snapshots} node snapshots`, "wait");
  $("pause").disabled = true;
  const s = $("scrubber");
  s.setAttribute("min", r.startUs);
  s.setAttribute("max", r.endUs);
  const at = params.has("at") ? Number(params.get("at")) : r.endUs;
  s.value = at;
  s.addEventListener("input", () => later("scrub", () => loadAt(Number(s.value)), 80));
  try {
    await loadAt(at);
  } finally {
    document.body.dataset.ready = "1";
  }
}

async function loadAt(t) {
  replay.at = t;
  const s = $("scrubber");
  s.setAttribute("value", t);
  s.dataset.at = String(t);
  const secs = ((t - replay.start) / 1e6).toFixed(2);
  const when = `${new Date(t / 1000).toISOString().replace("T", " ").slice(0, 23)} (+${secs} s of ${((replay.end - replay.start) / 1e6).toFixed(2)} s)`;
  $("scrub-time").textContent = when;
  const extra = { at: t };
  const p = $("filter").value.trim();
  if (p) extra.pattern = p;
  const r = await fetch(api("api/replay", extra));
  const body = await r.json();
  if (!r.ok) { $("filter-note").textContent = body.error; return; }
  $("filter-note").textContent = "";
  $("scrub-time").textContent = `${when} · ${body.eventsSoFar} events by then`;
  $("tail").replaceChildren();
  state.byEvent.clear();
  for (const e of body.events) addTail(e);
  for (const rep of body.replies) markReply(rep);
  for (const c of body.completions || []) markCompletion(c);
  if (body.nodes) {
    state.history = body.history;
    state.heat = body.heat || {};
    renderNodes(body.nodes);
  } else {
    state.nodes = null;
    $("nodes").tBodies[0].replaceChildren();
    $("map").replaceChildren();
    $("warnings").replaceChildren();
    $("summary").textContent = "no node snapshot yet";
  }
  renderErrors(body.errors);
  if (state.txn) await loadTxn(state.txn);
}

$("tail-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const p = $("filter").value.trim();
  const r = await fetch(api("api/pattern", { pattern: p }));
  if (!r.ok) { $("filter-note").textContent = (await r.json()).error; return; }
  $("filter-note").textContent = "";
  $("tail").replaceChildren();
  state.byEvent.clear();
  if (replay.on) loadAt(replay.at); else connect();
});
$("pause").addEventListener("change", () => {
  if ($("pause").checked) return;
  for (const e of state.held) addTail(e);
  state.held = [];
  $("filter-note").textContent = "";
});
$("payloads").addEventListener("change", () => $("tail").classList.toggle("show-payloads", $("payloads").checked));
$("txn-form").addEventListener("submit", (ev) => { ev.preventDefault(); showTxn($("txn").value.trim()); });

if (params.get("filter")) $("filter").value = params.get("filter");
if (params.has("payloads")) { $("payloads").checked = true; $("tail").classList.add("show-payloads"); }
if (state.txn) $("txn").value = state.txn;

async function start() {
  let status = null;
  try {
    const r = await fetch(api("api/status"));
    if (r.ok) status = await r.json();
  } catch (_) { /* the stream's reconnects show the server is gone */ }
  if (status && status.replay) { await startReplay(status.replay); return; }
  connect();
  if (!once) {
    loadErrors();
    if (state.txn) loadTxn(state.txn);
  }
}
start();
