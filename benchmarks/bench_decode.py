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

from common import (Row, build_models, common_args, config_for, environment, hf_attention_choices, hf_description, measure,
                    print_ratios, print_table, setup, use_hf_attention, with_paths, write_json)
from nanogptoss import generate, get_config

PROMPT = 16


def agreement(ours, hf, ids, theirs) -> str:
    """Whether both libraries chose the same greedy tokens; if not, where they part and how
    far apart their logits are on the same text. In bf16 a random model's logits are
    nearly flat, so a rounding difference can flip an argmax: the logits are the test."""
    if torch.equal(theirs, ids):
        return "same greedy tokens as transformers: yes"
    first = int((theirs[0] != ids[0]).nonzero()[0]) - PROMPT
    with torch.no_grad():
        a = ours(ids).logits.float()
        b = hf(input_ids=ids).logits.float()[..., :a.shape[-1]]
    err = ((a - b).norm() / b.norm()).item()
    return (f"same greedy tokens as transformers: no (first {first} of {ids.shape[1] - PROMPT} agree; "
            f"on our tokens the logits agree to {err:.1e} relative, argmax on "
            f"{(a.argmax(-1) == b.argmax(-1)).float().mean().item():.1%} of positions)")


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
    config = config_for(args, device, max_position_embeddings=max(1024, PROMPT + max(new, long)))
    real_vocab = get_config(args.preset).vocab_size

    ours, hf = build_models(config, device, dtype, with_hf=not args.no_hf)
    ours.eval()
    torch.manual_seed(1)
    prompt = torch.randint(0, real_vocab, (1, PROMPT), device=device)
    print(f"greedy decoding, {args.preset} ({ours.num_parameters() / 1e6:.2f}M parameters), prompt {PROMPT}, "
          f"{device} {args.dtype}, {torch.get_num_threads()} threads")

    def ours_generate(n, use_cache=True, compile=False, paths="auto"):
        return with_paths(ours, paths, paths,
                          lambda: generate(ours, prompt, n, temperature=0, use_cache=use_cache, compile=compile))

    rows = [Row("nanogptoss, KV cache, fast paths", ours_generate(new), new)]
    if args.compile:
        rows.append(Row("nanogptoss, KV cache, compiled step", ours_generate(new, compile=True), new,
                        warmup=warmup + 1, note="first call compiles (not timed)"))
    rows.append(Row("nanogptoss, KV cache, plain paths", ours_generate(new, paths="reference"), new))
    hf_rows = []
    if hf is not None:
        hf.eval()
        ids = ours.generate(prompt, new, temperature=0)
        # transformers decodes with its default, eager (its flex path would recompile as the length grows)
        for impl in hf_attention_choices(args, device, gpu_flex=False):
            def hf_generate(impl=impl):
                use_hf_attention(hf, impl)
                return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                   min_new_tokens=new, do_sample=False, pad_token_id=0)
            try:
                theirs = hf_generate()
            except Exception as e:  # an older transformers may lack a path: say so, time the others
                print(f"transformers attention {impl!r} unavailable here: {type(e).__name__}: {str(e)[:200]}")
                continue
            print(f"{hf_description(hf)}: same weights, {agreement(ours, hf, ids, theirs)}")
            hf_rows.append(Row(f"transformers generate ({impl}, its cache)", hf_generate, new,
                               note=hf_description(hf).split(": ")[1]))
    long_rows = [Row(f"nanogptoss, KV cache, {long} tokens", ours_generate(long), long),
                 Row(f"nanogptoss, no cache, {long} tokens", ours_generate(long, use_cache=False), long,
                     repeats=1, warmup=0, note="reruns the whole sequence per token")]
    if args.compile:
        long_rows.append(Row(f"nanogptoss, KV cache, compiled step, {long} tokens", ours_generate(long, compile=True),
                             long, warmup=warmup + 1, note="first call compiles (not timed)"))
    results = measure(rows + hf_rows + long_rows, device, repeats, warmup)
    print_table(f"greedy decoding, batch 1, median of {repeats}, rows interleaved; "
                "peak MiB is memory above the weights", results)

    by_name = {r["name"]: r for r in results}
    fast, plain = by_name[rows[0].name], by_name["nanogptoss, KV cache, plain paths"]
    long_cached, long_plain = by_name[long_rows[0].name], by_name[long_rows[1].name]
    ratios = []
    if hf_rows:
        best_hf = max((by_name[r.name] for r in hf_rows), key=lambda r: r["tokens_per_s"])
        ratios.append((f"decode nanogptoss / transformers generate ({new} tokens)",
                       fast["tokens_per_s"] / best_hf["tokens_per_s"], 3.0))
    ratios.append((f"decode KV cache / no cache ({long} tokens)",
                   long_cached["tokens_per_s"] / long_plain["tokens_per_s"], 10.0))
    ratios.append(("decode fast / plain paths", fast["tokens_per_s"] / plain["tokens_per_s"], None))
    if args.compile:
        compiled = by_name["nanogptoss, KV cache, compiled step"]
        ratios.append(("decode compiled / eager step", compiled["tokens_per_s"] / fast["tokens_per_s"], None))
        if hf_rows:
            ratios.append((f"decode nanogptoss compiled / transformers generate ({new} tokens)",
                           compiled["tokens_per_s"] / best_hf["tokens_per_s"], 3.0))
        ratios.append((f"decode compiled KV cache / no cache ({long} tokens)",
                       by_name[long_rows[2].name]["tokens_per_s"] / long_plain["tokens_per_s"], 10.0))
    print_ratios(ratios)
    write_json(args.json, dict(benchmark="decode", env=environment(device, dtype, args), new_tokens=new,
                               long=long, rows=results, ratios={k: v for k, v, _ in ratios}))


if __name__ == "__main__":
    main()
