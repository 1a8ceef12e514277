"""Rows of the analysis add up: shared repeat iterations carry no parameters of their own, and
the iteration paths the rows show lead back to the spec."""

import archlab
from archlab.spec import get_at, set_at

SPEC = {"input": [8], "layers": [{"repeat": {"times": 3, "share_weights": True, "layers": [
    {"dense": {"units": 8, "activation": "relu"}}]}}]}


def test_shared_iterations_rows_have_zero_params_and_rows_sum_to_total():
    analysis = archlab.analyze(SPEC)
    rows = {r.path: r for r in analysis.layers}
    assert rows["layers[0].repeat[0].layers[0]"].params == 72
    # iterations 2 and 3 are identical to iteration 1: one row stands for both
    tail = rows["layers[0].repeat[1-2]"]
    assert (tail.type, tail.params, tail.note) == ("iterations", 0, "iterations 2-3: identical, x2; share "
                                                   "iteration 0's weights")
    assert tail.flops == 2 * (2 * 64 + 8)  # work is done each time
    children = [r for r in analysis.layers if r.depth == 2]
    assert sum(r.params for r in children) == analysis.total_params == 72
    assert sum(r.flops for r in children) == rows["layers[0]"].flops == analysis.flops
    assert analysis.flops == 3 * (2 * 64 + 8)


def test_iteration_paths_from_rows_resolve_in_the_spec():
    path = "layers[0].repeat[2].layers[0].dense.units"
    assert get_at(SPEC, path) == 8
    assert get_at(set_at(SPEC, path, 16), "layers[0].repeat.layers[0].dense.units") == 16


def test_the_row_of_identical_iterations_resolves_to_its_repeat():
    path = next(r.path for r in archlab.analyze(SPEC).layers if r.type == "iterations")
    assert path == "layers[0].repeat[1-2]"
    assert get_at(SPEC, path) == SPEC["layers"][0]["repeat"]
    assert get_at(SPEC, f"{path}.times") == 3
