// esnode dashboard: plain JavaScript over the node's own HTTP API (docs/operations.md,
// "Dashboard"). No build step, no libraries. Every value from the server is put into the page
// with textContent, never as HTML: event data is untrusted.
"use strict";

const ROOT = new URL("..", location.href);    // the API root, also behind a path prefix
const GOSSIP_EVERY_MS = 1000;
const SAMPLES = 61;                           // one minute of throughput
const TAIL_ROWS = 50;
const LONG_POLL_S = 25;
const EVENT_JSON = "application/vnd.eventstore.event+json";
const ATOM_JSON = "application/vnd.eventstore.atom+json";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class HttpError extends Error {
  constructor(status, text) { super(`${status} ${text}`); this.status = status; }
}

// A path under the API root. Feed links are absolute URLs built from the Host the node saw;
// keep only their path from /streams/ on, so they work through proxies and prefixes too.
function api(path) {
  const at = path.indexOf("/streams/");
  if (/^https?:/.test(path) && at >= 0) path = path.slice(at + 1);
  return new URL(path.replace(/^\//, ""), ROOT).href;
}

async function getJson(path, { accept = "application/json", longPoll = 0, timeoutMs = 10000 } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs + longPoll * 1000);
  try {
    const headers = { Accept: accept };
    if (longPoll) headers["ES-LongPoll"] = String(longPoll);
    const response = await fetch(api(path), { headers, signal: controller.signal });
    if (!response.ok) throw new HttpError(response.status, (await response.text()).trim());
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

// A feed page's link; feeds do not carry ?embed= in their links, so it is put back.
function link(page, relation, embed) {
  const found = (page.links || []).find((l) => l.relation === relation);
  if (!found) return null;
  const url = new URL(found.uri);
  if (embed) url.searchParams.set("embed", embed);
  return url.href;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  td.title = td.textContent;
  return td;
}

const problems = new Map();
function report(source, error) {
  if (error) problems.set(source, `${source}: ${error.message || error}`);
  else problems.delete(source);
  $("status").textContent = [...problems.values()].join(" · ");
}

const fmt = new Intl.NumberFormat("en");
const clock = (iso) => (iso ? iso.replace(/^.*T/, "").replace(/(\.\d{3})\d*Z$/, "$1") : "");

// --- members and throughput -------------------------------------------------------------
const samples = [];

function renderMembers(gossip) {
  const members = gossip.members || [];
  const me = members.find((m) => m.internalTcpIp === gossip.serverIp
                                 && m.internalTcpPort === gossip.serverPort);
  const leader = members.find((m) => m.state === "Leader" && m.isAlive);
  if (me) {
    $("node-name").textContent = `node ${me.name}`;
    $("node-state").textContent = me.state;
    $("node-state").className = `badge ${me.state}`;
    document.title = `esnode ${me.name} (${me.state})`;
  }
  const body = $("members").tBodies[0];
  body.replaceChildren();
  for (const m of [...members].sort((a, b) => a.name.localeCompare(b.name))) {
    const row = body.insertRow();
    row.dataset.name = m.name;
    cell(row, m.name + (m === me ? " (this node)" : ""));
    const state = cell(row, "");
    const badge = document.createElement("span");
    badge.className = `badge ${m.isAlive ? m.state : "dead"}`;
    badge.textContent = m.state;
    state.appendChild(badge);
    cell(row, m.isAlive ? "yes" : "no", m.isAlive ? "lag-ok" : "lag-bad");
    const http = row.insertCell();
    if (m.httpEndPointPort) {
      const a = document.createElement("a");
      a.href = `${location.protocol}//${m.httpEndPointIp}:${m.httpEndPointPort}/dashboard/`;
      a.textContent = `${m.httpEndPointIp}:${m.httpEndPointPort}`;
      http.appendChild(a);
    }
    cell(row, fmt.format(m.writerCheckpoint), "num");
    cell(row, fmt.format(m.lastCommitPosition), "num");
    if (leader && m.isAlive) {
      const lag = Math.max(0, leader.writerCheckpoint - m.writerCheckpoint);
      cell(row, fmt.format(lag), `num ${lag === 0 ? "lag-ok" : lag < 1000 ? "lag-warn" : "lag-bad"}`);
    } else {
      cell(row, "–", "num muted");
    }
    cell(row, m.epochNumber, "num");
  }
  return me;
}

function renderThroughput(position) {
  samples.push({ t: performance.now(), position });
  if (samples.length > SAMPLES) samples.shift();
  $("total").textContent = fmt.format(position);
  if (samples.length < 2) return;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    rates.push(dt > 0 ? Math.max(0, samples[i].position - samples[i - 1].position) / dt : 0);
  }
  $("rate").textContent = fmt.format(Math.round(rates[rates.length - 1]));
  const top = Math.max(1, ...rates);
  $("peak").textContent = fmt.format(Math.round(Math.max(...rates)));
  const step = 300 / (SAMPLES - 2);
  const offset = 300 - step * (rates.length - 1);
  $("spark-line").setAttribute("points", rates.map(
    (r, i) => `${(offset + i * step).toFixed(1)},${(58 - (r / top) * 54).toFixed(1)}`).join(" "));
}

async function pollGossip() {
  for (;;) {
    try {
      const me = renderMembers(await getJson("gossip"));
      if (me) renderThroughput(me.lastCommitPosition);
      report("gossip", null);
    } catch (error) {
      report("gossip", error);
    }
    await sleep(GOSSIP_EVERY_MS);
  }
}

// --- the live tail of $all ------------------------------------------------------------
let paused = false;
let resume = null;

function addTailRows(entries) {        // entries newest first, as feeds give them
  const body = $("tail-events").tBodies[0];
  for (const e of [...entries].reverse()) {
    const row = body.insertRow(0);
    row.className = "fresh";
    row.dataset.stream = e.streamId;
    cell(row, clock(e.updated), "mono").title = e.updated;
    cell(row, e.streamId);
    cell(row, e.eventNumber, "num");
    cell(row, e.eventType);
    cell(row, e.isJson ? e.data : "(binary)", "mono");
    noteStream(e.streamId, e.eventNumber, true);
  }
  while (body.rows.length > TAIL_ROWS) body.deleteRow(body.rows.length - 1);
}

async function tail() {
  let next = null;
  for (;;) {
    if (paused) await new Promise((resolve) => { resume = resolve; });
    try {
      if (next === null) {
        const head = await getJson(`streams/%24all/head/backward/${TAIL_ROWS}?embed=body`);
        addTailRows(head.entries);
        next = link(head, "previous", "body");
      } else {
        const page = await getJson(next, { longPoll: LONG_POLL_S });
        addTailRows(page.entries);
        next = link(page, "previous", "body") || next;   // an empty page at the end: ask again
      }
      report("tail", null);
    } catch (error) {
      report("tail", error);
      await sleep(2000);
    }
  }
}

$("tail-pause").addEventListener("click", () => {
  paused = !paused;
  $("tail-pause").textContent = paused ? "Resume" : "Pause";
  if (!paused && resume) { resume(); resume = null; }
});

// --- stream browser -------------------------------------------------------------------
const streams = new Map();             // name -> last event number seen, most recent first
let current = null;                    // { stream, url, page }

function noteStream(name, number, fresh) {
  const known = streams.get(name);
  if (known !== undefined && known >= number && !fresh) return;
  streams.delete(name);
  const entries = [[name, Math.max(number, known ?? -1)], ...streams];
  streams.clear();
  for (const [k, v] of entries) streams.set(k, v);
  renderStreams();
}

function renderStreams() {
  const list = $("streams");
  list.replaceChildren();
  for (const [name, last] of streams) {
    const li = document.createElement("li");
    li.dataset.stream = name;
    if (name.startsWith("$")) li.classList.add("system");
    if (current && current.stream === name) li.classList.add("selected");
    const label = document.createElement("span");
    label.textContent = name;
    label.title = name;
    const count = document.createElement("span");
    count.className = "muted small";
    count.textContent = `#${last}`;
    li.append(label, count);
    li.addEventListener("click", () => openStream(name));
    list.appendChild(li);
  }
}

async function loadStreams() {
  try {
    const page = await getJson("streams/%24all/head/backward/500?embed=rich");
    for (const e of [...page.entries].reverse()) noteStream(e.streamId, e.eventNumber, true);
    report("streams", null);
  } catch (error) {
    report("streams", error);
  }
}

async function showPage(stream, url) {
  $("stream-title").textContent = stream;
  $("event-json").hidden = true;
  const body = $("stream-events").tBodies[0];
  try {
    const page = await getJson(url, { accept: ATOM_JSON });
    if (!current || current.stream !== stream) return;
    current.url = url;
    current.page = page;
    body.replaceChildren();
    for (const e of page.entries) {
      const row = body.insertRow();
      row.dataset.number = e.eventNumber;
      cell(row, e.eventNumber, "num");
      cell(row, e.eventType);
      cell(row, e.updated, "mono");
      cell(row, e.eventId, "mono");
      row.addEventListener("click", () => showEvent(stream, e.eventNumber, row));
    }
    $("page-older").disabled = !link(page, "next");
    $("page-newer").disabled = page.headOfStream || !link(page, "previous");
    report("stream", null);
  } catch (error) {
    body.replaceChildren();
    $("page-older").disabled = $("page-newer").disabled = true;
    report("stream", error.status === 404 ? new Error(`${stream} not found`) : error);
  }
}

function openStream(stream) {
  current = { stream, url: null, page: null };
  renderStreams();
  return showPage(stream, `streams/${encodeURIComponent(stream)}/head/backward/20?embed=rich`);
}

async function showEvent(stream, number, row) {
  for (const r of row.parentNode.rows) r.classList.toggle("selected", r === row);
  const pre = $("event-json");
  try {
    const event = await getJson(`streams/${encodeURIComponent(stream)}/${number}`,
                                { accept: EVENT_JSON });
    pre.textContent = JSON.stringify(event, null, 2);
    report("event", null);
  } catch (error) {
    pre.textContent = String(error.message || error);
  }
  pre.hidden = false;
}

$("page-older").addEventListener("click", () => {
  const url = current && current.page && link(current.page, "next", "rich");
  if (url) showPage(current.stream, url);
});
$("page-newer").addEventListener("click", () => {
  const url = current && current.page && link(current.page, "previous", "rich");
  if (url) showPage(current.stream, url);
});
$("open-stream").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("stream-name").value.trim();
  if (name) openStream(name);
});

async function refreshOpenStream() {   // the head page follows new events
  for (;;) {
    await sleep(2000);
    const page = current && current.page;
    if (page && page.headOfStream && $("event-json").hidden) {
      await showPage(current.stream, current.url);
    }
  }
}

async function showVersion() {
  try {
    const info = await getJson("info");
    $("node-state").title = info.esVersion;
  } catch (error) {
    report("info", error);
  }
}

showVersion();
pollGossip();
loadStreams().then(tail);
refreshOpenStream();
