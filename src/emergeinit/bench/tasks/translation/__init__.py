"""The translation task of the benchmark: an encoder-decoder transformer trained on the built-in
English->German number corpus or on users' parallel text (IWSLT'14 De-En), scored with
sacreBLEU, tokenized BLEU and chrF. See docs/translation.md.

Data: ``corpus`` (the built-in corpus), ``parallel`` (users' files, BPE undo), ``tokenizer``
(sentencepiece or the files' own tokens, cached), ``data`` (settings -> token ids).
Training: ``train`` (the loop), ``decode`` (greedy, beam), ``metrics`` (scores).
Harness: ``schema`` (config keys and rules, preflight), ``task`` (the :class:`TranslationTask`
the registry holds), ``report``, ``plots``.
"""

from .task import TranslationTask

__all__ = ["TranslationTask"]
