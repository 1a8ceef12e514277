"""Losses and metrics against scikit-learn (the oracle) on random logits and targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from archlab.training import compute_metrics, make_loss

N, C = 300, 7


@pytest.fixture(params=[0, 1, 2])
def logits_and_targets(request: pytest.FixtureRequest) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(request.param)
    logits = torch.randn(N, C, generator=gen) * 2
    targets = torch.randint(0, C, (N,), generator=gen)
    logits[torch.arange(N), targets] += 1.0  # better than chance, so the metrics are not all near 1/C
    return logits, targets


def test_accuracy_and_macro_f1(logits_and_targets: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = logits_and_targets
    got = compute_metrics(logits, y, 0.5, "cross_entropy", ["accuracy", "macro_f1"])
    pred = logits.argmax(1).numpy()
    assert got["loss"] == 0.5
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y.numpy(), pred), abs=1e-6)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y.numpy(), pred, average="macro"), abs=1e-9)
    assert 0.2 < got["accuracy"] < 0.9  # a non-trivial case


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy(logits_and_targets: tuple[torch.Tensor, torch.Tensor], k: int) -> None:
    logits, y = logits_and_targets
    got = compute_metrics(logits, y, 0.0, "cross_entropy", ["top_k_accuracy"], top_k=k)
    expected = skm.top_k_accuracy_score(y.numpy(), logits.numpy(), k=k, labels=np.arange(C))
    assert set(got) == {"loss", f"top_{k}_accuracy"}
    assert got[f"top_{k}_accuracy"] == pytest.approx(expected, abs=1e-6)


def test_top_k_is_capped_at_the_number_of_classes(logits_and_targets: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = logits_and_targets
    got = compute_metrics(logits, y, 0.0, "cross_entropy", ["top_k_accuracy"], top_k=50)
    assert got == {"loss": 0.0, f"top_{C}_accuracy": 1.0}


def test_only_the_asked_metrics(logits_and_targets: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = logits_and_targets
    assert set(compute_metrics(logits, y, 1.0, "cross_entropy", [])) == {"loss"}


def test_macro_f1_ignores_classes_absent_from_targets_and_predictions() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(200, C, generator=gen)
    logits[:, C - 1] = -100.0  # never predicted
    y = torch.randint(0, C - 2, (200,), generator=gen)  # classes C-2 (predicted, never true) and C-1 absent
    pred = logits.argmax(1).numpy()
    assert (C - 2) in pred and (C - 1) not in pred
    got = compute_metrics(logits, y, 0.0, "cross_entropy", ["macro_f1"])["macro_f1"]
    with np.errstate(all="ignore"):
        expected = skm.f1_score(y.numpy(), pred, average="macro", zero_division=0)
    assert got == pytest.approx(expected, abs=1e-9)


def test_cross_entropy_on_logits(logits_and_targets: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = logits_and_targets
    loss = make_loss("cross_entropy")(logits, y)
    probs = torch.softmax(logits.double(), 1).numpy()
    assert loss.item() == pytest.approx(skm.log_loss(y.numpy(), probs, labels=np.arange(C)), rel=1e-5)


def test_cross_entropy_with_label_smoothing(logits_and_targets: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, y = logits_and_targets
    eps = 0.1
    logp = torch.log_softmax(logits.double(), 1)
    by_hand = ((1 - eps) * -logp[torch.arange(N), y] + eps * -logp.mean(1)).mean().item()
    assert make_loss("cross_entropy", eps)(logits, y).item() == pytest.approx(by_hand, rel=1e-5)


def test_binary_cross_entropy_with_logits() -> None:
    gen = torch.Generator().manual_seed(1)
    out = torch.randn(N, 1, generator=gen) * 3  # the model's (N, 1) logits
    y = torch.randint(0, 2, (N,), generator=gen).float()
    loss = make_loss("binary_cross_entropy")(out, y)
    p = torch.sigmoid(out.double()).numpy()[:, 0]
    assert loss.item() == pytest.approx(skm.log_loss(y.numpy(), p), rel=1e-5)
    got = compute_metrics(out, y, loss.item(), "binary_cross_entropy", ["accuracy"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y.numpy(), p > 0.5), abs=1e-6)


def test_mse_and_mae() -> None:
    gen = torch.Generator().manual_seed(2)
    out = torch.randn(N, 3, generator=gen)
    y = torch.randn(N, 3, generator=gen)
    loss = make_loss("mse")(out, y)
    assert loss.item() == pytest.approx(skm.mean_squared_error(y.numpy(), out.numpy()), rel=1e-5)
    got = compute_metrics(out, y, loss.item(), "mse", ["mse", "mae"])
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y.numpy(), out.numpy()), rel=1e-5)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y.numpy(), out.numpy()), rel=1e-5)
    # a single regression target: the model's (N, 1) against (N,) targets
    flat = make_loss("mse")(out[:, :1], y[:, 0]).item()
    assert flat == pytest.approx(skm.mean_squared_error(y[:, 0].numpy(), out[:, 0].numpy()), rel=1e-5)


def test_no_confusion_matrix_of_its_own() -> None:
    # evaluation's confusion matrix is scikit-learn's (tasks/_builtin.py); a second one was dead code
    import archlab.training

    assert "confusion_matrix" not in archlab.training.__all__ and not hasattr(archlab.training, "confusion_matrix")
