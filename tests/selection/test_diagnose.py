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


# -- a sweep of one regularization knob --------------------------------------------------------
def _sweep(path, values, val, train, se=0.01):
    return [{"values": {path: x}, "params": 1000, "val_mean": v, "train_mean": t, "gap": t - v, "val_se": se}
            for x, v, t in zip(values, val, train, strict=True)]


AUGMENT = "train.augment: [shift, rotate]"
WIDER = "layers[0].conv2d.filters x2 (8 -> 16)"


@pytest.mark.parametrize(("path", "label"), [
    ("train.weight_decay", "weight decay"), ("train.optimizer.weight_decay", "weight decay"),
    ("train.label_smoothing", "label smoothing"), ("train.max_norm", "max-norm"),
    ("layers[2].residual.drop_path", "stochastic depth"), ("layers[3].dropout.rate", "dropout rate"),
    ("layers[1].spatial_dropout.rate", "spatial_dropout rate"),
    ("layers[0].multi_head_attention.dropout", "multi_head_attention dropout"),
    ("train.augment", "augmentation"), ("train.modality_dropout.p", "modality dropout"),
    ("layers[0].transformer_block.dropout", "transformer_block dropout"),
    ("graph.img.layers[2].dropout.rate", "dropout rate")])
def test_regularization_paths_are_recognised(path, label):
    from archlab.selection import regularizer_of

    assert regularizer_of(path).label == label


@pytest.mark.parametrize("path", ["layers[0].conv2d.filters", "train.epochs", "layers[2].repeat.times", "train.lr",
                                  "layers[1].dense.units", "train.modality_dropout.mode", "drop1.rate"])
def test_other_paths_are_not_regularization(path):
    from archlab.selection import regularizer_of

    assert regularizer_of(path) is None


def test_a_layer_parameter_is_regularization_by_its_types_trait(monkeypatch):
    from archlab.layers import get_layer
    from archlab.selection import regularizer_of

    monkeypatch.setattr(type(get_layer("dense")), "regularization", "units")  # as a plugin layer would declare it
    assert regularizer_of("layers[1].dense.units").label == "dense units"
    assert regularizer_of("layers[1].dense.activation") is None


def test_over_fitting_cured_by_the_strongest_decay_says_raise_it_further():
    from archlab.selection import diagnose_regularization

    rows = _sweep("train.weight_decay", [1e-3, 0, 1e-4], [0.95, 0.90, 0.93], [0.97, 0.98, 0.98])  # rows in any order
    text = diagnose_regularization(rows, "train.weight_decay", capacity=WIDER, augment=AUGMENT)
    assert text == ("over-fitting: the gap is +0.080 at train.weight_decay 0; weight decay helps: validation accuracy "
                    "0.900 -> 0.950 at 0.001 (the best), and the gap went +0.080 -> +0.020 (it shrank). Next move: set "
                    "train.weight_decay to 0.001; it is the strongest tried, so sweep further "
                    "(train.weight_decay=0.001,0.01), or add augmentation: train.augment: [shift, rotate].")


def test_over_fitting_with_the_best_in_the_middle_names_it_and_what_is_as_good():
    from archlab.selection import diagnose_regularization

    rows = _sweep("layers[3].dropout.rate", [0.0, 0.2, 0.3, 0.5], [0.90, 0.95, 0.945, 0.91],
                  [0.99, 0.99, 0.98, 0.92], se=0.01)
    text = diagnose_regularization(rows, "layers[3].dropout.rate", augment=AUGMENT)
    assert text.startswith("over-fitting: the gap is +0.090 at layers[3].dropout.rate 0; dropout rate helps: "
                           "validation accuracy 0.900 -> 0.950 at 0.2 (the best; as good within one standard error: "
                           "0.3)")
    assert text.endswith("Next move: set layers[3].dropout.rate to 0.2, or add augmentation: train.augment: "
                         "[shift, rotate].")


def test_under_fitting_says_less_regularization_or_a_wider_layer():
    from archlab.selection import diagnose_regularization

    rows = _sweep("train.label_smoothing", [0.0, 0.1, 0.3], [0.80, 0.78, 0.70], [0.81, 0.78, 0.70])
    text = diagnose_regularization(rows, "train.label_smoothing", capacity=WIDER)
    assert text == ("under-fitting: more label smoothing only lowers validation accuracy (0.800 at "
                    "train.label_smoothing 0 -> 0.700 at 0.3) and the gap is +0.010. Next move: less regularization "
                    "(train.label_smoothing 0), or more capacity: layers[0].conv2d.filters x2 (8 -> 16).")


def test_max_norm_reads_a_smaller_bound_as_stronger():
    from archlab.selection import diagnose_regularization

    rows = _sweep("train.max_norm", [1.0, None, 4.0], [0.93, 0.90, 0.91], [0.95, 0.99, 0.98])
    text = diagnose_regularization(rows, "train.max_norm")
    assert "the gap is +0.090 at train.max_norm none" in text and "0.900 -> 0.930 at 1 (the best)" in text
    assert "sweep further (train.max_norm=1,0.5), or more data." in text


def test_a_knob_that_moves_validation_within_noise_reads_the_gap():
    from archlab.selection import diagnose_regularization

    narrowed = _sweep("train.weight_decay", [0, 1e-4], [0.900, 0.902], [0.99, 0.95])
    text = diagnose_regularization(narrowed, "train.weight_decay", capacity=WIDER)
    assert text.startswith("balanced: weight decay narrows the gap (+0.090 at train.weight_decay 0 -> +0.048 at "
                           "0.0001)")
    assert text.endswith(f"Next move: more capacity: {WIDER}, or keep train.weight_decay at 0.0001.")
    unmoved = _sweep("train.weight_decay", [0, 1e-4], [0.900, 0.902], [0.93, 0.932])
    text = diagnose_regularization(unmoved, "train.weight_decay", capacity=WIDER)
    assert text.startswith("no effect: over train.weight_decay 0 .. 0.0001 validation accuracy stays within noise")
    assert ("the values tried are too weak to matter. Next move: sweep stronger values "
            "(train.weight_decay=0.0001,0.001)") in text and f"more capacity: {WIDER}, or train longer." in text


def test_a_minimised_metric_is_read_the_other_way():
    from archlab.selection import diagnose_regularization

    # RMSE: lower is better; the gap (train - val) is negative when training fits better
    rows = _sweep("train.weight_decay", [0, 1e-3], [0.50, 0.40], [0.20, 0.30])
    text = diagnose_regularization(rows, "train.weight_decay", "min", "rmse")
    assert text.startswith("over-fitting") and "validation rmse 0.500 -> 0.400 at 0.001" in text


def test_capacity_advice_names_what_to_set():
    under = diagnose(_rows([100, 1000, 10_000], [0.50, 0.60, 0.70], [0.52, 0.62, 0.72]),
                     capacity="layers[0].conv2d.filters above 32")
    assert "Next move: more capacity (layers[0].conv2d.filters above 32)" in under
    over = diagnose(_rows([100, 1000, 10_000], [0.80, 0.90, 0.82], [0.82, 0.95, 1.0]), regularize=AUGMENT)
    assert "more regularisation (train.augment: [shift, rotate])" in over


ADAM_NOTE = (" with train.optimizer.name: adamw (under adam, weight_decay is an L2 term in the gradient, "
             "not decoupled decay)")


@pytest.mark.parametrize(("optimizer", "note"), [("adam", ADAM_NOTE), ("sgd", ADAM_NOTE.replace("adam,", "sgd,")),
                                                 ("adamw", ""), (None, "")])
def test_raising_weight_decay_under_another_optimizer_says_switch_to_adamw(optimizer, note):
    from archlab.selection import diagnose_regularization

    rows = _sweep("train.weight_decay", [0, 1e-4, 1e-3], [0.90, 0.95, 0.94], [0.98, 0.98, 0.96])
    text = diagnose_regularization(rows, "train.weight_decay", augment=AUGMENT, optimizer=optimizer)
    assert text.endswith(f"Next move: set train.weight_decay to 0.0001{note}, or add augmentation: {AUGMENT}.")
    unmoved = _sweep("train.optimizer.weight_decay", [0, 1e-4], [0.900, 0.902], [0.93, 0.932])
    text = diagnose_regularization(unmoved, "train.optimizer.weight_decay", optimizer=optimizer)
    assert f"sweep stronger values (train.optimizer.weight_decay=0.0001,0.001){note}; or," in text
    # another knob's advice says nothing of the optimizer
    dropout = _sweep("layers[3].dropout.rate", [0.0, 0.2], [0.90, 0.95], [0.98, 0.98])
    assert "adamw" not in diagnose_regularization(dropout, "layers[3].dropout.rate", optimizer=optimizer)


def test_capacity_advice_for_over_fitting_names_adamw_with_weight_decay():
    from archlab.selection import regularize_advice

    assert regularize_advice("adam", AUGMENT) == (f"train.weight_decay (e.g. 1e-4){ADAM_NOTE}, a dropout layer's "
                                                  "rate, train.augment: [shift, rotate]")
    over = diagnose(_rows([100, 1000, 10_000], [0.80, 0.90, 0.82], [0.82, 0.95, 1.0]))
    assert ("more regularisation (train.weight_decay (e.g. 1e-4), a dropout layer's rate, train.augment) or more "
            "data") in over


def test_cv_reads_the_specs_optimizer_into_the_capacity_advice():
    from archlab.selection import _cv

    spec = {"input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
            "layers": ["flatten", {"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 10}}],
            "train": {"optimizer": "adam"}}
    rows = _rows([100, 1000, 10_000], [0.80, 0.90, 0.82], [0.82, 0.95, 1.0])
    text = _cv._diagnosis(rows, [("layers[1].dense.units", [4, 16, 64])], spec, "max", "accuracy")
    assert (f"more regularisation (train.weight_decay (e.g. 1e-4){ADAM_NOTE}, a dropout layer's rate, "
            f"{AUGMENT}) or more data") in text
    spec["train"] = {"optimizer": {"name": "adamw", "weight_decay": 1e-4}}
    text = _cv._diagnosis(rows, [("layers[1].dense.units", [4, 16, 64])], spec, "max", "accuracy")
    assert f"more regularisation (train.weight_decay (e.g. 1e-4), a dropout layer's rate, {AUGMENT})" in text


@pytest.mark.parametrize(("path", "values", "advice"), [
    ("train.max_norm", [4.0, 2.0, 1.0], "train.max_norm 4 or above"),  # a larger bound constrains less
    ("layers[3].dropout.rate", [0.1, 0.3, 0.5], "layers[3].dropout.rate 0.1 or below"),
    ("train.max_norm", [None, 2.0, 1.0], "train.max_norm none"),  # no bound: nothing weaker to name
])
def test_under_fitting_names_the_weaker_side_of_the_knob(path, values, advice):
    from archlab.selection import diagnose_regularization

    rows = _sweep(path, values, [0.80, 0.78, 0.70], [0.81, 0.78, 0.70])
    text = diagnose_regularization(rows, path, capacity=WIDER)
    assert text.startswith("under-fitting") and f"Next move: less regularization ({advice}), or more capacity" in text


@pytest.mark.parametrize(("path", "label"), [("train.augment_audio", "augmentation"),
                                              ("train.augment_audio.noise_snr_db", None),
                                              ("train.augment_audio.speed", None), ("train.augment", "augmentation")])
def test_audio_augmentation_fields_are_not_read_as_one_direction(path, label):
    from archlab.selection import regularizer_of

    # a higher noise_snr_db is less noise: a field's value is not a strength; the whole section is
    assert (regularizer_of(path) and regularizer_of(path).label) == label
