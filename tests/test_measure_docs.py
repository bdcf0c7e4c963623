"""The emergence measure's documented examples run and print what they say."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import emergeinit.measure.graph
import emergeinit.measure.network
import emergeinit.measure.tracker

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(
    "module", [emergeinit.measure.graph, emergeinit.measure.network, emergeinit.measure.tracker]
)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, verbose=False)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def test_measure_page_examples() -> None:
    # The page imports these once, at its top, in a plain code block; its ``>>>`` examples run
    # in order in one namespace, each fenced block on its own (the fence ends the output).
    from emergeinit.measure import EmergenceTracker, graph_emergence, measure_emergence

    globs = {"EmergenceTracker": EmergenceTracker, "graph_emergence": graph_emergence,
             "measure_emergence": measure_emergence}  # fmt: skip
    text = (DOCS / "measure.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if ">>>" in b]
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for i, block in enumerate(blocks):
        runner.run(parser.get_doctest(block, globs, f"measure.md[{i}]", "docs/measure.md", 0))
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0
