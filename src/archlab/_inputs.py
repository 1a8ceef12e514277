"""Model inputs as one array or as named arrays, handled the same way everywhere.

A spec with one ``input`` takes one array (numpy or torch); a graph-form spec's ``inputs`` take
a dict of them by name (``{"categorical": ids, "dense": values}``), as Keras' functional models
do. Data sets, the training engine, evaluation, prediction and export hold inputs in either form
and go through these functions instead of testing for a dict themselves. Plain functions over
plain dicts rather than a tensor-dict library: the in-memory training loop indexes one tensor per
input per step, and a wrapper object would cost Python work there (benchmarks/train_throughput.py).
The single input keeps the name ``input``, the key a parsed spec gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["SINGLE", "as_named", "call_model", "first_input", "fmt_shape", "input_bytes", "is_named", "map_inputs",
           "num_rows"]

A = TypeVar("A")
#: The name a spec's single ``input`` goes by (``ParsedSpec.raw_inputs["input"]``).
SINGLE = "input"


def fmt_shape(shape: tuple[int, ...]) -> str:
    """Format a shape as Python prints a tuple, (128,), (64, 5, 5), for every message about shapes."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def is_named(x: object) -> bool:
    """Whether ``x`` is named inputs (a mapping of arrays) rather than one array."""
    return isinstance(x, Mapping)


def map_inputs(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn`` applied to the one array, or to each named array (keeping the names and their order).

    Example:
        >>> map_inputs(len, {"a": [1, 2], "b": [3]})
        {'a': 2, 'b': 1}
        >>> map_inputs(len, [1, 2, 3])
        3
    """
    return {name: fn(array) for name, array in x.items()} if is_named(x) else fn(x)


def first_input(x: Any) -> Any:
    """The one array, or the first named array (all have the same number of rows)."""
    return next(iter(x.values())) if is_named(x) else x


def num_rows(x: Any) -> int:
    """Samples in ``x``: the length of its arrays' first axis."""
    return len(first_input(x))


def input_bytes(x: Any) -> int:
    """Bytes the arrays hold together (numpy ``nbytes``; torch tensors by element size)."""
    arrays = x.values() if is_named(x) else [x]
    return sum(int(a.nbytes) if hasattr(a, "nbytes") else a.numel() * a.element_size() for a in arrays)


def as_named(x: Any) -> dict[str, Any]:
    """Named inputs as a dict; one array under the name ``input``."""
    return dict(x) if is_named(x) else {SINGLE: x}


def call_model(model: Callable[..., A], x: Any) -> A:
    """The model on one input, or on named inputs passed by name (``model(**x)``)."""
    return model(**x) if is_named(x) else model(x)
