"""Text runs through the command line: evaluate on a text data set's named splits, a language
model's continuations from predict, and bad text input refused with one message (exit 2) before
anything is written."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from archlab.cli import run
from archlab.data import TextDataset, TextSplit, find_data_dir, register_dataset, registry

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2, one error line, no traceback."""
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, err)


def mt_spec(data: str, vocab: int = 60, epochs: int = 3) -> dict:
    inputs = {"source": {"shape": [8], "dtype": "long", "pad_id": 0},
              "target": {"shape": [8], "dtype": "long", "pad_id": 0}}
    return {
        "name": "tiny-mt", "inputs": inputs, "task": {"kind": "seq2seq"},
        "graph": {
            "encoder": {"from": "source", "layers": [
                {"embedding": {"input_dim": vocab, "output_dim": 16}, "name": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}},
                {"transformer_encoder": {"num_heads": 2, "ff_dim": 32, "dropout": 0.0}}]},
            "embedded": {"from": "target", "layers": [
                {"embedding": {"input_dim": vocab, "output_dim": 16}, "tie": "emb"},
                {"positional_embedding": {"max_len": 8, "kind": "sinusoidal"}}]},
            "dec": {"from": ["embedded", "encoder"], "layers": [
                {"transformer_decoder": {"num_heads": 2, "ff_dim": 32, "dropout": 0.0, "causal": True}},
                {"dense": {"units": vocab}}]},
        },
        "outputs": "dec",
        "train": {"data": data, "epochs": epochs, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
                  "validation_split": 0.1, "tokenizer": {"kind": "bpe", "vocab_size": vocab}, "device": "cpu"},
    }


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


# -- evaluate on named splits ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def named_run(tmp_path_factory, toy_text) -> Path:
    """A tiny translation run on a data set with named held-out splits (as Multi30k has), registered
    for this module."""
    @register_dataset("toy-named", override=True)
    def _load(request) -> TextDataset:
        named = {"train": toy_text.pairs(200, 0), "val": toy_text.pairs(20, 1), "test_a": toy_text.pairs(30, 2),
                 "test_b": toy_text.pairs(17, 3)}
        splits = {name: TextSplit(tuple(s for s, _ in rows), tuple(t for _, t in rows)) for name, rows in named.items()}
        return TextDataset(request.name, "seq2seq", splits, "memory", ("en", "de"), validation="val",
                           test_splits=("test_a", "test_b"))

    folder = tmp_path_factory.mktemp("named")
    spec = write_spec(folder / "spec.yaml", mt_spec("toy-named"))
    code = run(["train", str(spec), "--out", str(folder / "runs"), "-q"])
    assert code == 0
    yield next((folder / "runs").iterdir())
    registry.unregister("toy-named")


def test_evaluate_takes_a_text_data_sets_named_split(capsys, named_run: Path) -> None:
    code, out, err = cli(capsys, "evaluate", named_run, "--split", "test_b")
    assert code == 0, err
    record = json.loads((named_run / "evaluation-test_b-best.json").read_text())
    assert (record["split"], record["samples"]) == ("test_b", 17)  # test_b's 17 pairs, not test_a's 30
    assert {"bleu", "chrf", "perplexity", "token_accuracy"} <= set(record["metrics"])
    assert out.splitlines()[0] == "toy-named test_b (17 samples, best weights)"
    # test is the usual held-out split (the first one): the same numbers as test_a by its name
    assert cli(capsys, "evaluate", named_run, "--split", "test")[0] == 0
    assert cli(capsys, "evaluate", named_run, "--split", "test_a")[0] == 0
    usual = json.loads((named_run / "evaluation-test-best.json").read_text())
    by_name = json.loads((named_run / "evaluation-test_a-best.json").read_text())
    assert usual["samples"] == by_name["samples"] == 30
    assert usual["metrics"] == by_name["metrics"] != record["metrics"]


def test_an_unknown_split_lists_the_data_sets_splits(capsys, named_run: Path) -> None:
    before = sorted(p.name for p in named_run.iterdir())
    code, out, err = cli(capsys, "evaluate", named_run, "--split", "test_c")
    assert_bad_input(code, out, err, "--split 'test_c': toy-named has the splits test, train, val, test_a, test_b")
    assert sorted(p.name for p in named_run.iterdir()) == before


#: the real data sets beside the checkout, as the other end-to-end tests find them
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(find_data_dir("multi30k", SHARED) is None, reason=f"the Multi30k files are not in {SHARED}")
def test_a_multi30k_run_knows_multi30ks_splits(capsys, tmp_path: Path) -> None:
    """Reads the real files' splits only: the split is refused before weights or encoding."""
    from archlab.training import resolve_recipe

    example = Path(__file__).resolve().parents[2] / "examples" / "translation" / "transformer-multi30k.yaml"
    shutil.copy(example, tmp_path / "spec.yaml")
    recipe = resolve_recipe(yaml.safe_load(example.read_text())["train"])
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json")), encoding="utf-8")
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")  # a text run; never read before the refusal
    code, out, err = cli(capsys, "evaluate", tmp_path, "--split", "test_2019_flickr", "--data-dir", SHARED)
    assert_bad_input(code, out, err, "--split 'test_2019_flickr': multi30k has the splits test, train, val, "
                     "test_2016_flickr, test_2017_flickr, test_2018_flickr, test_2017_mscoco; did you mean "
                     "'test_2018_flickr'?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "spec.yaml", "tokenizer.json"]


# -- a language model's continuations -----------------------------------------------------------------

SUBJECTS = ("a man", "a woman", "a dog", "two girls")
ACTIONS = ("is riding a bike", "is eating an apple", "runs on the grass", "sits on a bench")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A tiny decoder-only LM on 400 sentences 'SUBJECT ACTION' of a plain corpus."""
    folder = tmp_path_factory.mktemp("lm")
    rng = random.Random(0)
    lines = [f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)}" for _ in range(400)]
    (folder / "corpus.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    spec = {"name": "tiny-lm", "input": {"shape": [10], "dtype": "long", "pad_id": 0},
            "task": {"kind": "language_model"},
            "layers": [{"embedding": {"input_dim": 60, "output_dim": 32}, "name": "wte"},
                       {"positional_embedding": {"max_len": 10, "kind": "learned"}},
                       {"transformer_encoder": {"num_heads": 2, "ff_dim": 64, "dropout": 0.0, "causal": True,
                                                "norm_first": True}},
                       {"layernorm": {}}, {"dense": {"units": 60}}],
            "train": {"data": f"text:{folder / 'corpus.txt'}", "epochs": 8, "batch_size": 32,
                      "optimizer": {"name": "adam", "lr": 0.005}, "validation_split": 0.1,
                      "tokenizer": {"kind": "bpe", "vocab_size": 60}, "device": "cpu"}}
    path = write_spec(folder / "lm.yaml", spec)
    assert run(["train", str(path), "--out", str(folder / "runs"), "-q"]) == 0
    return next((folder / "runs").iterdir())


def test_predict_continues_a_prompt_greedily(capsys, lm_run: Path) -> None:
    code, out, err = cli(capsys, "predict", lm_run, "a man", "--greedy")
    assert code == 0, err
    [line] = out.splitlines()
    assert line.startswith("a man is ") or line.startswith("a man runs ") or line.startswith("a man sits "), line
    assert line.removeprefix("a man ") in ACTIONS  # the corpus' one way to go on, ended by </s>
    # temperature 0 is greedy too
    assert cli(capsys, "predict", lm_run, "a man", "--temperature", "0")[1] == out


def test_sampling_is_reproducible_with_a_seed_and_reads_a_file_of_prompts(capsys, lm_run: Path,
                                                                         tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog\n\ntwo girls\n", encoding="utf-8")  # blank lines are skipped
    args = ("predict", lm_run, prompts, "--temperature", "1.5", "--top-k", "20", "--top-p", "0.95",
            "--max-new-tokens", "6", "--seed", "3")
    code, first, err = cli(capsys, *args)
    assert code == 0, err
    lines = first.splitlines()
    assert [line.split()[:2] for line in lines] == [["a", "dog"], ["two", "girls"]]
    assert cli(capsys, *args)[1] == first  # the same seed, the same samples
    draws = {cli(capsys, *args[:-1], str(seed))[1] for seed in range(6)}
    assert len(draws) > 1  # it does sample: other seeds give other continuations


def test_max_new_tokens_bounds_the_continuation(lm_run: Path) -> None:
    from archlab.training import predict_run

    [one] = predict_run(lm_run, "a woman", greedy=True, max_new_tokens=1)
    [full] = predict_run(lm_run, "a woman", greedy=True)
    assert one["prompt"] == full["prompt"] == "a woman"
    assert len(one["continuation"].split()) == 1 and full["continuation"].startswith(one["continuation"])
    assert full["text"] == f"a woman {full['continuation']}"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--temperature", "-1"], "--temperature is 0 (greedy) or more, got -1.0"),
    (["--top-p", "0"], "--top-p is in (0, 1] (the probability mass kept), got 0.0"),
    (["--top-p", "1.5"], "--top-p is in (0, 1] (the probability mass kept), got 1.5"),
    (["--top-k", "0"], "--top-k is 1 or more (the likeliest tokens kept), got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens is 1 or more, got 0"),
    (["--beam", "4"], "--beam does not apply to a language_model run; it takes --max-new-tokens, --greedy, "
                      "--temperature, --top-k, --top-p, --seed: drop it"),
])
def test_bad_sampling_options_exit_2(capsys, lm_run: Path, args: list[str], fragment: str) -> None:
    assert_bad_input(*cli(capsys, "predict", lm_run, "a man", *args), fragment)


def test_sampling_options_do_not_apply_to_a_translation(capsys, named_run: Path) -> None:
    assert_bad_input(*cli(capsys, "predict", named_run, "a dog runs", "--top-k", "5", "--seed", "1"),
                     "--top-k, --seed do not apply to a seq2seq run; it takes --beam: drop them")


def test_the_number_of_classes_to_show_does_not_apply_to_text(capsys, named_run: Path, lm_run: Path) -> None:
    assert_bad_input(*cli(capsys, "predict", named_run, "a dog runs", "--top", "2"),
                     "--top does not apply to a seq2seq run; it takes --beam: drop it")
    assert_bad_input(*cli(capsys, "predict", lm_run, "a man", "--top", "2"), "--top does not apply to a language_model")


# -- bad text input: one message, exit 2, nothing written -------------------------------------------------

@pytest.fixture
def corpus_dir(tmp_path: Path, toy_text) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    toy_text.write(folder, toy_text.pairs(60, 0))
    return folder


def train_refused(capsys, tmp_path: Path, spec: dict, *fragments: str) -> None:
    """``archlab train`` exits 2 with one message holding ``fragments`` and leaves --out empty."""
    out = tmp_path / "runs"
    out.mkdir()
    path = write_spec(tmp_path / "bad.yaml", spec)
    assert_bad_input(*cli(capsys, "train", path, "--out", out, "-q"), *fragments)
    assert list(out.iterdir()) == []


def test_parallel_files_of_different_lengths(capsys, tmp_path: Path, corpus_dir: Path) -> None:
    target = corpus_dir / "c.de"
    target.write_text("".join(target.read_text(encoding="utf-8").splitlines(keepends=True)[:-2]), encoding="utf-8")
    train_refused(capsys, tmp_path, mt_spec(f"text:{corpus_dir / 'c.en'},{target}"),
                  f"parallel files differ in length: {corpus_dir / 'c.en'} has 60 lines but {target} has 58")


def test_an_empty_line(capsys, tmp_path: Path, corpus_dir: Path) -> None:
    source = corpus_dir / "c.en"
    lines = source.read_text(encoding="utf-8").splitlines()
    lines[6] = "  "
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_refused(capsys, tmp_path, mt_spec(f"text:{source},{corpus_dir / 'c.de'}"),
                  f"{source}, line 7: empty line", "remove the line, in both files")


@pytest.mark.parametrize("named", [False, True])
def test_a_decoder_whose_memory_is_not_connected(capsys, tmp_path: Path, corpus_dir: Path, named: bool) -> None:
    spec = mt_spec(f"text:{corpus_dir / 'c.en'},{corpus_dir / 'c.de'}")
    spec["graph"]["dec"]["from"] = "embedded"  # the encoder's output left unread
    if named:  # a layer item's name key comes before its type
        spec["graph"]["dec"]["layers"][0] = {"name": "decoder", **spec["graph"]["dec"]["layers"][0]}
    train_refused(capsys, tmp_path, spec, "graph.dec.from: transformer_decoder reads 2 tensors, [x, memory], but "
                  "node 'dec' reads only 'embedded': its memory (the encoder's output) is not connected, and "
                  "'encoder' is read by nothing; write from: [embedded, encoder]")


def test_an_additive_cross_attention_without_an_encoder(capsys, tmp_path: Path, corpus_dir: Path) -> None:
    spec = mt_spec(f"text:{corpus_dir / 'c.en'},{corpus_dir / 'c.de'}")
    del spec["graph"]["encoder"]
    spec["graph"]["embedded"]["layers"][0] = {"embedding": {"input_dim": 60, "output_dim": 16}}
    spec["graph"]["dec"] = {"from": "embedded", "layers": [{"additive_cross_attention": {"units": 8}},
                                                         {"dense": {"units": 60}}]}
    train_refused(capsys, tmp_path, spec, "graph.dec.from: additive_cross_attention reads 2 tensors",
                  "input 'source' is read by nothing: encode it in a node (e.g. embedding, transformer_encoder) "
                  "and write from: [embedded, that node]")


def test_an_embedding_that_does_not_match_the_tokenizer(capsys, tmp_path: Path, corpus_dir: Path) -> None:
    spec = mt_spec(f"text:{corpus_dir / 'c.en'},{corpus_dir / 'c.de'}")
    for node in ("encoder", "embedded"):
        spec["graph"][node]["layers"][0]["embedding"]["input_dim"] = 40
    train_refused(capsys, tmp_path, spec, "graph.encoder.layers[0].embedding.input_dim: the embedding's input_dim "
                  "is 40 but text:", "has 60 ids (the tokenizer's vocabulary): set input_dim: 60, or "
                  "train.tokenizer.vocab_size: 40")


def test_an_output_head_that_does_not_match_the_tokenizer(capsys, tmp_path: Path, corpus_dir: Path) -> None:
    spec = mt_spec(f"text:{corpus_dir / 'c.en'},{corpus_dir / 'c.de'}")
    spec["graph"]["dec"]["layers"][1]["dense"]["units"] = 50
    train_refused(capsys, tmp_path, spec, "layers: task seq2seq needs logits (T, V) = (8, 60)",
                  "end with dense: {units: 60} (no activation), or set train.tokenizer.vocab_size to 50")


def test_train_reports_cut_sentences_and_unknown_characters(capsys, tmp_path: Path, toy_text) -> None:
    rows = toy_text.pairs(120, 5)
    rows[:4] = [("a big red dog runs a big red cat sits", "ein groß rot hund läuft ein groß rot katze sitzt")] * 4
    folder = tmp_path / "corpus"
    folder.mkdir()
    data = toy_text.write(folder, rows)["pairs"]
    spec = mt_spec(data, epochs=1)
    code, out, err = cli(capsys, "train", write_spec(tmp_path / "mt.yaml", spec), "--out", tmp_path / "runs", "-q")
    assert code == 0, err
    run_dir = next((tmp_path / "runs").iterdir())
    text = json.loads((run_dir / "summary.json").read_text())["text"]
    cut = sum(sum(by_input.values()) for by_input in text["truncated"].values())
    assert cut >= 4  # the long sentences, 10 words in 8 positions, on both sides
    [line] = [line for line in out.splitlines() if line.startswith("truncated: ")]
    assert line.startswith(f"truncated: {cut} sentences longer than the spec's inputs were cut (")
    assert "source" in line and "target" in line


def test_train_reports_characters_the_tokenizer_never_saw(capsys, tmp_path: Path, toy_text) -> None:
    held_out = [(s + "!", t + " über") for s, t in toy_text.pairs(10, 8)]  # '!' and 'ü' appear in no training sentence

    @register_dataset("toy-unseen", override=True)
    def _load(request) -> TextDataset:
        splits = {"train": TextSplit(*map(tuple, zip(*toy_text.pairs(80, 7), strict=True))),
                  "test": TextSplit(*map(tuple, zip(*held_out, strict=True)))}
        return TextDataset(request.name, "seq2seq", splits, "memory", test_splits=("test",))

    try:
        code, out, err = cli(capsys, "train", write_spec(tmp_path / "mt.yaml", mt_spec("toy-unseen", epochs=1)),
                             "--out", tmp_path / "runs", "-q")
    finally:
        registry.unregister("toy-unseen")
    assert code == 0, err
    assert "unknown characters: 20 that the tokenizer never saw became <unk> (test 20; '!' 10, 'ü' 10)" in out
