"""shrink and compress's steps on a graph-form spec with two named inputs (the ``named_task``
fixture), for every task kind; compress end to end on a regression run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import archlab
from archlab.builder import build_parsed, parse
from archlab.cli import run
from archlab.compress import CompressStep, distillation_loss, shrink
from archlab.compress._pipeline import _distill, _Model, _state, _trained, _transform
from archlab.compress._shrink import within
from archlab.data import load_dataset
from archlab.tasks import direction_of, get_task
from archlab.training import evaluate_run, model_inputs, prepare_splits, run_task, to_tensors, train

from ..conftest import TASK_KINDS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(named_task, tmp_path_factory):
    """``trained(task)`` -> the run directory of the two-input spec trained for ``task`` (once)."""
    out, runs = tmp_path_factory.mktemp("named-runs"), {}

    def get(task: str):
        if task not in runs:
            _, spec = named_task(task)
            runs[task] = train(spec, out=out, verbose=0).run_dir
        return runs[task]

    return get


@pytest.mark.parametrize("task", TASK_KINDS)
def test_shrink_prunes_inside_graph_nodes_and_judges_by_the_task_metric(trained, tmp_path, task) -> None:
    result = shrink(trained(task), max_drop=100.0, finetune_epochs=1, max_steps=2, out=tmp_path)
    metric = get_task(task).default_metrics[0]
    assert (result.metric, result.direction) == (metric, direction_of(metric, task))
    start, *later = result.steps
    assert math.isfinite(start[f"val_{metric}"]) and math.isfinite(result.test_after[metric])
    # the one layer inside a node that no other node reads: out's hidden dense (16 units)
    assert [s["action"] for s in later] == ["prune graph.out.layers[0] 16->12", "prune graph.out.layers[0] 12->9"]
    assert all(s["kept"] for s in later) and later[-1]["params"] < start["params"]
    assert result.spec.to_dict()["graph"]["out"]["layers"][0]["dense"]["units"] == 9
    assert later[-1]["params"] == archlab.analyze(result.spec).total_params
    evaluation = evaluate_run(result.run_dir)  # the smaller two-input run is an ordinary run
    assert evaluation["metrics"][metric] == pytest.approx(result.test_after[metric], rel=1e-5)
    assert f"| val {metric} |" in (result.run_dir / "shrink.md").read_text()


def test_a_step_is_judged_in_points_of_a_score_and_in_percent_of_an_error() -> None:
    assert within(0.946, 0.95, "max", 0.5) and not within(0.944, 0.95, "max", 0.5)
    assert within(2.009, 2.0, "min", 0.5) and not within(2.011, 2.0, "min", 0.5)  # 0.5% of 2.0 is 0.01


def test_the_shrink_command_takes_a_two_input_run(trained, tmp_path, capsys) -> None:
    code = run(["shrink", str(trained("regression")), "--max-drop", "100", "--max-steps", "1", "--out",
                str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "val mse" in out and "test mse: " in out
    run_dir = out.strip().splitlines()[-1].removeprefix("run: ")
    assert json.loads((tmp_path / run_dir / "shrink.json").read_text())["metric"] == "mse"


def _setup(run_dir):
    spec, recipe, model = _trained(run_dir, "best", "")
    task, recipe = run_task(spec, recipe)
    dataset = load_dataset(recipe.data)
    return spec, recipe.model_copy(update={"epochs": 1}), task, dataset, model


@pytest.mark.parametrize("task", TASK_KINDS)
@pytest.mark.parametrize("kind", ["prune-structured", "lowrank", "prune-unstructured"])
def test_compress_steps_transform_and_fine_tune_a_two_input_model(trained, task, kind) -> None:
    spec, recipe, task_kind, dataset, model = _setup(trained(task))
    tensors = prepare_splits(dataset, recipe, task_kind, parse(spec))
    original = _Model("original", spec, _state(model))
    value = {"prune-structured": 0.5, "lowrank": 2, "prune-unstructured": 0.5}[kind]
    new = _transform(original, CompressStep(kind, value), recipe, task_kind, tensors, 1, False, 1, "1")
    before, after = (archlab.analyze(m.spec).total_params for m in (original, new))
    if kind == "prune-unstructured":
        layers = new.notes["sparsity"]["layers"]  # zeros kept through fine-tuning, in every node's dense layers
        assert after == before
        assert all(layers[f"net.nodes.{k}.weight"] >= 0.5 for k in ("dense.layers.0", "out.layers.0", "out.layers.1"))
    else:
        assert after < before


@pytest.mark.parametrize("task", TASK_KINDS)
def test_compress_a_two_input_run_end_to_end(trained, tmp_path, task) -> None:
    from archlab.compress import compress

    result = compress(trained(task), [CompressStep("prune-structured", 0.5), CompressStep("distill",
                                                                                         str(trained(task)))],
                      out=tmp_path, batch_sizes=(1,), finetune_epochs=1, distill_epochs=1)
    metric = get_task(task).headline_metric
    assert [r["metric"] for r in result.rows] == [metric] * 3
    assert all(math.isfinite(r[f"test_{metric}"]) for r in result.rows)
    assert result.rows[1]["params"] < result.rows[0]["params"]
    # the original's row is the trained run's own test metric, measured again through ONNX export
    assert result.rows[0][f"test_{metric}"] == pytest.approx(
        evaluate_run(trained(task), weights="best")["metrics"][metric], rel=1e-4, abs=1e-5)


def _scores(m: _Model, x, task) -> torch.Tensor:
    model = build_parsed(parse(m.spec))
    model.load_state_dict(m.state)
    with torch.no_grad():
        return model.eval()(**x)


@pytest.mark.parametrize("task", TASK_KINDS)
def test_distillation_matches_the_teachers_outputs_for_every_task(trained, task) -> None:
    spec, recipe, task_kind, dataset, teacher = _setup(trained(task))
    tensors = prepare_splits(dataset, recipe, task_kind, parse(spec))
    x_test, _ = to_tensors(model_inputs(parse(spec), dataset.x_test, dataset.name), dataset.y_test, task_kind)
    seed = torch.random.get_rng_state()
    fresh = _Model("fresh", spec, _state(archlab.training.prepare_model(spec, recipe, task_kind)[0]))
    torch.random.set_rng_state(seed)
    student = _distill(_Model("original", spec, _state(teacher)), teacher, None, recipe, task_kind, tensors, "2",
                       temperature=2.0, alpha=1.0, epochs=8, tune={})
    with torch.no_grad():
        target = teacher.eval()(**x_test)
    gap = [float(((_scores(m, x_test, task_kind) - target) ** 2).mean()) for m in (fresh, student)]
    assert gap[1] < 0.5 * gap[0]  # trained on the teacher's outputs alone, the student came close to them


def test_the_distillation_loss_of_each_task_is_zero_when_student_and_teacher_agree() -> None:
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    for task, y in (("binary", torch.tensor([[1.0], [0.0]])), ("multilabel", torch.tensor([[1.0, 0.0], [0.0, 1.0]])),
                    ("regression", torch.tensor([[0.1], [0.2]]))):
        s = logits[:, :1] if task != "multilabel" else logits
        t = s.clone()
        assert float(distillation_loss(s, t, y if task != "multilabel" else y, temperature=3.0, alpha=1.0,
                                       task=task)) == pytest.approx(0.0, abs=1e-6)
        assert float(distillation_loss(s, t + 1.0, y, temperature=3.0, alpha=1.0, task=task)) > 0.01
    # regression: the soft term is the plain MSE to the teacher's values, whatever the temperature
    assert float(distillation_loss(torch.tensor([[1.0]]), torch.tensor([[3.0]]), torch.tensor([[0.0]]),
                                   temperature=5.0, alpha=1.0, task="regression")) == pytest.approx(4.0)


def test_the_compress_command_compresses_a_regression_run(tmp_path, capsys) -> None:
    """One input here: measuring (``measure_models``, exported ONNX) takes one input array today."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1]).astype(np.float32)
    data = tmp_path / "reg.npz"
    np.savez(data, x=x, y=y)
    spec = {"name": "reg", "input": [6], "task": {"kind": "regression"},
            "layers": [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 1}}],
            "train": {"data": f"npz:{data}?task=regression", "epochs": 10, "batch_size": 32, "device": "cpu",
                      "optimizer": {"name": "adam", "lr": 0.01}}}
    run_dir = train(spec, out=tmp_path / "runs", verbose=0).run_dir
    code = run(["compress", str(run_dir), "--prune-structured", "0.5", "--distill-from", str(run_dir),
                "--out", str(tmp_path / "out"), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    (folder,) = (tmp_path / "out").iterdir()
    rows = json.loads((folder / "compression.json").read_text())["models"]
    assert [r["metric"] for r in rows] == ["mse"] * 3
    assert all(math.isfinite(r["test_mse"]) for r in rows) and rows[1]["params"] < rows[0]["params"]
    trained_mse = evaluate_run(run_dir)["metrics"]["mse"]
    assert rows[0]["test_mse"] == pytest.approx(trained_mse, rel=1e-5)
    assert "| test mse | Δ |" in (folder / "compression.md").read_text()


def test_blocks_and_channels_inside_graph_nodes_are_removed_with_their_weights(named_task) -> None:
    from archlab.compress import block_candidates, bypass, prunable_layers, prune_channels, remove_blocks

    _, spec = named_task("regression")
    spec["graph"]["out"]["layers"].insert(1, {"residual": {"layers": [{"dense": {"units": 16, "activation": "relu"}}]}})
    torch.manual_seed(0)
    model = archlab.build(spec).eval()
    x = {"ids": torch.randint(0, 10, (6, 3)), "num": torch.randn(6, 4)}
    (block,) = block_candidates(spec)
    assert (block.module, block.path) == ("net.nodes.out.layers.1", "graph.out.layers[1]")
    with torch.no_grad(), bypass(model, block):
        expected = model(**x)
    small, state = remove_blocks(spec, model.state_dict(), [block])
    smaller = archlab.build(small)
    smaller.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(smaller.eval()(**x), expected)  # the block is gone, every other weight kept
    # the residual stream (out's first dense and the block's body) is pruned together; the "dense"
    # node's only layer feeds the concat another node reads, so it keeps its width
    assert prunable_layers(spec) == {"graph.out.layers[0]": 16}
    thin, thin_state = prune_channels(spec, model.state_dict(), ratio=0.5)
    layers = thin.to_dict()["graph"]["out"]["layers"]
    assert layers[0]["dense"]["units"] == 8 and layers[1]["residual"]["layers"][0]["dense"]["units"] == 8
    pruned = archlab.build(thin)
    pruned.load_state_dict(thin_state)
    assert pruned(**x).shape == (6, 1)
