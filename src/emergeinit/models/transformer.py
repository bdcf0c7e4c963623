"""An encoder-decoder transformer for translation, built from PyTorch's own layer classes.

The encoder and decoder are plain lists of ``nn.TransformerEncoderLayer`` and
``nn.TransformerDecoderLayer`` (not ``nn.Transformer``), registered and called encoder first,
so the emergence init's block detection (docs/method.md, "Units") sees every encoder block, then
every decoder block, as one depth unit each. Layers outside those blocks are the output
projection (a unit of its own unless tied to the target embedding) and the embeddings (never
units).

Post-LN (``norm_first=False``) is the layout of the original transformer and of the IWSLT'14
recipes of the paper's era; pre-LN adds a final LayerNorm after each stack, as pre-LN needs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

#: Named sizes. ``iwslt`` is fairseq's ``transformer_iwslt_de_en`` (the paper's IWSLT'14 model);
#: ``small`` learns the built-in number corpus in 1-2 CPU-core minutes per run (test BLEU
#: about 79 with Xavier after 3 epochs of 16k sentences; docs/translation.md); ``tiny`` is
#: for tests.
TRANSFORMER_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        d_model=32, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64
    ),
    "small": dict(
        d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=256
    ),
    "iwslt": dict(
        d_model=512, nhead=4, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=1024
    ),
}


def sinusoidal_positions(max_len: int, d_model: int) -> Tensor:
    """The fixed sine/cosine position table of Vaswani et al. (2017), ``(max_len, d_model)``."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table


def causal_mask(length: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(length, length)`` mask, True where attention is forbidden (the future)."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)


class Seq2SeqTransformer(nn.Module):
    """Batch-first encoder-decoder transformer returning next-token logits.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes (token ids ``0..vocab-1``).
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout:
            as in :class:`torch.nn.Transformer`; the activation is ReLU.
        norm_first: pre-LN blocks (with a final LayerNorm per stack) instead of post-LN.
        tie_embeddings: the output projection reuses the target embedding matrix (one shared
            ``Parameter``). Since embeddings are never scaled by the emergence init, a tied
            output projection is not a depth unit and stays unscaled (docs/method.md, "Units").
        max_len: longest sequence the position table covers.
        pad_id: padding token id in both vocabularies; padded positions are masked out as keys
            and their embedding row starts at zero.

    Token embeddings are multiplied by ``sqrt(d_model)`` before the sinusoidal positions are
    added; they start as ``N(0, d_model**-0.5)`` (as in fairseq) so that product has unit scale.
    Every other module keeps PyTorch's own default initialization, which is what the
    "PyTorch default" baseline measures.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        *,
        d_model: int = 512,
        nhead: int = 4,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        norm_first: bool = False,
        tie_embeddings: bool = False,
        max_len: int = 512,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        _check_sizes(
            src_vocab,
            tgt_vocab,
            d_model,
            nhead,
            num_encoder_layers,
            num_decoder_layers,
            dim_feedforward,
            dropout,
            max_len,
            pad_id,
        )
        self.d_model = d_model
        self.pad_id = pad_id
        self.positions: Tensor
        self.max_len = max_len
        self.norm_first = norm_first
        self.tie_embeddings = tie_embeddings

        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        for embed in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embed.weight, mean=0.0, std=d_model**-0.5)
            with torch.no_grad():
                embed.weight[pad_id].zero_()
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.embed_dropout = nn.Dropout(dropout)

        layer_args: dict[str, Any] = dict(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            batch_first=True,
            norm_first=norm_first,
        )
        self.encoder_layers = nn.ModuleList(
            nn.TransformerEncoderLayer(**layer_args) for _ in range(num_encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            nn.TransformerDecoderLayer(**layer_args) for _ in range(num_decoder_layers)
        )
        # Pre-LN leaves the residual stream un-normalized; post-LN blocks already end in a norm.
        self.encoder_norm: nn.Module = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm: nn.Module = nn.LayerNorm(d_model) if norm_first else nn.Identity()

        self.output = nn.Linear(d_model, tgt_vocab, bias=False)
        if tie_embeddings:
            self.output.weight = self.tgt_embed.weight

    # ------------------------------------------------------------------ pieces
    def _embed(self, embed: nn.Embedding, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.max_len:
            raise ConfigError(
                f"sequence of {length} tokens exceeds max_len={self.max_len}; "
                "build the model with a larger max_len or truncate the data."
            )
        x = embed(tokens) * math.sqrt(self.d_model) + self.positions[:length]
        return self.embed_dropout(x)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Encode ``src`` (B, S) token ids; return ``(memory (B, S, d), src_padding (B, S))``.

        ``src_padding`` is True at padded positions; pass it on to :meth:`decode`.
        """
        src_padding = src.eq(self.pad_id)
        x = self._embed(self.src_embed, src)
        for layer in self.encoder_layers:
            x = layer(x, src_key_padding_mask=src_padding)
        return self.encoder_norm(x), src_padding

    def decode(self, tgt: Tensor, memory: Tensor, src_padding: Tensor) -> Tensor:
        """Logits ``(B, T, tgt_vocab)`` for every prefix of ``tgt`` (B, T), causally masked.

        Position ``t`` sees ``tgt[:, :t+1]`` only, so ``logits[:, t]`` predicts token ``t+1``.
        Greedy and beam search call this on the growing prefix and read the last position.
        """
        length = tgt.shape[1]
        mask = causal_mask(length, tgt.device)
        tgt_padding = tgt.eq(self.pad_id)
        x = self._embed(self.tgt_embed, tgt)
        for layer in self.decoder_layers:
            x = layer(
                x,
                memory,
                tgt_mask=mask,
                tgt_key_padding_mask=tgt_padding,
                memory_key_padding_mask=src_padding,
                tgt_is_causal=True,
            )
        return self.output(self.decoder_norm(x))

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, tgt_vocab)`` for source ``src`` (B, S) and target
        input ``tgt`` (B, T) (the target shifted right, starting with BOS)."""
        memory, src_padding = self.encode(src)
        return self.decode(tgt, memory, src_padding)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}, tie_embeddings={self.tie_embeddings}"


def build_transformer(
    src_vocab: int, tgt_vocab: int, size: str = "small", **overrides: Any
) -> Seq2SeqTransformer:
    """A :class:`Seq2SeqTransformer` of a named size from :data:`TRANSFORMER_SIZES`;
    keyword ``overrides`` replace or add constructor arguments."""
    if size not in TRANSFORMER_SIZES:
        raise ConfigError(
            f"unknown transformer size {size!r}; choose one of {sorted(TRANSFORMER_SIZES)}."
        )
    return Seq2SeqTransformer(src_vocab, tgt_vocab, **{**TRANSFORMER_SIZES[size], **overrides})


def _check_sizes(
    src_vocab: int,
    tgt_vocab: int,
    d_model: int,
    nhead: int,
    num_encoder_layers: int,
    num_decoder_layers: int,
    dim_feedforward: int,
    dropout: float,
    max_len: int,
    pad_id: int,
) -> None:
    positive = dict(
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        d_model=d_model,
        nhead=nhead,
        dim_feedforward=dim_feedforward,
        max_len=max_len,
    )
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    for name, value in dict(
        num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers
    ).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}.")
    if d_model % nhead:
        raise ConfigError(f"d_model={d_model} must be divisible by nhead={nhead}.")
    if d_model % 2:
        raise ConfigError(f"d_model must be even for sinusoidal positions, got {d_model}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}.")
    if not 0 <= pad_id < min(src_vocab, tgt_vocab):
        raise ConfigError(
            f"pad_id={pad_id} must be a valid id in both vocabularies "
            f"(sizes {src_vocab} and {tgt_vocab})."
        )


__all__ = [
    "TRANSFORMER_SIZES",
    "Seq2SeqTransformer",
    "build_transformer",
    "causal_mask",
    "sinusoidal_positions",
]
