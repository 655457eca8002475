"""Read Ultralytics checkpoints without running code from them.

An Ultralytics ``.pt`` pickles the whole model, so a plain ``torch.load`` (or ``YOLO(path)``, which
uses one) would run whatever a crafted file asks for.  :func:`load_yolo_checkpoint` lists the globals
the pickle names *without* unpickling it, accepts only classes of torch and Ultralytics network
modules (plus a few plain containers), and loads with ``weights_only=True`` and exactly those classes
allowlisted.  A file that passes may then be handed to Ultralytics.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from simgen.runtime import load_checkpoint, save_checkpoint
from simgen.train.yolo.offline import setup_ultralytics

__all__ = ["allow_yolo_global", "load_yolo_checkpoint", "save_yolo_checkpoint"]

#: Modules whose *classes* (never functions) a YOLO checkpoint may name: network layers.
ALLOWED_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks")
#: Other classes Ultralytics stores in a checkpoint (training arguments, namespaces).
ALLOWED_CLASSES = frozenset({
    "ultralytics.utils.IterableSimpleNamespace",
    "types.SimpleNamespace",
    "torch.nn.parameter.Parameter",
})


def allow_yolo_global(name: str) -> object | None:
    """The class ``name`` (``"module.Class"``) when a YOLO checkpoint may hold it, else ``None``."""
    module, _, attr = name.rpartition(".")
    if not (name in ALLOWED_CLASSES or module.startswith(ALLOWED_MODULES) or module in ALLOWED_MODULES):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    # Classes only: a function named by a pickle is a call the file asks us to make.
    return obj if isinstance(obj, type) else None


def load_yolo_checkpoint(path, map_location="cpu") -> dict:
    """Load an Ultralytics/simgen YOLO checkpoint safely (see the module docstring).

    Raises
    ------
    DataError
        Missing or unreadable file, or a global outside the allowlist (nothing of it is unpickled).
    """
    setup_ultralytics()  # the allowlisted classes import ultralytics: offline and project-owned first
    return load_checkpoint(path, map_location=map_location, allow=allow_yolo_global)


def save_yolo_checkpoint(path, ckpt: dict) -> Path:
    """Write an Ultralytics checkpoint atomically; it may hold network classes of the allowlist only."""
    return save_checkpoint(path, ckpt, allow=allow_yolo_global)
