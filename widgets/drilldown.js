// Pair drill-down (prefaudit.views.drilldown.PairsWidget).
//
// Python sends one page of pairs as JSON (`pairs`, `header`, `legend`) and bumps `version` once
// per page (twice for an SAE feature: the rows at once with legend kind "pending", then the
// token shading once the model has read them); the user's controls write `sort`, `page` and `pinned` back. Dataset text is text:
// every string from the data goes through textContent / createTextNode, never innerHTML.

const COLLAPSE_CHARS = 700; // responses longer than this start collapsed behind "show more"

const SORTS = [
  ["abs_delta", "|Δ| (largest difference)"],
  ["delta", "Δ = chosen − rejected"],
  ["chosen", "chosen activation"],
  ["rejected", "rejected activation"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
}

// Background for an activation: orange, opacity proportional to act / page maximum.
function shade(act, max) {
  if (!(act > 0) || !(max > 0)) return "";
  const a = Math.min(1, act / max);
  return `rgba(255, 127, 14, ${(0.12 + 0.78 * a).toFixed(3)})`;
}

function collapsible(body, nChars) {
  const box = el("div", "pa-collapsible");
  box.appendChild(body);
  if (nChars > COLLAPSE_CHARS) {
    box.classList.add("pa-collapsed");
    const more = el("button", "pa-more", "show more");
    more.type = "button";
    more.addEventListener("click", () => {
      const collapsed = box.classList.toggle("pa-collapsed");
      more.textContent = collapsed ? "show more" : "show less";
    });
    box.appendChild(more);
  }
  return box;
}

function renderText(segments, legend) {
  const body = el("div", "pa-text");
  let n = 0;
  // "none": no token-level value; "pending": the shading is on its way (the model is reading).
  const plain = legend.kind === "none" || legend.kind === "pending";
  for (const [text, act] of segments) {
    n += text.length;
    if (act === null || plain) {
      // Not read by the model (truncated) or no token-level value: plain text.
      const span = el("span", act === null && !plain ? "pa-untok" : "pa-plain", text);
      if (act === null && !plain) span.title = "beyond the model's response length: not read";
      body.appendChild(span);
      continue;
    }
    const span = el("span", "pa-tok", text);
    span.dataset.act = String(act);
    const bg = shade(act, legend.max);
    if (bg) span.style.backgroundColor = bg;
    if (legend.kind === "sae") span.title = `activation ${fmt(act)}`;
    body.appendChild(span);
  }
  return collapsible(body, n);
}

function renderPrompt(messages) {
  const box = el("div", "pa-prompt");
  box.appendChild(el("div", "pa-section-title", "prompt"));
  if (!messages.length) box.appendChild(el("div", "pa-empty", "(no prompt)"));
  let n = 0;
  const body = el("div", "pa-messages");
  for (const m of messages) {
    const msg = el("div", "pa-msg");
    msg.dataset.role = m.role;
    msg.appendChild(el("span", "pa-role", m.role));
    msg.appendChild(el("span", "pa-content", m.content));
    body.appendChild(msg);
    n += m.content.length;
  }
  box.appendChild(collapsible(body, n));
  return box;
}

function renderSide(name, side, pair, legend) {
  const col = el("div", `pa-side pa-${name}`);
  const head = el("div", "pa-side-head");
  head.appendChild(el("span", "pa-side-name", name));
  head.appendChild(el("span", "pa-pooled", `pooled ${fmt(side.pooled)}`));
  if (pair.higher === name) head.appendChild(el("span", "pa-higher", "higher"));
  col.appendChild(head);
  col.appendChild(renderText(side.segments, legend));
  return col;
}

function renderPair(pair, legend) {
  const card = el("div", "pa-pair");
  card.dataset.pairId = pair.pair_id;
  card.dataset.higher = pair.higher;
  const head = el("div", "pa-pair-head");
  head.appendChild(el("span", "pa-pair-id", `pair ${pair.pair_id}`));
  head.appendChild(el("span", "pa-delta", `Δ = ${fmt(pair.delta)}`));
  card.appendChild(head);
  card.appendChild(renderPrompt(pair.prompt));
  const sides = el("div", "pa-sides");
  sides.appendChild(renderSide("chosen", pair.chosen, pair, legend));
  sides.appendChild(renderSide("rejected", pair.rejected, pair, legend));
  card.appendChild(sides);
  return card;
}

function renderLegend(legend) {
  const box = el("div", "pa-legend");
  box.dataset.kind = legend.kind || "";
  if (legend.kind === "sae" || legend.kind === "regex") {
    const swatch = el("span", `pa-swatch pa-swatch-${legend.kind}`);
    box.appendChild(swatch);
  }
  const text = el("span", "pa-legend-text", legend.text || "");
  if (legend.pattern) text.title = `regular expression: ${legend.pattern}`; // a title is text, not markup
  box.appendChild(text);
  if (legend.kind === "sae") box.appendChild(el("span", "pa-legend-max", `max on page ${fmt(legend.max)}`));
  return box;
}

function renderControls(model, nPages) {
  const bar = el("div", "pa-controls");
  const page = model.get("page");
  const sort = el("select", "pa-sort");
  for (const [value, text] of SORTS) {
    const opt = el("option", null, text);
    opt.value = value;
    sort.appendChild(opt);
  }
  sort.value = model.get("sort");
  sort.addEventListener("change", () => {
    model.set("sort", sort.value);
    model.set("page", 0);
    model.save_changes();
  });
  const label = el("label", "pa-sort-label", "sort by ");
  label.appendChild(sort);
  const prev = el("button", "pa-prev", "◀ prev");
  const next = el("button", "pa-next", "next ▶");
  prev.type = next.type = "button";
  prev.disabled = page <= 0;
  next.disabled = page >= nPages - 1;
  const go = (p) => {
    model.set("page", p);
    model.save_changes();
  };
  prev.addEventListener("click", () => go(page - 1));
  next.addEventListener("click", () => go(page + 1));
  const pin = el("button", "pa-pin", model.get("pinned") ? "pinned (follow focus)" : "pin this feature");
  pin.type = "button";
  pin.setAttribute("aria-pressed", String(model.get("pinned")));
  pin.addEventListener("click", () => {
    model.set("pinned", !model.get("pinned"));
    model.save_changes();
  });
  const pageText = el("span", "pa-page", `page ${page + 1} of ${nPages}`);
  for (const node of [label, prev, pageText, next, pin]) bar.appendChild(node);
  return bar;
}

// A regex concept is named by its description; its regular expression opens on demand.
function renderPattern(pattern) {
  const box = el("details", "pa-pattern");
  box.appendChild(el("summary", null, "regular expression"));
  box.appendChild(el("code", "pa-pattern-text", pattern));
  return box;
}

function renderHeader(model) {
  const head = el("div", "pa-header");
  const feature = model.get("feature");
  const info = model.get("header") || {};
  head.appendChild(el("span", "pa-feature", feature || "no feature"));
  if (info.label) head.appendChild(el("span", "pa-label", info.label));
  if (info.description && info.description !== info.label) {
    head.appendChild(el("span", "pa-description", info.description));
  }
  if (info.d_z !== undefined) {
    const more = info.direction && info.direction !== "none" ? `, more in ${info.direction}` : "";
    head.appendChild(el("span", "pa-stats", `d_z ${fmt(info.d_z)} · Δ mean ${fmt(info.delta_mean)} · q ${fmt(info.q)}${more}`));
  }
  if (info.pattern) head.appendChild(renderPattern(info.pattern));
  return head;
}

function draw(model, root) {
  root.replaceChildren();
  const nPages = Math.max(1, Math.ceil(model.get("n_pairs") / Math.max(1, model.get("page_size"))));
  root.appendChild(renderHeader(model));
  if (model.get("feature")) {
    root.appendChild(renderControls(model, nPages));
    root.appendChild(renderLegend(model.get("legend") || {}));
  }
  const status = el("div", "pa-status", model.get("status"));
  root.appendChild(status);
  const legend = model.get("legend") || {};
  const list = el("div", "pa-list");
  for (const pair of model.get("pairs") || []) list.appendChild(renderPair(pair, legend));
  root.appendChild(list);
  root.dataset.version = String(model.get("version"));
}

function render({ model, el: host }) {
  const root = el("div", "pa-pairs");
  host.appendChild(root);
  const redraw = () => draw(model, root);
  const onStatus = () => {
    const node = root.querySelector(".pa-status");
    if (node) node.textContent = model.get("status");
  };
  model.on("change:version", redraw);
  model.on("change:pinned", redraw); // the pin button's state; no new page is loaded for it
  model.on("change:status", onStatus);
  redraw();
  return () => {
    model.off("change:version", redraw);
    model.off("change:pinned", redraw);
    model.off("change:status", onStatus);
    root.remove();
  };
}

export default { render };
