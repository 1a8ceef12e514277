"""The training engine: one fast loop over in-memory tensors (or, for data that does not fit in
memory, over a memory-mapped split streamed by a DataLoader: ``_stream.py``), which ``fit_spec`` (every command
that trains, and the Keras-style ``fit``) runs. The loop does the optimisation step and the
epoch's metrics; the rest (loss checks, augmentation, early stopping, checkpoints, progress) are
callbacks (``_callbacks.py``).

Why not a DataLoader: the data sets archlab trains on fit in memory, and indexing one tensor
with a shuffled index per step costs a fraction of a DataLoader's per-batch Python work (see
benchmarks/train_throughput.py).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archlab._inputs import as_named, call_model, is_named, map_inputs, num_rows
from archlab.exceptions import ArchlabError, SpecError, suggest
from archlab.tasks import TaskKind, as_task

from ._audio_augment import AudioAugment
from ._augment import Augment, build_augment, dominant_label, input_traits
from ._callbacks import Callback, Checkpoint, DivergenceCheck, EarlyStopping, Progress, Snapshots, overrides
from ._constraints import apply_max_norm, max_norm_weights
from ._corrupt import ModalityDropout, check_modality_dropout
from ._metrics import compute_metrics, make_loss
from ._precision import resolve_precision
from ._recipe import Recipe
from ._runs import load_checkpoint
from ._stream import EpochBatches, MappedSplit
from ._stream import loader as stream_loader

__all__ = ["Engine", "History", "Inputs", "TrainingError", "bucketed_batches", "check_bucketing", "cyclic_cosine",
           "per_sample_loss", "pick_device", "split_output_activation", "trim_groups", "trim_padding", "weighted_loss"]

#: One input tensor, or a graph-form spec's inputs by name (``archlab._inputs``).
Inputs = torch.Tensor | dict[str, torch.Tensor]

log = logging.getLogger("archlab")
EVAL_BATCH = 1024
#: On a CPU, evaluation batches past a few hundred images are slower per image: validating the
#: seed CNN on 6,000 MNIST images between training epochs takes 20-40% less time in batches of
#: 256 than of 1024 (1 thread: 1.0-1.35 s vs 1.66-1.69 s; 2 threads: 0.80-0.84 s vs 1.01-1.03 s),
#: ``benchmarks/train_throughput.py --eval-batches``; see docs/benchmarks.md, "Training throughput".
EVAL_BATCH_CPU = 256
#: Bucketing sorts this many batches' worth of shuffled rows by length at a time: batches of
#: similar lengths, while which rows meet in a batch still changes from epoch to epoch.
BUCKET_POOL = 50


class TrainingError(ArchlabError, RuntimeError):
    """Training cannot go on (a non-finite loss, data that does not fit the spec)."""


@dataclass
class History:
    """What ``fit`` returns, as Keras does: ``history[metric]`` is the per-epoch list."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    run_dir: Path | None = None

    @classmethod
    def from_rows(cls, rows: list[dict], **kwargs: Any) -> History:
        history: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key != "epoch":
                    history.setdefault(key, []).append(value)
        return cls(history, [row["epoch"] for row in rows], **kwargs)


_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU; or the named device, which must be there: a device
    that is not is a SpecError before any data is loaded, not an error deep in the first step.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if name != "auto":
        where = f"--device {name} (train.device)"
        if not _DEVICE.fullmatch(str(name)):
            raise SpecError(f"{where}: expected auto, cpu, cuda, cuda:N or mps"
                            f"{suggest(str(name), ['auto', 'cpu', 'cuda', 'mps'])}")
        device = torch.device(name)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise SpecError(f"{where}: this machine has no CUDA device (torch.cuda.is_available() is False); "
                                "use --device cpu, or auto")
            if device.index is not None and device.index >= count:
                raise SpecError(f"{where}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available()):
            raise SpecError(f"{where}: Apple's MPS is not available here; use --device cpu, or auto")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_ACTIVATIONS = {"softmax": nn.Softmax, "sigmoid": nn.Sigmoid}


def split_output_activation(model: nn.Module, task: TaskKind | str) -> str | None:
    """Remove the task's final activation (``TaskKind.output_activation``: a softmax for
    classification, a sigmoid for binary and multilabel) from the model so the loss works on
    logits, as Keras does internally for softmax + categorical_crossentropy (the log of a softmax
    is unstable; log_softmax is not). Returns the removed activation, which ``predict`` applies again."""
    wanted = _ACTIVATIONS.get(as_task(task).output_activation or "")
    if wanted is None:
        return None
    container = getattr(model, "net", model)
    if hasattr(container, "nodes"):  # the graph form: the last layer of the (single) output node
        if len(container.outputs) != 1 or container.outputs[0] not in container.nodes:
            return None
        container = container.nodes[container.outputs[0]].layers
    while isinstance(container, nn.Sequential) and len(container) and isinstance(container[-1], nn.Sequential):
        container = container[-1]
    if not isinstance(container, nn.Sequential) or not len(container):
        return None
    last_name = list(container._modules)[-1]
    last = container[-1]
    if isinstance(last, wanted):
        container._modules[last_name] = nn.Identity()
    elif isinstance(getattr(last, "activation", None), wanted):
        last.activation = nn.Identity()
    else:
        return None
    return "softmax" if wanted is nn.Softmax else "sigmoid"


def check_bucketing(recipe: Recipe, pad_ids: dict[str, int]) -> None:
    """Bucketing needs an input with a pad id and the in-memory split: a SpecError before any work."""
    if not recipe.bucketing:
        return
    if not pad_ids:
        raise SpecError("train.bucketing: true batches sequences by length, but no input of the spec declares a "
                        "pad_id: write the token input as {shape: [T], dtype: long, pad_id: 0}, or drop bucketing",
                        "train.bucketing")
    if recipe.data_loading == "stream":
        raise SpecError("train.bucketing reads the training split from memory: set train.data_loading: memory "
                        "(or auto), or drop bucketing", "train.data_loading")


def _padded_inputs(x: Inputs, pad_ids: dict[str, int]) -> dict[str, int]:
    """The inputs of ``x`` that declare a pad id, by name (a single input is ``input``)."""
    names = x.keys() if is_named(x) else ("input",)
    return {name: pad for name, pad in pad_ids.items() if name in names}


def sequence_lengths(x: Inputs, pad_ids: dict[str, int]) -> torch.Tensor:
    """Per row, the longest real (non-pad) length among the padded inputs: the bucketing key."""
    named = x if is_named(x) else {"input": x}
    return torch.stack([(named[name] != pad).sum(dim=1) for name, pad in _padded_inputs(x, pad_ids).items()]).amax(0)


def bucketed_batches(order: torch.Tensor, lengths: torch.Tensor, batch_size: int,
                     generator: torch.Generator | None) -> list[torch.Tensor]:
    """Row indices of an epoch's batches of similar lengths: the shuffled ``order`` cut into pools
    of ``BUCKET_POOL`` batches, each pool sorted by length (stably) and split into batches, and the
    batches shuffled with ``generator`` (the engine's: a resumed run draws the same; None: kept
    in order, for shuffle: false)."""
    batches: list[torch.Tensor] = []
    pool = batch_size * BUCKET_POOL
    for start in range(0, len(order), pool):
        rows = order[start:start + pool]
        rows = rows[torch.sort(lengths[rows], stable=True).indices]
        batches.extend(rows.split(batch_size))
    if generator is None:
        return batches
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


#: ``trim_padding``'s name for the token targets in a group of tensors cut to one width
TARGETS = ""


def trim_groups(model: nn.Module, pad_ids: dict[str, int]) -> list[set[str]] | None:
    """Which tensors of a batch ``trim_padding`` must cut to one width: the padded inputs whose time
    axes meet position by position in the model (an elementwise or feature-axis merge), each group
    with the token targets (``TARGETS``) in the group of the input the output's time axis follows
    (the spec's padding masks say which: a seq2seq output follows ``target``, so ``source`` is cut
    to its own longest sentence). None where the spec cannot tell (no archlab spec, the sequential
    form, several outputs, an output or a merge that no input's padding marks): ``trim_padding``
    then cuts tensors of one length to one width."""
    from archlab.builder import parse

    spec = getattr(model, "spec", None)
    if spec is None or not pad_ids:
        return None
    parsed = parse(spec)
    if not parsed.is_graph or len(parsed.outputs) != 1 or parsed.output_infos[0].mask not in pad_ids:
        return None
    group = {name: {name} for name in pad_ids}
    for block in parsed.graph.values():
        if block.merge is None or len(block.source_infos) < 2:
            continue
        masks = [info.mask for info in block.source_infos]
        if any(mask not in pad_ids for mask in masks):
            return None
        joined = set().union(*(group[mask] for mask in masks))
        for name in joined:
            group[name] = joined
    group[parsed.output_infos[0].mask].add(TARGETS)
    unique: list[set[str]] = []
    for members in group.values():
        if members not in unique:
            unique.append(members)
    return unique


def trim_padding(xb: Inputs, yb: torch.Tensor, pad_ids: dict[str, int],
                 groups: list[set[str]] | None = None) -> tuple[Inputs, torch.Tensor]:
    """A batch without its trailing all-padding columns: each padded input (and token targets
    ``(N, T)``, padded with 0) is cut after its last column with a real token. The tensors of one
    of ``groups`` (``trim_groups``: inputs by name, the targets as ``TARGETS``) are cut to one width,
    the longest they need, so that what the model or the loss lines up stays lined up; without
    groups, tensors of one length are cut to one width."""
    named = dict(xb) if is_named(xb) else {"input": xb}
    pads = _padded_inputs(xb, pad_ids)
    tokens = yb.dim() == 2 and not yb.is_floating_point()
    needed = {name: named[name] != pad for name, pad in pads.items()} | ({TARGETS: yb != 0} if tokens else {})
    own = {}
    for name, real in needed.items():
        columns = torch.arange(1, real.shape[1] + 1, device=real.device)
        own[name] = max(int((real.any(dim=0) * columns).max()), 1)  # one host sync: shapes live on the host
    if groups is None:
        groups = [{m for m in needed if needed[m].shape[1] == needed[name].shape[1]} for name in needed]
    widths = dict(own)
    for members in groups:
        width = max((own[name] for name in members if name in own), default=0)
        widths.update({name: width for name in members if name in own})
    for name in pads:
        named[name] = named[name][:, :widths[name]]
    if tokens:
        yb = yb[:, :widths[TARGETS]]
    return (named if is_named(xb) else named["input"]), yb


def cyclic_cosine(cycle_steps: int, floor: float = 0.0) -> Callable[[int], float]:
    """The factor of the recipe's lr at step ``s`` (0-based) of a cyclic cosine schedule (Huang et
    al. 2017, eq. 2): ``floor + (1 - floor) / 2 * (1 + cos(pi * (s mod L) / L))`` with L
    ``cycle_steps``, so each cycle restarts at the full rate and anneals towards ``floor`` (min_lr / lr)."""
    def factor(step: int) -> float:
        return floor + (1 - floor) / 2 * (1 + math.cos(math.pi * (step % cycle_steps) / cycle_steps))

    return factor


def per_sample_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """The task's loss of each row alone, (N,): ``loss_fn`` (a mean over its batch, as every task's
    loss is) mapped over one-row batches with ``torch.func.vmap``, so that any task's loss, label
    smoothing included, gives its per-sample values without a second definition of it."""
    return torch.func.vmap(lambda o, t: loss_fn(o[None], t[None]))(out, y)


def weighted_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor,
                  y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of ``w_i l_i``, with the weights as given (Keras' ``sample_weight``,
    reduction ``sum_over_batch_size``): with weights that average 1 over the training rows, each
    batch's loss estimates the weighted risk without bias, so a batch of light rows counts for less
    than a heavy one (a per-batch ``sum(w l) / sum(w)`` would count both alike). A row of weight 0
    adds nothing to the sum but still counts in the batch size."""
    return (per_sample_loss(loss_fn, out, y) * weight).mean()


def glorot_init(model: nn.Module) -> None:
    """Keras' default initialisation: Glorot-uniform kernels and zero biases for dense and
    convolutional layers (PyTorch's default is a scaled Kaiming-uniform)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class Engine:
    """Trains one model with one recipe; optionally records everything in a run directory.

    While ``fit`` runs, callbacks read its state here: ``epoch``, ``steps`` and ``samples`` (of an
    epoch), ``step_lr`` (the current step's rate), ``rows`` (the metrics so far), ``model``,
    ``optimizer``, ``scheduler``, ``generator`` (shuffling and augmentation), ``run_dir``, and
    ``x``, ``y`` (the training split, on the device; a MappedSplit when streamed).

    Args:
        model: the module; its final softmax/sigmoid is handled by ``split_output_activation``.
        recipe: the resolved recipe.
        task: the task kind (``archlab.tasks``), or its name or recipe loss name: it gives the loss,
            the metrics' meaning and the prediction transform.
        run_dir: where checkpoints and metrics go; None keeps everything in memory.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        criterion: the training loss as ``criterion(xb, out, yb)`` of the (augmented) batch, the
            model's outputs (float32 logits) and the targets, in place of ``loss``'s function
            (e.g. distillation, which needs the batch for its teacher). Validation, the metrics
            and early stopping still use the plain ``loss``.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, task: TaskKind | str, *, run_dir: Path | None = None,
                 verbose: int = 1, output_activation: str | None = None,
                 criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.recipe, self.task, self.run_dir, self.verbose = recipe, as_task(task), run_dir, verbose
        self.metric_names = list(self.task.default_metrics if recipe.metrics is None else recipe.metrics)
        self.criterion = criterion
        self.device = pick_device(recipe.device)
        self.model = model.to(self.device)
        self.precision = resolve_precision(recipe.precision, self.device, self.model)
        self.bf16 = self.precision.bf16
        if self.bf16 and self.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in self.model.modules()):
            # oneDNN's bf16 CPU kernels are written for channels-last: in NCHW, bf16 max-pooling alone
            # takes half of a seed-CNN step; channels-last trains it 1.6x faster than NCHW bf16
            # (docs/training.md, "Precision"). Only rounding differs; saved weights stay contiguous.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.output_activation = output_activation
        self.loss_fn = make_loss(self.task, recipe.label_smoothing)
        #: the modules whose forward leaves an auxiliary loss (``MixtureOfExperts.aux_loss``) for training to add
        self.aux_modules = [m for m in self.model.modules() if hasattr(m, "aux_loss")] if recipe.aux_loss_weight else []
        self.generator = torch.Generator().manual_seed(recipe.seed)
        #: the pad id of each model input that declares one (an archlab model's MaskScope)
        self.pad_ids: dict[str, int] = dict(getattr(getattr(model, "masks", None), "pad_ids", None) or {})
        check_bucketing(recipe, self.pad_ids)
        #: the tensors bucketing trims to one width (``trim_groups``)
        self.trim_groups = trim_groups(self.model, self.pad_ids) if recipe.bucketing else None
        self.optimizer = self._optimizer()
        #: the kernels ``train.max_norm`` constrains after every step
        self.max_norm_weights = max_norm_weights(self.model) if recipe.max_norm else []
        self.scheduler = None
        self.rows: list[dict] = []

    # -- factories ---------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.recipe.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.name == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def _scheduler(self, steps_per_epoch: int) -> tuple[Any, bool]:
        """The LR scheduler and whether it steps per batch (True) or per epoch."""
        cfg, epochs = self.recipe.schedule, self.recipe.epochs
        sched = torch.optim.lr_scheduler
        if cfg.name == "step":
            return sched.StepLR(self.optimizer, cfg.step_size, cfg.gamma), False
        if cfg.name == "cosine":
            return sched.CosineAnnealingLR(self.optimizer, epochs * steps_per_epoch, eta_min=cfg.min_lr), True
        if cfg.name == "one_cycle":
            max_lr = cfg.max_lr or 10 * self.recipe.optimizer.lr
            return sched.OneCycleLR(self.optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch,
                                    pct_start=cfg.pct_start), True
        if cfg.name == "cyclic_cosine":
            return sched.LambdaLR(self.optimizer, cyclic_cosine(epochs // cfg.cycles * steps_per_epoch,
                                                                cfg.min_lr / self.recipe.optimizer.lr)), True
        return None, False

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def outputs(self, x: Inputs) -> torch.Tensor:
        """Raw outputs (logits) for every row of ``x`` (one tensor, or named tensors), in eval mode,
        batch by batch."""
        self.model.eval()
        parts = []
        size = EVAL_BATCH_CPU if self.device.type == "cpu" else EVAL_BATCH
        for start in range(0, num_rows(x), size):
            rows = slice(start, start + size)
            batch = map_inputs(lambda t, rows=rows: t[rows].to(self.device, non_blocking=True), x)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                parts.append(call_model(self.model, batch).float())
        return torch.cat(parts) if parts else torch.empty(0)

    def evaluate(self, x: Inputs, y: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        out = self.outputs(x)
        return self.metrics_of(out, y), out

    def metrics_of(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The loss and metrics of outputs already computed (``outputs``): a subset of rows scored
        without a second forward."""
        y = y.to(out.device)
        loss = self.loss_fn(out, y).item()
        return compute_metrics(out, y, loss, self.task, self.metric_names, self.recipe.top_k)

    def predict(self, x: Inputs) -> torch.Tensor:
        """What the spec's model outputs, final activation included (Keras' ``predict``)."""
        out = self.outputs(x)
        if self.output_activation == "softmax":
            return out.softmax(dim=1)
        return out.sigmoid() if self.output_activation == "sigmoid" else out

    def probabilities(self, x: Inputs) -> torch.Tensor:
        """The task's prediction transform of the outputs: probabilities, or the values."""
        return self.task.scores(self.outputs(x))

    # -- training ----------------------------------------------------------------------------
    def callback_states(self) -> dict[str, Any]:
        """What the checkpoint keeps of the callbacks: the built-in ones' keys at the top level
        (as checkpoints have always held them), a user's under ``callbacks``."""
        states: dict[str, Any] = {"callbacks": {}}
        for callback in self.callbacks:
            if isinstance(callback, _BUILTIN):
                states.update(callback.state_dict())
            elif state := callback.state_dict():
                states["callbacks"][callback.state_key] = state
        states["stopped"] = self.stop_requested  # whoever asked: a resume has nothing left to train
        return states

    def _load_callback_states(self, meta: dict[str, Any]) -> None:
        own = meta.get("callbacks") or {}
        for callback in self.callbacks:
            if isinstance(callback, _BUILTIN):
                callback.load_state_dict(meta)
            elif callback.state_key in own:
                callback.load_state_dict(own[callback.state_key])

    def fit(self, x: Inputs | MappedSplit, y: torch.Tensor, x_val: Inputs | None = None,
            y_val: torch.Tensor | None = None, *, resume: bool = False,
            callbacks: Sequence[Callback] = (), sample_weight: torch.Tensor | None = None) -> History:
        """Train for the recipe's epochs (or until a callback stops it), checkpointing every epoch
        when there is a run directory. ``x`` is one tensor or named tensors (the model gets them
        by name), or ``fit_spec``'s memory-mapped split. ``callbacks`` are a user's own
        (``Callback``); they run after early stopping and before the checkpoint, which saves their
        ``state_dict``. ``sample_weight``: a float (N,) per training row, indexed per batch as
        ``y`` is; the training loss is then the batch's mean of ``w l`` (``weighted_loss``; boosting).
        Validation and the metrics stay unweighted."""
        recipe = self.recipe
        streamed = isinstance(x, MappedSplit)  # fit_spec's streaming path: rows read from disk per batch
        weight = self._check_weight(sample_weight, y, streamed)
        if streamed and recipe.bucketing:
            raise SpecError("train.bucketing reads the training split from memory, but this run streams it from "
                            "disk: set train.data_loading: memory, or drop bucketing", "train.bucketing")
        if streamed:
            batches = EpochBatches(recipe.batch_size)
            reader = stream_loader(x, batches, recipe.workers, pin=self.device.type == "cuda")
        else:
            x, y = map_inputs(lambda t: t.to(self.device), x), y.to(self.device)
        self.x, self.y = x, y  # for callbacks that score the training rows at the end (boosting's errors)
        n = len(y)
        lengths = sequence_lengths(x, self.pad_ids).cpu() if recipe.bucketing else None
        # token targets (N, T), padded with 0: the epoch row counts their real tokens per second
        tokens = int((y != 0).sum()) if torch.is_tensor(y) and y.dim() == 2 and not y.is_floating_point() else None
        self.samples, self.steps = n, math.ceil(n / recipe.batch_size)
        steps = self.steps
        self.scheduler, per_step = self._scheduler(steps)
        has_val = x_val is not None and num_rows(x_val) > 0
        best = EarlyStopping(self, has_val)
        progress = Progress(self.verbose) if self.verbose else None
        if recipe.augment_audio is not None and not _waveforms(x):
            raise SpecError("train.augment_audio augments waveforms, one float tensor (N, samples), but this "
                            f"run's training inputs are {_describe(x)}; drop augment_audio (or use augment for "
                            "images)", "train.augment_audio")
        check_modality_dropout(recipe.modality_dropout, integer_inputs(x))
        augment = build_augment(recipe.augment, input_traits(x), self.task.name, lambda: _classes(self.model, y),
                                self.pad_ids)
        #: mixup/cutmix made the targets class probabilities: accuracy counts their dominant class
        self.soft_targets = augment is not None and augment.mixes
        self.callbacks = [DivergenceCheck(), *([augment] if augment is not None else []),
                          *([AudioAugment()] if recipe.augment_audio is not None else []),
                          *([ModalityDropout()] if recipe.modality_dropout is not None else []),
                          best, *callbacks,
                          *([Snapshots()] if recipe.schedule.name == "cyclic_cosine" and self.run_dir is not None
                            else []),
                          *([Checkpoint(best)] if self.run_dir is not None else []),
                          *([progress] if progress is not None else [])]
        batch_hooks = [c for c in self.callbacks if overrides(c, "on_batch")]
        batch_end = [c for c in self.callbacks if overrides(c, "on_batch_end")]
        start, self.stop_requested = 0, False
        if resume:
            rng, meta = load_checkpoint(self.run_dir / "last.safetensors", self.model, self.optimizer, self.scheduler)
            torch.set_rng_state(rng["torch"])
            self.generator.set_state(rng["shuffle"])
            start, self.rows = meta["epoch"], meta["rows"]
            self._load_callback_states(meta)
            if meta.get("stopped"):
                start, self.stop_requested = recipe.epochs, True
        self.count_accuracy = "accuracy" in self.metric_names and type(self.task).correct is not TaskKind.correct
        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            for epoch in range(start + 1, recipe.epochs + 1):
                self.epoch = epoch
                self.model.train()
                for callback in self.callbacks:
                    callback.on_epoch_start(self, epoch)
                began = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]  # the epoch's (first step's) rate, as Keras logs it
                order = torch.randperm(n, generator=self.generator) if recipe.shuffle else torch.arange(n)
                if streamed:
                    batches.order = order
                    epoch_batches = ((map_inputs(lambda t: t.to(self.device, non_blocking=True), xb),
                                      yb.to(self.device, non_blocking=True)) for xb, yb in reader)
                elif lengths is not None:
                    buckets = bucketed_batches(order, lengths, recipe.batch_size,
                                               self.generator if recipe.shuffle else None)
                    epoch_batches = ((*trim_padding(map_inputs(lambda t, i=index: t[i], x), y[index], self.pad_ids,
                                                    self.trim_groups), index)
                                     for index in (b.to(self.device) for b in buckets))
                elif is_named(x):
                    order = order.to(self.device)
                    epoch_batches = (({k: t[index] for k, t in x.items()}, y[index], index)
                                     for index in order.split(recipe.batch_size))
                else:  # the in-memory fast path: one index into tensors already on the device
                    order = order.to(self.device)
                    epoch_batches = ((x[index], y[index], index) for index in order.split(recipe.batch_size))
                if streamed:  # the loader's batches carry no index; weights are refused there (_check_weight)
                    epoch_batches = ((xb, yb, None) for xb, yb in epoch_batches)
                self.loss_sum = loss_sum = torch.zeros((), device=self.device)
                self.correct = correct = torch.zeros((), device=self.device, dtype=torch.long)
                for step, (xb, yb, index) in enumerate(epoch_batches):
                    rows = len(yb)
                    for callback in batch_hooks:
                        xb, yb = callback.on_batch(self, xb, yb)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                        out = self.model(**xb) if type(xb) is dict else self.model(xb)
                        if weight is not None:
                            loss = weighted_loss(self.loss_fn, out.float(), yb, weight[index])
                        elif self.criterion is None:
                            loss = self.loss_fn(out.float(), yb)
                        else:
                            loss = self.criterion(xb, out.float(), yb)
                        if self.aux_modules:  # as Keras' add_loss: the logged loss is what backward reduces
                            loss = loss + recipe.aux_loss_weight * sum(m.aux_loss for m in self.aux_modules)
                    value = loss.item()  # the one host sync per step, which the finiteness check always took
                    self.step_lr = self.optimizer.param_groups[0]["lr"]
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip:
                        nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
                    self.optimizer.step()
                    apply_max_norm(self.max_norm_weights, recipe.max_norm)  # none listed without train.max_norm
                    if per_step:
                        self.scheduler.step()
                    loss_sum += loss.detach() * rows
                    if self.count_accuracy:
                        correct += self.task.correct(out.detach(), dominant_label(yb) if self.soft_targets else yb)
                    for callback in batch_end:
                        callback.on_batch_end(self, step, value)
                if self.scheduler is not None and not per_step:
                    self.scheduler.step()
                seconds = time.perf_counter() - began
                row: dict[str, Any] = {"epoch": epoch, "loss": loss_sum.item() / n}
                if self.count_accuracy:
                    row["accuracy"] = correct.item() / n
                if has_val:
                    metrics, _ = self.evaluate(x_val, y_val)
                    row.update({f"val_{k}": v for k, v in metrics.items()})
                row.update({"lr": lr, "seconds": round(seconds, 3),
                            "samples_per_s": round(n / seconds, 1)})
                if tokens is not None:
                    row["tokens_per_s"] = round(tokens / seconds, 1)
                self.rows.append(row)
                for callback in self.callbacks:  # every callback sees the epoch, also after one asked to stop
                    if callback.on_epoch_end(self, epoch, row):
                        self.stop_requested = True
                if self.stop_requested:
                    break
            for callback in self.callbacks:
                callback.on_fit_end(self)
        finally:
            if progress is not None:
                progress.close()
        return History.from_rows(self.rows, best_epoch=best.best_epoch, stopped_early=self.stop_requested,
                                 run_dir=self.run_dir)


    def _check_weight(self, weight: torch.Tensor | None, y: torch.Tensor, streamed: bool) -> torch.Tensor | None:
        """``fit``'s sample weights on the device, after the checks that need no training.

        Raises:
            SpecError: weights on the streaming path, with a criterion of the caller's, or not one
                finite, non-negative float per training row.
        """
        if weight is None:
            return None
        if streamed:
            raise SpecError("per-sample weights (boosting) index the training split in memory, but this run streams "
                            "it from disk: set train.data_loading: memory", "train.data_loading")
        if self.criterion is not None:
            raise SpecError("per-sample weights weight the task's own loss; this training has a loss of its own "
                            "(a criterion, e.g. distillation): use one or the other")
        if weight.shape != (len(y),) or not weight.is_floating_point():
            raise SpecError(f"sample_weight is one float per training row, shape ({len(y)},); got "
                            f"{tuple(weight.shape)} {str(weight.dtype).removeprefix('torch.')}")
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise SpecError("sample_weight holds a negative or non-finite value; weights are finite and >= 0")
        return weight.to(self.device, torch.float32)


def _classes(model: nn.Module, y: torch.Tensor) -> int:
    """How many classes mixed targets span: the width of an archlab model's output, else the largest
    class id in ``y`` plus one."""
    from archlab.builder import parse

    spec = getattr(model, "spec", None)
    if spec is not None:
        return int(parse(spec).output_infos[0].shape[-1])
    return int(y.max()) + 1


def _waveforms(x: Any) -> bool:
    """Whether the training inputs are one float tensor of waveforms (N, samples), which augment_audio takes."""
    if is_named(x) or getattr(x, "named", False) or x.dim() != 2:
        return False
    return x.is_floating_point() if torch.is_tensor(x) else x.dtypes.kind == "f"  # a MappedSplit's numpy dtype


def integer_inputs(x: Any) -> dict[str, bool]:
    """The model inputs of ``x`` by name (one tensor: ``input``), each True if it holds integer ids."""
    if isinstance(x, MappedSplit):
        return {name: dtype.kind != "f" for name, dtype in as_named(x.dtypes).items()}
    return {name: not t.is_floating_point() for name, t in as_named(x).items()}


def _describe(x: Any) -> str:
    if is_named(x) or getattr(x, "named", False):
        return "named inputs"
    return f"{tuple(x.shape)} {str(x.dtype if torch.is_tensor(x) else x.dtypes).removeprefix('torch.')}"


_BUILTIN = (DivergenceCheck, Augment, AudioAugment, ModalityDropout, EarlyStopping, Snapshots, Checkpoint, Progress)
