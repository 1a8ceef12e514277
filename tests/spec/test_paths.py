"""Spec paths: format/parse, get_at/set_at by index and by item name, and their errors."""

from __future__ import annotations

import copy

import pytest

import archlab
from archlab import SpecError
from archlab.spec import format_path, get_at, parse_path, set_at

SPEC = {
    "input": [1, 28, 28],
    "layers": [
        {"sequential": {"name": "stem", "layers": [{"conv2d": {"filters": 8, "kernel_size": 3}}, "relu"]}},
        "relu",
        {"conv2d": {"filters": 16, "kernel_size": 3}, "name": "c1"},
        {"conv2d": {"filters": 32, "kernel_size": 3}},
        "flatten",
        {"repeat": {"times": 2, "layers": [{"dense": {"units": 8}}]}},
    ],
}

GRAPH = {
    "inputs": {"image": [1, 28, 28], "meta": [8]},
    "graph": {
        "img": {"from": "image", "layers": ["flatten", {"dense": {"units": 16}}]},
        "tab": {"from": "meta", "layers": [{"dense": {"units": 16}}]},
        "fused": {"from": ["img", "tab"], "merge": "concat", "layers": [{"dense": {"units": 10}}]},
    },
    "outputs": "fused",
}


def test_fixtures_are_valid_specs() -> None:
    archlab.parse(SPEC)
    assert archlab.analyze(GRAPH).total_params == 784 * 16 + 16 + 8 * 16 + 16 + 32 * 10 + 10


# -- format / parse -----------------------------------------------------------------------------

@pytest.mark.parametrize("parts,text", [
    (("layers", 3, "conv2d", "filters"), "layers[3].conv2d.filters"),
    (("layers", 5, "repeat", "times"), "layers[5].repeat.times"),
    (("graph", "fused", "layers", 0), "graph.fused.layers[0]"),
    (("stem", "layers", 0), "stem.layers[0]"),
    (("layers", 1, "choice", 0, "conv2d"), "layers[1].choice[0].conv2d"),
    (("a", 0, 1, "b"), "a[0][1].b"),
    (("layers", -1), "layers[-1]"),
    (("name",), "name"),
    ((0, "a"), "[0].a"),
])
def test_format_and_parse_round_trip(parts: tuple, text: str) -> None:
    assert format_path(*parts) == text
    assert parse_path(text) == list(parts)
    assert format_path(*parse_path(text)) == text


def test_format_path_skips_empty_keys() -> None:
    assert format_path("", "layers", 0) == "layers[0]"
    assert format_path() == ""


def test_parse_path_strips_whitespace() -> None:
    assert parse_path("  layers[0].dense  ") == ["layers", 0, "dense"]


@pytest.mark.parametrize("text,position", [
    ("layers[x]", 6),
    ("layers[3]..conv2d", 10),
    ("layers[3", 6),
    (".layers", 0),
    ("a.b.", 4),
])
def test_unparsable_paths(text: str, position: int) -> None:
    with pytest.raises(SpecError) as info:
        parse_path(text)
    message = str(info.value)
    assert f"cannot read path {text!r} at character {position}" in message
    assert "write keys joined by '.' and indices as [i], e.g. layers[3].conv2d.filters" in message


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_path(text: str) -> None:
    with pytest.raises(SpecError, match="empty path"):
        parse_path(text)


def test_get_at_unparsable_path() -> None:
    with pytest.raises(SpecError, match="cannot read path 'layers\\[3' at character 6"):
        get_at(SPEC, "layers[3")


# -- get_at -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,value", [
    ("layers[3].conv2d.filters", 32),
    ("layers[5].repeat.times", 2),
    ("layers[5].repeat.layers[0].dense.units", 8),
    ("layers[1]", "relu"),
    ("layers[-1].repeat.times", 2),
    ("input[0]", 1),
    ("input", [1, 28, 28]),
])
def test_get_at_by_index(path: str, value: object) -> None:
    assert get_at(SPEC, path) == value


def test_get_at_graph_form() -> None:
    assert get_at(GRAPH, "graph.fused.layers[0]") == {"dense": {"units": 10}}
    assert get_at(GRAPH, "graph.fused.layers[0].dense.units") == 10
    assert get_at(GRAPH, "graph.fused.from[1]") == "tab"
    assert get_at(GRAPH, "inputs.meta") == [8]


def test_get_at_named_sequential() -> None:
    # {sequential: {name: stem, layers: [...]}}: the name leads into the connection's mapping
    assert get_at(SPEC, "stem.layers[0]") == {"conv2d": {"filters": 8, "kernel_size": 3}}
    assert get_at(SPEC, "stem.layers[0].conv2d.filters") == 8
    assert get_at(SPEC, "stem.layers[1]") == "relu"
    assert get_at(SPEC, "stem.name") == "stem"
    assert get_at(SPEC, "stem") == SPEC["layers"][0]["sequential"]


def test_get_at_named_layer() -> None:
    # {conv2d: {...}, name: c1}: c1.filters skips the type key; c1.conv2d.filters works too
    assert get_at(SPEC, "c1.filters") == 16
    assert get_at(SPEC, "c1.kernel_size") == 3
    assert get_at(SPEC, "c1.conv2d.filters") == 16
    assert get_at(SPEC, "c1") == SPEC["layers"][2]


def test_get_at_named_connection_item() -> None:
    spec = {"input": [4], "layers": [{"residual": {"layers": [{"dense": {"units": 4}}]}, "name": "block"}]}
    assert get_at(spec, "block.layers[0].dense.units") == 4


def test_get_at_named_item_in_graph() -> None:
    graph = copy.deepcopy(GRAPH)
    graph["graph"]["fused"]["layers"][0]["name"] = "head"
    assert get_at(graph, "head.units") == 10


def test_top_level_key_wins_over_a_name() -> None:
    spec = {"input": [4], "layers": [{"dense": {"units": 3}, "name": "input"}]}
    assert get_at(spec, "input") == [4]


# -- set_at -------------------------------------------------------------------------------------

def test_set_at_returns_a_copy() -> None:
    before = copy.deepcopy(SPEC)
    out = set_at(SPEC, "layers[3].conv2d.filters", 64)
    assert get_at(out, "layers[3].conv2d.filters") == 64
    assert SPEC == before
    out["layers"][0]["sequential"]["layers"].append("relu")
    assert SPEC == before  # a deep copy, not a shallow one


@pytest.mark.parametrize("path,value,check_path", [
    ("layers[3].conv2d.filters", 64, "layers[3].conv2d.filters"),
    ("layers[5].repeat.times", 4, "layers[5].repeat.times"),
    ("stem.layers[0]", {"conv2d": {"filters": 4, "kernel_size": 1}}, "layers[0].sequential.layers[0]"),
    ("stem.layers[0].conv2d.filters", 4, "layers[0].sequential.layers[0].conv2d.filters"),
    ("c1.filters", 4, "layers[2].conv2d.filters"),
    ("layers[1]", "tanh", "layers[1]"),
    ("layers[-1].repeat.times", 3, "layers[5].repeat.times"),
])
def test_set_at(path: str, value: object, check_path: str) -> None:
    out = set_at(SPEC, path, value)
    assert get_at(out, check_path) == value
    assert get_at(out, path) == value


def test_set_at_graph_form() -> None:
    out = set_at(GRAPH, "graph.fused.layers[0]", {"dense": {"units": 3}})
    assert get_at(out, "graph.fused.layers[0].dense.units") == 3
    assert archlab.analyze(out).outputs == [{"shape": [3], "dtype": "float"}]
    assert get_at(GRAPH, "graph.fused.layers[0].dense.units") == 10


def test_set_at_adds_a_parameter_left_at_its_default() -> None:
    out = set_at(SPEC, "layers[3].conv2d.strides", 2)
    assert get_at(out, "layers[3].conv2d") == {"filters": 32, "kernel_size": 3, "strides": 2}
    assert archlab.parse(out).root.items[3].output.shape == (32, 11, 11)  # (24 - 3) // 2 + 1


def test_set_at_adds_a_top_level_key() -> None:
    out = set_at(SPEC, "name", "renamed")
    assert out["name"] == "renamed"
    assert "name" not in SPEC
    assert archlab.load(out).name == "renamed"


def test_set_at_result_builds_and_counts() -> None:
    seed = {"input": [1, 28, 28], "layers": [
        {"conv2d": {"filters": 32, "kernel_size": 3, "activation": "relu"}}, {"maxpool2d": {"pool_size": 2}},
        {"conv2d": {"filters": 64, "kernel_size": 3, "activation": "relu"}}, {"maxpool2d": {"pool_size": 2}},
        "flatten", {"dense": {"units": 128, "activation": "relu"}}, {"dense": {"units": 10, "activation": "softmax"}}]}
    assert archlab.analyze(seed).total_params == 225_034
    wider = set_at(seed, "layers[5].dense.units", 64)
    assert archlab.analyze(wider).total_params == 320 + 18_496 + (1600 * 64 + 64) + (64 * 10 + 10)


# -- errors -------------------------------------------------------------------------------------

def test_index_out_of_range() -> None:
    with pytest.raises(SpecError) as info:
        get_at(SPEC, "layers[9]")
    assert info.value.path == "layers[9]"
    assert str(info.value) == "layers[9]: index 9 is out of range: layers has 6 items"
    with pytest.raises(SpecError, match="index 9 is out of range: layers has 6 items"):
        set_at(SPEC, "layers[9]", "relu")
    with pytest.raises(SpecError, match="index -7 is out of range"):
        get_at(SPEC, "layers[-7]")


def test_index_into_a_mapping() -> None:
    with pytest.raises(SpecError, match=r"\[0\] indexes layers\[3\]\.conv2d, which is not a list"):
        get_at(SPEC, "layers[3].conv2d[0]")


def test_missing_key_with_suggestion() -> None:
    with pytest.raises(SpecError) as info:
        get_at(SPEC, "layers[3].conv2d.filtres")
    assert info.value.path == "layers[3].conv2d.filtres"
    assert ("layers[3].conv2d has no key 'filtres'; did you mean 'filters'? (keys: filters, kernel_size)"
            in str(info.value))


def test_missing_key_without_a_close_match_lists_keys() -> None:
    with pytest.raises(SpecError, match=r"layers\[3\] has no key 'nope' \(keys: conv2d\)"):
        set_at(SPEC, "layers[3].nope.x", 1)


def test_unknown_head_suggests_keys_and_names() -> None:
    with pytest.raises(SpecError) as info:
        get_at(SPEC, "lyers[3]")
    message = str(info.value)
    assert "no key or named item 'lyers' in this spec; did you mean 'layers'?" in message
    assert "(top-level keys and names: input, layers, c1, stem)" in message
    with pytest.raises(SpecError, match="no key or named item 'stme' in this spec; did you mean 'stem'?"):
        get_at(SPEC, "stme.layers[0]")


def test_key_below_a_bare_item() -> None:
    with pytest.raises(SpecError, match=r"layers\[1\] is the bare item 'relu', which has no key 'relu'"):
        get_at(SPEC, "layers[1].relu")


@pytest.mark.parametrize("path,fragment", [
    ("input.x", "'x' looks up a key in input, which is not a mapping"),
    ("layers.x", "'x' looks up a key in layers, which is not a mapping"),
])
def test_key_into_a_non_mapping(path: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        get_at(SPEC, path)


@pytest.mark.parametrize("path,fragment", [
    ("layers[3].conv2d.filters.x", "cannot set 'x': layers[3].conv2d.filters is not a mapping"),
    ("layers.x", "cannot set 'x': layers is not a mapping"),
    ("layers[1].relu", "cannot set 'relu': layers[1] is not a mapping"),
])
def test_set_into_a_non_mapping(path: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        set_at(SPEC, path, 1)
    assert fragment in str(info.value)
    assert info.value.path == path


def test_set_at_needs_the_parent_to_exist() -> None:
    with pytest.raises(SpecError, match="no key or named item 'nope'"):
        set_at(SPEC, "nope.x", 1)
    with pytest.raises(SpecError, match="no key or named item 'train'"):
        set_at(SPEC, "train.lr", 0.1)


def test_a_range_of_iterations_is_read_after_repeat_only():
    assert parse_path("layers[0].repeat[1-999].layers[0]") == ["layers", 0, "repeat", 1, "layers", 0]
    with pytest.raises(SpecError, match=r"a range \[i-j\] of iterations follows 'repeat' only"):
        parse_path("layers[0-2]")
