"use strict";
// Shared by the dashboard and the miner page: number formats, tables, address links, charts.
const $ = (id) => document.getElementById(id);

// Three significant digits, never rounded to nothing: 438, 12.5, 0.00333, 3.3e-7.
function sig(v) {
  if (v === 0) return "0";
  return String(+v.toPrecision(3));
}
// SI prefixes from k up, three significant digits: "1.23 TH/s", "799 H/s", "0.00333 H/s".
const PREFIXES = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
function si(v, unit) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  let i = 0;
  while (Math.abs(+v.toPrecision(3)) >= 1000 && i < PREFIXES.length - 1) { v /= 1000; i++; }
  const suffix = PREFIXES[i] + (unit || "");
  return sig(v) + (suffix ? " " + suffix : "");
}
const rate = (v) => si(v, "H/s");
function pct(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const p = v * 100;
  return (p === 0 || Math.abs(p) >= 10 ? p.toFixed(1) : sig(p)) + " %";
}
function btc(sats) { return (sats / 1e8).toFixed(8); }
// A duration; under 10 s with significant digits ("0.12 ms", "2.5 s"), never "0 s" for a
// time that is not zero.
function dur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, s);
  if (s === 0) return "0 s";
  if (s < 1e-6) return sig(s * 1e9) + " ns";
  if (s < 1e-3) return sig(s * 1e6) + " µs";
  if (s < 1) return sig(s * 1e3) + " ms";
  if (s < 10) return sig(s) + " s";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  if (s < 86400 * 365 * 2) return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  return sig(s / 86400 / 365) + " years";
}
let now = Date.now() / 1000;
const ago = (t) => t ? dur(Math.round(now - t)) + " ago" : "–";
function clock(t) { const d = new Date(t * 1000); return d.toLocaleTimeString([], {hour12: false}); }
function short(h) { return h ? h.slice(0, 6) + "…" + h.slice(-10) : "–"; }
function set(id, text) { const e = $(id); if (e.textContent !== String(text)) e.textContent = text; }

function cell(row, text, cls, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (title) td.title = title;
  row.appendChild(td);
  return td;
}
function fill(id, items, columns, emptyText) {
  const body = $(id);
  body.textContent = "";
  if (!items.length) {
    const tr = body.insertRow();
    const td = cell(tr, emptyText, "empty");
    td.colSpan = 8;
    return;
  }
  for (const item of items) {
    const tr = document.createElement("tr");
    columns(tr, item);
    body.appendChild(tr);
  }
}

// Copies `text`: the clipboard API where the page is a secure context (localhost, https),
// else a selected hidden text area (plain http from another host).
function copyText(text, button) {
  const done = () => { button.textContent = "copied"; setTimeout(() => { button.textContent = "copy"; }, 1500); };
  const fallback = () => {
    const t = document.createElement("textarea");
    t.value = text; t.setAttribute("readonly", ""); t.style.position = "fixed"; t.style.opacity = "0";
    document.body.appendChild(t); t.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    t.remove();
    if (ok) done();
  };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
  else fallback();
}
function copyButton(text) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "copy"; b.textContent = "copy"; b.title = "copy " + text;
  b.addEventListener("click", (e) => { e.preventDefault(); copyText(text, b); });
  return b;
}
// An address as a link to its page (the full address in the title, cut to fit unless
// `full`) and a copy button; a script hex without an address form is linked the same way.
function addressBox(address, label, full) {
  const box = document.createElement("span");
  box.className = "addrbox" + (full ? " full" : "");
  if (!address) { box.textContent = label || "–"; return box; }
  const a = document.createElement("a");
  a.href = "/miner/" + encodeURIComponent(address);
  a.textContent = label || address;
  a.title = address;
  box.append(a, copyButton(address));
  return box;
}
function addressCell(row, address, label, cls) {
  const td = cell(row, "", "mono" + (cls ? " " + cls : ""));
  td.appendChild(addressBox(address, label));
  return td;
}

async function get(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok && r.status !== 503) throw new Error(path + ": " + r.status);
  return r.json();
}

// Chart ranges: the smallest that covers the node's uptime, until one is chosen.
const RANGES = [600, 3600, 21600, 86400];
function rangeFor(uptime) { return RANGES.find((r) => r >= uptime) || RANGES[RANGES.length - 1]; }
function chartStep(range) { return Math.max(60, range / 72); }
function rangeButtons(id, onChange) {
  const state = {range: null, chosen: false};
  const mark = () => { for (const o of document.querySelectorAll("#" + id + " button")) o.classList.toggle("on", Number(o.dataset.r) === state.range); };
  for (const b of document.querySelectorAll("#" + id + " button")) {
    b.addEventListener("click", () => { state.range = Number(b.dataset.r); state.chosen = true; mark(); onChange(); });
  }
  // Called with the uptime at each refresh: follows it until the reader picks a range.
  state.follow = (uptime) => { if (!state.chosen) { state.range = rangeFor(uptime); mark(); } };
  return state;
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
// The smallest 1, 2, 2.5 or 5 × 10^k at least v, so axis ticks at quarters stay round.
function nice(v) {
  if (!(v > 0) || !isFinite(v)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}
// Draws a chart over buckets starting at `starts` (Unix seconds) into an SVG whose viewBox is
// 1000 wide: `bars` ([{values, color}], overlaid in order) against the left axis (`left`
// formats it), `lines` ([{values (null: no value), color, width, dash}]) against the right
// axis (`right`), green dots where `marks` is true. A line with a point or two gets dots, so
// a young node's first minutes show.
function drawChart(svg, starts, o) {
  svg.textContent = "";
  const vb = svg.viewBox.baseVal;
  const W = vb && vb.width ? vb.width : 1000, H = vb && vb.height ? vb.height : 230;
  const L = 44, R = 70, T = 10, B = 22, w = W - L - R, h = H - T - B;
  const n = Math.max(1, starts.length), bw = w / n;
  const bars = o.bars || [], lines = o.lines || [];
  const leftMax = nice(Math.max(o.leftMin || 4, ...bars.flatMap((b) => b.values)));
  const rightValues = lines.flatMap((l) => l.values.filter((v) => v !== null && isFinite(v)));
  const rightMax = nice(Math.max(o.rightMin || 0, ...rightValues));
  for (let i = 0; i <= 4; i++) {
    const y = T + h - h * i / 4;
    svg.appendChild(el("line", {x1: L, x2: L + w, y1: y, y2: y, stroke: "#eef1f5"}));
    if (bars.length) svg.appendChild(el("text", {x: L - 6, y: y + 4, "text-anchor": "end"}, sig(+(leftMax * i / 4).toFixed(2))));
    if (lines.length) svg.appendChild(el("text", {x: L + w + 6, y: y + 4}, o.right(rightMax * i / 4)));
  }
  for (const b of bars) {
    b.values.forEach((v, i) => {
      if (!(v > 0)) return;
      const hp = h * v / leftMax;
      svg.appendChild(el("rect", {x: L + i * bw + bw * 0.12, width: Math.max(1, bw * 0.76), y: T + h - hp, height: hp, fill: b.color}));
    });
  }
  (o.marks || []).forEach((m, i) => {
    if (m) svg.appendChild(el("circle", {cx: L + (i + 0.5) * bw, cy: T + 6, r: 5, fill: "#1f9d55"}));
  });
  const every = Math.ceil(n / 8);
  starts.forEach((t, i) => {
    if (i % every === 0) svg.appendChild(el("text", {x: L + (i + 0.5) * bw, y: H - 6, "text-anchor": "middle"}, clock(t).slice(0, 5)));
  });
  for (const l of lines) {
    const pts = l.values.map((v, i) => v === null || !isFinite(v) ? null : [L + (i + 0.5) * bw, T + h - h * v / rightMax]);
    const count = pts.filter((p) => p).length;
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const attrs = {points: run.map((p) => p.map((c) => c.toFixed(1)).join(",")).join(" "), fill: "none",
          stroke: l.color, "stroke-width": l.width || 2.5, "stroke-linejoin": "round", "vector-effect": "non-scaling-stroke"};
        if (l.dash) attrs["stroke-dasharray"] = l.dash;
        svg.appendChild(el("polyline", attrs));
      }
      if (run.length === 1 || count <= 3) for (const p of run) svg.appendChild(el("circle", {cx: p[0], cy: p[1], r: 3.5, fill: l.color}));
      run = [];
    };
    for (const p of pts) { if (p) run.push(p); else flush(); }
    flush();
  }
  svg.appendChild(el("line", {x1: L, x2: L + w, y1: T + h, y2: T + h, stroke: "#c9d0da"}));
}

// The header's address box: opens that address's page.
function lookupForm() {
  $("lookup").addEventListener("submit", (e) => {
    e.preventDefault();
    const a = $("lookup-address").value.trim();
    if (a) location.href = "/miner/" + encodeURIComponent(a);
  });
}
