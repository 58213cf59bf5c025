"""Training-step speed and memory: nanogptoss (fast and plain paths) vs transformers.

One step is forward, loss, backward and an AdamW update, on a batch of random token
ids; all rows use the same config and the same weights. Run from the repository root:

    python benchmarks/bench_train.py            # the measurement (cpu-tiny, float32 on a CPU)
    python benchmarks/bench_train.py --smoke    # seconds: checks the script runs (CI)

On a GPU the default is the "gpu" preset in bfloat16, and MFU is printed too.
The last lines are the ratios.
"""

from __future__ import annotations

import torch

from common import (build_models, common_args, environment, hf_description, measure, peak_flops,
                    print_ratios, print_table, set_paths, setup, write_json)
from nanogptoss import flops_per_token
from nanogptoss.attention import resolve_attn_impl
from nanogptoss.moe import resolve_moe_impl


def paths_in_use(model, x) -> str:
    """Which implementations "auto" resolves to for this model, device and dtype, training."""
    block = model.blocks[0]
    with torch.enable_grad():
        q = torch.zeros(1, 1, 1, model.config.dim_head, device=x.device,
                        dtype=block.attn.q_proj.weight.dtype, requires_grad=True)
        h = torch.zeros(1, model.config.d_model, device=x.device, dtype=q.dtype, requires_grad=True)
        moe = resolve_moe_impl(block.mlp.impl, h, block.mlp.experts, model.config.top_k) if hasattr(block.mlp, "experts") else "dense"
        return f"{resolve_attn_impl(block.attn.impl, q, cached=False)} + {moe}"


def train_step(model, x, y, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        # transformers shifts the labels itself; ours takes targets already shifted
        loss = model(input_ids=x, labels=x).loss if hf else model(x, targets=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main(argv=None):
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: the block size)")
    args = p.parse_args(argv)
    device, dtype = setup(args)
    batch = args.batch or (2 if args.smoke else 8 if device.type == "cpu" else 16)
    from nanogptoss import get_config
    config = get_config(args.preset)
    seq = args.seq or (16 if args.smoke else config.block_size)
    repeats = args.repeats or (1 if args.smoke else 10)
    warmup = 1 if args.smoke else 2

    ours, hf = build_models(config, device, dtype, with_hf=not args.no_hf)
    torch.manual_seed(1)
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    n = batch * seq
    fast = paths_in_use(ours, x)
    print(f"training step, {args.preset} ({ours.num_parameters() / 1e6:.2f}M parameters), batch {batch} x {seq} "
          f"tokens, {device} {args.dtype}, {torch.get_num_threads()} threads")
    if hf is not None:
        print(hf_description(hf))
        with torch.no_grad():
            ours_loss = ours(tokens[:, :-1], targets=tokens[:, 1:]).loss.item()
            hf_loss = hf(input_ids=tokens, labels=tokens).loss.item()
        print(f"same weights, same loss: nanogptoss {ours_loss:.5f}, transformers {hf_loss:.5f}")

    rows = [measure(f"nanogptoss, fast paths ({fast})", train_step(ours, x, y, False), n, device, repeats,
                    warmup)]
    set_paths(ours, "reference", "reference")
    rows.append(measure("nanogptoss, plain paths (reference + reference)", train_step(ours, x, y, False), n,
                        device, repeats, warmup))
    set_paths(ours, "auto", "auto")
    if hf is not None:
        rows.append(measure("transformers GptOssForCausalLM", train_step(hf, tokens[:, :-1], None, True), n,
                            device, repeats, warmup, note=hf_description(hf).split(": ")[1]))
    print_table("training step (forward + backward + AdamW), median of "
                f"{repeats}; peak MiB is memory above the weights", rows)

    ratios = []
    if hf is not None:
        ratios.append(("train nanogptoss fast / transformers", rows[0]["tokens_per_s"] / rows[2]["tokens_per_s"],
                       1.5))
    ratios.append(("train nanogptoss fast / plain", rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"], None))
    peak = peak_flops(device, args.peak_tflops)
    mfu = None
    if peak is not None:
        # model FLOPs: 3 x forward matmul FLOPs of the active parameters plus attention
        mfu = rows[0]["tokens_per_s"] * flops_per_token(config, seq_len=seq, training=True) / peak
    print_ratios(ratios)
    print(f"MFU nanogptoss fast: {'n/a (no accelerator peak known)' if mfu is None else f'{mfu:.1%}'}")
    write_json(args.json, dict(benchmark="train", env=environment(device, dtype, args), batch=batch, seq=seq,
                               rows=rows, ratios={k: v for k, v, _ in ratios}, mfu=mfu))


if __name__ == "__main__":
    main()
