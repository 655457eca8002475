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

__all__ = ["allow_yolo_global", "checkpoint_summary", "load_yolo_checkpoint", "save_yolo_checkpoint"]

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


def load_detection_checkpoint(path) -> dict:
    """:func:`load_yolo_checkpoint`, refusing anything but an Ultralytics detection checkpoint (DataError)."""
    from simgen.errors import DataError

    ckpt = load_yolo_checkpoint(path)
    if not isinstance(ckpt, dict) or not (ckpt.get("ema") or ckpt.get("model")):
        raise DataError(f"{path} is not an Ultralytics detection checkpoint")
    return ckpt


def save_yolo_checkpoint(path, ckpt: dict) -> Path:
    """Write an Ultralytics checkpoint atomically; it may hold network classes of the allowlist only."""
    return save_checkpoint(path, ckpt, allow=allow_yolo_global)


#: Preprocessing keys of ``ckpt["simgen"]`` that predictions must repeat (see :class:`~.predict.YoloDetector`).
PREPROCESSING = ("normalize", "tile", "overlap", "imgsz", "scale", "conf_f1", "nested", "tta", "iou", "max_det", "min_box")


def checkpoint_summary(path) -> dict:
    """What a YOLO ``best.pt`` is and how to feed it: classes, preprocessing, training and adaptation.

    ``preprocessing`` holds what simgen applies before the network (``normalize`` contrast
    stretch, ``tile``/``overlap`` tiling, ``scale``) and the synthetic-validation threshold
    ``conf_f1``; a plain ``ultralytics.YOLO(path).predict`` applies none of it.
    """
    ckpt = load_yolo_checkpoint(path)
    meta = ckpt.get("simgen") or {}
    model = ckpt.get("ema") or ckpt.get("model")
    names = getattr(model, "names", None) or {}
    train_args = ckpt.get("train_args") or {}
    out = {
        "kind": "YOLO checkpoint (Ultralytics)",
        "path": str(path),
        "classes": [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names),
        "written_by": "simgen " + str(meta.get("simgen_version", "?")) if meta else "not simgen (defaults apply)",
        "epochs": (meta.get("config") or {}).get("epochs", train_args.get("epochs")),
        "preprocessing": {k: meta[k] for k in PREPROCESSING if k in meta},
    }
    if "train" in meta:
        out["trained_on"] = meta["train"]
    if "adaptation" in meta:
        out["adaptation"] = meta["adaptation"]
    return out
