"""Run directories: every training leaves one, written atomically so a run killed at any moment
keeps a loadable last checkpoint.

Layout of ``runs/<name>-<timestamp>/``:
    spec.yaml, recipe.yaml     the spec and the fully resolved recipe
    metrics.jsonl              one JSON line per finished epoch
    last.safetensors           the complete training state after the last finished epoch:
                               model weights ("model.*"), optimizer tensors ("optimizer.*"),
                               RNG states ("rng.*"); scalars in the file's metadata
    best.safetensors           the weights of the best epoch ("model.*")
    summary.json, curves.png   written when the run ends
    .lock                      exists while a process trains in the directory (an fcntl.flock)

Nothing here unpickles: tensors are safetensors, everything else is JSON.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from archlab.exceptions import ArchlabError

__all__ = ["RunError", "atomic_write_text", "checkpoint_metadata", "load_checkpoint",
           "load_weights", "lock_run",
           "new_run_dir", "read_metrics", "save_checkpoint", "save_weights"]


class RunError(ArchlabError, ValueError):
    """A run directory is missing files, or they do not match its spec."""


def new_run_dir(out: str | Path, name: str) -> Path:
    """``out/<name>-<YYYYmmdd-HHMMSS>``, with a numeric suffix if that exists already."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    path.mkdir(parents=True)
    return path


@contextmanager
def lock_run(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock (``.lock``) while a block trains in it, so that two processes
    never write one run. The kernel drops an flock when its process dies, so a killed run never
    leaves a stale lock; the file's text only tells a refused process who holds it, and the file
    is removed when the lock is let go.

    Raises:
        RunError: another process holds the lock (its id and host are in the message).
    """
    path = Path(run_dir) / ".lock"
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  (closed in the finally below)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunError(f"{run_dir} is in use: {holder} is training in it; wait until it ends (or stop it), "
                           "then run the command again") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one locks the file as it goes
        handle.close()  # closing the file releases the lock


def _file_mode() -> int:
    """The mode open() gives a new file (0o666 less the umask); mkstemp's 0o600 would hide run files."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _atomic(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)  # after writing: safetensors' save_file makes the file anew
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict without tied duplicates (safetensors refuses shared storage): tensors, and
    aliases {duplicate key: key that holds the tensor}."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, value in model.state_dict().items():
        ident = (value.data_ptr(), value.shape, value.dtype) if value.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        tensors[key] = value.detach().cpu().contiguous()
    return tensors, aliases


def _restore_model(model: nn.Module, tensors: dict[str, torch.Tensor], aliases: dict[str, str], path: Path) -> None:
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for key, source in aliases.items():
        if source in state:
            state[key] = state[source]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:5])}" if missing else "",
            f"unexpected {', '.join(unexpected[:5])}" if unexpected else "",
            f"shape mismatch {', '.join(wrong[:5])}" if wrong else "") if part)
        raise RunError(f"{path}: the weights do not match the run's spec ({details}); was spec.yaml edited "
                       "after training?")
    model.load_state_dict(state)


def save_weights(path: Path, model: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    tensors, aliases = _model_tensors(model)
    meta = {"aliases": json.dumps(aliases), **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    _atomic(path, lambda tmp: save_file({f"model.{k}": v for k, v in tensors.items()}, tmp, metadata=meta))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise RunError(f"{path} does not exist: the run has no such checkpoint yet")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not a readable safetensors checkpoint: {exc}") from None


def load_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load ``model.*`` tensors into ``model``; return the file's metadata."""
    tensors, metadata = _read(Path(path))
    _restore_model(model, tensors, metadata.get("aliases", {}), Path(path))
    return metadata


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rng: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """The whole training state in one file, replaced atomically: resuming from it continues
    exactly where the uninterrupted run would be."""
    model_tensors, aliases = _model_tensors(model)
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors = {**{f"model.{k}": v for k, v in model_tensors.items()}, **optim_tensors,
               **{f"rng.{k}": v.contiguous() for k, v in rng.items()}}
    meta = {"aliases": aliases, "optimizer": optim_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None, **metadata}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in meta.items()}))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model, optimizer and scheduler; return (rng states, metadata)."""
    tensors, metadata = _read(Path(path))
    _restore_model(model, tensors, metadata.get("aliases", {}), Path(path))
    if "optimizer" not in metadata:
        raise RunError(f"{path} holds weights only, not a training state to resume from")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, metadata["optimizer"]))
    if scheduler is not None and metadata.get("scheduler") is not None:
        scheduler.load_state_dict(metadata["scheduler"])
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rng, metadata


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (epoch, rows, early-stopping state), without its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not a readable safetensors checkpoint: {exc}") from None


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_metrics(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
