"""Greedy and beam search over a seq2seq model, batched over sentences and beams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from ._cache import make_step
from ._common import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    GenerationError,
    Hypothesis,
    as_batch,
    declared_length,
    in_eval_mode,
    model_device,
)

__all__ = ["Step", "beam_decode", "beam_search", "greedy_decode", "greedy_search"]


class Step(Protocol):
    """What the decode loops call: the next token's log-probabilities ``(R, V)`` for the prefixes
    ``(R, t)`` (``<s>`` first), and ``reorder(rows)`` to keep (and repeat) rows as beams go on."""

    def __call__(self, ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, rows: torch.Tensor) -> None: ...


def _setup(model: nn.Module, source, max_len: int | None, source_name: str, target_name: str):
    source = as_batch(source, model_device(model), "source")
    limit = declared_length(model, target_name)
    declared_length(model, source_name)  # checks the name
    if max_len is None:
        max_len = limit
        if max_len is None:
            raise GenerationError("max_len: give the most tokens to decode (the model has no spec to read "
                                  f"the length of '{target_name}' from)")
    if max_len < 1:
        raise GenerationError(f"max_len must be at least 1, got {max_len}")
    if limit is not None and max_len > limit:
        raise GenerationError(f"max_len {max_len} is longer than the spec's '{target_name}' ({limit} positions): "
                              f"decode at most {limit} tokens, or build the model with a longer '{target_name}'")
    return source, max_len


@in_eval_mode
def greedy_search(model: nn.Module, source: torch.Tensor | Sequence[Sequence[int]], *, max_len: int | None = None,
                  bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID, source_name: str = "source",
                  target_name: str = "target", use_cache: bool | None = None) -> list[Hypothesis]:
    """The most likely next token at every step, for a batch of source sentences at once.

    Args:
        model: a seq2seq model (run in eval mode here): ``model(source=(B, S), target=(B, t))`` -> ``(B, t, V)``.
        source: ``(B, S)`` ids (padded with ``pad_id``, which the model masks), or id lists (padded here).
        max_len: the most tokens to decode, ``</s>`` included; by default the length of the spec's
            ``target``.
        bos_id, eos_id, pad_id: the special ids (the project's by default).
        source_name, target_name: the model's input names.
        use_cache: run the encoder once and each step on the new id only, with cached keys and
            values (``archlab.generation._cache``): True requires it, False never, None (the
            default) where the model allows it (padded sources included). Same tokens.

    Returns:
        One ``Hypothesis`` per sentence, in order.
    """
    source, max_len = _setup(model, source, max_len, source_name, target_name)
    step = make_step(model, {source_name: source}, target_name, use_cache)
    return greedy_decode(step, source.shape[0], max_len, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                         device=source.device)


def greedy_decode(step: Step, batch: int, max_len: int, *, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                  pad_id: int = PAD_ID, device: torch.device | str = "cpu") -> list[Hypothesis]:
    """``greedy_search``'s loop over any step: a PyTorch model's (``greedy_search``) or an exported
    decoder's in ONNX Runtime (``archlab.deploy.onnx_greedy_decode``), so both decode alike."""
    target = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)  # (B, 1 + t)
    log_prob = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(max_len):
        log_probs = step(target)  # (B, V)
        token = log_probs.argmax(dim=-1)  # (B,)
        log_prob += torch.where(done, 0.0, log_probs.gather(1, token[:, None]).squeeze(1))
        # a sentence that has ended reads <pad> from then on; the causal decoder never looks back at it
        token = torch.where(done, pad_id, token)
        target = torch.cat([target, token[:, None]], dim=1)
        done |= token == eos_id
        if bool(done.all()):
            break
    result = []
    for ids, lp, ended in zip(target[:, 1:].tolist(), log_prob.tolist(), done.tolist(), strict=True):
        result.append(Hypothesis(ids[: ids.index(eos_id)] if ended else ids, lp, ended))
    return result


def _done(finished: list[Hypothesis], extensions: list[tuple[int, int, float]], beam_size: int, length: int,
          max_len: int, alpha: float, early_stopping: bool) -> bool:
    """Whether a sentence's search can end: its beams would not change its ``beam_size`` best."""
    if not extensions:
        return True
    if len(finished) < beam_size:
        return False
    if early_stopping:
        return True
    kth_best = sorted((h.score(alpha) for h in finished), reverse=True)[beam_size - 1]
    # a log-probability only falls as a beam grows; dividing it (<= 0) by the largest length**alpha
    # the beam can still reach bounds its final score from above
    best_live = extensions[0][2]  # extensions come best first
    return kth_best >= best_live / (max_len if alpha > 0 else length) ** alpha


@in_eval_mode
def beam_search(model: nn.Module, source: torch.Tensor | Sequence[Sequence[int]], *, beam_size: int = 4,
                max_len: int | None = None, length_penalty: float = 1.0, early_stopping: bool = True,
                bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID, source_name: str = "source",
                target_name: str = "target", use_cache: bool | None = None) -> list[Hypothesis]:
    """Beam search for a batch of source sentences, ranking hypotheses as fairseq and Hugging Face do.

    Each step extends every live beam by every token and keeps the ``beam_size`` best extensions
    that do not end; an extension that ends with ``</s>`` (among the ``beam_size`` best) becomes a
    finished hypothesis. With ``early_stopping`` a sentence stops once it has ``beam_size`` finished
    hypotheses (fairseq's rule, Hugging Face's ``early_stopping=True``); without, only once no live
    beam can still score above the ``beam_size``-th best of them (Hugging Face's ``"never"``), which
    finds the longer outputs a positive length penalty prefers. Every sentence stops at ``max_len``,
    where its live beams count as unfinished hypotheses. The best is the one of highest
    ``score(length_penalty)``: ``log_prob / length ** length_penalty``. ``beam_size=1`` is greedy search.

    Args:
        model, source, max_len, bos_id, eos_id, pad_id, source_name, target_name, use_cache: as for
            ``greedy_search``.
        beam_size: the beams kept per sentence.
        length_penalty: the exponent alpha of the length in the score (0: plain log-probability).
        early_stopping: stop a sentence at ``beam_size`` finished hypotheses (faster), rather than
            when none of its live beams can beat them.

    Returns:
        The best ``Hypothesis`` per sentence, in order.
    """
    source, max_len = _setup(model, source, max_len, source_name, target_name)
    step = make_step(model, {source_name: source}, target_name, use_cache)
    return beam_decode(step, source.shape[0], max_len, beam_size=beam_size, length_penalty=length_penalty,
                       early_stopping=early_stopping, bos_id=bos_id, eos_id=eos_id, device=source.device)


def beam_decode(step: Step, batch: int, max_len: int, *, beam_size: int = 4, length_penalty: float = 1.0,
                early_stopping: bool = True, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                device: torch.device | str = "cpu") -> list[Hypothesis]:
    """``beam_search``'s loop over any step (see ``greedy_decode``); the step keeps the rows that
    ``reorder`` names, as the beams go on."""
    if beam_size < 1:
        raise GenerationError(f"beam_size must be at least 1, got {beam_size}")
    # live beams, flattened: row r belongs to sentence sentence[r]; only one beam per sentence at the start,
    # so that the first step does not pick the same token beam_size times
    sentence = torch.arange(batch, device=device)
    target = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)  # (R, 1 + t)
    beam_lp = torch.zeros(batch, device=device)  # (R,)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for length in range(1, max_len + 1):  # the tokens of each extension
        log_probs = step(target) + beam_lp[:, None]  # (R, V): the extensions' log-probabilities
        vocab = log_probs.shape[1]
        keep_rows, keep_tokens, keep_lp = [], [], []
        starts = torch.searchsorted(sentence, torch.arange(batch + 1, device=device)).tolist()
        for b in range(batch):
            first, last = starts[b], starts[b + 1]
            if first == last:
                continue  # this sentence is done
            candidates = log_probs[first:last].flatten()  # (beams * V,)
            top_lp, top = candidates.topk(min(2 * beam_size, candidates.numel()))
            extensions = []  # (row, token, log_prob) of this sentence's next beams
            for rank, (lp, index) in enumerate(zip(top_lp.tolist(), top.tolist(), strict=True)):
                row, token = first + index // vocab, index % vocab
                if token == eos_id:
                    if rank < beam_size:
                        finished[b].append(Hypothesis(target[row, 1:].tolist(), lp, True))
                elif len(extensions) < beam_size:
                    extensions.append((row, token, lp))
            if not _done(finished[b], extensions, beam_size, length, max_len, length_penalty, early_stopping):
                for row, token, lp in extensions:
                    keep_rows.append(row)
                    keep_tokens.append(token)
                    keep_lp.append(lp)
        if not keep_rows:
            break
        rows = torch.tensor(keep_rows, device=device)
        step.reorder(rows)
        sentence = sentence[rows]
        target = torch.cat([target[rows], torch.tensor(keep_tokens, device=device)[:, None]], dim=1)
        beam_lp = torch.tensor(keep_lp, device=device)
    else:
        for b, ids, lp in zip(sentence.tolist(), target[:, 1:].tolist(), beam_lp.tolist(), strict=True):
            finished[b].append(Hypothesis(ids, lp, False))
    return [max(hypotheses, key=lambda h: h.score(length_penalty)) for hypotheses in finished]
