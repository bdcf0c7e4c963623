"""The translation task of the benchmark (issue 5): an encoder-decoder transformer trained on
the built-in English->German number corpus or on users' parallel text (IWSLT'14 De-En), scored
with sacreBLEU, tokenized BLEU and chrF. See docs/translation.md.

Modules: ``corpus`` (built-in data), ``parallel`` (users' files, BPE undo), ``tokenizer``
(sentencepiece, cached), ``train`` (the loop), ``decode`` (greedy, beam), ``metrics`` (scores).
"""
