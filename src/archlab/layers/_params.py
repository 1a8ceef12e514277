"""Parameter field types shared by several layer families, declared as constraints (data)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

__all__ = ["NonNegInt", "Padding", "PosInt", "Rate", "Size", "as_tuple"]

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
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
