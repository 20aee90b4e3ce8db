// listener console: plain browser JavaScript, no build step, no external code.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid);
  return node;
};
const getJSON = async (url) => {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
};
const fmtSeconds = (s) => s == null ? "–" : s < 90 ? `${s.toFixed(0)} s`
  : s < 5400 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
const localTime = (iso) => iso ? new Date(iso).toLocaleString() : "–";
const ago = (s) => s == null ? "–" : `${fmtSeconds(s)} ago`;
const errorText = (err) => err ? `${err.text || err.message}${err.age_s != null ? ` (${ago(err.age_s)})` : ""}` : "–";
const query = new URLSearchParams(location.search);

// The session (stations, CSRF token) once per page; a fleet's pages link its overview.
let sessionPromise = null;
const getSession = () => (sessionPromise ??= getJSON("/api/session"));
async function initNav() {
  const s = await getSession();
  if (s.stations.length > 1 || s.skipped) {
    for (const a of document.querySelectorAll(".fleet-only")) a.hidden = false;
  }
}

// A viridis-like ramp, the same anchors as the clip pictures (events/sinks/clips.py).
const ANCHORS = [[68,1,84],[72,40,120],[62,74,137],[49,104,142],[38,130,142],[31,158,137],
  [53,183,121],[109,205,89],[180,222,44],[253,231,37]];
const LUT = Array.from({ length: 256 }, (_, i) => {
  const x = i / 255 * (ANCHORS.length - 1), j = Math.min(Math.floor(x), ANCHORS.length - 2);
  const f = x - j;
  return ANCHORS[j].map((c, k) => Math.round(c + f * (ANCHORS[j + 1][k] - c)));
});

// ---- status -------------------------------------------------------------
function coverageBar(cov, now, runningSince) {
  const bar = el("div", { class: "bar", title: "last 24 h" });
  const day = 86400, t0 = now - day;
  // Since this run started the daemon is running: time there that is neither
  // scored nor lost is "running, nothing received", not "not running".
  const spans = runningSince ? [{ kind: "idle", start: Math.max(runningSince, t0), end: now,
    reason: "running, nothing received" }, ...cov.spans] : cov.spans;
  for (const s of spans) {
    const left = (s.start - t0) / day * 100, width = (s.end - s.start) / day * 100;
    const span = el("span", { class: s.kind,
      title: `${s.kind}${s.reason ? " (" + s.reason + ")" : ""}: ` +
             `${new Date(s.start * 1000).toISOString()} – ${new Date(s.end * 1000).toISOString()}` });
    span.style.left = `${left}%`;
    span.style.width = `${Math.max(width, 0.1)}%`;
    bar.append(span);
  }
  return bar;
}

function covText(sum) {
  const lost = Object.entries(sum.lost_s).map(([k, v]) => `${fmtSeconds(v)} ${k}`).join(", ");
  return `${(sum.scored_ratio * 100).toFixed(1)} % scored (${fmtSeconds(sum.scored_s)})` +
    (lost ? `, lost: ${lost}` : "") + `, unknown ${fmtSeconds(sum.unknown_s)}`;
}

// The stream's level (dB re full scale); null until audio is decoded.
function fmtLevel(v) { return v === null || v === undefined ? "–" : `${v.toFixed(1)} dBFS`; }

// The models whose trained levels the stream has stayed outside of (their scores
// there are untested); empty when inside, or when no model records its levels.
function fmtOutside(v) {
  if (!v || !v.length) return "–";
  return v.map((o) => `${o.side} the levels ${o.model} trained at ` +
    `(${o.trained_dbfs[0]} to ${o.trained_dbfs[1]} dBFS)`).join("; ");
}

// How the status page words a few fields; the rest print as they come.
const STATUS_FORMAT = {
  lag_s: fmtSeconds, backlog_s: fmtSeconds, last_segment_s_ago: ago, last_error: errorText,
  live_edge_utc: localTime, last_scored_utc: localTime, now_utc: localTime,
  audio_level_dbfs: fmtLevel, level_outside: fmtOutside,
};

const STATUS_LABEL = { lag_s: "lag", backlog_s: "backlog", last_segment_s_ago: "last segment",
  live_edge_utc: "live edge", last_scored_utc: "last scored", now_utc: "now",
  audio_level_dbfs: "audio level", level_outside: "outside model levels" };

async function statusPage() {
  const box = $("#stations");
  const only = query.get("station");
  const draw = async () => {
    const data = await getJSON("/api/status");
    box.replaceChildren();
    for (const st of data.stations) {
      if (only && st.station_id !== only) continue;
      const table = el("table", { class: "kv" });
      for (const [k, v] of Object.entries(st)) {
        if (k === "coverage" || k === "station_id") continue;
        const text = STATUS_FORMAT[k] ? STATUS_FORMAT[k](v)
          : v !== null && typeof v === "object"
            ? Object.entries(v).map(([a, b]) => `${a}: ${b ?? "–"}`).join(", ") : String(v ?? "–");
        const label = STATUS_LABEL[k] || k.replaceAll("_", " ");
        const row = el("tr", { class: `f-${k}` }, el("td", { text: label }), el("td", { text }));
        if (k === "last_error" && v) row.classList.add("error");
        if (k === "level_outside" && v && v.length) row.classList.add("warn");
        table.append(row);
      }
      const links = el("p", {}, el("a", { href: `/live?station=${encodeURIComponent(st.station_id)}`,
        text: "live view" }), " · ", el("a", { href: `/detections?station=${encodeURIComponent(st.station_id)}`,
        text: "detections" }));
      const card = el("div", { class: "card station", "data-station": st.station_id },
        el("h2", { text: st.station_id }), table, links);
      if (st.coverage) {
        card.append(el("p", { class: "muted", text: "Last hour: " + covText(st.coverage.hour) }),
          coverageBar(st.coverage, data.now, st.running_since),
          el("p", { class: "muted", text: "Last day: " + covText(st.coverage.day) }));
      }
      box.append(card);
    }
  };
  await draw();
  setInterval(() => draw().catch((e) => console.error(e)), 5000);
}

// ---- fleet overview -----------------------------------------------------
function stateChip(row) {
  const err = row.last_error && row.last_error.age_s != null && row.last_error.age_s < 600;
  const kind = row.ready ? (err ? "warn" : "ok") : row.state === "running" ? "warn" : "bad";
  return el("span", { class: `state ${kind}`, title: row.readiness || "", text: row.state || "?" });
}

function coverageCells(cov, cellS) {
  const box = el("span", { class: "cells", title: "last 24 h, oldest on the left" });
  if (!cov) { box.title = "no coverage recorded"; return box; }
  const names = { s: "scored", l: "some lost", p: "partly scored", "-": "unknown" };
  [...cov.cells].forEach((c, i) => {
    const hoursAgo = ((cov.cells.length - i) * cellS / 3600).toFixed(1);
    box.append(el("span", { class: c === "-" ? "n" : c, title: `${names[c]}, ${hoursAgo} h ago` }));
  });
  return box;
}

function levelCell(row) {
  const outside = row.level_outside && row.level_outside.length;
  const kind = row.silent ? " err" : outside ? " warn" : "";
  const title = row.silent ? "silent: digital silence or a dead hydrophone; nothing can be detected"
    : outside ? fmtOutside(row.level_outside) + ": scores at this level are untested"
      : "RMS of the last 10 s, dB re full scale";
  const word = row.silent ? " silent" : outside ? " " + row.level_outside[0].side : "";
  return el("td", { class: `num level${kind}`, title, text: fmtLevel(row.audio_level_dbfs) + word });
}

function fleetRow(row, cellS) {
  const id = encodeURIComponent(row.station_id);
  const err = row.last_error;
  return el("tr", { "data-station": row.station_id },
    el("td", { class: "name", title: row.name || "" }, el("b", { text: row.station_id })),
    el("td", {}, stateChip(row)),
    el("td", { class: "num", text: fmtSeconds(row.lag_s) }),
    el("td", { text: ago(row.last_segment_s_ago) }),
    levelCell(row),
    el("td", { class: err ? "err" : "muted", title: err ? errorText(err) : "", text: errorText(err) }),
    el("td", {}, coverageCells(row.coverage, cellS),
      el("small", { text: row.coverage ? `${(row.coverage.scored_ratio * 100).toFixed(0)} %` : "" })),
    el("td", { class: "num", text: String(row.detections_today) }),
    el("td", { class: "links" }, el("a", { href: `/status?station=${id}`, text: "status" }),
      el("a", { href: `/live?station=${id}`, text: "live" }),
      el("a", { href: `/detections?station=${id}`, text: "detections" })));
}

async function overviewPage() {
  const draw = async () => {
    const data = await getJSON("/api/overview");
    const rows = data.stations;
    $("#fleet tbody").replaceChildren(...rows.map((r) => fleetRow(r, data.cell_s)));
    const ready = rows.filter((r) => r.ready).length;
    const errors = rows.filter((r) => r.last_error).length;
    const silent = rows.filter((r) => r.silent).length;
    const outside = rows.filter((r) => !r.silent && r.level_outside && r.level_outside.length).length;
    const today = rows.reduce((n, r) => n + r.detections_today, 0);
    const skipped = data.skipped || [];
    $("#fleet-summary").textContent = `${rows.length} stations, ${ready} ready, ` +
      `${errors} with an error, ${silent} silent, ${outside} outside model levels, ` +
      `${today} detections today` +
      (skipped.length ? `, ${skipped.length} config file(s) not loaded` : "");
    $("#skipped").hidden = !skipped.length;
    $("#skipped tbody").replaceChildren(...skipped.map((s) => el("tr", {},
      el("td", { class: "name", text: s.file }), el("td", { class: "why", text: s.error }))));
  };
  await draw();
  setInterval(() => draw().catch((e) => console.error(e)), 5000);
}

// ---- live ---------------------------------------------------------------
const live = { cols: 0, scores: [], end: null, messages: 0, threshold: 0.5 };
window.liveState = live;  // read by the browser tests

function drawColumns(ctx, bytes, nCols, bins) {
  const w = ctx.canvas.width, h = ctx.canvas.height;
  if (nCols >= w) nCols = w;
  const skip = bytes.length / bins - nCols;
  ctx.drawImage(ctx.canvas, -nCols, 0);  // scroll left
  const img = ctx.createImageData(nCols, h);
  for (let c = 0; c < nCols; c++) {
    for (let y = 0; y < h; y++) {
      const bin = Math.min(bins - 1, Math.floor((h - 1 - y) * bins / h));
      const rgb = LUT[bytes[(skip + c) * bins + bin]];
      const i = (y * nCols + c) * 4;
      img.data[i] = rgb[0]; img.data[i + 1] = rgb[1]; img.data[i + 2] = rgb[2]; img.data[i + 3] = 255;
    }
  }
  ctx.putImageData(img, w - nCols, 0);
}

function drawScores(ctx, colsPerS) {
  const w = ctx.canvas.width, h = ctx.canvas.height, t = live.threshold;
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
  ctx.fillStyle = "#2a2f3a";  // faint grid at 0.25, 0.5, 0.75
  for (const g of [0.25, 0.5, 0.75]) ctx.fillRect(0, Math.round(h - g * h), w, 1);
  if (live.end !== null) {
    for (const [offset, , score] of live.scores) {
      const x = w - (live.end - offset) * colsPerS;
      if (x < -colsPerS * 2 || x > w) continue;
      ctx.fillStyle = score >= t ? "#fde725" : "#3b8bc2";
      ctx.fillRect(x, h - score * h, Math.max(2, colsPerS * 2 - 2), score * h);
    }
  }
  // The threshold last, over the bars, dark under light so it shows on yellow too.
  const y = Math.round(h - t * h) + 0.5;
  ctx.lineWidth = 3; ctx.strokeStyle = "#111"; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
  ctx.lineWidth = 1; ctx.strokeStyle = "#f4f4f4"; ctx.setLineDash([5, 4]);
  ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke(); ctx.setLineDash([]);
}

// Axis ticks beside the canvases: `at` is the position in % from the top (y) or left (x).
function ticks(box, marks, axis) {
  for (const old of box.querySelectorAll(".tick")) old.remove();
  for (const [at, text] of marks) {
    const tick = el("span", { class: "tick", text });
    if (axis === "y") tick.style.top = `${at}%`; else tick.style.left = `${at}%`;
    box.append(tick);
  }
}

function drawAxes(colsPerS, threshold) {
  const spanS = $("#spec").width / colsPerS, kHz = 10;
  ticks($("#spec-y"), [0, 2, 4, 6, 8, 10].map((f) => [100 - f / kHz * 100, `${f}`]), "y");
  ticks($("#score-y"), [[0, "1"], [50, "0.5"], [100, "0"], [100 - threshold * 100, `${threshold} –`]]
    .filter(([at], i) => i < 3 || Math.abs(at - 50) > 8), "y");
  const step = spanS > 120 ? 30 : 15, marks = [];
  for (let s = 0; s < spanS; s += step) marks.push([100 - s / spanS * 100, s ? `−${s} s` : "0 s"]);
  ticks($("#time-x"), marks, "x");
  if (!$("#time-x .unit")) $("#time-x").append(el("span", { class: "unit", text: "before the newest audio" }));
}

function livePage() {
  const spec = $("#spec").getContext("2d"), scores = $("#scores").getContext("2d");
  const params = new URLSearchParams(location.search);
  const station = params.get("station") || "";
  drawAxes(8, live.threshold);
  drawScores(scores, 8);
  const source = new EventSource("/api/live" + (station ? `?station=${encodeURIComponent(station)}` : ""));
  source.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    $("#station").textContent = msg.station;
    if (msg.cols > 0) {
      const bytes = Uint8Array.from(atob(msg.spec), (ch) => ch.charCodeAt(0));
      drawColumns(spec, bytes, msg.cols, msg.bins);
      live.cols += msg.cols;
    }
    if (msg.end_s !== null) live.end = msg.end_s;
    if (msg.threshold != null && msg.threshold !== live.threshold || !live.messages) {
      live.threshold = msg.threshold ?? live.threshold;
      $("#threshold").textContent = String(live.threshold);
      drawAxes(msg.cols_per_s, live.threshold);
    }
    live.scores.push(...msg.scores);
    if (live.scores.length > 600) live.scores.splice(0, live.scores.length - 600);
    live.messages += 1;
    drawScores(scores, msg.cols_per_s);
    const last = live.scores.length ? live.scores[live.scores.length - 1][2].toFixed(3) : "–";
    $("#livestate").textContent = `${live.cols} columns, ${live.scores.length} window scores; ` +
      `latest score ${last}`;
  };
  source.onerror = () => { $("#livestate").textContent = "disconnected; retrying…"; };
}

// ---- detections ---------------------------------------------------------
let session = null;

async function submitReview(form, det) {
  const data = new FormData(form);
  const note = form.querySelector(".result");
  if (!data.get("SRKWFound")) {  // the server refuses it too; say so before sending
    note.className = "result error";
    note.textContent = "Choose yes, no or don't know before saving.";
    form.querySelector("input[name=SRKWFound]").focus();
    return;
  }
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": session.csrf };
  const token = $("#f-token").value || sessionStorage.getItem("listener-token");
  if (token) { headers.Authorization = `Bearer ${token}`; sessionStorage.setItem("listener-token", token); }
  const body = JSON.stringify({ SRKWFound: data.get("SRKWFound"), tags: data.get("tags") || "",
    comments: data.get("comments") || "", moderator: data.get("moderator") || "" });
  const r = await fetch(`/api/detections/${det.id}/review?station=${encodeURIComponent(det.station)}`,
    { method: "POST", headers, body });
  if (r.ok) {
    const review = await r.json();
    note.className = "result"; note.textContent = `saved: ${review.SRKWFound} (${review.dateModerated})`;
    localStorage.setItem("listener-moderator", data.get("moderator") || "");
  } else {
    note.className = "result error"; note.textContent = `not saved: ${r.status} ${await r.text()}`;
  }
}

function reviewForm(det) {
  const form = el("form", { class: "review", novalidate: "" });
  const verdicts = el("div", { class: "verdicts" }, el("span", { class: "muted", text: "Killer whales? " }));
  for (const v of ["yes", "no", "don't know"]) {
    const input = el("input", { type: "radio", name: "SRKWFound", value: v });
    if (det.review && det.review.SRKWFound === v) input.checked = true;
    verdicts.append(el("label", {}, input, ` ${v}`));
  }
  const r = det.review || {};
  form.append(verdicts,
    el("div", {}, el("label", { text: "Tags (; separated)" }), el("input", { name: "tags", value: r.tags || "" })),
    el("div", {}, el("label", { text: "Comment" }), el("input", { name: "comments", value: r.comments || "" })),
    el("div", {}, el("label", { text: "Moderator" }), el("input", { name: "moderator",
      value: r.moderator || localStorage.getItem("listener-moderator") || "" })),
    el("button", { type: "submit", text: "Save review" }), el("span", { class: "result" }));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); submitReview(form, det); });
  return form;
}

function detectionCard(det) {
  const media = el("div");
  media.append(det.image ? el("img", { src: det.image, alt: `spectrogram of ${det.id}` })
    : el("p", { class: "muted", text: "no picture" }));
  if (det.audio) media.append(el("audio", { controls: "", preload: "none", src: det.audio }));
  const verdict = det.review ? el("span", { class: `verdict-${det.review.SRKWFound.split(" ")[0]}`,
    text: `reviewed: ${det.review.SRKWFound}` }) : el("span", { class: "muted", text: "not reviewed" });
  const info = el("div", {},
    el("h2", { text: `${det.station}: ${det.label}, confidence ${det.confidence?.toFixed(1)}` }),
    el("table", { class: "kv" },
      el("tr", {}, el("td", { text: "UTC" }), el("td", { text: det.timestamp || "–" })),
      el("tr", {}, el("td", { text: "local" }), el("td", { text: localTime(det.timestamp) })),
      el("tr", {}, el("td", { text: "model" }), el("td", { text: det.model || "–" })),
      el("tr", {}, el("td", { text: "id" }), el("td", { text: det.id }))),
    verdict, reviewForm(det));
  return el("div", { class: "card det", "data-id": det.id }, media, info);
}

const PAGE_SIZE = 20;

async function detectionsPage() {
  session = await getSession();
  $("#tokenbox").hidden = !session.review_needs_token;
  for (const s of session.stations) $("#f-station").append(el("option", { value: s, text: s }));
  if (session.stations.includes(query.get("station"))) $("#f-station").value = query.get("station");
  let offset = 0;
  const load = async () => {
    const q = new URLSearchParams({ reviewed: $("#f-reviewed").value, offset, limit: PAGE_SIZE });
    if ($("#f-station").value) q.set("station", $("#f-station").value);
    if ($("#f-date").value) q.set("date", $("#f-date").value);
    const data = await getJSON(`/api/detections?${q}`);
    const list = $("#list");
    list.replaceChildren();
    if (!data.detections.length) list.append(el("p", { class: "muted", text: "No detections." }));
    for (const det of data.detections) list.append(detectionCard(det));
    $("#pageinfo").textContent = data.total ? `${offset + 1}–${offset + data.detections.length} ` +
      `of ${data.total}, newest first` : "";
    $("#newer").disabled = offset === 0;
    $("#older").disabled = offset + data.detections.length >= data.total;
  };
  const restart = () => { offset = 0; load(); };
  for (const id of ["#f-station", "#f-date", "#f-reviewed"]) $(id).addEventListener("change", restart);
  $("#newer").addEventListener("click", () => { offset = Math.max(0, offset - PAGE_SIZE); load(); });
  $("#older").addEventListener("click", () => { offset += PAGE_SIZE; load(); });
  await load();
}

const pages = { status: statusPage, overview: overviewPage, live: livePage,
  detections: detectionsPage, notfound: async () => {} };
initNav().catch((e) => console.error(e));
pages[document.body.dataset.page]();
