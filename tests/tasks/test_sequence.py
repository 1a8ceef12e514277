"""The seq2seq and language_model tasks: the loss ignores padding, perplexity is exp(loss), and the
corpus scores are sacreBLEU's."""

from __future__ import annotations

import math

import pytest
import sacrebleu
import torch

from archlab.data import TextDataset, TextSplit
from archlab.exceptions import SpecError
from archlab.tasks import corpus_bleu, corpus_chrf, direction_of, get_task, score
from archlab.text import encode_text, train_tokenizers

V = 6


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, V, generator=gen)  # (B, T, V)
    y = torch.tensor([[4, 5, 3, 0], [2, 3, 0, 0], [5, 4, 4, 3]])  # 0: padding
    return logits, y


@pytest.mark.parametrize("name", ["seq2seq", "language_model"])
def test_loss_is_the_mean_nll_of_non_pad_tokens(name: str) -> None:
    task = get_task(name)
    logits, y = _batch()
    logp = logits.log_softmax(-1)
    mask = y != 0
    manual = -(logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)[mask]).mean()
    assert task.loss()(logits, y).item() == pytest.approx(manual.item(), rel=1e-6)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), V) * 50  # whatever the model says at pads
    assert task.loss()(changed, y).item() == pytest.approx(manual.item(), rel=1e-6)
    # label smoothing: (1 - e) * nll + e * the mean over the vocabulary of -log p, on non-pad tokens
    e = 0.1
    smooth = ((1 - e) * -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1) - e * logp.mean(-1))[mask].mean()
    assert task.loss(label_smoothing=e)(logits, y).item() == pytest.approx(smooth.item(), rel=1e-6)


def test_perplexity_is_exp_of_the_loss_and_token_accuracy_counts_non_pad_positions() -> None:
    task = get_task("seq2seq")
    logits, y = _batch()
    logits[0, 0, 4] = 20.0  # right; the other rows' argmax decide the rest
    got = score(task.predictions(logits, y), ["perplexity", "token_accuracy"])
    assert got["perplexity"] == pytest.approx(math.exp(task.loss()(logits, y).item()), rel=1e-5)
    mask = y != 0
    right = (logits.argmax(-1) == y)[mask].float().mean().item()
    assert got["token_accuracy"] == pytest.approx(right)
    assert 0 < right < 1
    assert direction_of("val_perplexity", "seq2seq") == "min"
    assert direction_of("token_accuracy", "language_model") == "max"
    assert not task.stratify and task.target_dtype == "long"


def test_predictions_keep_one_value_per_position_not_the_distribution() -> None:
    logits, y = _batch()
    p = get_task("language_model").predictions(logits, y)
    assert p.scores.shape == p.labels.shape == y.shape
    assert (p.scores[y.numpy() == 0] == 0).all()


def test_check_output_wants_logits_over_the_tokenizers_vocabulary() -> None:
    ds = TextDataset("toy", "seq2seq", {"train": TextSplit(("a b", "b a"), ("x y", "y x"))}, "memory")
    enc = encode_text(ds, train_tokenizers(ds, vocab_size=12), {"source": 5, "target": 6})
    task = get_task("seq2seq")
    task.check_data(enc)
    task.check_output((6, enc.vocab_size), enc)
    with pytest.raises(SpecError, match=rf"layers: .*\(T, V\) = \(6, {enc.vocab_size}\).* output is \(6, 99\): end "
                                        rf"with dense: {{units: {enc.vocab_size}}}.*train.tokenizer.vocab_size to 99"):
        task.check_output((6, 99), enc)
    with pytest.raises(SpecError, match=r"output is \(99,\)"):
        task.check_output((99,), enc)
    with pytest.raises(TypeError, match="against encoded text"):
        task.check_output((6, 99), ds)
    with pytest.raises(SpecError, match="task language_model does not train on toy, a seq2seq data set"):
        get_task("language_model").check_data(enc)


HYP = ["The cat sat on the mat.", "A dog is running in the park!", "Two men play guitar."]
REF = ["The cat sat on the mat.", "A dog runs in a park.", "Two men are playing guitars."]


def test_bleu_and_chrf_are_sacrebleus() -> None:
    assert corpus_bleu(HYP, REF) == pytest.approx(sacrebleu.BLEU(tokenize="13a").corpus_score(HYP, [REF]).score)
    assert corpus_chrf(HYP, REF) == pytest.approx(sacrebleu.CHRF().corpus_score(HYP, [REF]).score)
    assert corpus_bleu(REF, REF) == pytest.approx(100.0)
    # by hand: n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty: their geometric mean
    assert corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert corpus_bleu([h.lower() for h in HYP], REF) < corpus_bleu(HYP, REF)  # cased
    # 13a splits punctuation off: "mat." and "mat ." are the same tokens
    assert corpus_bleu(["The cat sat on the mat ."], ["The cat sat on the mat."]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 hypotheses and 3 references"):
        corpus_bleu(HYP[:2], REF)
