"""`python -m nanogptoss COMMAND ...`: the library's commands in one place.

Each command lives in its own module and is imported only when asked for, so
`sample` never loads the trainer and `presets` never loads a tokenizer.
"""

from __future__ import annotations

import errno
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
    "exercises": ("nanogptoss.book.cli", "strip solutions for students, grade their notebooks"),
}


def usage() -> str:
    lines = ["usage: python -m nanogptoss COMMAND [options]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:10s} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


# what to change, by the OS's reason a file could not be read or written
OS_ADVICE = {
    errno.ENOSPC: "free some disk space or write elsewhere",
    errno.EDQUOT: "free some disk space or write elsewhere",
    errno.EFBIG: "the file is larger than this system allows (ulimit -f); raise the limit or write elsewhere",
    errno.EACCES: "choose a place you may write to, or fix its permissions",
    errno.EPERM: "choose a place you may write to, or fix its permissions",
    errno.EROFS: "choose a place on a writable disk",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.EISDIR: "a folder stands where a file is needed; choose another path",
    errno.EEXIST: "a file stands where a folder is needed; choose another path",
}


def os_error_line(err: OSError) -> str:
    """An OSError in one line: the path, the OS's reason and what to change. Commands let
    OSErrors rise (a full disk can strike any write), and the dispatcher says them so."""
    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or str(err)
    advice = OS_ADVICE.get(err.errno)
    return f"error: {where}: {reason}" + (f"; {advice}" if advice else "")


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
    try:
        return module.main(rest)
    except OSError as err:  # a full disk, a read-only folder, a file where a folder belongs: any command
        raise SystemExit(os_error_line(err)) from None


if __name__ == "__main__":
    result = main()
    if isinstance(result, int) and not isinstance(result, bool):  # an exit status (exercises grade)
        sys.exit(result)
