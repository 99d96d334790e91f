// Shaping preview (prefaudit.views.shaper.ShaperPreview): a light SVG, redrawn on every
// `version` change (Python sets all traits, then bumps `version`, so one redraw per update).
//
//   features     [{id, label, weight, before, after}]   predicted learning signal (standardised)
//   bins         counts of the pair margins             m_i = clip(Σ_f w_f Δ_if / s_f, ±cap), in
//                                                       equal bins over [−cap, +cap] (computed in
//                                                       Python, exact; no margin travels)
//   n_dominated, n_pairs, threshold                     dominated: m_i ≤ −threshold (what filter
//                                                       drops and flip swaps; prefaudit.shaping)
//   n_capped, cap                                       pairs whose summed margin hit ±cap
//
// The root carries data-version: a counter incremented on every redraw (browser tests time
// "slider released → preview redrawn" with it).

const SVG = "http://www.w3.org/2000/svg";
const W = 460; // viewBox width; the SVG scales to its container
const MAX_BARS = 40; // more bins than this on screen are merged in pairs

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x) {
  return Number.isFinite(x) ? (x >= 0 ? "+" : "") + x.toFixed(2) : "–";
}

// The part of the fixed bins worth drawing: symmetric about 0, at least ±2·threshold, out to
// the outermost non-empty bin; adjacent bins summed in pairs while more than MAX_BARS would show
// (sums of exact counts stay exact). Returns {extent, counts}.
export function shownBins(bins, cap, threshold) {
  const n = bins.length;
  const width = (2 * cap) / n;
  let reach = 2 * threshold;
  bins.forEach((c, k) => {
    if (c > 0) reach = Math.max(reach, Math.abs(-cap + k * width), Math.abs(-cap + (k + 1) * width));
  });
  let half = Math.min(n / 2, Math.ceil(reach / width - 1e-9)); // bins on each side of 0
  let merge = 1;
  while ((2 * half) / merge > MAX_BARS) merge *= 2;
  half = Math.min(n / 2, Math.ceil(half / merge) * merge);
  const first = n / 2 - half;
  const counts = [];
  for (let k = first; k < n / 2 + half; k += merge) {
    let c = 0;
    for (let j = k; j < Math.min(k + merge, n); j += 1) c += bins[j];
    counts.push(c);
  }
  return { extent: (half * 2 * cap) / n, counts };
}

function signalChart(features) {
  const rowH = 24;
  const left = 150;
  const right = W - 78;
  const h = Math.max(1, features.length) * rowH + 26;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${h}`, class: "pa-signal", role: "img" });
  chart.appendChild(svg("title", {}, "predicted learning signal per feature, before and after shaping (standardised)"));
  const extent = Math.max(0.1, ...features.flatMap((f) => [Math.abs(f.before), Math.abs(f.after)]).filter(Number.isFinite));
  const x = (v) => left + ((v + extent) / (2 * extent)) * (right - left);
  chart.appendChild(svg("line", { x1: x(0), x2: x(0), y1: 14, y2: h - 4, class: "pa-axis" }));
  chart.appendChild(svg("text", { x: left, y: 10, class: "pa-tick" }, fmt(-extent)));
  chart.appendChild(svg("text", { x: right, y: 10, class: "pa-tick", "text-anchor": "end" }, fmt(extent)));
  features.forEach((f, i) => {
    const y = 18 + i * rowH;
    const g = svg("g", { class: "pa-signal-row" });
    g.dataset.feature = f.id;
    const name = f.label ? `${f.id} ${f.label}` : f.id;
    g.appendChild(svg("text", { x: 0, y: y + 12, class: "pa-name" }, name.length > 27 ? name.slice(0, 26) + "…" : name));
    const bar = (v, dy, cls) => {
      const x0 = Math.min(x(0), x(v));
      g.appendChild(svg("rect", { x: x0, y: y + dy, width: Math.max(1, Math.abs(x(v) - x(0))), height: 8, class: cls }));
    };
    bar(f.before, 2, "pa-before");
    bar(f.after, 11, "pa-after");
    g.appendChild(svg("text", { x: W, y: y + 12, class: "pa-value", "text-anchor": "end" }, `${fmt(f.before)}→${fmt(f.after)}`));
    chart.appendChild(g);
  });
  return chart;
}

function marginChart(bins, cap, threshold) {
  const h = 120;
  const top = 8;
  const bottom = h - 18;
  // Margins are capped at ±cap, so the axis reaches at most max(2·threshold, cap).
  const { extent, counts } = shownBins(bins, cap, threshold);
  const maxCount = Math.max(1, ...counts);
  const x = (v) => ((v + extent) / (2 * extent)) * W;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${h}`, class: "pa-margins", role: "img" });
  chart.appendChild(svg("title", {}, "distribution of pair margins"));
  // Shade the dominated side only, m <= -threshold: the pairs filter drops and flip swaps.
  chart.appendChild(svg("rect", { x: 0, y: top, width: x(-threshold), height: bottom - top, class: "pa-dominated-zone" }));
  const bw = W / Math.max(1, counts.length);
  counts.forEach((c, k) => {
    if (!c) return;
    const hh = ((bottom - top) * c) / maxCount;
    const bar = svg("rect", { x: k * bw + 0.5, y: bottom - hh, width: Math.max(0.5, bw - 1), height: hh, class: "pa-bin" });
    bar.dataset.count = String(c);
    chart.appendChild(bar);
  });
  chart.appendChild(svg("line", { x1: x(-threshold), x2: x(-threshold), y1: top, y2: bottom, class: "pa-threshold" }));
  chart.appendChild(svg("line", { x1: 0, x2: W, y1: bottom, y2: bottom, class: "pa-axis" }));
  chart.appendChild(svg("text", { x: 0, y: h - 4, class: "pa-tick" }, fmt(-extent)));
  chart.appendChild(svg("text", { x: W / 2, y: h - 4, class: "pa-tick", "text-anchor": "middle" }, "pair margin m"));
  chart.appendChild(svg("text", { x: W, y: h - 4, class: "pa-tick", "text-anchor": "end" }, fmt(extent)));
  return chart;
}

function draw(model, root) {
  const features = model.get("features") || [];
  const bins = model.get("bins") || [];
  const threshold = model.get("threshold") || 1;
  const nPairs = model.get("n_pairs");
  const nDom = model.get("n_dominated");
  const nCapped = model.get("n_capped") || 0;
  const cap = model.get("cap");
  root.replaceChildren();
  root.appendChild(el("div", "pa-preview-title", "Predicted learning signal (standardised): before → after"));
  if (features.length) root.appendChild(signalChart(features));
  else root.appendChild(el("div", "pa-empty", "Select features (volcano or “add feature”) to see their predicted signal."));
  const legend = el("div", "pa-preview-legend");
  legend.appendChild(el("span", "pa-key pa-before", ""));
  legend.appendChild(el("span", null, "before"));
  legend.appendChild(el("span", "pa-key pa-after", ""));
  legend.appendChild(el("span", null, "after shaping"));
  root.appendChild(legend);
  root.appendChild(el("div", "pa-preview-title", "Pair margins"));
  root.appendChild(marginChart(bins, cap || 4, threshold));
  const pct = nPairs ? ((100 * nDom) / nPairs).toFixed(1) : "0";
  const dom = el("div", "pa-dominated", `${nDom} of ${nPairs} pairs (${pct}%) have margin ≤ −${threshold}: filter would drop them, flip would swap them.`);
  dom.dataset.count = String(nDom);
  root.appendChild(dom);
  if (nCapped > 0) {
    const capped = el("div", "pa-capped", `${nCapped} pair margins reached the cap of ±${cap} logits.`);
    capped.dataset.count = String(nCapped);
    root.appendChild(capped);
  }
}

function render({ model, el: host }) {
  const root = el("div", "pa-preview");
  let redraws = 0;
  const redraw = () => {
    draw(model, root);
    redraws += 1;
    root.dataset.version = String(redraws);
    root.dataset.modelVersion = String(model.get("version"));
  };
  host.appendChild(root);
  model.on("change:version", redraw);
  redraw();
  return () => {
    model.off("change:version", redraw);
    root.remove();
  };
}

export default { render };
