"""Training-step speed and memory: nanogptoss (fast and plain paths) vs transformers.

One step is forward, loss, backward and an AdamW update, on a batch of random token
ids; all rows use the same config and the same weights. Run from the repository root:

    python benchmarks/bench_train.py            # the measurement (cpu-tiny, float32 on a CPU)
    python benchmarks/bench_train.py --smoke    # seconds: checks the script runs (CI)
    python benchmarks/bench_train.py --compile --profile prof.txt   # on a GPU: also compiled, and where time goes

On a GPU the default is the "gpu" preset in bfloat16, and MFU is printed too.
The last lines are the ratios.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common import (Row, build_models, common_args, config_for, environment, hf_attention_choices, hf_description,
                    make_optimizer, measure, peak_flops, print_ratios, print_table, setup, synchronize,
                    use_hf_attention, with_paths, write_json)
from nanogptoss import flops_per_token, get_config
from nanogptoss.kernels import choose_attention, choose_moe


def paths_in_use(model, x) -> str:
    """Which implementations "auto" resolves to for this model, device and dtype, training."""
    block = model.blocks[0]
    with torch.enable_grad():
        q = torch.zeros(1, 1, 1, model.config.head_dim, device=x.device,
                        dtype=block.attn.q_proj.weight.dtype, requires_grad=True)
        h = torch.zeros(1, model.config.hidden_size, device=x.device, dtype=q.dtype, requires_grad=True)
        moe = (choose_moe(block.mlp.moe.impl, h, block.mlp.experts, model.config.experts_per_token)
               if hasattr(block.mlp, "experts") else "dense")
        return f"{choose_attention(block.attn.attend.impl, q, k_positions_are_queries=True)} + {moe}"


def train_step(model, x, y, hf: bool):
    opt = make_optimizer(model, x.device)

    def step():
        model.train()
        # transformers shifts the labels itself; ours takes targets already shifted
        loss = model(input_ids=x, labels=x).loss if hf else model(x, targets=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def profile(fn, device, path: str) -> None:
    """The kernels of two steps of `fn`, by device time: where the time goes."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            fn()
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    Path(path).write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=80))
    print(f"profile of two steps written to {path}")


def main(argv=None):
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: the block size)")
    p.add_argument("--compile", action="store_true", help="also time the model under torch.compile")
    p.add_argument("--profile", default=None, help="write a profile of the fastest of our rows to this file")
    args = p.parse_args(argv)
    device, dtype = setup(args)
    batch = args.batch or (2 if args.smoke else 8 if device.type == "cpu" else 16)
    config = config_for(args, device)
    seq = args.seq or (16 if args.smoke else config.max_position_embeddings)
    repeats = args.repeats or (1 if args.smoke else 10)
    warmup = 1 if args.smoke else 2

    ours, hf = build_models(config, device, dtype, with_hf=not args.no_hf)
    torch.manual_seed(1)
    real_vocab = get_config(args.preset).vocab_size
    tokens = torch.randint(0, real_vocab, (batch, seq + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    n = batch * seq
    fast = paths_in_use(ours, x)
    print(f"training step, {args.preset} ({ours.num_parameters() / 1e6:.2f}M parameters), batch {batch} x {seq} "
          f"tokens, {device} {args.dtype}, {torch.get_num_threads()} threads")
    if config.vocab_size != real_vocab:
        print(f"vocabulary padded from {real_vocab} to {config.vocab_size} for aligned matmuls (both libraries)")

    rows = [Row(f"nanogptoss, fast paths ({fast})", with_paths(ours, "auto", "auto", train_step(ours, x, y, False)),
                n)]
    if args.compile:
        compiled = torch.compile(ours)
        rows.append(Row("nanogptoss, fast paths, torch.compile",
                        with_paths(ours, "auto", "auto", train_step(compiled, x, y, False)), n,
                        warmup=warmup + 1, note="first call compiles (not timed)"))
    rows.append(Row("nanogptoss, plain paths (reference + reference)",
                    with_paths(ours, "reference", "reference", train_step(ours, x, y, False)), n))
    hf_rows = []
    if hf is not None:
        with torch.no_grad():
            ours_loss = ours(x, targets=y).loss.item()
        for impl in hf_attention_choices(args, device):
            try:
                use_hf_attention(hf, impl)
                with torch.no_grad():
                    hf_loss = hf(input_ids=tokens, labels=tokens).loss.item()
            except Exception as e:  # an older transformers may lack a path: say so, time the others
                print(f"transformers attention {impl!r} unavailable here: {type(e).__name__}: {str(e)[:200]}")
                continue
            print(f"{hf_description(hf)}: same weights, same loss: nanogptoss {ours_loss:.5f}, "
                  f"transformers {hf_loss:.5f}")

            def hf_step(impl=impl, step=train_step(hf, x, None, True)):
                use_hf_attention(hf, impl)
                step()
            hf_rows.append(Row(f"transformers GptOssForCausalLM ({impl})", hf_step, n,
                               note=hf_description(hf).split(": ")[1]))
    results = measure(rows + hf_rows, device, repeats, warmup)
    print_table(f"training step (forward + backward + AdamW), median of {repeats}, rows interleaved; "
                "peak MiB is memory above the weights", results)

    ours_rows, hf_results = results[:len(rows)], results[len(rows):]
    eager, plain = ours_rows[0], ours_rows[-1]
    ratios = []
    if hf_results:
        best_hf = max(hf_results, key=lambda r: r["tokens_per_s"])
        ratios.append(("train nanogptoss fast / transformers", eager["tokens_per_s"] / best_hf["tokens_per_s"], 1.5))
    ratios.append(("train nanogptoss fast / plain", eager["tokens_per_s"] / plain["tokens_per_s"], None))
    best = max(ours_rows[:-1], key=lambda r: r["tokens_per_s"])
    peak = peak_flops(device, args.peak_tflops)
    # model FLOPs: 3 x forward matmul FLOPs of the active parameters plus attention, at the
    # preset's own vocabulary (padding columns are not counted as useful work)
    flops = flops_per_token(config.replace(vocab_size=real_vocab), seq_len=seq, training=True)
    mfu = None if peak is None else best["tokens_per_s"] * flops / peak
    print_ratios(ratios)
    print(f"MFU nanogptoss fast: {'n/a (no accelerator peak known)' if mfu is None else f'{mfu:.1%}'}"
          f" ({best['name']}; {flops / 1e9:.3f} GFLOPs/token"
          f"{'' if peak is None else f', peak {peak / 1e12:.0f} TFLOP/s'})")
    extra = []
    if args.compile:
        extra.append(("train nanogptoss compiled / eager", ours_rows[1]["tokens_per_s"] / eager["tokens_per_s"]))
        if hf_results:
            extra.append(("train nanogptoss compiled / transformers",
                          ours_rows[1]["tokens_per_s"] / best_hf["tokens_per_s"]))
    for label, value in extra:
        print(f"ratio {label}: {value:.2f}x")
    if args.profile:
        fn = next(row.fn for row in rows if row.name == best["name"])
        profile(fn, device, args.profile)
    write_json(args.json, dict(benchmark="train", env=environment(device, dtype, args), batch=batch, seq=seq,
                               rows=results, ratios={k: v for k, v, *_ in ratios + extra}, mfu=mfu,
                               mfu_row=best["name"], flops_per_token=flops, peak_flops=peak))


if __name__ == "__main__":
    main()
