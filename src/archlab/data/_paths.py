"""Where dataset files are looked for, and the message that says so when they are not there.

One search order for every source that reads files from a folder, so that ``data_dir``,
``ARCHLAB_DATA`` and the cache mean the same thing for MNIST and for any source added later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import platformdirs

__all__ = ["ENV_VAR", "cache_dir", "describe_search", "find_file", "holds_files", "search_dirs"]

#: Environment variable naming a folder with one subfolder per dataset (``$ARCHLAB_DATA/mnist``).
ENV_VAR = "ARCHLAB_DATA"


def cache_dir() -> Path:
    """The per-user cache folder, where downloads go (``~/.cache/archlab`` on Linux)."""
    # Looked up on every call (not at import) so that tests and users can redirect it.
    return Path(platformdirs.user_cache_dir("archlab"))


def search_dirs(name: str, data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """The folders searched for dataset ``name``, in order, each with a label for messages.

    ``data_dir`` may be the folder holding the files or its parent with a ``name/`` subfolder,
    then come ``$ARCHLAB_DATA/name`` and the cache folder.
    """
    dirs: list[tuple[Path, str]] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        dirs += [(base, "data_dir"), (base / name, f"data_dir/{name}")]
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        dirs.append((Path(env).expanduser() / name, f"${ENV_VAR}/{name}"))
    dirs.append((cache_dir() / name, "cache"))
    return dirs


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` if it is a file, else ``folder/stem.gz``, else None (uncompressed reads faster)."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def holds_files(folder: Path, stems: Sequence[str]) -> bool:
    return folder.is_dir() and all(find_file(folder, stem) is not None for stem in stems)


def _state(folder: Path, stems: Sequence[str]) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    missing = [stem for stem in stems if find_file(folder, stem) is None]
    return "has all the files" if not missing else "lacks " + ", ".join(f"{stem}[.gz]" for stem in missing)


def describe_search(name: str, data_dir: str | Path | None, stems: Sequence[str]) -> str:
    """Lines saying which folders were searched, what each lacks, and how to put the files in place."""
    lines = ["Searched, in order:"]
    lines += [f"  {folder} ({label}): {_state(folder, stems)}" for folder, label in search_dirs(name, data_dir)]
    if not os.environ.get(ENV_VAR, "").strip():
        lines.append(f"  (${ENV_VAR} is not set)")
    names = ", ".join(f"{stem}.gz" for stem in stems)
    lines.append(f"Fix: put {names} (gzip or uncompressed) into {cache_dir() / name}, or into a folder "
                 f"'{name}/' under the folder named by the {ENV_VAR} environment variable, "
                 f"or pass data_dir= the folder holding them.")
    return "\n".join(lines)
