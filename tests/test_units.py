"""Depth units (docs/method.md, "Units"): order, blocks, attention, tied weights, groups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import ShortcutFirst, assert_unchanged, relu_mlp, snapshot
from torch import nn

from emergeinit import depth_units
from emergeinit.errors import ConfigError, NoUnitsError, TracingError


def test_traced_order_differs_from_registration() -> None:
    model = ShortcutFirst()
    x = torch.randn(2, 2, 5, 5)
    traced = depth_units(model, x)
    assert traced.traced and traced.order == "traced"
    assert [u.name for u in traced] == ["conv1", "conv2", "shortcut", "head"]
    registered = depth_units(model)
    assert not registered.traced
    assert [u.name for u in registered] == ["head", "shortcut", "conv1", "conv2"]
    assert any("registration" in n for n in registered.notes)


def test_tracing_restores_mode_buffers_and_rng() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.eval()
    model[2].train()  # a mixed mode must come back as it was
    before = snapshot(model)
    x = torch.randn(6, 4)
    rng = torch.get_rng_state()
    depth_units(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_unchanged(model, before)
    assert [m.training for m in model] == [False, False, True, False]


def test_tracing_failure_is_typed_and_loses_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    before = snapshot(model)
    try:
        depth_units(model, torch.randn(3, 5))
    except TracingError as exc:
        assert "example_input" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected TracingError")
    assert_unchanged(model, before)
    assert model.training


def test_module_called_twice_is_one_unit_at_first_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(4, 4)
            self.first = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(self.first(self.shared(x)))

    units = depth_units(Twice(), torch.randn(2, 4))
    assert [u.name for u in units] == ["shared", "first"]


def test_units_never_called_go_last_with_a_note() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Linear(4, 4)
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    units = depth_units(Unused(), torch.randn(2, 4))
    assert [u.name for u in units] == ["a", "b", "spare"]
    assert [u.called for u in units] == [True, True, False]
    assert any("spare" in n for n in units.notes)


def test_multihead_attention_is_one_unit_in_layers_mode() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.out = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.attn(x, x, x)[0])

    units = depth_units(Attn(), torch.randn(2, 3, 8), units="layers")
    assert [u.name for u in units] == ["attn", "out"]
    assert [w.name for w in units[0].weights] == ["attn.in_proj_weight", "attn.out_proj.weight"]
    assert units[0].module_type == "MultiheadAttention"


def test_attention_with_separate_kv_dims() -> None:
    attn = nn.MultiheadAttention(8, 2, kdim=5, vdim=6, batch_first=True)
    units = depth_units(attn, (torch.randn(2, 3, 8), torch.randn(2, 4, 5), torch.randn(2, 4, 6)))
    assert [w.name for w in units[0].weights] == [
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "out_proj.weight",
    ]


def _transformer() -> nn.Transformer:
    return nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dim_feedforward=32,
        batch_first=True,
    )


def test_nn_transformer_blocks_encoder_then_decoder() -> None:
    model = _transformer().eval()
    units = depth_units(model, (torch.randn(2, 5, 16), torch.randn(2, 4, 16)))
    assert units.mode == "blocks"
    assert [u.name for u in units] == [
        "encoder.layers.0",
        "encoder.layers.1",
        "decoder.layers.0",
        "decoder.layers.1",
        "decoder.layers.2",
    ]
    assert all(u.kind == "block" for u in units)
    # every weight of a block: self-attention (2), feed-forward (2), plus cross-attention (2)
    assert [len(u.weights) for u in units] == [4, 4, 6, 6, 6]
    assert not model.training  # traced in training mode, mode restored


def test_layers_mode_sees_attention_even_in_eval_mode() -> None:
    model = _transformer().eval()
    units = depth_units(model, (torch.randn(2, 5, 16), torch.randn(2, 4, 16)), units="layers")
    assert all(u.called for u in units)
    assert units[0].name == "encoder.layers.0.self_attn"
    assert len(units) == 2 * 3 + 3 * 4


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(weights @ v)


class Block(nn.Module):
    """A timm-style pre-norm transformer block."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 3) -> None:
        super().__init__()
        self.head = nn.Linear(dim, 4)  # registered first, called last
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(tokens)).mean(1))


def test_timm_style_blocks_with_outside_layers() -> None:
    units = depth_units(TinyViT(), torch.randn(2, 3, 8, 8))
    assert units.mode == "blocks"
    assert [u.name for u in units] == ["patch_embed", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert [u.kind for u in units] == ["layer", "block", "block", "block", "layer"]
    assert len(units[1].weights) == 4
    layers = depth_units(TinyViT(), torch.randn(2, 3, 8, 8), units="layers")
    assert len(layers) == 1 + 3 * 4 + 1


def test_blocks_requested_but_none_found() -> None:
    try:
        depth_units(relu_mlp([4, 4, 2]), units="blocks")
    except ConfigError as exc:
        assert "groups=" in str(exc)
    else:  # pragma: no cover
        raise AssertionError


def test_tied_weights_scaled_once_by_first_use() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight
            self.c = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.a(self.b(x)))

    units = depth_units(Tied(), torch.randn(2, 4))
    assert [u.name for u in units] == ["b", "c"]
    assert any("a is not a unit" in n for n in units.notes)
    assert {s.name: s.reason for s in units.skipped}["a.weight"] == "tied to unit b"


def test_output_projection_tied_to_embedding_is_not_a_unit() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.hidden = nn.Linear(8, 8)
            self.out = nn.Linear(8, 10, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.hidden(self.embed(x))))

    units = depth_units(LM(), torch.randint(0, 10, (2, 3)))
    assert [u.name for u in units] == ["hidden"]
    reasons = {s.name: s.reason for s in units.skipped}
    assert reasons["embed.weight"] == "embedding (never scaled)"
    assert reasons["out.weight"] == "tied to embedding embed.weight"


def test_explicit_groups_in_given_order() -> None:
    model = relu_mlp([4, 8, 8, 8, 2], bias=True)
    units = depth_units(model, groups=[["0", "2"], ["4"], ["6"]])
    assert units.mode == "groups" and units.order == "given"
    assert [u.name for u in units] == ["0+2", "4", "6"]
    assert [len(u.weights) for u in units] == [2, 1, 1]
    partial = depth_units(model, groups=[["0"], ["6"]])
    reasons = {s.name: s.reason for s in partial.skipped}
    assert reasons["2.weight"] == "not in any group"


def test_bad_groups() -> None:
    model = relu_mlp([4, 8, 2])
    for groups, match in [
        ([["0"], ["nope"]], "not a module"),
        ([["0"], ["0"]], "overlaps"),
        ("0", "list of non-empty lists"),
        ([[]], "list of non-empty lists"),
    ]:
        try:
            depth_units(model, groups=groups)  # type: ignore[arg-type]
        except ConfigError as exc:
            assert match in str(exc)
        else:  # pragma: no cover
            raise AssertionError(groups)
    try:
        depth_units(model, units="layers", groups=[["0"]])
    except ConfigError as exc:
        assert "either" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected ConfigError for units= with groups=")


def test_no_units() -> None:
    for model in (nn.Sequential(nn.ReLU()), nn.Embedding(4, 4), nn.LayerNorm(4)):
        try:
            depth_units(model)
        except NoUnitsError as exc:
            assert "no module the rule can scale" in str(exc)
        else:  # pragma: no cover
            raise AssertionError(model)


def test_skip_reasons() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(4, 4, batch_first=True)
            self.scale = nn.Parameter(torch.ones(4))
            self.fc = nn.Linear(4, 2)
            self.norm = nn.LayerNorm(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.fc(self.rnn(x)[0] * self.scale))

    units = depth_units(Mixed(), torch.randn(2, 3, 4))
    reasons = {s.name: s.reason for s in units.skipped}
    assert [u.name for u in units] == ["rnn[l0]", "fc"]  # recurrent layers are units
    assert reasons["rnn.bias_ih_l0"].startswith("bias")
    assert reasons["scale"].startswith("raw parameter of Mixed")
    assert reasons["fc.bias"].startswith("bias")
    assert reasons["norm.weight"].startswith("normalization")


def _units_behind_ddp(_: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(store, 1), rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(relu_mlp([4, 8, 2]))
        names = [u.name for u in depth_units(ddp, torch.randn(2, 4))]
    finally:
        dist.destroy_process_group()
    Path(out).write_text(json.dumps(names))
    # A DDP wrapper keeps gloo's worker threads alive past destroy_process_group; they can
    # abort the interpreter's shutdown, so this process (not pytest's) leaves without one.
    os._exit(0)


@pytest.mark.slow
def test_wrappers_are_unwrapped(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    model = relu_mlp([4, 8, 2])
    compiled = torch.compile(model)
    assert [u.name for u in depth_units(compiled, torch.randn(2, 4))] == ["0", "2"]
    out = tmp_path / "names.json"
    mp.spawn(_units_behind_ddp, args=(str(tmp_path / "store"), str(out)), nprocs=1, join=True)
    assert json.loads(out.read_text()) == ["0", "2"]
