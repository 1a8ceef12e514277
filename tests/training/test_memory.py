"""check_memory: the analysis's training-memory estimate against the device's available memory,
refused before any model is built, by train, cv and search (a pruned trial)."""

from __future__ import annotations

import pytest
import torch
import yaml

import archlab
from archlab.cli import run
from archlab.exceptions import MemoryLimitError
from archlab.search import search
from archlab.training import _memory as memory
from archlab.training import check_memory, resolve_recipe
from archlab.training._memory import training_memory

GIB = 1024 ** 3

#: 64 x 1e6 + 1e6 x 1e5 + 1e5 x 10 weights: about 373 GiB of fp32 weights, more than any test machine
#: has; the analysis counts them without allocating anything.
HUGE = {
    "name": "huge", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
    "layers": ["flatten", {"dense": {"units": 1_000_000, "activation": "relu"}},
               {"dense": {"units": 100_000, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}}],
    "train": {"data": "digits", "epochs": 1, "batch_size": 64, "device": "cpu"},
}

TINY = {
    "name": "tiny", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
    "layers": ["flatten", {"dense": {"units": 32, "activation": "relu"}},
               {"dense": {"units": 10, "activation": "softmax"}}],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_estimate_is_the_analysis_with_the_recipes_optimizer() -> None:
    recipe = resolve_recipe({"batch_size": 16})
    analysis = archlab.analyze(TINY, batch_size=16).training_memory_bytes
    assert training_memory(TINY, recipe) == analysis  # adam: the analysis's two moments
    params = 64 * 32 + 32 + 32 * 10 + 10
    sgd = training_memory(TINY, resolve_recipe({"batch_size": 16, "optimizer": "sgd"}))
    assert sgd["optimizer"] == 0 and sgd["total"] == analysis["total"] - 2 * 4 * params
    momentum = training_memory(TINY, resolve_recipe({"batch_size": 16, "optimizer": {"name": "sgd",
                                                                                     "momentum": 0.9}}))
    assert momentum["optimizer"] == 4 * params


def test_check_memory_refuses_with_the_numbers_and_the_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = resolve_recipe({"batch_size": 128})
    needed = training_memory(TINY, recipe)
    monkeypatch.setattr(memory, "available_memory", lambda device: needed["total"] - 1)
    with pytest.raises(MemoryLimitError) as info:
        check_memory(TINY, recipe, torch.device("cpu"))
    message = str(info.value)
    assert message.startswith(f"training needs about {needed['total'] / GIB:.1f} GiB (weights ")
    assert "at batch 128) but cpu has" in message and "GiB available" in message
    assert "lower --batch-size, use fewer or smaller layers, or another --device" in message
    assert (info.value.needed, info.value.available) == (needed["total"], needed["total"] - 1)
    assert isinstance(info.value, archlab.SpecError)  # the CLI's exit 2
    # exactly enough is enough; unknown memory (MPS, no /proc) is not refused
    monkeypatch.setattr(memory, "available_memory", lambda device: needed["total"])
    assert check_memory(TINY, recipe, torch.device("cpu")) == needed
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    assert check_memory(HUGE, recipe, torch.device("cpu"))["total"] > 300 * GIB


def test_the_message_gives_each_part_in_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = resolve_recipe({"batch_size": 64})
    parts = training_memory(HUGE, recipe)
    monkeypatch.setattr(memory, "available_memory", lambda device: 21 * GIB + GIB // 2)
    with pytest.raises(MemoryLimitError, match=r"^training needs about ([\d.]+) GiB") as info:
        check_memory(HUGE, recipe, torch.device("cpu"))
    expected = (f"training needs about {parts['total'] / GIB:.1f} GiB (weights {parts['weights'] / GIB:.1f}, "
                f"gradients {parts['gradients'] / GIB:.1f}, Adam {parts['optimizer'] / GIB:.1f}, activations "
                f"{parts['activations'] / GIB:.1f} at batch 64) but cpu has 21.5 GiB available")
    assert str(info.value).startswith(expected)
    assert parts["weights"] == 4 * (64 * 1_000_000 + 1_000_000 + 1_000_000 * 100_000 + 100_000 + 100_000 * 10 + 10)


def test_train_refuses_before_loading_data_or_making_a_run(tmp_path, capsys, monkeypatch) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_text(yaml.safe_dump(HUGE))

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("archlab.data.load_dataset", no_loading)
    code = run(["train", str(spec), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: training needs about ") and "GiB (weights 372.8, gradients 372.8, Adam 745.6" in err
    assert "at batch 64) but cpu has" in err and "lower --batch-size" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_cv_refuses_the_configurations_that_do_not_fit(tmp_path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "train": {"data": "digits", "device": "cpu"}}))
    code = run(["cv", str(spec), "--folds", "2", "--epochs", "1", "--out", str(tmp_path / "runs"),
                "--sweep", "layers[1].dense.units=8,1000000000"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "1 of 2 sweep configuration(s) are invalid; nothing was trained" in err
    assert "configuration 1 (layers[1].dense.units=1000000000): training needs about " in err
    assert "but cpu has" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_search_trial_that_cannot_fit_is_pruned_untrained_with_the_reason(tmp_path) -> None:
    space = {**TINY, "layers": ["flatten", {"dense": {"units": {"choice": [8, 1_000_000_000]}, "activation": "relu"}},
                                {"dense": {"units": 10, "activation": "softmax"}}],
             "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    result = search(space, "digits", 6, sampler="random", pruner="none", out=tmp_path, seed=0)
    big = [t for t in result.study.trials if t.params["layers[1].dense.units"] == 1_000_000_000]
    small = [t for t in result.study.trials if t.params["layers[1].dense.units"] == 8]
    assert big and small
    for t in big:
        assert t.state.name == "PRUNED" and t.user_attrs["pruned_by"] == "memory"
        assert t.user_attrs["pruned_reason"].startswith("training needs about ")
        assert "but cpu has" in t.user_attrs["pruned_reason"] and "epochs_trained" not in t.user_attrs
    assert all(t.state.name == "COMPLETE" for t in small)


def test_shrink_and_compress_refuse_before_loading_data(tmp_path, monkeypatch) -> None:
    from archlab.compress import CompressStep, compress, shrink
    from archlab.training import train

    run_dir = train({**TINY, "train": {"data": "digits", "epochs": 1, "device": "cpu"}}, out=tmp_path,
                    verbose=0).run_dir

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr("archlab.data.load_dataset", no_loading)
    monkeypatch.setattr(memory, "available_memory", lambda device: 1024)
    with pytest.raises(MemoryLimitError, match=r"^fine-tuning needs about 0\.0 GiB .* but cpu has 0\.0 GiB"):
        shrink(run_dir, out=tmp_path / "shrunk")
    with pytest.raises(MemoryLimitError, match=r"^fine-tuning needs about "):
        compress(run_dir, [CompressStep("prune-unstructured", 0.5)], out=tmp_path / "compressed")
    assert not (tmp_path / "shrunk").exists() and not (tmp_path / "compressed").exists()
