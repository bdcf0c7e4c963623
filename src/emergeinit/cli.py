"""The ``emergeinit`` command line: a thin face over the core (and, lazily, the benchmarks)."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from .errors import EmergeInitError

app = typer.Typer(
    name="emergeinit",
    help="Emergence-promoting initialization for PyTorch: plan, measure and benchmark it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SpecArgument = Annotated[
    str,
    typer.Argument(
        help="A built-in model spec (mlp:784-512x6-10, mlp-bn:..., cnn:1x28x28-32-M-64-M-10, "
        "cnn-bn:..., resnet:1x28x28-16x2-32x2-10, resnet-bn:..., transformer:tiny) or an "
        "importable factory package.module:function returning a model or (model, example_input)."
    ),
]
AlphaOption = Annotated[
    float, typer.Option(help="The emergence factor alpha (> 0; 1 = base init).")
]


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Emergence-promoting initialization for PyTorch: plan, measure and benchmark it."""


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _out_of_memory(exc: BaseException, spec: str, what: str) -> typer.Exit | None:
    """A clear message for a model or batch too large to allocate (``None``: another error).

    torch reports a failed allocation as a ``RuntimeError`` ("DefaultCPUAllocator: not enough
    memory: you tried to allocate N bytes", "CUDA out of memory"); Python as ``MemoryError``.
    """
    text = str(exc)
    if not isinstance(exc, MemoryError) and not re.search(
        r"not enough memory|out of memory|can't allocate memory", text
    ):
        return None
    size = re.search(r"allocate (\d+) bytes", text)
    tried = f" (one allocation of {int(size.group(1)) / 1e9:,.1f} GB)" if size else ""
    return _fail(
        MemoryError(
            f"not enough memory for {spec!r}{tried}; use smaller sizes in the spec{what}"
        )
    )


@app.command()
def plan(
    spec: SpecArgument,
    alpha: AlphaOption = 2.0,
    units: Annotated[
        str,
        typer.Option(help="auto, layers or blocks (transformer or residual blocks)."),
    ] = "auto",
    order: Annotated[
        str,
        typer.Option(
            help="call (forward call order) or graph (depth = longest dataflow path; "
            "units at equal depth share an exponent; needs --trace)."
        ),
    ] = "call",
    base: Annotated[
        str,
        typer.Option(
            help="kaiming_normal, kaiming_uniform, xavier_normal, xavier_uniform, "
            "orthogonal or keep."
        ),
    ] = "kaiming_normal",
    pivot: Annotated[float, typer.Option(help="Turning point as a fraction of depth.")] = 0.5,
    even: Annotated[str, typer.Option(help="integer or half (even unit counts).")] = "integer",
    head: Annotated[bool, typer.Option(help="Include the classifier in the schedule.")] = True,
    trace: Annotated[
        bool, typer.Option(help="Trace the forward order with an example batch.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed for the model and the draws.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Initialise a model with the emergence rule and print the per-unit table."""
    import torch

    from .init import emergence_init_
    from .models import load_model

    try:
        torch.manual_seed(seed)
        model, example = load_model(spec)
        report = emergence_init_(
            model,
            alpha,
            base=base,  # type: ignore[arg-type]  # validated inside
            units=units,  # type: ignore[arg-type]
            order=order,  # type: ignore[arg-type]
            example_input=example if trace else None,
            pivot=pivot,
            even=even,  # type: ignore[arg-type]
            head=head,
        )
    except EmergeInitError as exc:
        raise _fail(exc) from None
    except (MemoryError, RuntimeError) as exc:
        raise (_out_of_memory(exc, spec, "") or exc) from None
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))


@app.command()
def bench(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A preset (smoke, default, results-mlp, results-cnn, results-lr, "
            "results-pivot, paper-mlp, paper-cnn, cifar-cnn, lr-sweep, pivot-ablation, "
            "translation, ...) or a study FILE.toml (plug-ins by import path: see "
            "docs/bench.md). Default: the 'default' preset."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="Study directory (default runs/<study>-<timestamp>); "
            "an existing one with the same config resumes.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config key: key.path=TOML_VALUE (repeatable), "
            "e.g. --set train.lr=[0.01,0.1].",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes, torch threads split evenly; 0 = one per core, "
            "1 = in this process."
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="Print only errors and, last, the study directory.")
    ] = False,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Folder with dataset files (Fashion-MNIST IDX, "
            "cifar-10-batches-py); default: Debian's location / $EMERGEINIT_DATA_DIR.",
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Run the study at full size: apply its [full] table of dotted-key overrides "
            "(the results-* presets have one); --set applies after it.",
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="auto, cpu or cuda (auto = cuda when available); sets train.device.",
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local (this process / --workers processes) or ray (one Ray task per run).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join (e.g. auto, or ray://HOST:10001); default: "
            "$RAY_ADDRESS or a new local Ray instance.",
        ),
    ] = None,
    cpus_per_run: Annotated[
        float, typer.Option("--cpus-per-run", help="Ray: CPUs each run reserves (its threads).")
    ] = 1.0,
    gpus_per_run: Annotated[
        float, typer.Option("--gpus-per-run", help="Ray: GPUs each run reserves (fractions ok).")
    ] = 0.0,
    max_retries: Annotated[
        int,
        typer.Option("--max-retries", help="Ray: retries of a failed run before it is recorded."),
    ] = 2,
    log: Annotated[
        list[str] | None,
        typer.Option(
            "--log",
            help="Also send every run's metrics to tensorboard (event files in the study "
            "directory) or mlflow (repeatable).",
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri",
            help="MLflow tracking URI for --log mlflow; default $MLFLOW_TRACKING_URI or "
            "sqlite:///<study>/mlflow.db.",
        ),
    ] = None,
    max_runs: Annotated[
        int,
        typer.Option(
            "--max-runs",
            help="The largest grid to run; a study with more runs is refused before it is "
            "expanded (raise it to run a larger grid).",
        ),
    ] = 10_000,
) -> None:
    """Run (or resume) a benchmark study and write its report.

    Exit status: 0 all runs finished, 1 a run crashed, 2 an invalid config or study
    directory, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    from pathlib import Path

    from .bench.cli import run_bench

    code = run_bench(
        target,
        out if out is None or not out.strip() else Path(out),
        list(set_ or []),
        workers,
        quiet,
        Path(data_dir) if data_dir else None,
        full,
        device=device,
        executor=executor,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        max_retries=max_retries,
        log=list(log or []),
        mlflow_uri=mlflow_uri,
        max_runs=max_runs,
    )
    raise typer.Exit(code)


@app.command("report")
def report_command(
    study_dir: Annotated[str, typer.Argument(help="A study directory written by 'bench'.")],
    quiet: Annotated[
        bool, typer.Option("--quiet", help="Print only errors and, last, the report's path.")
    ] = False,
) -> None:
    """Regenerate report.md and plots/ of a study directory; print its Answer."""
    from pathlib import Path

    from .bench.cli import run_report

    raise typer.Exit(run_report(Path(study_dir), quiet))


@app.command()
def measure(
    spec: SpecArgument,
    alpha: AlphaOption = 2.0,
    batch: Annotated[int, typer.Option(help="Number of random inputs to measure on.")] = 64,
    base: Annotated[str, typer.Option(help="The base init (see `plan`).")] = "kaiming_normal",
    head: Annotated[bool, typer.Option(help="Include the classifier in the schedule.")] = True,
    tau: Annotated[float, typer.Option(help="Activity threshold.")] = 0.05,
    form: Annotated[str, typer.Option(help="cross or li.")] = "cross",
    granularity: Annotated[str, typer.Option(help="neuron or channel.")] = "neuron",
    seed: Annotated[int, typer.Option(help="Seed for the model, the draws and the inputs.")] = 0,
) -> None:
    """Print the emergence log10 E at init: the base init against the emergence init."""
    import copy

    import torch

    from .init import emergence_init_
    from .measure import measure_emergence
    from .models import load_model

    if batch < 1:
        raise _fail(ValueError(f"--batch must be >= 1, got {batch}"))
    try:
        torch.manual_seed(seed)
        model, example = load_model(spec, batch, generator=torch.Generator().manual_seed(seed))
        if example is None:
            raise _fail(
                ValueError(
                    "measure needs an example batch: use a built-in spec or a "
                    "factory returning (model, example_input)"
                )
            )
        rows = []
        for label, factor in (("base", 1.0), (f"emergence alpha={alpha:g}", alpha)):
            candidate = copy.deepcopy(model)
            emergence_init_(
                candidate,
                factor,
                base=base,  # type: ignore[arg-type]
                head=head,
                example_input=example,
                generator=torch.Generator().manual_seed(seed),
            )
            result = measure_emergence(
                candidate,
                example,
                tau=tau,
                form=form,  # type: ignore[arg-type]
                granularity=granularity,  # type: ignore[arg-type]
            )
            rows.append((label, result))
    except EmergeInitError as exc:
        raise _fail(exc) from None
    except (MemoryError, RuntimeError) as exc:
        raise (_out_of_memory(exc, spec, " or a smaller --batch") or exc) from None
    typer.echo(
        f"{spec}: {batch} random inputs, tau={tau:g}, form={form}, granularity={granularity}"
    )
    width = max(len(label) for label, _ in rows)
    typer.echo(f"{'init'.ljust(width)}  log10 E (mean +- std)  log10 E/params  active per layer")
    for label, result in rows:
        active = " ".join(f"{f:.2f}" for f in result.active_fraction.values())
        typer.echo(
            f"{label.ljust(width)}  {result.log10_e_mean:10.3f} +- {result.log10_e_std:<7.3f}"
            f"  {result.log10_relative:14.3f}  {active}"
        )
    typer.echo("(active per layer: inputs first, then each weight layer in forward order)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
