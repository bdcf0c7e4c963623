"""Wall time of the whole test suite against the fast lane (``pytest -m "not slow"``).

The two are run alternately (full, fast, full, fast, ...) in one session on one machine, so
drift on a shared machine hits both; medians and their ratio are printed. The fast lane must
take at most half the full suite's time (the README's Development section states the numbers).

    python benchmarks/lane_times.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANES = {
    "full": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    "fast": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in LANES}
    for _ in range(args.repeats):
        for name, cmd in LANES.items():
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            print(f"{name}: {seconds:.1f} s  ({summary})", flush=True)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            times[name].append(seconds)
    full, fast = statistics.median(times["full"]), statistics.median(times["fast"])
    print(f"median full {full:.1f} s, fast {fast:.1f} s, fast / full = {fast / full:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
