// The nanogptoss decoder in plain JavaScript: GPT-OSS and GPT-2 from one forward pass, on
// Float32Arrays, one token at a time through a KV cache (in the spirit of llama2.c's run.c).
// Names follow the Python modules (nanogptoss/model/*.py); each function is one idea there.
// Weights come from a safetensors file written by nanogptoss/book/export.py.

// ---------------------------------------------------------------- loading (safetensors)

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24; // subnormal
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const HALF = new Float32Array(65536).map((_, i) => halfToFloat(i));

// `buffer` (ArrayBuffer) of a .safetensors file -> {tensors: {name: {shape, data: Float32Array}}, metadata}
export function parseSafetensors(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 8) throw new Error("not a safetensors file: shorter than its 8-byte header length");
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > buffer.byteLength) throw new Error("not a safetensors file: its header runs past the end");
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [begin, end] = info.data_offsets, start = 8 + n + begin, count = info.shape.reduce((a, b) => a * b, 1);
    const bytes = new Uint8Array(buffer.slice(start, 8 + n + end)); // a copy: aligned for typed views
    let data;
    if (info.dtype === "F32") data = new Float32Array(bytes.buffer);
    else if (info.dtype === "F16") data = Float32Array.from(new Uint16Array(bytes.buffer), (h) => HALF[h]);
    else if (info.dtype === "BF16") {
      const u32 = new Uint32Array(count), u16 = new Uint16Array(bytes.buffer);
      for (let i = 0; i < count; i++) u32[i] = u16[i] << 16; // bf16 is the top half of a float32
      data = new Float32Array(u32.buffer);
    } else throw new Error(`tensor ${name} has dtype ${info.dtype}; export it as F32, F16 or BF16`);
    if (data.length !== count) throw new Error(`tensor ${name}: ${data.length} values for shape ${info.shape}`);
    tensors[name] = { shape: info.shape, data };
  }
  return { tensors, metadata: header.__metadata__ || {} };
}

// (rows, cols) row-major -> (cols, rows): the experts are stored x @ W; a matvec wants W rows
function transpose(a, rows, cols) {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
  return t;
}

export class Model {
  // `buffer`: the bytes of an exported .safetensors file (config in its metadata)
  constructor(buffer) {
    const { tensors, metadata } = parseSafetensors(buffer);
    if (!metadata.config) throw new Error("this safetensors file has no config: write it with nanogptoss.book.export");
    const c = (this.config = JSON.parse(metadata.config));
    this.tokenizerName = metadata.tokenizer || "tinystories-4k"; // the BPE it was trained with (bpe.js)
    const get = (name, required = true) => {
      if (tensors[name]) return tensors[name].data;
      if (required) throw new Error(`the weights lack ${name}: export the model with nanogptoss.book.export`);
      return null;
    };
    this.isMoe = c.num_experts > 1;
    this.embedding = get("embedding.weight");
    this.posEmbedding = c.pos === "learned" ? get("pos_embedding.weight") : null;
    this.unembedding = c.tie_word_embeddings ? this.embedding : get("unembedding.weight");
    const norm = (p) => ({ weight: get(`${p}.weight`), bias: get(`${p}.bias`, false) });
    const linear = (p) => ({ weight: get(`${p}.weight`), bias: get(`${p}.bias`, false) });
    this.norm = norm("norm");
    const d = c.hidden_size, f = c.intermediate_size, E = c.num_experts;
    this.layers = c.layer_types.map((type, i) => {
      const p = `blocks.${i}`;
      const layer = {
        sliding: type === "sliding_attention" ? c.sliding_window : null,
        attnNorm: norm(`${p}.attn_norm`), mlpNorm: norm(`${p}.mlp_norm`),
        q: linear(`${p}.attn.q_proj`), k: linear(`${p}.attn.k_proj`), v: linear(`${p}.attn.v_proj`),
        o: linear(`${p}.attn.o_proj`), sinks: c.attn_sinks ? get(`${p}.attn.sinks`) : null,
      };
      if (this.isMoe) {
        const gu = get(`${p}.mlp.experts.gate_up_proj`), dn = get(`${p}.mlp.experts.down_proj`);
        layer.router = linear(`${p}.mlp.router`);
        layer.experts = Array.from({ length: E }, (_, e) => ({
          gateUp: { weight: transpose(gu.subarray(e * d * 2 * f, (e + 1) * d * 2 * f), d, 2 * f),
                    bias: get(`${p}.mlp.experts.gate_up_proj_bias`).subarray(e * 2 * f, (e + 1) * 2 * f) },
          down: { weight: transpose(dn.subarray(e * f * d, (e + 1) * f * d), f, d),
                  bias: get(`${p}.mlp.experts.down_proj_bias`).subarray(e * d, (e + 1) * d) },
        }));
      } else if (c.ffn === "swiglu") {
        layer.gateUp = linear(`${p}.mlp.gate_up_proj`);
        layer.down = linear(`${p}.mlp.down_proj`);
      } else {
        layer.up = linear(`${p}.mlp.up_proj`);
        layer.down = linear(`${p}.mlp.down_proj`);
      }
      return layer;
    });
    if (c.pos === "rope") this.rope = new RotaryEmbedding(c);
    // scratch buffers, allocated once: decoding allocates nothing per token
    const H = c.num_attention_heads, G = c.num_key_value_heads, h = c.head_dim;
    this.s = {
      x: new Float32Array(d), xb: new Float32Array(d), xb2: new Float32Array(d),
      q: new Float32Array(H * h), k: new Float32Array(G * h), v: new Float32Array(G * h), y: new Float32Array(H * h),
      scores: new Float32Array(c.max_position_embeddings + 1), gateUp: new Float32Array(2 * f),
      hidden: new Float32Array(Math.max(f, 4 * d)), expertOut: new Float32Array(d), routerLogits: new Float32Array(E),
      experts: new Int32Array(c.experts_per_token), weights: new Float64Array(c.experts_per_token),
      logits: new Float32Array(c.vocab_size),
    };
  }

  // A fresh cache. `ring` (default true): banded layers keep a ring buffer of sliding_window
  // slots, as kv_cache.py; false keeps every position everywhere (the no-cache reference path).
  newKVCache(maxLen = this.config.max_position_embeddings, ring = true) {
    const c = this.config, G = c.num_key_value_heads, h = c.head_dim;
    if (maxLen > c.max_position_embeddings)
      throw new Error(`maxLen ${maxLen} exceeds the model's context (max_position_embeddings ${c.max_position_embeddings})`);
    const layers = this.layers.map((l) => {
      const banded = ring && l.sliding !== null && l.sliding < maxLen;
      const capacity = banded ? l.sliding : maxLen;
      return { capacity, ring: banded, k: new Float32Array(capacity * G * h), v: new Float32Array(capacity * G * h),
               pos: new Int32Array(capacity).fill(-1) };
    });
    return { layers, pos: 0, maxLen };
  }

  // One token through the model at the cache's next position; returns the logits (a view of a
  // scratch buffer, overwritten by the next call). With `trace`, also fills trace.layers[i] with
  // {keys, heads: [{probs, sink}], experts, weights} for the explorer.
  forward(token, cache, trace = null) {
    const c = this.config, d = c.hidden_size, s = this.s, pos = cache.pos;
    if (!(token >= 0 && token < c.vocab_size && Number.isInteger(token)))
      throw new Error(`token ids must lie in [0, ${c.vocab_size}), got ${token}`);
    if (pos >= cache.maxLen) throw new Error(`the KV cache holds at most ${cache.maxLen} positions`);
    const x = s.x;
    x.set(this.embedding.subarray(token * d, (token + 1) * d));
    if (this.posEmbedding) for (let i = 0; i < d; i++) x[i] += this.posEmbedding[pos * d + i];
    if (trace) trace.layers = [];
    for (let i = 0; i < this.layers.length; i++) {
      const l = this.layers[i], t = trace ? {} : null;
      this.normalize(s.xb, x, l.attnNorm);
      this.attention(s.xb2, s.xb, l, cache.layers[i], pos, t);
      for (let j = 0; j < d; j++) x[j] += s.xb2[j];
      this.normalize(s.xb, x, l.mlpNorm);
      this.feedForward(s.xb2, s.xb, l, t);
      for (let j = 0; j < d; j++) x[j] += s.xb2[j];
      if (trace) trace.layers.push(t);
    }
    this.normalize(s.xb, x, this.norm);
    matvec(s.logits, s.xb, this.unembedding, null, c.vocab_size, d);
    cache.pos++;
    return s.logits;
  }

  normalize(out, x, n) {
    if (this.config.norm === "rmsnorm") rmsnorm(out, x, n.weight, this.config.norm_eps);
    else layernorm(out, x, n.weight, n.bias, this.config.norm_eps);
  }

  // q/k/v projections, rotary positions, the cache, GQA with a window and sinks, o_proj
  attention(out, xb, l, layerCache, pos, t) {
    const c = this.config, s = this.s, d = c.hidden_size;
    const H = c.num_attention_heads, G = c.num_key_value_heads, h = c.head_dim, group = H / G;
    matvec(s.q, xb, l.q.weight, l.q.bias, H * h, d);
    matvec(s.k, xb, l.k.weight, l.k.bias, G * h, d);
    matvec(s.v, xb, l.v.weight, l.v.bias, G * h, d);
    if (this.rope) {
      this.rope.apply(s.q, H, pos);
      this.rope.apply(s.k, G, pos);
    }
    // write first (a ring slot holds position p % window), then attend to what the cache holds
    const cap = layerCache.capacity, slot = layerCache.ring ? pos % cap : pos;
    layerCache.k.set(s.k, slot * G * h);
    layerCache.v.set(s.v, slot * G * h);
    layerCache.pos[slot] = pos;
    const n = layerCache.ring ? cap : pos + 1; // slots to look at
    const kc = layerCache.k, vc = layerCache.v, kpos = layerCache.pos, scores = s.scores, y = s.y;
    const scale = 1 / Math.sqrt(h);
    if (t) { // the visible keys' positions, oldest first (a ring holds them out of order)
      t.keys = []; t.heads = [];
      for (let j = 0; j < n; j++) if (isVisible(pos, kpos[j], l.sliding)) t.keys.push(kpos[j]);
      t.keys.sort((a, b) => a - b);
    }
    for (let head = 0; head < H; head++) {
      const g = Math.floor(head / group), qo = head * h;
      let max = -Infinity;
      for (let j = 0; j < n; j++) {
        if (!isVisible(pos, kpos[j], l.sliding)) { scores[j] = -Infinity; continue; }
        const ko = (j * G + g) * h;
        let dot = 0;
        for (let i = 0; i < h; i++) dot += s.q[qo + i] * kc[ko + i];
        scores[j] = dot * scale;
        if (scores[j] > max) max = scores[j];
      }
      // the sink joins the softmax as one more logit; its probability is then dropped
      const sink = l.sinks ? l.sinks[head] : -Infinity;
      if (sink > max) max = sink;
      let sum = l.sinks ? Math.exp(sink - max) : 0;
      for (let j = 0; j < n; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
      for (let j = 0; j < n; j++) scores[j] /= sum;
      for (let i = 0; i < h; i++) y[qo + i] = 0;
      for (let j = 0; j < n; j++) {
        const p = scores[j];
        if (p === 0) continue;
        const vo = (j * G + g) * h;
        for (let i = 0; i < h; i++) y[qo + i] += p * vc[vo + i];
      }
      if (t) {
        const probs = new Float32Array(t.keys.length);
        for (let j = 0; j < n; j++) if (isVisible(pos, kpos[j], l.sliding)) probs[t.keys.indexOf(kpos[j])] = scores[j];
        t.heads.push({ probs, sink: l.sinks ? Math.exp(sink - max) / sum : 0 });
      }
    }
    if (t) t.keys = Int32Array.from(t.keys);
    matvec(out, y, l.o.weight, l.o.bias, d, H * h);
  }

  feedForward(out, xb, l, t) {
    const c = this.config, s = this.s, d = c.hidden_size, f = c.intermediate_size;
    if (!this.isMoe) {
      if (c.ffn === "swiglu") {
        matvec(s.gateUp, xb, l.gateUp.weight, l.gateUp.bias, 2 * f, d);
        swiglu(s.hidden, s.gateUp, f, c.swiglu_alpha, c.swiglu_limit);
      } else {
        matvec(s.hidden, xb, l.up.weight, l.up.bias, f, d);
        gelu(s.hidden, f);
      }
      matvec(out, s.hidden, l.down.weight, l.down.bias, d, f);
      return;
    }
    const experts = s.experts, weights = s.weights;
    router(experts, weights, s.routerLogits, xb, l.router, c.num_experts, c.experts_per_token, d);
    if (t) { t.experts = Array.from(experts); t.weights = Array.from(weights); }
    out.fill(0);
    for (let r = 0; r < experts.length; r++) {
      const e = l.experts[experts[r]];
      matvec(s.gateUp, xb, e.gateUp.weight, e.gateUp.bias, 2 * f, d);
      swiglu(s.hidden, s.gateUp, f, c.swiglu_alpha, c.swiglu_limit);
      matvec(s.expertOut, s.hidden, e.down.weight, e.down.bias, d, f);
      for (let i = 0; i < d; i++) out[i] += weights[r] * s.expertOut[i];
    }
  }

  // Logits at every position of `ids`, (T, V) row-major. `cached` runs the decoding path (ring
  // buffers on banded layers); otherwise every key is kept and the window is the mask alone.
  logitsAll(ids, cached = true) {
    const V = this.config.vocab_size, all = new Float32Array(ids.length * V);
    const cache = this.newKVCache(this.config.max_position_embeddings, cached);
    ids.forEach((id, i) => all.set(this.forward(id, cache), i * V));
    return all;
  }

  // Continue `ids` by maxNewTokens tokens; `sample` maps logits to an id (see makeSampler).
  generate(ids, maxNewTokens, sample) {
    const out = ids.slice();
    for (const step of this.decode(ids, maxNewTokens, sample)) out.push(step.id);
    return out;
  }

  // The same loop one token at a time, for a page that draws as it goes: yields {id, logits,
  // trace} per new token, where logits (overwritten by the next step) and trace are those of
  // the forward pass that chose `id`, whose query is the token before it. Prefill included.
  *decode(ids, maxNewTokens, sample, withTrace = false) {
    const total = ids.length + maxNewTokens, c = this.config;
    if (ids.length === 0) throw new Error("the prompt is empty: give at least one token");
    if (total > c.max_position_embeddings)
      throw new Error(`prompt (${ids.length} tokens) + maxNewTokens (${maxNewTokens}) exceeds the context (${c.max_position_embeddings})`);
    const cache = this.newKVCache(total);
    let logits, trace = null;
    for (let i = 0; i < ids.length; i++) {
      trace = withTrace && i === ids.length - 1 ? {} : null;
      logits = this.forward(ids[i], cache, trace);
    }
    for (let n = 0; n < maxNewTokens; n++) {
      const id = sample(logits);
      yield { id, logits, trace };
      if (n === maxNewTokens - 1) break; // the last token's own forward pass is not needed
      trace = withTrace ? {} : null;
      logits = this.forward(id, cache, trace);
    }
  }
}

// ---------------------------------------------------------------- the pieces

// out = W x + b, W (rows, cols) row-major as torch's Linear stores it. Four running sums
// instead of one let the CPU overlap the additions (1.7x faster in V8); decoding is mostly this.
export function matvec(out, x, W, b, rows, cols) {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
    for (; i + 3 < cols; i += 4) {
      s0 += W[o + i] * x[i];
      s1 += W[o + i + 1] * x[i + 1];
      s2 += W[o + i + 2] * x[i + 2];
      s3 += W[o + i + 3] * x[i + 3];
    }
    for (; i < cols; i++) s0 += W[o + i] * x[i];
    out[r] = (b ? b[r] : 0) + (s0 + s1 + (s2 + s3));
  }
}

export function rmsnorm(out, x, weight, eps) {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  for (let i = 0; i < x.length; i++) out[i] = weight[i] * (x[i] * inv);
}

export function layernorm(out, x, weight, bias, eps) {
  const n = x.length;
  let mean = 0, v = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (let i = 0; i < n; i++) v += (x[i] - mean) ** 2;
  const inv = 1 / Math.sqrt(v / n + eps);
  for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * weight[i] + (bias ? bias[i] : 0);
}

// GPT-2's tanh approximation, in place
export function gelu(x, n) {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < n; i++) { const u = x[i]; x[i] = 0.5 * u * (1 + Math.tanh(c * (u + 0.044715 * u * u * u))); }
}

// (2f) interleaved gate/up -> (f): gate·sigmoid(α·gate)·(up + 1), gate ≤ limit, |up| ≤ limit
export function swiglu(out, gateUp, f, alpha, limit) {
  for (let i = 0; i < f; i++) {
    const gate = Math.min(gateUp[2 * i], limit), up = Math.max(-limit, Math.min(gateUp[2 * i + 1], limit));
    out[i] = (gate / (1 + Math.exp(-alpha * gate))) * (up + 1);
  }
}

// the k experts with the highest router logits into `experts` (best first; the lower index on
// a tie), and a softmax over those k alone into `weights`
export function router(experts, weights, logits, x, r, E, k, d) {
  matvec(logits, x, r.weight, r.bias, E, d);
  for (let n = 0; n < k; n++) {
    let best = -1;
    for (let e = 0; e < E; e++) {
      let taken = false;
      for (let m = 0; m < n; m++) taken ||= experts[m] === e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    experts[n] = best;
  }
  let sum = 0;
  for (let n = 0; n < k; n++) sum += (weights[n] = Math.exp(logits[experts[n]] - logits[experts[0]]));
  for (let n = 0; n < k; n++) weights[n] /= sum;
}

// the mask rule of attention.py: not in the future, a real key (empty slots are -1), inside the window
export function isVisible(qPos, kPos, slidingWindow) {
  return kPos <= qPos && kPos >= 0 && (slidingWindow === null || qPos - kPos < slidingWindow);
}

// ---------------------------------------------------------------- rotary positions (rope.py)

export function ropeInvFreq(headDim, theta) {
  return Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / theta ** (Math.fround((2 * i) / headDim)));
}

export function yarnCorrectionRange(headDim, theta, initialContextLength, betaFast, betaSlow, truncate) {
  const dimFor = (rotations) => (headDim * Math.log(initialContextLength / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = dimFor(betaFast), high = dimFor(betaSlow);
  if (truncate) { low = Math.floor(low); high = Math.ceil(high); }
  return [Math.max(low, 0), Math.min(high, headDim - 1)];
}

export function yarnInvFreq(headDim, theta, factor, initialContextLength, betaFast = 32, betaSlow = 1, truncate = false) {
  const extrapolated = ropeInvFreq(headDim, theta);
  let [low, high] = yarnCorrectionRange(headDim, theta, initialContextLength, betaFast, betaSlow, truncate);
  if (low === high) high += 0.001;
  return extrapolated.map((ext, i) => {
    const ramp = Math.min(1, Math.max(0, Math.fround((i - low) / (high - low))));
    const keep = 1 - ramp; // 1: keep the original frequency
    return (ext / factor) * (1 - keep) + ext * keep;
  });
}

export function yarnConcentration(factor) {
  return factor <= 1 ? 1 : 0.1 * Math.log(factor) + 1;
}

export class RotaryEmbedding {
  constructor(c) {
    const f = c.rope_scaling_factor;
    this.headDim = c.head_dim;
    this.invFreq = f > 1
      ? yarnInvFreq(c.head_dim, c.rope_theta, f, c.initial_context_length, c.rope_beta_fast, c.rope_beta_slow, c.rope_truncate)
      : ropeInvFreq(c.head_dim, c.rope_theta);
    this.concentration = yarnConcentration(f);
    this.cos = new Float32Array(c.head_dim / 2);
    this.sin = new Float32Array(c.head_dim / 2);
    this.at = -1;
  }

  // rotate each of `heads` vectors in x (heads × headDim) in place: halves [x1, x2], not pairs
  apply(x, heads, pos) {
    const half = this.headDim / 2;
    if (this.at !== pos) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(pos * this.invFreq[i]); // float32 angles, as rope.py
        this.cos[i] = Math.cos(angle) * this.concentration;
        this.sin[i] = Math.sin(angle) * this.concentration;
      }
      this.at = pos;
    }
    for (let hd = 0; hd < heads; hd++) {
      const o = hd * this.headDim;
      for (let i = 0; i < half; i++) {
        const x1 = x[o + i], x2 = x[o + half + i];
        x[o + i] = x1 * this.cos[i] - x2 * this.sin[i];
        x[o + half + i] = x2 * this.cos[i] + x1 * this.sin[i];
      }
    }
  }
}

// ---------------------------------------------------------------- sampling (generate.py)

// mulberry32: a small seeded generator of uniform draws in [0, 1)
export function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function softmaxInPlace(x) {
  let max = -Infinity, sum = 0;
  for (let i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
  for (let i = 0; i < x.length; i++) { x[i] = Math.exp(x[i] - max); sum += x[i]; }
  for (let i = 0; i < x.length; i++) x[i] /= sum;
  return x;
}

// generate.py's _filtered_probs: temperature, then top-k (ties with the k-th all kept), then
// top-p (drop a token when those ranked above it already reach top_p), then the softmax
export function nextTokenProbs(logits, temperature, topK = null, topP = null, out = null) {
  const V = logits.length, l = out || new Float32Array(V);
  let max = -Infinity; // shifted by the max first, as in Python: a tiny temperature gives -inf, never NaN
  for (let i = 0; i < V; i++) if (logits[i] > max) max = logits[i];
  for (let i = 0; i < V; i++) l[i] = Math.fround(Math.fround(logits[i] - max) / temperature);
  if (topK !== null && topK < V) {
    const kth = Float32Array.from(l).sort()[V - topK];
    for (let i = 0; i < V; i++) if (l[i] < kth) l[i] = -Infinity;
  }
  if (topP !== null && topP < 1) {
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => l[b] - l[a] || a - b);
    const probs = softmaxInPlace(Float32Array.from(order, (i) => l[i]));
    let cum = 0; // torch's cumsum: a float64 running sum, each output rounded to float32
    for (let r = 0; r < V; r++) {
      cum += probs[r];
      if (Math.fround(Math.fround(cum) - probs[r]) >= topP) l[order[r]] = -Infinity;
    }
  }
  return softmaxInPlace(l);
}

// sample_from_probs in generate.py: the first id whose cumulative probability exceeds u
export function sampleFromProbs(probs, u) {
  let cum = 0, last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return i;
  }
  return last; // rounding left the total a hair under u
}

export function argmax(x) {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

// logits -> id: greedy at temperature 0, else one uniform draw from `rand` through the filters
export function makeSampler({ temperature = 1, topK = null, topP = null, rand = mulberry32(0) } = {}) {
  if (!(temperature >= 0) || temperature === Infinity) throw new Error(`temperature must be a number >= 0, got ${temperature}`);
  if (topK !== null && !(Number.isInteger(topK) && topK >= 1)) throw new Error(`topK must be a whole number >= 1 or null, got ${topK}`);
  if (topP !== null && !(topP > 0 && topP <= 1)) throw new Error(`topP must be in (0, 1] or null, got ${topP}`);
  let buf = null;
  return (logits) => {
    if (temperature === 0) return argmax(logits);
    if (!buf || buf.length !== logits.length) buf = new Float32Array(logits.length);
    return sampleFromProbs(nextTokenProbs(logits, temperature, topK, topP, buf), rand());
  };
}
