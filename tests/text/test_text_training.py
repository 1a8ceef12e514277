"""Text data through the one fit path: train a tiny seq2seq spec on a parallel corpus, then
evaluate (sacreBLEU, chrF) and predict (a translation) from the run's own tokenizer."""

from __future__ import annotations

import json

import pytest

from archlab.exceptions import SpecError
from archlab.training import evaluate_run, predict_run, train

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def corpus(toy_text) -> str:
    """600 sentence pairs of a word-for-word 'translation' (3-5 words each)."""
    return toy_text(600)["pairs"]


def spec(data: str, vocab: int = 80, embed: int | None = None) -> dict:
    inputs = {"source": {"shape": [12], "dtype": "long", "pad_id": 0},
              "target": {"shape": [12], "dtype": "long", "pad_id": 0}}
    return {
        "name": "tiny-mt", "inputs": inputs, "task": {"kind": "seq2seq"},
        "graph": {
            "encoder": {"from": "source", "layers": [
                {"embedding": {"input_dim": embed or vocab, "output_dim": 32}, "name": "emb"},
                {"positional_embedding": {"max_len": 12, "kind": "sinusoidal"}},
                {"transformer_encoder": {"num_heads": 2, "ff_dim": 64, "dropout": 0.0}}]},
            "embedded": {"from": "target", "layers": [
                {"embedding": {"input_dim": embed or vocab, "output_dim": 32}, "tie": "emb"},
                {"positional_embedding": {"max_len": 12, "kind": "sinusoidal"}}]},
            "dec": {"from": ["embedded", "encoder"], "layers": [
                {"transformer_decoder": {"num_heads": 2, "ff_dim": 64, "dropout": 0.0, "causal": True}},
                {"dense": {"units": vocab}}]},
        },
        "outputs": "dec",
        "train": {"data": data, "epochs": 12, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
                  "validation_split": 0.1, "tokenizer": {"kind": "bpe", "vocab_size": vocab}, "device": "cpu",
                  "bucketing": True},
    }


def test_a_parallel_corpus_trains_evaluates_with_bleu_and_translates(tmp_path, corpus) -> None:
    result = train(spec(corpus), out=tmp_path, verbose=0)
    run = result.run_dir
    assert (run / "tokenizer.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["text"]["vocab_size"] == 80 and summary["text"]["truncated"] == {}
    assert result.test_metrics["token_accuracy"] > 0.8

    evaluation = evaluate_run(run, weights="last")
    assert evaluation["metrics"]["loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-4)
    assert evaluation["metrics"]["bleu"] > 50 and evaluation["metrics"]["chrf"] > 60

    [translated] = predict_run(run, "a big dog runs", weights="last")
    assert translated["source"] == "a big dog runs"
    assert translated["translation"].split()[:2] == ["ein", "groß"]  # word for word, as the corpus taught


def test_an_embedding_smaller_than_the_vocabulary_says_what_to_change(tmp_path, corpus) -> None:
    with pytest.raises(SpecError, match=r"input_dim is 40 but .* has 80 ids.*set input_dim: 80"):
        train(spec(corpus, embed=40), out=tmp_path, verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_a_seq2seq_spec_without_the_target_input_is_refused(tmp_path, corpus) -> None:
    broken = spec(corpus)
    broken["inputs"]["decoder_in"] = broken["inputs"].pop("target")
    broken["graph"]["embedded"]["from"] = "decoder_in"
    with pytest.raises(SpecError, match=r"task seq2seq reads the inputs source .* and target .*lacks target"):
        train(broken, out=tmp_path, verbose=0)
