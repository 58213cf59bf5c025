"""The package's shape: groups a newcomer can read from the tree, no import cycles, teaching
modules free of speed code, commands that import only what they use."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanogptoss"
GROUPS = {"model", "kernels", "weights", "data", "training", "book"}
CHAPTER_MODULES = ["norm", "rope", "attention", "swiglu", "router", "moe", "transformer", "kv_cache", "generate",
                   "params"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The nanogptoss modules a file imports, at any depth of the file (lazy imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nanogptoss")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("nanogptoss"):
                continue
            for alias in node.names:  # `from . import kernels` imports a module, not a name
                candidate = f"{target}.{alias.name}"
                found.add(candidate if module_path(candidate) else target)
    return {m for m in found if module_path(m)}


def module_path(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for p in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_the_tree_shows_the_groups():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == GROUPS
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "config", "files"}  # files: how the library writes (atomic, locked)
    assert {p.stem for p in (PACKAGE / "model").glob("*.py")} == set(CHAPTER_MODULES) | {"__init__"}


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, stack):  # depth-first; a module met again on its own path closes a cycle
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_package_init_files_of_the_groups_import_nothing():
    # the groups' __init__ files are signposts: importing one never drags in the others
    for group in GROUPS - {"kernels"}:
        assert imports_of(PACKAGE / group / "__init__.py") == set(), group


@pytest.mark.parametrize("name", CHAPTER_MODULES)
def test_teaching_modules_hold_no_speed_code(name):
    source = (PACKAGE / "model" / f"{name}.py").read_text()
    for marker in ("autograd.Function", "grouped_mm", "flex_attention", "scaled_dot_product_attention",
                   "get_device_capability"):
        assert marker not in source, f"model/{name}.py contains {marker}: speed code belongs in kernels/"


def test_the_model_imports_no_command_and_the_kernels_no_model_assembly():
    edges = graph()
    for module, targets in edges.items():
        if module.startswith(("nanogptoss.model", "nanogptoss.kernels", "nanogptoss.weights", "nanogptoss.config",
                              "nanogptoss.files")):
            assert not any(t.startswith(("nanogptoss.training", "nanogptoss.book", "nanogptoss.data")) for t in targets), \
                (module, targets)
    assert not any(t == "nanogptoss.model.transformer" for t in edges["nanogptoss.kernels"])


@pytest.mark.parametrize("command, absent", [
    ("presets", ["nanogptoss.data.tokenizer", "nanogptoss.training.train", "tiktoken"]),
    ("sample", ["nanogptoss.training.train", "nanogptoss.data.stories", "nanogptoss.training.compare"]),
    ("tokenizer", ["nanogptoss.training.train", "nanogptoss.weights.checkpoint"]),
])
def test_a_command_imports_only_what_it_uses(command, absent):
    code = (f"import sys, nanogptoss.__main__ as m, importlib; importlib.import_module(m.COMMANDS[{command!r}][0]); "
            f"print([a for a in {absent!r} if a in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_command_line_lists_and_runs_commands():
    out = subprocess.run([sys.executable, "-m", "nanogptoss", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in ("train", "compare", "sample", "judge"))
    bad = subprocess.run([sys.executable, "-m", "nanogptoss", "trian"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown command 'trian'" in bad.stderr and "Traceback" not in bad.stderr
    presets = subprocess.run([sys.executable, "-m", "nanogptoss", "presets"], capture_output=True, text=True)
    assert "20,914,757,184" in presets.stdout
