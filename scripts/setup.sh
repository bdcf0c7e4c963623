#!/usr/bin/env bash
# Set up a virtual environment in .venv with emergeinit and everything its tests need.
# torch is installed first, pinned, so the package's range (torch>=2.2) is already met and pip
# never pulls a multi-GB CUDA build; set TORCH_SPEC to bring another build (e.g. "torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${pip[@]}" -e ".[${EXTRAS:-all,dev}]"
