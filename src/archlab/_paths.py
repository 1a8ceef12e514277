"""Checks that an output path can be written, made before any work (docs/cli.md, ``--out``).

Plain path checks, apart from the training package so that the CLI, export and compress can
refuse a bad ``--out`` without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_out_dir", "check_out_file"]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, a folder that cannot receive run directories: a file, or a folder
    (or, when it does not exist yet, its nearest existing parent) that this process cannot write.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     check_out_dir(f.name)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --out /... is a file; give the folder that receives the run directories
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = f"{path} is a file" if existing == path else f"{path}: {existing} is a file"
        raise ValueError(f"{option} {what}; give the folder that receives the run directories")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable by this user; give a folder you can write to")
    return path


def check_out_file(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, a file path that cannot be written: a folder, or a parent that is a
    file or not writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give the file to write (e.g. {path / 'model.onnx'})")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder; give a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {path} is not writable by this user; give a path you can write to")
    return path
