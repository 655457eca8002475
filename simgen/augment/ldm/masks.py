"""Defect masks for the LDM: class maps, per-instance statistics and a learned mask sampler.

Vocabulary
----------
* *instance mask* — ``(H, W)`` integer label image, 0 = background, ``k > 0`` = defect ``k``.
* *class map* — ``(H, W)`` uint8, 0 = background, ``c + 1`` = a pixel of class ``c``
  (class ids as in the dataset's ``/labels/classes``).  This multi-class mask is what
  conditions the diffusion model.
* *instance classes* — 1-D int array, ``classes[k - 1]`` = class id of instance ``k``.

:class:`MaskStatistics` learns, from training masks, the distributions that define a
defect layout — defects per unit area, and the joint distribution of class, size and
shape (a bank of the observed instance shapes, pasted with random flips/rotations at
uniformly random, non-overlapping positions) — and draws new instance masks from
them, so generation needs no manual labels.  Any object with the same
``sample(rng, shape)`` method (e.g. :class:`SimulatorMaskSource` wrapping the TEM
simulator) can be used instead.

Pure NumPy (+ scikit-image for region properties); no torch, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.rng import child_rng
from simgen.simulate.tem import TemConfig, boxes_from_labels, draw_image_params, place_and_render, sample_population

__all__ = [
    "MaskStatistics",
    "SimulatorMaskSource",
    "class_map_from_instances",
    "instance_classes_from_map",
    "instance_properties",
    "mask_source_from_spec",
    "relabel_sequential",
    "tem_config_for_scale",
    "tem_mask_source",
]


def class_map_from_instances(instance_mask: np.ndarray, classes) -> np.ndarray:
    """Instance mask + per-instance class ids → class map (0 background, class + 1).

    Parameters
    ----------
    instance_mask : (H, W) int array
    classes : 1-D int array or dict
        ``classes[k - 1]`` (array) or ``classes[k]`` (dict) is the class id of instance ``k``.
        Instances without a class entry get class 0.
    """
    inst = np.asarray(instance_mask)
    if inst.ndim != 2:
        raise ParameterError(f"instance masks must be 2-D, got shape {inst.shape}")
    top = int(inst.max(initial=0))
    lut = np.ones(top + 1, np.int64)
    lut[0] = 0
    if isinstance(classes, dict):
        for k, c in classes.items():
            if 0 < int(k) <= top:
                lut[int(k)] = int(c) + 1
    else:
        classes = np.asarray(classes, np.int64).reshape(-1)
        n = min(top, len(classes))
        lut[1 : n + 1] = classes[:n] + 1
    if lut.min(initial=0) < 0:
        raise ParameterError("instance class ids must be >= 0")
    if lut.max(initial=0) > 255:
        raise ParameterError("at most 255 defect classes are supported")
    return lut[inst].astype(np.uint8)


def relabel_sequential(instance_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the instances of a mask to ``1..K``; returns ``(mask, old_ids)``."""
    inst = np.asarray(instance_mask)
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(int(inst.max(initial=0)) + 1, np.uint16 if len(ids) < 65536 else np.uint32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[inst], ids


def instance_classes_from_map(instance_mask: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """Class id of every instance ``1..max`` = the most frequent class-map value over its pixels.

    Returns an int16 array of length ``instance_mask.max()``; ids without pixels get -1.
    """
    inst = np.asarray(instance_mask).astype(np.int64).ravel()
    cls = np.asarray(class_map).astype(np.int64).ravel()
    top = int(inst.max(initial=0))
    if top == 0:
        return np.zeros(0, np.int16)
    n_cls = int(cls.max(initial=0)) + 1
    fg = inst > 0
    counts = np.bincount(inst[fg] * n_cls + cls[fg], minlength=(top + 1) * n_cls).reshape(top + 1, n_cls)
    counts[:, 0] = 0  # background pixels inside an instance do not vote
    out = counts.argmax(axis=1) - 1
    out[counts.sum(axis=1) == 0] = -1
    return out[1:].astype(np.int16)


def instance_properties(instance_mask: np.ndarray, classes=None) -> dict[str, np.ndarray]:
    """Per-instance geometry: ``instance, class, area, diameter, x0, y0, x1, y1, touches_border``.

    ``diameter`` is the equivalent-circle diameter ``sqrt(4 area / pi)``; boxes are tight
    pixel-edge boxes in the simgen frame (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``).
    ``classes`` as in :func:`class_map_from_instances` (default: all 0).
    """
    inst = np.asarray(instance_mask)
    if inst.ndim != 2:
        raise ParameterError(f"instance masks must be 2-D, got shape {inst.shape}")
    ids = np.unique(inst)
    ids = ids[ids > 0].astype(np.int64)
    n = len(ids)
    out = {
        "instance": ids.astype(np.int32),
        "class": np.zeros(n, np.int16),
        "area": np.zeros(n, np.float32),
        "diameter": np.zeros(n, np.float32),
        "x0": np.zeros(n, np.float32),
        "y0": np.zeros(n, np.float32),
        "x1": np.zeros(n, np.float32),
        "y1": np.zeros(n, np.float32),
        "touches_border": np.zeros(n, bool),
    }
    if n == 0:
        return out
    rows, cols = np.nonzero(inst)
    labels = inst[rows, cols].astype(np.int64)
    index = np.searchsorted(ids, labels)
    area = np.bincount(index, minlength=n).astype(np.float32)
    big = np.iinfo(np.int64).max
    r0 = np.full(n, big)
    c0 = np.full(n, big)
    r1 = np.full(n, -1)
    c1 = np.full(n, -1)
    np.minimum.at(r0, index, rows)
    np.minimum.at(c0, index, cols)
    np.maximum.at(r1, index, rows)
    np.maximum.at(c1, index, cols)
    h, w = inst.shape
    out.update(
        area=area,
        diameter=np.sqrt(4.0 * area / np.pi).astype(np.float32),
        x0=c0.astype(np.float32),
        y0=r0.astype(np.float32),
        x1=(c1 + 1).astype(np.float32),
        y1=(r1 + 1).astype(np.float32),
        touches_border=(r0 == 0) | (c0 == 0) | (r1 == h - 1) | (c1 == w - 1),
    )
    if classes is not None:
        if isinstance(classes, dict):
            out["class"] = np.array([int(classes.get(int(k), 0)) for k in ids], np.int16)
        else:
            classes = np.asarray(classes, np.int64).reshape(-1)
            safe = np.clip(ids - 1, 0, max(len(classes) - 1, 0))
            out["class"] = np.where(ids - 1 < len(classes), classes[safe] if len(classes) else 0, 0).astype(np.int16)
    return out


@dataclass
class MaskStatistics:
    """Distributions of defect layouts learned from training masks, and a sampler for new ones.

    Attributes
    ----------
    n_classes : int
        Number of defect classes (class ids ``0 .. n_classes - 1``).
    densities : (M,) float array
        Defects per pixel of each training image (an empirical distribution; the count
        of a new mask of area ``A`` is ``Poisson(d · A)`` with ``d`` drawn from it).
    shape_dims : (K, 2) int array
        ``(h, w)`` of each banked instance shape.
    shape_pixels : (sum h·w,) uint8 array
        The banked binary shapes, flattened and concatenated.
    shape_class : (K,) int array
        Class id of each banked shape.
    min_gap : int
        New defects keep at least this many background pixels between each other.
    max_tries : int
        Placement attempts per defect before it is skipped.
    min_pixels : int
        Defects with fewer visible pixels (cut by the image border) are dropped, as
        :func:`simgen.datasets.ldm_io.import_real` drops instances under ``min_area``.
    """

    n_classes: int
    densities: np.ndarray
    shape_dims: np.ndarray
    shape_pixels: np.ndarray
    shape_class: np.ndarray
    min_gap: int = 1
    max_tries: int = 20
    min_pixels: int = 4
    _offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.densities = np.asarray(self.densities, np.float64).reshape(-1)
        self.shape_dims = np.asarray(self.shape_dims, np.int64).reshape(-1, 2)
        self.shape_pixels = np.asarray(self.shape_pixels, np.uint8).reshape(-1)
        self.shape_class = np.asarray(self.shape_class, np.int64).reshape(-1)
        if len(self.shape_class) != len(self.shape_dims):
            raise DataError("mask statistics: shape_class and shape_dims lengths differ")
        sizes = self.shape_dims[:, 0] * self.shape_dims[:, 1]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if self._offsets[-1] != len(self.shape_pixels):
            raise DataError("mask statistics: shape_pixels does not match shape_dims")
        if not len(self.densities):
            raise DataError("mask statistics need at least one training mask")
        if np.any(self.shape_class < 0) or np.any(self.shape_class >= max(self.n_classes, 1)):
            raise DataError("mask statistics: shape classes out of range")

    # -- fitting --------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        instance_masks,
        class_maps,
        n_classes: int,
        *,
        max_shapes: int = 4096,
        min_area: int = 4,
        rng: np.random.Generator | int = 0,
    ) -> MaskStatistics:
        """Learn layout statistics from training masks.

        Parameters
        ----------
        instance_masks, class_maps : sequences of (H, W) arrays
            Training masks (see module docstring); images may differ in size.
        n_classes : int
            Number of defect classes.
        max_shapes : int
            Keep at most this many instance shapes (a uniform random subset).
        min_area : int
            Ignore instances smaller than this (annotation specks).
        rng : Generator or int
            For the subset choice.

        Instances touching the image border are counted for the density but not banked
        as shapes (their shape is cut).  If every instance touches the border they are
        banked anyway.
        """

        rng = child_rng(rng)
        if n_classes < 1:
            raise ParameterError(f"n_classes must be >= 1, got {n_classes}")
        densities, shapes, shape_cls, border_shapes, border_cls = [], [], [], [], []
        for inst, cmap in zip(instance_masks, class_maps):
            inst = np.asarray(inst)
            classes = instance_classes_from_map(inst, cmap)
            props = instance_properties(inst, classes)
            keep = props["area"] >= min_area
            # defects cut by the border are shared with the neighbouring field: count them half
            weight = np.where(props["touches_border"], 0.5, 1.0)
            densities.append(float(weight[keep].sum()) / float(inst.size))
            for j in np.nonzero(keep)[0]:
                k = props["instance"][j]
                y0, y1, x0, x1 = (int(props[c][j]) for c in ("y0", "y1", "x0", "x1"))
                crop = (inst[y0:y1, x0:x1] == k).astype(np.uint8)
                c = max(int(props["class"][j]), 0)
                if c >= n_classes:
                    raise DataError(f"mask class {c} out of range for {n_classes} classes")
                (border_shapes if props["touches_border"][j] else shapes).append(crop)
                (border_cls if props["touches_border"][j] else shape_cls).append(c)
        if not densities:
            raise DataError("no training masks to learn defect statistics from")
        if not shapes:
            shapes, shape_cls = border_shapes, border_cls
        if len(shapes) > max_shapes:
            pick = np.sort(rng.choice(len(shapes), max_shapes, replace=False))
            shapes = [shapes[i] for i in pick]
            shape_cls = [shape_cls[i] for i in pick]
        dims = np.array([s.shape for s in shapes], np.int64).reshape(-1, 2)
        pixels = np.concatenate([s.ravel() for s in shapes]) if shapes else np.zeros(0, np.uint8)
        return cls(n_classes=int(n_classes), densities=np.array(densities), shape_dims=dims, shape_pixels=pixels,
                   shape_class=np.array(shape_cls, np.int64))

    # -- serialisation ----------------------------------------------------------
    def to_state(self) -> dict:
        """Plain dict of NumPy arrays and ints (for checkpoints)."""
        return {
            "n_classes": int(self.n_classes),
            "densities": self.densities.astype(np.float64),
            "shape_dims": self.shape_dims.astype(np.int64),
            "shape_pixels": self.shape_pixels.astype(np.uint8),
            "shape_class": self.shape_class.astype(np.int64),
            "min_gap": int(self.min_gap),
            "max_tries": int(self.max_tries),
            "min_pixels": int(self.min_pixels),
        }

    @classmethod
    def from_state(cls, state: dict) -> MaskStatistics:
        return cls(**{k: (np.asarray(v) if not isinstance(v, int) else v) for k, v in state.items()})

    # -- summaries ---------------------------------------------------------------
    @property
    def n_shapes(self) -> int:
        return len(self.shape_class)

    def shape(self, j: int) -> np.ndarray:
        h, w = self.shape_dims[j]
        return self.shape_pixels[self._offsets[j] : self._offsets[j + 1]].reshape(h, w)

    def summary(self) -> dict:
        areas = np.diff(self._offsets)  # bounding-box areas; true areas below
        true_areas = np.array([int(self.shape(j).sum()) for j in range(self.n_shapes)]) if self.n_shapes else areas
        return {
            "n_classes": self.n_classes,
            "n_training_masks": len(self.densities),
            "defects_per_1000px": round(float(self.densities.mean() * 1000), 4),
            "n_shapes": self.n_shapes,
            "class_fractions": np.bincount(self.shape_class, minlength=self.n_classes).astype(float).round(0).tolist(),
            "median_area_px": float(np.median(true_areas)) if len(true_areas) else 0.0,
        }

    # -- sampling -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Draw a new layout: ``(instance_mask uint16, classes int16)`` for an image of ``shape``.

        ``d`` is one of the training densities (defects per pixel, border-cut defects
        counted half).  ``Poisson(d · (H + 2m) · (W + 2m))`` defects (``m`` = half the
        largest banked shape) are centred uniformly in the image grown by ``m``; each is a
        banked training shape (class included) under a random flip / 90° rotation, kept
        if at least ``min_pixels`` of it are inside the image and it does not touch
        earlier defects (``min_gap``; up to ``max_tries`` positions are tried).
        """
        h, w = (int(s) for s in shape)
        if h < 1 or w < 1:
            raise ParameterError(f"mask shape must be positive, got {shape}")
        inst = np.zeros((h, w), np.uint16)
        classes: list[int] = []
        if self.n_shapes == 0:
            return inst, np.zeros(0, np.int16)
        density = self.densities[rng.integers(len(self.densities))]
        # defects are a stationary process seen through the image window: centres fall in the
        # image grown by half the largest shape, so defects cut by the border occur as often
        # as in real crops; pieces left with fewer than ``min_pixels`` visible pixels are dropped
        margin = float(self.shape_dims.max()) / 2.0
        count = int(rng.poisson(density * (h + 2 * margin) * (w + 2 * margin)))
        occupied = np.zeros((h, w), bool)
        gap = int(self.min_gap)
        for _ in range(min(count, 65535)):
            j = int(rng.integers(self.n_shapes))
            piece = self.shape(j).astype(bool)
            k = int(rng.integers(4))
            piece = np.rot90(piece, k)
            if rng.random() < 0.5:
                piece = piece[:, ::-1]
            ph, pw = piece.shape
            for _try in range(self.max_tries):
                cy = rng.uniform(-margin, h + margin)
                cx = rng.uniform(-margin, w + margin)
                r0 = int(np.floor(cy - ph / 2))
                c0 = int(np.floor(cx - pw / 2))
                # clip the piece to the image
                pr0, pc0 = max(0, -r0), max(0, -c0)
                pr1, pc1 = min(ph, h - r0), min(pw, w - c0)
                if pr1 <= pr0 or pc1 <= pc0:
                    break  # outside the window: this defect is not seen
                sub = piece[pr0:pr1, pc0:pc1]
                if int(sub.sum()) < self.min_pixels:
                    break  # (almost) entirely outside the window: this defect is not seen
                ir0, ic0 = r0 + pr0, c0 + pc0
                ir1, ic1 = ir0 + sub.shape[0], ic0 + sub.shape[1]
                # collision test against occupied pixels within a gap-dilated window
                gr0, gc0 = max(0, ir0 - gap), max(0, ic0 - gap)
                gr1, gc1 = min(h, ir1 + gap), min(w, ic1 + gap)
                window = occupied[gr0:gr1, gc0:gc1]
                if window.any():
                    grown = np.zeros_like(window)
                    grown[ir0 - gr0 : ir1 - gr0, ic0 - gc0 : ic1 - gc0] = sub
                    if gap:
                        grown = _dilate(grown, gap)
                    if (grown & window).any():
                        continue
                label = len(classes) + 1
                region = inst[ir0:ir1, ic0:ic1]
                region[sub] = label
                occupied[ir0:ir1, ic0:ic1] |= sub
                classes.append(int(self.shape_class[j]))
                break
        return inst, np.array(classes, np.int16)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)² square (separable max filter, pure NumPy)."""
    out = mask.copy()
    for axis in (0, 1):
        acc = out.copy()
        for s in range(1, r + 1):
            shifted = np.zeros_like(out)
            if axis == 0:
                shifted[s:] |= out[:-s]
                acc |= shifted
                shifted = np.zeros_like(out)
                shifted[:-s] |= out[s:]
            else:
                shifted[:, s:] |= out[:, :-s]
                acc |= shifted
                shifted = np.zeros_like(out)
                shifted[:, :-s] |= out[:, s:]
            acc |= shifted
        out = acc
    return out


class SimulatorMaskSource:
    """Use a simulator's defect-mask sampler as the LDM's mask source.

    Parameters
    ----------
    mask_sampler : callable
        ``mask_sampler(rng, shape)`` returning either ``(instance_mask, classes)`` or a
        dict with ``"mask"`` (instance ids) and ``"classes"`` (per-instance class ids,
        or ``"boxes"`` records with ``instance`` and ``class`` columns).
    n_classes : int
        Number of defect classes the simulator uses (must fit the LDM's).
    description : dict, optional
        Stored in provenance.
    """

    def __init__(self, mask_sampler, n_classes: int, description: dict | None = None):
        self.mask_sampler = mask_sampler
        self.n_classes = int(n_classes)
        self.description = description or {"source": getattr(mask_sampler, "__name__", type(mask_sampler).__name__)}

    def sample(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        out = self.mask_sampler(rng, tuple(shape))
        if isinstance(out, dict):
            inst = np.asarray(out["mask"])
            if "classes" in out:
                classes = np.asarray(out["classes"], np.int64)
            elif out.get("boxes") is not None and "instance" in out["boxes"]:
                boxes = out["boxes"]
                lut = {int(i): int(c) for i, c in zip(np.asarray(boxes["instance"]), np.asarray(boxes["class"]))}
                classes = np.array([lut.get(k, 0) for k in range(1, int(inst.max(initial=0)) + 1)], np.int64)
            else:
                classes = np.zeros(int(inst.max(initial=0)), np.int64)
        else:
            inst, classes = out
            inst = np.asarray(inst)
        if inst.shape != tuple(shape):
            raise DataError(f"simulator mask has shape {inst.shape}, expected {tuple(shape)}")
        inst, old = relabel_sequential(inst)
        classes = np.asarray(classes, np.int64).reshape(-1)
        classes = np.array([classes[k - 1] if 0 < k <= len(classes) else 0 for k in old], np.int16)
        if len(classes) and (classes.min() < 0 or classes.max() >= self.n_classes):
            raise DataError(f"simulator mask classes {sorted(set(classes.tolist()))} do not fit {self.n_classes} classes")
        return inst.astype(np.uint16), classes


class _TemMasks:
    """Picklable ``(rng, shape) -> (labels, classes)`` over the TEM simulator's defect placement."""

    def __init__(self, config):
        self.config = config
        self._by_shape: dict = {}

    def __call__(self, rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:

        shape = tuple(int(s) for s in shape)
        cfg = self._by_shape.get(shape)
        if cfg is None:
            cfg = self._by_shape[shape] = self.config.replace(size=shape).validate()
        p = draw_image_params(rng, cfg)
        candidates = sample_population(rng, cfg, p)
        _, labels, defects = place_and_render(candidates, cfg)
        boxes = boxes_from_labels(labels, defects, cfg)
        return labels, np.asarray(boxes["class"], np.int64)


def tem_config_for_scale(preset: str | None = None, scale: float = 1.0, n_classes: int = 1, **overrides):
    """A :class:`~simgen.simulate.tem.TemConfig` for images resampled by ``scale`` (pixel size / scale).

    With ``n_classes == 1`` every defect is labelled as one class (``single_class``,
    default name ``"defect"``).
    """

    if not (np.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale must be > 0, got {scale}")
    base = TemConfig.from_preset(preset) if preset else TemConfig()
    px = base.pixel_nm
    px = tuple(float(v) / float(scale) for v in px) if isinstance(px, (tuple, list)) else float(px) / float(scale)
    changes = {"pixel_nm": px, **overrides}
    if n_classes == 1:
        changes.setdefault("single_class", "defect")
    return base.replace(**changes)


def tem_mask_source(preset: str | None = None, scale: float = 1.0, n_classes: int = 1, **overrides) -> SimulatorMaskSource:
    """The TEM simulator's defect layouts (:mod:`simgen.simulate.tem`) as an LDM mask source.

    Parameters
    ----------
    preset : str, optional
        TEM preset (``"creme"``, ``"dsva"``, ``"ti"``); default: the generic config.
    scale : float
        Resampling factor the LDM's training data was imported with
        (``simgen ldm import-real --scale``): the simulator's pixel size is divided by it,
        so defect sizes in pixels match the rescaled images.
    n_classes : int
        Classes of the LDM.  With one class every simulated defect is class 0;
        otherwise the simulator's classes must fit.
    overrides
        Further :class:`~simgen.simulate.tem.TemConfig` fields.
    """
    config = tem_config_for_scale(preset, scale, n_classes, **overrides)
    sim_classes = len(config.label_names)
    if sim_classes > n_classes:
        raise ParameterError(f"the TEM simulator has {sim_classes} classes, the LDM {n_classes}")
    return SimulatorMaskSource(_TemMasks(config), n_classes,
                               {"source": "tem", "preset": preset, "scale": float(scale), "overrides": overrides})


def mask_source_from_spec(spec: str, learned: MaskStatistics, n_classes: int):
    """Parse a CLI mask-source spec: ``learned`` or ``tem[:PRESET[:SCALE]]``."""
    spec = (spec or "learned").strip()
    if spec == "learned":
        return learned
    parts = spec.split(":")
    if parts[0] != "tem" or len(parts) > 3:
        raise ParameterError(f"mask source must be 'learned' or 'tem[:PRESET[:SCALE]]', got {spec!r}")
    preset = parts[1] if len(parts) > 1 and parts[1] else None
    try:
        scale = float(parts[2]) if len(parts) > 2 else 1.0
    except ValueError:
        raise ParameterError(f"mask source scale must be a number, got {parts[2]!r}") from None
    return tem_mask_source(preset, scale, n_classes=n_classes)
