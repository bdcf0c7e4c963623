"""The translation transformer: shapes, masks, causality, tied weights, block layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from emergeinit.errors import ConfigError
from emergeinit.models.transformer import (
    TRANSFORMER_SIZES,
    Seq2SeqTransformer,
    build_transformer,
    sinusoidal_positions,
)

PAD = 0


def tiny(**overrides: object) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    args = {**TRANSFORMER_SIZES["tiny"], "dropout": 0.0, **overrides}
    return Seq2SeqTransformer(23, 29, **args)  # type: ignore[arg-type]


def tokens(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (batch, length), generator=gen)


@pytest.mark.parametrize("norm_first", [False, True])
def test_forward_shape(norm_first: bool) -> None:
    model = tiny(norm_first=norm_first)
    logits = model(tokens(3, 7, 23, 1), tokens(3, 5, 29, 2))
    assert logits.shape == (3, 5, 29)
    assert torch.isfinite(logits).all()


def test_encode_decode_equal_forward() -> None:
    model = tiny().eval()
    src, tgt = tokens(2, 6, 23, 1), tokens(2, 4, 29, 2)
    with torch.no_grad():
        memory, src_padding = model.encode(src)
        assert memory.shape == (2, 6, 32) and src_padding.shape == (2, 6)
        torch.testing.assert_close(model.decode(tgt, memory, src_padding), model(src, tgt))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_source_padding_does_not_change_outputs(mode: str) -> None:
    # Eval mode takes PyTorch's fused encoder path; the masks must hold on both paths.
    model = tiny().train(mode == "train")
    src, tgt = tokens(2, 5, 23, 1), tokens(2, 4, 29, 2)
    padded = torch.cat([src, torch.full((2, 3), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, tgt), model(src, tgt), atol=1e-5, rtol=1e-5)


def test_target_padding_does_not_change_real_positions() -> None:
    model = tiny().eval()
    src, tgt = tokens(2, 5, 23, 1), tokens(2, 4, 29, 2)
    padded = torch.cat([tgt, torch.full((2, 3), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(src, padded)[:, :4], model(src, tgt), atol=1e-5, rtol=1e-5)


def test_batch_rows_with_different_lengths_are_independent() -> None:
    model = tiny().eval()
    short, long = tokens(1, 3, 23, 1), tokens(1, 6, 23, 2)
    tgt = tokens(2, 4, 29, 3)
    batch = torch.full((2, 6), PAD)
    batch[0, :3], batch[1] = short[0], long[0]
    with torch.no_grad():
        together = model(batch, tgt)
        torch.testing.assert_close(together[:1], model(short, tgt[:1]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together[1:], model(long, tgt[1:]), atol=1e-5, rtol=1e-5)


def test_causal_future_tokens_do_not_affect_earlier_logits() -> None:
    model = tiny()
    src, tgt = tokens(2, 5, 23, 1), tokens(2, 6, 29, 2)
    changed = tgt.clone()
    changed[:, 3:] = tokens(2, 3, 29, 9)
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_causal_gradient_flows_from_every_past_position_and_no_future_one() -> None:
    # Backpropagate a fixed random projection of each position's logits to the target
    # embeddings. (A plain sum is no probe: the sum over features of a LayerNorm output with
    # weight 1 and bias 0 is identically 0, so its gradient is 0 everywhere in exact
    # arithmetic and only rounding error is left.) Masked attention weights are exactly 0, so
    # the gradient to a future position is exactly 0 in float arithmetic too; every past
    # position has a gradient of order 1, far above rounding (~1e-6 here).
    model = tiny()
    src, tgt = tokens(1, 5, 23, 1), tokens(1, 6, 29, 2)
    embedded: list[torch.Tensor] = []
    hook = model.tgt_embed.register_forward_hook(lambda module, args, out: embedded.append(out))
    try:
        logits = model.decode(tgt, *model.encode(src))
    finally:
        hook.remove()
    projection = torch.randn(29, generator=torch.Generator().manual_seed(3))
    for position in range(6):
        (grad,) = torch.autograd.grad(logits[0, position] @ projection, embedded[0],
                                      retain_graph=True)
        per_position = grad[0].norm(dim=-1)
        assert torch.all(per_position[position + 1 :] == 0), (position, per_position)
        assert torch.all(per_position[: position + 1] > 1e-3 * per_position.max()), (
            position, per_position)


def test_tied_output_shares_storage_with_target_embedding() -> None:
    model = tiny(tie_embeddings=True)
    assert model.output.weight is model.tgt_embed.weight
    assert model.output.weight.data_ptr() == model.tgt_embed.weight.data_ptr()
    names = [name for name, _ in model.named_parameters()]
    assert "output.weight" not in names  # one Parameter, listed once
    untied = tiny()
    assert untied.output.weight.data_ptr() != untied.tgt_embed.weight.data_ptr()


def test_tied_model_learns_through_one_matrix() -> None:
    model = tiny(tie_embeddings=True)
    before = model.tgt_embed.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(tokens(2, 5, 23, 1), tokens(2, 4, 29, 2)).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.tgt_embed.weight)
    assert model.output.weight is model.tgt_embed.weight


def test_blocks_are_registered_encoder_first() -> None:
    model = tiny()
    blocks = [type(m) for m in model.modules()
              if isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer)]
    assert blocks == [nn.TransformerEncoderLayer] * 2 + [nn.TransformerDecoderLayer] * 2
    assert all(layer.self_attn.batch_first for layer in model.encoder_layers)


def test_embedding_scale_and_pad_row() -> None:
    model = tiny()
    assert model.src_embed.weight[PAD].abs().max() == 0
    std = model.src_embed.weight[1:].std().item()
    assert 0.7 * 32**-0.5 < std < 1.3 * 32**-0.5


def test_positions_are_sinusoidal() -> None:
    table = sinusoidal_positions(10, 8)
    assert table.shape == (10, 8)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * 4))
    torch.testing.assert_close(table[3, 0], torch.sin(torch.tensor(3.0)))


def test_sizes_and_errors() -> None:
    assert TRANSFORMER_SIZES["iwslt"] == dict(d_model=512, nhead=4, num_encoder_layers=6,
                                              num_decoder_layers=6, dim_feedforward=1024)
    assert build_transformer(11, 13, "tiny").output.out_features == 13
    with pytest.raises(ConfigError, match="unknown transformer size"):
        build_transformer(11, 13, "huge")
    with pytest.raises(ConfigError, match="divisible"):
        Seq2SeqTransformer(11, 13, d_model=30, nhead=4)
    with pytest.raises(ConfigError, match="pad_id"):
        Seq2SeqTransformer(11, 13, d_model=32, nhead=2, pad_id=20)
    model = tiny(max_len=8)
    with pytest.raises(ConfigError, match="max_len"):
        model(tokens(1, 9, 23, 1), tokens(1, 3, 29, 2))


@pytest.mark.parametrize("tie", [False, True])
def test_emergence_units_are_encoder_then_decoder_blocks(tie: bool) -> None:
    from emergeinit import emergence_init_

    model = tiny(tie_embeddings=tie)
    embedding = model.tgt_embed.weight.detach().clone()
    report = emergence_init_(model, 2.0, base="xavier_uniform",
                             example_input=(tokens(2, 5, 23, 1), tokens(2, 4, 29, 2)))
    names = [u.name for u in report.units]
    blocks = ["encoder_layers.0", "encoder_layers.1", "decoder_layers.0", "decoder_layers.1"]
    # A tied output projection belongs to the embedding, which is never a unit or re-drawn.
    assert names == (blocks if tie else [*blocks, "output"])
    assert torch.equal(model.tgt_embed.weight, embedding)
