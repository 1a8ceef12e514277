"""Corrupting an input: a sample's input replaced by zeros or by noise, as when a sensor fails.

``corrupt`` is the one owner of what "corrupted" means. ``train.modality_dropout`` (the
``ModalityDropout`` callback) corrupts one named input of some training samples, so that a fusion
model learns not to lean on one modality alone (Neverova et al. 2016's ModDrop); ``evaluate_run(...,
corrupt=...)`` (``archlab evaluate --corrupt``) measures how a trained model does when an input is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

import torch

from archlab._inputs import SINGLE, as_named, is_named
from archlab.exceptions import SpecError, suggest

from ._callbacks import Callback
from ._recipe import CorruptMode, ModalityDropoutConfig

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["MODES", "ModalityDropout", "check_conditions", "check_modality_dropout", "corrupt",
           "corruption_conditions", "drop_modalities", "robustness"]

#: the corruptions ``corrupt`` knows (the recipe's ``modality_dropout.mode`` takes the same)
MODES: tuple[str, ...] = get_args(CorruptMode)


def corrupt(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N, ...) with every sample replaced, not added to: ``zero``, all zeros; ``noise``,
    Gaussian noise with the mean and the (population) standard deviation of the clean ``x``,
    computed over that whole tensor (all its samples and positions), so the noise is on the
    input's scale and carries none of its content. Noise is drawn on the CPU from ``generator``
    (the same noise under a seed) and moved to ``x``'s device.

    Example:
        >>> corrupt(torch.ones(2, 3), "zero", torch.Generator()).sum().item()
        0.0

    Raises:
        SpecError: an unknown mode, or noise for integer ids (they have no scale to draw on).
    """
    if mode == "zero":
        return torch.zeros_like(x)
    if mode != "noise":
        raise SpecError(f"unknown corruption {mode!r}{suggest(mode, MODES)} (known: {', '.join(MODES)})")
    if not x.is_floating_point():
        raise SpecError(f"noise replaces a float input, but this one holds {str(x.dtype).removeprefix('torch.')} "
                        "ids: corrupt it with zero")
    mean, std = x.mean(), x.std(correction=0)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return noise * std + mean


def _check_noise(mode: str, names: Sequence[str], integer: Mapping[str, bool], path: str = "",
                 option: str = "") -> None:
    """Noise draws floats: refuse it for an input of integer ids (``dtype: long``), at the spec
    ``path`` or the command-line ``option``."""
    ids = [name for name in names if mode == "noise" and integer.get(name)]
    if ids:
        message = (f"noise replaces float inputs, but {', '.join(map(repr, ids))} holds integer ids (dtype: long): "
                   "use zero for it")
        raise SpecError(f"{option}: {message}" if option else message, path)


def check_modality_dropout(config: ModalityDropoutConfig | None, inputs: Mapping[str, bool]) -> None:
    """``train.modality_dropout`` needs two named inputs or more (``inputs``: the spec's, by name,
    True for integer ids) and names only those; a SpecError before any training.

    Raises:
        SpecError: a spec with one input, an unknown name in ``inputs``, noise for integer ids.
    """
    if config is None:
        return
    where = "train.modality_dropout"
    if len(inputs) < 2:
        raise SpecError(f"{where} replaces one of a sample's named inputs, but this spec has one input "
                        f"({', '.join(inputs)}); it is for graph-form specs with two inputs or more (inputs: "
                        "{audio: ..., image: ...}): drop modality_dropout", where)
    for i, name in enumerate(config.inputs or ()):
        if name not in inputs:
            raise SpecError(f"{where}.inputs[{i}]: {name!r} is not an input of the spec{suggest(name, list(inputs))} "
                            f"(its inputs: {', '.join(inputs)})", f"{where}.inputs")
    names = config.inputs or list(inputs)
    _check_noise(config.mode, names, inputs, path=f"{where}.mode")


def drop_modalities(xb: Mapping[str, torch.Tensor], config: ModalityDropoutConfig,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Each sample, with probability ``config.p``, has one of ``config.inputs`` (all, by default),
    drawn uniformly, replaced by ``corrupt``; never more than one, so a sample always keeps one
    input. ``noise``'s mean and std are those of the batch's whole tensor of that input. The draws
    come from ``generator`` in the same order whichever samples are picked, so a seed gives the same batches."""
    names = config.inputs or list(xb)
    rows = len(next(iter(xb.values())))
    dropped = torch.rand(rows, generator=generator) < config.p  # (N,)
    which = torch.randint(len(names), (rows,), generator=generator)  # (N,): the input each sample loses
    out = dict(xb)
    for index, name in enumerate(names):
        clean = xb[name]
        chosen = (dropped & (which == index)).to(clean.device)
        chosen = chosen.view(rows, *([1] * (clean.dim() - 1)))  # (N, 1, ...): broadcast over the sample
        out[name] = torch.where(chosen, corrupt(clean, config.mode, generator), clean)
    return out


class ModalityDropout(Callback):
    """``train.modality_dropout``: each training batch's samples lose one input (``drop_modalities``),
    drawn from the engine's generator, which the checkpoint keeps: a resumed run draws what it would have."""

    def on_batch(self, engine: Engine, xb: dict[str, torch.Tensor],
                 yb: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return drop_modalities(xb, engine.recipe.modality_dropout, engine.generator), yb


def corruption_conditions(values: Sequence[str], inputs: Sequence[str]) -> list[tuple[str, str]]:
    """``--corrupt`` values as (input, mode) pairs, in order, each once: ``NAME=MODE`` corrupts that
    input, a bare ``MODE`` each of ``inputs`` (the run's, by name) in turn.

    Example:
        >>> corruption_conditions(["noise", "image=zero"], ["audio", "image"])
        [('audio', 'noise'), ('image', 'noise'), ('image', 'zero')]

    Raises:
        SpecError: an unknown mode or input name (listing the known ones).
    """
    conditions: list[tuple[str, str]] = []
    for value in values:
        name, _, mode = value.rpartition("=")
        if mode not in MODES:
            raise SpecError(f"--corrupt {value}: unknown corruption {mode!r} (give NAME=MODE or MODE, MODE one of "
                            f"{', '.join(MODES)}){suggest(mode, MODES)}")
        if "=" in value and name not in inputs:
            if len(inputs) == 1:
                raise SpecError(f"--corrupt {value}: the run has one input, {inputs[0]!r}: give --corrupt "
                                f"{inputs[0]}={mode} or --corrupt {mode}")
            raise SpecError(f"--corrupt {value}: {name!r} is not an input of the run{suggest(name, inputs)} (its "
                            f"inputs: {', '.join(inputs)})")
        for pair in ([(name, mode)] if "=" in value else [(n, mode) for n in inputs]):
            if pair not in conditions:
                conditions.append(pair)
    return conditions


def check_conditions(conditions: Sequence[tuple[str, str]], integer: Mapping[str, bool]) -> None:
    """Noise is refused for an input of integer ids, before any evaluation."""
    for name, mode in conditions:
        _check_noise(mode, [name], integer, option=f"--corrupt {name}={mode}")


def robustness(evaluate: Callable[[Any, torch.Tensor], dict[str, float]], x: Any, y: torch.Tensor,
               conditions: Sequence[tuple[str, str]], seed: int,
               clean: dict[str, float]) -> dict[str, dict[str, float]]:
    """The metrics under each condition, by name (``clean``, then ``image=noise``, ...): ``evaluate``
    (the metrics of inputs and targets) on ``x`` with that one input corrupted whole. Each condition
    draws from its own generator seeded with ``seed``, so its numbers do not depend on the others asked."""
    rows = {"clean": dict(clean)}
    for name, mode in conditions:
        named = as_named(x)
        named[name] = corrupt(named[name], mode, torch.Generator().manual_seed(seed))
        rows[f"{name}={mode}"] = evaluate(named if is_named(x) else named[SINGLE], y)
    return rows
