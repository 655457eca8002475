"""Nested settings as an aligned ``key: value`` block for people (``simgen info``; not a command module).

::

    config:
      anisotropy:  [0.0, 0.6]
      classes:     [black_dot, loop111, loop100]
      zones:       [001, 011, 111, 112, ...] (9 items)
    sampler:       tem

Keys are sorted; the values of one level start in one column; a nested mapping is a ``key:`` line
followed by its own block, indented two spaces; a list longer than ``max_items`` shows its first
items and its length; floats show 6 significant digits.  Machines read ``--json`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["readable_lines", "readable_value", "MAX_ITEMS"]

#: Lists longer than this are shortened to their first items and a count.
MAX_ITEMS = 8


def readable_lines(mapping: Mapping, indent: int = 0, max_items: int = MAX_ITEMS) -> list[str]:
    """``mapping`` as lines ``"<indent>key:  value"``, nested mappings indented below their key.

    Parameters
    ----------
    mapping : Mapping
        Settings (JSON-like: mappings, lists, strings, numbers, booleans, ``None``).
    indent : int
        Spaces in front of the top-level keys.
    max_items : int
        Lists with more items show the first ``max_items // 2`` and ``"... (N items)"``.

    Returns
    -------
    list of str
    """
    pad = " " * indent
    if not mapping:
        return [f"{pad}(none)"]
    width = max(len(str(k)) for k in mapping) + 1
    lines = []
    for key in sorted(mapping, key=str):
        value = mapping[key]
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            lines.extend(readable_lines(value, indent + 2, max_items))
        else:
            lines.append(f"{pad}{str(key) + ':':<{width}}  {readable_value(value, max_items)}")
    return lines


def readable_value(value, max_items: int = MAX_ITEMS) -> str:
    """One value on one line: ``0.349066``, ``16.0``, ``none``, ``[0, 0.6]``, ``[1, 2, 3, 4, ...] (120 items)``."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        value = value.item()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = format(value, ".6g")
        return text if any(c in text for c in ".en") else text + ".0"  # 16.0, not 16: a float setting
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {readable_value(v, max_items)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = list(value.tolist() if hasattr(value, "tolist") else value)
        if len(items) > max_items:
            shown = ", ".join(readable_value(v, max_items) for v in items[:max(1, max_items // 2)])
            return f"[{shown}, ...] ({len(items)} items)"
        return "[" + ", ".join(readable_value(v, max_items) for v in items) + "]"
    return str(value)
