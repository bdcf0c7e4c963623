"""order="graph": depth = units on the longest dataflow path (docs/method.md, "Order")."""

from __future__ import annotations

import pytest
import torch
from helpers import ShortcutFirst, assert_unchanged, relu_mlp, snapshot
from torch import nn

from emergeinit import depth_units, emergence_init_, emergence_param_groups, exponents
from emergeinit.errors import ConfigError, TracingError
from emergeinit.models import build_model, example_input
from emergeinit.models.vision import BasicBlock


def _depths(units: list) -> dict[str, int]:  # type: ignore[type-arg]
    return {u.name: u.depth for u in units}


def test_shortcut_projection_shares_the_first_convolution_depth() -> None:
    model = ShortcutFirst()
    x = torch.randn(2, 2, 5, 5)
    units = depth_units(model, x, order="graph")
    assert units.order == "graph" and units.traced
    assert _depths(units) == {"conv1": 1, "shortcut": 1, "conv2": 2, "head": 3}
    assert [u.name for u in units] == ["conv1", "shortcut", "conv2", "head"]
    report = emergence_init_(model, 2.0, example_input=x, order="graph")
    exponent = {u.name: u.exponent for u in report.units}
    assert exponent == {"conv1": -1.0, "shortcut": -1.0, "conv2": 0.0, "head": 1.0}
    # call order gives the shortcut a deeper exponent than conv2
    call = emergence_init_(ShortcutFirst(), 2.0, example_input=x)
    assert [(u.name, u.exponent) for u in call.units] == list(
        zip(["conv1", "conv2", "shortcut", "head"], exponents(4))
    )


class Branches(nn.Module):
    """Two parallel branches of different lengths, concatenated along channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.left = nn.Linear(8, 8)
        self.right1 = nn.Linear(8, 8)
        self.right2 = nn.Linear(8, 8)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        left = self.left(h)
        right = self.right2(torch.relu(self.right1(h)))
        return self.head(torch.cat([left, right], dim=1))


def test_parallel_branches_share_exponents() -> None:
    units = depth_units(Branches(), torch.randn(3, 4), order="graph")
    assert _depths(units) == {"stem": 1, "left": 2, "right1": 2, "right2": 3, "head": 4}
    report = emergence_init_(Branches(), 3.0, example_input=torch.randn(3, 4), order="graph")
    exponent = {u.name: u.exponent for u in report.units}
    assert exponent["left"] == exponent["right1"]
    # four distinct depths: the schedule of L = 4
    assert sorted(set(exponent.values())) == exponents(4)
    assert exponent["head"] == 2.0 and exponent["stem"] == -2.0


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("pivot", [0.5, 0.3])
def test_a_plain_chain_gives_the_call_order_schedule(head: bool, pivot: float) -> None:
    x = torch.randn(4, 5)
    model = relu_mlp([5, 6, 7, 6, 5, 3], bias=True)
    graph = emergence_init_(model, 1.7, example_input=x, order="graph", head=head, pivot=pivot)
    call = emergence_init_(model, 1.7, example_input=x, order="call", head=head, pivot=pivot)
    assert [(u.name, u.exponent, u.scale, u.scheduled) for u in graph.units] == [
        (u.name, u.exponent, u.scale, u.scheduled) for u in call.units
    ]
    assert [u.depth for u in graph.units] == [1, 2, 3, 4, 5]


def test_same_draws_as_call_order_on_a_chain() -> None:
    x = torch.randn(4, 5)
    a, b = relu_mlp([5, 6, 6, 3]), relu_mlp([5, 6, 6, 3])
    emergence_init_(a, 2.0, example_input=x, generator=torch.Generator().manual_seed(1))
    emergence_init_(
        b, 2.0, example_input=x, order="graph", generator=torch.Generator().manual_seed(1)
    )
    for got, want in zip(a.parameters(), b.parameters()):
        assert torch.equal(got, want)


@pytest.mark.parametrize("spec", ["resnet:1x8x8-4x1-6x2-8x1-3", "resnet-bn:3x8x8-4x2-6x2-3"])
def test_builtin_resnet_shortcuts_take_their_block_first_convolution_exponent(spec: str) -> None:
    model = build_model(spec)
    report = emergence_init_(model, 1.5, example_input=example_input(spec, 4), order="graph")
    exponent = {u.name: u.exponent for u in report.units}
    depth = {u.name: u.depth for u in report.units}
    projections = [name for name in exponent if ".shortcut." in name]
    assert projections, "the spec has stride-2 stages, so projection shortcuts"
    for name in projections:
        block = name.split(".shortcut.")[0]
        assert exponent[name] == exponent[f"{block}.conv1"]
        assert depth[name] == depth[f"{block}.conv1"] < depth[f"{block}.conv2"]
    levels = sorted(set(depth.values()))
    assert sorted(set(exponent.values())) == exponents(len(levels))
    # every scheduled unit's depth is one more than the deepest unit feeding it: the stem is 1
    assert depth["stem.0"] == 1 and depth["fc"] == max(levels)


def test_functional_ops_and_in_place_writes_are_followed() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.c = nn.Linear(4, 4)
            self.d = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.clone()
            h += self.b(self.a(x))  # in place: h now derives from b (depth 2)
            buffer = torch.zeros(x.shape[0], 8)
            buffer[:, :4] = self.c(h)  # depth 3 written into a fresh tensor
            return self.d(buffer)

    units = depth_units(Functional(), torch.randn(2, 4), order="graph")
    assert _depths(units) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_module_called_twice_takes_its_deepest_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(4, 4)
            self.middle = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(self.middle(self.shared(x)))

    units = depth_units(Twice(), torch.randn(2, 4), order="graph")
    assert _depths(units) == {"middle": 2, "shared": 3}


def test_units_never_called_go_after_the_deepest() -> None:
    class Spare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Linear(4, 4)
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x)

    units = depth_units(Spare(), torch.randn(2, 4), order="graph")
    assert [(u.name, u.depth, u.called) for u in units] == [
        ("a", 1, True),
        ("b", 1, True),
        ("spare", 2, False),
    ]


def test_transformer_blocks_in_graph_order() -> None:
    model = nn.Transformer(
        d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=16,
        batch_first=True,
    )  # fmt: skip
    units = depth_units(model, (torch.randn(2, 5, 8), torch.randn(2, 4, 8)), order="graph")
    depth = _depths(units)
    # the decoder's first block reads the target (depth 0) and the encoder's memory (depth 2)
    assert depth == {
        "encoder.layers.0": 1,
        "encoder.layers.1": 2,
        "decoder.layers.0": 3,
        "decoder.layers.1": 4,
    }


def test_graph_order_needs_an_example_input_and_no_groups() -> None:
    model = relu_mlp([4, 8, 2])
    before = snapshot(model)
    with pytest.raises(ConfigError, match="example_input"):
        emergence_init_(model, 2.0, order="graph")
    with pytest.raises(ConfigError, match="groups"):
        emergence_init_(model, 2.0, order="graph", groups=[["0"], ["2"]], example_input=None)
    with pytest.raises(ConfigError, match="order must be one of"):
        emergence_init_(model, 2.0, order="depth")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="example_input"):
        emergence_param_groups(model, 2.0, order="graph")
    assert_unchanged(model, before)


def test_graph_trace_restores_modes_buffers_and_rng_and_draws_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.eval()
    model[2].train()
    before = snapshot(model)
    x = torch.randn(6, 4)
    rng = torch.get_rng_state()
    depth_units(model, x, order="graph")
    assert torch.equal(torch.get_rng_state(), rng)
    assert_unchanged(model, before)
    assert [m.training for m in model] == [False, False, True, False]
    # and no torch-function mode is left behind
    assert not torch.overrides._get_current_function_mode_stack()


def test_graph_trace_failure_is_typed_and_loses_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    before = snapshot(model)
    with pytest.raises(TracingError, match="example_input"):
        emergence_init_(model, 2.0, example_input=torch.randn(3, 5), order="graph")
    assert_unchanged(model, before)
    assert not torch.overrides._get_current_function_mode_stack()


def test_param_groups_in_graph_order_share_multipliers() -> None:
    x = torch.randn(2, 2, 5, 5)
    groups = emergence_param_groups(ShortcutFirst(), 2.0, example_input=x, order="graph")
    multiplier = {g["name"]: g["lr_multiplier"] for g in groups}
    assert multiplier["shortcut"] == multiplier["conv1"] == 4.0
    assert multiplier["conv2"] == 1.0 and multiplier["head"] == 0.25


def test_report_shows_depths_and_the_order() -> None:
    x = torch.randn(2, 2, 5, 5)
    report = emergence_init_(ShortcutFirst(), 2.0, example_input=x, order="graph")
    text = str(report)
    assert "order: graph, 3 depths" in text
    header = text.splitlines()[1].split()
    assert "depth" in header
    row = next(line for line in text.splitlines() if line.split()[1:2] == ["shortcut"])
    assert row.split()[header.index("depth")] == "1"
    assert report.to_dict()["units"][1]["depth"] == 1
    assert report.traced and report.order == "graph"


def test_residual_blocks_as_units() -> None:
    spec = "resnet:1x8x8-4x2-6x1-3"
    model = build_model(spec)
    x = example_input(spec, 4)
    assert depth_units(model, x).mode == "layers"  # auto: layers, as before
    units = depth_units(model, x, units="blocks")
    assert units.mode == "blocks"
    assert [(u.name, u.kind) for u in units] == [
        ("stem.0", "layer"),
        ("blocks.0", "block"),
        ("blocks.1", "block"),
        ("blocks.2", "block"),
        ("fc", "layer"),
    ]
    assert units[3].module_type == BasicBlock.__name__
    assert len(units[3].weights) == 3  # conv1, conv2 and the projection shortcut
    graph = depth_units(model, x, units="blocks", order="graph")
    assert [u.depth for u in graph] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("class_name", "is_unit"),
    [
        ("BasicBlock", True),  # torchvision, timm
        ("Bottleneck", True),  # torchvision, timm
        ("ResNetBasicLayer", True),  # Hugging Face
        ("ResNetBottleNeckLayer", True),  # Hugging Face
        ("InvertedResidual", True),  # torchvision / timm MobileNet
        ("ResBlock", True),
        ("ConvBlock", False),  # not a documented residual name
    ],
)
def test_residual_block_rule_by_class_name(class_name: str, is_unit: bool) -> None:
    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))  # type: ignore[operator]

    def init(self: nn.Module) -> None:
        nn.Module.__init__(self)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)

    block_type = type(class_name, (nn.Module,), {"__init__": init, "forward": forward})
    model = nn.Sequential(nn.Conv2d(1, 3, 1), block_type(), block_type())
    x = torch.randn(2, 1, 4, 4)
    if is_unit:
        units = depth_units(model, x, units="blocks")
        assert [u.name for u in units] == ["0", "1", "2"]
    else:
        with pytest.raises(ConfigError, match="no residual block"):
            depth_units(model, x, units="blocks")


def test_outermost_residual_blocks_only() -> None:
    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = BasicBlock(3, 3, 1, batch_norm=False)
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(self.inner(x))

    model = nn.Sequential(Bottleneck(), nn.Flatten(), nn.Linear(48, 2))
    units = depth_units(model, torch.randn(2, 3, 4, 4), units="blocks")
    assert [(u.name, len(u.weights)) for u in units] == [("0", 3), ("2", 1)]


def test_the_method_page_table() -> None:
    """docs/method.md ("Order") shows these exponents for this spec."""
    spec = "resnet:1x28x28-16x1-32x1-10"
    rows = {}
    for order in ("call", "graph"):
        report = emergence_init_(
            build_model(spec), 2.0, example_input=example_input(spec, 2), order=order
        )
        rows[order] = {u.name: (u.depth, u.exponent) for u in report.units}
    assert rows["call"] == {
        "stem.0": (1, -3), "blocks.0.conv1": (2, -2), "blocks.0.conv2": (3, -1),
        "blocks.1.conv1": (4, 0), "blocks.1.conv2": (5, 1), "blocks.1.shortcut.0": (6, 2),
        "fc": (7, 3),
    }  # fmt: skip
    assert rows["graph"] == {
        "stem.0": (1, -3), "blocks.0.conv1": (2, -2), "blocks.0.conv2": (3, -1),
        "blocks.1.conv1": (4, 1), "blocks.1.conv2": (5, 2), "blocks.1.shortcut.0": (4, 1),
        "fc": (6, 3),
    }  # fmt: skip
