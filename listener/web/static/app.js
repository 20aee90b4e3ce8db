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

// A viridis-like ramp, the same anchors as the clip pictures (events/sinks/clips.py).
const ANCHORS = [[68,1,84],[72,40,120],[62,74,137],[49,104,142],[38,130,142],[31,158,137],
  [53,183,121],[109,205,89],[180,222,44],[253,231,37]];
const LUT = Array.from({ length: 256 }, (_, i) => {
  const x = i / 255 * (ANCHORS.length - 1), j = Math.min(Math.floor(x), ANCHORS.length - 2);
  const f = x - j;
  return ANCHORS[j].map((c, k) => Math.round(c + f * (ANCHORS[j + 1][k] - c)));
});

// ---- status -------------------------------------------------------------
function coverageBar(cov, now) {
  const bar = el("div", { class: "bar", title: "last 24 h" });
  const day = 86400, t0 = now - day;
  for (const s of cov.spans) {
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

async function statusPage() {
  const box = $("#stations");
  const draw = async () => {
    const data = await getJSON("/api/status");
    box.replaceChildren();
    for (const st of data.stations) {
      const table = el("table", { class: "kv" });
      for (const [k, v] of Object.entries(st)) {
        if (k === "coverage" || k === "station_id") continue;
        const text = v !== null && typeof v === "object"
          ? Object.entries(v).map(([a, b]) => `${a}: ${b}`).join(", ") : String(v ?? "–");
        table.append(el("tr", {}, el("td", { text: k.replaceAll("_", " ") }), el("td", { text })));
      }
      const card = el("div", { class: "card station", "data-station": st.station_id },
        el("h2", { text: st.station_id }), table);
      if (st.coverage) {
        card.append(el("p", { class: "muted", text: "Last hour: " + covText(st.coverage.hour) }),
          coverageBar(st.coverage, data.now),
          el("p", { class: "muted", text: "Last day: " + covText(st.coverage.day) }));
      }
      box.append(card);
    }
  };
  await draw();
  setInterval(() => draw().catch((e) => console.error(e)), 5000);
}

// ---- live ---------------------------------------------------------------
const live = { cols: 0, scores: [], end: null, messages: 0 };
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
  const w = ctx.canvas.width, h = ctx.canvas.height;
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#888"; ctx.setLineDash([4, 4]); ctx.beginPath();
  ctx.moveTo(0, h * 0.5); ctx.lineTo(w, h * 0.5); ctx.stroke(); ctx.setLineDash([]);
  if (live.end === null) return;
  for (const [offset, , score] of live.scores) {
    const x = w - (live.end - offset) * colsPerS;
    if (x < -colsPerS * 2 || x > w) continue;
    ctx.fillStyle = score >= 0.5 ? "#fde725" : "#3b8bc2";
    ctx.fillRect(x, h - score * h, Math.max(2, colsPerS * 2 - 2), score * h);
  }
}

function livePage() {
  const spec = $("#spec").getContext("2d"), scores = $("#scores").getContext("2d");
  const params = new URLSearchParams(location.search);
  const station = params.get("station") || "";
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
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": session.csrf };
  const token = $("#f-token").value || sessionStorage.getItem("listener-token");
  if (token) { headers.Authorization = `Bearer ${token}`; sessionStorage.setItem("listener-token", token); }
  const body = JSON.stringify({ SRKWFound: data.get("SRKWFound"), tags: data.get("tags") || "",
    comments: data.get("comments") || "", moderator: data.get("moderator") || "" });
  const r = await fetch(`/api/detections/${det.id}/review?station=${encodeURIComponent(det.station)}`,
    { method: "POST", headers, body });
  const note = form.querySelector(".result");
  if (r.ok) {
    const review = await r.json();
    note.className = "result"; note.textContent = `saved: ${review.SRKWFound} (${review.dateModerated})`;
    localStorage.setItem("listener-moderator", data.get("moderator") || "");
  } else {
    note.className = "result error"; note.textContent = `not saved: ${r.status} ${await r.text()}`;
  }
}

function reviewForm(det) {
  const form = el("form", { class: "review" });
  const verdicts = el("div", {}, el("label", { text: "Killer whales?" }));
  for (const v of ["yes", "no", "don't know"]) {
    const input = el("input", { type: "radio", name: "SRKWFound", value: v });
    if (det.review && det.review.SRKWFound === v) input.checked = true;
    verdicts.append(el("label", { style: "display:inline; margin-right:.6em" }, input, ` ${v}`));
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

async function detectionsPage() {
  session = await getJSON("/api/session");
  $("#tokenbox").hidden = !session.review_needs_token;
  for (const s of session.stations) $("#f-station").append(el("option", { value: s, text: s }));
  const load = async () => {
    const q = new URLSearchParams({ reviewed: $("#f-reviewed").value });
    if ($("#f-station").value) q.set("station", $("#f-station").value);
    if ($("#f-date").value) q.set("date", $("#f-date").value);
    const data = await getJSON(`/api/detections?${q}`);
    const list = $("#list");
    list.replaceChildren();
    if (!data.detections.length) list.append(el("p", { class: "muted", text: "No detections." }));
    for (const det of data.detections) list.append(detectionCard(det));
  };
  for (const id of ["#f-station", "#f-date", "#f-reviewed"]) $(id).addEventListener("change", load);
  await load();
}

const pages = { status: statusPage, live: livePage, detections: detectionsPage };
pages[document.body.dataset.page]();
