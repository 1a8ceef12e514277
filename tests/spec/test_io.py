"""Reading and writing specs: every source load() takes, dump/load round trips, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archlab import Spec, SpecError, dump, load

SEED_YAML = """\
archlab: 1
name: seed-mnist-cnn
input: [1, 28, 28]
task: {kind: classification, classes: 10}
layers:
  - conv2d: {filters: 32, kernel_size: 3, activation: relu}
  - maxpool2d: {pool_size: 2}
  - conv2d: {filters: 64, kernel_size: 3, activation: relu}
  - maxpool2d: {pool_size: 2}
  - flatten
  - dense: {units: 128, activation: relu}
  - dense: {units: 10, activation: softmax}
"""

SEED = {
    "archlab": 1,
    "name": "seed-mnist-cnn",
    "input": [1, 28, 28],
    "task": {"kind": "classification", "classes": 10},
    "layers": [
        {"conv2d": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        {"conv2d": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
        {"maxpool2d": {"pool_size": 2}},
        "flatten",
        {"dense": {"units": 128, "activation": "relu"}},
        {"dense": {"units": 10, "activation": "softmax"}},
    ],
}

# Floats written the way people write them in YAML; PyYAML alone would read 1e-5 as a string.
FLOATS_YAML = """\
input: [16]
layers:
  - batchnorm: {epsilon: 1e-5, momentum: 5E-2}
  - layernorm: {epsilon: 1.0e-6}
  - dropout: {rate: .25}
  - dense: {units: 4}
train: {lr: 3e-4, weight_decay: -1e+0, tag: '1e5'}
"""


# -- sources ------------------------------------------------------------------------------------

def test_load_yaml_path_as_str_and_path(tmp_path: Path) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(SEED_YAML)
    assert load(str(path)).to_dict() == SEED
    assert load(path).to_dict() == SEED
    assert load(path) == Spec(SEED)


def test_load_yml_and_extensionless_paths(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(SEED_YAML)
    (tmp_path / "spec").write_text(SEED_YAML)  # no extension: still a file
    assert load(tmp_path / "a.yml").to_dict() == SEED
    assert load(str(tmp_path / "spec")).to_dict() == SEED


def test_load_json_path(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED, indent=2))
    assert load(path).to_dict() == SEED


def test_load_json_path_indented_with_tabs(tmp_path: Path) -> None:
    # valid JSON that YAML refuses (a tab cannot start a YAML token)
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED, indent="\t"))
    assert load(path).to_dict() == SEED


def test_load_yaml_text() -> None:
    assert load(SEED_YAML).to_dict() == SEED


def test_load_json_text_multi_and_single_line() -> None:
    assert load(json.dumps(SEED, indent=2)).to_dict() == SEED
    assert load(json.dumps(SEED)).to_dict() == SEED


def test_load_single_line_text_longer_than_a_file_name() -> None:
    # one line of JSON is not mistaken for a path, however long (no OSError: File name too long)
    spec = dict(SEED, description="x" * 500)
    assert load(json.dumps(spec)).to_dict() == spec


def test_load_yaml_flow_mapping_text() -> None:
    assert load("{input: [4], layers: [relu]}").to_dict() == {"input": [4], "layers": ["relu"]}


def test_load_dict_and_spec() -> None:
    spec = load(SEED)
    assert isinstance(spec, Spec)
    assert spec.to_dict() == SEED
    assert load(spec) is spec
    assert Spec(spec) == spec


def test_load_does_not_keep_a_reference_to_the_dict() -> None:
    data = json.loads(json.dumps(SEED))
    spec = load(data)
    data["layers"][0]["conv2d"]["filters"] = 1
    assert spec.to_dict()["layers"][0]["conv2d"]["filters"] == 32


def test_name_and_repr() -> None:
    spec = load(SEED)
    assert spec.name == "seed-mnist-cnn"
    assert repr(spec) == "Spec(name='seed-mnist-cnn', form=sequential)"
    assert load({"input": [4], "layers": ["relu"]}).name == "model"


# -- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_dump_load_round_trip(fmt: str) -> None:
    spec = load(SEED)
    text = dump(spec, format=fmt)
    assert load(text) == spec


def test_dump_yaml_is_the_hand_written_style() -> None:
    text = dump(SEED)
    assert "- conv2d: {filters: 32, kernel_size: 3, activation: relu}\n" in text
    assert "- flatten\n" in text
    assert text.startswith("archlab: 1\nname: seed-mnist-cnn\ninput: [1, 28, 28]\n")  # key order kept


def test_dump_json_is_json() -> None:
    assert json.loads(dump(SEED, format="json")) == SEED


def test_floats_written_in_yaml_are_floats() -> None:
    data = load(FLOATS_YAML).to_dict()
    assert data["layers"][0]["batchnorm"] == {"epsilon": 1e-5, "momentum": 0.05}
    assert data["layers"][1]["layernorm"] == {"epsilon": 1e-6}
    assert data["layers"][2]["dropout"] == {"rate": 0.25}
    assert data["train"] == {"lr": 3e-4, "weight_decay": -1.0, "tag": "1e5"}
    assert all(isinstance(v, float) for v in data["layers"][0]["batchnorm"].values())


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_keeps_floats_and_float_like_strings(fmt: str) -> None:
    spec = load(FLOATS_YAML)
    again = load(dump(spec, format=fmt))
    assert again == spec
    assert again.to_dict()["train"]["tag"] == "1e5"  # a string that looks like a float stays a string


def test_float_like_name_survives_yaml_round_trip() -> None:
    spec = load({"name": "1e5", "input": [4], "layers": ["relu"]})
    text = dump(spec)
    assert "name: '1e5'" in text
    assert load(text) == spec


@pytest.mark.parametrize("suffix,fmt", [(".yaml", "yaml"), (".json", "json")])
def test_dump_to_path_picks_format_from_suffix(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = tmp_path / f"out{suffix}"
    text = dump(SEED, path)
    assert path.read_text() == text == dump(SEED, format=fmt)
    assert load(path) == load(SEED)


def test_dump_unknown_format() -> None:
    with pytest.raises(SpecError, match="format is 'yaml' or 'json', got 'toml'"):
        dump(SEED, format="toml")


def test_from_dict_to_dict_round_trip() -> None:
    spec = Spec.from_dict(SEED)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert hash(Spec.from_dict(spec.to_dict())) == hash(spec)


def test_to_dict_returns_a_copy() -> None:
    spec = load(SEED)
    data = spec.to_dict()
    data["layers"][0]["conv2d"]["filters"] = 1
    data["layers"].append("relu")
    data["name"] = "changed"
    assert spec.to_dict() == SEED
    assert spec.name == "seed-mnist-cnn"


def test_equality() -> None:
    assert load(SEED) == load(SEED_YAML)
    assert load(SEED) != load(dict(SEED, name="other"))
    assert load(SEED) != SEED  # a Spec equals only a Spec


def test_tuples_become_lists() -> None:
    spec = load({"input": (1, 8, 8), "layers": ({"conv2d": {"filters": 4, "kernel_size": (3, 3)}},)})
    assert spec.to_dict() == {"input": [1, 8, 8], "layers": [{"conv2d": {"filters": 4, "kernel_size": [3, 3]}}]}
    assert load(dump(spec)) == spec


def test_numpy_scalars_become_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    data = load({"input": [4], "layers": [{"dense": {"units": np.int64(3)}}, {"dropout": {"rate": np.float32(0.5)}}]})
    units = data.to_dict()["layers"][0]["dense"]["units"]
    assert units == 3 and type(units) is int
    assert type(data.to_dict()["layers"][1]["dropout"]["rate"]) is float


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,line,column", [
    ("input: [1, 2\nlayers: 3\n", 2, 7),
    ("input: [4]\nlayers:\n  - dense: {units: 2\n", 4, 1),
    ("input: [4]\n  layers: [relu]\n", 2, 3),
])
def test_invalid_yaml_names_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(SpecError) as info:
        load(text)
    assert f"the spec text is not valid YAML/JSON at line {line}, column {column}:" in str(info.value)


def test_invalid_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("input: [1, 28, 28]\nlayers: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml is not valid YAML/JSON at line 3, column 1"):
        load(path)


def test_invalid_json_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"input": [4], "layers": ["relu",]')
    with pytest.raises(SpecError, match=r"broken\.json is not valid YAML/JSON at line 1"):
        load(path)


@pytest.mark.parametrize("text,kind", [
    ("- conv2d: {filters: 8}\n- flatten\n", "list"),
    ("just a word", "str"),
    ("42", "int"),
    ("", "NoneType"),
])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    with pytest.raises(SpecError, match=f"a spec is a mapping at the top level, got {kind}"):
        load(text)


def test_non_mapping_is_refused_by_spec_and_load() -> None:
    with pytest.raises(SpecError, match="a spec is a mapping at the top level, got list"):
        Spec([1, 2])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="a spec is a mapping at the top level, got int"):
        load(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["missing.yaml", "missing.yml", "missing.json"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(SpecError, match="does not exist") as info:
        load(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(SpecError, match="does not exist"):
        load(path)


def test_missing_file_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load("no-such-spec.yaml")


def test_non_string_keys() -> None:
    with pytest.raises(SpecError, match="keys must be strings, got 3") as info:
        load({"input": [4], "layers": [{"dense": {"units": 2, 3: "x"}}]})
    assert info.value.path == "layers[0].dense"
    with pytest.raises(SpecError, match="keys must be strings, got 1"):
        load({1: 2})
    with pytest.raises(SpecError, match="keys must be strings, got 1") as info:
        load("input: [4]\nlayers: [{dense: {1: 2}}]\n")  # YAML allows it; a spec does not
    assert info.value.path == "layers[0].dense"


@pytest.mark.parametrize("value,type_name", [(object(), "object"), ({1, 2}, "set"), (b"raw", "bytes"),
                                             (Path("x"), "PosixPath")])
def test_unsupported_value_types(value: object, type_name: str) -> None:
    if type_name == "PosixPath" and not isinstance(value, type(Path("."))):
        pytest.skip("not a POSIX system")
    with pytest.raises(SpecError) as info:
        load({"input": [4], "layers": [{"dense": {"units": value}}]})
    assert info.value.path == "layers[0].dense.units"
    assert f"a spec holds only strings, numbers, booleans, lists and mappings; got {type_name}" in str(info.value)


@pytest.mark.parametrize("data,path,fragment", [
    ({"input": [4], "layers": ["relu"], "lyers": []}, "lyers", "unknown top-level key 'lyers'; did you mean 'layers'?"),
    ({"input": [4]}, "", "a spec has either 'layers' (the sequential form) or 'graph'"),
    ({"input": [4], "layers": ["relu"], "graph": {}}, "", "not both"),
    ({"layers": ["relu"]}, "", "missing 'input'"),
    ({"input": [0], "layers": ["relu"]}, "input", "a list of positive integers"),
    ({"input": [4], "layers": []}, "layers", "non-empty list"),
    ({"archlab": 2, "input": [4], "layers": ["relu"]}, "archlab", "reads spec format 1, got 2"),
    ({"name": "a b", "input": [4], "layers": ["relu"]}, "name", "letters, digits, '-' and '_'"),
    ({"input": {"shape": [4], "dtype": "int"}, "layers": ["relu"]}, "input.dtype", "'float' or 'long'"),
    ({"input": {"shape": [4], "dtyp": "long"}, "layers": ["relu"]}, "input", "did you mean 'dtype'?"),
    ({"input": [4], "layers": ["relu"], "data_format": "nhwc"}, "data_format", "channels_first or channels_last"),
    ({"input": [4], "layers": ["relu"], "task": {"kind": "cls"}}, "task.kind", "unknown task 'cls'"),
    ({"input": [4], "layers": ["relu"], "task": {"classes": 3}}, "task", "task needs kind"),
    ({"input": [4], "layers": ["relu"], "task": {"kind": "classification", "classes": 1}}, "task.classes",
     "integer >= 2"),
    ({"input": [4], "layers": ["relu"], "train": 3}, "train", "a mapping"),
    ({"input": [4], "graph": {"a": {"from": "x"}}, "outputs": "a"}, "input", "inputs: {x: [dims...]}"),
    ({"inputs": {"x": [4]}, "layers": ["relu"]}, "inputs", "belongs to the graph form"),
    ({"inputs": {"x": [4]}, "graph": {"a": {"from": "x"}}}, "", "needs 'outputs'"),
])
def test_top_level_errors_name_the_path(data: dict, path: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load(data)
    assert info.value.path == path
    assert fragment in str(info.value)
    if path:
        assert str(info.value).startswith(f"{path}: ")


# -- input that YAML reads silently wrong, or never finishes reading ------------------------------

def test_a_recursive_alias_is_refused_with_its_path_and_line():
    text = "input: [4]\nlayers: [relu]\ndescription: x\nextra: &a [1, *a]\n"
    with pytest.raises(SpecError, match=r"^extra\[1\]: this value contains itself \(the spec text line 4: a "
                                        r"recursive alias such as a: &a \[\*a\]\); a spec is a tree") as info:
        load(text)
    assert info.value.path == "extra[1]"
    with pytest.raises(SpecError, match="contains itself"):
        load("a: &a [*a]\n")


def test_a_dict_that_contains_itself_is_refused():
    data = {"input": [4], "layers": ["relu"]}
    data["layers"].append({"sequential": {"layers": data["layers"]}})
    with pytest.raises(SpecError, match=r"^layers\[1\]\.sequential\.layers: this value contains itself"):
        Spec(data)


def test_an_alias_used_twice_is_still_a_plain_copy():
    spec = load("input: [4]\nlayers:\n  - &block {dense: {units: 4}}\n  - *block\n")
    assert spec.to_dict()["layers"] == [{"dense": {"units": 4}}, {"dense": {"units": 4}}]


def test_aliases_of_aliases_are_refused_before_they_expand():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
    with pytest.raises(SpecError, match=r"expands to more than 1,000,000 values \(aliases of aliases\)"):
        load("\n".join(lines) + "\n")


def test_nesting_too_deep_is_a_spec_error():
    with pytest.raises(SpecError, match="nests lists and mappings too deeply"):
        load("input: " + "[" * 5000 + "]" * 5000 + "\n")
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(SpecError, match="nests lists and mappings too deeply"):
        Spec({"input": [4], "layers": ["relu"], "description": deep})


@pytest.mark.parametrize(("text", "path", "where"), [
    ("input: [4]\nlayers:\n  - dense:\n      units: 2\n      units: 3\n", "layers[0].dense.units", "lines 4 and 5"),
    ("input: [4]\nlayers:\n  - dense: {units: 2, units: 3}\n", "layers[0].dense.units", "line 3, columns 13 and 23"),
    ("input: [4]\nlayers: [relu]\ninput: [5]\n", "input", "lines 1 and 3"),
])
def test_a_key_given_twice_is_refused_with_the_path_and_lines(text, path, where):
    with pytest.raises(SpecError) as info:
        load(text)
    assert info.value.path == path
    key = path.rsplit(".", 1)[-1]
    assert str(info.value) == (f"{path}: key '{key}' is given twice in one mapping of the spec text ({where}); "
                               "YAML would keep only the last: remove one")


def test_a_key_given_twice_in_json_is_refused(tmp_path: Path):
    path = tmp_path / "spec.json"
    path.write_text('{"input": [4], "layers": [{"dense": {"units": 2, "units": 3}}]}')
    with pytest.raises(SpecError, match=r"spec\.json: key 'units' is given twice in one JSON object"):
        load(path)


def test_binary_junk_names_the_file(tmp_path: Path):
    path = tmp_path / "junk.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(SpecError, match=r"junk\.yaml' is not text \(byte 0 is not UTF-8\): a spec is YAML or JSON"):
        load(path)


def test_control_characters_name_the_file(tmp_path: Path):
    path = tmp_path / "ctl.yaml"
    path.write_bytes(b"input: [4]\x00\x01\n")
    with pytest.raises(SpecError, match=r"ctl\.yaml is not valid YAML/JSON: the control character U\+0000 at "
                                        r"position 10 is not allowed in YAML text \(is it a binary file\?\)"):
        load(path)


def test_a_directory_is_not_a_spec(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.yaml").write_text(SEED_YAML)
    for source in (tmp_path, str(tmp_path)):
        with pytest.raises(SpecError, match=r"is a directory, not a spec file: give a \.yaml, \.yml or \.json file$"):
            load(source)
    with pytest.raises(SpecError, match=r"is a directory, not a spec file: .* \(a run directory's spec is its "
                                        r"spec\.yaml\)"):
        load(tmp_path / "run")


@pytest.mark.parametrize("shape", [[], {"shape": []}])
def test_an_empty_input_shape_is_refused(shape):
    with pytest.raises(SpecError, match=r"^input: an input shape is a list of positive integers \(at least one\) .* "
                                        r"or \[1\] for one number per sample; got \[\]"):
        Spec({"input": shape, "layers": ["relu"]})
    with pytest.raises(SpecError, match=r"^inputs\.x: an input shape is a list of positive integers \(at least one\)"):
        Spec({"inputs": {"x": shape}, "graph": {"y": {"from": "x", "layers": ["relu"]}}, "outputs": "y"})
