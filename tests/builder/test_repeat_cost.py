"""The cost of parsing, analysing and checking a spec follows its size, not its numbers: a repeat
of a billion identical iterations and an LSTM of a billion layers are counted exactly by
multiplication, and build() refuses what cannot be allocated before allocating it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import archlab
from archlab.analysis._memory import linux_available_memory
from archlab.builder._build import MODULE_BYTES, check_fits
from archlab.exceptions import MemoryLimitError, ShapeError

BILLION = 1_000_000_000
EXAMPLES = Path(__file__).parents[2] / "examples"


def repeat(times: int, layers: list, **extra) -> dict:
    return {"input": [8], "layers": [{"repeat": {"times": times, "layers": layers, **extra}}]}


BLOCK = [{"dense": {"units": 8, "activation": "relu"}}, {"batchnorm": {}}]
PER_ITERATION = 8 * 8 + 8 + 2 * 8  # dense + batchnorm's gamma and beta


@pytest.mark.timeout(20)
def test_a_billion_iterations_are_counted_exactly_and_match_the_built_module():
    small = {times: archlab.build(repeat(times, BLOCK), device="meta").num_params() for times in (1, 2, 5)}
    assert small == {t: t * PER_ITERATION for t in (1, 2, 5)}  # the built modules, an independent count
    a = archlab.analyze(repeat(BILLION, BLOCK))
    assert a.total_params == BILLION * PER_ITERATION
    assert a.buffers == BILLION * (2 * 8 + 1)
    one = archlab.analyze(repeat(1, BLOCK))
    assert (a.macs, a.flops) == (BILLION * one.macs, BILLION * one.flops)
    assert a.training_memory_bytes["activations"] == 4 * (8 + BILLION * (one.training_memory_bytes["activations"] // 4
                                                                         - 8))


@pytest.mark.timeout(20)
def test_rows_do_not_grow_with_times_and_one_row_stands_for_the_identical_iterations():
    rows = {times: archlab.analyze(repeat(times, BLOCK)).layers for times in (3, 1000, BILLION)}
    assert len(rows[3]) == len(rows[1000]) == len(rows[BILLION]) == 1 + 3 + 1
    tail = rows[BILLION][-1]
    assert (tail.path, tail.type, tail.depth) == ("layers[0].repeat[1-999999999]", "iterations", 2)
    assert tail.note == "iterations 2-1,000,000,000: identical, x999,999,999"
    assert tail.params == (BILLION - 1) * PER_ITERATION
    assert rows[BILLION][0].params == BILLION * PER_ITERATION


def test_a_block_that_changes_the_shape_once_has_two_distinct_iterations():
    spec = {"input": [5], "layers": [{"repeat": {"times": 4, "layers": [{"dense": {"units": 8}}]}}]}
    node = archlab.parse(spec).root.items[0]
    assert [it.input.shape for it in node.distinct] == [(5,), (8,)]
    assert len(node.iterations) == 4
    assert archlab.analyze(spec).total_params == archlab.build(spec).num_params() == (5 * 8 + 8) + 3 * (8 * 8 + 8)


def test_later_iterations_are_made_on_demand_with_their_own_keys():
    spec = {"input": [4], "layers": [{"repeat": {"times": 6, "layers": [
        {"residual": {"layers": [{"dense": {"units": 4}}]}},
        {"repeat": {"times": 3, "layers": ["relu"]}}]}}]}
    node = archlab.parse(spec).root.items[0]
    assert len(node.distinct) == 1
    fifth = node.iterations[4]
    keys = [n.key for _, n in fifth.walk()]
    assert keys[:3] == ["layers[0].repeat[4].layers", "layers[0].repeat[4].layers[0]",
                        "layers[0].repeat[4].layers[0].residual.layers"]
    inner = fifth.items[1]
    assert [it.key for it in inner.iterations] == [f"layers[0].repeat[4].layers[1].repeat[{i}].layers"
                                                   for i in range(3)]
    assert all(n.path.startswith("layers[0].repeat.layers") for _, n in fifth.walk())
    assert [it.key for it in node.iterations[-2:]] == ["layers[0].repeat[4].layers", "layers[0].repeat[5].layers"]
    with pytest.raises(IndexError):
        node.iterations[6]
    model = archlab.build(spec)
    assert len(model.net[0].blocks) == 6
    assert model.num_params() == archlab.analyze(spec).total_params == 6 * 20


def test_a_tie_inside_a_repeat_shares_the_first_iterations_weight_as_before():
    spec = {"input": [4], "layers": [{"repeat": {"times": 4, "layers": [
        {"dense": {"units": 4}, "name": "a"}, {"dense": {"units": 4}, "tie": "a"}]}}]}
    model = archlab.build(spec)
    first = model.net[0].blocks[0].a.weight
    assert all(model.net[0].blocks[i][1].weight is first for i in range(4))
    assert model.num_params() == archlab.analyze(spec).total_params == 4 * 20 + 4 * 4  # each tied layer keeps its bias


def test_a_shape_that_changes_every_time_is_refused_past_the_limit():
    from archlab.builder._nodes import MAX_DISTINCT_ITERATIONS

    grow = {"parallel": {"branches": [["relu"], [{"dense": {"units": 1}}]]}}
    spec = {"input": [1], "layers": [{"repeat": {"times": BILLION, "layers": [grow]}}]}
    with pytest.raises(ShapeError, match=rf"layers\[0\]\.repeat\.times: .*first {MAX_DISTINCT_ITERATIONS:,} "
                                         r"iterations .*fewer times"):
        archlab.parse(spec)


def lstm(num_layers: int, bidirectional: bool = False) -> dict:
    return {"input": [7, 5], "layers": [{"lstm": {"units": 6, "num_layers": num_layers,
                                                  "bidirectional": bidirectional}}]}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_an_lstm_of_a_billion_layers_is_counted_in_closed_form(bidirectional):
    d, h, f, t = (2 if bidirectional else 1), 6, 5, 7
    for layers in (1, 3):  # torch's own module is the independent count
        assert archlab.analyze(lstm(layers, bidirectional)).total_params == \
            archlab.build(lstm(layers, bidirectional), device="meta").num_params()
    first, later = d * 4 * (h * (f + h) + 2 * h), d * 4 * (h * (d * h + h) + 2 * h)
    a = archlab.analyze(lstm(BILLION, bidirectional))
    assert a.total_params == first + (BILLION - 1) * later
    assert a.macs == d * 4 * t * h * (f + h) + (BILLION - 1) * d * 4 * t * h * (d * h + h)
    assert a.flops == 2 * a.macs + BILLION * d * t * h * 13


@pytest.mark.timeout(20)
def test_gpt3_with_a_billion_layers_is_analysed_with_exact_integer_counts():
    spec = yaml.safe_load((EXAMPLES / "gpt3-175b.yaml").read_text())
    counts = {}
    for times in (96, 97, BILLION):
        spec["layers"][3]["repeat"]["times"] = times
        counts[times] = archlab.analyze(spec)
    block = counts[97].total_params - counts[96].total_params
    assert counts[96].total_params == 174_604_259_328
    big = counts[BILLION]
    assert isinstance(big.total_params, int) and isinstance(big.flops, int)
    assert big.total_params == 174_604_259_328 + (BILLION - 96) * block
    assert big.flops == counts[96].flops + (BILLION - 96) * (counts[97].flops - counts[96].flops)
    assert len(big.layers) == len(counts[96].layers)


@pytest.mark.timeout(20)
def test_build_refuses_a_model_that_cannot_be_allocated_with_the_numbers():
    with pytest.raises(MemoryLimitError, match=r"needs 650\.45 GiB on cpu \(650\.45 GiB of weights at fp32, .*"
                                               r"is available; use fewer or smaller layers, or analyse it with "
                                               r"'archlab summary', which allocates nothing"):
        archlab.build(str(EXAMPLES / "gpt3-175b.yaml"))
    # no weight at all, but a billion modules, in host memory even on the meta device
    for device in (None, "meta"):
        with pytest.raises(MemoryLimitError, match=r"needs 3\.73 TiB on cpu \(0 B of weights at fp32, 3\.73 TiB for "
                                                   r"its 1,000,000,000 layer modules\)"):
            archlab.build(repeat(BILLION, ["relu"]), device=device)
    assert archlab.build(str(EXAMPLES / "gpt3-175b.yaml"), device="meta").num_params() == 174_604_259_328


def test_check_fits_counts_weights_and_modules():
    parsed = archlab.parse(repeat(3, BLOCK))
    check_fits(parsed, "cpu")  # 3 x 96 parameters fit
    check_fits(parsed, "meta")  # allocates nothing, never refused
    assert MODULE_BYTES > 0


def test_linux_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:  2048 kB\nMemFree:  100 kB\nMemAvailable:   1000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert linux_available_memory(tmp_path / "meminfo", cgroup) == 1000 * 1024  # no limit files
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("5000\n")
    assert linux_available_memory(tmp_path / "meminfo", cgroup) == 1000 * 1024
    (cgroup / "memory.max").write_text("300000\n")
    assert linux_available_memory(tmp_path / "meminfo", cgroup) == 300000 - 5000
    assert linux_available_memory(tmp_path / "missing", cgroup) is None


def test_available_memory_of_each_device():
    from archlab.analysis import available_memory

    assert available_memory("meta") is None
    cpu = available_memory("cpu")
    assert cpu is not None and cpu > 2**20 and available_memory() == pytest.approx(cpu, rel=0.5)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_weights_are_compared_with_its_free_memory():
    import torch

    from archlab.analysis import available_memory

    free = torch.cuda.mem_get_info()[0]
    assert available_memory("cuda") == pytest.approx(free, rel=0.05)
    with pytest.raises(MemoryLimitError, match=r"needs 650\.45 GiB on cuda"):
        archlab.build(str(EXAMPLES / "gpt3-175b.yaml"), device="cuda")
    assert archlab.build(repeat(3, BLOCK), device="cuda").num_params() == 3 * PER_ITERATION
