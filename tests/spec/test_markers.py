"""Search markers: finding them (also inside choice options), checking them, and spaces."""

from __future__ import annotations

import pytest

import archlab
from archlab import SpecError
from archlab.spec import Marker, find_markers, first_point, get_at, is_marker, load, parse_marker

SPACE = {
    "input": [1, 28, 28],
    "layers": [
        {"conv2d": {"filters": {"choice": [16, 32, 64]}, "kernel_size": 3, "activation": "relu"}},
        # the layer type itself is searched: a choice of whole layer items, one holding a marker
        {"choice": [
            {"maxpool2d": {"pool_size": 2}},
            {"conv2d": {"filters": {"int": [8, 64], "step": 8}, "kernel_size": 3, "strides": 2}},
        ]},
        "flatten",
        {"dense": {"units": {"int": [16, 256], "log": True}}},
        {"dropout": {"rate": {"float": [0.0, 0.5], "step": 0.1}}},
        {"repeat": {"times": {"int": [1, 3]}, "layers": [{"dense": {"units": 16, "activation": "relu"}}]}},
        {"dense": {"units": 10}},
    ],
    "train": {"lr": {"float": [1e-4, 1e-1], "log": True}},
}

EXPECTED = [
    ("layers[0].conv2d.filters", Marker("choice", (16, 32, 64))),
    ("layers[1]", Marker("choice", ({"maxpool2d": {"pool_size": 2}},
                                    {"conv2d": {"filters": {"int": [8, 64], "step": 8}, "kernel_size": 3,
                                                "strides": 2}}))),
    ("layers[1].choice[1].conv2d.filters", Marker("int", (8, 64), step=8)),
    ("layers[3].dense.units", Marker("int", (16, 256), log=True)),
    ("layers[4].dropout.rate", Marker("float", (0.0, 0.5), step=0.1)),
    ("layers[5].repeat.times", Marker("int", (1, 3))),
    ("train.lr", Marker("float", (1e-4, 1e-1), log=True)),
]


def test_find_markers() -> None:
    assert find_markers(SPACE) == EXPECTED


def test_marker_paths_lead_back_to_the_markers() -> None:
    for path, marker in find_markers(SPACE):
        assert parse_marker(get_at(SPACE, path), path) == marker


def test_find_markers_in_a_concrete_spec_is_empty() -> None:
    assert find_markers(first_point(SPACE)) == []
    assert find_markers({"input": [4], "layers": ["relu"]}) == []


def test_nested_choices() -> None:
    data = {"a": {"choice": [{"choice": [1, 2]}, 3]}}
    assert find_markers(data) == [("a", Marker("choice", ({"choice": [1, 2]}, 3))),
                                  ("a.choice[0]", Marker("choice", (1, 2)))]
    assert first_point(data) == {"a": 1}


def test_markers_in_graph_form() -> None:
    graph = {"inputs": {"x": [8]}, "graph": {"h": {"from": "x", "layers": [
        {"dense": {"units": {"choice": [4, 8]}, "activation": {"choice": ["relu", "tanh"]}}}]}}, "outputs": "h"}
    assert [p for p, _ in find_markers(graph)] == ["graph.h.layers[0].dense.units",
                                                   "graph.h.layers[0].dense.activation"]


@pytest.mark.parametrize("value,marker", [
    ({"choice": [16, 32]}, Marker("choice", (16, 32))),
    ({"choice": ["relu"]}, Marker("choice", ("relu",))),
    ({"int": [1, 6]}, Marker("int", (1, 6))),
    ({"int": [1, 6], "step": 1}, Marker("int", (1, 6), step=1)),
    ({"int": [3, 3]}, Marker("int", (3, 3))),
    ({"int": [8, 512], "log": True}, Marker("int", (8, 512), log=True)),
    ({"float": [1e-4, 1e-1], "log": True}, Marker("float", (1e-4, 1e-1), log=True)),
    ({"float": [0, 1]}, Marker("float", (0, 1))),
    ({"float": [-1.0, 1.0], "step": 0.5}, Marker("float", (-1.0, 1.0), step=0.5)),
    ({"float": [0.0, 1.0], "log": False}, Marker("float", (0.0, 1.0))),
])
def test_parse_marker(value: dict, marker: Marker) -> None:
    assert is_marker(value)
    assert parse_marker(value) == marker


@pytest.mark.parametrize("value,fragment", [
    ({"int": [5, 1]}, "{int: [5, 1]} has low > high: write [1, 5]"),
    ({"float": [0.5, 0.1]}, "{float: [0.5, 0.1]} has low > high: write [0.1, 0.5]"),
    ({"choice": []}, "{choice: ...} needs a non-empty list of options, got []"),
    ({"choice": 3}, "{choice: ...} needs a non-empty list of options, got 3"),
    ({"int": [1.5, 3]}, "{int: [low, high]} needs two int bounds, got [1.5, 3]"),
    ({"int": [1, 2, 3]}, "{int: [low, high]} needs two int bounds, got [1, 2, 3]"),
    ({"int": [True, 3]}, "{int: [low, high]} needs two int bounds, got [True, 3]"),
    ({"int": 4}, "{int: [low, high]} needs two int bounds, got 4"),
    ({"float": ["a", 1]}, "{float: [low, high]} needs two float bounds, got ['a', 1]"),
    ({"int": [1, 3], "stpe": 1}, "unknown key 'stpe' in an int marker; did you mean 'step'? "
                                 "(allowed beside 'int': log, step)"),
    ({"float": [0.1, 1.0], "lgo": True}, "unknown key 'lgo' in a float marker; did you mean 'log'?"),
    ({"choice": [1, 2], "step": 1}, "unknown key 'step' in a choice marker (allowed beside 'choice': no options)"),
    ({"choice": [1], "int": [1, 2]}, "a search marker has one of choice/int/float, found choice, int"),
    ({"float": [0.0, 1.0], "log": True}, "a log-scaled float marker needs low > 0, got 0.0"),
    ({"float": [-1.0, 1.0], "log": True}, "a log-scaled float marker needs low > 0, got -1.0"),
    ({"int": [0, 8], "log": True}, "a log-scaled int marker needs low > 0, got 0"),
    ({"float": [1e-4, 1e-1], "log": True, "step": 0.01}, "a float marker cannot have both 'step' and 'log: true'"),
    ({"int": [1, 64], "log": True, "step": 2}, "an int marker cannot have both 'step' and 'log: true'"),
    ({"int": [1, 3], "step": 0}, "'step' in an int marker must be a positive int, got 0"),
    ({"int": [1, 3], "step": 1.5}, "'step' in an int marker must be a positive int, got 1.5"),
    ({"float": [0.1, 1.0], "step": -0.1}, "'step' in a float marker must be a positive float, got -0.1"),
    ({"int": [1, 3], "log": "yes"}, "'log' in an int marker must be true or false, got 'yes'"),
])
def test_parse_marker_errors(value: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_marker(value, "layers[0].dense.units")
    assert info.value.path == "layers[0].dense.units"
    assert str(info.value).startswith("layers[0].dense.units: ")
    assert fragment in str(info.value)


def test_find_markers_reports_a_bad_marker_with_its_path() -> None:
    data = {"input": [4], "layers": ["relu", {"dense": {"units": {"int": [5, 1]}}}]}
    with pytest.raises(SpecError) as info:
        find_markers(data)
    assert str(info.value) == "layers[1].dense.units: {int: [5, 1]} has low > high: write [1, 5]"


def test_bad_marker_inside_a_choice_option() -> None:
    data = {"input": [4], "layers": [{"choice": ["relu", {"dense": {"units": {"choice": []}}}]}]}
    with pytest.raises(SpecError) as info:
        find_markers(data)
    assert info.value.path == "layers[0].choice[1].dense.units"


def test_is_marker() -> None:
    assert is_marker({"choice": [1]})
    assert is_marker({"float": [0.1, 1.0], "log": True})
    assert not is_marker({"dense": {"units": 3}})
    assert not is_marker("choice")
    assert not is_marker(["choice"])


def test_describe() -> None:
    described = [m.describe() for _, m in find_markers(SPACE)]
    assert described[0] == "{choice: [16, 32, 64]}"
    assert described[2:] == ["{int: [8, 64], step: 8}", "{int: [16, 256], log: true}",
                             "{float: [0.0, 0.5], step: 0.1}", "{int: [1, 3]}", "{float: [0.0001, 0.1], log: true}"]


# -- spaces -------------------------------------------------------------------------------------

def test_spec_is_space() -> None:
    space = load(SPACE)
    assert space.is_space
    assert space.markers == EXPECTED
    concrete = load(first_point(SPACE))
    assert not concrete.is_space
    assert concrete.markers == []


def test_spec_with_a_bad_marker_loads_but_is_space_raises() -> None:
    spec = load({"input": [4], "layers": [{"dense": {"units": {"int": [5, 1]}}}]})
    with pytest.raises(SpecError, match="layers\\[0\\].dense.units: .*low > high"):
        spec.is_space  # noqa: B018


def test_first_point() -> None:
    point = first_point(SPACE)
    assert point["layers"][0] == {"conv2d": {"filters": 16, "kernel_size": 3, "activation": "relu"}}
    assert point["layers"][1] == {"maxpool2d": {"pool_size": 2}}
    assert point["layers"][3] == {"dense": {"units": 16}}
    assert point["layers"][4] == {"dropout": {"rate": 0.0}}
    assert point["layers"][5]["repeat"]["times"] == 1
    assert point["train"] == {"lr": 1e-4}
    assert SPACE["layers"][0]["conv2d"]["filters"] == {"choice": [16, 32, 64]}  # not modified


def test_first_point_resolves_markers_inside_the_chosen_option() -> None:
    data = {"x": {"choice": [{"conv2d": {"filters": {"int": [8, 64], "step": 8}}}, "relu"]}}
    assert first_point(data) == {"x": {"conv2d": {"filters": 8}}}


def test_first_point_is_a_valid_concrete_spec() -> None:
    analysis = archlab.analyze(first_point(SPACE))
    # conv 16x3x3 + pool + flatten (16*13*13) + dense 16 + dropout + dense 16 + dense 10
    assert analysis.total_params == (16 * 9 + 16) + (16 * 13 * 13 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)


@pytest.mark.parametrize("call", [archlab.build, archlab.analyze, archlab.parse])
def test_build_and_analysis_refuse_a_space_naming_the_marker(call) -> None:
    with pytest.raises(SpecError) as info:
        call(SPACE)
    assert info.value.path == "layers[0].conv2d.filters"
    assert str(info.value) == ("layers[0].conv2d.filters: holds a search marker {choice: [16, 32, 64]} (and 6 more): "
                               "this spec is a search space; fix the value, or sample it with 'archlab search'")


def test_a_single_marker_has_no_and_more() -> None:
    with pytest.raises(SpecError) as info:
        archlab.analyze({"input": [4], "layers": [{"dense": {"units": {"int": [1, 8]}}}]})
    assert str(info.value).startswith("layers[0].dense.units: holds a search marker {int: [1, 8]}: this spec")


def test_parse_allows_markers_on_request_for_structure_checks() -> None:
    # with allow_markers the builder still checks parameter types, so a space is checked at a point
    with pytest.raises(SpecError, match="'filters' should be a valid integer"):
        archlab.parse(SPACE, allow_markers=True)
    archlab.parse(first_point(SPACE))
