"""``report.md``: the study's answer, from its directory alone (so it can be regenerated).

Every number is over seeds (mean, std, t confidence interval, n); comparisons are paired by
seed against the declared baseline and Holm-corrected across the study's family of comparisons
(see ``docs/bench.md#statistics-in-the-report``). The report opens with the Answer: a verdict
for every comparison (:func:`study_answer`, see ``docs/bench.md#reading-the-answer``). The
sections are assembled in one place, :func:`sections`: the Answer, the generic ones, then the
task's own (:meth:`.tasks.Task.report_section`), then the plots. The report calls
:mod:`.plots`; the plots never call the report.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats, tasks
from .answer import AnswerEntry, answer_markdown, verdict_phrase
from .config import learning_rates, optimizers
from .files import atomic_write_text
from .inits import DESCRIPTIONS
from .labels import EMERGENCE_INITS, label, setting_label
from .markdown import num as _num
from .markdown import pvalue as _p
from .markdown import summary as _summary
from .markdown import table as _table
from .store import FINISHED, SIDE_NAME, Results
from .study import StudyDir
from .verdict import MIN_SEEDS, PairedSample, Verdict, judge_family

Row = dict[str, Any]

__all__ = ["StudyAnswer", "answer_of", "build_report", "sections", "study_answer", "write_report"]


def _title(cfg: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """The report's title, the study's description and its notices (a dataset replaced by its
    fallback, say): what the Answer below must be read with."""
    out: list[str] = [f"# Study `{cfg['study']['name']}`", ""]
    if cfg["study"]["description"]:
        out += [cfg["study"]["description"].strip(), ""]
    for notice in env.get("notices", []):
        out += [f"> **{notice}**", ""]
    return out


def _header(
    cfg: dict[str, Any], env: dict[str, Any], all_rows: list[Row], rows: list[Row]
) -> list[str]:
    task = tasks.get(cfg["study"]["task"])
    seeds = sorted({r["seed"] for r in rows})
    out: list[str] = ["## Setup", ""]
    counts = {s: sum(r["status"] == s for r in all_rows) for s in ("ok", "diverged", "failed")}
    out += [
        f"- task: {cfg['study']['task']}; datasets: {', '.join(cfg['data']['dataset'])}",
        f"- runs in results.csv: {len(all_rows)} (ok {counts['ok']}, diverged "
        f"{counts['diverged']}, failed {counts['failed']}); seeds: {seeds}",
        f"- training: {', '.join(optimizers(cfg))}, {cfg['train']['epochs']} epoch(s), batch "
        f"{task.batch_text(cfg)}, schedule {cfg['train']['schedule']}; train subset "
        f"{cfg['data']['train_size'] or 'all'}, validation {cfg['data']['val_size']}, test "
        f"{cfg['data']['test_size'] or 'all'}",
        f"- environment: torch {env.get('torch', '?')}, {env.get('cpu', '?')}, "
        f"{env.get('workers', '?')} worker(s) x {env.get('torch_threads_per_worker', '?')} "
        "thread(s)",
        f"- {task.diverged_rule}",
        "",
    ]
    return out


def _inits_section(cfg: dict[str, Any], plugin_info: dict[str, Any]) -> list[str]:
    out = ["## Inits", ""]
    for name in cfg["init"]["names"]:
        if name in DESCRIPTIONS:
            out.append(f"- **{name}**: {DESCRIPTIONS[name]}")
            continue
        info = plugin_info.get(name, {})
        shown = info.get("label", name)
        doc = info.get("doc", "")
        out.append(f"- **{shown}**: plug-in `{name}`" + (f": {doc}" if doc else ""))
    return [*out, ""]


def _config_table(cfg: dict[str, Any], all_rows: list[Row]) -> list[str]:
    task = tasks.get(cfg["study"]["task"])
    conf = cfg["stats"]["confidence"]
    primary = cfg["stats"]["primary"]
    metrics = [*primary, *[m for m in task.report_metrics if m not in primary]]
    out = [f"## Per configuration (mean ± std [{conf * 100:g}% CI] over seeds)", ""]
    header = ["setting", "init", "n", *metrics, "log10 E init", "init s", "diverged"]
    table = []
    for _, members in stats.group(all_rows, stats.CONFIG).items():
        ok = [r for r in members if r["status"] in FINISHED]
        if not ok:
            continue
        first = ok[0]
        cells = [setting_label(first), label(first), str(len(ok))]
        cells += [
            _summary(stats.summarize([r[m] for r in ok if r.get(m) is not None], conf))
            for m in metrics
        ]
        e = stats.summarize([r["log10_e_init"] for r in ok if r["log10_e_init"] is not None], conf)
        cells.append(_num(e.mean, 2))
        cells.append(_num(stats.summarize([r["init_seconds"] for r in ok], conf).mean, 3))
        cells.append(str(sum(r["status"] == "diverged" for r in ok)))
        table.append(cells)
    return out + _table(header, table)


@dataclass(frozen=True)
class StudyAnswer:
    """A study's verdicts: every candidate configuration against the baseline in the same
    setting, on every primary metric, paired by seed (``docs/bench.md#reading-the-answer``).

    ``entries`` and ``comparisons`` (the paired table's, :func:`.stats.compare_to_baseline`)
    are in the same order, one per comparison; ``baseline`` is the baseline init's label, ``""``
    when the study declares none (then there is nothing to judge).
    """

    baseline: str
    entries: list[AnswerEntry] = field(default_factory=list)
    comparisons: list[stats.Comparison] = field(default_factory=list)


def _baseline_label(cfg: dict[str, Any], plugin_info: dict[str, Any]) -> str:
    name: str = cfg["stats"]["baseline"]
    return str(plugin_info.get("init", {}).get(name, {}).get("label", name)) if name else ""


def judge_in_study(cfg: dict[str, Any], samples: Sequence[PairedSample]) -> list[Verdict]:
    """Verdicts for one Holm family of comparisons at the study's ``[stats]`` confidence,
    margins and power."""
    st = cfg["stats"]
    return judge_family(
        samples, margins=st["margin"], confidence=st["confidence"], power=st["power"]
    )


def answer_of(
    cfg: dict[str, Any], rows: list[Row], plugin_info: dict[str, Any] | None = None
) -> StudyAnswer:
    """The verdicts of a study with resolved config ``cfg`` and result rows ``rows`` (as
    :meth:`.study.StudyDir.results` reads them; rows of failed runs are left out).

    The comparisons are the paired table's: each non-baseline configuration against the
    baseline init in its setting, on each primary metric, over the seeds *both* have a
    finished run for (a seed one side has not run, or whose run crashed, is left out; a
    diverged run counts with the metric it reached). A finished run without a value for the
    metric (an empty or nan cell) stays in as a seed with no value, which makes the verdict
    inconclusive and says so. One Holm family for the whole study (:func:`.verdict.judge_family`:
    the comparisons with at least 3 seeds and a value on each); the paired table shows the
    same adjusted p-values. ``plugin_info`` is ``environment.json``'s ``plugins`` (how rows
    name a plug-in baseline).
    """
    baseline = _baseline_label(cfg, plugin_info or {})
    if not baseline:
        return StudyAnswer("")
    conf = cfg["stats"]["confidence"]
    finished = [r for r in rows if r["status"] in FINISHED]
    comps = stats.compare_to_baseline(finished, baseline, cfg["stats"]["primary"], conf)
    configs = stats.group(finished, stats.CONFIG)
    baselines = stats.group([r for r in finished if r["init"] == baseline], stats.SETTING)
    samples = []
    for c in comps:
        mine = {r["seed"]: r.get(c.metric) for r in configs[c.config]}
        theirs = {r["seed"]: r.get(c.metric) for r in baselines[c.config[: len(stats.SETTING)]]}
        seeds = sorted(set(mine) & set(theirs))
        samples.append(PairedSample(c.metric, [mine[k] for k in seeds], [theirs[k] for k in seeds]))
    verdicts = judge_in_study(cfg, samples)
    entries = []
    for c, v in zip(comps, verdicts, strict=True):
        config = dict(zip(stats.CONFIG, c.config, strict=True))
        entries.append(AnswerEntry(setting_label(config), label(config), v, config))
    return StudyAnswer(baseline, entries, comps)


def study_answer(path: Path) -> StudyAnswer:
    """The verdicts of the study in directory ``path``, from its config, results and
    environment alone (what ``report.md``'s Answer shows)."""
    study = StudyDir(path)
    cfg = study.load_config()
    rows = study.results(cfg).rows  # validated: damage named, each run counted once
    return answer_of(cfg, rows, study.environment().get("plugins", {}))


def _answer_section(answer: StudyAnswer, has_rows: bool) -> list[str]:
    if not answer.baseline:
        return [
            "## Answer", "",
            'This study declares no baseline (`stats.baseline = ""`), so nothing is compared '
            "and no comparison gets a verdict; the tables below describe each configuration.",
            "",
        ]  # fmt: skip
    if not has_rows:
        return ["## Answer", "", "No finished runs yet, so no verdict.", ""]
    return [*answer_markdown(answer.entries, answer.baseline).splitlines(), ""]


def _paired_section(cfg: dict[str, Any], answer: StudyAnswer) -> list[str]:
    conf = cfg["stats"]["confidence"]
    pct = f"{conf * 100:g}%"
    baseline = answer.baseline
    tested, total = sum(e.verdict.p_holm is not None for e in answer.entries), len(answer.entries)
    family = f"all {total} comparisons of this study"
    if tested < total:
        family = (
            f"the {tested} of {total} comparisons of this study that can be tested (at least "
            f"{MIN_SEEDS} seeds, a value on each; '–' marks the others)"
        )
    out = [
        f"## Paired differences vs `{baseline}`",
        "",
        f"Difference (init − {baseline}) on the same seed, {pct} t-interval, two-sided paired "
        f"t-test; p (Holm) corrects across {family}: the family of the Answer's verdicts.",
        "",
    ]
    table = []
    for c, entry in zip(answer.comparisons, answer.entries, strict=True):
        row = dict(zip(stats.CONFIG, c.config, strict=True))
        r = c.result
        p_holm = entry.verdict.p_holm
        table.append([
            setting_label(row), label(row), c.metric, str(r.n), _num(r.mean),
            f"[{_num(r.low)}, {_num(r.high)}]", _num(r.t, 2), _p(r.p),
            _p(p_holm) if p_holm is not None else "–",
        ])  # fmt: skip
    return out + _table(
        ["setting", "init", "metric", "n", "mean diff", pct + " CI", "t", "p", "p (Holm)"], table
    )


def _problems_section(results: Results) -> list[str]:
    """What the load of results.csv left out (damaged lines, earlier rows of repeated run
    ids), named; and how many lines the driver has set aside to the side file so far."""
    out: list[str] = []
    problems = results.problems()
    if problems:
        lines = [f"- {p}" for p in problems[:20]]
        if len(problems) > 20:
            lines.append(f"- and {len(problems) - 20} more")
        out += [
            f"> **results.csv: {len(problems)} line(s) not counted** (a damaged line is left "
            "out; of a repeated run id only the last row counts; the next `emergeinit bench` "
            f"on this directory moves them to {SIDE_NAME}):",
            "",
            *lines,
            "",
        ]
    side = results.path.with_name(SIDE_NAME)
    if side.is_file():
        with side.open(encoding="utf-8", errors="replace", newline="") as fh:
            count = sum(1 for _ in csv.reader(fh)) - 1
        if count > 0:
            out += [
                f"> {SIDE_NAME} holds {count} line(s) taken out of results.csv (damaged, or "
                "superseded by a later row of the same run), with why; see "
                "docs/scaling.md#the-results-store-resultscsv.",
                "",
            ]
    return out


def sections(
    study: StudyDir, plots: list[str], results: Results | None = None
) -> list[list[str]]:
    """The report's sections, in order, each a list of markdown lines: the one place where
    the report is assembled (a new section goes here). The Answer comes first. ``results``:
    results.csv as loaded (default: :meth:`.study.StudyDir.results`)."""
    cfg = study.load_config()
    task = tasks.get(cfg["study"]["task"])
    env = study.environment()
    plugin_info = env.get("plugins", {})
    if results is None:
        results = study.results(cfg)
    all_rows = results.rows
    rows = [r for r in all_rows if r["status"] in FINISHED]
    answer = answer_of(cfg, all_rows, plugin_info)
    out = [
        _title(cfg, env),
        _answer_section(answer, bool(rows)),
        _header(cfg, env, all_rows, rows),
        _problems_section(results),
    ]
    if not rows:
        return [*out, ["No finished runs yet."]]
    out += [_inits_section(cfg, plugin_info.get("init", {})), _config_table(cfg, all_rows)]
    if answer.baseline:  # rows name a plug-in by its label
        out += [
            _paired_section(cfg, answer),
            _steps_section(cfg, rows, answer.baseline),
            _selection_section(cfg, rows, answer.baseline),
        ]
    out.append(_emergence_section(cfg, rows))
    out.append(task.report_section(cfg, rows, study.run_dir))
    if plots:
        out.append(["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], ""])
    return out


def build_report(study: StudyDir, plots: list[str], results: Results | None = None) -> str:
    """``report.md`` of the study: its sections joined."""
    lines = [line for section in sections(study, plots, results) for line in section]
    return "\n".join(lines) + "\n"


def _steps_section(cfg: dict[str, Any], rows: list[Row], baseline: str) -> list[str]:
    conf = cfg["stats"]["confidence"]
    targets = cfg["train"]["targets"]
    if not targets:
        return []
    out = [
        "## Steps to target test accuracy",
        "",
        "Steps until test accuracy first reached the target (read every "
        f"{cfg['train']['eval_every'] or 'epoch'} step(s)); ratio = geometric mean over seeds "
        f"where both reached of steps(init) / steps({baseline}), with the {conf * 100:g}% "
        "t-interval of the mean log ratio (exponentiated); < 1 is faster. A seed where only "
        "one of the two reached the target is left out of the ratio: compare the reached "
        "counts.",
        "",
    ]
    baselines = stats.group([r for r in rows if r["init"] == baseline], stats.SETTING)
    table = []
    for _, members in stats.group(rows, stats.CONFIG).items():
        first = members[0]
        base = baselines.get(stats.key_of(first, stats.SETTING), [])
        for t in targets:
            col = f"steps_to_{t:g}"
            mine, theirs = stats.by_seed(members, col), stats.by_seed(base, col)
            reached = [v for v in mine.values() if v is not None]
            common = sorted(set(mine) & set(theirs))
            ratio = stats.ratio_interval(
                [mine[s] for s in common], [theirs[s] for s in common], conf
            )
            mean = math.fsum(reached) / len(reached) if reached else math.nan
            table.append([
                setting_label(first), label(first), f"{t:g}", f"{len(reached)}/{len(members)}",
                _num(mean, 1),
                "–" if first["init"] == baseline else
                f"{_num(ratio.mean, 3)} [{_num(ratio.low, 3)}, {_num(ratio.high, 3)}]"
                f" (n={ratio.n})",
            ])  # fmt: skip
    return out + _table(
        ["setting", "init", "target", "reached", "mean steps", f"ratio [{conf * 100:g}% CI]"], table
    )


def _selection_section(cfg: dict[str, Any], rows: list[Row], baseline: str) -> list[str]:
    conf = cfg["stats"]["confidence"]
    chosen, held = stats.split_seeds([r["seed"] for r in rows], cfg["stats"]["select_seeds"])
    if not held:
        return ["## Best alpha", "", "Needs at least two seeds (one to choose, one to report).", ""]
    metric = cfg["stats"]["select_metric"]
    baselines = stats.group([r for r in rows if r["init"] == baseline], stats.SETTING)

    def base_of(gkey: tuple[Any, ...]) -> list[Row]:
        return baselines.get(gkey[: len(stats.SETTING)], [])

    out: list[str] = []
    emergence = [r for r in rows if r["init"] in EMERGENCE_INITS]
    alphas = {r["alpha"] for r in emergence}
    report_metrics = [m for m in cfg["stats"]["primary"] if m != metric] or [metric]
    if emergence:
        keys = (*stats.SETTING, *stats.BUT_ALPHA)
        out += [
            "## Best alpha, chosen on validation, reported on held-out seeds",
            "",
            f"alpha chosen per setting by mean {metric} on seeds {chosen} (from {sorted(alphas)});"
            f" reported on held-out seeds {held} only, paired with {baseline} on those seeds.",
            "",
        ]
        table, picks = [], []
        for m in report_metrics:
            for sel in stats.select_best(
                emergence, keys, "alpha", select_metric=metric, report_metric=m,
                selection_seeds=chosen, held_out_seeds=held, baseline_rows=base_of,
                confidence=conf,
            ):  # fmt: skip
                row = dict(zip(keys, sel.group, strict=True)) | {"alpha": sel.choice}
                table.append(_selection_cells(row, m, sel))
                picks.append((m, sel))
        for cells, word in zip(table, _held_out_verdicts(cfg, picks), strict=True):
            cells.append(word)
        out += _table(
            [
                "setting",
                "chosen",
                "metric",
                "select score",
                "held-out",
                f"{baseline} held-out",
                "diff [CI]",
                "p (uncorrected)",
                "verdict (Holm over this table)",
            ],
            table,
        )
    grid = learning_rates(cfg)
    if any(len(lrs) > 1 for lrs in grid.values()):
        pair_keys = ("dataset", "model", "optimizer")
        keys = (*pair_keys, *stats.INIT_KEYS)
        table, picks = [], []
        for m in report_metrics:
            for sel in stats.select_best_vs_baseline(
                rows, keys, "lr", baseline, pair_keys=pair_keys, select_metric=metric,
                report_metric=m, selection_seeds=chosen, held_out_seeds=held, confidence=conf,
            ):  # fmt: skip
                row = dict(zip(keys, sel.group, strict=True)) | {"lr": sel.choice}
                cells = _selection_cells(row, m, sel)
                if sel.baseline_choice is not None and sel.baseline is not None:
                    cells[5] = f"{cells[5]} (lr={sel.baseline_choice:g})"
                table.append(cells)
                picks.append((m, sel))
        for cells, word in zip(table, _held_out_verdicts(cfg, picks), strict=True):
            cells.append(word)
        out += [
            "## Learning rate tuned per init (validation-chosen, held-out seeds)",
            "",
            f"lr chosen per init by mean {metric} on seeds {chosen} (from {_lr_grid(grid)}); "
            f"reported on held-out seeds {held} only, paired by "
            f"seed with {baseline} at {baseline}'s own chosen lr (the fair comparison: each init "
            "at its best learning rate).",
            "",
            *_table(
                [
                    "setting (chosen lr)",
                    "init",
                    "metric",
                    "select score",
                    "held-out",
                    f"{baseline} at its best lr, held-out",
                    "diff [CI]",
                    "p (uncorrected)",
                    "verdict (Holm over this table)",
                ],
                table,
            ),
        ]
    return out


def _lr_grid(grid: dict[str, list[float]]) -> str:
    """The learning rates chosen from: ``[0.01, 0.1]``, or per optimizer ``sgd [0.05, 0.1],
    adamw [0.001, 0.003]``."""
    if len(grid) == 1:
        return str(sorted(next(iter(grid.values()))))
    return ", ".join(f"{name} {sorted(lrs)}" for name, lrs in grid.items())


def _emergence_section(cfg: dict[str, Any], rows: list[Row]) -> list[str]:
    """Does log10 E at init predict accuracy? Spearman's rho across the runs of each setting."""
    if not any(r["init"] in EMERGENCE_INITS for r in rows):
        return []
    measured = [r for r in rows if r.get("log10_e_init") is not None]
    if not measured:
        return []
    conf = cfg["stats"]["confidence"]
    pct = f"{conf * 100:g}%"
    family = ("kaiming", "xavier", "emergence")
    scopes = [
        ("all inits", lambda r: True),
        ("kaiming, xavier, emergence", lambda r: r["init"] in family),
    ]
    table = []
    for _, members in stats.group(measured, stats.SETTING).items():
        for scope, keep in scopes:
            chosen = [r for r in members if keep(r)]
            if scope != "all inits" and len(chosen) in (0, len(members)):
                continue  # the same runs as "all inits"
            for m in cfg["stats"]["primary"]:
                pairs = [(r["log10_e_init"], r[m]) for r in chosen if r.get(m) is not None]
                c = stats.spearman([a for a, _ in pairs], [b for _, b in pairs], conf)
                table.append([
                    setting_label(members[0]), scope, m, str(c.n), _num(c.rho, 3),
                    f"[{_num(c.fisher_low, 3)}, {_num(c.fisher_high, 3)}]",
                    f"[{_num(c.boot_low, 3)}, {_num(c.boot_high, 3)}]", _p(c.p),
                ])  # fmt: skip
    return [
        "## Does emergence at init predict accuracy?",
        "",
        "Spearman's rank correlation between log10 E at init (the network-form measure on the "
        f"probe batch) and each metric across every run of a setting (all seeds and "
        f"configurations). {pct} intervals: Fisher z (se = sqrt(1.06/(n-3))) and a percentile "
        "bootstrap over runs (2000 resamples, seed 0); both treat runs as independent, which "
        "runs sharing a seed are not quite, so read them as indicative.",
        "",
        *_table(
            [
                "setting",
                "runs",
                "metric",
                "n",
                "rho",
                f"{pct} CI (Fisher z)",
                f"{pct} CI (bootstrap)",
                "p",
            ],
            table,
        ),
    ]


def _held_out_verdicts(
    cfg: dict[str, Any], picks: list[tuple[str, stats.Selection]]
) -> list[str]:
    """The verdicts of a held-out selection table (each pick's held-out values against the
    baseline's on the same seeds), one Holm family over the table; "–" where nothing is
    paired (the baseline itself). Seeds needed count held-out seeds."""
    samples = [PairedSample(m, *sel.held_out_pairs) for m, sel in picks if sel.held_out_pairs]
    verdicts = iter(judge_in_study(cfg, samples))
    return [verdict_phrase(next(verdicts)) if sel.held_out_pairs else "–" for _, sel in picks]


def _selection_cells(row: dict[str, Any], metric: str, sel: stats.Selection) -> list[str]:
    vs = sel.vs_baseline
    return [
        setting_label(row), label(row), metric, _num(sel.select_score), _summary(sel.held_out),
        _summary(sel.baseline) if sel.baseline else "–",
        f"{_num(vs.mean)} [{_num(vs.low)}, {_num(vs.high)}]" if vs else "–",
        _p(vs.p) if vs else "–",
    ]  # fmt: skip


def write_report(path: Path, *, live: bool | None = None) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for the study at ``path``; return the report.

    results.csv is loaded once, validated (:meth:`.study.StudyDir.results`; ``live`` as
    there): damaged lines and repeated run ids are named in the report and in a
    ``ResultsWarning``, never counted. Plots the results no longer support are removed.
    """
    from .plots import make_plots

    study = StudyDir(path)
    results = study.results(study.load_config(), live=live)
    plots = make_plots(study, results.rows)
    report = path / "report.md"
    atomic_write_text(report, build_report(study, plots, results))
    return report
