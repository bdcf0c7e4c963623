"""What recording a finished run costs as a study grows: the append store against the rewrite.

For each study size N (rows already in ``results.csv``), timed in the same run, repeats
interleaved so drift on a shared machine hits both, medians reported:

- ``append``: :meth:`ResultsStore.append` of one row (one ``write`` to the file opened in
  append mode, then ``fsync``): the store's per-run cost;
- ``rewrite``: the old ``study.write_results`` (kept in ``tests/legacy_results.py``) of all
  N + 1 rows (serialise every row, write a temp
  file, fsync, ``os.replace``, fsync the folder): what the driver did after every run before
  the store, holding the rows as ``check_results`` returns them. Skipped above
  ``--rewrite-up-to`` rows;

and once per size, the loads (validation of every line):

- ``read``: :func:`read_results` (the report's load: validated, typed, repeats resolved);
- ``repair``: :func:`repair_results` of an intact file (the driver's load at each start: the
  same scan; an intact file is not rewritten);
- ``before``: the old ``check_results`` + ``typed_rows``, the driver's and the report's loads
  before the store.

The files live in ``--dir`` (default: a temp folder), which should be on the disk studies use:
fsync on a RAM disk costs nothing and would flatter the append.

    python benchmarks/store_write.py [--sizes 100,10000,1000000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from emergeinit.bench import config
from emergeinit.bench.store import ResultsStore, format_cell, format_line, read_results
from emergeinit.bench.store import repair_results as repair
from emergeinit.bench.study import columns

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from legacy_results import check_results, typed_rows, write_results


def row_of(i: int) -> dict[str, Any]:
    """A row shaped like a real study's (every 20th run failed, with an error message)."""
    failed = i % 20 == 19
    emergence = i % 3 == 0
    return {
        "run_id": f"{i:012x}",
        "status": "failed" if failed else "ok",
        "task": "classification",
        "dataset": "fashion-mnist",
        "model": "mlp:784-256x3-10",
        "init": "emergence" if emergence else "kaiming",
        "base": "kaiming_normal" if emergence else "",
        "alpha": 2.0 if emergence else None,
        "pivot": 0.5 if emergence else None,
        "head": True if emergence else None,
        "optimizer": "sgd",
        "lr": 0.05,
        "seed": i % 10,
        "epochs": 10,
        "val_acc_epoch1": None if failed else 0.7 + (i % 997) / 9973,
        "test_acc_epoch1": None if failed else 0.69 + (i % 991) / 9967,
        "val_acc_final": None if failed else 0.85 + (i % 983) / 9949,
        "test_acc_final": None if failed else 0.84 + (i % 977) / 9941,
        "test_loss": None if failed else 0.4 + (i % 971) / 9931,
        "train_loss_final": None if failed else 0.3 + (i % 967) / 9929,
        "steps": None if failed else 4690,
        "steps_to_0.6": None if failed else 469 + i % 50,
        "steps_to_0.9": None,
        "log10_e_init": 5.5 + (i % 953) / 9907,
        "log10_e_final": None if failed else 5.1 + (i % 947) / 9901,
        "init_seconds": 0.001 + (i % 941) / 1e6,
        "train_seconds": None if failed else 50.0 + (i % 937) / 97,
        "wall_seconds": 51.0 + (i % 929) / 89,
        "error": "RuntimeError: CUDA out of memory, tried to allocate 2.00 GiB" if failed else "",
    }


def make_study(path: Path, n: int, cols: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(format_line(cols))
        for i in range(n):
            row = row_of(i)
            fh.write(format_line([format_cell(row.get(c)) for c in cols]))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def human(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def size(n: int) -> str:
    return f"{n / 1e3:.0f} kB" if n < 1e6 else f"{n / 1e6:.0f} MB"


def measure(n: int, cols: list[str], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / f"results-{n}.csv"
    make_study(path, n, cols)
    size = path.stat().st_size
    loads = 3 if n >= 100_000 else 9
    out: dict[str, Any] = {"n": n, "bytes": size}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the generated file must be intact
        read = [timed(lambda: read_results(path, cols)) for _ in range(loads)]
        repaired = [timed(lambda: repair(path, cols)) for _ in range(loads)]
    out["read"] = statistics.median(read)
    out["repair"] = statistics.median(repaired)
    out["rss_after_read"] = peak_rss_mb()
    # One at a time, so that the rows of one are freed before the other loads (memory).
    out["before"] = statistics.median(timed(lambda: check_results(path)) for _ in range(loads))
    out["before"] += statistics.median(timed(lambda: typed_rows(path)) for _ in range(loads))

    rewrite = n <= args.rewrite_up_to
    held: list[dict[str, Any]] = []
    if rewrite:
        other = folder / f"rewritten-{n}.csv"
        shutil.copyfile(path, other)
        held = list(check_results(other)[0])  # what the driver held before the store
    appends, rewrites = [], []
    slow = max(3, args.repeats // 3) if n >= 100_000 else args.repeats  # rewrites of 30+ MB
    with ResultsStore(path, cols) as results:
        results.results = None  # the driver keeps only the finished ids: free the rows
        for k in range(args.repeats):  # interleaved: one append, one rewrite
            new = row_of(n + k)
            appends.append(timed(lambda new=new: results.append(new)))
            if rewrite and k < slow:
                rows = [*held, new]
                rewrites.append(timed(lambda rows=rows: write_results(other, rows, cols)))
    out["append"] = statistics.median(appends)
    out["rewrite"] = statistics.median(rewrites) if rewrites else None
    del held
    for f in folder.glob(f"*-{n}.csv"):
        f.unlink()
    return out


def table(results: list[dict[str, Any]]) -> Iterator[str]:
    yield (
        "| rows | file | append (store) | rewrite (before) | rewrite / append "
        "| read_results | repair (intact) | check_results + typed_rows | peak RSS |"
    )
    yield "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for r in results:
        ratio = f"{r['rewrite'] / r['append']:,.0f}x" if r["rewrite"] else "–"
        yield (
            f"| {r['n']:,} | {size(r['bytes'])} | {human(r['append'])} | {human(r['rewrite'])} "
            f"| {ratio} | {human(r['read'])} | {human(r['repair'])} | {human(r['before'])} "
            f"| {r['rss_after_read']:,.0f} MB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,10000,1000000")
    parser.add_argument("--repeats", type=int, default=9, help="appends and rewrites per size")
    parser.add_argument(
        "--rewrite-up-to", type=int, default=1_000_000, help="largest N to time the rewrite at"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    cols = columns(config.load("default"))
    folder = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
    try:
        found = []
        for n in (int(s) for s in args.sizes.split(",")):
            found.append(measure(n, cols, args, folder))
            print(f"  measured {n:,} rows", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"{len(cols)} columns; medians of {args.repeats} appends, interleaved with "
        f"{args.repeats} rewrites ({max(3, args.repeats // 3)} from 100,000 rows)"
    )
    for line in table(found):
        print(line)


if __name__ == "__main__":
    main()
