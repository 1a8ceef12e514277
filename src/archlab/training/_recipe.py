"""The training recipe: the ``train:`` section of a spec, validated, with CLI overrides."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from archlab.exceptions import SpecError, suggest
from archlab.tasks import list_metrics, tasks

from ._augment import parse_augment

__all__ = ["AudioAugmentConfig", "CorruptMode", "EarlyStoppingConfig", "ModalityDropoutConfig", "OptimizerConfig",
           "Recipe", "SECTION_SHORTCUTS", "SHORTCUTS", "ScheduleConfig", "TokenizerConfig", "expand_train_section",
           "resolve_recipe"]

PosFloat = Annotated[float, Field(gt=0)]
#: how an input is corrupted (``archlab.training._corrupt.corrupt``): all zeros, or noise on its scale
CorruptMode = Literal["zero", "noise"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Config):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PosFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw


class ScheduleConfig(_Config):
    """Learning-rate schedule. step: multiply by gamma every step_size epochs; cosine: anneal to
    min_lr over the run; one_cycle: warm up to max_lr (default 10 x lr) then anneal (Smith 2018);
    cyclic_cosine: ``cycles`` cosine annealings of equal length, each restarting at the recipe's lr
    and stepping per batch (snapshot ensembles, Huang et al. 2017; the epochs must divide into them)."""

    name: Literal["none", "step", "cosine", "one_cycle", "cyclic_cosine"] = "none"
    step_size: Annotated[int, Field(ge=1)] = 1
    gamma: PosFloat = 0.1
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    max_lr: PosFloat | None = None
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.25
    cycles: Annotated[int, Field(ge=1)] = 1  # cyclic_cosine


class EarlyStoppingConfig(_Config):
    """Keras' EarlyStopping: stop once ``monitor`` has not improved (by more than min_delta) for
    ``patience`` epochs in a row; restore_best then loads the best epoch's weights."""

    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 3
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: bool = True


class TokenizerConfig(_Config):
    """The subword tokenizer of a text task (``archlab.text``), trained on the training split only.
    shared: one vocabulary for source and target (needed to tie their embeddings)."""

    kind: Literal["bpe", "unigram"] = "bpe"
    vocab_size: Annotated[int, Field(ge=8)] = 8000
    shared: bool = True
    lowercase: bool = False


def _range(value: tuple[float, float], what: str) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"{what} is a [low, high] range, low first; got {list(value)}")
    return value


class AudioAugmentConfig(_Config):
    """Waveform augmentation of (N, samples) training inputs, each draw per sample from the
    engine's seeded generator (``archlab.training._audio_augment``); each entry optional."""

    #: the largest time shift, as a fraction of the length (0: none)
    shift: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: zero: samples shifted past an end are dropped, zeros come in; roll: they wrap round
    shift_fill: Literal["zero", "roll"] = "zero"
    #: [low, high] dB: white noise at an SNR drawn uniformly per sample
    noise_snr_db: tuple[Annotated[float, Field(allow_inf_nan=False)], Annotated[float, Field(allow_inf_nan=False)]] \
        | None = None
    #: [low, high]: the playback speed drawn uniformly per sample (Ko et al. 2015 use 0.9, 1.0, 1.1)
    speed: tuple[Annotated[float, Field(ge=0.5, le=2)], Annotated[float, Field(ge=0.5, le=2)]] | None = None

    @field_validator("noise_snr_db")
    @classmethod
    def _snr_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else _range(value, "noise_snr_db")

    @field_validator("speed")
    @classmethod
    def _speed_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else _range(value, "speed")


class ModalityDropoutConfig(_Config):
    """Modality dropout of a spec with named inputs: while training, each sample with probability
    ``p`` has one of ``inputs`` (drawn uniformly) replaced by ``corrupt`` (``_corrupt.py``)."""

    p: Annotated[float, Field(gt=0, le=1)] = 0.5
    mode: CorruptMode = "zero"
    #: the inputs that may be dropped, by name; None: all of the spec's
    inputs: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("inputs")
    @classmethod
    def _once_each(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) < len(value):
            raise ValueError(f"each input is named once; got {value}")
        return value


class Recipe(_Config):
    """How to train a spec. Defaults are the seed example's recipe (Keras' fit defaults)."""

    data: str | None = None
    epochs: Annotated[int, Field(ge=1)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 128
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    #: auto: the task's loss; a loss name (cross_entropy, binary_cross_entropy, mse) picks the task that
    #: trains with it when the spec names no task (runs record it).
    loss: str = "auto"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: the weight of the auxiliary losses modules keep as ``aux_loss`` after each forward (moe's load
    #: balancing), added to the task's loss before backward; 0.01 is Switch Transformer's alpha
    #: (Fedus et al. 2022). Without it a top_k-1 router gets no gradient at all.
    aux_loss_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.01
    #: None: the task's default metrics (``archlab.tasks``); each must apply to the task.
    metrics: list[str] | None = None
    top_k: Annotated[int, Field(ge=1)] = 5
    #: Keras' meaning: the last fraction of the training data, taken before shuffling.
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.1
    #: last, stratified, or group: whole groups (the data's ``groups_train``, FSDD's speakers) held
    #: out, so validation measures groups never trained on.
    validation: Literal["last", "stratified", "group"] = "last"
    #: the seed of a stratified or group validation split; None: ``seed``. Set it to keep one
    #: validation split across seeds (an ensemble's bagging and boosting members share the base seed's).
    validation_seed: int | None = None
    shuffle: bool = True
    #: Batches of sequences of similar length (shuffled buckets), each trimmed of its all-padding
    #: columns before the forward: for long inputs that declare a pad_id (in-memory data).
    bucketing: bool = False
    grad_clip: PosFloat | None = None
    #: max-norm constraint (Srivastava et al. 2014): after each step, every dense/conv unit's incoming
    #: weights are renormed to an L2 norm of at most this (3 or 4 in the dropout paper); None: none
    max_norm: PosFloat | None = None
    early_stopping: EarlyStoppingConfig | None = None
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: torch: PyTorch's default initialisation; glorot: Keras' (Glorot-uniform weights, zero biases).
    init: Literal["torch", "glorot"] = "torch"
    #: image and token augmentations, applied in order to training batches (``_augment.py``): each a
    #: name or {name: {options}}; one name alone (``shift``) is a list of one, ``none`` an empty list.
    augment: list[Any] = Field(default_factory=list)
    #: waveform augmentation of (N, samples) inputs (speed, shift, noise); None: none
    augment_audio: AudioAugmentConfig | None = None
    #: named inputs only: each sample loses one of its inputs with probability p (zeros or noise); None: none
    modality_dropout: ModalityDropoutConfig | None = None
    #: memory: the training split as one tensor on the device (the fast path); stream: a memory-mapped
    #: file read batch by batch by a DataLoader; auto: stream when the split is over half the available memory.
    data_loading: Literal["auto", "memory", "stream"] = "auto"
    #: DataLoader worker processes of the streaming path (0: read in the training process).
    workers: Annotated[int, Field(ge=0)] = 0
    #: text tasks (seq2seq, language_model): the subword tokenizer; None there means the defaults.
    tokenizer: TokenizerConfig | None = None

    @property
    def split_seed(self) -> int:
        """The seed of a stratified or group validation split: ``validation_seed``, else ``seed``."""
        return self.seed if self.validation_seed is None else self.validation_seed

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else ({"name": "none"} if value is None else value)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_list(cls, value: Any) -> Any:
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, (str, dict)) else value

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_by_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        known = list_metrics()
        for name in value or []:
            if name not in known:
                raise ValueError(f"unknown metric '{name}'{suggest(name, known)} (known: {', '.join(known)})")
        return value

    @model_validator(mode="after")
    def _whole_cycles(self) -> Recipe:
        # a snapshot is taken at an epoch's end, so each cycle ends on one: no rounding to explain
        cycles = self.schedule.cycles
        if self.schedule.name == "cyclic_cosine" and self.epochs % cycles:
            below, above = self.epochs // cycles * cycles, (self.epochs // cycles + 1) * cycles
            fix = f"epochs: {below} or {above}" if below else f"epochs: {above}"
            raise ValueError(f"schedule cyclic_cosine runs {cycles} cycles of whole epochs, so epochs must be a "
                             f"multiple of {cycles}; got {self.epochs}: set {fix}")
        return self

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        known = ["auto", *sorted({tasks.get(t).loss_name for t in tasks})]
        if value not in known:
            raise ValueError(f"unknown loss {value!r}{suggest(value, known)} (known: "
                             f"{', '.join(repr(k) for k in known)})")
        return value


_SECTIONS: dict[str, type[BaseModel]] = {"optimizer": OptimizerConfig, "schedule": ScheduleConfig,
                                         "early_stopping": EarlyStoppingConfig, "tokenizer": TokenizerConfig,
                                         "augment_audio": AudioAugmentConfig,
                                         "modality_dropout": ModalityDropoutConfig}


#: keys that set another recipe key (its path under ``train.``), as command-line overrides; the one
#: table that resolve_recipe, cv's sweeps and cv's check of sweeps against options read
SHORTCUTS = {"lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay"}
#: the shortcuts a spec's train section may write too (``lr`` there is ``train.optimizer.lr``)
SECTION_SHORTCUTS = ("weight_decay",)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is not None:
            out[key] = value
    return out


#: the train section's short forms: a name for a mapping with that name (``optimizer: sgd``), a flag
_SHORT_FORMS = {"optimizer": "name", "schedule": "name", "tokenizer": "kind"}


def expand_train_section(train_section: dict | None) -> dict:
    """A copy of a ``train:`` section with its short forms written out as mappings
    (``optimizer: sgd`` -> ``{name: sgd}``, ``early_stopping: true`` -> ``{}``), so that a path
    into one (``train.optimizer.weight_decay``) has a mapping to set a key in.

    Example:
        >>> expand_train_section({"optimizer": "sgd", "early_stopping": True})
        {'optimizer': {'name': 'sgd'}, 'early_stopping': {}}
    """
    out = dict(train_section or {})
    for key, field in _SHORT_FORMS.items():
        if isinstance(out.get(key), str):
            out[key] = {field: out[key]}
    if out.get("early_stopping") is True:
        out["early_stopping"] = {}
    return out


def resolve_recipe(train_section: dict | None, **overrides: Any) -> Recipe:
    """The spec's ``train:`` section with command-line overrides (None means: not given).

    ``lr`` overrides ``optimizer.lr``; ``weight_decay`` (in the section or as an override) is
    ``optimizer.weight_decay``, so that ``cv --sweep train.weight_decay=...`` reads as the knob it is.
    Errors are SpecErrors with the ``train.`` path.

    Example:
        >>> resolve_recipe({"epochs": 3, "optimizer": "sgd"}, lr=0.1).optimizer.lr
        0.1
        >>> resolve_recipe({"optimizer": "adamw", "weight_decay": 1e-4}).optimizer.weight_decay
        0.0001
    """
    if train_section is not None and not isinstance(train_section, dict):
        raise SpecError(f"'train' is a mapping (the training recipe); got {train_section!r}", "train")
    # optimizer: sgd is {name: sgd}, so that lr and the name merge
    data, overrides = expand_train_section(train_section), expand_train_section(overrides)
    for source in (data, overrides):
        for key, target in SHORTCUTS.items():
            value = source.pop(key, None) if source is overrides or key in SECTION_SHORTCUTS else None
            if value is None:
                continue
            section, field = target.split(".")
            given = (source.get(section) or {}).get(field)
            if source is data and given is not None and given != value:
                raise SpecError(f"{key} ({value!r}) and {target} ({given!r}) are one setting given twice with "
                                "different values: keep one", f"train.{key}")
            source[section] = _merge(source.get(section) or {}, {field: value})
    data = _merge(data, overrides)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            section = ".".join(["train", *map(str, err["loc"][:-1])])
            owner = _SECTIONS.get(str(err["loc"][0]), Recipe) if len(err["loc"]) > 1 else Recipe
            keys = [*owner.model_fields, *(SECTION_SHORTCUTS if owner is Recipe else ())]
            key = str(err["loc"][-1])
            msg = f"unknown key '{key}'{suggest(key, keys)} ({section} takes: {', '.join(keys)})"
        else:
            msg = f"{msg[0].lower()}{msg[1:]}; got {err.get('input')!r}"
            if err["type"] == "literal_error" and isinstance(err.get("input"), str):  # a typo in a choice
                msg += suggest(err["input"], re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", "")))
        raise SpecError(msg, f"train.{loc}" if loc else "train") from None
    parse_augment(recipe.augment)  # an unknown entry or bad options: a SpecError at train.augment[i] now
    return recipe
