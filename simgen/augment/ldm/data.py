"""In-memory training pairs (image + masks) and the random crop sampler of the LDM trainer.

Pure NumPy.  Files are read by :mod:`simgen.datasets.ldm_io`, which returns a
:class:`TrainingPairs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.rng import sample_rng

__all__ = ["CropSampler", "TrainingPairs", "toy_pairs"]


@dataclass
class TrainingPairs:
    """Images with their multi-class and instance masks (images may differ in size).

    Attributes
    ----------
    images : list of (H, W) float32 arrays in [0, 1]
    class_maps : list of (H, W) uint8 arrays (0 = background, ``c + 1`` = class ``c``)
    instance_masks : list of (H, W) integer arrays (0 = background)
    class_names : list of str
        Names of the defect classes (class id = index).
    source: dict
        Where the pairs came from (stored in checkpoints and provenance).
    unlabeled : bool
        The images carry no labels: every mask is all background, and the model learns
        the look of the images without defect conditioning (see
        :func:`simgen.datasets.ldm_io.import_unlabeled`).  Also recorded as
        ``source["unlabeled"]``.
    """

    images: list
    class_maps: list
    instance_masks: list
    class_names: list
    source: dict = field(default_factory=dict)
    unlabeled: bool = False

    def __post_init__(self):
        if not (len(self.images) == len(self.class_maps) == len(self.instance_masks)):
            raise DataError("training pairs: images, class maps and instance masks differ in number")
        if not self.class_names:
            raise DataError("training pairs need at least one class name")
        if self.unlabeled:
            self.source = {**self.source, "unlabeled": True}

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def validate(self, crop_size: int) -> TrainingPairs:
        """Check sizes, ranges and that the set is usable with ``crop_size`` crops."""
        if not len(self):
            raise DataError("no training images")
        for i, (img, cmap, inst) in enumerate(zip(self.images, self.class_maps, self.instance_masks)):
            if img.ndim != 2 or img.shape != cmap.shape or img.shape != inst.shape:
                raise DataError(f"training pair {i}: image {img.shape}, class map {cmap.shape} and instance mask "
                                f"{inst.shape} must be equal 2-D shapes")
            if min(img.shape) < crop_size:
                raise DataError(f"training image {i} is {img.shape[0]}x{img.shape[1]}, smaller than the {crop_size}-px "
                                "crops of this config; import with a larger --tile or choose a smaller config")
            if int(cmap.max(initial=0)) > self.n_classes:
                raise DataError(f"training pair {i}: class map value {int(cmap.max())} exceeds {self.n_classes} classes")
        has_defects = any(np.any(c > 0) for c in self.class_maps)
        if self.unlabeled and has_defects:
            raise DataError("pairs marked unlabeled hold defect masks")
        if not self.unlabeled and not has_defects:
            raise DataError("the training masks hold no defects; a mask-conditioned model needs annotated defects "
                            "(for unlabelled images use `simgen ldm import-real --unlabeled`)")
        return self

    def subset(self, indices) -> TrainingPairs:
        idx = [int(i) for i in indices]
        return TrainingPairs([self.images[i] for i in idx], [self.class_maps[i] for i in idx],
                             [self.instance_masks[i] for i in idx], list(self.class_names),
                             {**self.source, "subset": idx}, self.unlabeled)


class CropSampler:
    """Random square crops (image + class map), optionally flipped / rotated by 90°.

    Crops are drawn from image ``i`` with probability proportional to its number of
    crop positions, then at a uniform position.
    """

    def __init__(self, pairs: TrainingPairs, crop_size: int, flips: bool = True):
        self.pairs = pairs
        self.crop = int(crop_size)
        self.flips = bool(flips)
        positions = np.array([(im.shape[0] - self.crop + 1) * (im.shape[1] - self.crop + 1) for im in pairs.images],
                             np.float64)
        if np.any(positions <= 0):
            raise ParameterError(f"every training image must be at least {self.crop} px on each side")
        self.weights = positions / positions.sum()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, 1, c, c) float32, class_maps (n, c, c) int64)``."""
        c = self.crop
        imgs = np.empty((n, 1, c, c), np.float32)
        maps = np.empty((n, c, c), np.int64)
        which = rng.choice(len(self.weights), size=n, p=self.weights)
        for k, i in enumerate(which):
            img, cmap = self.pairs.images[i], self.pairs.class_maps[i]
            r = int(rng.integers(img.shape[0] - c + 1))
            q = int(rng.integers(img.shape[1] - c + 1))
            a, b = img[r : r + c, q : q + c], cmap[r : r + c, q : q + c]
            if self.flips:
                turns = int(rng.integers(4))
                a, b = np.rot90(a, turns), np.rot90(b, turns)
                if rng.random() < 0.5:
                    a, b = a[:, ::-1], b[:, ::-1]
            imgs[k, 0] = a
            maps[k] = b
        return imgs, maps


def toy_pairs(n: int = 16, size: int = 96, *, seed: int = 0, radius=(2.5, 6.0), count=(3, 8),
              background: float = 0.6, defect: float = 0.2, noise: float = 0.05) -> TrainingPairs:
    """A synthetic set of dark discs on grey noise (tests, benchmarks, sanity checks).

    Each image has ``count`` (inclusive range) non-overlapping discs of radius in
    ``radius`` and intensity ``defect`` on a ``background`` level with Gaussian noise.
    Single class ``"disc"``.
    """

    images, cmaps, insts = [], [], []
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for i in range(int(n)):
        rng = sample_rng(seed, i)
        inst = np.zeros((size, size), np.uint16)
        k = 0
        for _ in range(int(rng.integers(count[0], count[1] + 1))):
            for _try in range(20):
                r = rng.uniform(*radius)
                cx, cy = rng.uniform(r, size - r, 2)
                disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
                if not np.any(inst[disc]):
                    k += 1
                    inst[disc] = k
                    break
        img = np.where(inst > 0, defect, background) + rng.normal(0, noise, (size, size))
        images.append(np.clip(img, 0, 1).astype(np.float32))
        insts.append(inst)
        cmaps.append((inst > 0).astype(np.uint8))
    return TrainingPairs(images, cmaps, insts, ["disc"], {"source": "toy_pairs", "n": int(n), "size": int(size),
                                                         "seed": int(seed)})
