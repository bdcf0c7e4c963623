#!/usr/bin/env bash
# The main job on a fresh machine: set up, fetch Fashion-MNIST where apt can, run the default study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) ||
            echo "notice: could not install dataset-fashion-mnist; the study falls back to scikit-learn's digits"
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        (sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null) ||
            echo "notice: could not install dataset-fashion-mnist; the study falls back to scikit-learn's digits"
    else
        echo "notice: apt is not available here; the study falls back to scikit-learn's digits"
    fi
fi
.venv/bin/emergeinit bench "$@"
