"""Tune the CPU speedrun: short wall-clock runs over learning rate and batch size.

Each setting is one `python -m nanogptoss compare speedrun` (GPT-OSS and the GPT-2 of
equal active parameters side by side, one thread each, the same minutes), so every
number here comes from the command the README publishes, only shorter. Run from the
repository root:

    python benchmarks/tune_speedrun.py --minutes 2.5 --out runs/tune --md book/results/cpu/tuning.md \
        --dtype bfloat16

Options it does not know are passed on to every speedrun (here `--dtype bfloat16`).

Short runs favour large learning rates a little (less time to decay), so the table says
how long each run was; the 10-minute speedrun is then run with the winner.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from nanogptoss.data.stories import describe_source  # noqa: E402
from nanogptoss.files import write_text  # noqa: E402
from nanogptoss.training import compare  # noqa: E402


def speedrun(args, out: Path, options: list[str], extra: list[str]) -> list[dict]:
    """One tuning speedrun (seed args.seed, evaluated at the end only); its rows."""
    compare.main(["speedrun", "--minutes", f"{args.minutes:g}", "--seeds", str(args.seed),
                  "--warmup-steps", str(args.warmup_steps), "--eval-interval", "1000000", "--out", str(out),
                  *extra, *options])
    with open(out / "speedrun.csv") as f:
        return list(csv.DictReader(f))


def variants_table(args, extra: list[str], best: dict, models: list[str]) -> list[str]:
    """Each variant at each model's best lr and batch (GPT-2's through --per-model)."""
    gptoss, gpt2 = best[models[0]], best[models[1]]
    at_best = ["--lr", f"{gptoss['lr']:g}", "--min-lr", f"{gptoss['lr'] / 10:g}",
               "--batch-size", str(gptoss["batch"]), "--per-model", f"gpt2:lr={gpt2['lr']:g}",
               "--per-model", f"gpt2:min_lr={gpt2['lr'] / 10:g}", "--per-model", f"gpt2:batch_size={gpt2['batch']}"]
    lines = ["", f"Variants, each model at its best lr and batch above ({models[0]}: {gptoss['lr']:g}, "
             f"{gptoss['batch']}; {models[1]}: {gpt2['lr']:g}, {gpt2['batch']}), one option changed:", "",
             "| variant | " + " | ".join(f"{m} val bits/byte | {m} tokens seen" for m in models) + " |",
             "|" + "---|" * (1 + 2 * len(models)),
             "| (none: the best rows above) | " + " | ".join(
                 f"{best[m]['val_bpb']:.4f} | {best[m]['tokens_seen']:,}" for m in models) + " |"]
    for variant in args.variants:
        slug = "".join(c if c.isalnum() else "-" for c in variant).strip("-")
        rows = speedrun(args, Path(args.out) / f"variant-{slug}", at_best + variant.split(), extra)
        by_model = {r["model"]: r for r in rows}  # "gptoss"/"gpt2": a variant may change the labels' sizes
        cells = [by_model[best[m]["key"]] for m in models]
        lines.append(f"| `{variant}` | " + " | ".join(
            f"{float(r['val_bpb']):.4f} | {int(float(r['tokens_seen'])):,}" for r in cells) + " |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.5, help="training minutes per model and setting")
    p.add_argument("--lr", type=float, nargs="+", default=[2e-3, 4e-3, 8e-3])
    p.add_argument("--batch-size", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--also", nargs="+", default=[], metavar="LR:BATCH",
                   help="settings beyond the lr x batch grid, e.g. --also 0.001:4 (where a model's best is at an edge)")
    p.add_argument("--variants", nargs="+", default=[], metavar="OPTIONS",
                   help="speedrun options to try at each model's best lr and batch, one string each, "
                        "e.g. --variants '--warmup-steps 100' '--layers 2'")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/tune", help="folder for the runs (one subfolder per setting)")
    p.add_argument("--md", default=None, help="also write the table to this markdown file")
    args, extra = p.parse_known_args(argv)  # the rest goes to every speedrun, e.g. --dtype bfloat16

    try:
        settings = list(itertools.product(args.lr, args.batch_size)) + [
            (float(lr), int(batch)) for lr, batch in (item.split(":") for item in args.also)]
    except ValueError:
        raise SystemExit(f"error: --also takes LR:BATCH pairs such as 0.001:4, got {args.also}") from None
    rows = []
    for lr, batch in settings:
        options = ["--lr", f"{lr:g}", "--min-lr", f"{lr / 10:g}", "--batch-size", str(batch)]
        for r in speedrun(args, Path(args.out) / f"lr{lr:g}-b{batch}", options, extra):
            data, tokenizer, val_tokens = r["data"], r["tokenizer"], int(r["val_tokens"])
            rows.append(dict(lr=lr, batch=batch, model=r["label"], key=r["model"], val_bpb=float(r["val_bpb"]),
                             tokens_seen=int(float(r["tokens_seen"]))))

    models = list(dict.fromkeys(r["model"] for r in rows))
    best = {m: min((r for r in rows if r["model"] == m), key=lambda r: r["val_bpb"]) for m in models}
    command = "python benchmarks/tune_speedrun.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [f"Speedrun tuning: each setting trains both models side by side for {args.minutes:g} minutes "
             f"(seed {args.seed}, warmup {args.warmup_steps} steps, min lr = lr / 10, one thread each"
             f"{', `' + shlex.join(extra) + '`' if extra else ''}); data: {describe_source(data)}, tokenizer {tokenizer}; "
             f"validation bits/byte on the first {val_tokens:,} tokens of the validation split, as in the speedrun "
             "table. **bold**: each model's best.", "",
             f"Command: `{command}`", "",
             "| lr | batch | " + " | ".join(f"{m} val bits/byte | {m} tokens seen" for m in models) + " |",
             "|" + "---|" * (2 + 2 * len(models))]
    for lr, batch in sorted(settings):
        cells = []
        for m in models:
            r = next(r for r in rows if r["model"] == m and r["lr"] == lr and r["batch"] == batch)
            bpb = f"{r['val_bpb']:.4f}"
            cells += [f"**{bpb}**" if r is best[m] else bpb, f"{r['tokens_seen']:,}"]
        lines.append(f"| {lr:g} | {batch} | " + " | ".join(cells) + " |")
    if args.variants:
        lines += variants_table(args, extra, best, models)
    md = "\n".join(lines) + "\n"
    print(md)
    if args.md:
        write_text(args.md, md)


if __name__ == "__main__":
    main()
