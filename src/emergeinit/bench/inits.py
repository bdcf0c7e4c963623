"""The inits a study compares, by name, and exactly what each one is.

Every init gets the freshly built model (PyTorch's default init, drawn from the global RNG
seeded per run) and an :class:`InitContext`. Inits that draw weights use ``ctx.generator``,
seeded from the run seed only, so for a given seed ``kaiming``, ``emergence`` (base kaiming),
``emergence-lr`` and ``gradinit`` all start from the *same* random draws: the paired design.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..init import emergence_init_, emergence_param_groups
from .gradinit import gradinit_

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]

DESCRIPTIONS = {
    "default": "PyTorch's own init as the model is built (Linear/Conv: kaiming_uniform with "
    "a=sqrt(5), i.e. U(+-1/sqrt(fan_in)); biases U(+-1/sqrt(fan_in)))",
    "kaiming": "emergence_init_(alpha=1, base='kaiming_normal'): N(0, 2/fan_in) (fan_in mode, "
    "ReLU gain), biases zero",
    "xavier": "emergence_init_(alpha=1, base='xavier_uniform'): U(+-sqrt(6/(fan_in+fan_out))), "
    "gain 1, biases zero",
    "emergence": "emergence_init_(alpha, base, pivot, head): the base init's draws with unit i "
    "scaled by alpha**e_i (forward order traced on an example batch), biases zero",
    "emergence-lr": "the base init's draws unchanged (alpha=1) plus optimizer parameter groups "
    "with lr multipliers alpha**(-2 e_i) (SGD) or alpha**(-e_i) (Adam): SPEC 1's equivalence",
    "lsuv": "LSUV (Mishkin & Matas 2016) via PyPI lsuv: orthonormal weights, zero biases, then "
    "layer by layer rescale each weight until its output std on one training batch is 1 +- tol",
    "gradinit": "GradInit (Zhu et al. 2021) from the paper: the kaiming draws with per-tensor "
    "scales learned through a look-ahead optimizer step under a gradient-norm bound",
}


@dataclass
class InitContext:
    """What an init may use besides the model."""

    spec: str
    example_input: Any
    settings: dict[str, Any]  # the run's init table (alpha, base, pivot, head, lsuv, ...)
    train: dict[str, Any]  # the run's train table (optimizer, lr, ...)
    generator: torch.Generator  # the init's draws; seeded from the run seed only
    sample: Sampler  # training minibatches for data-dependent inits (own generator)
    seed: int


@dataclass
class InitOutcome:
    """Optimizer parameter groups (``None`` = all parameters at the base lr) and a log."""

    param_groups: list[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _default(model: nn.Module, ctx: InitContext) -> InitOutcome:
    return InitOutcome()


def _base(model: nn.Module, ctx: InitContext, base: str, alpha: float = 1.0) -> dict[str, Any]:
    s = ctx.settings
    report = emergence_init_(
        model,
        alpha,
        base=base,  # type: ignore[arg-type]  # validated by the config schema
        example_input=ctx.example_input,
        pivot=s.get("pivot", 0.5),
        even=s.get("even", "integer"),
        head=s.get("head", True),
        generator=ctx.generator,
    )
    return {"units": [(u.name, u.exponent, u.scale) for u in report.units]}


def _kaiming(model: nn.Module, ctx: InitContext) -> InitOutcome:
    _base(model, ctx, "kaiming_normal")
    return InitOutcome()


def _xavier(model: nn.Module, ctx: InitContext) -> InitOutcome:
    _base(model, ctx, "xavier_uniform")
    return InitOutcome()


def _emergence(model: nn.Module, ctx: InitContext) -> InitOutcome:
    s = ctx.settings
    return InitOutcome(info=_base(model, ctx, s["base"], s["alpha"]))


def _emergence_lr(model: nn.Module, ctx: InitContext) -> InitOutcome:
    s = ctx.settings
    _base(model, ctx, s["base"])
    groups = emergence_param_groups(
        model,
        s["alpha"],
        optimizer=ctx.train["optimizer"],
        lr=ctx.train["lr"],
        example_input=ctx.example_input,
        pivot=s["pivot"],
        even=s["even"],
        head=s["head"],
    )
    info = {"groups": [(g["name"], g["lr_multiplier"]) for g in groups]}
    return InitOutcome(param_groups=groups, info=info)


def _lsuv(model: nn.Module, ctx: InitContext) -> InitOutcome:
    from lsuv import lsuv_with_singlebatch

    opts = ctx.settings["lsuv"]
    x, _ = ctx.sample(opts["batch"])
    # lsuv draws its orthonormal weights from the global RNG; seed it so runs repeat.
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=ctx.generator)))
    lsuv_with_singlebatch(
        model,
        x,
        needed_std=opts["std"],
        std_tol=opts["tol"],
        max_attempts=opts["max_attempts"],
        do_orthonorm=True,
        verbose=False,
        device=x.device,
    )
    return InitOutcome()


def _gradinit(model: nn.Module, ctx: InitContext) -> InitOutcome:
    _base(model, ctx, "kaiming_normal")
    opts = ctx.settings["gradinit"]
    info = gradinit_(
        model,
        lambda: ctx.sample(opts["batch_size"]),
        optimizer=ctx.train["optimizer"],
        lr=ctx.train["lr"],
        iterations=opts["iterations"],
        scale_lr=opts["lr"],
        gamma=opts["gamma"],
        min_scale=opts["min_scale"],
        norm=opts["norm"],
    )
    return InitOutcome(info=info)


INITS: dict[str, Callable[[nn.Module, InitContext], InitOutcome]] = {
    "default": _default,
    "kaiming": _kaiming,
    "xavier": _xavier,
    "emergence": _emergence,
    "emergence-lr": _emergence_lr,
    "lsuv": _lsuv,
    "gradinit": _gradinit,
}


def apply_init(name: str, model: nn.Module, ctx: InitContext) -> InitOutcome:
    """Initialise ``model`` in place with the named init."""
    return INITS[name](model, ctx)
