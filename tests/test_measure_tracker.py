"""EmergenceTracker: records on schedule, survives a checkpoint, leaves the model alone."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from emergeinit.errors import ConfigError
from emergeinit.measure import EmergenceTracker, measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def train_steps(net: nn.Module, tracker: EmergenceTracker, steps: range) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for step in steps:
        tracker.step(net, step)
        x = torch.randn(16, 4, generator=gen)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_records_every_k_steps_on_the_probe_batch() -> None:
    net = make_net()
    probe = torch.randn(10, 4)
    tracker = EmergenceTracker(probe, every=5, keep_per_sample=True)
    train_steps(net, tracker, range(12))
    assert [r["step"] for r in tracker.history] == [0, 5, 10]
    assert len(tracker) == 3
    last = tracker.last
    assert last is not None
    assert set(last) == {"step", "log10_e_mean", "log10_e_std", "log10_relative",
                         "active_fraction", "log10_e"}  # fmt: skip
    assert len(last["log10_e"]) == 10
    # the record equals a direct measurement of the same model on the same probe
    direct = measure_emergence(net, probe)
    again = tracker.record(net, 99)
    assert again["log10_e_mean"] == direct.log10_e_mean
    assert again["active_fraction"] == direct.active_fraction
    json.dumps(tracker.history)  # plain data


def test_probe_is_copied() -> None:
    net = make_net()
    probe = torch.randn(10, 4)
    tracker = EmergenceTracker(probe, every=1)
    first = tracker.record(net, 0)["log10_e_mean"]
    probe.mul_(100)  # the caller reuses its tensor: the tracker's probe stays fixed
    assert tracker.record(net, 1)["log10_e_mean"] == first


def test_tracking_does_not_change_training() -> None:
    tracked, plain = make_net(), make_net()
    train_steps(tracked, EmergenceTracker(torch.randn(10, 4), every=1), range(6))
    train_steps(plain, EmergenceTracker(torch.randn(10, 4), every=1000), range(1, 7))
    for (name, a), b in zip(tracked.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_state_dict_round_trip_and_resume() -> None:
    net = make_net()
    probe = torch.randn(10, 4)
    tracker = EmergenceTracker(probe, every=2, form="li")
    train_steps(net, tracker, range(5))
    state = json.loads(json.dumps(tracker.state_dict()))  # survives a JSON checkpoint

    resumed = EmergenceTracker(probe, every=2, form="li")
    resumed.load_state_dict(state)
    assert resumed.history == tracker.history
    assert resumed.step(net, 4) is None  # already recorded before the checkpoint
    assert resumed.step(net, 5) is None  # not a recording step
    assert resumed.step(net, 6) is not None
    assert [r["step"] for r in resumed.history] == [0, 2, 4, 6]

    with pytest.raises(ConfigError, match="one measure"):
        EmergenceTracker(probe, every=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="version"):
        resumed.load_state_dict({"history": []})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every"),
        ({"every": 2.5}, "every"),
        ({"form": "x"}, "form"),
        ({"activity": "x"}, "activity"),
        ({"granularity": "x"}, "granularity"),
        ({"tau": float("inf")}, "tau"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EmergenceTracker(torch.randn(2, 4), **kwargs)  # type: ignore[arg-type]


def test_bad_probe() -> None:
    with pytest.raises(ConfigError, match="probe"):
        EmergenceTracker([])


def test_keyword_probe() -> None:
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.fc(features)))

    torch.manual_seed(0)
    net = Keyword()
    probe = torch.randn(6, 4)
    tracker = EmergenceTracker({"features": probe}, every=1)
    record = tracker.step(net, 0)
    assert record is not None
    assert record["log10_e_mean"] == measure_emergence(net, probe).log10_e_mean
    probe.zero_()  # the tracker keeps its own copy
    assert tracker.measure(net).log10_e_mean == record["log10_e_mean"]
