"""Generation from a decoder-only language model: greedy, or sampling with temperature, top-k and top-p."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._cache import make_step
from ._common import BOS_ID, EOS_ID, GenerationError, as_batch, declared_length, in_eval_mode, model_device

__all__ = ["filter_logits", "generate"]


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Logits ``(..., V)`` divided by ``temperature``, with the tokens that top-k and top-p drop set to -inf.

    top-k keeps the ``top_k`` likeliest tokens; top-p (nucleus, Holtzman et al. 2020) the fewest
    likeliest tokens whose probabilities sum to at least ``top_p``. Both applied: the tokens both keep.

    Example:
        >>> probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
        >>> filter_logits(probs.log(), top_p=0.75).isfinite().tolist()
        [True, True, False, False]
    """
    if not temperature > 0:
        raise GenerationError(f"temperature must be above 0 (use greedy=True for the likeliest token), got "
                              f"{temperature}")
    if top_k is not None and top_k < 1:
        raise GenerationError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the likelier ones already reach top_p; the likeliest always stays
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


@in_eval_mode
def generate(model: nn.Module, prompts: torch.Tensor | Sequence[Sequence[int]], *, max_new_tokens: int,
             greedy: bool = False, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, bos_id: int | None = BOS_ID, eos_id: int = EOS_ID,
             input_name: str = "tokens", use_cache: bool | None = None) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` ids, stopping a row at ``</s>``.

    A row sees at most the spec's ``tokens`` length: longer contexts keep their latest ids
    (nanoGPT's crop). Prompts are batched by length, so no padding reaches the model.

    Args:
        model: a language model (run in eval mode here), ``model(tokens=(B, t))`` -> ``(B, t, V)`` logits.
        prompts: id lists (or a ``(B, P)`` tensor); ``bos_id`` is put before each (training's ``<s>``),
            None leaves them as given.
        max_new_tokens: the most ids to add to each prompt.
        greedy: the likeliest token at each step instead of sampling (then the sampling options are unused).
        temperature, top_k, top_p: see ``filter_logits``.
        generator: the torch.Generator that sampling draws from (on the model's device), for
            reproducible samples; None draws from torch's global one.
        eos_id: the id that ends a row (not returned).
        input_name: the model's input.
        use_cache: run each step on the new id only, with cached keys and values: True requires it,
            False never, None (the default) where the model allows it and the context is not cropped.

    Returns:
        The new ids of each prompt, in order, without the prompt and without ``</s>``.
    """
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    filter_logits(torch.zeros(1), temperature=temperature, top_k=top_k, top_p=top_p)  # checks the options first
    device = model_device(model)
    context = declared_length(model, input_name)
    batch = as_batch(prompts, torch.device("cpu"), "prompts").tolist() if isinstance(prompts, torch.Tensor) \
        else [list(p) for p in prompts]
    as_batch(batch, device, "prompts")  # checks for empty prompts
    rows = [([bos_id] if bos_id is not None else []) + p for p in batch]
    longest = max(len(row) for row in rows)
    if use_cache and context is not None and longest + max_new_tokens > context:
        raise GenerationError(f"use_cache: {longest} prompt ids and max_new_tokens {max_new_tokens} pass the "
                              f"spec's '{input_name}' ({context} positions), so the context is cropped and "
                              "the cache cannot be kept: use_cache=False, or fewer new tokens")
    result: list[list[int]] = [[] for _ in rows]
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    for indices in by_length.values():
        tokens = torch.tensor([rows[i] for i in indices], dtype=torch.long, device=device)  # (b, P)
        fits = context is None or tokens.shape[1] + max_new_tokens <= context
        step = make_step(model, {}, input_name, use_cache if fits else False)
        done = torch.zeros(len(indices), dtype=torch.bool, device=device)
        new: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            window = tokens if context is None else tokens[:, -context:]  # (b, <= T)
            # log-probabilities differ from the logits by a constant per row: the same argmax, filters, softmax
            log_probs = step(window)  # (b, V)
            if greedy:
                token = log_probs.argmax(dim=-1)
            else:
                probs = filter_logits(log_probs, temperature=temperature, top_k=top_k, top_p=top_p).softmax(dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            token = torch.where(done, eos_id, token)
            new.append(token)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            done |= token == eos_id
            if bool(done.all()):
                break
        for i, ids in zip(indices, torch.stack(new, dim=1).tolist(), strict=True):
            result[i] = ids[: ids.index(eos_id)] if eos_id in ids else ids
    return result
