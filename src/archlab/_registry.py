"""The one registry mechanism behind layer types, tasks and metrics: named entries held in one
object (not module globals), lower_snake_case names, a warning when an entry replaces another,
unknown names answered with the closest known one, and plugins from an entry-point group loaded the
first time a name is missing or the list is asked for. Light: ``archlab validate`` imports it."""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Iterator
from typing import Generic, TypeVar

from archlab.exceptions import RegistryError, suggest

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name.

    Args:
        kind: what an entry is, in messages ("layer type", "task", "metric").
        group: the entry-point group plugins register through (None: no plugins).
        plugin_label: how a plugin of this registry is named in its load error ("layer", "task").
    """

    def __init__(self, kind: str, group: str | None = None, plugin_label: str | None = None) -> None:
        self.kind, self.group, self.plugin_label = kind, group, plugin_label or kind
        self._entries: dict[str, T] = {}
        self._plugins_loaded = group is None

    def load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self.group):
            try:
                entry_point.load()
            except Exception as exc:
                raise RegistryError(f"the {self.plugin_label} plugin {entry_point.name!r} ({entry_point.value}) "
                                    f"failed to load: {type(exc).__name__}: {exc}") from exc

    def check_name(self, name: str) -> None:
        if not name.isidentifier() or name != name.lower():
            raise RegistryError(f"a {self.kind} name is lower_snake_case, got {name!r}")

    def add(self, name: str, entry: T, *, override: bool = False) -> T:
        """Hold ``entry`` under ``name`` (warning when it replaces one, unless ``override``)."""
        self.check_name(name)
        if name in self._entries and not override:
            warnings.warn(f"{self.kind} {name!r} was registered before; the new one replaces it "
                          "(pass override=True to silence this)", stacklevel=4)
        self._entries[name] = entry
        return entry

    def find(self, name: str) -> T | None:
        """The entry called ``name`` (plugins loaded first when it is missing), or None."""
        try:
            if name not in self._entries:
                self.load_plugins()
            return self._entries.get(name)
        except TypeError:  # an unhashable name from a malformed spec: unknown
            return None

    def unknown(self, name: object) -> str:
        """The message for a name nothing is registered under: the closest name and the known ones."""
        return (f"unknown {self.kind} '{name}'{suggest(str(name), self._entries)} "
                f"(known: {', '.join(sorted(self._entries))})")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(sorted(self._entries))

    def registered(self) -> list[T]:
        """The entries registered so far, without loading plugins (for work done at import)."""
        return list(self._entries.values())

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
