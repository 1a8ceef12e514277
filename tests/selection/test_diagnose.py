"""The one-SE rule and the diagnosis on constructed result tables."""

from __future__ import annotations

import pytest

from archlab.selection import diagnose, learning_curve_answer, one_standard_error


def _rows(params, val, train, se=0.01):
    return [{"params": p, "val_mean": v, "train_mean": t, "gap": t - v, "val_se": se}
            for p, v, t in zip(params, val, train, strict=True)]


def test_one_se_picks_the_smallest_within_one_standard_error():
    rows = _rows([100, 1000, 10_000, 100_000], [0.80, 0.935, 0.95, 0.944], [0.8, 0.95, 0.99, 1.0], se=0.02)
    assert one_standard_error(rows) == 1  # 0.935 >= 0.95 - 0.02; 0.80 is not


def test_one_se_is_the_best_when_the_folds_are_tight():
    rows = _rows([100, 1000, 10_000], [0.80, 0.90, 0.95], [0.8, 0.9, 0.97], se=0.001)
    assert one_standard_error(rows) == 2


def test_one_se_orders_by_parameters_not_by_row():
    rows = _rows([10_000, 100, 1000], [0.95, 0.949, 0.80], [1, 1, 1], se=0.01)
    assert one_standard_error(rows) == 1


def test_under_fitting():
    text = diagnose(_rows([100, 1000, 10_000], [0.50, 0.60, 0.70], [0.52, 0.62, 0.72]))
    assert text.startswith("under-fitting") and "more capacity" in text


def test_over_fitting():
    text = diagnose(_rows([100, 1000, 10_000], [0.80, 0.90, 0.82], [0.82, 0.95, 1.0]))
    assert text.startswith("over-fitting") and "regularisation" in text and "more data" in text


def test_balanced():
    text = diagnose(_rows([100, 1000, 10_000], [0.80, 0.95, 0.952], [0.82, 0.97, 0.98]))
    assert text.startswith("balanced") and "stop here" in text


def test_falling_without_a_wider_gap_is_not_called_over_fitting():
    text = diagnose(_rows([100, 1000, 10_000], [0.80, 0.90, 0.70], [0.85, 0.95, 0.72]))
    assert text.startswith("inconclusive") and "train longer" in text


def test_one_configuration_says_there_is_no_curve():
    assert "no capacity curve" in diagnose(_rows([100], [0.9], [0.95]))


@pytest.mark.parametrize(("last", "expected"), [(0.95, "yes"), (0.902, "probably not")])
def test_learning_curve_answer(last, expected):
    rows = [{"train_samples": n, "val_mean": v, "val_se": 0.005} for n, v in ((100, 0.8), (200, 0.9), (400, last))]
    assert learning_curve_answer(rows).startswith(expected)
