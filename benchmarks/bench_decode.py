"""Greedy decoding speed and memory: nanogptoss (KV cache, fast and plain paths, and no
cache) vs transformers' `generate`.

Batch 1, a 16-token prompt, greedy (temperature 0); every row uses the same config and
weights. Run from the repository root:

    python benchmarks/bench_decode.py            # the measurement: 256 new tokens, no-cache at 512
    python benchmarks/bench_decode.py --smoke    # seconds: checks the script runs (CI)

The last lines are the ratios.
"""

from __future__ import annotations

import torch

from common import (build_models, common_args, environment, hf_description, measure, print_ratios,
                    print_table, set_paths, setup, write_json)
from nanogptoss import generate, get_config

PROMPT = 16


def main(argv=None):
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 256)")
    p.add_argument("--long", type=int, default=None,
                   help="tokens for the cache vs no-cache comparison (default 512)")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step")
    args = p.parse_args(argv)
    device, dtype = setup(args)
    new = args.new_tokens or (8 if args.smoke else 256)
    long = args.long or (16 if args.smoke else 512)
    repeats = args.repeats or (1 if args.smoke else 3)
    warmup = 0 if args.smoke else 1
    config = get_config(args.preset, block_size=max(1024, PROMPT + max(new, long)))

    ours, hf = build_models(config, device, dtype, with_hf=not args.no_hf)
    ours.eval()
    torch.manual_seed(1)
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT), device=device)
    print(f"greedy decoding, {args.preset} ({ours.num_parameters() / 1e6:.2f}M parameters), prompt {PROMPT}, "
          f"{device} {args.dtype}, {torch.get_num_threads()} threads")

    def ours_generate(n, use_cache=True, compile=False):
        return lambda: generate(ours, prompt, n, temperature=0, use_cache=use_cache, compile=compile)

    rows = [measure("nanogptoss, KV cache, fast paths", ours_generate(new), new, device, repeats, warmup)]
    if args.compile:
        rows.append(measure("nanogptoss, KV cache, compiled step", ours_generate(new, compile=True), new, device,
                            repeats, warmup=1))
    set_paths(ours, "reference", "reference")
    rows.append(measure("nanogptoss, KV cache, plain paths", ours_generate(new), new, device, repeats, warmup))
    set_paths(ours, "auto", "auto")
    hf_row = None
    if hf is not None:
        print(hf_description(hf))
        hf.eval()
        ids = ours.generate(prompt, new, temperature=0)

        def hf_generate():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                               min_new_tokens=new, do_sample=False, pad_token_id=0)
        same = torch.equal(hf_generate(), ids)
        print(f"same weights, same greedy tokens as transformers: {'yes' if same else 'no'}")
        hf_row = measure("transformers generate (greedy, its cache)", hf_generate, new, device, repeats, warmup,
                         note=hf_description(hf).split(": ")[1])
        rows.append(hf_row)
    long_cached = measure(f"nanogptoss, KV cache, {long} tokens", ours_generate(long), long, device, repeats,
                          warmup)
    long_plain = measure(f"nanogptoss, no cache, {long} tokens", ours_generate(long, use_cache=False), long,
                         device, 1, 0, note="reruns the whole sequence per token")
    rows += [long_cached, long_plain]
    print_table(f"greedy decoding, batch 1, median of {repeats}; peak MiB is memory above the weights", rows)

    ratios = []
    if hf_row is not None:
        ratios.append((f"decode nanogptoss / transformers generate ({new} tokens)",
                       rows[0]["tokens_per_s"] / hf_row["tokens_per_s"], 3.0))
    ratios.append((f"decode KV cache / no cache ({long} tokens)",
                   long_cached["tokens_per_s"] / long_plain["tokens_per_s"], 10.0))
    plain = next(r for r in rows if "plain paths" in r["name"])
    ratios.append(("decode fast / plain paths", rows[0]["tokens_per_s"] / plain["tokens_per_s"], None))
    if args.compile:
        ratios.append(("decode compiled / eager step", rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], None))
    print_ratios(ratios)
    write_json(args.json, dict(benchmark="decode", env=environment(device, dtype, args), new_tokens=new,
                               long=long, rows=rows, ratios={k: v for k, v, _ in ratios}))


if __name__ == "__main__":
    main()
