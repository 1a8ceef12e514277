"""What decoding and generation share: the special ids, a hypothesis, and turning id lists into a batch."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from .._tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from ..builder import parse
from ..exceptions import ArchlabError

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "GenerationError", "Hypothesis", "as_batch", "declared_length",
           "in_eval_mode", "model_device"]

F = TypeVar("F", bound=Callable[..., Any])



class GenerationError(ArchlabError, ValueError):
    """A decoding or generation request cannot be served: a bad option, or a model without the inputs it needs."""


@dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    Attributes:
        tokens: the ids decoded, without ``<s>`` and without the closing ``</s>``.
        log_prob: the model's log-probability of ``tokens`` (and of ``</s>`` when ``finished``).
        finished: whether the model ended it with ``</s>``, rather than the length limit.
    """

    tokens: list[int]
    log_prob: float
    finished: bool

    @property
    def length(self) -> int:
        """The steps scored: the tokens, and ``</s>`` when it was decoded."""
        return len(self.tokens) + int(self.finished)

    def score(self, length_penalty: float = 1.0) -> float:
        """``log_prob / length ** length_penalty``, the rank beam search gives it (fairseq, Hugging Face):
        0 ranks by log-probability, which favours short outputs; larger values favour longer ones."""
        return self.log_prob / max(self.length, 1) ** length_penalty


def in_eval_mode(fn: F) -> F:
    """Run ``fn(model, ...)`` with the model in eval mode and without gradients, then leave the model as it
    was: dropout left on would make a decode random."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapper  # type: ignore[return-value]


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def as_batch(sequences: torch.Tensor | Sequence[Sequence[int]], device: torch.device, what: str) -> torch.Tensor:
    """A ``(B, S)`` long tensor: a tensor as given (its padding included), or id lists padded with ``<pad>``
    to the longest. Padding is left to the model to mask (pad id 0), so a batch decodes as its rows would."""
    if isinstance(sequences, torch.Tensor):
        batch = sequences.unsqueeze(0) if sequences.dim() == 1 else sequences
        if batch.dim() != 2 or batch.dtype.is_floating_point or batch.shape[1] == 0:
            raise GenerationError(f"{what}: expected a (batch, length) tensor of ids, got shape "
                                  f"{tuple(sequences.shape)} of {sequences.dtype}")
        return batch.to(device=device, dtype=torch.long)
    rows = [list(s) for s in sequences]
    if not rows:
        raise GenerationError(f"{what}: expected a list of id sequences, got none")
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise GenerationError(f"{what}[{empty[0]}] is empty: every sequence needs at least one id")
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def declared_length(model: nn.Module, name: str) -> int | None:
    """The length the spec declares for input ``name`` (``target: {shape: [T]}``): the positions the model
    was built for, so the most a decode may reach. None for a model that was not built from a spec."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return None
    inputs = parse(spec).raw_inputs
    if name not in inputs:
        raise GenerationError(f"the model takes the inputs ({', '.join(inputs)}), not '{name}': a seq2seq spec "
                              "has the inputs 'source' and 'target', a language model 'tokens' (or pass the names)")
    return inputs[name].shape[0]
