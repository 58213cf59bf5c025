"""Student handouts: `python -m nanogptoss exercises strip CHAPTERS --out DIR`.

A handout keeps the chapter's teaching (all its prose, figures' code and experiments)
and leaves out what would make an exercise one copy-paste away:

* the worked solutions and the answers to the questions (markdown cells tagged
  `solution` or `answers`, the collapsed `<details class="solution">` / `"answers"` blocks);
* the chapter's own from-scratch copy of the function an exercise asks for (chapter 2's
  `rmsnorm`, chapter 7's `my_swiglu`, ...): its body becomes a call to
  `nanogptoss.book.exercises.reference(...)`, the library's version, so every later cell
  still runs, and a checker given a function that calls it fails;
* the cells that print the library's source of that function (`inspect.getsource`);
* every output and the saved widget state.

What a handout cannot hide is the installed library itself: a checker tests behaviour,
so read the submitted code for a grade that counts (book/instructor.md).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOLUTION_TAGS = ("solution", "answers")
DETAILS = re.compile(r'<details[^>]*class="[^"]*\b(solution|answers)\b')
LEGACY_INTRO = "The worked solution"  # older chapters: a hide-input code cell after this sentence

# checker -> (the chapter's own copies of its answer: function name -> reference name,
#             library objects whose printed source is its answer)
HIDDEN = {
    "check_bits_per_byte": ({}, ["bits_per_byte"]),
    "check_rmsnorm": ({"rmsnorm": "check_rmsnorm"}, ["RMSNorm"]),
    "check_rope": ({"rope": "check_rope"}, ["apply_rotary_emb", "RotaryEmbedding.forward"]),
    "check_repeat_kv": ({}, ["repeat_kv"]),
    "check_sliding_window_mask": ({"sliding_window_mask": "check_sliding_window_mask"}, ["attention_mask", "is_visible"]),
    "check_sink_attention": ({"sink_attention": "check_sink_attention"}, ["attention_reference"]),
    "check_swiglu": ({"my_swiglu": "check_swiglu"}, ["nanogptoss.model.swiglu"]),
    "check_router": ({"my_router": "my_router"}, ["nanogptoss.model.router"]),
    "check_load_balancing_loss": ({"my_load_balancing_loss": "check_load_balancing_loss"}, ["nanogptoss.model.router"]),
    "check_moe": ({}, ["moe_dispatch"]),
    "check_lr_schedule": ({}, ["lr_at"]),
    "check_top_p": ({"filtered_probs": "next_token_probs"}, []),
}
REFERENCE_IMPORT = "from nanogptoss.book.exercises import reference"
STAND_IN_NOTE = ("# Handout: the chapter's code for this function is an exercise at the end of the chapter.\n"
                 "# Until you have written it there, the library's version stands in, so the cells below run.")
SOURCE_NOTE = ("# Handout: this cell printed the library's source of {what}, the answer to an exercise\n"
               "# at the end of the chapter. Read it after you have solved the exercise.")


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def is_solution(cells, i: int) -> bool:
    """A cell the handout drops: a tagged or collapsed solution or answer, or the older
    layout's hide-input solution cell after "The worked solution ..."."""
    cell = cells[i]
    if any(t in _tags(cell) for t in SOLUTION_TAGS):
        return True
    if cell.cell_type == "markdown" and DETAILS.search(cell.source):
        return True
    before = cells[i - 1] if i > 0 else None
    return (cell.cell_type == "code" and "hide-input" in _tags(cell) and before is not None
            and before.cell_type == "markdown" and before.source.lstrip().startswith(LEGACY_INTRO))


def checkers_called(nb) -> list[str]:
    """The checkers a notebook (nbformat's, or its JSON as a dict) calls, in order."""
    from .grading import CALL

    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            found += [n for n in CALL.findall(source) if n not in found]
    return found


def _stand_in(source: str, names: dict) -> tuple[str, list[str]]:
    """`source` with each top-level `def NAME` in `names` calling its reference instead."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (magics): nothing of ours to replace
        return source, []
    lines = source.splitlines()
    replaced = []
    for node in sorted((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names),
                       key=lambda n: -n.lineno):
        a = node.args
        call = [p.arg for p in a.posonlyargs + a.args]
        if a.vararg:
            call.append("*" + a.vararg.arg)
        call += [f"{p.arg}={p.arg}" for p in a.kwonlyargs]
        if a.kwarg:
            call.append("**" + a.kwarg.arg)
        first = node.body[0]
        keep_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str)
        body_start = (first.end_lineno if keep_doc else first.lineno - 1)  # lines kept: the signature (and docstring)
        indent = " " * (first.col_offset)
        new = [indent + ln if ln else ln for ln in STAND_IN_NOTE.splitlines()]
        new.append(f'{indent}return reference("{names[node.name]}")({", ".join(call)})')
        start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        lines[start:node.end_lineno] = lines[start:body_start] + new
        replaced.append(node.name)
    if replaced:
        lines.insert(0, REFERENCE_IMPORT)
    return "\n".join(lines), replaced


def strip_solutions(nb):
    """The handout of a chapter (see the module's docstring). Returns the notebook and the
    number of solution and answer cells removed."""
    cells = nb.cells
    drop = {i for i in range(len(cells)) if is_solution(cells, i)}
    for i in list(drop):  # the older layout's introduction sentence goes with its solution
        if i > 0 and cells[i - 1].cell_type == "markdown" and cells[i - 1].source.lstrip().startswith(LEGACY_INTRO):
            drop.add(i - 1)
    hidden_defs, hidden_sources = {}, []
    for name in checkers_called(nb):
        defs, sources = HIDDEN.get(name, ({}, []))
        hidden_defs.update(defs)
        hidden_sources += sources
    getsource = re.compile(r"getsource\((" + "|".join(map(re.escape, hidden_sources)) + r")\)") if hidden_sources else None
    removed = len(drop)
    nb.cells = [c for i, c in enumerate(cells) if i not in drop]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if getsource and (m := getsource.search(cell.source)):
            cell.source = SOURCE_NOTE.format(what=m.group(1))
        elif hidden_defs:
            cell.source, _ = _stand_in(cell.source, hidden_defs)
    nb.metadata.pop("widgets", None)  # saved widget state holds the outputs' data
    return nb, removed


def strip_folder(sources, out) -> list[Path]:
    """Write the handout of each notebook in `sources` (files or folders) into `out`."""
    import nbformat

    paths = []
    for src in map(Path, sources):
        if src.is_dir():
            paths += sorted(src.glob("*.ipynb"))
        elif src.suffix == ".ipynb" and src.exists():
            paths.append(src)
        else:
            raise ValueError(f"{src} is neither a folder nor an existing .ipynb file")
    out = Path(out)
    if any(out.resolve() == p.parent.resolve() for p in paths):
        raise ValueError(f"--out {out} would overwrite the chapters themselves; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb, n = strip_solutions(nbformat.read(str(path), as_version=4))
        nbformat.write(nb, str(out / path.name))
        print(f"{path.name}: {n} solution/answer cell(s) removed")
        written.append(out / path.name)
    return written
