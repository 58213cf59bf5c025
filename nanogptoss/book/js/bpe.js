// tiktoken's byte-level BPE in plain JavaScript: the shipped `.tiktoken` ranks files
// (nanogptoss/data/tokenizer.py), GPT-2's pre-tokenization, merges by lowest rank as
// tiktoken's byte_pair_merge does, and <|endoftext|> as the one special token.

// GPT2_PATTERN of tokenizer.py. tiktoken's regex engine reads \s as Unicode White_Space; a JS
// \s differs (it adds U+FEFF and lacks U+0085), so the class is spelled out as the property.
const WS = "\\p{White_Space}";
export const GPT2_PATTERN = new RegExp(
  `'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`, "gu");
export const EOT = "<|endoftext|>";

// bytes as a string of char codes 0-255: a cheap Map key
const key = (bytes, start, end) => String.fromCharCode.apply(null, bytes.subarray(start, end));

function fromBase64(s) {
  const bin = atob(s), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class Tokenizer {
  // `text`: the contents of a .tiktoken file, one "base64(token) rank" line per token
  constructor(text) {
    this.encoder = new Map();
    this.decoder = [];
    for (const [n, line] of text.split("\n").entries()) {
      if (!line.trim()) continue;
      const [b64, rank] = line.trim().split(" ");
      const r = Number(rank);
      if (!b64 || !Number.isInteger(r))
        throw new Error(`line ${n + 1} is not "base64-token rank": is this a .tiktoken file?`);
      const bytes = fromBase64(b64);
      this.encoder.set(key(bytes, 0, bytes.length), r);
      this.decoder[r] = bytes;
    }
    for (let b = 0; b < 256; b++)
      if (!this.encoder.has(String.fromCharCode(b))) throw new Error(`the ranks lack the single byte ${b}: not a byte-level BPE`);
    this.eot = this.decoder.length; // the special token comes after the ranks (encoding_from_ranks)
    this.nVocab = this.eot + 1;
    this.utf8 = new TextEncoder();
  }

  // tiktoken's byte_pair_merge: repeatedly merge the adjacent pair whose bytes have the lowest
  // rank (the leftmost on ties) until no pair is a token
  bytePairEncode(piece, out) {
    const whole = this.encoder.get(key(piece, 0, piece.length));
    if (whole !== undefined) { out.push(whole); return; }
    const starts = [], ranks = [];
    const rankOf = (i, skip) => // rank of the bytes from starts[i] to starts[i + skip]
      i + skip < starts.length ? this.encoder.get(key(piece, starts[i], starts[i + skip])) ?? Infinity : Infinity;
    for (let i = 0; i <= piece.length; i++) starts.push(i);
    for (let i = 0; i < starts.length; i++) ranks.push(rankOf(i, 2));
    for (;;) {
      let min = Infinity, at = -1;
      for (let i = 0; i < ranks.length - 1; i++) if (ranks[i] < min) { min = ranks[i]; at = i; }
      if (at < 0) break;
      // parts at and at+1 become one: the ranks next to it change
      ranks[at] = rankOf(at, 3);
      if (at > 0) ranks[at - 1] = rankOf(at - 1, 3);
      starts.splice(at + 1, 1);
      ranks.splice(at + 1, 1);
    }
    for (let i = 0; i < starts.length - 1; i++) out.push(this.encoder.get(key(piece, starts[i], starts[i + 1])));
  }

  // tiktoken's encode_ordinary: "<|endoftext|>" is plain text here
  encodeOrdinary(text) {
    const out = [];
    for (const m of text.matchAll(GPT2_PATTERN)) this.bytePairEncode(this.utf8.encode(m[0]), out);
    return out;
  }

  // "<|endoftext|>" in the text becomes the special token
  encode(text) {
    const out = [];
    text.split(EOT).forEach((part, i) => {
      if (i > 0) out.push(this.eot);
      out.push(...this.encodeOrdinary(part));
    });
    return out;
  }

  decodeBytes(ids) {
    const parts = ids.map((id) => {
      if (id === this.eot) return this.utf8.encode(EOT);
      if (!(id >= 0 && id < this.eot)) throw new Error(`token id ${id} is outside [0, ${this.nVocab})`);
      return this.decoder[id];
    });
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }

  // invalid UTF-8 (a token that splits a character) becomes U+FFFD, as tiktoken's decode does; a
  // leading byte-order mark is text like any other
  decode(ids) {
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids));
  }
}
