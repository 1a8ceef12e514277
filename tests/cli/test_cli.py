"""The archlab command line: summary, validate, schema, layers; exit codes and messages.

Most tests run the CLI in-process through ``archlab.cli.run`` (fast); a few run it as a real
``python -m archlab`` subprocess, as a person would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import archlab
from archlab.cli import run

# The seed CNN as the project ships it (the same spec the README and docs use).
SEED_YAML = (Path(__file__).resolve().parents[2] / "examples" / "seed-mnist-cnn.yaml").read_text()

NESTED_YAML = """\
name: nested
input: [3, 8, 8]
layers:
  - residual:
      layers:
        - conv2d: {filters: 8, kernel_size: 3, padding: same, strides: 2}
        - batchnorm
      post: [relu]
  - repeat:
      times: 2
      layers: [{conv2d: {filters: 8, kernel_size: 3, padding: same}}]
  - global_avgpool2d
  - dense: {units: 2}
"""

SPACE_YAML = """\
name: space
input: [1, 28, 28]
layers:
  - conv2d: {filters: {choice: [16, 32]}, kernel_size: 3}
  - choice: [{maxpool2d: {pool_size: 2}}, {avgpool2d: {pool_size: 2}}]
  - flatten
  - dense: {units: {int: [16, 128], step: 16}}
  - dropout: {rate: {float: [0.0, 0.5]}}
"""

# Seed CNN by hand: conv 32*9+32, conv 64*32*9+64, dense 1600*128+128, dense 128*10+10
SEED_PARAMS = 320 + 18_496 + 204_928 + 1_290
SEED_MACS = 32 * 26 * 26 * 9 + 64 * 11 * 11 * 32 * 9 + 1600 * 128 + 128 * 10
# 2 per MAC, + relu/softmax (1 and 3 per element) + pooling (4 per output element)
SEED_FLOPS = 2 * SEED_MACS + 32 * 26 * 26 + 64 * 11 * 11 + 128 + 3 * 10 + 4 * (32 * 13 * 13 + 64 * 5 * 5)
# elements kept for backward per sample: input + every output except flatten's view
SEED_SAVED = 784 + 32 * 26 * 26 + 32 * 13 * 13 + 64 * 11 * 11 + 64 * 5 * 5 + 128 + 10


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(text: str) -> str:
    return " ".join(text.split())


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def seed(tmp_path: Path) -> str:
    return write(tmp_path, "seed.yaml", SEED_YAML)


@pytest.fixture
def nested(tmp_path: Path) -> str:
    return write(tmp_path, "nested.yaml", NESTED_YAML)


def test_seed_constants_match_the_library(seed: str) -> None:
    analysis = archlab.analyze(seed)
    assert (analysis.total_params, analysis.macs, analysis.flops) == (225_034, SEED_MACS, SEED_FLOPS)
    assert SEED_PARAMS == 225_034


# -- summary ------------------------------------------------------------------------------------

def test_summary_table(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out, err = cli(capsys, "summary", seed)
    assert code == 0, err
    assert err == ""
    assert "seed-mnist-cnn: per-node capacity" in out
    for i in range(7):
        assert f"layers[{i}]" in out
    assert "(32, 26, 26)" in out and "(1600,)" in out and "(10,)" in out
    assert "204,928" in out and "18,496" in out
    lines = [line for line in out.splitlines() if line.startswith("Total params")]
    assert len(lines) == 1 and lines[0].split()[-1] == "225,034"
    assert f"{SEED_MACS:,}" in out and f"{SEED_FLOPS:,}" in out
    assert "Training memory, batch 1 (fp32, Adam)" in out


def test_summary_json(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out, err = cli(capsys, "summary", seed, "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("schema_version", "name", "batch_size", "inputs", "outputs", "total_params", "trainable_params",
                "non_trainable_params", "active_params", "buffers", "flops", "macs", "flops_per_batch", "model_bytes",
                "training_memory_bytes", "layers"):
        assert key in data, key
    assert data["schema_version"] == 1
    assert data["name"] == "seed-mnist-cnn"
    assert data["batch_size"] == 1
    assert data["inputs"] == {"input": {"shape": [1, 28, 28], "dtype": "float"}}
    assert data["outputs"] == [{"shape": [10], "dtype": "float"}]
    assert data["total_params"] == data["trainable_params"] == data["active_params"] == 225_034
    assert data["non_trainable_params"] == 0 and data["buffers"] == 0
    assert data["macs"] == SEED_MACS == 2_631_040
    assert data["flops"] == data["flops_per_batch"] == SEED_FLOPS == 5_319_646
    assert data["model_bytes"] == {"fp32": 4 * 225_034, "bf16": 2 * 225_034, "int8": 225_034}
    weights = 4 * 225_034
    assert data["training_memory_bytes"] == {
        "weights": weights, "gradients": weights, "optimizer": 2 * weights,
        "activations": 4 * SEED_SAVED, "total": 4 * weights + 4 * SEED_SAVED,
    }
    rows = data["layers"]
    assert [r["path"] for r in rows] == [f"layers[{i}]" for i in range(7)]
    assert [r["type"] for r in rows] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "flatten", "dense", "dense"]
    assert [r["params"] for r in rows] == [320, 0, 18_496, 0, 0, 204_928, 1_290]
    assert [r["output_shape"] for r in rows] == [[32, 26, 26], [32, 13, 13], [64, 11, 11], [64, 5, 5], [1600],
                                                [128], [10]]
    assert set(rows[0]) == {"path", "type", "depth", "output_shape", "params", "trainable_params", "active_params",
                            "macs", "flops", "activation_bytes", "note"}
    assert [r["active_params"] for r in rows] == [r["params"] for r in rows]  # dense: every weight is active
    assert sum(r["macs"] for r in rows) == SEED_MACS
    assert sum(r["flops"] for r in rows) == SEED_FLOPS


def test_summary_gives_flops_per_target_token_of_the_translation_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(Path(__file__).resolve().parents[2] / "examples" / "translation" / "transformer-multi30k.yaml")
    code, out, err = cli(capsys, "summary", example, "--json")
    assert code == 0, err
    data = json.loads(out)
    # the whole sample (encoder over the 64 source ids included) over the 64 target positions
    assert data["per_target_token"] == {"task": "seq2seq", "input": "target", "tokens": 64, "encoder_included": True,
                                        "flops": data["flops"] / 64, "training_flops": 3 * data["flops"] / 64}
    code, out, err = cli(capsys, "summary", example)
    assert code == 0, err
    per_token = f"{data['flops'] / 64:,.0f}"
    assert any(line.startswith("Forward FLOPs / target token (/ 64 'target' positions, encoder included)")
               and per_token in line for line in out.splitlines())
    assert f"{3 * data['flops'] / 64:,.0f}" in out


def test_summary_json_equals_the_python_api(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out, _ = cli(capsys, "summary", seed, "--json", "--batch-size", "3")
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(archlab.analyze(seed, batch_size=3).to_dict()))


def test_batch_size_scales_activations(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    _, one, _ = cli(capsys, "summary", seed, "--json")
    code, many, err = cli(capsys, "summary", seed, "--json", "--batch-size", "128")
    assert code == 0, err
    one, many = json.loads(one), json.loads(many)
    assert many["batch_size"] == 128
    assert many["training_memory_bytes"]["activations"] == 128 * one["training_memory_bytes"]["activations"]
    for key in ("weights", "gradients", "optimizer"):
        assert many["training_memory_bytes"][key] == one["training_memory_bytes"][key]
    assert many["flops"] == one["flops"] and many["flops_per_batch"] == 128 * one["flops"]
    assert many["total_params"] == one["total_params"]
    assert [r["activation_bytes"] for r in many["layers"]] == [128 * r["activation_bytes"] for r in one["layers"]]


def test_batch_size_short_option_and_table(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out, _ = cli(capsys, "summary", seed, "-b", "128")
    assert code == 0
    assert "activations for batch 128" in out
    assert "Training memory, batch 128 (fp32, Adam)" in out


def test_depth_hides_nested_rows(capsys: pytest.CaptureFixture[str], nested: str) -> None:
    code, full, _ = cli(capsys, "summary", nested)
    assert code == 0
    assert "layers[0].residual.layers[0]" in full
    assert "layers[0].residual.shortcut[0]" in full  # depth 3 is shown by default
    assert "layers[1].repeat[1].layers[0]" in full
    assert "hidden" not in full
    code, top, _ = cli(capsys, "summary", nested, "--depth", "1")
    assert code == 0
    for path in ("layers[0]", "layers[1]", "layers[2]", "layers[3]"):
        assert path in top
    assert ".residual." not in top and ".repeat[" not in top
    assert "(10 deeper rows hidden; --depth 3 shows all)" in top
    lines = [line for line in top.splitlines() if line.startswith("Total params")]
    assert lines[0].split()[-1] == f"{archlab.analyze(nested).total_params:,}"


def test_depth_two(capsys: pytest.CaptureFixture[str], nested: str) -> None:
    code, out, _ = cli(capsys, "summary", nested, "--depth", "2")
    assert code == 0
    shortcut_rows = [line for line in out.splitlines() if "layers[0].residual.shortcut" in line]
    assert len(shortcut_rows) == 1 and "layers[0].residual.shortcut " in shortcut_rows[0]  # not its children
    assert "(4 deeper rows hidden; --depth 3 shows all)" in out


def test_json_rows_include_nested_rows_whatever_the_depth(capsys: pytest.CaptureFixture[str], nested: str) -> None:
    code, out, _ = cli(capsys, "summary", nested, "--json", "--depth", "1")
    assert code == 0
    rows = json.loads(out)["layers"]
    assert {r["depth"] for r in rows} == {1, 2, 3}
    assert "layers[1].repeat[1].layers[0]" in [r["path"] for r in rows]


def test_summary_refuses_a_space(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "summary", write(tmp_path, "space.yaml", SPACE_YAML))
    assert code == 2
    assert out == ""
    assert one_line(err).startswith("error: layers[0].conv2d.filters: holds a search marker {choice: [16, 32]}")
    assert "Traceback" not in err


def test_summary_json_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "seed.json", json.dumps(archlab.load(SEED_YAML).to_dict()))
    code, out, _ = cli(capsys, "summary", path, "--json")
    assert code == 0
    assert json.loads(out)["total_params"] == 225_034


# -- validate -----------------------------------------------------------------------------------

def test_validate_valid_spec(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out, err = cli(capsys, "validate", seed)
    assert code == 0, err
    assert one_line(out) == f"{seed}: valid (sequential form; input (1, 28, 28); output (10,))"


def test_validate_graph_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "fusion.yaml", """\
inputs: {image: [1, 28, 28], meta: {shape: [8]}}
graph:
  img: {from: image, layers: [flatten, {dense: {units: 16}}]}
  tab: {from: meta, layers: [{dense: {units: 16}}]}
  fused: {from: [img, tab], merge: concat, layers: [{dense: {units: 10}}]}
outputs: fused
""")
    code, out, err = cli(capsys, "validate", path)
    assert code == 0, err
    assert one_line(out) == f"{path}: valid (graph form; input image (1, 28, 28), meta (8,); output (10,))"


def test_validate_space_lists_markers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "space.yaml", SPACE_YAML)
    code, out, err = cli(capsys, "validate", path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{path}: a valid search space with 4 search marker(s):"
    assert lines[1:] == [
        "  layers[0].conv2d.filters: {choice: [16, 32]}",
        "  layers[1]: {choice: [{'maxpool2d': {'pool_size': 2}}, {'avgpool2d': {'pool_size': 2}}]}",
        "  layers[3].dense.units: {int: [16, 128], step: 16}",
        "  layers[4].dropout.rate: {float: [0.0, 0.5]}",
    ]


def test_validate_space_checks_its_structure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # the first point of this space puts a dense layer on an image: the space is broken
    path = write(tmp_path, "space.yaml", "input: [1, 8, 8]\nlayers:\n  - dense: {units: {choice: [4, 8]}}\n")
    code, out, err = cli(capsys, "validate", path)
    assert code == 2
    assert "layers[0] (dense) needs (features,) or (time, features) but receives (1, 8, 8)" in one_line(err)


def test_validate_space_with_a_malformed_marker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "space.yaml", "input: [4]\nlayers:\n  - dense: {units: {int: [8, 1]}}\n")
    code, _, err = cli(capsys, "validate", path)
    assert code == 2
    assert one_line(err) == "error: layers[0].dense.units: {int: [8, 1]} has low > high: write [1, 8]"


BAD_SPECS = [
    # (name, text, path the message names, fragment)
    ("shape", "input: [1, 28, 28]\nlayers:\n  - conv2d: {filters: 8, kernel_size: 3}\n  - dense: {units: 10}\n",
     "layers[1]", "(dense) needs (features,) or (time, features) but receives (8, 26, 26) from layers[0] (conv2d): "
                  "add 'flatten' before it"),
    ("unknown_type", "input: [4]\nlayers:\n  - dense: {units: 3}\n  - dens: {units: 2}\n",
     "layers[1]", "unknown layer type 'dens'; did you mean 'dense'?"),
    ("unknown_param", "input: [1, 8, 8]\nlayers:\n  - conv2d: {filtres: 8, kernel_size: 3}\n",
     "layers[0].conv2d.filtres", "unknown parameter 'filtres'; did you mean 'filters'?"),
    ("missing_param", "input: [4]\nlayers:\n  - dense: {activation: relu}\n",
     "layers[0].dense.units", "missing required parameter 'units'"),
    ("bad_value", "input: [4]\nlayers:\n  - dense: {units: -3}\n",
     "layers[0].dense.units", "'units' should be greater than 0; got -3"),
    ("bad_activation", "input: [4]\nlayers:\n  - dense: {units: 3, activation: rleu}\n",
     "layers[0].dense.activation", "'activation' should be 'relu'"),
    ("top_level", "input: [4]\nlyers:\n  - relu\n", "lyers", "unknown top-level key 'lyers'; did you mean 'layers'?"),
    ("input", "input: [1, -28, 28]\nlayers: [flatten]\n", "input", "a list of positive integers"),
    ("tie", "input: [4]\nlayers:\n  - dense: {units: 4}\n    tie: nowhere\n",
     "layers[0].tie", "tie names an unknown layer 'nowhere'"),
    ("repeat", "input: [4]\nlayers:\n  - repeat: {times: 0, layers: [relu]}\n",
     "layers[0].repeat.times", "times must be an integer >= 1, got 0"),
    ("merge", "input: [4]\nlayers:\n  - parallel: {merge: sum, branches: [[relu], [tanh]]}\n",
     "layers[0].parallel.merge", "unknown merge 'sum'"),
    ("residual", "input: [4]\nlayers:\n  - residual: {layers: [{dense: {units: 3}}], shortcut: identity}\n",
     "layers[0].residual", "shortcut: identity needs the layers to keep the shape"),
    ("graph", "inputs: {x: [4]}\ngraph:\n  h: {from: y, layers: [relu]}\noutputs: h\n",
     "graph.h.from", "unknown source 'y'"),
    ("yaml", "input: [4]\nlayers: [relu\n", "", "is not valid YAML/JSON at line 3, column 1"),
    ("not_mapping", "- relu\n- tanh\n", "", "a spec is a mapping at the top level, got list"),
    ("recursive_alias", "a: &a [*a]\n", "a[0]", "this value contains itself"),
    ("control_chars", "input: [4]\x00\x07\n", "", "the control character U+0000 at position 10 is not allowed"),
    ("duplicate_key", "input: [4]\nlayers:\n  - dense:\n      units: 2\n      units: 3\n", "layers[0].dense.units",
     "key 'units' is given twice in one mapping of"),
    ("momentum", "input: [4]\nlayers: [{batchnorm: {momentum: 2}}]\n", "layers[0].batchnorm.momentum",
     "'momentum' should be less than or equal to 1; got 2"),
    ("epsilon_inf", "input: [4]\nlayers: [{batchnorm: {epsilon: .inf}}]\n", "layers[0].batchnorm.epsilon",
     "'epsilon' should be a finite number; got inf"),
    ("epsilon_negative", "input: [4]\nlayers: [{layernorm: {epsilon: -1}}]\n", "layers[0].layernorm.epsilon",
     "'epsilon' should be greater than 0; got -1"),
    ("empty_input", "input: []\nlayers: [relu]\n", "input", "an input shape is a list of positive integers (at least "
                                                             "one)"),
]


@pytest.mark.parametrize("name,text,path,fragment", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_validate_bad_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, text: str, path: str,
                           fragment: str) -> None:
    spec = write(tmp_path, f"{name}.yaml", text)
    code, out, err = cli(capsys, "validate", spec)
    assert code == 2
    assert out == ""
    message = one_line(err)
    assert message.startswith("error: ")
    if path:
        assert message.startswith(f"error: {path}")
    assert fragment in message
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one message on one line


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    code, out, err = cli(capsys, "validate", missing)
    assert code == 2
    assert one_line(err) == f"error: spec file {missing!r} does not exist"


@pytest.mark.parametrize("command", ["validate", "summary"])
def test_binary_junk_and_a_directory_are_named(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               command: str) -> None:
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(128, 256)))
    code, out, err = cli(capsys, command, str(junk))
    assert (code, out) == (2, "")
    assert one_line(err) == (f"error: spec file {str(junk)!r} is not text (byte 0 is not UTF-8): a spec is YAML or "
                             "JSON text")
    code, out, err = cli(capsys, command, str(tmp_path))
    assert (code, out) == (2, "")
    assert one_line(err) == (f"error: {str(tmp_path)!r} is a directory, not a spec file: give a .yaml, .yml or "
                             ".json file")


@pytest.mark.timeout(20)
def test_summary_of_a_billion_iterations_is_exact_and_short(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    spec = write(tmp_path, "deep.yaml", "input: [8]\nlayers:\n  - repeat: {times: 1000000000, layers: "
                                        "[{dense: {units: 8, activation: relu}}]}\n")
    code, out, _ = cli(capsys, "summary", spec, "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["total_params"], data["flops"]) == (72 * 10**9, (2 * 64 + 8) * 10**9)
    assert [r["path"] for r in data["layers"]] == ["layers[0]", "layers[0].repeat[0].layers",
                                                   "layers[0].repeat[0].layers[0]", "layers[0].repeat[1-999999999]"]
    code, out, _ = cli(capsys, "summary", spec)
    assert code == 0 and "iterations 2-1,000,000,000: identical, x999,999,999" in out
    assert "72,000,000,000" in out


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    spec = write(tmp_path, "bad.yaml", BAD_SPECS[0][1])
    with pytest.raises(archlab.ShapeError, match="add 'flatten' before it"):
        run(["--debug", "validate", spec])
    with pytest.raises(archlab.ShapeError):  # also after the subcommand
        run(["validate", spec, "--debug"])


def test_summary_bad_spec_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = write(tmp_path, "bad.yaml", BAD_SPECS[0][1])
    code, out, err = cli(capsys, "summary", spec)
    assert code == 2
    assert out == ""
    assert one_line(err).startswith("error: layers[1] (dense) needs")


# -- schema and layers --------------------------------------------------------------------------

def test_schema_is_json_with_every_layer_type(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "archlab spec, format 1"
    alternatives = schema["$defs"]["item"]["anyOf"]
    keyed = {key for alt in alternatives for key in alt.get("required", [])}
    bare = set(next(alt["enum"] for alt in alternatives if "enum" in alt))
    for name in archlab.list_layers():
        assert name in keyed, name
    assert {"flatten", "relu", "batchnorm", "global_avgpool2d"} <= bare  # types without required params
    assert "dense" not in bare and "conv2d" not in bare
    assert {"residual", "parallel", "repeat", "sequential"} <= keyed
    dense = next(alt for alt in alternatives if alt.get("required") == ["dense"])
    assert dense["properties"]["dense"]["required"] == ["units"]
    assert set(dense["properties"]) == {"dense", "name", "tie", "trainable"}


def test_schema_includes_a_registered_layer(capsys: pytest.CaptureFixture[str]) -> None:
    from archlab.layers import Cost, InputRule, LayerParams, LayerType, register_layer, registry

    class ScaleParams(LayerParams):
        factor: float

    @register_layer("cli_test_scale", override=True)
    class Scale(LayerType):
        Params = ScaleParams
        accepts = InputRule(dtype="float")
        summary = "multiplies by factor"

        def output(self, p, x):
            return x

        def cost(self, p, x, y):
            return Cost(flops=x.numel)

    try:
        code, out, _ = cli(capsys, "schema")
        alternatives = json.loads(out)["$defs"]["item"]["anyOf"]
        assert any(alt.get("required") == ["cli_test_scale"] for alt in alternatives)
        code, out, _ = cli(capsys, "layers")
        assert code == 0 and "cli_test_scale" in out and "multiplies by factor" in out
    finally:
        registry.unregister("cli_test_scale")


def test_schema_validates_example_specs(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    _, out, _ = cli(capsys, "schema")
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = [
        archlab.load(SEED_YAML).to_dict(),
        archlab.load(NESTED_YAML).to_dict(),
        archlab.load(SPACE_YAML).to_dict(),
        {"input": [4], "layers": [{"repeat": {"times": {"int": [1, 4]}, "layers": ["relu"]}}]},
        {"input": {"shape": [6], "dtype": "long"}, "layers": [
            {"embedding": {"input_dim": 50, "output_dim": 8}, "name": "wte"},
            {"dense": {"units": 50, "use_bias": False}, "tie": "wte", "trainable": False}]},
        {"inputs": {"a": [4], "b": [4]}, "graph": {"h": {"from": ["a", "b"], "merge": "add", "layers": ["relu"]}},
         "outputs": ["h"]},
    ]
    for spec in good:
        assert list(validator.iter_errors(spec)) == [], spec
    bad = [
        {"input": [4], "layers": [{"dense": {"unit": 4}}]},
        {"input": [4], "layers": [{"dens": {"units": 4}}]},
        {"input": [4], "lyers": ["relu"]},
        {"layers": ["relu"]},
    ]
    for spec in bad:
        assert list(validator.iter_errors(spec)), spec


def test_layers_lists_types_and_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "layers")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    for name in ("dense", "conv2d", "lstm", "flatten", "transformer_decoder"):
        assert name in rows, name
    assert "units, activation=None, use_bias=True" in rows["dense"]
    assert "filters, kernel_size, strides=1, padding='valid'" in rows["conv2d"]
    assert "from: [x, memory]" in out  # summaries are printed as written, not read as markup


def test_layers_lists_the_connections_with_their_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from archlab.builder import CONNECTIONS

    code, out, _ = cli(capsys, "layers")
    assert code == 0
    assert "connections" in out.split("residual")[0]  # a section of its own, after the layer types
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert set(CONNECTIONS) == {"residual", "parallel", "repeat", "sequential"}
    assert "layers, shortcut='auto', post=[], drop_path=0.0, name=None" in rows["residual"]
    assert "branches, merge='concat', axis=0, name=None" in rows["parallel"]
    assert "times, layers, share_weights=False, name=None" in rows["repeat"]
    assert "layers, name=None" in rows["sequential"]


# -- usage errors -------------------------------------------------------------------------------

def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "frobnicate")
    assert code == 2
    assert "No such command 'frobnicate'" in err


def test_missing_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "summary")
    assert code == 2
    assert "Missing argument 'SPEC'" in err or "Missing argument 'spec'" in err


def test_bad_option_value(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, _, err = cli(capsys, "summary", seed, "--batch-size", "0")
    assert code == 2
    assert "--batch-size" in err


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 2
    assert "summary" in out + err and "validate" in out + err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("summary", "validate", "schema", "layers"):
        assert command in out


# -- a real subprocess --------------------------------------------------------------------------

def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "archlab", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_subprocess_summary(seed: str) -> None:
    done = _subprocess("summary", seed, "--batch-size", "128")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    total = [line for line in done.stdout.splitlines() if line.startswith("Total params")]
    assert total and total[0].split()[-1] == "225,034"
    assert "Training memory, batch 128" in done.stdout


def test_subprocess_bad_spec_and_debug(tmp_path: Path) -> None:
    spec = write(tmp_path, "bad.yaml", BAD_SPECS[0][1])
    done = _subprocess("validate", spec)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: layers[1] (dense) needs (features,) or (time, features)")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    debug = _subprocess("--debug", "validate", spec)
    assert debug.returncode == 1  # the exception escapes: Python's own exit code
    assert "Traceback (most recent call last)" in debug.stderr
    assert "archlab.exceptions.ShapeError: layers[1] (dense)" in debug.stderr
