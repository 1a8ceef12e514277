"""How much memory a device has free now: what build() (and training) compare a model against
before allocating, so that a model that cannot fit is refused with numbers, not killed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["available_memory"]


def available_memory(device: str | torch.device | None = None) -> int | None:
    """Bytes a new allocation on ``device`` can take now, or None when that cannot be known.

    Args:
        device: ``"cpu"`` (or None): the system's available memory (``MemAvailable`` of
            /proc/meminfo, capped by a cgroup v2 memory limit, on Linux; psutil elsewhere when
            it is installed). ``"cuda"``/``"cuda:N"``: the free memory of that GPU
            (``torch.cuda.mem_get_info``). Anything else (``"meta"``, ``"mps"``): None.

    Example:
        >>> available_memory("cpu") > 0 and available_memory("meta") is None
        True
    """
    kind = "cpu" if device is None else getattr(device, "type", str(device).partition(":")[0])
    if kind == "cuda":
        import torch  # only a GPU's free memory needs it; summary and validate never import torch

        dev = torch.device(device)
        return torch.cuda.mem_get_info(dev)[0] if torch.cuda.is_available() else None
    if kind != "cpu":
        return None
    linux = linux_available_memory()
    if linux is not None:
        return linux
    try:
        import psutil  # optional: the portable reading where /proc is missing (macOS, Windows)
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def linux_available_memory(meminfo: str | Path = "/proc/meminfo", cgroup: str | Path = "/sys/fs/cgroup") -> int | None:
    """``MemAvailable`` in bytes, or less when the process's cgroup (a container's limit) allows
    less; None without /proc/meminfo."""
    try:
        lines = Path(meminfo).read_text().splitlines()
    except OSError:
        return None
    available = next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)
    if available is None:
        return None
    try:
        limit = Path(cgroup, "memory.max").read_text().strip()
        used = int(Path(cgroup, "memory.current").read_text())
    except (OSError, ValueError):
        return available
    return available if limit == "max" else max(0, min(available, int(limit) - used))
