"""The chapters' glue: myst-nb's where it is installed, a printed value where it is not (Colab)."""

import sys

from IPython.display import Markdown

from nanogptoss.book.glue import glue


def test_without_myst_nb_the_value_is_printed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now raises ImportError
    glue("ch_seconds", Markdown("12"), display=False)
    glue("ch_ratio", 0.25)
    assert capsys.readouterr().out == "ch_seconds: 12\nch_ratio: 0.25\n"


def test_with_myst_nb_the_call_goes_to_it(monkeypatch):
    calls = []

    class FakeMystNb:
        @staticmethod
        def glue(name, value, display=True):
            calls.append((name, value, display))

    monkeypatch.setitem(sys.modules, "myst_nb", FakeMystNb)
    glue("ch_x", 3, display=False)
    assert calls == [("ch_x", 3, False)]
