"""Every known bad input is answered with one clear line, and book/reliability.md lists them all."""

import pytest
import torch

import bad_inputs
from bad_inputs import CASES, answer


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_gets_one_clear_line(case):
    message = answer(case)
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert __import__("re").search(case.expect, message), f"{case.what}: {message!r}"


def test_the_published_table_is_the_one_the_cases_give():
    answers = {case.what: answer(case) for case in CASES}
    assert bad_inputs.committed_table() == bad_inputs.table(answers), \
        "book/reliability.md is stale: run `python tests/bad_inputs.py --write`"


def test_a_missing_gpu_is_named():
    if torch.cuda.is_available():
        from nanogptoss.training.device import pick_device

        assert pick_device("cuda").type == "cuda"
        return
    for command in ("train", "sample"):
        case = bad_inputs.Case(command, f"{command} --device cuda",
                               bad_inputs.cli(command, *(("--ckpt", "x") if command == "sample" else ()),
                                              "--device", "cuda"), "no CUDA GPU")
        message = answer(case)
        assert "has no CUDA GPU; use --device auto or cpu" in message, message
