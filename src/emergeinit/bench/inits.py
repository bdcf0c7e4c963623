"""The inits a study compares, by name, and exactly what each one is.

Every init gets the freshly built model (PyTorch's default init, drawn from the global RNG
seeded per run) and an :class:`InitContext`. Inits that draw weights use ``ctx.generator``,
seeded from the run seed only, so for a given seed ``kaiming``, ``emergence`` (base kaiming),
``emergence-lr`` and ``gradinit`` all start from the *same* random draws: the paired design.

A plug-in init (``init.names`` entry ``"package.module:function"``, or an entry point of group
``emergeinit.inits``) is called the same way, ``function(model, ctx)``, and returns ``None`` or
optimizer parameter groups (see ``docs/bench.md#a-plug-in-init``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..init import emergence_init_, emergence_param_groups
from . import optim, plugins
from .gradinit import gradinit_

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]

DESCRIPTIONS = {
    "default": "PyTorch's own init as the model is built (Linear/Conv: kaiming_uniform with "
    "a=sqrt(5), i.e. U(+-1/sqrt(fan_in)); biases U(+-1/sqrt(fan_in)))",
    "kaiming": "emergence_init_(alpha=1, base='kaiming_normal'): N(0, 2/fan_in) (fan_in mode, "
    "ReLU gain), biases zero",
    "xavier": "emergence_init_(alpha=1, base='xavier_uniform'): U(+-sqrt(6/(fan_in+fan_out))), "
    "gain 1, biases zero",
    "emergence": "emergence_init_(alpha, base, pivot, head, order, units): the base init's draws "
    "with unit i scaled by alpha**e_i (depth order traced on an example batch), biases zero",
    "emergence-lr": "the base init's draws unchanged (alpha=1) plus optimizer parameter groups "
    "with lr multipliers alpha**(-2 e_i) (SGD) or alpha**(-e_i) (Adam, AdamW), and with weight "
    "decay the per-group decay that keeps it equal to the weight form: the rule's "
    "learning-rate form (docs/method.md#why-it-can-matter)",
    "lsuv": "LSUV (Mishkin & Matas 2016) via PyPI lsuv: orthonormal weights, zero biases, then "
    "layer by layer rescale each weight until its output std on one training batch is 1 +- tol",
    "gradinit": "GradInit (Zhu et al. 2021) from the paper: the kaiming draws with per-tensor "
    "scales learned through a look-ahead optimizer step under a gradient-norm bound",
}


@dataclass
class InitContext:
    """What an init may use besides the model (built-in and plug-in inits alike).

    Attributes:
        spec: the model spec the model was built from.
        example_input: an example batch the model accepts (for tracing the forward order).
        settings: the run's ``init`` table (``name``; for the emergence inits also ``alpha``,
            ``base``, ``pivot``, ``head``, ``even``, ``order``, ``units``; ``lsuv``/``gradinit``
            options).
        train: the run's ``train`` table (``optimizer``, ``lr``, ``epochs``, ...).
        generator: draw every random number from it: it is seeded from the run seed only, so
            every init of one seed starts from the same stream (the paired design).
        sample: ``sample(n) -> (x, y)``, ``n`` training examples drawn with the run's own
            ``init-data`` stream (for data-dependent inits).
        seed: the run seed.
    """

    spec: str
    example_input: Any
    settings: dict[str, Any]
    train: dict[str, Any]
    generator: torch.Generator
    sample: Sampler
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
        order=s.get("order", "call"),
        units=s.get("units", "auto"),
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
    # The units and exponents must be the weight form's: kaiming's draws with the same order
    # and units as `emergence` would scale.
    _base(model, ctx, s["base"])
    optimizer = ctx.train["optimizer"]
    builtin = optimizer in optim.BUILTIN
    groups = emergence_param_groups(
        model,
        s["alpha"],
        # A built-in optimizer's own form: its lr multipliers and, with weight decay, the
        # per-group decay that keeps the two forms equal (L2 for sgd/adam, decoupled for
        # adamw). A plug-in's declared family gives the multipliers; its decay is its own.
        optimizer=optimizer if builtin else optim.family(ctx.train),  # type: ignore[arg-type]
        lr=ctx.train["lr"],
        weight_decay=ctx.train.get("weight_decay") if builtin else None,
        example_input=ctx.example_input,
        pivot=s["pivot"],
        even=s["even"],
        head=s["head"],
        order=s.get("order", "call"),
        units=s.get("units", "auto"),
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
        optimizer=optim.family(ctx.train),
        lr=ctx.train["lr"],
        iterations=opts["iterations"],
        scale_lr=opts["lr"],
        gamma=opts["gamma"],
        min_scale=opts["min_scale"],
        norm=opts["norm"],
    )
    return InitOutcome(info=info)


InitFn = Callable[[nn.Module, InitContext], Any]

INITS: dict[str, Callable[[nn.Module, InitContext], InitOutcome]] = {
    "default": _default,
    "kaiming": _kaiming,
    "xavier": _xavier,
    "emergence": _emergence,
    "emergence-lr": _emergence_lr,
    "lsuv": _lsuv,
    "gradinit": _gradinit,
}


def resolve_init(name: str) -> InitFn:
    """The function behind an init name: a built-in, an entry point or an import path."""
    if name in INITS:
        return INITS[name]
    fn: InitFn = plugins.resolve("init", name, "init.names")
    return fn


def apply_init(name: str, model: nn.Module, ctx: InitContext) -> InitOutcome:
    """Initialise ``model`` in place with the named init (built-in or plug-in)."""
    if name in INITS:
        return INITS[name](model, ctx)
    result = resolve_init(name)(model, ctx)
    return InitOutcome(param_groups=_plugin_groups(name, model, result))


def _plugin_groups(name: str, model: nn.Module, result: Any) -> list[dict[str, Any]] | None:
    """A plug-in's return value checked: ``None`` or parameter groups covering model
    parameters at most once each."""
    if result is None:
        return None
    fix = (
        "return None, or a list of optimizer parameter groups such as "
        "[{'params': [...], 'lr': ...}] over the model's parameters"
    )
    if isinstance(result, InitOutcome):
        result = result.param_groups
        if result is None:
            return None
    if not isinstance(result, Sequence) or isinstance(result, (str, bytes)) or not result:
        raise ConfigError(f"init.names: plug-in {name!r} returned {type(result).__name__}; {fix}")
    owned = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    groups = []
    for i, group in enumerate(result):
        if not isinstance(group, Mapping) or "params" not in group:
            raise ConfigError(
                f"init.names: plug-in {name!r} returned a group {i} without 'params'; {fix}"
            )
        params = list(group["params"])
        for p in params:
            if not isinstance(p, torch.Tensor) or id(p) not in owned:
                raise ConfigError(
                    f"init.names: group {i} of plug-in {name!r} holds something that is not a "
                    f"parameter of the model ({type(p).__name__}); {fix}"
                )
            if id(p) in seen:
                raise ConfigError(
                    f"init.names: plug-in {name!r} puts a parameter in two groups; {fix}"
                )
            seen.add(id(p))
        groups.append({**group, "params": params})
    return groups


def init_label(name: str) -> str:
    """How results name an init: a built-in's name, a plug-in's ``name`` attribute or path."""
    if name in INITS:
        return name
    return plugins.label(name, resolve_init(name))


def describe(name: str) -> str:
    """One line on what an init is (the report's "Inits" section)."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    text = plugins.describe(resolve_init(name))
    return f"plug-in `{name}`" + (f": {text}" if text else "")
