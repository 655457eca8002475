"""``simgen train postprocess``: pick a checkpoint's threshold, nested-box suppression and flip
test-time augmentation on synthetic validation data, write a copy.

Training makes this choice itself (:func:`~simgen.train.yolo.trainer.select_threshold` on its
validation tiles); this module makes it for a checkpoint trained before those options existed, or
on other validation data — always simulated data, never real labels.
"""

from __future__ import annotations

import json
from pathlib import Path

from simgen.atomic import check_output, json_default_lenient
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.train.yolo.box_scale import require_simulated
from simgen.train.yolo.checkpoint import load_detection_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.config import nested_ok
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import select_threshold

__all__ = ["calibrate_postprocessing", "validation_choice"]


def calibrate_postprocessing(weights, val, output, *, nested: str | float | None = "auto", tta: str | bool = "auto",
                             max_images: int | None = None, device: str = "auto", threads: int | None = None,
                             overwrite: bool = False, progress: bool = True) -> dict:
    """Choose threshold, ``nested`` and ``tta`` on synthetic validation data and write a checkpoint copy.

    Parameters
    ----------
    weights : path
        A YOLO ``best.pt`` (read only).
    val : path
        Synthetic validation data with boxes (a simgen HDF5 file or sharded set written by a
        simulator); real annotated data is refused.
    output : path
        ``weights`` with ``simgen["conf_f1"]``, ``["val_f1"]``, ``["nested"]``, ``["tta"]`` set and
        the choice recorded in ``["postprocess"]``; written atomically, replaced only with
        ``overwrite``.
    nested, tta
        As :class:`~simgen.train.yolo.config.YoloConfig` (``"auto"``: picked; else fixed).
    max_images : int, optional
        Use the first ``max_images`` validation samples only.

    Returns
    -------
    dict with ``conf``, ``val_f1``, ``nested``, ``tta``, ``val_f1_without`` (peak F1 without
    either) and ``n_images``.
    """
    weights, output = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    if tta not in ("auto", True, False):
        raise ParameterError(f"tta must be auto, True or False, got {tta!r}")
    if not (nested == "auto" or nested_ok(nested)):
        raise ParameterError(f"nested must be auto, None or in (0, 1], got {nested!r}")
    if max_images is not None and (int(max_images) != max_images or max_images < 1):
        raise ParameterError(f"max images must be a positive integer, got {max_images}")
    check_output(output, overwrite)
    ckpt = load_detection_checkpoint(weights)
    with open_source(val) as src:
        require_simulated(src, val, "post-processing is chosen")
        if max_images is not None and max_images < len(src):
            src = src.subset(src.names[: int(max_images)])
        without, (conf, f1, chosen_nested, chosen_tta) = validation_choice(
            weights, src, nested=nested, tta=tta, device=device, threads=threads, progress=progress)
        n = len(src)
    record = {"conf": conf, "val_f1": f1, "nested": chosen_nested, "tta": chosen_tta,
              "val_f1_without": None if without is None else without[1], "n_images": n,
              "val": str(Path(val).resolve())}
    meta = dict(ckpt.get("simgen") or {})
    meta.update(conf_f1=conf, val_f1=f1, nested=chosen_nested, tta=chosen_tta, postprocess=record)
    ckpt["simgen"] = json.loads(json.dumps(meta, default=json_default_lenient))
    save_yolo_checkpoint(output, ckpt)
    return record


def validation_choice(weights, src, *, nested: str | float | None = "auto", tta: str | bool = "auto",
                      device: str = "auto", threads: int | None = None, progress: bool = False):
    """``(without, chosen)``: :func:`~simgen.train.yolo.trainer.select_threshold` on the open
    labelled source ``src`` with neither option (``None`` when ``tta`` is fixed on) and with
    ``nested`` / ``tta`` as asked, each ``(conf, peak F1, nested, tta)``."""
    gts = src.read_table("boxes")
    if gts is None or not len(gts):
        raise DataError(f"{src.path} has no boxes to choose on")
    preds = {}
    for view in ((False, True) if tta == "auto" else (bool(tta),)):
        det = YoloDetector(weights, device=device, threads=threads, nested=None, tta=view)
        preds[view] = det.predict(src, progress=progress)
    n = len(src)
    without = select_threshold(preds[False], gts, n_frames=n, nested=None) if False in preds else None
    return without, select_threshold(preds, gts, n_frames=n, nested=nested)
