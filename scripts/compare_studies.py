"""Compare two study directories run from the same config: results.csv cell by cell and every
run's metrics.jsonl event by event, timing fields aside. Exit status 1 on any difference.

    python scripts/compare_studies.py runs/before runs/after

Used to check that a change to the harness leaves results bit for bit as they were (on CPU,
with the same --workers both times).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

TIMING = {"init_seconds", "train_seconds", "wall_seconds", "eval_seconds", "seconds"}


def rows(study: Path) -> list[dict[str, str]]:
    """results.csv's rows by run id (rows are appended as runs end, in any order; of a
    repeated run id the last row counts, as everywhere in emergeinit)."""
    with (study / "results.csv").open(encoding="utf-8", newline="") as fh:
        last = {r["run_id"]: r for r in csv.DictReader(fh)}
    return [last[k] for k in sorted(last)]


def events(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def main(a: Path, b: Path) -> int:
    ra, rb = rows(a), rows(b)
    problems = []
    if ra and rb and list(ra[0]) != list(rb[0]):
        problems.append(f"columns differ: {list(ra[0])} vs {list(rb[0])}")
    if [r["run_id"] for r in ra] != [r["run_id"] for r in rb]:
        problems.append("run ids differ")
    for x, y in zip(ra, rb):
        for key, value in x.items():
            if key not in TIMING and value != y.get(key):
                problems.append(f"{x['run_id']} {key}: {value} vs {y.get(key)}")
    streams = 0
    for row in ra:
        run_a, run_b = a / "runs" / row["run_id"], b / "runs" / row["run_id"]
        if run_b.is_dir():
            streams += 1
            if events(run_a) != events(run_b):
                problems.append(f"{row['run_id']}: metrics.jsonl differs")
    for line in problems:
        print(line)
    print(f"{len(ra)} rows, {streams} metric streams compared: {len(problems)} differences "
          "(timing columns aside)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
