"""search on the sequence tasks: a space over depth and width of a tiny seq2seq and a tiny language
model on text data, the tokenizer trained once per study, each trial a run that evaluate and
predict read, and the bad spaces refused before anything starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab.cli import run
from archlab.exceptions import SpecError
from archlab.search import search
from archlab.training import evaluate_run, predict_run, read_metrics, restore_run

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 60
LM_VOCAB = 40  # the English side alone has fewer subwords to learn


@pytest.fixture(scope="module")
def corpus(toy_text) -> dict[str, str]:
    """240 short sentence pairs of a word-for-word 'translation', as text:SRC,TGT and text:CORPUS."""
    return toy_text(240)


def _train(data: str, vocab: int = VOCAB) -> dict:
    return {"data": data, "epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
            "validation_split": 0.2, "tokenizer": {"kind": "bpe", "vocab_size": vocab}, "device": "cpu"}


def seq2seq_space(data: str, embed: object = VOCAB) -> dict:
    """Depth: the encoder's repeat; width: the feed-forward units of every block."""
    width = {"choice": [16, 64]}
    inputs = {"source": {"shape": [8], "dtype": "long", "pad_id": 0},
              "target": {"shape": [8], "dtype": "long", "pad_id": 0}}
    return {
        "name": "mt-space", "inputs": inputs, "task": {"kind": "seq2seq"},
        "graph": {
            "encoder": {"from": "source", "layers": [
                {"embedding": {"input_dim": embed, "output_dim": 16}, "name": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}},
                {"repeat": {"times": {"int": [1, 2]}, "layers": [
                    {"transformer_encoder": {"num_heads": 2, "ff_dim": width, "dropout": 0.0}}]}}]},
            "embedded": {"from": "target", "layers": [
                {"embedding": {"input_dim": embed if isinstance(embed, int) else VOCAB, "output_dim": 16},
                 "tie": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}}]},
            "dec": {"from": ["embedded", "encoder"], "layers": [
                {"transformer_decoder": {"num_heads": 2, "ff_dim": 32, "dropout": 0.0, "causal": True}},
                {"dense": {"units": VOCAB}}]},
        },
        "outputs": "dec", "train": _train(data),
    }


def lm_space(data: str) -> dict:
    """Depth: the number of causal blocks; width: d_model (the embedding's output, which the blocks take)."""
    return {
        "name": "lm-space", "input": {"shape": [8], "dtype": "long", "pad_id": 0}, "task": {"kind": "language_model"},
        "layers": [
            {"embedding": {"input_dim": LM_VOCAB, "output_dim": {"choice": [8, 32]}}},
            {"positional_embedding": {"max_len": 8, "kind": "learned"}},
            {"repeat": {"times": {"int": [1, 3]}, "layers": [
                {"transformer_encoder": {"num_heads": 2, "ff_dim": 16, "dropout": 0.0, "causal": True}}]}},
            {"dense": {"units": LM_VOCAB}},
        ],
        "train": _train(data, LM_VOCAB),
    }


def _check_trials(result) -> list:
    """Each complete trial's value is its own run's last validation loss; the best is the minimum."""
    trials = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(trials) >= 2
    for t in trials:
        rows = read_metrics(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")
        assert len(rows) == 2 and t.value == pytest.approx(rows[-1]["val_loss"], rel=1e-5)
        # the analysis' parameter count is the built model's
        model = restore_run(t.user_attrs["run_dir"]).model
        assert t.user_attrs["params"] == sum(p.numel() for p in model.parameters())
    best = min(trials, key=lambda t: t.value)
    assert result.best[0]["number"] == best.number and result.best[0]["run_dir"] == best.user_attrs["run_dir"]
    return trials


def test_a_seq2seq_space_over_depth_and_width_minimises_val_loss_with_one_tokenizer(tmp_path, corpus) -> None:
    result = search(seq2seq_space(corpus["pairs"]), None, 3, objectives=["val_loss"], sampler="grid",
                    out=tmp_path)
    assert [(o.name, o.direction) for o in result.objectives] == [("val_loss", "minimize")]
    trials = _check_trials(result)
    depth, width = "graph.encoder.layers[2].repeat.times", "graph.encoder.layers[2].repeat.layers[0]" \
                                                             ".transformer_encoder.ff_dim"
    # three points of the 2 x 2 grid: both the depth and the width took both their values
    assert {t.params[depth] for t in trials} == {1, 2} and {t.params[width] for t in trials} == {16, 64}
    assert len({t.user_attrs["params"] for t in trials}) == len(trials)  # every point built a different model
    # one tokenizer for the study, trained once on the training split; every trial's run holds a copy of it
    study_tokenizer = (result.run_dir / "tokenizer.json").read_text()
    for t in trials:
        assert (tmp_path / t.user_attrs["run_dir"] / "tokenizer.json").read_text() == study_tokenizer
    assert json.loads(study_tokenizer)["model"]["vocab"]["</s>"] == 3

    # the best trial's run is a run like train's: evaluate and predict read it
    best_run = result.best[0]["run_dir"]
    evaluation = evaluate_run(best_run, weights="last", split="train")
    assert evaluation["metrics"]["perplexity"] > 1 and "bleu" in evaluation["metrics"]
    [translated] = predict_run(best_run, "a big dog runs", weights="last")
    assert translated["source"] == "a big dog runs" and isinstance(translated["translation"], str)


def test_a_language_model_space_defaults_to_perplexity_and_prunes_on_val_loss(tmp_path, corpus) -> None:
    result = search(lm_space(corpus["plain"]), None, 3, sampler="random", seed=1, out=tmp_path)
    assert [(o.name, o.direction) for o in result.objectives] == [("val_perplexity", "minimize")]
    trials = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    for t in trials:  # the value is the run's own validation perplexity; the pruner saw it every epoch
        rows = read_metrics(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")
        assert t.value == pytest.approx(rows[-1]["val_perplexity"], rel=1e-5)
        assert t.intermediate_values == {r["epoch"]: pytest.approx(r["val_perplexity"]) for r in rows}
    widths = {t.params["layers[0].embedding.output_dim"] for t in result.study.trials}
    depths = {t.params["layers[2].repeat.times"] for t in result.study.trials}
    assert len(widths) + len(depths) > 2  # the space varied


def test_asha_prunes_on_the_per_epoch_val_loss_of_a_language_model(tmp_path, corpus) -> None:
    space = lm_space(corpus["plain"])
    result = search(space, None, 2, objectives=["val_loss"], pruner="asha", sampler="random", out=tmp_path)
    for t in result.study.trials:
        rows = read_metrics(Path(t.user_attrs["run_dir"]) / "metrics.jsonl")
        assert t.intermediate_values == {r["epoch"]: pytest.approx(r["val_loss"]) for r in rows}


@pytest.mark.parametrize(("change", "message"), [
    # checked before the data loads: the corpus is not even read (these files do not exist)
    (lambda s: s.update(objective=["--objective", "val_accuracy"], space=seq2seq_space("text:none.en,none.de")),
     r"--objective val_accuracy: metric 'accuracy' does not apply to task seq2seq"),
    (lambda s: s.update(space=seq2seq_space(s["space"]["train"]["data"], embed=40)),
     r"embedding's input_dim is 40 but .* has 60 ids .*set input_dim: 60"),
    (lambda s: s["space"]["graph"]["encoder"]["layers"][0]["embedding"].update(input_dim={"choice": [60, 40]}),
     r"graph.encoder.layers\[0\].embedding.input_dim is searched, but the tokenizer fixes the vocabulary at 60"),
    (lambda s: s["space"]["train"]["tokenizer"].update(vocab_size={"choice": [40, 60]}),
     r"train.tokenizer.vocab_size is searched, but a study trains one tokenizer"),
])
def test_a_bad_sequence_search_exits_2_with_one_message_before_any_work(tmp_path, corpus, capsys, change,
                                                                           message) -> None:
    import yaml

    setting = {"space": seq2seq_space(corpus["pairs"]), "objective": []}
    change(setting)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(setting["space"], sort_keys=False), encoding="utf-8")
    out = tmp_path / "runs"
    code = run(["search", str(path), "--trials", "2", "--out", str(out), *setting["objective"]])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    import re

    assert re.search(message, captured.err), captured.err
    assert not out.exists()  # no study, no tokenizer, no trial


def test_the_space_embedding_must_take_the_vocabulary_in_the_python_api_too(tmp_path, corpus) -> None:
    with pytest.raises(SpecError, match=r"set input_dim: 60"):
        search(seq2seq_space(corpus["pairs"], embed=40), None, 2, out=tmp_path)
    assert list(tmp_path.iterdir()) == []
