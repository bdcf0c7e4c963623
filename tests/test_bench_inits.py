"""The baseline inits are exactly what the docs say, and the peers behave as specified."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emergeinit.bench import config
from emergeinit.bench.gradinit import gradinit_
from emergeinit.bench.inits import DESCRIPTIONS, INITS, InitContext, apply_init
from emergeinit.models import build_model, example_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SPEC = "mlp:16-12x3-4"
BN_SPEC = "mlp-bn:16-12x3-4"


def _ctx(spec: str, settings: dict | None = None, seed: int = 3, **train) -> InitContext:
    cfg = config.load("smoke")
    init = {"alpha": 2.0, "pivot": 0.5, "head": True, "base": "kaiming_normal", "even": "integer"}
    init.update(lsuv=cfg["init"]["lsuv"], gradinit=cfg["init"]["gradinit"])
    init.update(settings or {})
    data = torch.Generator().manual_seed(11)
    x = torch.randn(512, 16, generator=data)
    y = (x[:, :4].argmax(1)).long()

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(y), (n,), generator=data)
        return x[idx], y[idx]

    return InitContext(
        spec=spec, example_input=example_input(spec, 4), settings=init,
        train={"optimizer": "sgd", "lr": 0.1, **train},
        generator=torch.Generator().manual_seed(seed), sample=sample, seed=seed,
    )  # fmt: skip


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_every_init_is_registered_and_described() -> None:
    assert set(INITS) == set(config.INITS) == set(DESCRIPTIONS)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("kaiming", lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu",
                                                        generator=g)),
        ("xavier", lambda w, g: nn.init.xavier_uniform_(w, gain=1.0, generator=g)),
    ],
)  # fmt: skip
def test_baselines_match_torch_init_bit_for_bit(name: str, reference) -> None:
    model = build_model(SPEC)
    apply_init(name, model, _ctx(SPEC))
    expected = build_model(SPEC)
    g = torch.Generator().manual_seed(3)
    for layer in _linears(expected):
        reference(layer.weight.data, g)
    for got, want in zip(_linears(model), _linears(expected), strict=True):
        assert torch.equal(got.weight, want.weight)
        assert torch.count_nonzero(got.bias) == 0


def test_emergence_shares_the_kaiming_draws() -> None:
    kaiming, emergence = build_model(SPEC), build_model(SPEC)
    apply_init("kaiming", kaiming, _ctx(SPEC))
    out = apply_init("emergence", emergence, _ctx(SPEC))
    exponents = [e for _, e, _ in out.info["units"]]
    assert exponents == [-2.0, -1.0, 1.0, 2.0]
    for a, b, e in zip(_linears(kaiming), _linears(emergence), exponents, strict=True):
        assert torch.equal(b.weight, a.weight * 2.0**e)  # powers of two scale exactly


def test_emergence_lr_keeps_the_weights_and_sets_group_lrs() -> None:
    kaiming, model = build_model(SPEC), build_model(SPEC)
    apply_init("kaiming", kaiming, _ctx(SPEC))
    out = apply_init("emergence-lr", model, _ctx(SPEC))
    for a, b in zip(_linears(kaiming), _linears(model), strict=True):
        assert torch.equal(a.weight, b.weight)
    assert out.param_groups is not None
    multipliers = [g["lr_multiplier"] for g in out.param_groups]
    assert multipliers == [16.0, 4.0, 0.25, 0.0625, 1.0]  # alpha**(-2e), biases last at 1
    assert [g["lr"] for g in out.param_groups] == pytest.approx([0.1 * m for m in multipliers])
    params = [p for g in out.param_groups for p in g["params"]]
    assert len(params) == len(list(model.parameters()))


def test_emergence_lr_uses_alpha_to_the_minus_e_for_adam() -> None:
    out = apply_init("emergence-lr", build_model(SPEC), _ctx(SPEC, optimizer="adam"))
    assert out.param_groups is not None
    assert [g["lr_multiplier"] for g in out.param_groups] == [4.0, 2.0, 0.5, 0.25, 1.0]


def test_lsuv_gives_unit_output_std_and_repeats() -> None:
    ctx = _ctx(SPEC)
    model = build_model(SPEC)
    apply_init("lsuv", model, ctx)
    x, _ = _ctx(SPEC).sample(256)  # the same batch lsuv saw (same data generator state)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in _linears(model)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    for out in outputs:
        assert abs(float(out.std()) - 1.0) <= 0.1 + 1e-6
    again = build_model(SPEC)
    apply_init("lsuv", again, _ctx(SPEC))
    for a, b in zip(_linears(model), _linears(again), strict=True):
        assert torch.equal(a.weight, b.weight)


def test_gradinit_scales_from_kaiming_and_restores_batchnorm() -> None:
    model = build_model(BN_SPEC)
    kaiming = build_model(BN_SPEC)
    apply_init("kaiming", kaiming, _ctx(BN_SPEC))
    ctx = _ctx(BN_SPEC, {"gradinit": {**config.load("smoke")["init"]["gradinit"],
                                      "iterations": 15, "gamma": 1e6, "lr": 0.05}})  # fmt: skip
    out = apply_init("gradinit", model, ctx)
    info = out.info
    assert info["constrained_steps"] == 0  # gamma too large to bind: look-ahead steps only
    scales = info["scales"]
    assert min(scales.values()) >= 0.01 and any(abs(s - 1) > 1e-3 for s in scales.values())
    for name, param in model.named_parameters():
        ref = dict(kaiming.named_parameters())[name]
        if name in scales:
            assert torch.allclose(param, ref * scales[name])
        else:
            assert torch.equal(param, ref)  # biases stay as they were
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(kaiming.named_buffers())[name])


def test_gradinit_gradient_norm_constraint_and_floor() -> None:
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(64, dtype=torch.long)
    info = gradinit_(model, lambda: (x, y), optimizer="sgd", lr=0.1, iterations=40,
                     scale_lr=0.5, gamma=1e-9, min_scale=0.2)  # fmt: skip
    assert info["constrained_steps"] == 40 and info["norm_p"] == 2.0
    assert min(info["scales"].values()) >= 0.2
    adam = gradinit_(model, lambda: (x, y), optimizer="adam", lr=0.1, iterations=1)
    assert adam["norm_p"] == 1.0


def test_every_init_trains_through_the_runner(tmp_path) -> None:
    from emergeinit.bench.runner import execute_run
    from emergeinit.bench.study import expand

    cfg = config.load(
        "smoke",
        [
            f"init.names={list(config.INITS)!r}",
            "model.spec=['mlp-bn:{features}-16x3-{classes}']",
            "train.seeds=[0]",
            "train.epochs=1",
            "init.gradinit.iterations=5",
            "stats.baseline=''",
        ],
    )
    runs = expand(cfg)
    assert sorted(r["init"]["name"] for r in runs) == sorted(config.INITS)
    for run in runs:
        summary = execute_run(run, tmp_path / run["run_id"])
        assert summary["status"] == "ok", (run["init"]["name"], summary["error"])
        assert summary["init_seconds"] >= 0 and 0 <= summary["test_acc_final"] <= 1
