"""Recurrent layers as depth units (docs/method.md, "Recurrent layers")."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from emergeinit import depth_units, emergence_init_, emergence_param_groups, exponents

BASES = ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"]


class LSTMClassifier(nn.Module):
    def __init__(self, rnn: nn.RNNBase, width: int, classes: int = 3) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)[0]
        return self.head(out[:, -1])


def _classifier(layers: int = 3, *, bidirectional: bool = False) -> LSTMClassifier:
    rnn = nn.LSTM(5, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    return LSTMClassifier(rnn, 12 if bidirectional else 6)


def test_three_layer_lstm_classifier_gets_four_units() -> None:
    model = _classifier(3)
    x = torch.randn(2, 7, 5)
    report = emergence_init_(model, 2.0, example_input=x)
    assert [u.name for u in report.units] == ["rnn[l0]", "rnn[l1]", "rnn[l2]", "head"]
    assert [u.exponent for u in report.units] == exponents(4)
    assert report.units[0].shapes == ((24, 5), (24, 6))  # input-to-hidden, hidden-to-hidden
    assert not any(s.reason.startswith("recurrent") for s in report.skipped)
    skipped = {s.name: s.reason for s in report.skipped}
    assert skipped["rnn.bias_ih_l0"].startswith("bias")
    assert torch.count_nonzero(model.rnn.bias_hh_l2) == 0  # zero_bias reaches recurrent biases
    # graph order: layer k is k levels below the first, the head one below the last
    graph = emergence_init_(model, 2.0, example_input=x, order="graph")
    assert [(u.name, u.depth) for u in graph.units] == [
        ("rnn[l0]", 1), ("rnn[l1]", 2), ("rnn[l2]", 3), ("head", 4)
    ]  # fmt: skip


def test_bidirectional_directions_are_units_sharing_a_depth_in_graph_order() -> None:
    model = _classifier(2, bidirectional=True)
    x = torch.randn(2, 4, 5)
    units = depth_units(model, x)
    assert [u.name for u in units] == [
        "rnn[l0]", "rnn[l0_reverse]", "rnn[l1]", "rnn[l1_reverse]", "head"
    ]  # fmt: skip
    assert [w.name for w in units[1].weights] == [
        "rnn.weight_ih_l0_reverse",
        "rnn.weight_hh_l0_reverse",
    ]
    graph = emergence_init_(model, 3.0, example_input=x, order="graph")
    exponent = {u.name: u.exponent for u in graph.units}
    assert exponent == {
        "rnn[l0]": -1.0, "rnn[l0_reverse]": -1.0, "rnn[l1]": 0.0, "rnn[l1_reverse]": 0.0,
        "head": 1.0,
    }  # fmt: skip


def test_lstm_projection_weight_belongs_to_its_layer() -> None:
    lstm = nn.LSTM(4, 6, num_layers=2, proj_size=3)
    units = depth_units(lstm, torch.randn(5, 2, 4))
    assert [[w.name for w in u.weights] for u in units] == [
        ["weight_ih_l0", "weight_hh_l0", "weight_hr_l0"],
        ["weight_ih_l1", "weight_hh_l1", "weight_hr_l1"],
    ]


def _plain_loop(model: nn.Module, base: str, generator: torch.Generator) -> None:
    """torch.nn.init over every weight matrix in registration order, biases zeroed."""
    init = {
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, generator=generator),
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(
            w, nonlinearity="relu", generator=generator
        ),
        "xavier_normal": lambda w: nn.init.xavier_normal_(w, generator=generator),
        "xavier_uniform": lambda w: nn.init.xavier_uniform_(w, generator=generator),
        "orthogonal": lambda w: nn.init.orthogonal_(w, generator=generator),
    }[base]
    for name, param in model.named_parameters():
        if param.dim() >= 2:
            init(param)
        elif "bias" in name:
            nn.init.zeros_(param)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(
    "rnn",
    [
        nn.LSTM(5, 6, num_layers=2, batch_first=True, bidirectional=True),
        nn.GRU(5, 6, num_layers=2, batch_first=True),
        nn.RNN(5, 6, num_layers=3, batch_first=True, nonlinearity="relu"),
    ],
    ids=["lstm", "gru", "rnn"],
)
def test_alpha_one_is_the_plain_torch_loop_bit_for_bit(base: str, rnn: nn.RNNBase) -> None:
    width = 12 if rnn.bidirectional else 6
    torch.manual_seed(0)
    model = LSTMClassifier(copy.deepcopy(rnn), width)
    reference = copy.deepcopy(model)
    _plain_loop(reference, base, torch.Generator().manual_seed(3))
    emergence_init_(
        model,
        1.0,
        base=base,  # type: ignore[arg-type]
        example_input=torch.randn(2, 4, 5),
        generator=torch.Generator().manual_seed(3),
    )
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name


@pytest.mark.parametrize("base", BASES)
def test_both_weights_of_a_layer_share_its_scale(base: str) -> None:
    torch.manual_seed(0)
    model = _classifier(3)
    x = torch.randn(2, 4, 5)
    reference = copy.deepcopy(model)
    emergence_init_(
        reference, 1.0, base=base, example_input=x,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    report = emergence_init_(
        model, 1.7, base=base, example_input=x,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    scaled, plain = dict(model.named_parameters()), dict(reference.named_parameters())
    scale = {u.name: u.scale for u in report.units}
    recurrent = [name for name in scaled if name.startswith("rnn.weight")]
    assert len(recurrent) == 6
    for name in recurrent:
        layer = name.rsplit("_", 1)[1]  # weight_ih_l1 -> l1
        # The draw rounds std*scale and each value to float32, the reference each value and
        # its product: a few float32 ulps (2**-24 relative each) apart, well inside 1e-6.
        torch.testing.assert_close(
            scaled[name], plain[name] * scale[f"rnn[{layer}]"], rtol=1e-6, atol=0
        )


def test_fan_is_the_matrix_columns() -> None:
    """Kaiming's fan for weight_ih is the input size, for weight_hh the hidden size."""
    lstm = nn.LSTM(400, 300)
    emergence_init_(lstm, 1.0, nonlinearity="linear", generator=torch.Generator().manual_seed(0))
    # 1200 x 400 and 1200 x 300 normal draws: the sample std is within 1% of 1/sqrt(fan)
    assert lstm.weight_ih_l0.std().item() == pytest.approx(400**-0.5, rel=0.01)
    assert lstm.weight_hh_l0.std().item() == pytest.approx(300**-0.5, rel=0.01)


def test_cells_are_one_unit_each() -> None:
    class CellNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.GRUCell(4, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.zeros(x.shape[1], 5)
            for step in x:
                h = self.cell(step, h)
            return self.out(h)

    x = torch.randn(3, 2, 4)
    report = emergence_init_(CellNet(), 2.0, example_input=x)
    assert [(u.name, u.shapes) for u in report.units] == [
        ("cell", ((15, 4), (15, 5))),
        ("out", ((2, 5),)),
    ]
    # a cell called at every step feeds itself: its deepest call sets its depth
    graph = depth_units(CellNet(), x, order="graph")
    assert [(u.name, u.depth) for u in graph] == [("cell", 3), ("out", 4)]


def test_param_groups_for_recurrent_units() -> None:
    model = _classifier(3)
    groups = emergence_param_groups(model, 2.0, optimizer="adam")
    assert [g["name"] for g in groups] == ["rnn[l0]", "rnn[l1]", "rnn[l2]", "head", "rest"]
    assert [g["lr_multiplier"] for g in groups] == [4.0, 2.0, 0.5, 0.25, 1.0]
    assert [len(g["params"]) for g in groups[:3]] == [2, 2, 2]
    rest = {id(p) for p in groups[-1]["params"]}
    assert id(model.rnn.bias_ih_l0) in rest and id(model.rnn.weight_ih_l0) not in rest
    torch.optim.Adam(groups, lr=1e-3)
