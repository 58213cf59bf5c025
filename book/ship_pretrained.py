"""Ship the book's two trained models inside the package (`nanogptoss.pretrained`).

Takes the final checkpoints of the two training runs that `nanogptoss/data/pretrained/README.md`
gives, and for each:
  1. writes it in fp16 with `nanogptoss.book.export` to nanogptoss/data/pretrained/NAME.safetensors
     (the file the browser's model.js fetches too);
  2. checks that greedy decoding from the fp16 weights gives the same tokens as the float32
     checkpoint, from the first words of validation stories;
  3. scores the shipped (fp16-stored) model on the whole validation split in bits per byte;
  4. writes three sample stories from it;
then writes the folder's README.md from these numbers.

    NANOGPTOSS_DATA=... python book/ship_pretrained.py runs/pretrained-gptoss runs/pretrained-gpt2
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanogptoss.book.export import export_model  # noqa: E402
from nanogptoss.data.stories import ValidationSet, token_shards  # noqa: E402
from nanogptoss.data.tokenizer import get_tokenizer  # noqa: E402
from nanogptoss.files import write_text  # noqa: E402
from nanogptoss.training.train import Run, evaluate  # noqa: E402
from nanogptoss.weights.checkpoint import load_model  # noqa: E402
from nanogptoss.weights.shipped import PRETRAINED_DIR, read_exported  # noqa: E402

NAMES = {"gptoss": "tinystories-gptoss", "gpt2": "tinystories-gpt2"}
PROMPTS = 20  # validation stories whose first words start the greedy check
SAMPLES = ("Once upon a time", "Lily and her brother", "The little dog")
# the two training runs, as they were run (side by side, one thread each)
COMMANDS = {
    "gptoss": "python -m nanogptoss train --model gptoss --preset cpu-tiny --data tinystories --max-steps 3000 "
              "--batch-size 16 --lr 8e-3 --min-lr 8e-4 --warmup-steps 100 --eval-interval 500 --eval-tokens 131072 "
              "--ckpt-interval 250 --threads 1 --dtype float32 --seed 0 --out-dir runs/pretrained-gptoss --no-progress",
    "gpt2": "python -m nanogptoss train --model gpt2 --preset cpu-tiny --set intermediate_size=320 --data tinystories "
            "--max-steps 3600 --batch-size 16 --lr 8e-3 --min-lr 8e-4 --warmup-steps 100 --eval-interval 500 "
            "--eval-tokens 131072 --ckpt-interval 250 --threads 1 --dtype float32 --seed 0 "
            "--out-dir runs/pretrained-gpt2 --no-progress",
}


def greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, temperature=0.0)
    return out[0, len(ids):].tolist()


def score(model, validation: ValidationSet) -> float:
    """Bits per byte of the validation set, as training evaluates it (float32 on the CPU)."""
    return validation.bits_per_byte(evaluate(model, validation, 32, Run(torch.device("cpu"), torch.float32)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ship(run_dir: Path, tokenizer, validation: ValidationSet, stories: list[str]) -> dict:
    fp32, ckpt = load_model(run_dir / "checkpoint.safetensors")
    kind = "gpt2" if fp32.config.norm == "layernorm" else "gptoss"
    name = NAMES[kind]
    out = PRETRAINED_DIR / f"{name}.safetensors"
    export_model(fp32, out, "fp16", tokenizer.name)
    shipped, _ = read_exported(out)
    same = 0
    for story in stories[:PROMPTS]:
        ids = tokenizer.encode_ordinary(" ".join(story.split()[:6]))
        same += greedy(fp32, ids, 40) == greedy(shipped, ids, 40)
    torch.manual_seed(0)
    samples = [tokenizer.decode(p + sample_story(shipped, p)).split("<|endoftext|>")[0]  # one story
               for p in (tokenizer.encode_ordinary(s) for s in SAMPLES)]
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return dict(name=name, kind=kind, file=out.name, mb=out.stat().st_size / 1e6, sha256=sha256(out),
                step=ckpt.step, total=sum(p.numel() for p in shipped.parameters()),
                greedy_same=same, greedy_of=min(PROMPTS, len(stories)), bpb=score(shipped, validation),
                bpb_fp32=score(fp32, validation), summary=summary, samples=samples)


def sample_story(model, ids: list[int]) -> list[int]:
    """A story continued at temperature 0.8, top-p 0.95 (seeded before the call)."""
    out = model.generate(torch.tensor([ids]), max_new_tokens=100, temperature=0.8, top_p=0.95)
    return out[0, len(ids):].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path, help="the GPT-OSS and the GPT-2 run folders")
    parser.add_argument("--data-dir", default="data", help="token cache folder (as for train)")
    args = parser.parse_args()
    tokenizer = get_tokenizer("tinystories-4k")
    shards = token_shards("tinystories", tokenizer, args.data_dir, progress=False)
    val_tokens = shards["validation"][0]
    data = Path(os.environ["NANOGPTOSS_DATA"])
    valid_text = (data / "tinystories-valid.txt").read_text()
    stories = [s for s in valid_text.split("\n<|endoftext|>\n") if s.strip()]
    validation = ValidationSet(val_tokens, 128, len(val_tokens) - 1, tokenizer)
    rows = [ship(run, tokenizer, validation, stories) for run in args.runs]
    files = {f.name: sha256(f) for f in sorted(data.glob("*.txt"))}
    write_text(PRETRAINED_DIR / "README.md", readme(rows, validation, len(stories), files))
    print(json.dumps([{k: v for k, v in r.items() if k != "summary"} for r in rows], indent=1))


def readme(rows: list[dict], validation: ValidationSet, n_stories: int, files: dict) -> str:
    today = datetime.date.today().isoformat()
    lines = ["# The book's trained models", "",
             "`nanogptoss.pretrained(\"tinystories-gptoss\")` and `nanogptoss.pretrained(\"tinystories-gpt2\")` "
             "load these files (written by `nanogptoss.book.export`: fp16 weights, the config and the tokenizer "
             "name in the safetensors metadata); chapter 12's explorer runs the same files in the browser.", "",
             f"Written {today} by `python book/ship_pretrained.py runs/pretrained-gptoss runs/pretrained-gpt2` "
             "from the final checkpoints of the two commands below, trained on the genuine TinyStories sample "
             "(`NANOGPTOSS_DATA`; sha256 " + ", ".join(f"`{k}` {v[:16]}…" for k, v in files.items()) +
             ") on this project's 2-core CPU machine, one thread each, side by side.", "",
             "| model | file | MB | parameters | steps | training minutes | val bits/byte (shipped, fp16) | "
             "(float32 checkpoint) | greedy tokens equal to float32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        minutes = r["summary"].get("wall_s", float("nan")) / 60
        lines.append(f"| {r['name']} | `{r['file']}` | {r['mb']:.2f} | {r['total']:,} | {r['step']:,} | "
                     f"{minutes:.0f} | {r['bpb']:.4f} | {r['bpb_fp32']:.4f} | {r['greedy_same']} of "
                     f"{r['greedy_of']} prompts |")
    lines += ["", f"Bits per byte over the whole validation file ({n_stories:,} stories): its first "
              f"{validation.n_tokens:,} target tokens ({validation.n_bytes:,} bytes) in windows of 128 tokens. "
              "The greedy check continues the first six words of each of the first validation stories "
              "by 40 tokens.", "",
              "How the settings were chosen: the short measured search in `book/results/cpu/tuning.md` and "
              "`tuning-round2.md` (2.5-minute runs of both models: learning rates 1e-3 to 8e-3, batches 2 to 32, "
              "2, 4 or 6 layers, 20 or 100 warmup steps, windows of 16 to 128) picked the peak learning rate 8e-3 "
              "(cosine to 8e-4), batch 16 and 100 warmup steps for both models. In those runs 2 layers scored "
              "better than the preset's 4 (more steps fit in 2.5 minutes); these runs are 20 times longer, and "
              "the 4 layers kept here were not compared with 2 at this length. The step counts were set to fill "
              "about an hour at the one-thread speed each model showed in its first steps. The GPT-2's MLP is 320 "
              "wide, so its active parameters match the GPT-OSS's within 0.2% (`compare`'s matching). During the "
              "two runs the machine also ran CI and tests (load about 3 on its 2 cores), so the minutes above are "
              "more than a quiet machine needs.", "", "Training commands:", "", "```bash"]
    lines += [COMMANDS[r["kind"]] for r in rows]
    lines += ["```", "", "Sample stories (temperature 0.8, top-p 0.95, `torch.manual_seed(0)`, up to 100 tokens, "
              "cut at the first `<|endoftext|>`):", ""]
    for r in rows:
        lines += [f"**{r['name']}**", ""] + [f"> {' '.join(s.split())}" + "\n" for s in r["samples"]]
    lines += ["File sha256: " + ", ".join(f"`{r['file']}` {r['sha256']}" for r in rows), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
