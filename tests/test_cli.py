"""The `emergeinit` command line (core commands)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emergeinit.cli import app

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (the bench extra installs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_plan_prints_the_unit_table() -> None:
    result = runner.invoke(app, ["plan", "mlp:784-512x6-10", "--alpha", "2"])
    assert result.exit_code == 0, result.output
    assert "7 units (layers, order: traced)" in result.output
    assert "512x784" in result.output and "-3" in result.output and "+3" in result.output


def test_plan_json_and_options() -> None:
    result = runner.invoke(
        app, ["plan", "mlp-bn:20-8x3-4", "--alpha", "1.5", "--no-head", "--json", "--no-trace"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["order"] == "registration" and data["head"] is False
    assert [u["exponent"] for u in data["units"]] == [-1.0, 0.0, 1.0, 0.0]
    assert [u["scheduled"] for u in data["units"]] == [True, True, True, False]


def test_plan_transformer_blocks() -> None:
    result = runner.invoke(
        app, ["plan", "transformer:tiny", "--alpha", "1.2", "--base", "xavier_uniform"]
    )
    assert result.exit_code == 0, result.output
    assert "(blocks, order: traced)" in result.output
    assert "TransformerEncoderLayer" in result.output


def test_plan_factory() -> None:
    result = runner.invoke(app, ["plan", "torch.nn:Linear", "--alpha", "2"])
    assert result.exit_code == 2  # Linear() needs arguments: a clear error, not a traceback
    assert "error:" in result.output


def test_plan_errors_are_clear() -> None:
    result = runner.invoke(app, ["plan", "mlp:10-5-2", "--alpha", "-1"])
    assert result.exit_code == 2
    assert "alpha must be a finite real number > 0" in result.output
    result = runner.invoke(app, ["plan", "mlp:10-5-2", "--units", "neurons"])
    assert result.exit_code == 2 and "units must be one of" in result.output


@pytest.mark.slow
def test_module_entry_point_and_version() -> None:
    # The installed distribution's version, which is pyproject.toml's: not the "0.0.0" that
    # emergeinit falls back to when it runs uninstalled from a source tree.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["project"]["version"]
    assert metadata.version("emergeinit") == declared
    done = subprocess.run(
        [sys.executable, "-m", "emergeinit", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == declared != "0.0.0"


def test_measure_compares_base_and_emergence() -> None:
    result = runner.invoke(app, ["measure", "mlp:20-16x3-4", "--alpha", "2", "--batch", "8"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    base = next(line for line in lines if line.startswith("base "))
    emergence = next(line for line in lines if line.startswith("emergence alpha=2"))
    assert float(base.split()[1]) > 0 and float(emergence.split()[2]) > 0
    result = runner.invoke(app, ["measure", "transformer:tiny", "--batch", "2"])
    assert result.exit_code == 2 and "error:" in result.output


def test_plan_graph_order() -> None:
    spec = "resnet:1x8x8-4x1-6x1-3"
    result = runner.invoke(app, ["plan", spec, "--order", "graph", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["order"] == "graph"
    exponent = {u["name"]: u["exponent"] for u in data["units"]}
    assert exponent["blocks.1.shortcut.0"] == exponent["blocks.1.conv1"]
    table = runner.invoke(app, ["plan", spec, "--order", "graph"])
    assert "order: graph" in table.output and "depth" in table.output
    blocks = runner.invoke(app, ["plan", spec, "--units", "blocks", "--json"])
    assert [u["kind"] for u in json.loads(blocks.output)["units"]] == [
        "layer", "block", "block", "layer"
    ]  # fmt: skip


def test_plan_graph_order_without_trace_is_a_clear_error() -> None:
    result = runner.invoke(app, ["plan", "mlp:8-4-2", "--order", "graph", "--no-trace"])
    assert result.exit_code == 2
    assert "example_input" in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["plan", "mlp:8-4-2", "--order", "deepest"])
    assert bad.exit_code == 2 and "order must be one of" in bad.output
