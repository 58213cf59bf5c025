// The book's explorers, one ES module for every front-end: anywidget hands it to Jupyter,
// JupyterLab, VS Code and Colab, and the static site runs the very same text, saved in the
// notebook's widget state, through the vendored widget manager. Everything is computed here,
// in the browser, so the controls work without a kernel; with one, every change is also sent
// to the Python object, which recomputes the same numbers with the library (the tests
// compare the two). Each explorer writes its numbers to `data-result` (JSON) for the tests.

const SVG = "http://www.w3.org/2000/svg";
const COLORS = { on: "#1f77b4", off: "#f2f2f2", sink: "#ff7f0e", chosen: "#ff7f0e", other: "#9e9e9e",
                 alternating: "#2ca02c", sliding: "#d62728", full: "#7f7f7f", query: "#1f77b4", key: "#d62728" };

// -- attention masks -------------------------------------------------------------------------

// key u is visible from query t: not in the future (when causal), fewer than W positions away
// (banded layer; window null is a dense layer)
export function layerMask(T, window, causal) {
  return Array.from({ length: T }, (_, t) => Array.from({ length: T }, (_, u) =>
    (!causal || u <= t) && (window === null || Math.abs(t - u) < window)));
}

// layer types bottom to top: gpt-oss alternates, starting with a banded layer
export function layerStack(nLayers, pattern) {
  return Array.from({ length: nLayers }, (_, i) =>
    pattern === "alternating" ? (i % 2 === 0 ? "sliding" : "full") : pattern);
}

// for each position t, how many inputs can reach it through the stack: reach starts as the
// identity (the residual stream keeps each token's own information) and each layer ORs in
// what its visible keys could reach
export function receptiveField(T, window, nLayers, pattern, causal) {
  let reach = Array.from({ length: T }, (_, t) => Array.from({ length: T }, (_, j) => t === j));
  for (const kind of layerStack(nLayers, pattern)) {
    const mask = layerMask(T, kind === "sliding" ? window : null, causal);
    reach = mask.map((row) => {
      const out = new Array(T).fill(false);
      row.forEach((visible, u) => { if (visible) reach[u].forEach((r, j) => { if (r) out[j] = true; }); });
      return out;
    });
  }
  return reach.map((row) => row.filter(Boolean).length);
}

export function attentionMaskResult({ seq_len: T, window, n_layers, sinks, causal, sliding }) {
  const layer = layerMask(T, sliding ? window : null, causal);
  const fields = {};
  for (const pattern of ["alternating", "sliding", "full"]) fields[pattern] = receptiveField(T, window, n_layers, pattern, causal);
  return {
    mask: layer.map((row) => (sinks ? [...row, true] : row).map(Number)),  // the sink column last
    keys_per_query: layer.map((row) => row.filter(Boolean).length),       // the sink is not a key
    receptive_field: fields,
  };
}

// -- the router --------------------------------------------------------------------------------

function softmax(xs) {
  const top = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - top));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / total);
}

// per token: logits / temperature, keep the k largest (best first), softmax over those k only;
// the load-balancing loss E * sum_e f_e P_e, with f_e the share of top-k slots expert e got and
// P_e its mean probability under a softmax over all experts
export function routerResult({ logits, bias, k, temperature }) {
  const E = logits[0].length, N = logits.length;
  const scaled = logits.map((row) => row.map((z, e) => (z + (bias[e] || 0)) / temperature));
  const indices = scaled.map((row) => row.map((z, e) => [z, e]).sort((a, b) => b[0] - a[0]).slice(0, k).map(([, e]) => e));
  const weights = scaled.map((row, n) => softmax(indices[n].map((e) => row[e])));
  const probs = scaled.map(softmax);
  const counts = new Array(E).fill(0);
  indices.forEach((row) => row.forEach((e) => { counts[e] += 1; }));
  const meanProb = Array.from({ length: E }, (_, e) => probs.reduce((a, p) => a + p[e], 0) / N);
  const loss = E * counts.reduce((a, c, e) => a + (c / N) * meanProb[e], 0);
  return { logits: scaled, indices, weights, counts, mean_prob: meanProb, loss };
}

// -- RoPE and YaRN -----------------------------------------------------------------------------

// theta_i = base^(-2i/h), and YaRN's blend of those with theta_i / factor: a ramp over the pair
// index, 0 below the pair that turns beta_fast times in the original context, 1 above the one that
// turns beta_slow times
export function ropeInvFreq(h, base, factor, context, betaFast = 32, betaSlow = 1) {
  const plain = Array.from({ length: h / 2 }, (_, i) => 1 / base ** ((2 * i) / h));
  if (factor <= 1) return { inv_freq: plain, ramp: plain.map(() => 0), concentration: 1 };
  const pairFor = (rotations) => (h * Math.log(context / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  const low = Math.max(pairFor(betaFast), 0);
  let high = Math.min(pairFor(betaSlow), h - 1);
  if (low === high) high += 0.001;
  const ramp = plain.map((_, i) => Math.min(Math.max((i - low) / (high - low), 0), 1));
  return { inv_freq: plain.map((f, i) => (f / factor) * ramp[i] + f * (1 - ramp[i])), ramp,
           concentration: 0.1 * Math.log(factor) + 1 };
}

// rotate (x1 | x2) halves by position * inv_freq; score of a query at m with a key at n
function rotate(x, position, invFreq, scale) {
  const half = x.length / 2, out = new Array(x.length);
  invFreq.forEach((f, i) => {
    const c = Math.cos(position * f) * scale, s = Math.sin(position * f) * scale;
    out[i] = x[i] * c - x[i + half] * s;
    out[i + half] = x[i + half] * c + x[i] * s;
  });
  return out;
}
const dot = (a, b) => a.reduce((acc, x, i) => acc + x * b[i], 0);

export function ropeResult({ q, k, head_dim: h, base, factor, context, m, n, pair, max_offset }) {
  const { inv_freq, ramp, concentration } = ropeInvFreq(h, base, factor, context);
  const score = dot(rotate(q, m, inv_freq, concentration), rotate(k, n, inv_freq, concentration));
  // the same score for every offset m - n (the key at 0, the query at the offset)
  const offsets = Array.from({ length: 129 }, (_, j) => Math.round((j * max_offset) / 128));
  const curve = offsets.map((d) => dot(rotate(q, d, inv_freq, concentration), rotate(k, 0, inv_freq, concentration)));
  const point = (x, p) => [x[pair] * Math.cos(p * inv_freq[pair]) - x[pair + h / 2] * Math.sin(p * inv_freq[pair]),
                           x[pair + h / 2] * Math.cos(p * inv_freq[pair]) + x[pair] * Math.sin(p * inv_freq[pair])];
  return { inv_freq, ramp, concentration, score, offsets, curve, q_point: point(q, m), k_point: point(k, n) };
}

// -- drawing -----------------------------------------------------------------------------------

function svgEl(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, attrs = {}) {
  const node = svgEl("text", { x, y, "font-size": 11, fill: "#333", ...attrs }, parent);
  node.textContent = content;
  return node;
}

// a line chart of named series: [{name, ys, color, dash}], xs shared; returns the <svg>
function lineChart({ title, xs, series, yMin = 0, yMax, xLabel, yLabel, logY = false, marker = null }) {
  const W = 310, H = 220, left = 44, right = 20, top = 22, bottom = 34;
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const fy = logY ? Math.log10 : (v) => v;
  const lo = fy(yMin), hi = fy(yMax) === lo ? lo + 1 : fy(yMax);
  const xMax = Math.max(xs[xs.length - 1], 1), xMin = xs[0];
  const X = (v) => left + ((v - xMin) / (xMax - xMin || 1)) * (W - left - right);
  const Y = (v) => H - bottom - ((fy(v) - lo) / (hi - lo)) * (H - top - bottom);
  svgEl("rect", { x: left, y: top, width: W - left - right, height: H - top - bottom, fill: "none", stroke: "#bbb" }, svg);
  text(svg, W / 2, 14, title, { "text-anchor": "middle", "font-weight": "bold" });
  text(svg, W / 2, H - 4, xLabel, { "text-anchor": "middle" });
  text(svg, 10, H / 2, yLabel, { "text-anchor": "middle", transform: `rotate(-90 10 ${H / 2})` });
  text(svg, left - 4, Y(yMax) + 4, logY ? yMax.toExponential(0) : String(+yMax.toFixed(2)), { "text-anchor": "end" });
  text(svg, left - 4, Y(yMin) + 4, logY ? yMin.toExponential(0) : String(+yMin.toFixed(2)), { "text-anchor": "end" });
  text(svg, X(xMin), H - bottom + 12, String(xMin), { "text-anchor": "middle" });
  text(svg, X(xMax), H - bottom + 12, String(xMax), { "text-anchor": "middle" });
  if (!logY && yMin < 0 && yMax > 0) svgEl("line", { x1: left, x2: W - right, y1: Y(0), y2: Y(0), stroke: "#ddd" }, svg);
  series.forEach(({ name, ys, color, dash }, j) => {
    const points = ys.map((v, i) => `${X(xs[i]).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
    svgEl("polyline", { points, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash || "none",
                        "data-series": name }, svg);
    svgEl("line", { x1: left + 6, x2: left + 22, y1: top + 10 + 13 * j, y2: top + 10 + 13 * j, stroke: color,
                    "stroke-width": 2, "stroke-dasharray": dash || "none" }, svg);
    text(svg, left + 26, top + 14 + 13 * j, name, { "font-size": 10 });
  });
  if (marker) svgEl("circle", { cx: X(marker[0]), cy: Y(marker[1]), r: 4, fill: "#000" }, svg);
  return svg;
}

function maskPicture(mask, sinks) {
  const T = mask.length, cols = T + (sinks ? 2 : 0), cell = Math.max(3, Math.min(12, Math.floor(300 / cols)));
  const svg = svgEl("svg", { width: cols * cell + 40, height: T * cell + 40, class: "mask" });
  const grid = svgEl("g", { transform: "translate(30,22)" }, svg);
  text(svg, 30, 14, "query t ↓   key u →" + (sinks ? "   (sink last)" : ""));
  svgEl("rect", { width: T * cell, height: T * cell, fill: COLORS.off }, grid);
  mask.forEach((row, t) => row.forEach((on, u) => {
    if (!on) return;
    const sink = u === T;  // drawn one column apart, in its own colour
    svgEl("rect", { x: (sink ? T + 1 : u) * cell, y: t * cell, width: cell - (cell > 4 ? 1 : 0), height: cell - (cell > 4 ? 1 : 0),
                    fill: sink ? COLORS.sink : COLORS.on, "data-t": t, "data-u": u }, grid);
  }));
  return svg;
}

// controls: [{name, label, type: "range"|"checkbox"|"select", min, max, step, options}]; they
// write to the model (and so to the kernel, when there is one) and redraw
function controlPanel(model, controls, limits = () => ({})) {
  const panel = document.createElement("div");
  panel.style.cssText = "display:flex;flex-wrap:wrap;gap:4px 18px;align-items:center;margin-bottom:6px;font-size:13px";
  const inputs = {};
  for (const c of controls) {
    const label = document.createElement("label");
    label.style.cssText = "display:flex;gap:6px;align-items:center";
    const input = document.createElement(c.type === "select" ? "select" : "input");
    input.dataset.control = c.name;
    if (c.type === "select") {
      for (const [value, name] of c.options) input.appendChild(new Option(name, value));
    } else {
      input.type = c.type;
      if (c.type === "range") Object.assign(input, { min: c.min, max: c.max, step: c.step || 1 });
    }
    const shown = document.createElement("output");
    label.append(c.label, input, shown);
    panel.appendChild(label);
    inputs[c.name] = { input, shown, c };
    input.addEventListener(c.type === "range" ? "input" : "change", () => {
      const value = c.type === "checkbox" ? input.checked : c.type === "range" ? Number(input.value) : input.value;
      model.set(c.name, value);
      model.save_changes();
    });
  }
  const sync = () => {
    const extra = limits();
    for (const { input, shown, c } of Object.values(inputs)) {
      if (extra[c.name]) Object.assign(input, extra[c.name]);
      const value = model.get(c.name);
      if (c.type === "checkbox") input.checked = value;
      else input.value = value;
      if (c.type === "range") shown.textContent = value;
    }
  };
  return { panel, sync };
}

function explorerRoot(el, name) {
  const root = document.createElement("div");
  root.className = "nanogptoss-explorer";
  root.dataset.explorer = name;
  root.style.cssText = "font-family:sans-serif;color:#222";
  el.appendChild(root);
  return root;
}

function figureRow(root) {
  const row = document.createElement("div");
  row.style.cssText = "display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start";
  root.appendChild(row);
  return row;
}

// -- the three explorers -----------------------------------------------------------------------

function renderAttentionMask(model, root) {
  const { panel, sync } = controlPanel(model, [
    { name: "seq_len", label: "sequence length T", type: "range", min: 2 },
    { name: "window", label: "window W", type: "range", min: 1 },
    { name: "n_layers", label: "layers N", type: "range", min: 1, max: 12 },
    { name: "sliding", label: "sliding-window layer (off: full)", type: "checkbox" },
    { name: "causal", label: "causal", type: "checkbox" },
    { name: "sinks", label: "sinks", type: "checkbox" },
  ], () => ({ seq_len: { max: model.get("max_len") }, window: { max: model.get("max_len") } }));
  const row = figureRow(root);
  root.prepend(panel);
  return () => {
    sync();
    const state = Object.fromEntries(["seq_len", "window", "n_layers", "sinks", "causal", "sliding"].map((k) => [k, model.get(k)]));
    const result = attentionMaskResult(state);
    root.dataset.result = JSON.stringify(result);
    const T = state.seq_len, xs = [...Array(T).keys()];
    row.replaceChildren(
      maskPicture(result.mask, state.sinks),
      lineChart({ title: "keys per query" + (state.sinks ? " (+1 sink entry)" : ""), xs, yMax: T,
                  series: [{ name: state.sliding ? `banded, W = ${state.window}` : "dense", ys: result.keys_per_query, color: COLORS.on }],
                  xLabel: "query position t", yLabel: "keys attended" }),
      lineChart({ title: `receptive field after N = ${state.n_layers} layers`, xs, yMax: T, xLabel: "position t",
                  yLabel: "inputs that reach t", series: [
                    { name: "alternating (gpt-oss)", ys: result.receptive_field.alternating, color: COLORS.alternating },
                    { name: "all sliding-window", ys: result.receptive_field.sliding, color: COLORS.sliding, dash: "5 3" },
                    { name: "all full", ys: result.receptive_field.full, color: COLORS.full, dash: "2 2" }] }));
  };
}

function renderRouter(model, root) {
  const E = model.get("logits")[0].length;
  const { panel, sync } = controlPanel(model, [
    { name: "k", label: "experts per token k", type: "range", min: 1, max: E },
    { name: "temperature", label: "temperature", type: "range", min: 0.1, max: 4, step: 0.1 },
    { name: "skew", label: "every token leans to expert 0 by", type: "range", min: 0, max: 8, step: 0.5 },
  ]);
  root.prepend(panel);
  const row = figureRow(root);
  return () => {
    sync();
    const logits = model.get("logits"), k = model.get("k");
    const bias = Array.from({ length: E }, (_, e) => (e === 0 ? model.get("skew") : 0));
    const result = routerResult({ logits, bias, k, temperature: model.get("temperature") });
    root.dataset.result = JSON.stringify(result);
    const N = logits.length, cell = 30;
    // tokens x experts: each token's chosen experts in orange, with their mixing weights
    const grid = svgEl("svg", { width: E * cell + 60, height: N * cell + 40, class: "routing" });
    text(grid, 50, 14, "token ↓  expert →  (orange: chosen, number: weight)");
    result.logits.forEach((row, n) => {
      text(grid, 4, 26 + n * cell + cell / 2 + 4, `token ${n}`, { "font-size": 10 });
      row.forEach((z, e) => {
        const at = result.indices[n].indexOf(e);
        const x = 50 + e * cell, y = 24 + n * cell;
        svgEl("rect", { x, y, width: cell - 2, height: cell - 2, fill: at >= 0 ? COLORS.chosen : "#eee",
                        "fill-opacity": at >= 0 ? 0.25 + 0.75 * result.weights[n][at] : 1, "data-token": n, "data-expert": e,
                        "data-weight": at >= 0 ? result.weights[n][at] : 0 }, grid);
        text(grid, x + cell / 2 - 1, y + cell / 2 + 3, at >= 0 ? result.weights[n][at].toFixed(2) : z.toFixed(1),
             { "text-anchor": "middle", "font-size": 9, fill: at >= 0 ? "#000" : "#888" });
      });
    });
    const experts = [...Array(E).keys()];
    row.replaceChildren(grid,
      lineChart({ title: `load-balancing loss = ${result.loss.toFixed(3)} (uniform: ${k})`, xs: experts,
                  yMax: 1, xLabel: "expert", yLabel: "share", series: [
                    { name: "f: share of top-k slots", ys: result.counts.map((c) => c / (N * k)), color: COLORS.chosen },
                    { name: "P: mean probability", ys: result.mean_prob, color: COLORS.on, dash: "4 2" }] }));
  };
}

function renderRope(model, root) {
  const h = model.get("head_dim");
  const { panel, sync } = controlPanel(model, [
    { name: "m", label: "query position m", type: "range", min: 0 },
    { name: "n", label: "key position n", type: "range", min: 0 },
    { name: "pair", label: "pair i", type: "range", min: 0, max: h / 2 - 1 },
    { name: "factor", label: "YaRN factor", type: "range", min: 1, max: 64, step: 1 },
  ], () => ({ m: { max: model.get("max_offset") }, n: { max: model.get("max_offset") } }));
  root.prepend(panel);
  const row = figureRow(root);
  return () => {
    sync();
    const state = Object.fromEntries(["q", "k", "head_dim", "base", "factor", "context", "m", "n", "pair", "max_offset"]
      .map((key) => [key, model.get(key)]));
    const result = ropeResult(state);
    root.dataset.result = JSON.stringify(result);
    // pair i of the query (at m) and of the key (at n) as 2-D points on their circles
    const S = 220, c = S / 2 + 30, cy = S / 2 + 10, r = 80;
    const circle = svgEl("svg", { width: S + 60, height: S + 20, class: "pair" });
    text(circle, c, 14, `pair ${state.pair}: q at m = ${state.m}, k at n = ${state.n}`, { "text-anchor": "middle", "font-weight": "bold" });
    const radius = Math.max(Math.hypot(...result.q_point), Math.hypot(...result.k_point), 1e-9);
    svgEl("circle", { cx: c, cy, r, fill: "none", stroke: "#ccc" }, circle);
    for (const [name, p] of [["q", result.q_point], ["k", result.k_point]]) {
      const x = c + (r * p[0]) / radius, y = cy - (r * p[1]) / radius;
      svgEl("line", { x1: c, y1: cy, x2: x, y2: y, stroke: name === "q" ? COLORS.query : COLORS.key, "stroke-width": 3,
                      "data-point": name }, circle);
      text(circle, x + 4, y - 4, name);
    }
    text(circle, c, S + 14, `score q·k = ${result.score.toFixed(3)} at m − n = ${state.m - state.n}`, { "text-anchor": "middle" });
    const lo = Math.min(...result.curve), hi = Math.max(...result.curve);
    const pairs = [...Array(h / 2).keys()];
    const plain = ropeInvFreq(h, state.base, 1, state.context).inv_freq;
    row.replaceChildren(circle,
      lineChart({ title: "score against the offset m − n", xs: result.offsets, series: [{ name: "q·k", ys: result.curve, color: COLORS.on }],
                  yMin: lo, yMax: hi, xLabel: "m − n", yLabel: "score",
                  marker: state.m - state.n >= 0 && state.m - state.n <= state.max_offset ? [state.m - state.n, result.score] : null }),
      lineChart({ title: "frequency θᵢ per pair", xs: pairs, logY: true, yMin: Math.min(...result.inv_freq), yMax: 1,
                  xLabel: "pair i", yLabel: "θᵢ (log)", series: [
                    { name: "plain RoPE", ys: plain, color: COLORS.full, dash: "4 2" },
                    { name: `YaRN, factor ${state.factor}`, ys: result.inv_freq, color: COLORS.alternating }] }));
  };
}

const EXPLORERS = { attention_mask: renderAttentionMask, router: renderRouter, rope: renderRope };

export default {
  render({ model, el }) {
    const name = model.get("explorer");
    const draw = EXPLORERS[name](model, explorerRoot(el, name));
    draw();
    model.on("change", draw);
    return () => model.off("change", draw);
  },
};
