"""Report and plots from a real (small) study run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emergeinit.bench.cli import run_bench, run_report
from emergeinit.bench.store import read_results

# A 30-run study in-process, then its report and plots.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "s"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the per-test fixture runs
    code = run_bench(
        "smoke",
        out,
        [
            "init.names=['kaiming','emergence','emergence-lr']",
            "init.alpha=[1.5,2.0]",
            "train.lr=[0.02,0.05]",
            "train.seeds=3",
            "train.epochs=1",
        ],
        workers=1,
        quiet=True,
    )
    torch.set_num_threads(previous)
    assert code == 0
    return out


def test_report_sections(study: Path) -> None:
    report = (study / "report.md").read_text()
    for heading in (
        "## Per configuration",
        "## Paired differences vs `kaiming`",
        "## Steps to target test accuracy",
        "## Best alpha, chosen on validation, reported on held-out seeds",
        "## Learning rate tuned per init",
        "kaiming at its best lr, held-out",
        "## Does emergence at init predict accuracy?",
        "## Plots",
    ):
        assert heading in report, heading
    assert "emergence-lr α=1.5" in report
    # 4 non-baseline configs x 2 lrs x 2 primary metrics in the Holm family.
    assert "all 16 comparisons" in report


def test_plots_exist_and_are_linked(study: Path) -> None:
    names = {p.name for p in (study / "plots").glob("*.png")}
    assert {"curves-1.png", "curves-2.png", "accuracy-vs-alpha.png", "accuracy-vs-lr.png"} <= names
    # The smoke study measures emergence at init (measure.enabled defaults to true) and its
    # MLPs give a finite log10 E for every run, so the emergence plot must be there.
    rows = read_results(study / "results.csv").rows
    assert rows and all(isinstance(r["log10_e_init"], float) for r in rows)
    assert "emergence.png" in names
    report = (study / "report.md").read_text()
    for name in names:
        assert f"(plots/{name})" in report
        assert (study / "plots" / name).stat().st_size > 1000


def test_run_report_rewrites(study: Path) -> None:
    before = (study / "report.md").read_text()
    (study / "report.md").write_text("stale")
    assert run_report(study) == 0
    assert (study / "report.md").read_text() == before
