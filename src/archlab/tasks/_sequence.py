"""The sequence task kinds: seq2seq (translation, teacher forcing) and language_model (next token).

Both score logits ``(N, T, V)`` against targets ``(N, T)`` (the next token at each position, 0 at
padding, ``archlab.text``): token-level cross-entropy that ignores padding, with label smoothing.
Per epoch they record token accuracy and perplexity; translation quality (BLEU, chrF) needs decoded
text, so ``corpus_bleu`` and ``corpus_chrf`` are functions on strings that evaluation calls after
decoding, not registry metrics (a registry metric computes from one split's arrays).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from archlab._inputs import fmt_shape
from archlab._tokens import PAD_ID  # ignored by the loss and the metrics
from archlab.exceptions import SpecError

from ._metrics import Predictions, register_metric
from ._registry import TaskKind, register_task

if TYPE_CHECKING:  # see _registry.py: importing the registry loads no heavy library
    import numpy as np
    import torch

__all__ = ["LanguageModel", "Seq2Seq", "corpus_bleu", "corpus_chrf", "token_loss"]

_PREDICT_ROWS = 256  # log-softmax over (rows, T, V) at a time: a test split's full (N, T, V) copy can be GBs


def token_loss(label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean cross-entropy over the non-pad tokens of logits ``(B, T, V)`` and targets ``(B, T)``."""
    import torch.nn.functional as F

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=PAD_ID,
                               label_smoothing=label_smoothing)

    return loss


@register_metric("token_accuracy", "max", ("seq2seq", "language_model"),
                 "fraction of non-pad positions whose most probable token is the target")
def _token_accuracy(p: Predictions, top_k: int) -> float:
    mask = p.y_true != PAD_ID
    count = int(mask.sum())
    return float((p.labels[mask] == p.y_true[mask]).sum() / count) if count else math.nan


@register_metric("perplexity", "min", ("seq2seq", "language_model"),
                 "exp of the mean negative log-likelihood of the non-pad target tokens (no label smoothing)")
def _perplexity(p: Predictions, top_k: int) -> float:
    mask = p.y_true != PAD_ID
    count = int(mask.sum())
    return math.exp(-float(p.scores[mask].astype("float64").sum()) / count) if count else math.nan


class _TokenTask(TaskKind):
    """What seq2seq and language_model share: the loss, the checks and the per-token predictions."""

    target_dtype = "long"
    default_metrics = ("perplexity", "token_accuracy")
    evaluation_metrics = ("perplexity", "token_accuracy")
    stratify = False  # targets are sequences, not classes to keep in proportion
    inputs: tuple[str, ...] = ()

    def loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return token_loss(label_smoothing)

    def check_output(self, shape: tuple[int, ...], dataset: Any) -> None:
        """``dataset`` is the encoded text (``archlab.text.EncodedText``): its tokenizer gives V."""
        if not hasattr(dataset, "vocab_size"):  # a caller's mistake, not the user's: say what to pass
            raise TypeError(f"task {self.name} checks the output against encoded text (archlab.text.encode_text), "
                            f"not {type(dataset).__name__}")
        vocab, length = dataset.vocab_size, dataset.splits["train"].y.shape[1]
        if shape != (length, vocab):
            raise SpecError(f"task {self.name} needs logits (T, V) = ({length}, {vocab}), one score per position of "
                            f"the {length}-token input and token of the tokenizer's {vocab}, but the model's output is "
                            f"{fmt_shape(shape)}: end with dense: {{units: {vocab}}} (no activation)"
                            + (f", or set train.tokenizer.vocab_size to {shape[-1]} and train again"
                               if len(shape) == 2 and shape[0] == length else ""), "layers")

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(dim=-1)

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return scores.argmax(axis=-1)

    def predictions(self, out: torch.Tensor, y: torch.Tensor) -> Predictions:
        """Per position: the log-probability of the true token as ``scores`` (0 at padding) and the most
        probable token as ``labels``, both ``(N, T)``; never the whole ``(N, T, V)`` distribution."""
        import torch

        logp, best = [], []
        for start in range(0, len(out), _PREDICT_ROWS):
            chunk = out[start:start + _PREDICT_ROWS].detach().float().log_softmax(dim=-1)  # (rows, T, V)
            target = y[start:start + _PREDICT_ROWS].to(chunk.device)  # (rows, T)
            picked = chunk.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (rows, T)
            logp.append(picked.masked_fill(target == PAD_ID, 0.0).cpu())
            best.append(chunk.argmax(dim=-1).cpu())
        y_true = y.detach().cpu().numpy()
        return Predictions(y_true, torch.cat(logp).numpy(), torch.cat(best).numpy())

    def describe_prediction(self, scores: np.ndarray, classes: list[str], top: int) -> dict[str, Any]:
        return {"tokens": scores.argmax(axis=-1).tolist()}


@register_task("seq2seq")
class Seq2Seq(_TokenTask):
    """Sequence to sequence (translation): inputs ``source`` and ``target`` (the decoder's input, ``<s>``
    first), logits ``(T, V)``, the target tokens then ``</s>`` as targets."""

    summary = "sequence to sequence (translation): token cross-entropy on (T, V) logits, pads ignored"
    loss_name = "token_cross_entropy"
    data_tasks = ("seq2seq",)
    inputs = ("source", "target")

    def target_input(self, inputs: dict[str, tuple[int, ...]]) -> str | None:
        return "target" if "target" in inputs else None

    def decoded_metrics(self, model: Any, dataset: Any, split: str, **options: Any) -> dict[str, float]:
        """sacreBLEU (13a, cased, on detokenized output) and chrF2 of the split's translations,
        decoded greedily or with ``beam_size`` (``archlab.generation.translate``)."""
        from archlab.generation import translate

        corpus = dataset.corpus.splits[split]
        source_length = dataset.splits[split].inputs["source"].shape[1]
        hypotheses = translate(model, dataset.tokenizers, corpus.source, source_length=source_length, **options)
        references = list(corpus.target)
        return {"bleu": corpus_bleu(hypotheses, references), "chrf": corpus_chrf(hypotheses, references)}

    text_options = ("beam_size",)

    def predict_text(self, model: Any, tokenizers: Any, sentences: list[str], parsed: Any,
                     **options: Any) -> list[dict[str, Any]]:
        from archlab.generation import translate

        source_length = parsed.raw_inputs["source"].shape[0]
        return [{"source": s, "translation": t} for s, t in
                zip(sentences, translate(model, tokenizers, sentences, source_length=source_length, **options),
                    strict=True)]


@register_task("language_model")
class LanguageModel(_TokenTask):
    """Next-token prediction: input ``tokens`` (``<s>`` first), logits ``(T, V)``, the next token as target."""

    summary = "next-token prediction: token cross-entropy on (T, V) logits, pads ignored; perplexity"
    loss_name = "next_token_cross_entropy"
    data_tasks = ("language_model",)
    inputs = ("tokens",)

    def target_input(self, inputs: dict[str, tuple[int, ...]]) -> str | None:
        """The one input, whatever its name (the sequential form calls it ``input``), as training reads it."""
        return next(iter(inputs)) if len(inputs) == 1 else None

    text_options = ("max_new_tokens", "greedy", "temperature", "top_k", "top_p", "seed")

    def predict_text(self, model: Any, tokenizers: Any, sentences: list[str], parsed: Any, *,
                     max_new_tokens: int = 20, greedy: bool = False, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None,
                     seed: int | None = None) -> list[dict[str, Any]]:
        """Each prompt continued by ``archlab.generation.generate``: sampled (temperature, top-k,
        top-p; ``seed`` makes it reproducible), or the likeliest token at each step when ``greedy``
        or ``temperature`` is 0. ``text`` is the prompt and its continuation detokenized together,
        so the words join as the tokenizer splits them."""
        import torch

        from archlab.generation import generate

        tokenizer = tokenizers.target
        prompts = tokenizer.encode(sentences)
        empty = [s for s, ids in zip(sentences, prompts, strict=True) if not ids]
        if empty:
            raise SpecError(f"prompt {empty[0]!r} has no tokens: give each prompt some text")
        generator = None
        if seed is not None and not (greedy or temperature == 0):
            generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        new = generate(model, prompts, max_new_tokens=max_new_tokens, greedy=greedy or temperature == 0,
                       temperature=temperature or 1.0, top_k=top_k, top_p=top_p, generator=generator,
                       input_name=next(iter(parsed.raw_inputs)))
        return [{"prompt": s, "continuation": tokenizer.decode(ids), "text": tokenizer.decode(p + ids)}
                for s, p, ids in zip(sentences, prompts, new, strict=True)]


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"a corpus score pairs each hypothesis with its reference; got {len(hypotheses)} "
                         f"hypotheses and {len(references)} references")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU (13a tokenization, cased) of detokenized hypotheses against one reference each, 0-100.

    Example:
        >>> round(corpus_bleu(["a cat sat on the mat"], ["a cat sat on the mat"]), 1)
        100.0
    """
    import sacrebleu  # imported when scoring, like scikit-learn in _metrics.py

    _check_corpus(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="13a",
                                       lowercase=False).score)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """chrF2 (character 6-grams, beta 2, sacreBLEU's defaults) against one reference each, 0-100."""
    import sacrebleu

    _check_corpus(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)], char_order=6, word_order=0,
                                       beta=2).score)
