"""What recording a finished run costs through the study driver, as the study grows.

``benchmarks/store_write.py`` times the store's append on its own; this times the driver's
recording seam as a study uses it, ``api._Recorder.record`` (the run's result row built from
its config and summary, checked, appended as one line and fsynced), on a study directory whose
``results.csv`` already holds N rows, and the driver's start (``ResultsStore.open``: the
validating load of N rows, an intact file not rewritten). Records and bare appends interleaved,
medians.

    python benchmarks/record_cost.py [--sizes 100,10000,1000000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from emergeinit.bench import config
from emergeinit.bench.api import _Recorder
from emergeinit.bench.store import ResultsStore, format_cell, format_line
from emergeinit.bench.study import StudyDir, columns, expand, result_row


def summary(i: int) -> dict[str, Any]:
    return {
        "status": "ok", "val_acc_epoch1": 0.81234, "test_acc_epoch1": 0.80123,
        "val_acc_final": 0.87654, "test_acc_final": 0.86543 + i * 1e-9, "test_loss": 0.3712,
        "train_loss_final": 0.2987, "steps": 156, "steps_to_0.6": 12, "steps_to_0.9": None,
        "log10_e_init": 12.3456, "log10_e_final": None, "init_seconds": 0.0123,
        "train_seconds": 1.234, "wall_seconds": 1.5, "error": "",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,1000000")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dir", default=None, help="where the study goes (default: a temp dir)")
    args = parser.parse_args()
    cfg = config.load("smoke")
    cols = columns(cfg)
    run = expand(cfg)[0]
    print("| rows in results.csv | driver start (open) | record (driver) | append (bare) |")
    print("|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            study = StudyDir(Path(tmp) / "s")
            study.path.mkdir()
            row = result_row(run, summary(0))
            cells = [format_cell(row.get(c)) for c in cols]
            with study.results_path.open("w") as fh:  # N distinct rows, written in one go
                fh.write(format_line(cols))
                for i in range(size):
                    cells[0] = f"{i:012x}"
                    fh.write(format_line(cells))
            start = time.perf_counter()
            store = ResultsStore(study.results_path, cols)
            store.open()
            opened = time.perf_counter() - start
            recorder = _Recorder(study, store, [])
            records, appends = [], []
            for k in range(args.repeats):
                done = {**run, "run_id": f"{size + 2 * k:012x}"}
                start = time.perf_counter()
                recorder.record(done, summary(k))
                records.append(time.perf_counter() - start)
                bare = result_row({**run, "run_id": f"{size + 2 * k + 1:012x}"}, summary(k))
                start = time.perf_counter()
                store.append(bare)
                appends.append(time.perf_counter() - start)
            store.close()
        print(f"| {size:,} | {opened:.2f} s | {statistics.median(records) * 1e3:.1f} ms "
              f"| {statistics.median(appends) * 1e3:.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
