"""The documentation's examples run and print what they say."""

from __future__ import annotations

import contextlib
import doctest
import io
import re
from pathlib import Path

import pytest

import emergeinit.init
import emergeinit.models
import emergeinit.schedule
import emergeinit.units

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    "module", [emergeinit.schedule, emergeinit.units, emergeinit.init, emergeinit.models]
)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def test_readme_quick_start_prints_the_table_it_shows() -> None:
    text = README.read_text()
    code, shown = re.search(
        r"## Quick start\n\n```python\n(.*?)```\n\n```\n(.*?)```", text, re.S
    ).groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown
