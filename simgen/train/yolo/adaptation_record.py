"""The record an adaptation lever leaves in a checkpoint: ``simgen["adaptation"]`` entries, kept as
plain JSON containers so the checkpoint still loads with ``weights_only``."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from simgen.atomic import json_default_lenient
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint


def _plain(obj):
    """JSON round trip: checkpoint metadata must hold plain containers only (``weights_only`` loading)."""
    return json.loads(json.dumps(obj, default=json_default_lenient))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _stamp(weights: Path, out: Path, record: dict, updates: dict | None = None) -> Path:
    """Copy ``weights`` to ``out`` with ``record`` appended to ``simgen["adaptation"]`` (and the
    ``simgen`` entries of ``updates`` replaced, e.g. a threshold chosen after training)."""
    ckpt = load_yolo_checkpoint(weights)
    meta = {**(ckpt.get("simgen") or {}), **(updates or {})}
    meta["adaptation"] = [*meta.get("adaptation", []), record]
    ckpt["simgen"] = _plain(meta)
    return save_yolo_checkpoint(out, ckpt)
