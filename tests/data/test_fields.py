"""Categorical fields as global ids (encode_fields, discretise) and movielens-100k on the real files."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from archlab.data import DataError, Dataset, Field, load_dataset, split_train_test
from archlab.data._fields import discretise, encode_fields


def test_encode_fields_offsets_vocabulary_from_train_and_one_oov_id_per_field():
    x_train, x_test, fields, oov = encode_fields(
        ["colour", "size"],
        [np.array(["red", "blue", "red"]), np.array(["S", "M", "L"])],
        [np.array(["green", "blue"]), np.array(["XL", "XXL"])])
    # colour: blue 0, red 1, OOV 2 ; size: offset 3, L 3, M 4, S 5, OOV 6
    assert fields == (Field("colour", 3, 0), Field("size", 4, 3))
    assert x_train.tolist() == [[1, 5], [0, 4], [1, 3]]
    assert x_test.tolist() == [[2, 6], [0, 6]]
    assert oov == {"test": {"colour": 1, "size": 2}}
    assert x_train.dtype == np.int64 and fields[1].oov_id == 6


def test_discretise_follows_the_criteo_rule():
    values = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 1000.0, np.nan])
    # floor(ln(x)^2): ln 3 = 1.10 -> 1 ; ln 7 = 1.95 -> 3 ; ln 8 = 2.08 -> 4 ; ln 1000 = 6.91 -> 47
    assert discretise(values).tolist() == ["-1", "0", "1", "2", "b1", "b3", "b4", "b47", "missing"]


def test_dataset_binary_task_checks_its_targets():
    x = np.zeros((3, 2), np.int64)
    with pytest.raises(DataError, match="binary targets are 0 or 1, but y_train holds 2"):
        Dataset("t", x, np.array([0, 1, 2]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory")
    fields = (Field("a", 2, 0), Field("b", 2, 2))
    with pytest.raises(DataError, match=r"int64 ids in 0\.\.3"):
        Dataset("t", x + 4, np.array([0, 1, 1]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory",
                fields=fields)
    ds = Dataset("t", x, np.array([0, 1, 1]), x, np.array([0, 1, 1]), "binary", ("0", "1"), "memory", fields=fields)
    assert ds.vocab_size == 4
    assert ds.describe().endswith("2 classes: 0, 1, 2 categorical fields, vocabulary 4 ids")


@pytest.fixture
def movielens(shared_data):
    if not (shared_data / "ml-100k").is_dir():
        pytest.skip("no MovieLens 100K copy in shared/data/ml-100k")
    return shared_data


def test_movielens_100k_fields_split_and_labels(movielens):
    ds = load_dataset("movielens-100k", movielens)
    assert ds.task == "binary" and ds.classes == ("0", "1")
    assert (len(ds.x_train), len(ds.x_test)) == (80_000, 20_000)
    names = [f.name for f in ds.fields]
    assert names[:6] == ["user", "item", "age", "gender", "occupation", "zip"] and len(names) == 25
    assert names[6] == "genre_unknown" and names[-1] == "genre_Western"
    sizes = {f.name: f.size for f in ds.fields}
    # every user is in the training split (943 + OOV); 2 genders; 21 occupations; 7 age groups; genres 0/1
    assert (sizes["user"], sizes["gender"], sizes["occupation"], sizes["age"]) == (944, 3, 22, 8)
    assert all(sizes[n] == 3 for n in names[6:])
    assert ds.vocab_size == sum(sizes.values()) == 2707
    offsets = [f.offset for f in ds.fields]
    assert offsets == list(np.cumsum([0] + [f.size for f in ds.fields[:-1]]))
    # positives: ratings 4 and 5 are 34,174 + 21,201 of the 100,000
    assert int(ds.y_train.sum() + ds.y_test.sum()) == 55_375
    assert ds.oov == {"test": {"item": int((ds.x_test[:, 1] == ds.fields[1].oov_id).sum())}}
    assert ds.oov["test"]["item"] > 0 and "train" not in ds.oov
    again = load_dataset("movielens-100k", movielens)
    assert np.array_equal(again.x_test, ds.x_test) and np.array_equal(again.y_train, ds.y_train)


def test_movielens_first_rating_is_encoded_from_the_files(movielens):
    # u.data's first line: user 196, item 242, rating 3 (negative); user 196: 49, M, writer, 55105
    ds = load_dataset("movielens-100k", movielens)
    order = np.random.default_rng(0).permutation(100_000)
    split, row = ("train", int(np.where(order == 0)[0][0])) if np.where(order == 0)[0][0] < 80_000 else \
        ("test", int(np.where(order == 0)[0][0]) - 80_000)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    f = {field.name: field for field in ds.fields}
    assert y[row] == 0
    assert x[row, 2] - f["age"].offset == 4  # 49 is in the 45-49 group: the 5th bound passed
    assert x[row, 3] - f["gender"].offset == 1  # F 0, M 1
    assert x[row, 5] - f["zip"].offset == 5  # zip areas sort 0..9 then letters


def test_movielens_missing_or_changed_files_say_what_to_do(movielens, tmp_path):
    with pytest.raises(DataError, match=r"(?s)never downloads them.*grouplens.org.*Searched"):
        load_dataset("movielens-100k", tmp_path)
    copy = tmp_path / "ml-100k"
    shutil.copytree(movielens / "ml-100k", copy)
    (copy / "u.user.gz").chmod(0o644)
    (copy / "u.user.gz").write_bytes(gzip.compress(b"1|24|M|technician|85711\n"))
    with pytest.raises(DataError, match=r"u.user.gz: its content differs from GroupLens' u.user"):
        load_dataset("movielens-100k", tmp_path)


# --- criteo-sample ------------------------------------------------------------------------

def test_criteo_sample_is_39_fields_binary_and_stratified(shared_data):
    if not (shared_data / "criteo_sample").is_dir():
        pytest.skip("no criteo_sample copy in shared/data")
    ds = load_dataset("criteo-sample", shared_data)
    assert ds.task == "binary" and (len(ds.x_train), len(ds.x_test)) == (160, 40)
    assert [f.name for f in ds.fields] == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert int(ds.y_train.sum() + ds.y_test.sum()) == 49  # 151 x 0 and 49 x 1 in the file
    assert int(ds.y_test.sum()) == 10  # stratified: a fifth of the positives (49 * 0.2, rounded)
    # every test value that is no training value is counted under its field
    for field in ds.fields:
        j = ds.fields.index(field)
        assert int((ds.x_test[:, j] == field.oov_id).sum()) == ds.oov.get("test", {}).get(field.name, 0)
        assert not (ds.x_train[:, j] == field.oov_id).any()


# --- csv: declared column types -----------------------------------------------------------

def write_table(tmp_path, rows, header="city,visits,kind,label"):
    path = tmp_path / "t.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def cities(n=40):
    names = ["paris", "rome", "oslo", "lima"]
    return [f"{names[i % 4]},{[0, 1, 3, 8, ''][i % 5]},{'ab'[i % 2]},{i % 2}" for i in range(n)]


def test_csv_categorical_and_numeric_columns_become_field_ids(tmp_path):
    rows = cities()
    rows[15], rows[29] = "tokyo,1000,a,1", "lima,2,b,1"  # labels kept: both rows land in the test split
    ds = load_dataset(f"csv:{write_table(tmp_path, rows)}?target=label&categorical=city,kind&numeric=visits"
                      "&task=binary")
    assert ds.task == "binary" and [f.name for f in ds.fields] == ["city", "visits", "kind"]
    assert ds.x_train.dtype == np.int64 and ds.input_shape == (3,)
    y = np.array([int(r.rsplit(",", 1)[1]) for r in rows])
    _, test, _, _ = split_train_test(np.arange(len(rows)), y, stratify=True, where="test")
    assert {15, 29} <= set(test.tolist())
    # city: lima oslo paris rome + OOV; visits buckets 0, 1, b1 (3), b4 (8), missing + OOV; kind a b + OOV
    assert [(f.size, f.offset) for f in ds.fields] == [(5, 0), (6, 5), (3, 11)]
    # tokyo and its 1000 visits (bucket b47), and 2 visits, are values only the test split has
    assert ds.oov == {"test": {"city": 1, "visits": 2}}
    tokyo = ds.x_test[test.tolist().index(15)]
    assert tokyo.tolist() == [4, 10, 11]  # city OOV, visits OOV, kind 'a'


@pytest.mark.parametrize("options,pattern", [
    ("categorical=city,knd&numeric=visits", r"option categorical=: no column 'knd'.*did you mean 'kind'"),
    ("categorical=city", r"column\(s\) 'visits', 'kind' are in none of categorical=, numeric= and dense="
                         r".*second named input"),
    ("categorical=city,kind,label&numeric=visits", r"'label' is the target column"),
    ("categorical=city,kind,visits&numeric=visits", r"'visits' is both categorical and numeric; list it in one"),
])
def test_csv_column_type_option_errors(tmp_path, options, pattern):
    path = write_table(tmp_path, cities())
    with pytest.raises(DataError, match=pattern):
        load_dataset(f"csv:{path}?{options}")


@pytest.mark.parametrize("cell,pattern", [
    ("nan", r"line 4, column 'visits': 'nan' is not a finite number \(the first such row\)"),
    ("inf", r"line 4, column 'visits': 'inf' is not a finite number"),
    ("many", r"line 4, column 'visits': 'many' is not a number; list the column in categorical="),
])
def test_csv_numeric_column_refuses_nan_inf_and_text_naming_the_first_row(tmp_path, cell, pattern):
    rows = cities()
    rows[2] = f"rome,{cell},a,0"
    rows[5] = f"rome,{cell},a,0"
    with pytest.raises(DataError, match=pattern):
        load_dataset(f"csv:{write_table(tmp_path, rows)}?categorical=city,kind&numeric=visits")


def test_binary_labels_outside_0_1_are_refused_with_the_line(tmp_path):
    rows = cities()
    rows[6] = "rome,1,a,2"
    path = write_table(tmp_path, rows)
    with pytest.raises(DataError, match=r"line 8, column 'label': '2' is not a binary label"):
        load_dataset(f"csv:{path}?categorical=city,kind&numeric=visits&task=binary")
    plain = tmp_path / "plain.csv"
    plain.write_text("a,label\n" + "\n".join(f"{i},{2 if i == 6 else i % 2}" for i in range(40)) + "\n")
    with pytest.raises(DataError, match=r"line 8, column 'label': '2' is not a binary label"):
        load_dataset(f"csv:{plain}?task=binary")
    ok = load_dataset(f"csv:{path}?task=binary&categorical=city,kind&numeric=visits".replace(str(path), str(
        write_table(tmp_path, cities()))))
    assert ok.task == "binary" and set(np.unique(ok.y_train)) == {0, 1}


# --- the command line: a categorical table trains, and bad input stops before any work ----

FM_SPEC = """name: tiny-fm
input: {shape: [3], dtype: long}
task: {kind: binary}
layers:
  - parallel:
      merge: add
      branches:
        - [{embedding: {input_dim: 14, output_dim: 1, init_std: 0.01}}, reduce, bias]
        - [{embedding: {input_dim: 14, output_dim: 2, init_std: 0.01}}, fm]
  - sigmoid
"""
OPTIONS = "target=label&categorical=city,kind&numeric=visits&task=binary"


def cli(capsys, *args):
    from archlab.cli import run

    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_on_a_categorical_csv_records_the_oov_counts(tmp_path, capsys):
    rows = cities()
    rows[15] = "tokyo,1000,a,1"
    data = write_table(tmp_path, rows)
    spec = tmp_path / "fm.yaml"
    spec.write_text(FM_SPEC)
    code, out, err = cli(capsys, "train", spec, "--data", f"csv:{data}?{OPTIONS}", "--epochs", "2", "--quiet",
                         "--out", tmp_path / "runs")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["oov"] == {"test": {"city": 1, "visits": 1}}
    assert summary["params"] == 14 + 1 + 14 * 2


@pytest.mark.parametrize("change,fragments", [
    (lambda rows, options: (rows, options.replace("kind", "knid")),
     ["option categorical=: no column 'knid'", "did you mean 'kind'"]),
    (lambda rows, options: (rows[:3] + ["rome,nan,a,1"] + rows[4:], options),
     ["line 5, column 'visits': 'nan' is not a finite number"]),
    (lambda rows, options: (rows[:3] + ["rome,inf,a,1"] + rows[4:], options),
     ["line 5, column 'visits': 'inf' is not a finite number"]),
    (lambda rows, options: (rows[:3] + ["rome,3,a,yes"] + rows[4:], options),
     ["line 5, column 'label': 'yes' is not a binary label"]),
    (lambda rows, options: (rows, options), ["layers[0].parallel.branches[0][0].embedding.input_dim",
                                             "set input_dim: 14"]),
])
def test_bad_categorical_input_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, change, fragments):
    rows, options = change(cities(), OPTIONS)
    data = write_table(tmp_path, rows)
    spec = tmp_path / "fm.yaml"
    spec.write_text(FM_SPEC.replace("input_dim: 14", "input_dim: 13", 1) if "input_dim" in fragments[0] else FM_SPEC)
    code, out, err = cli(capsys, "train", spec, "--data", f"csv:{data}?{options}", "--epochs", "1", "--quiet",
                         "--out", tmp_path / "runs")
    assert code == 2, (out, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_an_fm_trains_on_criteo_sample_with_the_vocabulary_the_dataset_states(shared_data):
    if not (shared_data / "criteo_sample").is_dir():
        pytest.skip("no criteo_sample copy in shared/data")
    import archlab

    ds = load_dataset("criteo-sample", shared_data)
    spec = FM_SPEC.replace("shape: [3]", f"shape: [{len(ds.fields)}]").replace("input_dim: 14", f"input_dim: "
                                                                                              f"{ds.vocab_size}")
    result = archlab.train(spec, data="criteo-sample", data_dir=shared_data, out=None, verbose=0, epochs=2)
    assert result.summary["params"] == 3 * ds.vocab_size + 1
    assert result.summary["oov"] == ds.oov and result.summary["test_samples"] == 40
    assert 0 < result.test_metrics["loss"] < 1
