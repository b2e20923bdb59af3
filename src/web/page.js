// fleetsim's live page: draws the frames the server pushes (/events) on canvases. No library,
// nothing fetched from anywhere but the fleetsim that served the page.
"use strict";

const COLOURS = {
  pending: "#36404c", enrolling: "#d29922", connecting: "#58a6ff", online: "#3fb950",
  renewing: "#a371f7", backoff: "#f0883e", revoked: "#f85149", failed: "#ff00aa", done: "#6e7681",
};
const SERIES = ["#58a6ff", "#3fb950", "#d29922", "#a371f7", "#f0883e", "#f85149", "#39c5cf", "#e3b341"];
const PHASES = ["ca.issue", "mqtt.connect", "hub.register", "dps.register", "ca.renew", "mqtt.publish", "revoke.cutoff", "method.invoke"];

// What the page shows, also read by tests (tests/it/web_view.rs).
const fleetsim = (window.fleetsim = { meta: null, frame: null, history: [], drawn: {}, frames: 0, layout: null });

function $(id) { return document.getElementById(id); }

function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.height / (canvas._ratio || 1);
  if (canvas._w !== w || canvas._ratio !== ratio) {
    canvas._w = w; canvas._ratio = ratio;
    canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
    canvas.style.height = h + "px";
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function decode(b64) {
  const raw = atob(b64), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toFixed(2);
}

// Cohort blocks of square cells: the largest cell size whose rows fit the canvas.
function mapLayout(w, h, cohorts) {
  const label = 16;
  for (let s = 28; s >= 2; s--) {
    const cols = Math.max(1, Math.floor(w / s));
    let rows = 0;
    for (const c of cohorts) rows += Math.ceil(c.devices / cols);
    if (rows * s + cohorts.length * label <= h || s === 2) return { s, cols, label };
  }
}

function drawMap() {
  const meta = fleetsim.meta, frame = fleetsim.frame;
  if (!meta || !frame) return;
  const canvas = $("map");
  const total = meta.cohorts.reduce((a, c) => a + c.devices, 0);
  const want = Math.max(300, Math.min(900, Math.ceil(Math.sqrt(total) * 9)));
  if (canvas.height / (canvas._ratio || 1) !== want) { canvas.height = want * (canvas._ratio || 1); canvas._w = -1; }
  const { ctx, w, h } = fit(canvas);
  const states = decode(frame.states);
  const L = mapLayout(w, h, meta.cohorts);
  const blocks = [];
  const drawn = {};
  let y = 0, slot = 0;
  const gap = L.s > 4 ? 1 : 0;
  for (const c of meta.cohorts) {
    ctx.fillStyle = "#8a96a3"; ctx.font = "11px system-ui";
    ctx.fillText(c.name + " (" + c.devices + ")", 0, y + 11);
    y += L.label;
    blocks.push({ y, first: slot, devices: c.devices });
    let last = null;
    for (let i = 0; i < c.devices; i++, slot++) {
      const name = meta.state_names[states[slot]] || "pending";
      drawn[name] = (drawn[name] || 0) + 1;
      if (name !== last) { ctx.fillStyle = COLOURS[name] || "#fff"; last = name; }
      ctx.fillRect((i % L.cols) * L.s, y + Math.floor(i / L.cols) * L.s, L.s - gap, L.s - gap);
    }
    y += Math.ceil(c.devices / L.cols) * L.s;
  }
  fleetsim.drawn = drawn;
  fleetsim.layout = { s: L.s, cols: L.cols, blocks };
  $("map-size").textContent = total + " devices";
  $("legend").innerHTML = meta.state_names
    .map((n) => `<span><i style="background:${COLOURS[n]}"></i>${n} <b>${drawn[n] || 0}</b></span>`)
    .join("");
}

function slotAt(x, y) {
  const L = fleetsim.layout;
  if (!L) return null;
  for (const b of L.blocks) {
    const row = Math.floor((y - b.y) / L.s), col = Math.floor(x / L.s);
    if (row < 0 || col >= L.cols) continue;
    const i = row * L.cols + col;
    if (i < b.devices) return b.first + i;
  }
  return null;
}

let hovered = null;
function hover(ev) {
  const r = $("map").getBoundingClientRect();
  const slot = slotAt(ev.clientX - r.left, ev.clientY - r.top);
  const tip = $("tip");
  if (slot === null) { tip.style.display = "none"; hovered = null; return; }
  tip.style.left = ev.clientX + 14 + "px"; tip.style.top = ev.clientY + 14 + "px";
  if (slot === hovered) return;
  hovered = slot;
  fetch("/device/" + slot).then((r) => (r.ok ? r.json() : null)).then((d) => {
    if (!d || hovered !== slot) return;
    const exp = d.not_after ? new Date(d.not_after * 1000).toISOString().replace(".000", "") +
      " (" + (d.expires_in_s >= 0 ? "in " + d.expires_in_s + " s" : "expired") + ")" : "no certificate";
    tip.textContent = `${d.id}\nstate: ${d.state}\ncertificate expires: ${exp}\nlast error: ${d.last_error || "none"}`;
    tip.style.display = "block";
  }).catch(() => {});
}

// A line chart: series of [t, value] points; dashed series drawn dashed; optional log scale.
function chart(canvas, series, opts) {
  const { ctx, w, h } = fit(canvas);
  const pad = { l: 44, r: 8, t: 6, b: 16 };
  const tmax = Math.max(1, fleetsim.meta ? fleetsim.meta.duration_s : 1, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const vals = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v > 0 || !opts.log);
  let lo = opts.log ? Math.max(1e-3, Math.min(...vals, 1)) : 0;
  let hi = Math.max(opts.log ? 10 : 1, ...vals) * 1.1;
  const tr = opts.log ? (v) => Math.log10(Math.max(v, lo)) : (v) => v;
  const [a, b] = [tr(lo), tr(hi)];
  const X = (t) => pad.l + (t / tmax) * (w - pad.l - pad.r);
  const Y = (v) => h - pad.b - ((tr(v) - a) / (b - a || 1)) * (h - pad.t - pad.b);
  ctx.strokeStyle = "#263040"; ctx.fillStyle = "#8a96a3"; ctx.font = "10px system-ui"; ctx.lineWidth = 1;
  const ticks = opts.log ? [] : [0, hi / 2, hi];
  if (opts.log) for (let e = Math.floor(a); e <= b; e++) ticks.push(Math.pow(10, e));
  for (const v of ticks) { const y = Y(v); ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke(); ctx.fillText(fmt(v), 2, y + 3); }
  ctx.fillText(fmt(tmax) + " s", w - pad.r - 34, h - 4);
  for (const ev of (fleetsim.frame && fleetsim.frame.events) || []) {
    ctx.strokeStyle = "#f8514966"; ctx.beginPath(); ctx.moveTo(X(ev.t), pad.t); ctx.lineTo(X(ev.t), h - pad.b); ctx.stroke();
  }
  let lx = pad.l + 4;
  series.forEach((s) => {
    if (!s.points.length) return;
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.setLineDash(s.dashed ? [4, 3] : []);
    // A phase with nothing in some intervals (renewals between storms) is drawn with gaps.
    const gap = 2.5 * (opts.step || Infinity);
    ctx.beginPath();
    s.points.forEach((p, i) => (i && p[0] - s.points[i - 1][0] <= gap ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke(); ctx.setLineDash([]);
    if (s.points.length < 3) s.points.forEach((p) => { ctx.fillStyle = s.color; ctx.fillRect(X(p[0]) - 2, Y(p[1]) - 2, 4, 4); });
    if (!s.dashed) { ctx.fillStyle = s.color; ctx.fillText(s.name, lx, pad.t + 9); lx += ctx.measureText(s.name).width + 10; }
  });
}

function drawCharts() {
  const pts = fleetsim.history;
  const rate = (f) => pts.map((p, i) => {
    const dt = p.t - (i ? pts[i - 1].t : 0);
    return [p.t, dt > 0 ? f(p, i) / dt : 0];
  });
  const ok = (name) => (p) => (p.phases[name] ? p.phases[name].ok : 0);
  chart($("rates"), [
    { name: "enrolments/s", color: SERIES[2], points: rate(ok("ca.issue")) },
    { name: "connects/s", color: SERIES[0], points: rate(ok("mqtt.connect")) },
    { name: "msgs/s", color: SERIES[1], points: rate((p, i) => p.messages_acked - (i ? pts[i - 1].messages_acked : 0)) },
    { name: "renewals/s", color: SERIES[3], points: rate(ok("ca.renew")) },
  ], { log: false });
  const seen = PHASES.filter((n) => pts.some((p) => p.phases[n] && p.phases[n].p99_ms));
  const lat = [];
  seen.forEach((n) => {
    // Each phase keeps its colour as others appear.
    const c = SERIES[PHASES.indexOf(n) % SERIES.length];
    const of = (k) => pts.filter((p) => p.phases[n] && p.phases[n][k]).map((p) => [p.t, p.phases[n][k]]);
    lat.push({ name: n + " p99", color: c, points: of("p99_ms") });
    lat.push({ name: n + " p50", color: c, points: of("p50_ms"), dashed: true });
  });
  const step = pts.length > 1 ? (pts[pts.length - 1].t - pts[0].t) / (pts.length - 1) : Infinity;
  chart($("latency"), lat, { log: true, step });
}

function drawTimeline() {
  const frame = fleetsim.frame, meta = fleetsim.meta;
  const { ctx, w, h } = fit($("timeline"));
  const X = (t) => 6 + (t / Math.max(1, meta.duration_s)) * (w - 12);
  ctx.fillStyle = "#263040"; ctx.fillRect(6, h / 2 - 2, w - 12, 4);
  ctx.fillStyle = "#58a6ff"; ctx.fillRect(6, h / 2 - 2, X(frame.t) - 6, 4);
  ctx.font = "10px system-ui";
  frame.events.forEach((ev, i) => {
    ctx.fillStyle = ev.kind === "revoke" ? "#f85149" : "#d29922";
    ctx.beginPath(); ctx.arc(X(ev.t), h / 2, 6, 0, 7); ctx.fill();
    ctx.fillText(ev.kind + " @" + ev.t.toFixed(0) + "s", Math.min(X(ev.t) - 10, w - 90), i % 2 ? h - 4 : 12);
  });
  $("events").innerHTML = frame.events
    .map((ev) => `<li data-kind="${ev.kind}"><b>${ev.t.toFixed(1)} s</b> ${escapeHtml(ev.detail)}</li>`).join("");
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function drawTables() {
  const frame = fleetsim.frame;
  // Until the report's verdict, a figure only the end of the run knows is "waiting", not FAIL.
  const badge = (t) => !frame.verdict && /^no (samples|operations)/.test(t.actual)
    ? ["wait", "WAIT"] : t.pass ? ["pass", "PASS"] : ["fail", "FAIL"];
  $("thresholds").innerHTML = frame.thresholds.length
    ? frame.thresholds.map((t) => { const [c, text] = badge(t); return `<tr><td><span class="badge ${c}">${text}</span></td><td>${escapeHtml(t.threshold)}</td><td class="n">${escapeHtml(t.actual)}</td></tr>`; }).join("") +
      `<tr><td colspan=3 class=dim>${frame.verdict ? "the report's verdict" : "live, on what was recorded so far"}</td></tr>`
    : "<tr><td class=dim>no thresholds</td></tr>";
  const errs = Object.entries(frame.errors).sort((a, b) => b[1] - a[1]).slice(0, 12);
  $("errors").innerHTML = errs.length
    ? errs.map(([k, n]) => `<tr><td>${escapeHtml(k)}</td><td class="n">${n}</td></tr>`).join("")
    : "<tr><td class=pass>no errors</td></tr>";
}

function drawExpiry() {
  const e = fleetsim.frame.expiry;
  const { ctx, w, h } = fit($("expiry"));
  const bars = [["expired", e.expired, "#f85149"]].concat(
    e.counts.map((n, i) => ["≤" + fmt((i + 1) * e.width_s) + "s", n, "#3fb950"]));
  const max = Math.max(1, ...bars.map((b) => b[1]));
  const bw = (w - 10) / bars.length;
  ctx.font = "10px system-ui";
  bars.forEach(([label, n, colour], i) => {
    const bh = (n / max) * (h - 30);
    ctx.fillStyle = colour; ctx.fillRect(5 + i * bw + 2, h - 16 - bh, bw - 4, bh);
    ctx.fillStyle = "#8a96a3"; ctx.fillText(label, 5 + i * bw + 2, h - 4);
    if (n) ctx.fillText(String(n), 5 + i * bw + 2, h - 18 - bh);
  });
}

function render() {
  const frame = fleetsim.frame, meta = fleetsim.meta;
  if (!frame || !meta) return;
  $("clock").textContent = frame.t.toFixed(0) + " s / " + meta.duration_s.toFixed(0) + " s" + (frame.done ? " (ended)" : "");
  const g = frame.gauges;
  $("totals").textContent = `online ${g.online || 0} · revoked ${g.revoked || 0} · failed ${g.failed || 0}`;
  drawMap(); drawCharts(); drawTimeline(); drawTables(); drawExpiry();
}

function onFrame(frame) {
  fleetsim.frame = frame;
  fleetsim.frames += 1;
  if (frame.point && !fleetsim.meta.replay) {
    const h = fleetsim.history;
    if (!h.length || h[h.length - 1].t < frame.point.t) h.push(frame.point);
  }
  render();
}

async function start() {
  fleetsim.meta = await (await fetch("/meta")).json();
  fleetsim.history = await (await fetch("/history")).json();
  $("title").textContent = fleetsim.meta.title;
  $("mode").textContent = fleetsim.meta.replay ? "replay of a finished run" : "live";
  document.title = "fleetsim · " + fleetsim.meta.title;
  $("map").addEventListener("mousemove", hover);
  $("map").addEventListener("mouseleave", () => { $("tip").style.display = "none"; hovered = null; });
  window.addEventListener("resize", render);
  const source = new EventSource("/events");
  source.addEventListener("frame", (ev) => onFrame(JSON.parse(ev.data)));
  // The server going away at the end of a run is expected: keep the last picture.
  source.onerror = () => { if (fleetsim.frame && fleetsim.frame.done) source.close(); };
}

start();
