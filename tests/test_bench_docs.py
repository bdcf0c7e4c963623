"""docs/bench.md's worked examples run as written: the plug-in module and study file are
written out, the command and the Python examples run in a scratch folder; the harness's
docstring examples run too."""

from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emergeinit.bench import tasks

DOC = Path(__file__).resolve().parents[1] / "docs" / "bench.md"
MARK = "<!-- tested: tests/test_bench_docs.py -->"


def blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every block the doc marks as tested, in order."""
    found = re.findall(re.escape(MARK) + r"\n```(\w+)\n(.*?)```", DOC.read_text(), re.S)
    return [(lang, code) for lang, code in found]


def test_the_doc_marks_every_kind_of_example() -> None:
    found = blocks()
    files = [code.splitlines()[0] for _, code in found if code.startswith("# file: ")]
    assert files == ["# file: my_plugins.py", "# file: rings.toml", "# file: my_task.py"]
    assert sum(code.startswith("# example") for _, code in found) == 2
    assert sum(lang == "console" for lang, _ in found) == 1


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    tasks.unregister("line")
    for name in ("my_plugins", "my_task"):
        sys.modules.pop(name, None)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_the_worked_examples_run_as_written(scratch: Path) -> None:
    found = blocks()
    for _, code in found:
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            (scratch / first.removeprefix("# file: ").strip()).write_text(code)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("EMERGEINIT_DATA_DIR", None)
    for lang, code in found:
        if lang == "console":
            lines = code.strip().splitlines()
            command = lines[0].removeprefix("$ ")
            result = subprocess.run(["bash", "-c", command], cwd=scratch, env=env,
                                    capture_output=True, text=True, timeout=600)  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == lines[1:]  # what the doc shows it prints
        elif code.startswith("# example"):
            exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    report = (scratch / "runs" / "rings" / "report.md").read_text()
    assert "## Paired differences vs `kaiming`" in report and "| half-kaiming |" in report
    line = (scratch / "runs" / "line" / "results.csv").read_text().splitlines()
    assert line[0].endswith(",line_acc,error") and len(line) == 5  # 2 inits x 2 seeds


@pytest.mark.parametrize(
    "module",
    [
        "emergeinit.bench.labels",
        "emergeinit.bench.markdown",
        "emergeinit.bench.plugins",
        "emergeinit.bench.runtime",
        "emergeinit.bench.tasks.classification",
    ],
)
def test_docstring_examples(module: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(module), verbose=False)
    assert tried > 0 and failures == 0
