"""Greedy and beam-search decoding for :class:`~emergeinit.models.transformer.Seq2SeqTransformer`.

Both run batched: the source is encoded once and each step re-runs the decoder on the whole
prefix (no key/value cache: PyTorch's decoder layers have none, and for the short sentences of
this benchmark the quadratic recomputation costs less than the Python a cache would need).
Output length is capped at ``max_len_a * source_length + max_len_b`` tokens plus the EOS
(fairseq's rule; the source length counts its EOS).

Beam search follows fairseq: each step keeps the ``beam`` best live hypotheses out of the
``2 * beam`` best candidates, a hypothesis that emits EOS among the top ``beam`` candidates is
finished with score ``sum(log p) / length ** length_penalty`` (length counts the EOS), and a
sentence is done once it has ``beam`` finished hypotheses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ....errors import ConfigError
from ....models.transformer import Seq2SeqTransformer
from .tokenizer import BOS_ID, EOS_ID, PAD_ID


def _max_steps(src: Tensor, model: Seq2SeqTransformer, max_len_a: float, max_len_b: int) -> int:
    source_length = int(src.ne(PAD_ID).sum(1).max())
    return max(1, min(model.max_len - 1, int(max_len_a * source_length + max_len_b)))


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer, src: Tensor, *, max_len_a: float = 1.2, max_len_b: int = 10
) -> list[list[int]]:
    """The most likely next token at every step, for each sentence of ``src`` (B, S).

    Returns token ids without BOS and EOS. The model should be in eval mode.
    """
    steps = _max_steps(src, model, max_len_a, max_len_b)
    memory, src_padding = model.encode(src)
    tokens = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    for _ in range(steps):
        logits = model.decode(tokens, memory, src_padding)[:, -1]
        logits[:, [PAD_ID, BOS_ID]] = float("-inf")
        nxt = logits.argmax(-1).masked_fill(finished, PAD_ID)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        finished |= nxt.eq(EOS_ID)
        if bool(finished.all()):
            break
    return [_strip(row) for row in tokens[:, 1:].tolist()]


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    src: Tensor,
    *,
    beam: int = 5,
    length_penalty: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
) -> list[list[int]]:
    """The best of ``beam`` hypotheses for each sentence of ``src`` (B, S); ids without BOS/EOS.

    ``beam=1`` is greedy decoding. The model should be in eval mode.
    """
    if not isinstance(beam, int) or beam < 1:
        raise ConfigError(f"eval.beam must be a positive integer, got {beam!r}.")
    batch, k = src.shape[0], beam
    steps = _max_steps(src, model, max_len_a, max_len_b)
    memory, src_padding = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)
    src_padding = src_padding.repeat_interleave(k, dim=0)
    device = src.device

    tokens = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
    # Only beam 0 is live at the start, so the first step does not pick k copies of one token.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    rank = torch.arange(2 * k, device=device)

    for step in range(steps + 1):
        logp = torch.log_softmax(model.decode(tokens, memory, src_padding)[:, -1].float(), -1)
        logp[:, [PAD_ID, BOS_ID]] = float("-inf")
        if step == steps:  # out of length: every hypothesis must end now
            eos = logp[:, EOS_ID].clone()
            logp.fill_(float("-inf"))
            logp[:, EOS_ID] = eos
        vocab = logp.shape[1]
        candidates = (scores.view(-1, 1) + logp).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)
        origin, token = top_index // vocab, top_index % vocab
        is_eos = token.eq(EOS_ID)

        # Finish EOS candidates ranked within the top k, for sentences still open.
        finishing = is_eos & (rank[: is_eos.shape[1]] < k) & ~done[:, None] & top_scores.isfinite()
        if bool(finishing.any()):
            for b, j in finishing.nonzero().tolist():
                prefix = tokens[b * k + int(origin[b, j]), 1:].tolist()
                normalized = float(top_scores[b, j]) / (len(prefix) + 1) ** length_penalty
                finished[b].append((normalized, prefix))
            done |= torch.tensor([len(f) >= k for f in finished], device=device)
        if bool(done.all()):
            break

        # The k best non-EOS candidates stay live (there are at least k: at most k are EOS).
        order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]
        origin, token = origin.gather(1, order), token.gather(1, order)
        scores = top_scores.gather(1, order).masked_fill(done[:, None], float("-inf"))
        rows = (torch.arange(batch, device=device)[:, None] * k + origin).view(-1)
        tokens = torch.cat([tokens[rows], token.view(-1, 1)], dim=1)

    return [max(f, key=lambda item: item[0])[1] if f else [] for f in finished]


def _strip(ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i != PAD_ID:
            out.append(i)
    return out


__all__ = ["beam_search", "greedy_decode"]
