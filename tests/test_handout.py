"""`exercises strip`: the handouts keep the teaching and leave nothing of an answer to copy:
no solutions, no answers, no widget state or outputs, no chapter copy of the exercise's
function and no printed library source of it, no stub comment that gives the formula."""

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from nanogptoss.book import exercises as ex
from nanogptoss.book import cli
from nanogptoss.book import handout
from nanogptoss.model.generate import next_token_probs

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FENCE = re.compile(r"```python\n(.*?)\n```", re.S)


def text(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.fixture(scope="module")
def handouts(tmp_path_factory):
    out = tmp_path_factory.mktemp("handouts")
    assert cli.main(["strip", str(ROOT / "notebooks"), "--out", str(out)]) == 0
    return {p.stem: json.loads((out / p.name).read_text()) for p in CHAPTERS}


def solution_lines(nb) -> list[str]:
    """The non-trivial lines of a chapter's worked solutions."""
    lines = []
    for c in nb["cells"]:
        if "solution" in c["metadata"].get("tags", []):
            for code in FENCE.findall(text(c)):
                lines += [ln.strip() for ln in code.splitlines()[1:] if len(ln.strip()) > 25]
    return lines


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_handout_holds_no_answer(path, handouts):
    original, student = json.loads(path.read_text()), handouts[path.stem]
    assert "widgets" not in student["metadata"]
    for c in student["cells"]:
        assert not set(c["metadata"].get("tags", [])) & {"solution", "answers"}
        assert not re.search(r'<details class="(solution|answers)"', text(c)), text(c)[:80]
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    # no function of the handout is a copy of a solution: the chapter's step-by-step code stays
    # (turning it into the function is the exercise), a ready-made function does not
    lines = solution_lines(original)
    for c in student["cells"]:
        if c["cell_type"] != "code" or "# your code here" in text(c):
            continue
        try:
            tree = ast.parse(text(c))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                code = ast.get_source_segment(text(c), node)
                copied = [ln for ln in lines if ln in code]
                assert len(copied) <= len(lines) // 2 or not copied, \
                    f"{path.name}: the handout's {node.name} holds the solution's lines {copied}"
    # the teaching stays: every other markdown cell is kept word for word
    kept = [text(c) for c in original["cells"] if c["cell_type"] == "markdown"
            and not set(c["metadata"].get("tags", [])) & {"solution", "answers"}]
    assert kept == [text(c) for c in student["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_stub_comments_do_not_give_the_formula_away(path):
    for c in json.loads(path.read_text())["cells"]:
        if c["cell_type"] == "code" and "# your code here" in text(c):
            comment = text(c).split("# your code here", 1)[1]
            assert not re.search(r"\w\(|sqrt|\bmean\b|softmax|topk|interleave|in a row|\+ eps|\bcos", comment), \
                f"{path.name}: the stub's comment gives the answer away: {comment!r}"


def hidden_in(nb) -> dict:
    names = {}
    for checker in handout.checkers_called(nb):
        names.update(handout.HIDDEN.get(checker, ({}, []))[0])
    return names


def test_every_hidden_copy_and_source_cell_exists_in_its_chapter():
    """A renamed function in a chapter must not silently reappear in the handouts."""
    by_checker = {}
    for path in CHAPTERS:
        nb = json.loads(path.read_text())
        for checker in handout.checkers_called(nb):
            by_checker[checker] = "\n".join(text(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert set(handout.HIDDEN) <= set(by_checker)
    for checker, (defs, sources) in handout.HIDDEN.items():
        code = by_checker[checker]
        for name in defs:
            assert re.search(rf"^def {name}\(", code, re.M), f"{checker}: the chapter defines no {name}"
        for what in sources:
            assert f"getsource({what})" in code, f"{checker}: the chapter prints no getsource({what})"


STAND_IN_ARGS = {  # reference name -> arguments of the chapter's copy that it stands in for
    "next_token_probs": ((torch.randn(50),), {"top_p": 0.8}),
    "my_router": ((torch.randn(5, 16), torch.randn(8, 16), torch.randn(8), 2), {}),
}


def test_the_chapters_own_copies_become_stand_ins_the_checker_rejects(handouts, capsys):
    seen = set()
    for path in CHAPTERS:
        student = handouts[path.stem]
        imports = "\n".join(ast.get_source_segment(text(c), node) for c in student["cells"]
                            if c["cell_type"] == "code" for node in ast.parse(text(c)).body
                            if isinstance(node, (ast.Import, ast.ImportFrom)))
        for c in student["cells"]:
            if c["cell_type"] != "code" or "reference(" not in text(c):
                continue
            tree = ast.parse(text(c))
            for node in tree.body:
                if not (isinstance(node, ast.FunctionDef) and node.name in hidden_in(student)):
                    continue
                namespace = {}
                exec(imports, namespace)
                exec(ast.get_source_segment(text(c), node), namespace)
                fn, target = namespace[node.name], hidden_in(student)[node.name]
                seen.add(node.name)
                assert len(node.body) <= 2, f"{node.name}: the handout keeps more than the docstring and the call"
                if target in ex.CHECKERS:
                    assert not ex.CHECKERS[target](fn)
                    assert f"reference('{target}')" in capsys.readouterr().out
                else:  # a chapter's copy with its own signature: it computes what the library does
                    args, kwargs = STAND_IN_ARGS[target]
                    got, want = fn(*args, **kwargs), ex.REFERENCES[target](*args, **kwargs)
                    assert all(torch.equal(a, b) for a, b in zip(got, want)) if isinstance(want, tuple) \
                        else torch.equal(got, want)
    assert seen == {n for defs, _ in handout.HIDDEN.values() for n in defs}


def test_printed_library_sources_of_an_answer_are_left_out(handouts):
    ch2 = "\n".join(text(c) for c in handouts["02_rmsnorm"]["cells"])
    assert "getsource(RMSNorm)" not in ch2 and "the library's source of RMSNorm" in ch2
    ch4 = "\n".join(text(c) for c in handouts["04_grouped_query_attention"]["cells"])
    assert "getsource(repeat_kv)" not in ch4
    ch8 = "\n".join(text(c) for c in handouts["08_router"]["cells"])
    assert "logits.topk(k" not in ch8 and 'reference("my_router")' in ch8  # exercise 3 is not two lines away
    ch9 = "\n".join(text(c) for c in handouts["09_moe"]["cells"])
    assert "getsource(moe_dispatch)" not in ch9 and "getsource(MLPBlock)" in ch9  # the block itself stays
    ch6 = "\n".join(text(c) for c in handouts["06_attention_sinks"]["cells"])
    assert "getsource(attention_reference)" not in ch6 and "getsource(AttentionBlock)" in ch6  # the rest stays


def test_strip_handles_the_older_layout_and_never_overwrites_the_chapters(tmp_path, capsys):
    import nbformat
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# Chapter"),
        v4.new_code_cell("plot()", metadata={"tags": ["hide-input"]}),  # a collapsed plot: not a solution
        v4.new_code_cell("def student_f(x):\n    ...  # your code here"),
        v4.new_markdown_cell("The worked solution (click to show)."),
        v4.new_code_cell("def student_f(x):\n    return x", metadata={"tags": ["hide-input"]}),
        v4.new_code_cell("check_swiglu(student_f)", outputs=[v4.new_output("stream", text="PASS: check_swiglu: ok\n")]),
        v4.new_code_cell("secret = 1", metadata={"tags": ["solution"]}),
        v4.new_markdown_cell('<details class="answers">\n<summary>Answers</summary>\n\n42\n\n</details>'),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"x": {}}}}
    src = tmp_path / "chapters"
    src.mkdir()
    nbformat.write(nb, str(src / "07_x.ipynb"))
    assert cli.main(["strip", str(src), "--out", str(tmp_path / "student")]) == 0
    assert "4 solution/answer cell(s) removed" in capsys.readouterr().out
    student = nbformat.read(str(tmp_path / "student" / "07_x.ipynb"), as_version=4)
    assert [c.source for c in student.cells] == ["# Chapter", "plot()", "def student_f(x):\n    ...  # your code here",
                                                 "check_swiglu(student_f)"]
    assert all(c.outputs == [] for c in student.cells if c.cell_type == "code")
    assert "widgets" not in student.metadata
    assert cli.main(["strip", str(src), "--out", str(src)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["strip", str(tmp_path / "nothing.ipynb"), "--out", str(tmp_path / "s")]) == 2
