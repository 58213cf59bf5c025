"""The teacher's side of .ci/colab_check.sh, with the standard library only (it runs before and inside
the teacher's environment).

    teacher_check.py commands INSTRUCTOR_MD SOURCE TORCH_PIN
        print the install commands of book/instructor.md, its package spec replaced by SOURCE[grade]
        and TORCH_PIN, so CI makes the teacher's environment with exactly the page's commands
    teacher_check.py submissions CHAPTERS HANDOUTS OUT
        for each of CHAPTERS_GRADED write OUT/right-NN.ipynb (the handout, its stub filled with the
        chapter's worked solution) and OUT/wrong-NN.ipynb (the stub filled with a planted mistake)
    teacher_check.py verify GRADED
        the grader's report must say PASS for each right submission and FAIL, with the mistake's
        hint, for each wrong one; exit 1 saying what differs
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SETUP_HEADING = "## Installing the grader"  # the section of book/instructor.md whose first bash block CI runs
REPO_URL = "https://github.com/nanogptoss/nanogptoss"  # the chapters' Colab cell installs from the same
PACKAGE = f'"nanogptoss[grade] @ git+{REPO_URL}"'

# chapter -> its checker, a planted mistake (the stub's name is filled in) and the hint it must draw.
# 02 is the case (a correct my_rmsnorm graded FAIL for want of torch); 07 imports transformers.
PLANTED = {
    "02": ("check_rmsnorm",
           "def {name}(x, weight, eps):\n"
           "    x32 = x.float()\n"
           "    y = x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + eps)  # eps outside the root\n"
           "    return (weight.float() * y).to(x.dtype)",
           "eps goes inside the square root"),
    "07": ("check_swiglu",
           "def {name}(gate_up, alpha, limit):\n"
           "    gate, up = gate_up.chunk(2, dim=-1)  # halves instead of interleaved columns\n"
           "    gate = gate.clamp(max=limit)\n"
           "    up = up.clamp(min=-limit, max=limit)\n"
           "    return gate * torch.sigmoid(alpha * gate) * (up + 1)",
           "gate and up are interleaved"),
}
CHECK = re.compile(r"^(check_\w+)\((\w+)\)", re.M)
FENCE = re.compile(r"```python\n(.*?)\n```", re.S)


def fail(message: str) -> None:
    print(f"teacher check: {message}", file=sys.stderr)
    raise SystemExit(1)


def setup_commands(page: str, source: str, torch_pin: str) -> str:
    """The first ```bash block after SETUP_HEADING, installing `source` (a folder) instead of the package."""
    start = page.find(f"\n{SETUP_HEADING}\n")
    if start < 0:
        fail(f"book/instructor.md has no section {SETUP_HEADING!r}")
    block = re.search(r"```bash\n(.*?)\n```", page[start:], re.S)
    if not block:
        fail(f"book/instructor.md: no ```bash block under {SETUP_HEADING!r}")
    commands = block.group(1)
    if commands.count(PACKAGE) != 1:
        fail(f"book/instructor.md: the setup block must install {PACKAGE} exactly once:\n{commands}")
    return commands.replace(PACKAGE, f'"{source}[grade]" "{torch_pin}"')


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def exercise(chapter: Path, checker: str) -> tuple[str, str]:
    """(the stub's function name, the worked solution) of `checker`'s exercise in the chapter."""
    cells = json.loads(chapter.read_text())["cells"]
    for i, cell in enumerate(cells):
        m = CHECK.search(source(cell))
        if cell["cell_type"] == "code" and m and m.group(1) == checker:
            solution = FENCE.search(source(cells[i + 1]))
            if "solution" not in cells[i + 1]["metadata"].get("tags", []) or not solution:
                fail(f"{chapter.name}: no worked solution after {checker}(...)")
            return m.group(2), solution.group(1)
    fail(f"{chapter.name}: no cell calls {checker}(...)")


def fill(handout: Path, checker: str, name: str, code: str) -> dict:
    """The handout with the stub of `checker`'s exercise (the cell before its check) replaced by `code`."""
    nb = json.loads(handout.read_text())
    for i, cell in enumerate(nb["cells"]):
        m = CHECK.search(source(cell))
        if cell["cell_type"] == "code" and m and m.group(1) == checker:
            stub = nb["cells"][i - 1]
            if f"def {name}(" not in source(stub) or "# your code here" not in source(stub):
                fail(f"{handout.name}: the cell before {checker}(...) is not the stub of {name}")
            stub["source"] = code
            return nb
    fail(f"{handout.name}: no cell calls {checker}(...)")


def write_submissions(chapters: Path, handouts: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for number, (checker, wrong, _) in PLANTED.items():
        chapter = next(chapters.glob(f"{number}_*.ipynb"))
        name, solution = exercise(chapter, checker)
        handout = handouts / chapter.name
        for kind, code in (("right", solution), ("wrong", wrong.format(name=name))):
            (out / f"{kind}-{number}.ipynb").write_text(json.dumps(fill(handout, checker, name, code), indent=1))
    print(f"teacher check: {2 * len(PLANTED)} submissions in {out}")


def table(report: str) -> dict:
    """grades.md's table: notebook -> {column: entry}."""
    lines = [l for l in report.splitlines() if l.startswith("| ")]
    if not lines or not lines[0].startswith("| notebook |"):
        fail("grades.md has no table of grades")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {row["notebook"]: row for row in
            (dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in lines[1:])}


def verify(graded: Path) -> None:
    """grades.md, the report a teacher reads: right submissions ran clean and PASS, wrong ones FAIL with the hint."""
    report = (graded / "grades.md").read_text()
    rows, problems = table(report), []
    for number, (checker, _, hint) in PLANTED.items():
        for kind, verdict in (("right", "PASS"), ("wrong", "FAIL")):
            name = f"{kind}-{number}.ipynb"
            row = rows.get(name)
            if row is None:
                problems.append(f"{name} is not in the table")
                continue
            if row["status"] != "ok" or row.get(checker) != verdict:
                problems.append(f"{name}: expected status ok and {checker} {verdict}, got status "
                                f"{row['status']!r} and {checker} {row.get(checker)!r}")
            section = report.split(f"\n## {name}\n", 1)[-1].split("\n## ", 1)[0]
            line = next((l for l in section.splitlines() if l.startswith(f"- **{checker}**:")), "")
            if kind == "wrong" and not (line.startswith(f"- **{checker}**: failed") and f"Hint: {hint}" in line):
                problems.append(f"{name}: the report must give the reason, 'Hint: {hint}...'; it says {line!r}")
    if problems:
        fail("the grader's report is wrong:\n  " + "\n  ".join(problems) + "\n\ngrades.md:\n" + report)
    print(f"teacher check: grades.md says PASS for the {len(PLANTED)} right submissions and FAIL, with the "
          f"mistake's hint, for the {len(PLANTED)} wrong ones")


def main(argv: list[str]) -> None:
    if argv[:1] == ["commands"] and len(argv) == 4:
        print(setup_commands(Path(argv[1]).read_text(), argv[2], argv[3]))
    elif argv[:1] == ["submissions"] and len(argv) == 4:
        write_submissions(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    elif argv[:1] == ["verify"] and len(argv) == 2:
        verify(Path(argv[1]))
    else:
        fail("usage: teacher_check.py commands MD SOURCE TORCH_PIN | submissions CHAPTERS HANDOUTS OUT | verify GRADED")


if __name__ == "__main__":
    main(sys.argv[1:])
