"""Sentences in, sentences out: a trained seq2seq model with its run's tokenizers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._tokens import EOS_ID
from ._seq2seq import beam_search, greedy_search

__all__ = ["translate"]


def translate(model: nn.Module, tokenizers: Any, sentences: Sequence[str], *, source_length: int,
              beam_size: int = 1, length_penalty: float = 1.0, batch_size: int = 64) -> list[str]:
    """Each sentence translated: tokenized by the source tokenizer (then ``</s>``, cut to the
    spec's ``source_length``), decoded greedily (``beam_size`` 1) or by beam search, detokenized by
    the target tokenizer.

    Sentences are batched by their token count, so that a batch holds no padding: the decoding is
    the same whether or not the model masks padded positions.
    """
    ids = [(row + [EOS_ID])[:source_length] for row in tokenizers.source.encode(list(sentences))]
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, row in enumerate(ids):
        by_length[len(row)].append(index)
    out: list[str] = [""] * len(ids)
    for members in by_length.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            source = torch.tensor([ids[i] for i in chunk], dtype=torch.long)
            found = (greedy_search(model, source) if beam_size == 1 else
                     beam_search(model, source, beam_size=beam_size, length_penalty=length_penalty))
            for i, hypothesis in zip(chunk, found, strict=True):
                out[i] = tokenizers.target.decode(hypothesis.tokens)
    return out
