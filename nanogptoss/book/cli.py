"""`python -m nanogptoss exercises`: hand out the chapters without their answers, grade the students'
notebooks. Apart from the checkers (nanogptoss.book.exercises), which the grader imports."""

from __future__ import annotations

import argparse
import sys

from .exercises import CHECKERS
from .grading import MAX_OUTPUT, TOTAL_TIMEOUT, grade_folder
from .handout import strip_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanogptoss exercises",
                                     description="Hand out the book's exercises and grade the students' notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="run every notebook in FOLDER and report each checker per student")
    grade.add_argument("folder")
    grade.add_argument("--out", default=None,
                       help="folder for grades.md/.csv, results.csv and the executed notebooks (default FOLDER/graded)")
    grade.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default 120)")
    grade.add_argument("--total-timeout", type=int, default=TOTAL_TIMEOUT,
                       help=f"seconds allowed for all of one notebook's cells (default {TOTAL_TIMEOUT})")
    grade.add_argument("--max-output", type=int, default=MAX_OUTPUT,
                       help=f"bytes of output kept per notebook; the rest is dropped (default {MAX_OUTPUT:,})")
    grade.add_argument("--jobs", type=int, default=1, help="notebooks run side by side (default 1)")
    grade.add_argument("--threads", type=int, default=1, help="torch threads per notebook (default 1)")
    grade.add_argument("--kernel", default="python3", help="Jupyter kernel to run the notebooks with")
    strip = sub.add_parser("strip", help="write student handouts of chapter notebooks: solutions and answers removed")
    strip.add_argument("sources", nargs="+", help="notebooks or folders of notebooks")
    strip.add_argument("--out", required=True, help="folder for the handouts")
    sub.add_parser("list", help="list the checkers")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, checker in CHECKERS.items():
            print(f"{name}: {(checker.__doc__ or '').splitlines()[0]}")
        return 0
    try:
        if args.command == "strip":
            strip_folder(args.sources, args.out)
            return 0
        grade_folder(args.folder, args.out, args.timeout, args.kernel, jobs=args.jobs, threads=args.threads,
                     total_timeout=args.total_timeout, max_output=args.max_output)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
