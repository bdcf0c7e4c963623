"""The documentation's examples run and print what they say."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import pkgutil
import re
from pathlib import Path

import pytest

import emergeinit

README = Path(__file__).resolve().parents[1] / "README.md"
# Every module of the package; __main__ runs the CLI when imported.
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(emergeinit.__path__, "emergeinit.")
    if not info.name.endswith(".__main__")
)


@pytest.mark.parametrize("name", ["emergeinit", *MODULES])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.failed == 0  # doctest printed each failing example above


def test_docstring_examples_are_collected() -> None:
    # A guard on the collection itself: these modules' public functions carry examples.
    finder = doctest.DocTestFinder()
    with_examples = {
        name
        for name in ["emergeinit", *MODULES]
        if any(test.examples for test in finder.find(importlib.import_module(name)))
    }
    assert {
        "emergeinit.init", "emergeinit.models", "emergeinit.schedule", "emergeinit.units",
        "emergeinit.measure.graph", "emergeinit.measure.network", "emergeinit.measure.tracker",
    } <= with_examples  # fmt: skip


def test_readme_quick_start_prints_the_table_it_shows() -> None:
    text = README.read_text()
    code, shown = re.search(
        r"## Quick start\n\n```python\n(.*?)```\n\n```\n(.*?)```", text, re.S
    ).groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown
