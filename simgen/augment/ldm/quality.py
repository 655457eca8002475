"""Sample-quality checks of generated image + mask pairs (pure NumPy / SciPy).

* :func:`compare_masks` — per class, the defect density (defects per 1000 px per
  image) and size (equivalent-circle diameter) distributions of generated vs
  reference masks, with two-sample Kolmogorov–Smirnov statistics.
* :func:`conditioning_contrast` — mean intensity inside vs outside the defect masks:
  if conditioning works, dark defects sit where the mask says (inside < outside).
* :func:`quality_report` — both, plus the power-spectrum and histogram distances of
  :mod:`simgen.augment.realism` between generated and real images, with the distance
  between two halves of the real set as the yardstick of "as close as real to real".
"""

from __future__ import annotations

import numpy as np

from simgen.augment.ldm.data import TrainingPairs
from simgen.augment.ldm.masks import instance_classes_from_map, instance_properties
from simgen.augment.realism import realism_distance
from simgen.errors import DataError

__all__ = ["compare_masks", "conditioning_contrast", "mask_distributions", "quality_report", "reference_crops"]


def mask_distributions(pairs: TrainingPairs, min_area: int = 4) -> dict:
    """Per class ``{"density": per-image defects per 1000 px, "diameter": per-defect px}``.

    Instances (or border-cut fragments) under ``min_area`` px are ignored, as
    :func:`simgen.datasets.ldm_io.import_real` and the mask sampler drop them.
    """
    out = {c: {"density": [], "diameter": []} for c in range(pairs.n_classes)}
    for inst, cmap in zip(pairs.instance_masks, pairs.class_maps):
        classes = instance_classes_from_map(inst, cmap)
        props = instance_properties(inst, np.maximum(classes, 0))
        area = float(np.asarray(inst).size)
        big = props["area"] >= min_area
        for c in out:
            sel = (props["class"] == c) & big
            out[c]["density"].append(1000.0 * sel.sum() / area)
            out[c]["diameter"].extend(props["diameter"][sel].tolist())
    return {c: {k: np.asarray(v, np.float64) for k, v in d.items()} for c, d in out.items()}


def _describe(x: np.ndarray) -> dict:
    if not len(x):
        return {"n": 0}
    q = np.percentile(x, [10, 50, 90])
    return {"n": len(x), "mean": float(x.mean()), "std": float(x.std()), "p10": float(q[0]),
            "median": float(q[1]), "p90": float(q[2])}


def _ks(a: np.ndarray, b: np.ndarray) -> float | None:
    if not len(a) or not len(b):
        return None
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic)


def compare_masks(generated: TrainingPairs, reference: TrainingPairs) -> dict:
    """Per-class count and size distributions of generated vs reference masks.

    Returns ``{class_name: {"density": {"generated", "reference", "ks"}, "diameter": {...}}}``;
    ``ks`` is the two-sample Kolmogorov–Smirnov statistic (0 = same distribution).
    """
    g, r = mask_distributions(generated), mask_distributions(reference)
    out = {}
    for c, name in enumerate(reference.class_names):
        gc = g.get(c, {"density": np.zeros(0), "diameter": np.zeros(0)})
        out[name] = {
            key: {"generated": _describe(gc[key]), "reference": _describe(r[c][key]), "ks": _ks(gc[key], r[c][key])}
            for key in ("density", "diameter")
        }
    return out


def conditioning_contrast(images, class_maps) -> dict:
    """Mean intensity inside vs outside the defect masks.

    Returns ``inside``, ``outside`` (means over images that have both), ``contrast``
    (``(outside - inside) / outside``), ``fraction_darker`` (share of images whose mask
    is darker than their background) and ``n``.
    """
    ins, outs = [], []
    for img, cmap in zip(images, class_maps):
        fg = np.asarray(cmap) > 0
        if fg.any() and (~fg).any():
            img = np.asarray(img, np.float64)
            ins.append(img[fg].mean())
            outs.append(img[~fg].mean())
    if not ins:
        return {"n": 0, "inside": None, "outside": None, "contrast": None, "fraction_darker": None}
    ins, outs = np.array(ins), np.array(outs)
    return {"n": len(ins), "inside": float(ins.mean()), "outside": float(outs.mean()),
            "contrast": float((outs.mean() - ins.mean()) / max(outs.mean(), 1e-9)),
            "fraction_darker": float(np.mean(ins < outs))}


def reference_crops(reference: TrainingPairs, size: tuple[int, int], n: int, seed: int = 0) -> TrainingPairs:
    """``n`` random ``size`` crops of the reference pairs (to compare with generated images of that size)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ok = [i for i, im in enumerate(reference.images) if im.shape[0] >= h and im.shape[1] >= w]
    if not ok:
        raise DataError(f"no reference image is at least {h}x{w}")
    imgs, maps, insts = [], [], []
    for _ in range(int(n)):
        i = ok[int(rng.integers(len(ok)))]
        r = int(rng.integers(reference.images[i].shape[0] - h + 1))
        c = int(rng.integers(reference.images[i].shape[1] - w + 1))
        imgs.append(reference.images[i][r : r + h, c : c + w])
        maps.append(reference.class_maps[i][r : r + h, c : c + w])
        insts.append(reference.instance_masks[i][r : r + h, c : c + w])
    return TrainingPairs(imgs, maps, insts, list(reference.class_names), {**reference.source, "crops": [h, w]})


def quality_report(generated: TrainingPairs, reference: TrainingPairs, *, crop_reference: bool = True,
                   seed: int = 0) -> dict:
    """Mask statistics, realism distances and conditioning contrast of generated vs reference pairs.

    With ``crop_reference`` (default) and generated images of one size smaller than the
    reference images, the reference is replaced by as many random crops of that size as
    there are generated images (at least 64), so that sizes, border-cut defects and
    per-image standardisation are comparable.
    """

    if not len(generated) or not len(reference):
        raise DataError("quality report needs at least one generated and one reference image")
    shapes = {im.shape for im in generated.images}
    cropped = None
    if crop_reference and len(shapes) == 1:
        (shape,) = shapes
        if any(im.shape != shape for im in reference.images):
            reference = reference_crops(reference, shape, max(64, len(generated)), seed)
            cropped = list(shape)
    half = len(reference) // 2
    yardstick = None
    if half >= 1:
        idx = np.arange(len(reference))
        yardstick = realism_distance([reference.images[i] for i in idx[::2]],
                                     [reference.images[i] for i in idx[1::2]]).to_dict()
    return {
        "n_generated": len(generated),
        "n_reference": len(reference),
        "reference_crops": cropped,
        "masks": compare_masks(generated, reference),
        "realism": {"generated_vs_reference": realism_distance(generated.images, reference.images).to_dict(),
                    "reference_half_vs_half": yardstick},
        "conditioning": {"generated": conditioning_contrast(generated.images, generated.class_maps),
                         "reference": conditioning_contrast(reference.images, reference.class_maps)},
    }
