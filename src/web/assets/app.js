// The actorflow dashboard: plain JavaScript over the REST API, no build step, no network
// beyond the server it came from. It re-reads the current view every second and listens to
// the job's event stream.
"use strict";

const app = document.getElementById("app");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
const tokenInput = document.getElementById("token");

const state = {
  route: null,
  events: null,          // the EventSource of the job being shown
  eventsJob: null,
  log: [],               // newest first: live events of that job
  savepoints: {},        // job id -> {request, status, text}
  selectedCheckpoint: null,
  timer: null,
  busy: false,
};

tokenInput.value = localStorage.getItem("actorflow-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("actorflow-token", tokenInput.value.trim()));

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, options) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const msg = body && body.errors ? body.errors.join("; ") : r.statusText;
    const e = new Error(`${r.status}: ${msg}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

const MAX_WM = "9223372036854775807";
const MIN_WM = -9223372036854775808;

function fmtWatermark(w) {
  if (w === null || w === undefined || w <= MIN_WM) return '<span class="muted">none</span>';
  if (String(w) === MAX_WM || w >= 9.2e18) return "MAX (end of input)";
  if (w > 1e12 && w < 1e14) return `${w} <span class="muted">${new Date(w).toISOString().replace("T", " ").replace("Z", "")}</span>`;
  return String(w);
}
function fmtTime(ms) { return ms > 0 ? new Date(ms).toLocaleTimeString() : "—"; }
function fmtDuration(ms) {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 120 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
function fmtBytes(b) {
  if (b < 1024) return `${b} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let v = b / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${u[i]}`;
}
function fmtNum(n) { return Number(n).toLocaleString(undefined, { maximumFractionDigits: 0 }); }
function bars(fills) {
  return fills.map(f => `<span class="bar${f >= 0.95 ? " full" : ""}" title="${(f * 100).toFixed(0)}%"><i style="width:${Math.min(100, f * 100).toFixed(0)}%"></i></span>`).join("");
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  if (parts[0] !== "jobs" || !parts[1]) return { view: "jobs" };
  const r = { view: "job", jid: parts[1], tab: "overview" };
  if (parts[2] === "vertices" && parts[3]) { r.vid = parts[3]; }
  else if (["watermarks", "checkpoints", "exceptions"].includes(parts[2])) { r.tab = parts[2]; }
  return r;
}

function setCrumbs(r, name) {
  if (r.view === "jobs") { crumbs.innerHTML = ""; return; }
  crumbs.innerHTML = `/ <a href="#/">jobs</a> / <a href="#/jobs/${esc(r.jid)}">${esc(name || r.jid)}</a>`;
}

// ---- jobs list -------------------------------------------------------------------------

async function renderJobs() {
  const [overview, jobs] = await Promise.all([api("/overview"), api("/jobs/overview")]);
  const rows = jobs.jobs.map(j => `
    <tr class="clickable" data-jid="${esc(j.jid)}" onclick="location.hash='#/jobs/${esc(j.jid)}'">
      <td><a href="#/jobs/${esc(j.jid)}">${esc(j.name)}</a></td>
      <td><span class="badge ${esc(j.state)}">${esc(j.state)}</span></td>
      <td>${fmtTime(j["start-time"])}</td>
      <td class="num">${fmtDuration(j.duration)}</td>
      <td class="num">${j.tasks.RUNNING} / ${Object.values(j.tasks).reduce((a, b) => a + b, 0)}</td>
      <td class="muted">${esc(j.jid)}</td>
    </tr>`).join("");
  app.innerHTML = `
    <div class="grid">
      <div class="stat">running<b>${overview["jobs-running"]}</b></div>
      <div class="stat">finished<b>${overview["jobs-finished"]}</b></div>
      <div class="stat">cancelled<b>${overview["jobs-cancelled"]}</b></div>
      <div class="stat">failed<b>${overview["jobs-failed"]}</b></div>
    </div>
    <h2>Jobs</h2>
    <table id="jobs-table">
      <tr><th>name</th><th>status</th><th>started</th><th class="num">duration</th><th class="num">running subtasks</th><th>id</th></tr>
      ${rows || '<tr><td colspan="6" class="muted">no jobs yet</td></tr>'}
    </table>`;
}

// ---- one job ---------------------------------------------------------------------------

function openEvents(jid) {
  if (state.eventsJob === jid) return;
  if (state.events) state.events.close();
  state.log = [];
  state.eventsJob = jid;
  const es = new EventSource(`/jobs/${jid}/events`);
  const kinds = ["status", "checkpoint_triggered", "checkpoint_completed", "checkpoint_failed", "restart", "restored", "exception", "missed"];
  for (const k of kinds) {
    es.addEventListener(k, e => {
      let data = {};
      try { data = JSON.parse(e.data); } catch (_) { }
      state.log.unshift({ kind: k, data });
      if (state.log.length > 300) state.log.pop();
      if (k !== "checkpoint_triggered") schedule(0);
    });
  }
  es.onerror = () => { /* the browser reconnects by itself while the server runs */ };
  state.events = es;
}

function jobHead(job, r) {
  const sp = state.savepoints[job.jid];
  const running = job.state === "RUNNING";
  const tab = (name, label) => `<a href="#/jobs/${esc(job.jid)}${name === "overview" ? "" : "/" + name}" class="${r.tab === name ? "active" : ""}" data-tab="${name}">${label}</a>`;
  return `
    <div class="jobhead">
      <h1 id="job-name">${esc(job.name)}</h1>
      <span id="job-state" class="badge ${esc(job.state)}">${esc(job.state)}</span>
      <span class="facts">${fmtDuration(job.duration)} · ${job.vertices.length} vertices · restarts ${job.restarts}</span>
      <span class="spacer"></span>
      <button id="savepoint-btn" ${running ? "" : "disabled"} onclick="triggerSavepoint('${esc(job.jid)}')">Trigger savepoint</button>
      <button id="cancel-btn" class="secondary" ${running ? "" : "disabled"} onclick="cancelJob('${esc(job.jid)}')">Cancel job</button>
    </div>
    <div id="savepoint-result" class="${sp && sp.error ? "error" : "muted"}">${sp ? esc(sp.text) : ""}</div>
    <nav class="tabs">${tab("overview", "Overview")}${tab("watermarks", "Watermarks")}${tab("checkpoints", "Checkpoints")}${tab("exceptions", "Exceptions &amp; restarts")}</nav>`;
}

function authHeaders() {
  const t = (tokenInput.value || "").trim();
  return t ? { "Authorization": `Bearer ${t}`, "Content-Type": "application/json" } : { "Content-Type": "application/json" };
}

window.triggerSavepoint = async function (jid) {
  state.savepoints[jid] = { text: "savepoint requested…" };
  schedule(0);
  try {
    const r = await api(`/jobs/${jid}/savepoints`, { method: "POST", headers: authHeaders(), body: "{}" });
    state.savepoints[jid] = { request: r["request-id"], text: `savepoint in progress (request ${r["request-id"]})` };
    for (let i = 0; i < 600; i++) {
      const s = await api(`/jobs/${jid}/savepoints/${r["request-id"]}`);
      if (s.status.id === "COMPLETED") {
        if (s.operation && s.operation.location) {
          state.savepoints[jid] = { text: `savepoint ${s.operation["checkpoint-id"]} completed: ${s.operation.location}` };
        } else {
          const cause = s.operation && s.operation["failure-cause"] ? s.operation["failure-cause"]["stack-trace"] : "unknown";
          state.savepoints[jid] = { error: true, text: `savepoint failed: ${cause}` };
        }
        break;
      }
      await new Promise(res => setTimeout(res, 250));
    }
  } catch (e) {
    state.savepoints[jid] = { error: true, text: e.status === 401 ? "401: enter the server's token (top right) to trigger savepoints" : `savepoint failed: ${e.message}` };
  }
  schedule(0);
};

window.cancelJob = async function (jid) {
  if (!confirm("Cancel this job?")) return;
  try {
    await api(`/jobs/${jid}?mode=cancel`, { method: "PATCH", headers: authHeaders() });
  } catch (e) {
    state.savepoints[jid] = { error: true, text: e.status === 401 ? "401: enter the server's token (top right) to cancel" : `cancel failed: ${e.message}` };
  }
  schedule(0);
};

function depths(vertices) {
  const byId = new Map(vertices.map((v, i) => [i, v]));
  const depth = new Array(vertices.length).fill(-1);
  const visit = (i, guard) => {
    if (depth[i] >= 0) return depth[i];
    if (guard > vertices.length) return 0;
    const v = byId.get(i);
    const d = v.inputs.length ? 1 + Math.max(...v.inputs.map(e => visit(e.from, guard + 1))) : 0;
    depth[i] = d;
    return d;
  };
  vertices.forEach((_, i) => visit(i, 0));
  return depth;
}

function vertexFill(bp) {
  if (!bp) return { fill: "#ffffff", ink: "#1d2430" };
  const ratio = bp.worst, busy = bp.busy;
  if (bp.level === "high") return { fill: "#3b3b3b", ink: "#ffffff" };
  if (bp.level === "low") return { fill: "#8d8d8d", ink: "#ffffff" };
  if (busy > 0.05) {
    // white -> red by busy ratio, as Flink shades busy vertices
    const t = Math.min(1, busy);
    const c = (a, b) => Math.round(a + (b - a) * t);
    return { fill: `rgb(${c(255, 226)},${c(255, 75)},${c(255, 62)})`, ink: t > 0.6 ? "#fff" : "#1d2430" };
  }
  if (bp.idle > 0.9) return { fill: "#dce9f7", ink: "#1d2430" };
  return { fill: "#ffffff", ink: "#1d2430", ratio };
}

function graph(job, plan, pressure, selected) {
  const vs = plan.plan.nodes;
  const idIndex = new Map(vs.map((v, i) => [v.id, i]));
  const d = depths(vs.map(v => ({ inputs: v.inputs.map(e => ({ from: idIndex.get(e.id) })) })));
  const rows = {};
  const pos = vs.map((v, i) => {
    const col = d[i];
    rows[col] = (rows[col] || 0) + 1;
    return { x: 30 + col * 330, y: 30 + (rows[col] - 1) * 120 };
  });
  const W = 270, H = 74;
  const width = 60 + (Math.max(...d) + 1) * 330, height = 60 + Math.max(...Object.values(rows)) * 120;
  let edges = "";
  vs.forEach((v, i) => v.inputs.forEach(e => {
    const j = idIndex.get(e.id);
    if (j === undefined) return;
    const a = pos[j], b = pos[i];
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    edges += `<g class="edge" data-from="${esc(e.id)}" data-to="${esc(v.id)}"><path d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}" marker-end="url(#arrow)"/>
      <text x="${mx}" y="${(y1 + y2) / 2 - 6}" text-anchor="middle">${esc(e.ship_strategy)}</text></g>`;
  }));
  const nodes = vs.map((v, i) => {
    const p = pos[i], bp = pressure[v.id];
    const { fill, ink } = vertexFill(bp);
    const name = v.description.length > 36 ? v.description.slice(0, 35) + "…" : v.description;
    const facts = bp ? `busy ${(bp.busy * 100).toFixed(0)}% · backpressured ${(bp.worst * 100).toFixed(0)}%` : "";
    return `<g class="vertex${selected === v.id ? " selected" : ""}" data-vertex-id="${esc(v.id)}" data-backpressure="${bp ? bp.level : "unknown"}" data-busy="${bp ? bp.busy.toFixed(3) : ""}"
        onclick="location.hash='#/jobs/${esc(job.jid)}/vertices/${esc(v.id)}'">
      <title>${esc(v.description)}</title>
      <rect x="${p.x}" y="${p.y}" width="${W}" height="${H}" fill="${fill}"/>
      <text x="${p.x + 10}" y="${p.y + 20}" fill="${ink}" font-weight="600">${esc(name)}</text>
      <text x="${p.x + 10}" y="${p.y + 40}" fill="${ink}">parallelism ${v.parallelism}</text>
      <text x="${p.x + 10}" y="${p.y + 60}" fill="${ink}">${facts}</text>
    </g>`;
  }).join("");
  return `<div class="graph"><svg id="job-graph" width="${width}" height="${height}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#8a93a3"/></marker></defs>
    ${edges}${nodes}</svg></div>
    <div class="legend">colour: <span style="background:#3b3b3b"></span>backpressured (high) <span style="background:#8d8d8d"></span>backpressured (low) <span style="background:rgb(226,75,62)"></span>busy <span style="background:#dce9f7"></span>idle</div>`;
}

async function pressureOf(jid, plan) {
  const out = {};
  await Promise.all(plan.plan.nodes.map(async v => {
    try {
      const bp = await api(`/jobs/${jid}/vertices/${v.id}/backpressure`);
      const busy = Math.max(0, ...bp.subtasks.map(s => s.busyRatio));
      const idle = Math.min(1, ...bp.subtasks.map(s => s.idleRatio));
      const worst = Math.max(0, ...bp.subtasks.map(s => s.ratio));
      out[v.id] = { level: bp.backpressureLevel, busy, idle, worst };
    } catch (_) { }
  }));
  return out;
}

async function renderOverview(job, r) {
  const plan = await api(`/jobs/${job.jid}/plan`);
  const pressure = await pressureOf(job.jid, plan);
  let detail = '<p class="muted">Click a vertex for its subtasks.</p>';
  if (r.vid) {
    const [v, bp] = await Promise.all([api(`/jobs/${job.jid}/vertices/${r.vid}`), api(`/jobs/${job.jid}/vertices/${r.vid}/backpressure`)]);
    const level = new Map(bp.subtasks.map(s => [s.subtask, s.backpressureLevel]));
    const rows = v.subtasks.map(s => `
      <tr data-subtask="${s.subtask}">
        <td>${s.subtask}</td><td><span class="badge ${esc(s.status)}">${esc(s.status)}</span></td>
        <td class="num">${fmtNum(s.metrics["read-records"])}</td><td class="num">${fmtNum(s.metrics["write-records"])}</td>
        <td class="num">${fmtNum(s["records-in-per-second"])}</td><td class="num">${fmtNum(s["records-out-per-second"])}</td>
        <td class="num">${fmtNum(s.busyTimeMsPerSecond)}</td><td class="num">${fmtNum(s.backPressuredTimeMsPerSecond)}</td><td class="num">${fmtNum(s.idleTimeMsPerSecond)}</td>
        <td><span class="badge ${esc(level.get(s.subtask) || "")}">${esc(level.get(s.subtask) || "?")}</span></td>
        <td>${bars(s["input-lane-fill"])}</td><td>${bars(s["output-lane-fill"])}</td>
        <td>${fmtWatermark(s.currentInputWatermark)}</td><td>${fmtWatermark(s.currentOutputWatermark)}</td>
        <td class="num">${fmtNum(s.numLateRecordsDropped)}</td>
        <td class="num">${s["keyed-state-keys"] === null ? '<span class="muted">—</span>' : fmtNum(s["keyed-state-keys"])}</td>
      </tr>`).join("");
    detail = `
      <h2 id="vertex-name">${esc(v.name)} <span class="muted">parallelism ${v.parallelism}, max ${v.maxParallelism}</span></h2>
      <table id="vertex-detail">
        <tr><th>#</th><th>status</th><th class="num">records in</th><th class="num">records out</th><th class="num">in/s</th><th class="num">out/s</th>
          <th class="num">busy ms/s</th><th class="num">backpressured ms/s</th><th class="num">idle ms/s</th><th>backpressure</th>
          <th>input lanes</th><th>output lanes</th><th>input watermark</th><th>output watermark</th><th class="num">late dropped</th><th class="num">keys</th></tr>
        ${rows}
      </table>`;
    // Gauges the source and operators publish: a Kafka source's offset, committed offset
    // and lag per partition, for example.
    const gauges = v.subtasks.flatMap(s => Object.entries(s.gauges || {}).map(([k, val]) => [s.subtask, k, val]));
    if (gauges.length > 0) {
      detail += `
      <h3>Gauges <span class="muted">(${gauges.length})</span></h3>
      <table id="vertex-gauges">
        <tr><th>#</th><th>name</th><th class="num">value</th></tr>
        ${gauges.map(([i, k, val]) => `<tr><td>${i}</td><td>${esc(k)}</td><td class="num">${fmtNum(val)}</td></tr>`).join("")}
      </table>`;
    }
  }
  return graph(job, plan, pressure, r.vid) + detail;
}

async function renderWatermarks(job) {
  const parts = await Promise.all(job.vertices.map(v => api(`/jobs/${job.jid}/vertices/${v.id}/watermarks/explain`)));
  return parts.map(x => {
    const subs = x.subtasks.map(s => {
      const chans = s.channels.map(c => `
        <tr class="${c.holds_minimum ? "holds-min" : ""} ${c.idle ? "idle" : ""}" data-channel="${c.channel}" data-holds-minimum="${c.holds_minimum}" data-idle="${c.idle}">
          <td>${c.channel}</td><td>${esc(c.from_vertex_name)} #${c.from_subtask}</td><td>${fmtWatermark(c.watermark)}</td>
          <td>${c.ended ? "ended" : c.idle ? '<span class="badge idle">idle</span>' : "active"}</td>
          <td>${c.holds_minimum ? "holds the minimum" : ""}</td>
        </tr>`).join("");
      return `
        <div class="panel" data-subtask="${s.subtask}">
          <b>subtask ${s.subtask}</b> <span class="muted">${esc(s.status)}</span> ·
          input ${fmtWatermark(s.input_watermark)} · output ${fmtWatermark(s.output_watermark)}
          ${s.lag_ms !== null && s.lag_ms !== undefined ? ` · lags processing time by ${fmtDuration(Math.max(0, s.lag_ms))}` : ""}
          ${s.hint ? `<div class="hint watermark-hint">${esc(s.hint)}</div>` : ""}
          ${s.channels.length ? `<table class="channels"><tr><th>channel</th><th>from</th><th>watermark</th><th>status</th><th></th></tr>${chans}</table>` : '<div class="muted">a source: no input channels</div>'}
        </div>`;
    }).join("");
    return `<section class="vertex-watermarks" data-vertex-id="${esc(x.id)}" data-vertex-name="${esc(x.name)}"><h2>${esc(x.name)}</h2>${subs}</section>`;
  }).join("") || '<p class="muted">no vertices</p>';
}

async function renderCheckpoints(job) {
  let ck, config = null;
  try { ck = await api(`/jobs/${job.jid}/checkpoints`); } catch (e) { return `<p class="error">${esc(e.message)}</p>`; }
  try { config = await api(`/jobs/${job.jid}/checkpoints/config`); } catch (_) { return '<p class="muted">This job does not checkpoint.</p>'; }
  const c = ck.counts;
  const row = h => `
    <tr class="clickable" data-checkpoint="${h.id}" onclick="selectCheckpoint(${h.id})">
      <td>${h.id}</td><td>${esc(h.checkpoint_type)}${h.is_final ? " (final)" : ""}</td><td><span class="badge ${esc(h.status)}">${esc(h.status)}</span></td>
      <td>${fmtTime(h.trigger_timestamp)}</td><td class="num">${fmtDuration(h.end_to_end_duration)}</td>
      <td class="num">${fmtBytes(h.state_size)}</td><td class="num">${fmtBytes(h.checkpointed_size)}</td><td class="num">${fmtBytes(h.persisted_data)}</td>
      <td class="num">${h.alignment_duration} ms</td><td class="num">${h.num_acknowledged_subtasks}/${h.num_subtasks}</td>
      <td class="muted">${esc(h.failure_message || "")}</td>
    </tr>`;
  let detail = "";
  if (state.selectedCheckpoint !== null) {
    const id = state.selectedCheckpoint;
    try {
      const per = await Promise.all(job.vertices.map(v => api(`/jobs/${job.jid}/checkpoints/details/${id}/subtasks/${v.id}`).then(d => [v, d])));
      detail = `<h2>Checkpoint ${id}</h2>` + per.map(([v, d]) => `
        <h3 class="muted">${esc(v.name)} — ${d.num_acknowledged_subtasks}/${d.num_subtasks} acknowledged</h3>
        <table><tr><th>#</th><th>status</th><th>acknowledged</th><th class="num">duration</th><th class="num">sync</th><th class="num">async</th><th class="num">alignment</th><th class="num">state</th><th class="num">in flight</th><th>unaligned</th></tr>
        ${d.subtasks.map(s => s.status === "completed" ? `<tr><td>${s.index}</td><td>completed</td><td>${fmtTime(s.ack_timestamp)}</td><td class="num">${fmtDuration(s.end_to_end_duration)}</td><td class="num">${s.checkpoint.sync} ms</td><td class="num">${s.checkpoint.async} ms</td><td class="num">${s.alignment.duration} ms</td><td class="num">${fmtBytes(s.state_size)}</td><td class="num">${fmtBytes(s.alignment.persisted)}</td><td>${s.unaligned_checkpoint ? "yes" : "no"}</td></tr>` : `<tr><td>${s.index}</td><td colspan="9" class="muted">pending or failed</td></tr>`).join("")}
        </table>`).join("");
    } catch (e) { detail = `<p class="muted">checkpoint ${id}: ${esc(e.message)}</p>`; }
  }
  return `
    <div class="grid">
      <div class="stat">triggered<b>${c.total}</b></div><div class="stat">completed<b>${c.completed}</b></div>
      <div class="stat">in progress<b>${c.in_progress}</b></div><div class="stat">failed<b>${c.failed}</b></div>
      <div class="stat">restored<b>${c.restored}</b></div>
      <div class="stat">duration p50 / max<b>${fmtDuration(ck.summary.end_to_end_duration.p50)} / ${fmtDuration(ck.summary.end_to_end_duration.max)}</b></div>
      <div class="stat">size (last)<b>${ck.latest.completed ? fmtBytes(ck.latest.completed.state_size) : "—"}</b></div>
    </div>
    <p class="muted">${esc(config.mode)} every ${fmtDuration(config.interval)}, ${config.unaligned_checkpoints ? "unaligned" : "aligned"}${config.is_incremental ? ", incremental" : ""}, timeout ${fmtDuration(config.timeout)}, into ${esc(config.checkpoint_storage)}${ck.latest.savepoint ? ` · latest savepoint ${ck.latest.savepoint.id}: ${esc(ck.latest.savepoint.external_path)}` : ""}${ck.latest.restored ? ` · restored from ${ck.latest.restored.id ?? "scratch"}` : ""}</p>
    <h2>History <span class="muted">(newest ${ck.history.length}; click one for its subtasks)</span></h2>
    <table id="checkpoint-history"><tr><th>id</th><th>type</th><th>status</th><th>triggered</th><th class="num">duration</th><th class="num">size</th><th class="num">written</th><th class="num">in flight</th><th class="num">alignment</th><th class="num">acks</th><th>failure</th></tr>
      ${ck.history.map(row).join("") || '<tr><td colspan="11" class="muted">none yet</td></tr>'}</table>
    ${detail}`;
}

window.selectCheckpoint = function (id) { state.selectedCheckpoint = id; schedule(0); };

function describeEvent(e) {
  const d = e.data;
  switch (e.kind) {
    case "status": return ["status", `job is ${d.status}`];
    case "checkpoint_completed": return ["checkpoint", `${d.kind === "Savepoint" ? "savepoint" : "checkpoint"} ${d.id} completed in ${d.duration_ms} ms (${fmtBytes(d.bytes)}${d.shared_bytes ? ` + ${fmtBytes(d.shared_bytes)} shared` : ""})`];
    case "checkpoint_failed": return ["failure", `checkpoint ${d.id} failed: ${d.reason}`];
    case "restart": return ["restart", `restart ${d.attempt} in ${d.delay_ms} ms from ${d.from_checkpoint === null ? "scratch" : "checkpoint " + d.from_checkpoint}: ${d.cause}`];
    case "restored": return ["restart", `deployed generation ${d.generation} from ${d.checkpoint === null ? "scratch" : "checkpoint " + d.checkpoint}`];
    case "exception": return ["failure", `${d.vertex} #${d.subtask}: ${d.cause}`];
    case "missed": return ["failure", `${d.count} events missed`];
    default: return ["", e.kind];
  }
}

async function renderExceptions(job) {
  const ex = await api(`/jobs/${job.jid}/exceptions`);
  const entries = ex.exceptionHistory.entries.map(e => {
    const a = e.action;
    const what = a.type === "REGION_RESTARTED" ? `region ${e.region} restarted (attempt ${a.attempt}, after ${a.delay_ms} ms) from ${a.from_checkpoint === null ? "scratch" : "checkpoint " + a.from_checkpoint}`
      : a.type === "SAME_INCIDENT" ? "part of the restart already under way" : `job failed: ${a.reason}`;
    return `<li class="failure"><span class="when">${fmtTime(e.timestamp)}</span><b>${esc(e.taskName)}</b> · ${esc(e.operatorName)} → ${esc(what)}<pre class="cause">${esc(e.stacktrace)}</pre></li>`;
  }).join("");
  const log = state.log.filter(e => e.kind !== "checkpoint_triggered").map(e => {
    const [cls, text] = describeEvent(e);
    return `<li class="${cls}"><span class="when">${fmtTime(e.data.timestamp)}</span>${esc(text)}</li>`;
  }).join("");
  return `
    <h2>Exception history <span class="muted">(newest first; what the supervisor did)</span></h2>
    <ul class="timeline" id="exception-history">${entries || '<li class="muted">no failures</li>'}</ul>
    <h2>Live events <span class="muted">(since this page opened)</span></h2>
    <ul class="timeline" id="event-log">${log || '<li class="muted">waiting for events…</li>'}</ul>`;
}

async function renderJob(r) {
  const job = await api(`/jobs/${r.jid}`);
  openEvents(r.jid);
  setCrumbs(r, job.name);
  let body;
  if (r.tab === "watermarks") body = await renderWatermarks(job);
  else if (r.tab === "checkpoints") body = await renderCheckpoints(job);
  else if (r.tab === "exceptions") body = await renderExceptions(job);
  else body = await renderOverview(job, r);
  app.innerHTML = jobHead(job, r) + `<div id="view" data-view="${esc(r.tab)}">${body}</div>`;
}

// ---- loop ------------------------------------------------------------------------------

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const r = parseRoute();
  if (!state.route || state.route.jid !== r.jid) state.selectedCheckpoint = null;
  state.route = r;
  try {
    if (r.view === "jobs") { setCrumbs(r); if (state.events) { state.events.close(); state.events = null; state.eventsJob = null; } await renderJobs(); }
    else await renderJob(r);
    live.classList.remove("stale");
    live.textContent = "live";
  } catch (e) {
    live.classList.add("stale");
    live.textContent = "offline";
    if (e.status === 404 || e.status === 400) app.innerHTML = `<p class="error">${esc(e.message)}</p><p><a href="#/">all jobs</a></p>`;
  } finally {
    state.busy = false;
  }
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => { await refresh(); schedule(1000); }, ms);
}

window.addEventListener("hashchange", () => schedule(0));
schedule(0);
