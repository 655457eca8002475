"""Real backgrounds for the synthetic training images (``simgen sim2real --backgrounds DIR``).

Reads a folder of the user's unlabeled micrographs, leaves out every image that is (or nearly
is) one of the scored real images — images used for adaptation and images scored stay
disjoint — paints over their defect-like blobs (:func:`simgen.simulate.tem_backgrounds.clear_blobs`,
pixels only) and hands them to :class:`~simgen.simulate.tem_backgrounds.BackgroundTemSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simgen.augment.pipeline import AugmentedSampler
from simgen.datasets.imageio import list_images, read_image
from simgen.errors import DataError
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_disjoint import as_grey, exclude_scored
from simgen.experiments.sim2real_real import RealSet
from simgen.simulate.tem import TemConfig, TemSampler
from simgen.simulate.tem_backgrounds import BackgroundTemSampler, clear_blobs
from simgen.spread import spread_indices
from simgen.train.yolo.unlabeled import image_folder

__all__ = ["Backgrounds", "load_backgrounds", "clear_backgrounds", "background_sampler"]


@dataclass
class Backgrounds:
    """Cleared background images, their file names and what was left out (name → reason)."""

    images: list[np.ndarray]
    names: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    n_cleared: list[int] = field(default_factory=list)

    def describe(self) -> dict:
        return {"images": list(self.names), "left_out": dict(self.left_out), "blobs_cleared": list(self.n_cleared)}


def load_backgrounds(cfg: Sim2RealConfig, real: RealSet | None = None) -> Backgrounds:
    """The cleared backgrounds of ``cfg.backgrounds``, none of them a scored image of ``real``.

    An image is left out when its file stem is a scored image's name, or when it has a scored
    image's shape and correlates with it at ≥ ``cfg.near_copy_corr`` (quarter resolution):
    consecutive video frames are near copies of each other.  Of the rest, at most
    ``cfg.background_images`` evenly spread ones are cleared of blobs of ``cfg.diameter_px``.
    """
    if cfg.backgrounds is None:
        raise DataError("no background folder given")
    scored = {} if real is None else {name: real.image(k) for k, name in enumerate(real.names)}
    files = list_images(image_folder(Path(cfg.backgrounds)))
    return clear_backgrounds([(f.name, f) for f in files], scored, cfg, source=str(cfg.backgrounds))


def clear_backgrounds(candidates, scored: dict[str, np.ndarray], cfg: Sim2RealConfig, *,
                      source: str = "") -> Backgrounds:
    """Cleared backgrounds from ``candidates`` (``(name, path or array)`` pairs), none of them a scored image.

    ``scored`` maps the scored images' names to their pixels; a candidate named like one (file
    stem) or a near copy of one (same shape, correlation ≥ ``cfg.near_copy_corr`` at quarter
    resolution) is left out.  Of the rest at most ``cfg.background_images`` evenly spread ones are
    read and cleared (:func:`~simgen.simulate.tem_backgrounds.clear_blobs`, ``cfg.diameter_px``).
    """
    kept, left_out = exclude_scored(candidates, scored, cfg.near_copy_corr)
    if not kept:
        raise DataError(f"no usable background image{' in ' + source if source else ''} "
                        f"({len(left_out)} left out as scored images or near copies)")
    picks = spread_indices(len(kept), cfg.background_images).tolist()
    images, names, counts = [], [], []
    for i in picks:
        name, item = kept[i]
        img = as_grey(read_image(item) if isinstance(item, (str, Path)) else np.asarray(item))
        cleared, n = clear_blobs(img, tuple(cfg.diameter_px))
        images.append(cleared)
        names.append(name)
        counts.append(int(n))
    return Backgrounds(images, names, left_out, counts)


def background_sampler(tem: TemConfig, cfg: Sim2RealConfig, bgs: Backgrounds | None = None, fraction: float = 0.0,
                       *, estimates: dict | None = None) -> AugmentedSampler:
    """The augmented TEM sampler of ``sim2real``: ``fraction`` of its samples on ``bgs`` (none without ``bgs``)."""
    base = TemSampler(tem, seed=cfg.seed, match=estimates)
    sampler = base if bgs is None else BackgroundTemSampler(base, bgs.images, fraction, names=bgs.names)
    return AugmentedSampler(sampler, cfg.spec, seed=cfg.seed, relabel=cfg.labels == "annotator-final")
