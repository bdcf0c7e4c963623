"""The measure on models people train: Hugging Face vision models, a U-Net, keyword inputs.

Hugging Face models are built from small configs (never downloaded) and read by torch.export
(their forward has shape checks fx cannot trace). ResNet and ConvNeXt are checked against exact
path counts over the explicit neuron graph of the same architecture (``tests/brute_force.py``),
with each layer's activity taken from the Hugging Face model's own activations by hooks.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from brute_force import SpecNet, activity_sets, cross_dp, explicit_graph, li_dp, log10
from helpers import assert_unchanged, snapshot
from torch import nn

from emergeinit.errors import UnsupportedModuleError
from emergeinit.measure import measure_emergence

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

transformers = pytest.importorskip("transformers")

LOG_TOL = 1e-9


def hooked(model: nn.Module, names: list[str], x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of the named submodules on one forward pass, in the order of ``names``."""
    found: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: found.__setitem__(name, out)
        )
        for name in names
    ]
    with torch.no_grad():
        model(**x)
    for handle in handles:
        handle.remove()
    return [found[name] for name in names]


def assert_equals_graph(
    model: nn.Module, twin: SpecNet, shape: tuple[int, ...], x: torch.Tensor,
    values: list[torch.Tensor], granularities: tuple[bool, ...] = (False, True),
) -> None:  # fmt: skip
    for channel in granularities:
        graph = explicit_graph(twin, shape, channel)
        for form, dp in (("cross", cross_dp), ("li", li_dp)):
            result = measure_emergence(
                model, {"pixel_values": x}, form=form,  # type: ignore[arg-type]
                granularity="channel" if channel else "neuron",
            )  # fmt: skip
            assert result.traced_with == "export"
            expected = [log10(dp(graph, a)) for a in activity_sets(graph, values, 0.05,
                                                                    channel=channel)]  # fmt: skip
            for got, want in zip(result.log10_e.tolist(), expected, strict=True):
                assert math.isfinite(got) and abs(got - want) < LOG_TOL, (got, want)


@pytest.mark.slow
def test_hf_resnet_with_keyword_pixel_values_equals_explicit_graph() -> None:
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=4, hidden_sizes=[4, 6], depths=[1, 1], num_labels=3,
        layer_type="basic",
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(config).eval()
    x = torch.randn(2, 3, 12, 12)
    # The same architecture as a spec: embedder conv7x7/2 + BN + ReLU, max pool 3/2, a basic
    # block per stage (the second downsamples), global average pool, the classifier.
    spec = [("conv", 4, 7, 2, 3, 1, 1), ("bn",), ("act", "relu"), ("maxpool", 3, 2, 1, 1, False),
            ("block", 4, 1), ("block", 6, 2), ("adaptive", 1), ("flatten",), ("linear", 3)]
    shape = (3, 12, 12)
    stages = "resnet.encoder.stages"
    reads = ["resnet.embedder.embedder.activation",
             f"{stages}.0.layers.0.layer.0.activation", f"{stages}.0.layers.0.activation",
             f"{stages}.1.layers.0.layer.0.activation", f"{stages}.1.layers.0.activation",
             f"{stages}.1.layers.0.activation", "classifier.1"]  # fmt: skip
    values = hooked(model, reads, {"pixel_values": x})
    assert_equals_graph(model, SpecNet(spec, shape), shape, x, values)
    names = list(measure_emergence(model, {"pixel_values": x}).node_counts)
    assert names[:2] == ["input", "resnet.embedder.embedder.convolution"]
    assert names[-1] == "classifier.1"


def test_hf_convnext_with_keyword_pixel_values_equals_explicit_graph() -> None:
    config = transformers.ConvNextConfig(
        num_channels=3, num_stages=1, hidden_sizes=[4], depths=[1], num_labels=3,
        layer_scale_init_value=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ConvNextForImageClassification(config).eval()
    x = torch.randn(2, 3, 16, 16)
    # patch conv 4/4 + LayerNorm over channels, one block (depthwise 7x7, permute, LayerNorm,
    # Linear 4x, GELU, Linear, layer scale, permute back, residual), mean, LayerNorm, classifier
    spec = [("conv", 4, 4, 4, 0, 1, 1), ("ln_channels",), ("save",), ("conv", 4, 7, 1, 3, 1, 4),
            ("permute", (0, 2, 3, 1)), ("ln",), ("linear", 16), ("act", "gelu"), ("linear", 4),
            ("scale",), ("permute", (0, 3, 1, 2)), ("add_saved",), ("gap",), ("ln",),
            ("linear", 3)]  # fmt: skip
    shape = (3, 16, 16)
    layer = "convnext.encoder.stages.0.layers.0"
    embed, norm, act, block, out = hooked(
        model, ["convnext.embeddings.layernorm", f"{layer}.layernorm", f"{layer}.act", layer,
                "classifier"], {"pixel_values": x},
    )  # fmt: skip
    # Read points, laid out like each layer's output: the patch conv at the channels-first
    # LayerNorm (a fork follows), the depthwise conv at the LayerNorm (then a Linear), pwconv1
    # at its GELU, pwconv2 at the residual sum (then the mean), un-permuted to channels-last.
    values = [embed, norm.permute(0, 3, 1, 2), act, block.permute(0, 2, 3, 1), out]
    assert_equals_graph(model, SpecNet(spec, shape), shape, x, values)


@pytest.mark.slow
def test_hf_mobilenet_v2_with_keyword_pixel_values() -> None:
    config = transformers.MobileNetV2Config(
        num_channels=3, image_size=32, depth_multiplier=0.25, num_labels=3
    )
    torch.manual_seed(0)
    model = transformers.MobileNetV2ForImageClassification(config).eval()
    x = torch.randn(3, 3, 32, 32)
    result = measure_emergence(model, {"pixel_values": x})
    assert result.traced_with == "export"
    assert torch.isfinite(result.log10_e).all()
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(result.node_counts)[1:] == layers  # every conv (depthwise included) and the head
    positional = measure_emergence(model, x)  # fx cannot trace it either: export, positionally
    torch.testing.assert_close(positional.log10_e, result.log10_e, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_hf_models_in_training_mode_and_channel_granularity() -> None:
    torch.manual_seed(0)
    models = [
        transformers.ResNetModel(transformers.ResNetConfig(
            embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1], layer_type="bottleneck")),
        transformers.ConvNextModel(transformers.ConvNextConfig(
            num_stages=2, hidden_sizes=[4, 8], depths=[1, 1])),
    ]  # fmt: skip
    x = torch.randn(4, 3, 32, 32)
    for model in models:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        for granularity in ("neuron", "channel"):
            result = measure_emergence(model.train(), {"pixel_values": x},
                                       granularity=granularity)  # type: ignore[arg-type]
            assert not torch.isnan(result.log10_e).any()  # -inf where no channel is inactive
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# transformers: refused, never measured (docs/measure.md, "Attention")


def _tokens() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))}


TRANSFORMERS: dict[str, Any] = {
    "bert": lambda: (transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32)), _tokens()),
    # returns a key-value cache (DynamicCache) that torch.export cannot flatten
    "gpt2": lambda: (transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
        eos_token_id=0)), _tokens()),
    "t5": lambda: (transformers.T5Model(transformers.T5Config(
        vocab_size=50, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2)),
        {**_tokens(), "decoder_input_ids": _tokens()["input_ids"]}),
    "llama": lambda: (transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)),
        _tokens()),
    "vit": lambda: (transformers.ViTModel(transformers.ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=16, patch_size=8)), {"pixel_values": torch.randn(2, 3, 16, 16)}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_hf_transformers_are_refused_for_their_attention(name: str) -> None:
    torch.manual_seed(0)
    model, inputs = TRANSFORMERS[name]()
    model.eval()
    before = snapshot(model)
    with pytest.raises(UnsupportedModuleError) as info:
        measure_emergence(model, inputs)
    message = str(info.value)
    # the refusal is the attention's, read from the graph (not a capture failure), and names
    # the model's own modules
    assert message.startswith("the emergence measure does not support attention"), message
    assert "docs/measure.md, 'Attention'" in message
    assert "could not read the structure" not in message
    assert "wrapped" not in message
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------
# a U-Net as people write it


class UNet(nn.Module):
    """Two levels: transposed-conv upsampling, a size-matching pad computed in forward()
    (from the skip's shape, as in common U-Net code) and skip concatenation."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.BatchNorm2d(width),
                                   nn.ReLU())  # fmt: skip
        self.down2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down1(x)
        h = self.down2(F.max_pool2d(skip, 2))
        h = self.up(h)
        dy, dx = skip.size(2) - h.size(2), skip.size(3) - h.size(3)
        h = F.pad(h, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.head(self.fuse(torch.cat([h, skip], dim=1)))


def unet_twin(net: UNet, odd: bool) -> SpecNet:
    """The same network as a spec (weights copied), for the explicit graph."""
    width = net.up.out_channels
    spec: list[tuple[Any, ...]] = [
        ("conv", width, 3, 1, 1, 1, 1), ("bn",), ("act", "relu"), ("save",),
        ("maxpool", 2, 2, 0, 1, False), ("conv", 2 * width, 3, 1, 1, 1, 1), ("act", "relu"),
        ("convT", width, 2, 2, 0, 0, 1, 1), ("pad", (0, 1, 0, 1) if odd else (0, 0, 0, 0)),
        ("cat_saved",), ("conv", width, 3, 1, 1, 1, 1), ("act", "relu"),
        ("conv", 1, 1, 1, 0, 1, 1),
    ]  # fmt: skip
    twin = SpecNet(spec, (2, 7 if odd else 6, 7 if odd else 6))
    pairs = [(0, net.down1[0]), (1, net.down1[1]), (5, net.down2[0]), (7, net.up),
             (10, net.fuse[0]), (12, net.head)]  # fmt: skip
    for index, module in pairs:
        twin.mods[index].load_state_dict(module.state_dict())
    return twin


@pytest.mark.parametrize("odd", [False, True])
def test_unet_with_transposed_conv_pad_and_skip_concatenation(odd: bool) -> None:
    torch.manual_seed(3)
    net = UNet().eval()
    size = 7 if odd else 6
    twin = unet_twin(net, odd).eval()
    x = torch.randn(3, 2, size, size)
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))  # the twin is the same network
    shape = (2, size, size)
    values = twin.replay(x)
    for channel in (False, True):
        graph = explicit_graph(twin, shape, channel)
        actives = activity_sets(graph, values, 0.05, channel=channel)
        for form, dp in (("cross", cross_dp), ("li", li_dp)):
            result = measure_emergence(net, x, form=form,  # type: ignore[arg-type]
                                       granularity="channel" if channel else "neuron")
            assert result.traced_with == "fx"
            for got, want in zip(result.log10_e.tolist(), [log10(dp(graph, a)) for a in actives],
                                 strict=True):  # fmt: skip
                assert abs(got - want) < LOG_TOL


# ---------------------------------------------------------------------------------------------
# keyword and mixed inputs


class Keyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Conv2d(1, 2, 3)
        self.extra = nn.Linear(3, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, image: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.image(image)).flatten(1)
        if extra is not None:
            h = h + torch.tanh(self.extra(extra))
        return self.head(h)


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, double: bool = False) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        return self.head(h * 2 if double else h)  # control flow on an argument: fx fails


def test_keyword_positional_and_mixed_inputs_agree() -> None:
    torch.manual_seed(0)
    net = Keyword()
    image, extra = torch.randn(4, 1, 4, 4), torch.randn(4, 3)
    positional = measure_emergence(net, (image, extra))
    assert positional.traced_with == "fx"
    keyword = measure_emergence(net, {"image": image, "extra": extra})
    assert keyword.traced_with == "export"
    torch.testing.assert_close(keyword.log10_e, positional.log10_e, rtol=0, atol=1e-12)
    assert list(keyword.node_counts) == ["input:image", "input:extra", "image", "extra", "head"]
    only_image = measure_emergence(net, {"image": image})
    assert list(only_image.node_counts) == ["input", "image", "head"]
    # fx makes a placeholder for every parameter of forward(): one positional tensor of two is
    # read by torch.export instead, and gives the keyword result.
    alone = measure_emergence(net, image).log10_e
    torch.testing.assert_close(alone, only_image.log10_e, rtol=0, atol=1e-12)


def test_non_tensor_keyword_arguments_are_constants() -> None:
    torch.manual_seed(0)
    net = Flagged()
    x = torch.randn(5, 3)
    doubled = measure_emergence(net, {"x": x, "double": True})
    plain = measure_emergence(net, x)
    assert doubled.traced_with == plain.traced_with == "export"
    # a constant scale routes unchanged
    torch.testing.assert_close(doubled.log10_e, plain.log10_e, rtol=0, atol=1e-12)
    assert list(doubled.node_counts) == ["input", "fc", "head"]


class OptionalShift(nn.Module):
    """An optional input (a default in forward's signature) and a functional parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.nn.functional.linear(x, self.weight)
        return self.head(torch.relu(h if shift is None else h + shift))


def test_fx_takes_a_forward_with_an_optional_input_and_a_functional_parameter() -> None:
    # the probe's own inputs (the parameter, the kernel's block sizes) follow forward()'s; after
    # one with a default they need one too, else the probe does not compile and export is used
    torch.manual_seed(0)
    net = OptionalShift()
    x, shift = torch.randn(5, 3), torch.randn(5, 4)
    by_fx = measure_emergence(net, (x, shift))
    assert by_fx.traced_with == "fx"
    by_export = measure_emergence(net, (x, shift), capture="export")
    torch.testing.assert_close(by_fx.log10_e, by_export.log10_e, rtol=0, atol=1e-12)
