"""prune_unstructured: the real sparsity it reports, what it leaves alone, and that the result is
an ordinary model again (no masks, no hooks, the spec's state-dict keys)."""

from __future__ import annotations

import copy

import pytest
import torch

import archlab
from archlab.compress import prune_unstructured
from archlab.data import load_dataset
from archlab.spec import Spec
from archlab.training import Engine, prepare_model, resolve_recipe, to_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

#: Conv, batchnorm, a residual with a generated projection shortcut, a repeat and dense layers.
CNN = {
    "input": [1, 8, 8],
    "layers": [
        {"conv2d": {"filters": 4, "kernel_size": 3, "padding": "same"}}, "batchnorm", "relu",
        {"residual": {"layers": [{"conv2d": {"filters": 6, "kernel_size": 3, "padding": "same"}}]}},
        {"repeat": {"times": 2, "layers": [{"conv2d": {"filters": 6, "kernel_size": 3, "padding": "same"}}]}},
        "flatten",
        {"dense": {"units": 16, "activation": "relu"}, "name": "hidden"},
        {"dense": {"units": 10}},
    ],
}

#: An embedding, an LSTM and a dense layer tied to the embedding.
TEXT = {
    "input": {"shape": [5], "dtype": "long"},
    "layers": [
        {"embedding": {"input_dim": 20, "output_dim": 8}, "name": "emb"},
        {"lstm": {"units": 8, "return_sequences": True}},
        {"simple_rnn": {"units": 8, "return_sequences": True}},
        {"dense": {"units": 20}, "tie": "emb"},
    ],
}

MLP = {"input": [1, 8, 8], "layers": ["flatten", {"dense": {"units": 64, "activation": "relu"}},
                                      {"dense": {"units": 10, "activation": "softmax"}}]}


def _model(spec: dict) -> archlab.builder.ArchlabModel:
    torch.manual_seed(0)
    return archlab.build(spec).eval()


def _no_masks(model: torch.nn.Module, spec: dict) -> None:
    """No pruning state left: no *_orig/*_mask tensors, no hooks, and the state dict loads as is."""
    keys = list(model.state_dict())
    assert not [k for k in keys if k.endswith(("_orig", "_mask"))]
    assert not [m for m in model.modules() if m._forward_pre_hooks]
    fresh = archlab.build(spec)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert keys == list(fresh.state_dict())


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.9])
def test_per_layer_pruning_zeroes_ratio_of_each_weight(ratio):
    model = _model(CNN)
    before = copy.deepcopy(model.state_dict())
    report = prune_unstructured(model, ratio)
    _no_masks(model, CNN)
    by_key = report.by_key()
    # every conv/dense kernel, the generated shortcut's too; no bias, no batchnorm
    assert sorted(by_key) == sorted(k for k, v in before.items() if k.endswith("weight") and v.dim() >= 2)
    for key, entry in by_key.items():
        weight = model.state_dict()[key]
        assert entry.zeros == int((weight == 0).sum()) == round(ratio * weight.numel())
        kept, dropped = before[key][weight != 0].abs(), before[key][weight == 0].abs()
        if len(kept) and len(dropped):  # the smallest magnitudes went
            assert dropped.max() <= kept.min()
        assert torch.equal(weight[weight != 0], before[key][weight != 0])  # the rest is untouched
    for key, value in before.items():  # biases and batchnorm untouched
        if key not in by_key:
            assert torch.equal(model.state_dict()[key], value)
    assert report.sparsity == pytest.approx(ratio, abs=0.01)
    assert 0 < report.model_sparsity <= report.sparsity or ratio == 0


def test_report_maps_modules_to_spec_paths():
    report = prune_unstructured(_model(CNN), 0.5)
    paths = {t.key: t.spec_path for t in report.tensors}
    assert paths == {
        "net.0.weight": "layers[0]",
        "net.3.layers.0.weight": "layers[3].residual.layers[0]",
        "net.3.shortcut.0.weight": None,  # the projection the parser generated: no spec item
        "net.4.blocks.0.0.weight": "layers[4].repeat.layers[0]",
        "net.4.blocks.1.0.weight": "layers[4].repeat.layers[0]",
        "net.hidden.weight": "layers[6]",
        "net.7.weight": "layers[7]",
    }
    as_dict = report.to_dict()
    assert as_dict["tensors"][0]["spec_path"] == "layers[0]" and as_dict["global"] is False


def test_global_pruning_ranks_across_layers():
    model = _model(CNN)
    before = copy.deepcopy(model.state_dict())
    report = prune_unstructured(model, 0.6, global_=True)
    _no_masks(model, CNN)
    assert report.zeros == round(0.6 * report.numel)
    kept = torch.cat([before[t.key][model.state_dict()[t.key] != 0].abs() for t in report.tensors])
    dropped = torch.cat([before[t.key][model.state_dict()[t.key] == 0].abs() for t in report.tensors])
    assert dropped.max() <= kept.min()
    assert len({round(t.sparsity, 2) for t in report.tensors}) > 1  # layers lose different fractions


def test_recurrent_pruned_embeddings_and_tied_weights_left_alone():
    model = _model(TEXT)
    table = model.state_dict()["net.emb.weight"].clone()
    report = prune_unstructured(model, 0.5)
    _no_masks(model, TEXT)
    assert sorted(report.by_key()) == ["net.1.rnn.weight_hh_l0", "net.1.rnn.weight_ih_l0",
                                       "net.2.cells.0.weight_hh", "net.2.cells.0.weight_xh"]
    assert {t.spec_path for t in report.tensors} == {"layers[1]", "layers[2]"}
    assert torch.equal(model.state_dict()["net.emb.weight"], table)
    # the LSTM runs on its pruned weights (torch keeps a list of them for its fused kernel)
    x = torch.randint(0, 20, (3, 5))
    fresh = archlab.build(TEXT).eval()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(model(x), fresh(x))


def test_any_module_without_spec_paths():
    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(), torch.nn.Linear(10, 2))
    report = prune_unstructured(net, 0.5)
    assert [(t.key, t.spec_path, t.zeros) for t in report.tensors] == [("0.weight", None, 50), ("2.weight", None, 10)]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, True, "0.5", None])
def test_ratio_outside_zero_one_is_refused(ratio):
    with pytest.raises(ValueError, match=r"ratio .* in \[0, 1\)"):
        prune_unstructured(_model(MLP), ratio)


def test_digits_half_pruned_keeps_its_accuracy():
    data = load_dataset("digits")
    xt, yt = to_tensors(data.x_train, data.y_train, "cross_entropy")
    xv, yv = to_tensors(data.x_test, data.y_test, "cross_entropy")
    recipe = resolve_recipe({"epochs": 10, "batch_size": 64, "optimizer": {"lr": 3e-3}})
    model, head = prepare_model(Spec.from_dict(MLP), recipe, "cross_entropy")
    engine = Engine(model, recipe, "cross_entropy", verbose=0, output_activation=head)
    engine.fit(xt, yt)
    before = engine.evaluate(xv, yv)[0]["accuracy"]
    report = prune_unstructured(model, 0.5)
    after = engine.evaluate(xv, yv)[0]["accuracy"]
    assert report.sparsity == pytest.approx(0.5, abs=1e-3)
    assert before > 0.9 and after > before - 0.05
