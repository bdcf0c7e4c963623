"""Compact Markdown tables for docs/results.md from a study directory.

The same statistics as the study's ``report.md`` (``emergeinit.bench.stats``: t-intervals over
seeds, paired differences with Holm correction across the study's family, held-out selection)
and the same verdicts (``emergeinit.bench.verdict``: better / worse / equivalent within the
study's margin / inconclusive with the seeds it would need, docs/verdicts.md), laid out per
question and in percent. The held-out selections (``lr-best``) get verdicts too: one Holm family
over the table's comparisons, at the study's confidence, margins and power. ``--baseline`` pairs
against another init than the study's own (e.g. emergence on the xavier_uniform base against
xavier, which shares its draws).

    python benchmarks/results_tables.py runs/results-mlp accuracy [--baseline xavier]
    python benchmarks/results_tables.py runs/results-mlp steps
    python benchmarks/results_tables.py runs/results-lr lr-grid
    python benchmarks/results_tables.py runs/results-lr lr-best
    python benchmarks/results_tables.py runs/results-mlp alpha-best
    python benchmarks/results_tables.py runs/results-adamw verdicts [--metric test_acc_epoch1]
    python benchmarks/results_tables.py runs/results-mlp emergence
    python benchmarks/results_tables.py runs/results-lr weights-vs-rates
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from emergeinit.bench import stats
from emergeinit.bench.answer import verdict_phrase
from emergeinit.bench.labels import label
from emergeinit.bench.report import EMERGENCE_INITS, answer_of, judge_in_study
from emergeinit.bench.store import FINISHED
from emergeinit.bench.study import StudyDir
from emergeinit.bench.verdict import PairedSample, Verdict, points_scale

Row = dict[str, Any]


def pct(x: float, digits: int = 2) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def diff(p: stats.Paired | None) -> str:
    if p is None:
        return "(baseline)"
    if p.n < 2:
        return f"{100 * p.mean:+.2f} (n={p.n}, no interval)"
    return f"{100 * p.mean:+.2f} [{100 * p.low:+.2f}, {100 * p.high:+.2f}]"


def pv(p: float) -> str:
    return "–" if math.isnan(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def model_name(row: Row) -> str:
    return str(row["model"])


def verdict_cell(v: Verdict | None) -> str:
    """The verdict in words (the margin without its unit: every table here is in points)."""
    return "–" if v is None else verdict_phrase(v, margin_unit=False)


def accuracy(rows: list[Row], cfg: dict[str, Any], baseline: str) -> None:
    cfg = {**cfg, "stats": {**cfg["stats"], "baseline": baseline}}
    answer = answer_of(cfg, rows)
    found = {(c.config, c.metric): c for c in answer.comparisons}
    verdicts = {(c.config, c.metric): e.verdict for c, e in zip(answer.comparisons, answer.entries)}
    for _, members in stats.group(rows, stats.SETTING).items():
        first = members[0]
        print(f"\n**{model_name(first)}** ({first['optimizer']}, lr {first['lr']:g})\n")
        print(
            f"| init | n | epoch-1 acc % | Δ epoch 1 vs {baseline} [95% CI] | verdict, epoch 1 | "
            f"final acc % | Δ final vs {baseline} [95% CI] | verdict, final | p (Holm), final | "
            "diverged |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for config, ms in stats.group(members, stats.CONFIG).items():
            e1 = stats.summarize([r["test_acc_epoch1"] for r in ms])
            fin = stats.summarize([r["test_acc_final"] for r in ms])
            c1 = found.get((config, "test_acc_epoch1"))
            cf = found.get((config, "test_acc_final"))
            if ms[0]["init"] != baseline and cf is None:
                continue  # no baseline in this setting
            div = sum(r["status"] == "diverged" for r in ms)
            v1, vf = (
                verdicts.get((config, "test_acc_epoch1")),
                verdicts.get((config, "test_acc_final")),
            )
            print(
                f"| {label(ms[0])} | {len(ms)} | {pct(e1.mean)} ± {pct(e1.std)} | "
                f"{diff(c1.result if c1 else None)} | {verdict_cell(v1)} | "
                f"{pct(fin.mean)} ± {pct(fin.std)} | {diff(cf.result if cf else None)} | "
                f"{verdict_cell(vf)} | {pv(cf.p_holm) if cf else '–'} | {div} |"
            )


def steps(rows: list[Row], baseline: str, targets: list[float]) -> None:
    baselines = stats.group([r for r in rows if r["init"] == baseline], stats.SETTING)
    for key, members in stats.group(rows, stats.SETTING).items():
        print(f"\n**{model_name(members[0])}**\n")
        head = " | ".join(
            f"reached {t:g} | mean steps to {t:g} | ratio to {baseline} [95% CI]" for t in targets
        )
        print(f"| init | {head} |")
        print("|---|" + "---|---|---|" * len(targets))
        base = baselines.get(key, [])
        for _, ms in stats.group(members, stats.CONFIG).items():
            cells = []
            for t in targets:
                col = f"steps_to_{t:g}"
                mine, theirs = stats.by_seed(ms, col), stats.by_seed(base, col)
                reached = [v for v in mine.values() if v is not None]
                common = sorted(set(mine) & set(theirs))
                r = stats.ratio_interval([mine[s] for s in common], [theirs[s] for s in common])
                if ms[0]["init"] == baseline or r.n == 0:
                    ratio = "–"
                elif r.n == 1:
                    ratio = f"{r.mean:.2f} (n=1, no interval)"
                else:
                    ratio = f"{r.mean:.2f} [{r.low:.2f}, {r.high:.2f}] (n={r.n})"
                mean = math.fsum(reached) / len(reached) if reached else math.nan
                cells += [
                    f"{len(reached)}/{len(ms)}",
                    "–" if math.isnan(mean) else f"{mean:.0f}",
                    ratio,
                ]
            print(f"| {label(ms[0])} | " + " | ".join(cells) + " |")


def lr_grid(rows: list[Row]) -> None:
    for _, members in stats.group(rows, ("dataset", "model", "optimizer")).items():
        lrs = sorted({r["lr"] for r in members})
        print(f"\n**{model_name(members[0])}**: final test accuracy %, mean ± std over all seeds\n")
        print("| init | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
        print("|---|" + "---|" * len(lrs))
        for _, ms in stats.group(members, stats.INIT_KEYS).items():
            cells = []
            for lr in lrs:
                at = [r for r in ms if r["lr"] == lr]
                s = stats.summarize([r["test_acc_final"] for r in at])
                div = sum(r["status"] == "diverged" for r in at)
                cells.append(f"{pct(s.mean)} ± {pct(s.std)}" + (f" ({div} div.)" if div else ""))
            print(f"| {label(ms[0])} | " + " | ".join(cells) + " |")


def lr_best(rows: list[Row], baseline: str, cfg: dict[str, Any]) -> None:
    chosen, held = stats.split_seeds([r["seed"] for r in rows], cfg["stats"]["select_seeds"])
    pair = ("dataset", "model", "optimizer")
    keys = (*pair, *stats.INIT_KEYS)
    tables = []
    for metric in cfg["stats"]["primary"]:
        sels = stats.select_best_vs_baseline(
            rows, keys, "lr", baseline, pair_keys=pair,
            select_metric=cfg["stats"]["select_metric"], report_metric=metric,
            selection_seeds=chosen, held_out_seeds=held,
        )  # fmt: skip
        tables.append((metric, sels))
    # One Holm family: every held-out comparison of the table, both metrics.
    samples = [
        PairedSample(metric, *sel.held_out_pairs)
        for metric, sels in tables for sel in sels if sel.held_out_pairs
    ]  # fmt: skip
    verdicts = iter(judge_in_study(cfg, samples))
    for metric, sels in tables:
        print(
            f"\n{metric}: lr chosen per init by {cfg['stats']['select_metric']} on seeds "
            f"{chosen}, reported on held-out seeds {held}\n"
        )
        print(
            f"| model | init | its lr | held-out % | {baseline} at its lr, held-out % | "
            f"Δ vs {baseline} [95% CI] | p | verdict (Holm over the table) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for sel in sels:
            row = dict(zip(keys, sel.group, strict=True))
            vs = sel.vs_baseline
            base = f"{pct(sel.baseline.mean)} (lr {sel.baseline_choice:g})" if sel.baseline else "–"
            print(
                f"| {row['model']} | {label(row)} | {sel.choice:g} | "
                f"{pct(sel.held_out.mean)} ± {pct(sel.held_out.std)} | {base} | "
                f"{diff(vs) if vs else '–'} | {pv(vs.p) if vs else '–'} | "
                f"{verdict_cell(next(verdicts)) if vs else '–'} |"
            )


def weights_vs_rates(rows: list[Row], cfg: dict[str, Any], metric: str = "test_acc_final") -> None:
    """emergence (scaled weights) − emergence-lr (per-layer lr multipliers), same everything
    else (dataset, model, optimizer, lr, base, alpha, pivot, head, order, units), paired by
    seed over all seeds; verdicts with one Holm family over the table."""
    keys = (*stats.SETTING, *(k for k in stats.INIT_KEYS if k != "init"))
    lr_form = stats.group([r for r in rows if r["init"] == "emergence-lr"], keys)
    lines, samples = [], []
    for key, ms in stats.group([r for r in rows if r["init"] == "emergence"], keys).items():
        other = lr_form.get(key, [])
        a, b = stats.by_seed(ms, metric), stats.by_seed(other, metric)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        samples.append(PairedSample(metric, [a[s] for s in seeds], [b[s] for s in seeds]))
        d = stats.paired([a[s] for s in seeds], [b[s] for s in seeds])
        div = (
            sum(r["status"] == "diverged" for r in ms),
            sum(r["status"] == "diverged" for r in other),
        )
        config = label(ms[0]).removeprefix("emergence ")
        lines.append(
            f"| {ms[0]['model']} | {config} | {ms[0]['lr']:g} | {d.n} | "
            f"{pct(stats.summarize([a[s] for s in seeds]).mean)} | "
            f"{pct(stats.summarize([b[s] for s in seeds]).mean)} | {diff(d)} | {pv(d.p)} | "
            f"{div[0]} / {div[1]} |"
        )
    print(f"{metric}: emergence − emergence-lr, paired by seed (percentage points)\n")
    print(
        "| model | config | lr | n | emergence % | emergence-lr % | Δ [95% CI] | p | diverged | "
        "verdict (Holm over the table) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line, v in zip(lines, judge_in_study(cfg, samples), strict=True):
        print(f"{line} {verdict_cell(v)} |")


def alpha_best(rows: list[Row], baseline: str, cfg: dict[str, Any]) -> None:
    """The report's "Best alpha" selection (alpha chosen per setting and emergence config on
    the selection seeds, reported on the held-out seeds, paired with the baseline on them),
    with verdicts: one Holm family over the table (every primary metric)."""
    chosen, held = stats.split_seeds([r["seed"] for r in rows], cfg["stats"]["select_seeds"])
    keys = (*stats.SETTING, *stats.BUT_ALPHA)
    emergence = [r for r in rows if r["init"] in EMERGENCE_INITS]
    baselines = stats.group([r for r in rows if r["init"] == baseline], stats.SETTING)
    lines, samples = [], []
    for metric in cfg["stats"]["primary"]:
        for sel in stats.select_best(
            emergence, keys, "alpha", select_metric=cfg["stats"]["select_metric"],
            report_metric=metric, selection_seeds=chosen, held_out_seeds=held,
            baseline_rows=lambda gkey: baselines.get(gkey[: len(stats.SETTING)], []),
        ):  # fmt: skip
            if not sel.held_out_pairs:
                continue
            mine, theirs = sel.held_out_pairs
            samples.append(PairedSample(metric, mine, theirs))
            row = dict(zip(keys, sel.group, strict=True)) | {"alpha": sel.choice}
            lines.append(
                f"| {row['model']} | {row['optimizer']} lr {row['lr']:g} | {label(row)} | "
                f"{metric} | "
                f"{pct(stats.summarize(mine).mean)} | {pct(stats.summarize(theirs).mean)} | "
                f"{diff(stats.paired(mine, theirs))} |"
            )
    print(
        f"alpha chosen by {cfg['stats']['select_metric']} on seeds {chosen}, reported on "
        f"held-out seeds {held}, paired with {baseline} on them\n"
    )
    print(
        f"| model | optimizer | chosen | metric | held-out % | {baseline} held-out % | "
        "Δ [95% CI] | verdict (Holm over the table) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for line, v in zip(lines, judge_in_study(cfg, samples), strict=True):
        print(f"{line} {verdict_cell(v)} |")


def emergence(rows: list[Row], primary: list[str]) -> None:
    print("| model | init | log10 E at init, mean ± std | final acc % |")
    print("|---|---|---|---|")
    for _, ms in stats.group(rows, stats.CONFIG).items():
        e = stats.summarize([r["log10_e_init"] for r in ms if r["log10_e_init"] is not None])
        fin = stats.summarize([r["test_acc_final"] for r in ms])
        print(
            f"| {model_name(ms[0])} | {label(ms[0])} | {e.mean:.3f} ± {e.std:.3f} | "
            f"{pct(fin.mean)} |"
        )
    print()
    print("| model | runs | metric | n | Spearman ρ | 95% CI (Fisher z) | 95% CI (bootstrap) | p |")
    print("|---|---|---|---|---|---|---|---|")
    family = ("kaiming", "xavier", "emergence")
    for _, members in stats.group(rows, stats.SETTING).items():
        measured = [r for r in members if r["log10_e_init"] is not None]
        scopes = [("all inits", measured), ("kaiming, xavier, emergence", None)]
        scopes[1] = (scopes[1][0], [r for r in measured if r["init"] in family])
        for scope, chosen in scopes:
            if scope != "all inits" and len(chosen) in (0, len(measured)):
                continue
            for m in primary:
                c = stats.spearman([r["log10_e_init"] for r in chosen], [r[m] for r in chosen])
                print(
                    f"| {model_name(members[0])} | {scope} | {m} | {c.n} | {c.rho:+.3f} | "
                    f"[{c.fisher_low:+.3f}, {c.fisher_high:+.3f}] | "
                    f"[{c.boot_low:+.3f}, {c.boot_high:+.3f}] | {pv(c.p)} |"
                )


def verdict_grid(rows: list[Row], cfg: dict[str, Any], baseline: str, metric: str) -> None:
    """The study's Answer on one metric as a grid: a row per setting (model, optimizer, lr),
    a column per candidate configuration, each cell the difference vs the baseline in points
    with its interval and verdict."""
    cfg = {**cfg, "stats": {**cfg["stats"], "baseline": baseline}}
    answer = answer_of(cfg, rows)
    entries = [e for e in answer.entries if e.verdict.metric == metric]
    columns = list(dict.fromkeys(e.init for e in entries))
    grid: dict[tuple[str, str, float], dict[str, str]] = {}
    for e in entries:
        v, key = e.verdict, (e.config["model"], e.config["optimizer"], e.config["lr"])
        k = points_scale(metric)
        cell = "–" if v.mean_diff is None else f"{k * v.mean_diff:+.2f}"
        if v.ci is not None:
            cell += f" [{k * v.ci[0]:+.2f}, {k * v.ci[1]:+.2f}]"
        grid.setdefault(key, {})[e.init] = f"{cell} {verdict_cell(v)}"
    n = len({r["seed"] for r in rows})
    print(
        f"{metric}: difference vs {baseline} [95% CI] and verdict, paired by seed "
        f"({n} seeds; Holm over the study's {len(answer.entries)} comparisons)\n"
    )
    print("| model | optimizer | lr | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for (model, optimizer, lr), cells in grid.items():
        print(
            f"| {model} | {optimizer} | {lr:g} | "
            + " | ".join(cells.get(c, "–") for c in columns)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument(
        "table",
        choices=(
            "accuracy",
            "steps",
            "lr-grid",
            "lr-best",
            "alpha-best",
            "emergence",
            "weights-vs-rates",
            "verdicts",
        ),
    )
    parser.add_argument("--metric", default="test_acc_final", help="verdicts: the metric")
    parser.add_argument("--baseline", default=None, help="default: the study's stats.baseline")
    args = parser.parse_args()
    study = StudyDir(args.study)
    cfg = study.load_config()
    rows = [r for r in study.results(cfg).rows if r["status"] in FINISHED]
    baseline = args.baseline or cfg["stats"]["baseline"]
    primary = cfg["stats"]["primary"]
    if args.table == "accuracy":
        accuracy(rows, cfg, baseline)
    elif args.table == "steps":
        steps(rows, baseline, cfg["train"]["targets"])
    elif args.table == "lr-grid":
        lr_grid(rows)
    elif args.table == "lr-best":
        lr_best(rows, baseline, cfg)
    elif args.table == "verdicts":
        verdict_grid(rows, cfg, baseline, args.metric)
    elif args.table == "alpha-best":
        alpha_best(rows, baseline, cfg)
    elif args.table == "weights-vs-rates":
        weights_vs_rates(rows, cfg)
    else:
        emergence(rows, primary)


if __name__ == "__main__":
    main()
