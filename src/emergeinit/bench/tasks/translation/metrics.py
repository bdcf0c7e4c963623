"""Translation scores: sacreBLEU, tokenized BLEU and chrF, all computed by sacrebleu.

Three numbers, because published BLEU scores are not one kind:

* ``bleu`` -- sacreBLEU proper: corpus BLEU on *detokenized* text with sacreBLEU's own
  ``13a`` tokenizer. Comparable across papers and tools.
* ``bleu_tok`` -- "tokenized BLEU" as ``multi-bleu.perl`` and fairseq's ``fairseq-generate``
  print it: corpus BLEU on the data's *own tokenization* (after undoing BPE), splitting on
  whitespace only (sacrebleu ``tokenize="none"``). We use ``"none"`` rather than ``"13a"`` on
  the tokenized text because ``13a`` would re-tokenize already Moses-tokenized text (e.g. split
  ``&apos;s`` entities and hyphens differently), giving neither number.
* ``chrf`` -- chrF2 on detokenized text (character n-grams; partial credit within words).

The paper's IWSLT'14 De-En result (BLEU 35.13 vs 34.85) is most likely ``bleu_tok``: the
standard preparation lowercases and Moses-tokenizes the references, fairseq scores its output
against them after ``--remove-bpe``, and transformer_iwslt_de_en lands near 34-35 that way,
while sacreBLEU against detokenized, lowercased text usually reads about a point lower.
The two are not comparable; compare our ``bleu_tok`` with the paper.

All three are corpus-level and on the 0-100 scale, as sacrebleu reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ....errors import ConfigError
from .parallel import undo_bpe


@dataclass(frozen=True)
class Scores:
    """Corpus-level scores, 0-100."""

    bleu: float
    bleu_tok: float
    chrf: float

    def as_dict(self) -> dict[str, float]:
        return {"bleu": self.bleu, "bleu_tok": self.bleu_tok, "chrf": self.chrf}


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    bpe: bool = False,
    detokenize: Callable[[str], str] | None = None,
) -> Scores:
    """Score ``hypotheses`` against one reference each.

    Args:
        hypotheses, references: line-aligned, in the data's own form (tokenized, maybe BPE).
        bpe: undo ``@@ `` subwords in both first (see :func:`parallel.undo_bpe`).
        detokenize: turns the data's tokenized text into plain text for ``bleu`` and ``chrf``;
            ``None`` when the data is plain text already (the built-in corpus), in which case
            ``bleu_tok`` is whitespace BLEU on that same text.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ConfigError(
            f"got {len(hypotheses)} hypotheses for {len(references)} references."
        )
    if not references:
        raise ConfigError("cannot score an empty test set.")
    hyps = [undo_bpe(h) if bpe else h for h in hypotheses]
    refs = [undo_bpe(r) if bpe else r for r in references]
    tokenized = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True)
    if detokenize is not None:
        hyps, refs = [detokenize(h) for h in hyps], [detokenize(r) for r in refs]
    plain = sacrebleu.corpus_bleu(hyps, [refs])
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return Scores(bleu=float(plain.score), bleu_tok=float(tokenized.score), chrf=float(chrf.score))


def moses_detokenizer(lang: str) -> Callable[[str], str]:
    """A Moses detokenizer for ``lang`` (sacremoses), which undoes the IWSLT'14 preparation's
    tokenizer. Raises :class:`ConfigError` before any run starts when sacremoses is missing."""
    try:
        from sacremoses import MosesDetokenizer
    except ImportError:
        raise ConfigError(
            "scoring tokenized data (data.tokenized=true, or BPE detected) needs sacremoses to "
            "detokenize for sacreBLEU: pip install sacremoses, or set data.tokenized=false to "
            "score the text as it is."
        ) from None
    detok = MosesDetokenizer(lang=lang)
    return lambda line: str(detok.detokenize(line.split()))


__all__ = ["Scores", "moses_detokenizer", "score"]
