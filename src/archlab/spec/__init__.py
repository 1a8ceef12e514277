"""The spec: parsing, dumping, paths and search markers. Never imports torch."""

from ._io import FORMAT_VERSION, Spec, dump, load
from ._markers import Marker, find_markers, first_point, is_marker, parse_marker
from ._paths import format_path, get_at, parse_path, set_at

__all__ = ["FORMAT_VERSION", "Marker", "Spec", "dump", "find_markers", "first_point", "format_path", "get_at",
           "is_marker", "load", "parse_marker", "parse_path", "set_at"]
