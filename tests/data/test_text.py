"""Text sources: multi30k (line counts, the first pair) and text: with its bad inputs."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from archlab.data import DataError, TextDataset, load_dataset
from archlab.data._text import MULTI30K_SPLITS

# the real data sets beside the checkout (../shared/data), as the other end-to-end tests find them
DATA = Path(os.environ.get("ARCHLAB_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
needs_multi30k = pytest.mark.skipif(not (DATA / "multi30k" / "train.en.gz").is_file(),
                                    reason="Multi30k files not present (ARCHLAB_DATA/multi30k)")


@needs_multi30k
def test_multi30k_splits_line_counts_and_first_pair() -> None:
    ds = load_dataset("multi30k", data_dir=DATA)
    assert isinstance(ds, TextDataset) and ds.task == "seq2seq" and ds.languages == ("en", "de")
    assert {name: len(split) for name, split in ds.splits.items()} == {
        "train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000,
        "test_2018_flickr": 1071, "test_2017_mscoco": 461}
    assert ds.validation == "val" and ds.test_split == "test_2016_flickr"
    assert ds.pairs("train")[0] == ("Two young, White males are outside near many bushes.",
                                    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.")
    lm = ds.for_task("language_model")
    assert lm.task == "language_model" and lm.sentences("val") == ds.sentences("val")
    assert lm.splits["train"].target is None


def _multi30k_copy(tmp_path: Path, train_lines: int) -> Path:
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for split, n in MULTI30K_SPLITS.items():
        n = train_lines if split == "train" else n
        for lang in ("en", "de"):
            (folder / f"{split}.{lang}.gz").write_bytes(gzip.compress("".join(f"s{i}\n" for i in range(n)).encode()))
    return folder


def test_multi30k_with_a_truncated_file_names_it_and_the_expected_count(tmp_path: Path) -> None:
    folder = _multi30k_copy(tmp_path, 28999)
    with pytest.raises(DataError, match=r"train\.en\.gz: 28999 lines, but Multi30k's train split has 29000"):
        load_dataset("multi30k", data_dir=folder)


def test_multi30k_missing_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHLAB_DATA", raising=False)
    monkeypatch.setattr("archlab.data._paths.cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(DataError, match=r"(?s)Multi30k files were not found; get the raw files.*Searched, in order"):
        load_dataset("multi30k", data_dir=tmp_path)


def test_text_parallel_and_plain_corpus_split_the_same_fixed_way(tmp_path: Path) -> None:
    (tmp_path / "a.en").write_text("".join(f"sentence {i}\n" for i in range(10)))
    (tmp_path / "a.de").write_text("".join(f"Satz {i}\n" for i in range(10)))
    pair = load_dataset(f"text:{tmp_path / 'a.en'},{tmp_path / 'a.de'}")
    assert pair.task == "seq2seq" and pair.languages == ("en", "de")
    assert (len(pair.splits["train"]), len(pair.splits["test"])) == (8, 2)
    assert all(s.split()[1] == t.split()[1] for s, t in pair.pairs("train") + pair.pairs("test"))  # aligned
    plain = load_dataset(f"text:{tmp_path / 'a.en'}")
    assert plain.task == "language_model" and plain.splits["train"].target is None
    assert plain.sentences("test") == pair.sentences("test")  # the same seeded split
    with pytest.raises(DataError, match="task seq2seq needs a parallel one"):
        plain.for_task("seq2seq")


def test_text_parallel_files_of_different_lengths_name_both_files_and_counts(tmp_path: Path) -> None:
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    with pytest.raises(DataError, match=r"a\.en has 3 lines but .*a\.de has 2"):
        load_dataset(f"text:{tmp_path / 'a.en'},{tmp_path / 'a.de'}")


@pytest.mark.parametrize("text, line", [("one\n\nthree\n", 2), ("one\ntwo\n   \n", 3), ("\n", 1)])
def test_text_empty_line_is_named_with_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "corpus.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=rf"corpus\.txt\.gz, line {line}: empty line"):
        load_dataset(f"text:{path}")


def test_text_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("ok\nstill ok\nMänner\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt, line 3: not UTF-8"):
        load_dataset(f"text:{path}")


@pytest.mark.parametrize("argument, message", [
    ("a,b,c", "one comma"), ("a,", "one comma"), ("missing.txt", "file not found")])
def test_text_bad_arguments(tmp_path: Path, argument: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(f"text:{argument}")
