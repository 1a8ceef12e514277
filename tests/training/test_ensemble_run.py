"""Ensemble run directories: read_ensemble's checks, EnsembleModel's combinations against a hand
computation, and evaluate / predict / summary of an ensemble against its members run alone and
numpy's own combination of their probabilities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from archlab.analysis import analyze
from archlab.builder import parse
from archlab.cli import run
from archlab.data import load_dataset
from archlab.spec import load
from archlab.tasks import get_task
from archlab.training import (
    EnsembleModel,
    RunError,
    ensemble_summary,
    evaluate_run,
    load_run,
    model_inputs,
    predict_run,
    read_ensemble,
    restore_run,
)
from archlab.training._ensemble_run import combine_flops

pytestmark = pytest.mark.usefixtures("one_thread")


class Fixed(nn.Module):
    """A member whose scores are ``p`` for every input: its logits are log p (softmax(log p) = p)."""

    def __init__(self, p: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(p).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


P = [[[0.6, 0.3, 0.1]], [[0.2, 0.5, 0.3]], [[0.4, 0.4, 0.2]]]  # member 2 ties classes 0 and 1


def test_mean_is_the_weighted_mean_of_the_members_probabilities():
    model = EnsembleModel([Fixed(p) for p in P], [1.0, 2.0, 1.0], "mean", get_task("classification"))
    got = model(torch.zeros(1, 4))
    # (0.6 + 2*0.2 + 0.4) / 4, (0.3 + 2*0.5 + 0.4) / 4, (0.1 + 2*0.3 + 0.2) / 4
    assert got[0].tolist() == pytest.approx([0.35, 0.425, 0.225], abs=1e-6)


def test_vote_is_samme_weighted_vote_and_ties_go_to_the_first_class():
    model = EnsembleModel([Fixed(p) for p in P], [1.0, 2.0, 1.0], "vote", get_task("classification"))
    got = model(torch.zeros(1, 4))
    # votes: member 0 -> class 0, member 1 -> class 1, member 2 ties 0 and 1 -> class 0 (argmax's first index)
    assert got[0].tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)
    assert int(got.argmax(dim=1)) == 0  # the vote's own tie: the first class too
    heavier = EnsembleModel([Fixed(p) for p in P], [1.0, 3.0, 1.0], "vote", get_task("classification"))
    assert heavier(torch.zeros(1, 4))[0].tolist() == pytest.approx([0.4, 0.6, 0.0], abs=1e-6)


def test_logits_of_inverts_the_scores():
    p = torch.tensor([[0.2, 0.5, 0.3]])
    task = get_task("classification")
    assert task.scores(task.logits_of(p))[0].tolist() == pytest.approx(p[0].tolist(), abs=1e-6)
    binary = get_task("binary")
    q = torch.tensor([[0.25], [0.9]])
    assert binary.scores(binary.logits_of(q)).ravel().tolist() == pytest.approx(q.ravel().tolist(), abs=1e-6)


def _member_probabilities(ensemble, x: np.ndarray) -> np.ndarray:
    """Each member's probabilities (M, N, K) from its run alone: the spec's full model (softmax included)."""
    out = []
    for member in read_ensemble(ensemble).members:
        model = restore_run(member.dir, member.weights, logits=False).model
        with torch.no_grad():
            out.append(model(torch.from_numpy(x)).numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("combine", ["mean", "vote"])
def test_evaluate_gives_each_members_own_metrics_and_numpys_combination(ensemble_dir, digits, combine):
    weights = (1.0, 2.0, 0.5)
    path = ensemble_dir(combine, weights)
    result = evaluate_run(path)
    assert (path / "evaluation-test-best.json").is_file()
    assert json.loads((path / "evaluation-test-best.json").read_text())["members"] == result["members"]
    members = read_ensemble(path).members
    for member, recorded in zip(members, result["members"], strict=True):
        alone = evaluate_run(member.dir)["metrics"]
        assert recorded["metrics"] == pytest.approx(alone, rel=1e-6)
    x, y = digits.x_test.astype(np.float32), digits.y_test
    p = _member_probabilities(path, x)
    w = np.asarray(weights)[:, None, None] / sum(weights)
    if combine == "vote":
        p = np.eye(p.shape[-1])[p.argmax(-1)]  # each member's one-hot vote
    combined = (w * p).sum(0)
    assert result["metrics"]["accuracy"] == pytest.approx(float((combined.argmax(1) == y).mean()), abs=1e-12)
    nll = -np.log(np.maximum(combined[np.arange(len(y)), y], np.finfo(np.float32).tiny)).mean()
    assert result["metrics"]["loss"] == pytest.approx(nll, rel=1e-4)
    accuracies = [m["metrics"]["accuracy"] for m in result["members"]]
    assert result["best_member"] == int(np.argmax(accuracies))
    assert result["gain_over_best_member"] == pytest.approx(result["metrics"]["accuracy"] - max(accuracies))
    assert np.asarray(result["confusion_matrix"]).sum() == len(y)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_evaluate_other_tasks_against_numpy(ensemble_dir, named_task, task):
    from sklearn.metrics import log_loss

    data, spec = named_task(task)
    path = ensemble_dir("mean", (1.0, 3.0), named=(data, spec))
    result = evaluate_run(path)
    dataset = load_dataset(data)
    x = model_inputs(parse(load(spec)), dataset.x_test)
    y = dataset.y_test.ravel()
    outputs = []
    for member in read_ensemble(path).members:
        model = restore_run(member.dir, logits=False).model
        with torch.no_grad():
            outputs.append(model(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy().ravel())
    combined = (np.asarray(outputs) * np.asarray([[0.25], [0.75]])).sum(0)
    if task == "binary":
        assert result["metrics"]["log_loss"] == pytest.approx(log_loss(y, combined), rel=1e-5)
        assert result["metrics"]["accuracy"] == pytest.approx(float(((combined > 0.5) == y).mean()))
    else:
        assert result["metrics"]["mse"] == pytest.approx(float(((combined - y) ** 2).mean()), rel=1e-5)
        mses = [m["metrics"]["mse"] for m in result["members"]]
        assert result["gain_over_best_member"] == pytest.approx(min(mses) - result["metrics"]["mse"])  # lower wins


def test_evaluate_cli_prints_the_members_and_the_ensemble(ensemble_dir, capsys):
    path = ensemble_dir()
    assert run(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    result = json.loads((path / "evaluation-test-best.json").read_text())
    for i, member in enumerate(result["members"]):
        assert f"{i} members/{i:02d}" in out
        assert f"{member['metrics']['accuracy']:.4f}" in out
    assert f"{result['metrics']['accuracy']:.4f}" in out and "over the best member" in out


def test_predict_combines_and_counts_the_members_that_agree(ensemble_dir, digits, tmp_path, capsys):
    path = ensemble_dir("mean", (1.0, 1.0, 1.0))
    x = digits.x_test[:5].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    results = predict_run(path, tmp_path / "x.npy", top=2)
    p = _member_probabilities(path, x)
    combined = p.mean(0)
    classes = [str(c) for c in digits.classes]
    for i, result in enumerate(results):
        top = int(combined[i].argmax())
        assert result["top"][0]["class"] == classes[top]
        assert result["top"][0]["probability"] == pytest.approx(float(combined[i, top]), abs=1e-6)
        assert len(result["top"]) == 2
        assert result["members_agree"] == int((p[:, i].argmax(-1) == top).sum())
        assert result["members"] == 3
    assert run(["predict", str(path), str(tmp_path / "x.npy")]) == 0
    assert "members agree)" in capsys.readouterr().out


def test_summary_totals_are_the_sum_of_the_members(ensemble_dir, capsys):
    path = ensemble_dir("vote")
    summary = ensemble_summary(path)
    specs = [load_run(m.dir)[0] for m in read_ensemble(path).members]
    params = [sum(p.numel() for p in restore_run(m.dir).model.parameters()) for m in read_ensemble(path).members]
    assert [r["params"] for r in summary["members"]] == params  # 2,410 each: analysis against torch's own count
    assert summary["total"]["params"] == sum(params) == 3 * 2410
    assert summary["total"]["flops"] == sum(analyze(s).flops for s in specs) + 2 * 3 * 10 * 2
    assert summary["total"]["combination_flops"] == combine_flops("vote", 3, 10) == 120
    assert run(["summary", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == summary["total"]
    assert run(["summary", str(path)]) == 0
    assert f"{sum(params):,}" in capsys.readouterr().out


def test_a_snapshot_stem_names_a_weights_file(ensemble_dir):
    path = ensemble_dir(members=[{"dir": "members/00", "weights": "best", "weight": 1.0},
                                 {"dir": "members/00", "weights": "snapshot-2", "weight": 1.0}])
    snapshot = restore_run(path / "members/00", "snapshot-2").model.state_dict()
    other = restore_run(path / "members/02", "best").model.state_dict()
    assert all(torch.equal(snapshot[k], other[k]) for k in snapshot)
    assert read_ensemble(path).members[1].weights == "snapshot-2"
    assert evaluate_run(path)["members"][1]["weights"] == "snapshot-2"
    with pytest.raises(ValueError, match="holds no snapshot-9.safetensors"):
        restore_run(path / "members/00", "snapshot-9")
    with pytest.raises(ValueError, match="are weight files of one run"):
        evaluate_run(path, weights="last")


def _edit(path, change):
    file = path / "ensemble.json"
    record = json.loads(file.read_text())
    change(record)
    file.write_text(json.dumps(record))


def _other_inputs(path):
    spec = (path / "members/01/spec.yaml").read_text()
    assert "input: [1, 8, 8]" in spec
    (path / "members/01/spec.yaml").write_text(spec.replace("input: [1, 8, 8]", "input: [1, 8, 9]"))


BAD = {
    "unknown format": (lambda p: _edit(p, lambda r: r.update(format="archlab-ensemble/9")),
                       ["ensemble.json has format 'archlab-ensemble/9'", "reads 'archlab-ensemble/1'"]),
    "no format": (lambda p: _edit(p, lambda r: r.pop("format")), ["ensemble.json has no format"]),
    "unknown combine": (lambda p: _edit(p, lambda r: r.update(combine="median")),
                        ["combine is one of mean, vote, got 'median'"]),
    "not a run": (lambda p: shutil.rmtree(p / "members/01"), ["members[1]", "is not a run directory"]),
    "missing weights": (lambda p: _edit(p, lambda r: r["members"][0].update(weights="snapshot-7")),
                        ["members[0]: weights 'snapshot-7' names no file", "best, last"]),
    "weights sum to 0": (lambda p: _edit(p, lambda r: [m.update(weight=0) for m in r["members"]]),
                         ["weights sum to 0"]),
    "negative weight": (lambda p: _edit(p, lambda r: r["members"][2].update(weight=-1)),
                        ["members[2]: weight is a number >= 0"]),
    "different inputs": (_other_inputs, ["members/01/spec.yaml", "inputs are", "the first member's"]),
    "not json": (lambda p: (p / "ensemble.json").write_text("{"), ["ensemble.json is not valid JSON"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_ensemble_is_one_message_and_exit_2(ensemble_dir, case, capsys):
    path = ensemble_dir()
    spoil, fragments = BAD[case]
    spoil(path)
    with pytest.raises(RunError):
        read_ensemble(path)
    for command in (["evaluate", str(path)], ["summary", str(path)]):
        assert run(command) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "Traceback" not in err
        for fragment in fragments:
            assert fragment in err, (command, err)


def test_options_that_do_not_apply_to_an_ensemble_are_refused(ensemble_dir, tmp_path, capsys):
    path = ensemble_dir()
    assert run(["evaluate", str(path), "--corrupt", "zero"]) == 2
    assert "--corrupt apply to one run, not an ensemble" in " ".join(capsys.readouterr().err.split())
    assert run(["summary", str(tmp_path)]) == 2  # a folder without ensemble.json is no spec either
    assert "is a directory, not a spec file" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(RunError, match="has no ensemble.json"):
        read_ensemble(tmp_path)
    assert run(["bench", str(path)]) == 2  # one model only: its export is benched
    assert "is an ensemble directory, not one run" in " ".join(capsys.readouterr().err.split())
    vote = ensemble_dir("vote", task="regression")
    with pytest.raises(RunError, match="combine vote .* is for classification"):
        read_ensemble(vote)
