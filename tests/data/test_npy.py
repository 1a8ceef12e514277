"""npy:DIR (memory-mapped .npy files) and write_npy_dir / ``archlab data convert``: round trips,
the chunked CSV conversion against ``csv:`` loading, and bad folders refused in one message."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from archlab._inputs import as_named
from archlab.cli import run
from archlab.data import DataError, load_dataset, write_npy_dir


def _same(a, b) -> None:
    """Two data sets hold the same arrays, split, task, classes, fields and counts."""
    assert (a.task, a.classes, a.fields, a.fields_input, a.oov or {}) == \
        (b.task, b.classes, b.fields, b.fields_input, b.oov or {})
    assert a.named == b.named and a.input_shapes == b.input_shapes
    for xa, xb in ((a.x_train, b.x_train), (a.x_test, b.x_test)):
        for key, array in as_named(xa).items():
            assert as_named(xb)[key].dtype == array.dtype
            np.testing.assert_array_equal(as_named(xb)[key], array)
    np.testing.assert_array_equal(b.y_train, a.y_train)
    np.testing.assert_array_equal(b.y_test, a.y_test)


def test_digits_round_trip_is_memory_mapped(tmp_path: Path) -> None:
    folder = write_npy_dir("digits", tmp_path / "digits")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy",
                                                          "y_train.npy"]
    mapped = load_dataset(f"npy:{folder}")
    assert isinstance(mapped.x_train, np.memmap) and isinstance(mapped.x_test, np.memmap)
    assert Path(mapped.x_train.filename) == (folder / "x_train.npy").resolve()
    _same(load_dataset("digits"), mapped)
    assert mapped.describe().split(": ", 1)[1] == load_dataset("digits").describe().split(": ", 1)[1]


def test_named_inputs_round_trip(named_task, tmp_path: Path) -> None:
    data, _ = named_task("binary")
    folder = write_npy_dir(data, tmp_path / "named")
    assert sorted(p.name for p in (folder / "x_train").iterdir()) == ["ids.npy", "num.npy"]
    mapped = load_dataset(f"npy:{folder}")
    assert mapped.named and all(isinstance(a, np.memmap) for a in mapped.x_train.values())
    assert mapped.x_train["ids"].dtype == np.int64 and mapped.x_train["num"].dtype == np.float32
    _same(load_dataset(data), mapped)


def test_a_folder_written_by_hand_needs_no_meta(tmp_path: Path) -> None:
    """Without meta.json the targets are read as in an .npz: text labels are classes, floats regression."""
    np.save(tmp_path / "x_train.npy", np.arange(12, dtype=np.float32))  # (N,) is one feature per sample
    np.save(tmp_path / "x_test.npy", np.arange(4, dtype=np.float32))
    np.save(tmp_path / "y_train.npy", np.array(["b", "a", "c"] * 4))
    np.save(tmp_path / "y_test.npy", np.array(["a", "c", "c", "b"]))
    ds = load_dataset(f"npy:{tmp_path}")
    assert ds.input_shape == (1,) and ds.classes == ("a", "b", "c")
    assert ds.y_train[:3].tolist() == [1, 0, 2] and ds.y_test.tolist() == [0, 2, 2, 1]


def _table(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w") as file:
        file.write("user,item,age,score,label\n")
        for _ in range(rows):
            age = rng.integers(1, 90) if rng.random() > 0.1 else ""  # empty: a missing value, its own bucket
            file.write(f"u{rng.integers(25)},i{rng.integers(150)},{age},{rng.random():.4f},{rng.integers(2)}\n")


@pytest.mark.parametrize("options", ["?categorical=user,item&numeric=age&dense=score&task=binary",
                                     "?categorical=user,item&numeric=age,score", "?target=label&task=regression"])
def test_chunked_csv_conversion_equals_csv_loading(tmp_path: Path, options: str) -> None:
    """Chunks of 37 rows (so the 300 rows span nine, the last one short): the same ids, vocabularies,
    out-of-vocabulary counts and split as reading the table whole."""
    path = tmp_path / "table.csv"
    _table(path, 300)
    if "regression" in options:  # a plain table of numbers: no empty cells, no text
        path.write_text("\n".join(line.replace("u", "").replace("i", "").replace(",,", ",0,")
                                  for line in path.read_text().splitlines()) + "\n")
    name = f"csv:{path}{options}"
    folder = write_npy_dir(name, tmp_path / "out", chunk_rows=37)
    whole, mapped = load_dataset(name), load_dataset(f"npy:{folder}")
    _same(whole, mapped)
    assert mapped.fields is None or mapped.oov["test"]["item"] > 0  # items training never saw
    assert json.loads((folder / "meta.json").read_text())["source"] == str(path.resolve())


def test_conversion_holds_a_chunk_not_the_table(tmp_path: Path) -> None:
    """Peak Python allocations of the chunked conversion against reading the table whole."""
    options = "?categorical=user,item&numeric=age,score"
    _table(tmp_path / "small.csv", 50)
    write_npy_dir(f"csv:{tmp_path / 'small.csv'}{options}", tmp_path / "warm")  # imports are not the table
    path = tmp_path / "big.csv"
    _table(path, 12_000)
    name = f"csv:{path}{options}"
    tracemalloc.start()
    try:
        load_dataset(name)
        whole = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        write_npy_dir(name, tmp_path / "out", chunk_rows=500)
        chunked = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert chunked < whole / 4, (chunked, whole)  # measured: 1.3 MB against 7.6 MB


def test_the_data_convert_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    _table(path, 60)
    assert run(["data", "convert", f"csv:{path}?categorical=user,item,age,score", str(tmp_path / "out"),
                "--chunk-rows", "7"]) == 0
    out = capsys.readouterr().out
    assert f"data: npy:{tmp_path / 'out'}" in out and "4 categorical fields" in out
    assert run(["data", "convert", "digits", str(tmp_path / "out")]) == 2  # not empty: refused, kept
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "x_train.npy").is_file()


def _folder(tmp_path: Path) -> Path:
    folder = write_npy_dir("digits", tmp_path / "d")
    return folder


def _missing(folder: Path) -> None:
    (folder / "y_test.npy").unlink()


def _short(folder: Path) -> None:
    np.save(folder / "y_train.npy", np.load(folder / "y_train.npy")[:-3])


def _not_npy(folder: Path) -> None:
    (folder / "x_test.npy").write_text("0,1,2\n")


def _stray(folder: Path) -> None:
    (folder / "x_train").mkdir()


def _bad_meta(folder: Path) -> None:
    (folder / "meta.json").write_text('{"task": "clasification"}')


def _object(folder: Path) -> None:
    np.save(folder / "x_train.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)


@pytest.mark.parametrize(("damage", "message"), [
    (_missing, "lacks y_test.npy; npy:DIR reads a folder with x_train.npy"),
    (_short, "x_train.npy has 1437 rows but y_train.npy (1434,)"),
    (_not_npy, "x_test.npy: is not a readable .npy file of numbers"),
    (_stray, "holds both x_train.npy and named inputs x_train/"),
    (_object, "x_train.npy: is not a readable .npy file of numbers"),
    (_bad_meta, "meta.json: task is one of classification, binary, regression, got 'clasification'"),
])
def test_a_bad_folder_is_one_message_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage,
                                                message: str) -> None:
    folder = _folder(tmp_path)
    damage(folder)
    with pytest.raises(DataError, match="npy|rows|both|meta"):
        load_dataset(f"npy:{folder}")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ninput: [1, 8, 8]\ntask: {kind: classification}\n"
                    "layers: [flatten, {dense: {units: 10, activation: softmax}}]\n")
    assert run(["train", str(spec), "--data", f"npy:{folder}", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_named_input_folder_with_another_file_is_refused(named_task, tmp_path: Path) -> None:
    folder = write_npy_dir(named_task("regression")[0], tmp_path / "n")
    (folder / "x_test" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x_test: named inputs are \.npy files <name>\.npy, found notes\.txt"):
        load_dataset(f"npy:{folder}")


def test_no_folder_says_what_one_holds(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no folder .*archlab data convert SOURCE"):
        load_dataset(f"npy:{tmp_path / 'nowhere'}")
