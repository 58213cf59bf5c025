#!/usr/bin/env bash
# The book where readers run it, each in a fresh virtual environment with nothing from the checkout's:
#   colab    a Colab user: torch and the Jupyter runtime, then `pip install nanogptoss[book]` (built from
#            this checkout, not editable, no myst-nb); every chapter copied alone into an empty folder and
#            run top to bottom, its Colab install cell left out (.ci/colab_run.py).
#   teacher  a teacher: the environment made by exactly the commands of book/instructor.md (the package
#            spec replaced by this checkout, torch pinned), then `exercises strip` and `exercises grade`
#            on a correct and a wrong submission of two chapters; the report must say PASS and FAIL with
#            the reason (.ci/teacher_check.py).
# Usage: .ci/colab_check.sh [colab] [teacher]   (both when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}  # the Makefile's TORCH_PIN: pinned in each pip command, so nothing pulls another torch
CELL_TIMEOUT=${CELL_TIMEOUT:-600}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(colab teacher)

# A Colab user has the network; here TIKTOKEN_CACHE_DIR, NANOGPTOSS_DATA and HF_HUB_OFFLINE stand in
# for it where the Makefile sets them (`make colab-check`, `make teacher-check`).
unset PYTHONPATH  # the installed package, never the checkout, is what runs

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nanogptoss-readers.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# No kernel or Jupyter setting of this machine's user: each part sees only its own environment.
export JUPYTER_CONFIG_DIR=$WORK/jupyter-config IPYTHONDIR=$WORK/ipython

# The package is built from a copy of the checkout's files (tracked and new, ignored ones left out),
# so the build leaves nothing in the checkout and nothing ignored (.venv, runs/) slips in.
SRC=$WORK/nanogptoss
mkdir -p "$SRC"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar -c --null -T - | tar -x -C "$SRC"

colab() {
  local venv=$WORK/colab
  "$PYTHON" -m venv "$venv"
  # --no-compile: Python compiles only the modules the chapters import, when they import them
  "$venv/bin/pip" install -q --no-compile "$TORCH_PIN" ipykernel nbclient
  "$venv/bin/pip" install -q --no-compile "$SRC[book]" "$TORCH_PIN"
  if "$venv/bin/python" -c "import myst_nb" 2>/dev/null; then
    echo "colab: myst-nb is installed in the Colab environment; nanogptoss[book] must not bring it" >&2
    return 1
  fi
  # the kernel is this environment's Python, whatever else the machine has registered
  export JUPYTER_DATA_DIR=$WORK/jupyter-colab
  mkdir -p "$JUPYTER_DATA_DIR/kernels/python3"
  printf '{"argv": ["%s", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "Python 3", "language": "python"}\n' \
    "$venv/bin/python" > "$JUPYTER_DATA_DIR/kernels/python3/kernel.json"
  (cd "$WORK" && "$venv/bin/python" "$ROOT/.ci/colab_run.py" --timeout "$CELL_TIMEOUT" "$ROOT"/notebooks/*.ipynb)
}

teacher() {
  local home=$WORK/teacher commands
  mkdir -p "$home"
  # book/instructor.md's own commands, the package spec replaced by this checkout and the torch pin
  commands=$("$PYTHON" .ci/teacher_check.py commands book/instructor.md "$SRC" "$TORCH_PIN")
  export JUPYTER_DATA_DIR=$WORK/jupyter-teacher  # only the kernel the instructions install
  (
    cd "$home"
    echo "$commands" | sed 's/^/teacher$ /'
    eval "$commands"
    python -m nanogptoss exercises strip "$ROOT/notebooks" --out handouts >/dev/null
    python "$ROOT/.ci/teacher_check.py" submissions "$ROOT/notebooks" handouts submissions
    python -m nanogptoss exercises grade submissions --timeout "$CELL_TIMEOUT" --jobs 2
    python "$ROOT/.ci/teacher_check.py" verify submissions/graded
  )
}

for part in "${parts[@]}"; do
  case $part in
    colab | teacher) "$part" ;;
    *) echo "colab_check.sh: unknown part '$part' (colab, teacher)" >&2; exit 2 ;;
  esac
done
