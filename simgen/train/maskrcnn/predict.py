"""Run a trained Mask R-CNN: boxes, scores and instance masks per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simgen.atomic import check_output
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.normalize import normalize_image
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import track
from simgen.runtime import select_device
from simgen.train.engine import load_trained
from simgen.train.maskrcnn.config import MODEL_TYPE, MaskRCNNConfig
from simgen.train.maskrcnn.model import build_maskrcnn

__all__ = [
    "load_maskrcnn",
    "predict_images",
    "predict_maskrcnn",
    "predict_raw",
]


def load_maskrcnn(checkpoint, device: str = "auto"):
    """Rebuild a trained model from a checkpoint: returns ``(model, config, class_names)`` in eval mode."""
    state = load_trained(checkpoint, MODEL_TYPE)
    cfg = MaskRCNNConfig.from_dict(state["config"])
    names = list(state.get("class_names") or ["object"])
    dev = select_device(device)
    model = build_maskrcnn(cfg, len(names))
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    return model, cfg, names


def predict_raw(model, image: np.ndarray, device) -> dict:
    """The model's raw output for one normalised (H, W) image, as NumPy: ``boxes`` (K, 4), ``scores``,
    ``labels`` (class + 1) and ``masks`` (K, H, W) probabilities (``None`` without a mask head)."""
    import torch

    model.eval()
    with torch.no_grad():
        out = model([torch.from_numpy(np.ascontiguousarray(image, np.float32)[None]).to(device)])[0]
    return {
        "boxes": out["boxes"].cpu().numpy().astype(np.float32).reshape(-1, 4),
        "scores": out["scores"].cpu().numpy().astype(np.float32),
        "labels": out["labels"].cpu().numpy().astype(np.int64),
        "masks": out["masks"][:, 0].cpu().numpy().astype(np.float32) if "masks" in out else None,
    }


def predict_images(model, images, *, mask_threshold: float = 0.5, mask_conf: float = 0.5, normalize: str = "percentile",
                   device=None):
    """Run a model on float images; yield ``(boxes DataFrame, instance label image)`` per image.

    Boxes (``x0, y0, x1, y1, class, score, instance``) hold every detection with score >=
    the model's ``score_threshold`` (so PR curves can be drawn).  The label image paints
    detections with ``score >= mask_conf`` (pixels with mask probability >= ``mask_threshold``),
    highest score on top; ``instance`` is the detection's id in it (0 = not painted).
    Images are contrast-normalised with ``normalize`` first (use the model's ``config.normalize``).
    """
    import pandas as pd

    device = device if device is not None else next(model.parameters()).device
    for image in images:
        image = np.asarray(image, np.float32)
        if image.ndim != 2:
            raise DataError(f"images must be 2-D greyscale, got shape {image.shape}")
        out = predict_raw(model, normalize_image(image, normalize), device)
        order = np.argsort(-out["scores"], kind="stable")
        boxes, scores, labels = out["boxes"][order], out["scores"][order], out["labels"][order]
        label_image = np.zeros(image.shape, np.uint16)
        instance = np.zeros(len(order), np.int32)
        painted = 0
        for k in range(len(order) - 1, -1, -1):  # lowest score first, so the best ends on top
            if scores[k] < mask_conf or out["masks"] is None:
                continue
            pix = out["masks"][order[k]] >= mask_threshold
            if pix.any():
                instance[k] = k + 1
                label_image[pix] = k + 1
                painted += 1
        # renumber painted ids to 1..K in score order (ids fully covered by better ones vanish)
        present = np.unique(label_image[label_image > 0])
        remap = np.zeros(len(order) + 1, np.uint16)
        remap[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
        label_image = remap[label_image]
        instance = np.where(instance > 0, remap[instance].astype(np.int32), 0)
        df = pd.DataFrame({"x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
                           "class": (labels - 1).astype(np.int16), "score": scores, "instance": instance})
        yield df, label_image


def _image_inputs(source):
    """``(n, names, read(i), shapes, handle)`` of any source :func:`open_source` reads; names are the
    image file names for folders (``im0.png``), the stored names for HDF5 and shard sets."""
    src = open_source(source)
    try:
        if len(src) == 0:
            raise DataError(f"{source} holds no samples")
        names = [src.file_name(k) for k in range(len(src))]
        shapes = [tuple(src.shape(k)) for k in range(len(src))]
    except BaseException:
        src.close()
        raise
    return len(src), names, src.image, shapes, src


def predict_maskrcnn(
    checkpoint,
    source,
    out,
    *,
    overwrite: bool = False,
    mask_conf: float = 0.5,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Predict instances in an HDF5 dataset or an image folder; write a predictions HDF5 file.

    The output (``kind="predictions"``) has one sample per input image, in input order:
    ``/names``, ``/shapes``, the ``boxes`` table (``x0, y0, x1, y1, class, score,
    instance``) and ``/labels/masks`` (instance-id label images).  Root attributes
    record the checkpoint, the source and the model type.  Images of different sizes
    (a folder of 512² tiles and a 1024² frame) share one ``(N, H_max, W_max)`` mask
    stack: smaller label images are zero-padded at the bottom/right, the root attribute
    ``masks_padded`` is 1 and ``/shapes`` holds each image's true ``(H, W)`` — crop
    ``mask(i)[:H, :W]``.

    Raises
    ------
    ParameterError, SchemaError, DataError
        Bad thresholds, an existing output without ``overwrite``, a foreign checkpoint, an
        unreadable source.  Nothing is written then.
    """

    if not 0.0 <= float(mask_conf) <= 1.0:
        raise ParameterError(f"mask confidence must be in [0, 1], got {mask_conf}")
    check_output(out, overwrite)
    model, cfg, names = load_maskrcnn(checkpoint, device)
    n, file_names, read, shapes, handle = _image_inputs(source)
    full = (max(h for h, _ in shapes), max(w for _, w in shapes))
    padded = any(tuple(sh) != full for sh in shapes)
    try:
        with DatasetWriter(
            out, kind="predictions", class_names=names, overwrite=overwrite,
            generator={"function": "simgen.train.maskrcnn.predict.predict_maskrcnn", "checkpoint": str(checkpoint),
                       "source": str(source), "mask_conf": float(mask_conf), "config": cfg.to_dict()},
            attrs={"model_type": MODEL_TYPE, "source": str(source), "checkpoint": str(checkpoint),
                   "masks_padded": int(padded)},
        ) as writer:
            images = (read(i) for i in range(n))
            results = predict_images(model, images, mask_threshold=cfg.mask_threshold, mask_conf=mask_conf,
                                     normalize=cfg.normalize)
            for i, (boxes, label_image) in enumerate(track(results, description="predict", enabled=progress, total=n)):
                h, w = label_image.shape
                if padded:  # one (N, H, W) stack: smaller images are padded with 0 at the bottom/right
                    label_image = np.pad(label_image, ((0, full[0] - h), (0, full[1] - w)))
                writer.append(None, boxes=boxes, mask=label_image, name=file_names[i], shape=(h, w))
    finally:
        if handle is not None:
            handle.close()
    return Path(out)

