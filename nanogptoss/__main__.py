"""`python -m nanogptoss COMMAND ...`: the library's commands in one place.

Each command lives in its own module and is imported only when asked for, so
`sample` never loads the trainer and `presets` never loads a tokenizer.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module with a main(argv), what it does)
COMMANDS = {
    "presets": ("nanogptoss.model.params", "print the presets with their parameter counts and FLOPs"),
    "train": ("nanogptoss.training.train", "train a GPT-OSS or a GPT-2 on stories"),
    "compare": ("nanogptoss.training.compare", "GPT-OSS against GPT-2: the grid and the ablation ladder"),
    "sample": ("nanogptoss.training.sample", "write stories with a trained checkpoint"),
    "judge": ("nanogptoss.training.judge", "grade stories with an LLM judge"),
    "tokenizer": ("nanogptoss.data.tokenizer", "train or try a tokenizer"),
    "exercises": ("nanogptoss.book.exercises", "strip solutions for students, grade their notebooks"),
}


def usage() -> str:
    lines = ["usage: python -m nanogptoss COMMAND [options]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:10s} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["presets"]
    if argv[0] in ("-h", "--help"):
        print(usage())
        return None
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"error: unknown command {command!r}\n\n{usage()}")
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest)


if __name__ == "__main__":
    result = main()
    if isinstance(result, int) and not isinstance(result, bool):  # an exit status (exercises grade)
        sys.exit(result)
