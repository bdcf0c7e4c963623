#!/usr/bin/env bash
# Set up from scratch (see setup.sh) and run every check CI runs: ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src/emergeinit
.venv/bin/python -m pytest -q "$@"
