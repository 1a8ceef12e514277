"""export of an ensemble directory: one ONNX graph of the members and their combination, equal to
the torch EnsembleModel and to numpy's combination of the members' own probabilities."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from archlab.cli import run
from archlab.data import load_dataset
from archlab.deploy import export_run, read_metadata
from archlab.training import evaluate_run, read_ensemble, restore_ensemble, restore_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def x_test() -> np.ndarray:
    return load_dataset("digits").x_test.astype(np.float32)


def _onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, x if isinstance(x, dict) else {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("combine", ["mean", "vote"])
def test_one_graph_matches_the_torch_ensemble_and_numpy(ensemble_dir, x_test, combine, tmp_path):
    weights = (1.0, 2.0, 0.5)
    path = ensemble_dir(combine, weights)
    result = export_run(path, out=tmp_path / "ensemble.onnx")
    assert result.max_abs_diff <= result.atol + result.rtol  # the parity check passed (scores are in [0, 1])
    assert result.ensemble["combine"] == combine and len(result.ensemble["members"]) == 3
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == ["input"] and len(graph.output) == 1  # one graph, one output
    ops = {n.op_type for n in graph.node}
    assert ("ArgMax" in ops) == (combine == "vote")
    got = _onnx(result.path, x_test)
    with torch.no_grad():
        expected = restore_ensemble(path).model(torch.from_numpy(x_test)).numpy()
    assert np.abs(got - expected).max() < 1e-5
    members = []
    for member in read_ensemble(path).members:  # each member alone, its full model (softmax included)
        with torch.no_grad():
            members.append(restore_run(member.dir, logits=False).model(torch.from_numpy(x_test)).numpy())
    p = np.stack(members)
    if combine == "vote":
        p = np.eye(10)[p.argmax(-1)]
    numpy_combined = (np.asarray(weights)[:, None, None] * p).sum(0) / sum(weights)
    assert np.abs(got - numpy_combined).max() < 1e-5
    meta = read_metadata(result.path)
    assert json.loads(meta["archlab.ensemble"])["combine"] == combine
    assert json.loads(meta["archlab.metrics"])["metrics"]["accuracy"] == evaluate_run(path)["metrics"]["accuracy"]


def test_named_inputs_export_as_named_onnx_inputs(ensemble_dir, named_task, tmp_path):
    data, spec = named_task("classification")
    path = ensemble_dir("mean", (1.0, 1.0), named=(data, spec))
    result = export_run(path, out=tmp_path / "named.onnx")
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == ["ids", "num"]
    rng = np.random.default_rng(1)
    x = {"ids": rng.integers(0, 10, (6, 3)).astype(np.int64), "num": rng.normal(size=(6, 4)).astype(np.float32)}
    with torch.no_grad():
        expected = restore_ensemble(path).model(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    assert np.abs(_onnx(result.path, x) - expected).max() < 1e-5


def test_cli_export_says_members_and_combination(ensemble_dir, tmp_path, capsys):
    path = ensemble_dir("vote")
    assert run(["export", str(path), "--out", str(tmp_path / "m.onnx"), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ensemble: 3 members (seeds: members/00, members/01, members/02), combined by vote in the graph" in out
    assert "parity: max |onnx - torch|" in out
    assert run(["export", str(path), "--format", "torchscript"]) == 2
    assert "exports to ONNX only" in " ".join(capsys.readouterr().err.split())
