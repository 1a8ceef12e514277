"""Turning trained sequence models into token ids: decoding for seq2seq models and generation
for language models.

A seq2seq model here is a graph-form spec with the long inputs ``source`` and ``target`` (the
decoder input, ``<s>`` then the tokens so far) and logits ``(T, V)`` as its output; a language
model has one long input ``tokens``. Any such model decodes as a black box, called on the whole
prefix at each step; where its layers allow, the key/value cache (``use_cache``) runs each step on
the new id only instead, with the same tokens.
Special ids are the project's: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3.

Example:
    >>> import archlab, torch
    >>> from archlab.generation import greedy_search
    >>> spec = {"inputs": {"source": {"shape": [5], "dtype": "long"}, "target": {"shape": [6], "dtype": "long"}},
    ...         "graph": {"enc": {"from": "source", "layers": [{"embedding": {"input_dim": 9, "output_dim": 8}},
    ...                            {"transformer_encoder": {"num_heads": 2, "ff_dim": 16, "dropout": 0}}]},
    ...                   "emb": {"from": "target", "layers": [{"embedding": {"input_dim": 9, "output_dim": 8}},
    ...                            {"positional_embedding": {"max_len": 6}}]},
    ...                   "dec": {"from": ["emb", "enc"], "layers": [
    ...                       {"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "dropout": 0, "causal": True}},
    ...                       {"dense": {"units": 9}}]}},
    ...         "outputs": "dec"}
    >>> model = archlab.build(spec).eval()
    >>> [len(h.tokens) <= 6 for h in greedy_search(model, [[4, 5, 6], [7, 8, 4]])]
    [True, True]
"""

from ._common import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Hypothesis
from ._lm import filter_logits, generate
from ._seq2seq import Step, beam_decode, beam_search, greedy_decode, greedy_search
from ._translate import translate

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "Hypothesis", "Step", "beam_decode", "beam_search", "filter_logits",
           "generate", "greedy_decode", "greedy_search", "translate"]
