"""Hugging Face models built from small configs (nothing is downloaded)."""

from __future__ import annotations

import copy

import pytest
import torch

from emergeinit import emergence_init_

transformers = pytest.importorskip("transformers")


@pytest.mark.slow
def test_bert_layers_are_blocks() -> None:
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    reference = copy.deepcopy(model)
    inputs = {"input_ids": torch.randint(1, 50, (2, 6))}
    report = emergence_init_(
        model,
        2.0,
        base="xavier_uniform",
        example_input=inputs,
        generator=torch.Generator().manual_seed(1),
    )
    emergence_init_(
        reference,
        1.0,
        base="xavier_uniform",
        example_input=inputs,
        generator=torch.Generator().manual_seed(1),
    )
    assert report.mode == "blocks" and report.traced
    names = [u.name for u in report.units]
    assert names == ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2", "pooler.dense"]
    assert [u.module_type for u in report.units][:3] == ["BertLayer"] * 3
    assert [u.exponent for u in report.units] == [-2, -1, 1, 2]
    skipped = {s.name: s.reason for s in report.skipped}
    assert skipped["embeddings.word_embeddings.weight"].startswith("embedding")
    assert skipped["encoder.layer.0.attention.output.LayerNorm.weight"].startswith("normalization")
    params, base = dict(model.named_parameters()), dict(reference.named_parameters())
    key = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(params[key], base[key] * 0.25, rtol=2e-6, atol=0)
    assert torch.equal(
        params["embeddings.word_embeddings.weight"], base["embeddings.word_embeddings.weight"]
    )
    model(**inputs)  # still a working model


def test_gpt2_conv1d_and_tied_head() -> None:
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    embedding = model.transformer.wte.weight.detach().clone()
    inputs = {"input_ids": torch.randint(0, 40, (2, 5))}
    report = emergence_init_(model, 1.5, example_input=inputs, nonlinearity="linear")
    assert [u.name for u in report.units] == ["transformer.h.0", "transformer.h.1"]
    assert [u.exponent for u in report.units] == [-1, 1]
    # GPT-2's Conv1D stores weights as (in, out): the fan must come from the transposed view
    c_fc = model.transformer.h[0].mlp.c_fc.weight  # (16, 64): fan_in 16
    assert c_fc.shape == (16, 64)
    assert c_fc.std().item() == pytest.approx((1 / 16) ** 0.5 / 1.5, rel=0.15)
    skipped = {s.name: s.reason for s in report.skipped}
    assert skipped["lm_head.weight"] == "tied to embedding transformer.wte.weight"
    assert any("lm_head is not a unit" in note for note in report.notes)
    assert torch.equal(model.transformer.wte.weight, embedding)  # the tied head is untouched
    assert skipped["transformer.wte.weight"].startswith("embedding")


@pytest.mark.slow
def test_resnet_bottlenecks_as_blocks_and_graph_order() -> None:
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2],
        layer_type="bottleneck", num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(config)
    inputs = {"pixel_values": torch.randn(2, 3, 16, 16)}
    blocks = emergence_init_(model, 1.5, example_input=inputs, units="blocks")
    assert [u.module_type for u in blocks.units] == [
        "Conv2d", "ResNetBottleNeckLayer", "ResNetBottleNeckLayer", "ResNetBottleNeckLayer",
        "Linear",
    ]  # fmt: skip
    graph = emergence_init_(model, 1.5, example_input=inputs, order="graph")
    exponent = {u.name: u.exponent for u in graph.units}
    block = "resnet.encoder.stages.1.layers.0"
    assert exponent[f"{block}.shortcut.convolution"] == exponent[f"{block}.layer.0.convolution"]
    assert exponent[f"{block}.layer.1.convolution"] > exponent[f"{block}.layer.0.convolution"]
