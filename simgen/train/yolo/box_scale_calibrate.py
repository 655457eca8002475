"""``simgen train box-scale``: fit a checkpoint's box scale on synthetic validation data, write a copy.

The estimator and its application are in :mod:`simgen.train.yolo.box_scale`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from simgen.atomic import check_output, json_default_lenient
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.train.yolo.box_scale import TRUTHS, BoxScale, fit_box_scale, mask_boxes, require_simulated
from simgen.train.yolo.checkpoint import load_detection_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.predict import YoloDetector

__all__ = ["calibrate_box_scale"]


def calibrate_box_scale(weights, val, output, *, match_iou: float = 0.1, truth: str = "auto",
                        max_images: int | None = None,
                        device: str = "auto", threads: int | None = None, overwrite: bool = False,
                        progress: bool = True, detector=None) -> BoxScale:
    """Fit the box scale of a YOLO checkpoint on synthetic validation data and write a calibrated copy.

    Parameters
    ----------
    weights : path
        A ``best.pt`` of :func:`~simgen.train.yolo.trainer.train_yolo` (read only).
    val : path
        Synthetic validation data with boxes: a simgen HDF5 file or sharded set written by a
        simulator (kind ``film``, ``tem`` or ``video``); real annotated data is refused.
    output : path
        The calibrated checkpoint: ``weights`` with ``simgen["box_scale"]`` set
        (:meth:`BoxScale.to_dict`).  Written atomically; an existing file (``weights`` itself
        included) is replaced only with ``overwrite``.
    match_iou : float
        See :func:`fit_box_scale`.
    truth : {"auto", "masks", "boxes"}
        The true extent: tight boxes of the instance masks (``auto`` when the data has masks)
        or the stored box table (which may include a labelling margin).
    max_images : int, optional
        Use the first ``max_images`` validation samples only.
    detector : optional
        An already loaded detector with ``predict(source)`` and ``conf_f1`` (default: a
        :class:`~simgen.train.yolo.predict.YoloDetector` of ``weights`` with ``box_scale="off"``;
        a stored scale is refitted from the raw boxes, not compounded).

    Returns
    -------
    BoxScale
    """
    weights, output = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    if max_images is not None and (int(max_images) != max_images or max_images < 1):
        raise ParameterError(f"max images must be a positive integer, got {max_images}")
    if not 0 < match_iou <= 1:
        raise ParameterError(f"matching IoU must be in (0, 1], got {match_iou}")
    if truth not in TRUTHS:
        raise ParameterError(f"truth must be one of {', '.join(TRUTHS)}, got {truth!r}")
    check_output(output, overwrite)
    ckpt = load_detection_checkpoint(weights)
    with open_source(val) as src:
        require_simulated(src, val, "the box scale is fitted")
        if truth == "masks" and not src.has_masks:
            raise DataError(f"{val} has no instance masks (use truth 'boxes')")
        truth = ("masks" if src.has_masks else "boxes") if truth == "auto" else truth
        if max_images is not None and max_images < len(src):
            src = src.subset(src.names[: int(max_images)])
        gt = mask_boxes(src) if truth == "masks" else src.read_table("boxes")
        if gt is None or len(gt) == 0:
            raise DataError(f"{val} has no {truth} to calibrate against")
        shapes = {k: src.shape(k) for k in range(len(src))}
        det = detector or YoloDetector(weights, device=device, threads=threads, box_scale="off")
        pred = det.predict(src, progress=progress)
    scale = fit_box_scale(pred, gt, conf=float(det.conf_f1), match_iou=match_iou, shapes=shapes)
    scale = BoxScale(**{**asdict(scale), "val": str(Path(val).resolve()), "truth": truth})
    meta = dict(ckpt.get("simgen") or {})
    meta["box_scale"] = scale.to_dict()
    ckpt["simgen"] = json.loads(json.dumps(meta, default=json_default_lenient))
    save_yolo_checkpoint(output, ckpt)
    return scale
