// The generation explorer: the book's trained models write in the reader's browser, token by
// token, and show why: for a chosen token, each head's attention over the keys it could see
// (the sink's share and a banded layer's window edge marked) and the router's experts.
// model.js computes, bpe.js tokenizes; nanogptoss/book/widgets.py inlines both into this
// module for anywidget (one ES module string). The weights are fetched only when a reader
// presses Generate: on the built site from _static/nanogptoss/ (book/_ext/book_site.py copies
// them there), in a live kernel over the widget's comm (GenerationExplorer sends the bytes).

import * as M from "./model.js";
import * as B from "./bpe.js";

export const MODELS = [["tinystories-gptoss", "GPT-OSS"], ["tinystories-gpt2", "GPT-2"]];

// -- the computation (no DOM: tests/test_widgets.py runs it in Node) ---------------------------

// Every earlier position as a key, oldest first: the trace holds only the visible keys (a ring
// buffer forgets the rest), here a key outside a banded layer's window gets weight 0.
export function fullRows(layerTrace, query) {
  const keys = Array.from({ length: query + 1 }, (_, i) => i);
  const heads = layerTrace.heads.map(({ probs, sink }) => {
    const row = new Array(query + 1).fill(0);
    layerTrace.keys.forEach((k, j) => { row[k] = probs[j]; });
    return { probs: row, sink };
  });
  return { keys, heads };
}

// What the explorer shows of one step: the token, where the query was, the model's top
// candidates (softmax of its logits) and, per layer, full attention rows and the router's choice.
export function describeStep(model, step, position, top = 5) {
  const c = model.config, probs = M.nextTokenProbs(step.logits, 1); // the plain softmax
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, top);
  const query = position - 1; // the forward pass that chose this token read the one before it
  return {
    id: step.id, position, query_position: query, prob: probs[step.id],
    candidates: order.map((id) => ({ id, prob: probs[id] })),
    layers: step.trace.layers.map((t, i) => ({
      type: c.layer_types[i], window: c.layer_types[i] === "sliding_attention" ? c.sliding_window : null,
      ...fullRows(t, query), experts: t.experts || null, weights: t.weights || null,
    })),
  };
}

// Decode with the explorer's knobs, calling onStep(record) per token (false from it stops) and
// awaiting `pause()` between tokens so the page can draw. Temperature 0 is greedy. Returns the
// generated ids and the seconds spent in the model alone (drawing and pauses left out).
export async function generate(model, promptIds, { maxNewTokens, temperature, topP, seed }, onStep,
                               pause = () => Promise.resolve()) {
  const sample = M.makeSampler({ temperature, topP: topP < 1 ? topP : null, rand: M.mulberry32(seed) });
  const steps = model.decode(promptIds, maxNewTokens, sample, true), ids = [];
  let ms = 0;
  for (let position = promptIds.length; ; position++) {
    const t0 = performance.now(), { value: step, done } = steps.next();
    ms += performance.now() - t0;
    if (done) break;
    ids.push(step.id);
    if (!onStep(describeStep(model, step, position))) break;
    await pause();
  }
  return { ids, seconds: ms / 1000 };
}

// -- loading the files, once per page -----------------------------------------------------------

// the built site's _static/nanogptoss/ for a Sphinx page (it marks its root on <html>), else null
function siteFileURL(name) {
  const root = document.documentElement.dataset.content_root;
  return root === undefined ? null : new URL(`${root}_static/nanogptoss/${name}`, document.baseURI).href;
}

// the bytes of `name` from the kernel: GenerationExplorer answers a "file" request
function askKernel(model, name) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no kernel answered for ${name}: run the cell that shows this explorer`)), 60000);
    const onMsg = (msg, buffers) => {
      if (!msg || msg.file !== name) return;
      clearTimeout(timer);
      model.off("msg:custom", onMsg);
      if (msg.error) reject(new Error(msg.error));
      else { const b = buffers[0]; resolve(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); }
    };
    model.on("msg:custom", onMsg);
    model.send({ request: "file", name });
  });
}

async function fetchBytes(model, name) {
  const url = siteFileURL(name);
  if (url === null) return askKernel(model, name);
  let response;
  try { response = await fetch(url); } catch (err) {
    throw new Error(`could not fetch ${url} (${err.message}): serve the book over http, not from file://`);
  }
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}; build the book with book/_ext/book_site.py`);
  return response.arrayBuffer();
}

// what is loaded, shared by every explorer on the page (each may run its own copy of this module)
const LOADED = (globalThis.__nanogptossGeneration ||= new Map());

function once(key, make) {
  if (!LOADED.has(key)) {
    LOADED.set(key, make());
    LOADED.get(key).catch(() => LOADED.delete(key)); // a failure may be retried
  }
  return LOADED.get(key);
}

function loadModel(widget, name) {
  return once(name, async () => {
    const model = new M.Model(await fetchBytes(widget, `${name}.safetensors`));
    const tokenizer = await once(model.tokenizerName, async () =>
      new B.Tokenizer(new TextDecoder().decode(await fetchBytes(widget, `${model.tokenizerName}.tiktoken`))));
    return { model, tokenizer };
  });
}

// -- drawing ------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const COLORS = { attn: "31,119,180", sink: "255,127,14", edge: "#d62728", outside: "#ececec", chosen: "#ff7f0e" };

function el(tag, attrs = {}, parent = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "style" && !ns) node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  if (parent) parent.appendChild(node);
  return node;
}
const svg = (tag, attrs, parent) => el(tag, attrs, parent, SVG);

// shown text of a token: whitespace visible, the end-of-text token named
const shown = (tokenizer, id) => (id === tokenizer.eot ? "⟨end⟩" : tokenizer.decode([id]));
const quoted = (s) => JSON.stringify(s);

// one layer: heads × key positions (shade ∝ √weight), the sink's column apart, the window's
// left edge as a red line (keys left of it are outside a banded layer's window: hatched grey)
function layerPicture(layer, index, width, tokenizer, ids, sinks) {
  const heads = layer.heads.length, T = layer.keys.length, q = T - 1;
  const left = 46, gap = sinks ? 10 : 0, sinkW = sinks ? 14 : 0, right = sinks ? 56 : 8;
  const cell = Math.max(1, Math.min(14, (width - left - gap - sinkW - right) / T)), rowH = 13;
  const W = left + T * cell + gap + sinkW + right, H = 30 + heads * rowH + 14;
  const pic = svg("svg", { width: W, height: H, class: "layer", "data-layer": index });
  const kind = layer.window === null ? "dense" : `banded, window ${layer.window}`;
  svg("text", { x: 0, y: 12, "font-size": 11, "font-weight": "bold", text: `layer ${index} (${kind})` }, pic);
  const edge = layer.window === null ? 0 : Math.max(0, q - layer.window + 1);
  if (edge > 0) svg("rect", { x: left, y: 20, width: edge * cell, height: heads * rowH, fill: COLORS.outside }, pic);
  layer.heads.forEach((head, h) => {
    const y = 20 + h * rowH;
    svg("text", { x: 0, y: y + 10, "font-size": 10, text: `head ${h}` }, pic);
    head.probs.forEach((p, k) => {
      if (p <= 0) return;
      const r = svg("rect", { x: left + k * cell, y, width: Math.max(cell, 1), height: rowH - 1,
                              fill: `rgba(${COLORS.attn},${Math.sqrt(p).toFixed(3)})` }, pic);
      svg("title", { text: `head ${h} → position ${k} ${quoted(shown(tokenizer, ids[k]))}: ${p.toFixed(3)}` }, r);
    });
    if (!sinks) return;
    const sx = left + T * cell + gap;
    const s = svg("rect", { x: sx, y, width: sinkW, height: rowH - 1, stroke: "#ccc",
                            fill: `rgba(${COLORS.sink},${Math.sqrt(head.sink).toFixed(3)})` }, pic);
    svg("title", { text: `head ${h} → sink: ${head.sink.toFixed(3)}` }, s);
    svg("text", { x: sx + sinkW + 4, y: y + 10, "font-size": 10, text: head.sink.toFixed(2) }, pic);
  });
  const base = 20 + heads * rowH;
  if (layer.window !== null) {
    svg("line", { x1: left + edge * cell, x2: left + edge * cell, y1: 16, y2: base + 2, stroke: COLORS.edge,
                  "stroke-width": 2, class: "window-edge" }, pic);
  }
  svg("text", { x: left, y: base + 12, "font-size": 10, text: "0" }, pic);
  svg("text", { x: left + T * cell, y: base + 12, "font-size": 10, "text-anchor": "end", text: `${q}` }, pic);
  if (edge > 0) svg("text", { x: left + edge * cell, y: base + 12, "font-size": 10, "text-anchor": "middle",
                              fill: COLORS.edge, text: `${edge}` }, pic);
  svg("text", { x: left + (T * cell) / 2, y: base + 12, "font-size": 10, "text-anchor": "middle", fill: "#555",
                text: "key position →" }, pic);
  if (sinks) svg("text", { x: left + T * cell + gap + sinkW / 2, y: base + 12, "font-size": 10, "text-anchor": "middle",
                           fill: "#c55a00", text: "sink" }, pic);
  return pic;
}

// the router's experts for one layer: each expert a box, the chosen ones orange with their weight
function routerPicture(layer, numExperts) {
  const box = 34, pic = svg("svg", { width: numExperts * box + 4, height: 52, class: "router" });
  svg("text", { x: 0, y: 12, "font-size": 10, text: "experts" }, pic);
  for (let e = 0; e < numExperts; e++) {
    const at = layer.experts.indexOf(e), w = at >= 0 ? layer.weights[at] : 0;
    svg("rect", { x: e * box, y: 18, width: box - 3, height: 26, fill: at >= 0 ? COLORS.chosen : "#eee",
                  "fill-opacity": at >= 0 ? 0.3 + 0.7 * w : 1, "data-expert": e, "data-weight": w }, pic);
    svg("text", { x: e * box + (box - 3) / 2, y: 30, "font-size": 9, "text-anchor": "middle", text: `#${e}` }, pic);
    svg("text", { x: e * box + (box - 3) / 2, y: 41, "font-size": 9, "text-anchor": "middle",
                  text: at >= 0 ? w.toFixed(2) : "" }, pic);
  }
  return pic;
}

function detailPanel(panel, step, tokenizer, ids, config) {
  const width = Math.max(320, panel.clientWidth || 640);
  const cand = step.candidates.map((c) => `${quoted(shown(tokenizer, c.id))} ${c.prob.toFixed(2)}`).join(", ");
  panel.replaceChildren(
    el("div", { style: "margin:6px 0;font-size:13px", text:
      `${quoted(shown(tokenizer, step.id))} (position ${step.position}) was chosen by the forward pass that read ` +
      `position ${step.query_position}, ${quoted(shown(tokenizer, ids[step.query_position]))}. ` +
      `The model's most likely next tokens there: ${cand}.` }),
    el("div", { style: "font-size:12px;color:#555;margin-bottom:4px", text:
      "Each row is one head's attention over the earlier positions (shade ∝ √weight; hover for the numbers)" +
      (config.attn_sinks ? "; the orange column is the sink's share, and a row with its sink sums to 1" :
                           "; with no sink, each row sums to 1 over the keys") +
      (config.layer_types.includes("sliding_attention") ? ". Left of a red line: outside a banded layer's window." : ".") +
      (config.num_experts > 1 ? " Beside each layer: its experts, the chosen ones in orange with their weights." : "") }));
  step.layers.forEach((layer, i) => {
    const row = el("div", { style: "display:flex;flex-wrap:wrap;gap:4px 14px;align-items:flex-end;margin:4px 0" }, panel);
    const routerW = layer.experts ? config.num_experts * 34 + 18 : 0;
    row.appendChild(layerPicture(layer, i, width - routerW, tokenizer, ids, config.attn_sinks));
    if (layer.experts) row.appendChild(routerPicture(layer, config.num_experts));
  });
}

// -- the widget ---------------------------------------------------------------------------------

function controls(widget, root) {
  const bar = el("div", { style: "display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;font-size:13px;margin-bottom:6px" });
  const prompt = el("textarea", { rows: 2, "data-control": "prompt",
    style: "width:100%;box-sizing:border-box;font:13px monospace;margin-bottom:6px" });
  prompt.value = widget.get("prompt");
  prompt.addEventListener("input", () => { widget.set("prompt", prompt.value); widget.save_changes(); });
  const labelled = (label, input, out = null) => {
    const l = el("label", { style: "display:flex;gap:6px;align-items:center" }, bar);
    l.append(label, input);
    if (out) l.append(out);
    return input;
  };
  const pick = labelled("model", el("select", { "data-control": "pretrained" }));
  for (const [value, name] of MODELS) pick.appendChild(new Option(name, value));
  pick.value = widget.get("pretrained");
  pick.addEventListener("change", () => { widget.set("pretrained", pick.value); widget.save_changes(); });
  const range = (name, label, min, max, step) => {
    const out = el("output");
    const input = labelled(label, el("input", { type: "range", min, max, step, "data-control": name }), out);
    input.value = widget.get(name);
    out.textContent = widget.get(name);
    input.addEventListener("input", () => {
      out.textContent = input.value;
      widget.set(name, Number(input.value));
      widget.save_changes();
    });
  };
  range("temperature", "temperature", 0, 2, 0.05);
  range("top_p", "top-p", 0.05, 1, 0.05);
  range("max_new_tokens", "tokens", 1, 120, 1);
  const seed = labelled("seed", el("input", { type: "number", min: 0, step: 1, "data-control": "seed", style: "width:5em" }));
  seed.value = widget.get("seed");
  seed.addEventListener("input", () => { widget.set("seed", Math.max(0, Math.floor(Number(seed.value) || 0))); widget.save_changes(); });
  const go = el("button", { "data-control": "generate", text: "Generate", style: "padding:2px 14px" }, bar);
  root.append(prompt, bar);
  return go;
}

export default {
  render({ model: widget, el: host }) {
    const root = el("div", { class: "nanogptoss-explorer", "data-explorer": "generation",
                             style: "font-family:sans-serif;color:#222;max-width:100%" }, host);
    const go = controls(widget, root);
    const status = el("div", { style: "font-size:12px;color:#555;margin:4px 0", text: "Press Generate: the weights load on first use." }, root);
    const story = el("div", { class: "story", style: "font:14px/1.7 monospace;white-space:pre-wrap;overflow-wrap:anywhere;" +
                              "border:1px solid #ddd;padding:6px;min-height:3em" }, root);
    const detail = el("div", { class: "detail" }, root);
    let run = 0, state = { model: widget.get("pretrained"), status: "idle", prompt_ids: [], generated_ids: [], text: "", selected: null };
    const publish = () => { root.dataset.result = JSON.stringify(state); };
    publish();

    go.addEventListener("click", async () => {
      const mine = ++run, name = widget.get("pretrained");
      const settings = { maxNewTokens: widget.get("max_new_tokens"), temperature: widget.get("temperature"),
                         topP: widget.get("top_p"), seed: widget.get("seed") };
      state = { model: name, status: "loading", prompt_ids: [], generated_ids: [], text: "", selected: null,
                settings: { temperature: settings.temperature, top_p: settings.topP, seed: settings.seed,
                            max_new_tokens: settings.maxNewTokens } };
      publish();
      story.replaceChildren();
      detail.replaceChildren();
      status.textContent = `loading ${name}…`;
      try {
        const { model, tokenizer } = await loadModel(widget, name);
        if (mine !== run) return;
        const promptIds = tokenizer.encode(widget.get("prompt"));
        const room = model.config.max_position_embeddings - promptIds.length;
        if (promptIds.length === 0) throw new Error("the prompt is empty: type a few words");
        if (room < 1) throw new Error(`the prompt is ${promptIds.length} tokens; the model reads at most ${model.config.max_position_embeddings}: shorten it`);
        settings.maxNewTokens = Math.min(settings.maxNewTokens, room);
        state.prompt_ids = promptIds;
        state.status = "generating";
        promptIds.forEach((id) => el("span", { class: "prompt-token", style: "color:#777", text: shown(tokenizer, id) }, story));
        const steps = [];
        const select = (i) => {
          story.querySelectorAll(".token").forEach((s, j) => { s.style.background = j === i ? "#ffd8a8" : "#eef4fb"; });
          const ids = [...promptIds, ...state.generated_ids];
          state.selected = { index: i, ...steps[i] };
          detailPanel(detail, steps[i], tokenizer, ids, model.config);
          publish();
        };
        const { seconds } = await generate(model, promptIds, settings, (step) => {
          if (mine !== run) return false;
          steps.push(step);
          state.generated_ids.push(step.id);
          const i = steps.length - 1;
          const span = el("span", { class: "token", "data-index": i, title: `p = ${step.prob.toFixed(3)}`,
                                    style: "background:#eef4fb;cursor:pointer;border-radius:2px", text: shown(tokenizer, step.id) }, story);
          span.addEventListener("click", () => select(i));
          return true;
        }, () => new Promise((resolve) => setTimeout(resolve, 0)));
        if (mine !== run) return;
        state.text = tokenizer.decode([...promptIds, ...state.generated_ids]);
        state.status = "done";
        state.tokens_per_second = steps.length / Math.max(seconds, 1e-6);
        status.textContent = `${steps.length} tokens at ${state.tokens_per_second.toFixed(0)} tokens/s in this browser. ` +
                             `Click a token to see the attention${model.isMoe ? " and the experts" : ""} that chose it.`;
        publish();
      } catch (err) {
        if (mine !== run) return;
        state.status = "error";
        state.error = err.message;
        status.textContent = `error: ${err.message}`;
        publish();
      }
    });
    return () => { run++; };
  },
};
