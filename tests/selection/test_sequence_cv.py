"""cv on text: K folds over the sentence pairs (or a language model's sentences), never over tokens,
one tokenizer from the training split for every fold, and per fold the validation loss, perplexity
and token accuracy with their mean and standard deviation."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import yaml

from archlab.cli import run
from archlab.selection import cross_validate

PAIRS = 120
TRAIN = 96  # text: holds out a seeded 20% of the pairs as its test split, which cv never reads
DEPTH = "graph.encoder.layers[2].repeat.times"


@pytest.fixture(scope="module")
def corpus(toy_text) -> dict[str, str]:
    """120 short sentence pairs of a word-for-word 'translation', as text:SRC,TGT and text:CORPUS."""
    return toy_text(PAIRS)


def seq2seq(data: str, vocab: int = 60) -> dict:
    inputs = {"source": {"shape": [8], "dtype": "long", "pad_id": 0},
              "target": {"shape": [8], "dtype": "long", "pad_id": 0}}
    return {
        "name": "mt-cv", "inputs": inputs, "task": {"kind": "seq2seq"},
        "graph": {
            "encoder": {"from": "source", "layers": [
                {"embedding": {"input_dim": vocab, "output_dim": 16}, "name": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}},
                {"repeat": {"times": 1, "layers": [{"transformer_encoder": {"num_heads": 2, "ff_dim": 16}}]}}]},
            "embedded": {"from": "target", "layers": [
                {"embedding": {"input_dim": vocab, "output_dim": 16}, "tie": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}}]},
            "dec": {"from": ["embedded", "encoder"], "layers": [
                {"transformer_decoder": {"num_heads": 2, "ff_dim": 16, "causal": True}},
                {"dense": {"units": vocab}}]},
        },
        "outputs": "dec",
        "train": {"data": data, "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
                  "tokenizer": {"kind": "bpe", "vocab_size": 60}, "device": "cpu"},
    }


def test_cv_folds_sentence_pairs_and_reports_loss_perplexity_and_token_accuracy(tmp_path, corpus) -> None:
    result = cross_validate(seq2seq(corpus["pairs"]), None, [f"{DEPTH}=1,2"], folds=3, out=tmp_path)
    assert (result.metric, result.direction) == ("perplexity", "min")  # seq2seq's headline metric
    run_dir = result.run_dir
    # the folds partition the sentence pairs: every pair is validated on exactly once, whole
    folds = json.loads((run_dir / "folds.json").read_text())
    assert (folds["samples"], folds["unit"]) == (TRAIN, "sentence pairs")
    held = [i for fold in folds["validation"] for i in fold]
    assert sorted(held) == list(range(TRAIN)) and len(folds["validation"]) == 3
    rows = [json.loads(line) for line in (run_dir / "cv.jsonl").read_text().splitlines()]
    assert sorted((r["config"], r["fold"]) for r in rows) == [(c, f) for c in (0, 1) for f in range(3)]
    assert all(r["train_samples"] == TRAIN - len(folds["validation"][r["fold"]]) for r in rows)
    for r in rows:  # perplexity is exp of the token cross-entropy (no label smoothing here)
        assert r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-4)
        assert 0 <= r["val_token_accuracy"] <= 1
    for config in result.configs:  # mean ± std over the folds, per metric
        mine = [r for r in rows if r["config"] == config["index"]]
        for name in ("loss", "perplexity", "token_accuracy"):
            values = np.array([r[f"val_{name}"] for r in mine])
            assert config["metrics"][name]["val_mean"] == pytest.approx(values.mean())
            assert config["metrics"][name]["val_std"] == pytest.approx(values.std(ddof=1))
        assert config["val_mean"] == config["metrics"]["perplexity"]["val_mean"]
    assert result.configs[0]["params"] < result.configs[1]["params"]  # the deeper encoder
    # one tokenizer for every fold, kept with the sweep
    vocab = json.loads((run_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == 60 and vocab["<pad>"] == 0


def test_cv_of_a_language_model_folds_its_sentences(tmp_path, corpus) -> None:
    spec = {
        "name": "lm-cv", "input": {"shape": [8], "dtype": "long", "pad_id": 0}, "task": {"kind": "language_model"},
        "layers": [{"embedding": {"input_dim": 40, "output_dim": 16}},
                   {"transformer_encoder": {"num_heads": 2, "ff_dim": 16, "causal": True}},
                   {"dense": {"units": 40}}],
        "train": {"data": corpus["plain"], "epochs": 1, "batch_size": 32, "tokenizer": {"vocab_size": 40},
                  "device": "cpu"},
    }
    result = cross_validate(spec, None, ["layers[0].embedding.output_dim=8,16"], folds=2, metric="loss",
                            out=tmp_path)
    assert (result.metric, result.direction) == ("loss", "min")
    folds = json.loads((result.run_dir / "folds.json").read_text())
    assert (folds["samples"], folds["unit"]) == (TRAIN, "sentences")
    assert sorted(i for fold in folds["validation"] for i in fold) == list(range(TRAIN))
    assert [c["val_mean"] for c in result.configs] == [c["metrics"]["loss"]["val_mean"] for c in result.configs]


@pytest.mark.parametrize(("args", "message"), [
    # checked before the data loads: the corpus is not even read (these files do not exist)
    (["--metric", "accuracy", "--data", "text:none.en,none.de"],
     r"--metric: metric 'accuracy' does not apply to task seq2seq"),
    (["--sweep", "train.tokenizer.vocab_size=40,60"], r"--sweep train.tokenizer.vocab_size: cv trains one tokenizer"),
    (["--sweep", "graph.dec.layers[1].dense.units=40,60"],
     r"1 of 2 sweep configuration\(s\) are invalid.*configuration 0 \(graph.dec.layers\[1\].dense.units=40\): "
     r"layers: task seq2seq needs logits \(T, V\) = \(8, 60\)"),
])
def test_bad_sequence_cv_exits_2_with_one_message_before_training(tmp_path, corpus, capsys, args, message) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(seq2seq(corpus["pairs"]), sort_keys=False), encoding="utf-8")
    out = tmp_path / "runs"
    code = run(["cv", str(path), "--folds", "2", "--out", str(out), "-q", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(message, " ".join(err.split())), err
    assert not out.exists() or not any(out.iterdir())  # nothing trained, no run directory


def test_the_cv_command_prints_every_metric_with_its_spread(tmp_path, corpus, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(seq2seq(corpus["pairs"]), sort_keys=False), encoding="utf-8")
    code = run(["cv", str(path), "--folds", "2", "--sweep", f"{DEPTH}=1", "--out", str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "val loss" in out and "val token_accuracy" in out and "val perplexity" in out
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", out)


def test_resuming_a_text_sweep_from_a_folder_that_is_no_cv_run_says_so(tmp_path, corpus) -> None:
    with pytest.raises(ValueError, match=r"is not an archlab cv run \(no cv-plan.json\)"):
        cross_validate(seq2seq(corpus["pairs"]), None, folds=2, resume=tmp_path)
