"""Parameter field types shared by several layer families, declared as constraints (data)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

__all__ = ["Epsilon", "Finite", "Momentum", "NonNegInt", "Padding", "PosInt", "Rate", "Size", "as_tuple"]

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]  # a dropout probability: 1 would drop everything
#: a running-statistics update factor: new = (1 - momentum) * old + momentum * batch
Momentum = Annotated[float, Field(ge=0.0, le=1.0)]
#: added to a variance before its square root: 0 divides by zero, inf erases the signal
Epsilon = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Size = PosInt | Annotated[list[PosInt], Field(min_length=1, max_length=3)]
Padding = Literal["valid", "same"] | NonNegInt | Annotated[list[NonNegInt], Field(min_length=1, max_length=3)]


def as_tuple(value: int | list[int], dims: int, what: str) -> tuple[int, ...]:
    """Expand an int to ``dims`` copies; a list must already have ``dims`` entries."""
    from archlab.exceptions import SpecError

    if isinstance(value, int):
        return (value,) * dims
    if len(value) != dims:
        needs = "an integer" + (f" or a list of {dims}" if dims > 1 else "")
        raise SpecError(f"'{what}' needs {needs} for a {dims}-D layer, got {value}", what)
    return tuple(value)
