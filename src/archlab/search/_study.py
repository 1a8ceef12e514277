"""Objectives, storages, samplers and pruners: the Optuna side of a search, by name."""

from __future__ import annotations

import importlib.util
import re
import warnings
from dataclasses import dataclass
from typing import Any

from archlab.exceptions import ArchlabError, SpecError
from archlab.tasks import direction_of

__all__ = ["Objective", "StorageError", "make_pruner", "make_sampler", "open_storage", "parse_objectives",
           "public_url", "quiet_optuna", "with_driver"]

# No CMA-ES: it samples numbers only (a space of choices falls back to random sampling) and Optuna
# keeps its state as pickles in the study, which every worker would unpickle from a shared database.
SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("asha", "hyperband", "median", "none")
#: Measures of the model, all minimised; a validation metric's direction is the metric registry's.
_MEASURES = ("params", "flops", "latency_ms")


class StorageError(ArchlabError):
    """The study storage cannot be opened (bad URL, unreachable server, missing driver)."""


@dataclass(frozen=True)
class Objective:
    """One thing a search optimizes: a validation metric of the trained model (``val_accuracy``,
    ``val_loss``, ...) or a measure of the model (``params``, ``flops``, ``latency_ms`` at batch 1)."""

    name: str
    direction: str  # "maximize" or "minimize"

    @property
    def is_metric(self) -> bool:
        return self.name not in _MEASURES

    def __str__(self) -> str:
        return f"{self.name}:{'max' if self.direction == 'maximize' else 'min'}"


def parse_objectives(items: list[str] | tuple[str, ...] | None) -> list[Objective]:
    """``val_accuracy``, ``params:min``, ``latency:min``...; a metric's direction defaults to the
    metric registry's (``archlab.tasks.direction_of``: val_auc is maximised), a measure's to min.

    Example:
        >>> [str(o) for o in parse_objectives(["val_accuracy", "params"])]
        ['val_accuracy:max', 'params:min']
    """
    out: list[Objective] = []
    for item in items or ["val_accuracy"]:
        name, _, direction = item.strip().partition(":")
        name = {"latency": "latency_ms", "accuracy": "val_accuracy", "loss": "val_loss"}.get(name, name)
        if name not in _MEASURES and not name.startswith("val_"):
            raise ValueError(f"--objective {item!r}: use a validation metric (val_accuracy, val_loss, val_macro_f1, "
                             "...) or a model measure (params, flops, latency)")
        if direction not in ("", "min", "max", "minimize", "maximize"):
            raise ValueError(f"--objective {item!r}: the direction after ':' is min or max")
        if not direction:
            try:
                direction = "min" if name in _MEASURES else direction_of(name, where=f"--objective {item}")
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        objective = Objective(name, "minimize" if direction.startswith("min") else "maximize")
        if any(o.name == name for o in out):
            raise ValueError(f"--objective {name} is given twice")
        out.append(objective)
    if not any(o.is_metric for o in out):
        raise ValueError("every objective is a model measure; add one validation metric (e.g. --objective "
                         "val_accuracy), or there is nothing to train for")
    return out


def public_url(url: str) -> str:
    """The URL with any password hidden, for messages and records.

    Example:
        >>> public_url("postgresql://ann:secret@db:5432/nas")
        'postgresql://ann:***@db:5432/nas'
    """
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns on experimental features we use on purpose
    (multivariate TPE, matplotlib plots); archlab prints its own progress instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def with_driver(url: str) -> str:
    """A bare ``postgresql://`` (or ``postgres://``) URL names the PostgreSQL driver that is installed.

    SQLAlchemy 2 reads the bare form as psycopg 3 while ``archlab[postgres]`` installs psycopg2, so
    the URL the docs show would fail with an import error; psycopg 3 is still preferred when present.
    Other URLs, and URLs that name a driver (``postgresql+psycopg2://``), are returned unchanged.

    Example:
        >>> with_driver("sqlite:///runs/study.db")
        'sqlite:///runs/study.db'
        >>> with_driver("postgresql+psycopg2://ann@db/nas")
        'postgresql+psycopg2://ann@db/nas'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for driver in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://{rest}"
    raise StorageError(f"cannot open the study storage {public_url(url)}: no PostgreSQL driver is installed "
                       "(pip install 'archlab[postgres]' installs psycopg2)")


def open_storage(url: str, heartbeat: int | None = None) -> Any:
    """An Optuna RDB storage for any SQLAlchemy URL, with heartbeats so that a trial whose worker
    died is marked failed by the next worker that looks (after twice the heartbeat interval)."""
    import optuna

    driver_url = with_driver(url)  # messages show the URL as given
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers share one file: wait for its lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return optuna.storages.RDBStorage(driver_url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                          grace_period=2 * heartbeat if heartbeat else None)
    except ModuleNotFoundError as exc:
        raise StorageError(f"cannot open the study storage {public_url(url)}: the database driver "
                           f"'{exc.name}' is not installed (for PostgreSQL: pip install 'archlab[postgres]')") from exc
    except Exception as exc:  # SQLAlchemy's errors (bad URL, refused connection, bad password) share no base
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StorageError(f"cannot open the study storage {public_url(url)}: {reason[0] if reason else exc}. "
                           "Check the URL (dialect://user:password@host:port/database), that the server runs "
                           "and accepts connections from this machine") from exc


def make_sampler(kind: str, seed: int | None, *, grid: dict[str, list] | None = None, workers: int = 1) -> Any:
    import optuna

    if kind == "tpe":
        # multivariate+group models the conditional branches of a space jointly; constant_liar keeps
        # parallel workers from all sampling the same point while trials are running.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=workers > 1)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"--sampler {kind!r}: choose one of {', '.join(SAMPLERS)}")


def after_startup(pruner: Any, n_startup_trials: int) -> Any:
    """``pruner`` deciding only once ``n_startup_trials`` trials have completed, as Optuna's
    MedianPruner does. Optuna's successive halving has no such warm-up: its first rungs compare a
    trial with one or two others and stop slow starters that would have finished best (on digits
    it stopped, after one epoch, the very model that random search found best)."""
    import optuna
    from optuna.trial import TrialState

    class AfterStartup(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < n_startup_trials:
                return False
            return pruner.prune(study, trial)

    return AfterStartup()


def make_pruner(kind: str, epochs: int) -> Any:
    """ASHA (after 5 complete trials) and Hyperband with one epoch as the smallest budget and a
    reduction factor of 3."""
    import optuna

    if kind == "asha":
        return after_startup(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), 5)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"--pruner {kind!r}: choose one of {', '.join(PRUNERS)}")
