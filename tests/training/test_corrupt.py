"""Corrupted inputs: ``corrupt``'s statistics, ``train.modality_dropout`` counted on a batch and
trained the same under its seed and when resumed, and ``evaluate --corrupt`` on a model whose
label is in one input only (that input corrupted: chance; the other: no loss)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import archlab
from archlab.cli import run
from archlab.exceptions import SpecError
from archlab.training import evaluate_run, resolve_recipe, train
from archlab.training._corrupt import ModalityDropout, corrupt, corruption_conditions
from archlab.training._engine import Engine

CLASSES = 4
SPEC = {"name": "two-inputs", "inputs": {"a": [8], "b": [6]}, "task": {"kind": "classification", "classes": CLASSES},
        "graph": {"ea": {"from": "a", "layers": [{"dense": {"units": 16, "activation": "relu"}}]},
                  "eb": {"from": "b", "layers": [{"dense": {"units": 16, "activation": "relu"}}]},
                  "out": {"from": ["ea", "eb"], "merge": "concat",
                          "layers": [{"dense": {"units": CLASSES, "activation": "softmax"}}]}},
        "outputs": "out"}


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input ``a`` carries the label (a one-hot scaled by 3 in its first columns, plus noise);
    ``b`` is noise that knows nothing of it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    a = rng.normal(0, 0.3, (n, 8)).astype(np.float32)
    a[np.arange(n), y] += 3.0
    b = rng.normal(1.0, 2.0, (n, 6)).astype(np.float32)
    return a, b, y


@pytest.fixture(scope="module")
def label_in_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained (without modality dropout) on data whose label is in input ``a`` only."""
    folder = tmp_path_factory.mktemp("corrupt")
    a, b, y = arrays(320, 0)
    a_test, b_test, y_test = arrays(400, 1)
    np.savez(folder / "ab.npz", **{"x/a": a, "x/b": b, "y": y, "x_test/a": a_test, "x_test/b": b_test,
                                   "y_test": y_test})
    spec = {**SPEC, "train": {"data": f"npz:{folder / 'ab.npz'}", "epochs": 10, "batch_size": 32, "device": "cpu",
                              "validation_split": 0, "optimizer": {"name": "adam", "lr": 0.01}}}
    return train(spec, out=folder / "runs", verbose=0).run_dir


def test_zero_and_noise_replace_the_whole_input() -> None:
    g = torch.Generator().manual_seed(0)
    x = 5.0 + 2.0 * torch.randn(512, 3, 8, generator=g)
    assert torch.equal(corrupt(x, "zero", g), torch.zeros_like(x))
    noise = corrupt(x, "noise", torch.Generator().manual_seed(1))
    assert noise.shape == x.shape and noise.dtype == x.dtype
    # the clean tensor's mean and std, over the whole tensor (population std)
    assert noise.mean().item() == pytest.approx(x.mean().item(), abs=0.03)
    assert noise.std(correction=0).item() == pytest.approx(x.std(correction=0).item(), rel=0.02)
    corr = torch.corrcoef(torch.stack([noise.flatten(), x.flatten()]))[0, 1]
    assert abs(corr.item()) < 0.03  # replaced, not added to: none of x is left
    assert torch.equal(noise, corrupt(x, "noise", torch.Generator().manual_seed(1)))  # the seed decides
    assert not torch.equal(noise, corrupt(x, "noise", torch.Generator().manual_seed(2)))


def test_corrupt_refuses_an_unknown_mode_and_noise_for_ids() -> None:
    with pytest.raises(SpecError, match="unknown corruption 'nosie'.*'noise'"):
        corrupt(torch.ones(2, 2), "nosie", torch.Generator())
    with pytest.raises(SpecError, match="noise replaces a float input.*int64 ids: corrupt it with zero"):
        corrupt(torch.ones(2, 2, dtype=torch.long), "noise", torch.Generator())


DROPOUT = {"p": 0.5, "mode": "noise"}


def engine(run_dir: Path | None = None, epochs: int = 1, seed: int = 3, dropout: dict | None = DROPOUT) -> Engine:
    torch.manual_seed(0)
    recipe = {"device": "cpu", "epochs": epochs, "batch_size": 32, "seed": seed, "validation_split": 0,
              "modality_dropout": dropout}
    return Engine(archlab.build(SPEC), resolve_recipe(recipe), "cross_entropy", run_dir=run_dir, verbose=0)


@pytest.mark.parametrize(("p", "inputs"), [(0.5, None), (0.2, None), (1.0, None), (0.5, ["b"])])
def test_each_dropped_sample_loses_exactly_one_input(p: float, inputs: list[str] | None) -> None:
    n = 4000
    xb = {"a": torch.ones(n, 8), "b": torch.full((n, 6), 2.0)}
    out, _ = ModalityDropout().on_batch(engine(dropout={"p": p, "mode": "zero", "inputs": inputs}), xb, torch.zeros(n))
    lost_a, lost_b = (out["a"] == 0).all(1), (out["b"] == 0).all(1)
    assert ((out["a"] == 0).any(1) == lost_a).all() and ((out["a"] == 1) | (out["a"] == 0)).all()  # whole samples
    assert not (lost_a & lost_b).any()  # never both: a sample keeps one input
    assert (lost_a | lost_b).float().mean().item() == pytest.approx(p, abs=0.03)
    if inputs == ["b"]:
        assert not lost_a.any()
    else:  # the input lost is drawn uniformly
        assert lost_a.float().mean().item() == pytest.approx(p / 2, abs=0.03)
    assert torch.equal(xb["a"], torch.ones(n, 8))  # the batch it was given is left as it was


def test_noise_dropout_replaces_the_chosen_samples_only() -> None:
    n = 1000
    xb = {"a": torch.randn(n, 8), "b": torch.randn(n, 6)}
    out, _ = ModalityDropout().on_batch(engine(), xb, torch.zeros(n))
    changed = {k: (out[k] != xb[k]).any(1) for k in xb}
    assert torch.equal(changed["a"], (out["a"] != xb["a"]).all(1))  # a sample's input replaced whole
    assert not (changed["a"] & changed["b"]).any()
    assert (changed["a"] | changed["b"]).float().mean().item() == pytest.approx(0.5, abs=0.05)


def data() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    a, b, y = arrays(96, 2)
    return {"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, torch.from_numpy(y)


def test_same_seed_same_weights_and_the_dropout_matters(helpers) -> None:
    x, y = data()
    runs = []
    for seed, dropout in ((3, DROPOUT), (3, DROPOUT), (4, DROPOUT), (3, None)):
        eng = engine(None, 2, seed, dropout)
        eng.fit(x, y)
        runs.append(helpers.model_weights(eng))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[3][k]) for k in runs[0])  # the dropout reached the batches


def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path: Path, helpers) -> None:
    helpers.assert_resume_is_exact(tmp_path, engine, *data())


@pytest.mark.parametrize(("dropout", "match"), [
    ({"p": 0}, r"train\.modality_dropout\.p: input should be greater than 0"),
    ({"p": 1.5}, r"train\.modality_dropout\.p: input should be less than or equal to 1"),
    ({"mode": "nosie"}, r"train\.modality_dropout\.mode: .*'noise'"),
    ({"inputs": []}, r"train\.modality_dropout\.inputs"),
    ({"inputs": ["a", "a"]}, r"each input is named once"),
    ({"rate": 0.5}, r"unknown key 'rate'.*takes: p, mode, inputs"),
])
def test_recipe_values_are_checked(dropout: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        resolve_recipe({"modality_dropout": dropout})


def test_spec_errors_come_before_any_training(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", x=np.zeros((40, 8), np.float32), y=np.arange(40) % CLASSES)
    single = {"name": "one", "input": [8], "task": {"kind": "classification", "classes": CLASSES},
              "layers": [{"dense": {"units": CLASSES, "activation": "softmax"}}],
              "train": {"data": f"npz:{tmp_path / 'one.npz'}", "modality_dropout": {"p": 0.5}}}
    with pytest.raises(SpecError, match="has one input .*graph-form specs with two inputs") as err:
        train(single, out=tmp_path / "runs", verbose=0)
    assert err.value.path == "train.modality_dropout"
    unknown = {**SPEC, "train": {"data": "digits", "modality_dropout": {"inputs": ["a", "c"]}}}
    with pytest.raises(SpecError, match=r"inputs\[1\]: 'c' is not an input of the spec.*\(its inputs: a, b\)"):
        train(unknown, out=tmp_path / "runs", verbose=0)
    embedded = {"from": "a", "layers": [{"embedding": {"input_dim": 10, "output_dim": 2}}, "flatten"]}
    ids = {**SPEC, "inputs": {"a": {"shape": [8], "dtype": "long"}, "b": [6]},
           "graph": {**SPEC["graph"], "ea": embedded},
           "train": {"data": "digits", "modality_dropout": {"mode": "noise"}}}
    with pytest.raises(SpecError, match="'a' holds integer ids.*use zero") as err:
        train(ids, out=tmp_path / "runs", verbose=0)
    assert err.value.path == "train.modality_dropout.mode"
    assert not (tmp_path / "runs").exists()


def test_corrupting_the_input_with_the_label_drops_to_chance(label_in_a: Path) -> None:
    result = evaluate_run(label_in_a, corrupt=["noise", "a=zero"], seed=0)
    rows = result["robustness"]["conditions"]
    assert list(rows) == ["clean", "a=noise", "b=noise", "a=zero"] and result["robustness"]["seed"] == 0
    assert rows["clean"] == result["metrics"] and rows["clean"]["accuracy"] > 0.95
    for lost in ("a=noise", "a=zero"):  # the label's input gone: chance, 1/4 (400 samples: sd 0.022)
        assert rows[lost]["accuracy"] < 0.25 + 0.1 and rows[lost]["loss"] > rows["clean"]["loss"] + 0.5
    assert rows["b=noise"]["accuracy"] > rows["clean"]["accuracy"] - 0.05  # b carried nothing
    saved = json.loads((label_in_a / "evaluation-test-best.json").read_text())
    assert saved["robustness"] == result["robustness"]
    again = evaluate_run(label_in_a, corrupt="a=noise")
    assert again["robustness"]["conditions"]["a=noise"] == rows["a=noise"]  # seeded: the same numbers
    other = evaluate_run(label_in_a, corrupt="a=noise", seed=1)["robustness"]["conditions"]["a=noise"]
    assert other["loss"] != rows["a=noise"]["loss"]
    assert "robustness" not in evaluate_run(label_in_a)


def test_conditions_expand_and_name_the_inputs() -> None:
    assert corruption_conditions(["zero", "b=noise", "b=zero"], ["a", "b"]) == [("a", "zero"), ("b", "zero"),
                                                                               ("b", "noise")]
    assert corruption_conditions(["input=noise"], ["input"]) == [("input", "noise")]


def test_cli_prints_the_robustness_table(label_in_a: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["evaluate", str(label_in_a), "--corrupt", "a=noise", "--corrupt", "b=zero", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "robustness (seed 2)" in out
    for condition in ("clean", "a=noise", "b=zero"):
        assert condition in out
    saved = json.loads((label_in_a / "evaluation-test-best.json").read_text())
    assert list(saved["robustness"]["conditions"]) == ["clean", "a=noise", "b=zero"]


@pytest.mark.parametrize(("corrupt_value", "message"), [
    ("c=noise", "--corrupt c=noise: 'c' is not an input of the run (its inputs: a, b)"),
    ("a=blur", "--corrupt a=blur: unknown corruption 'blur'"),
    ("fuzz", "unknown corruption 'fuzz'"),
])
def test_cli_bad_corrupt_exits_2_with_one_message(label_in_a: Path, capsys: pytest.CaptureFixture,
                                                  corrupt_value: str, message: str) -> None:
    code = run(["evaluate", str(label_in_a), "--corrupt", corrupt_value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_single_input_run_takes_its_own_input_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = {"name": "one", "input": [1, 8, 8], "task": {"kind": "classification", "classes": 10},
            "layers": ["flatten", {"dense": {"units": 10, "activation": "softmax"}}],
            "train": {"data": "digits", "epochs": 1, "device": "cpu"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert run(["train", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert run(["evaluate", str(run_dir), "--corrupt", "image=noise"]) == 2
    err = capsys.readouterr().err
    assert "the run has one input, 'input': give --corrupt input=noise or --corrupt noise" in err
    result = evaluate_run(run_dir, corrupt=["input=noise", "zero"])
    assert list(result["robustness"]["conditions"]) == ["clean", "input=noise", "input=zero"]
