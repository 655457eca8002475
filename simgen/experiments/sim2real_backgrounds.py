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
from skimage.transform import downscale_local_mean

from simgen.augment.pipeline import AugmentedSampler
from simgen.datasets.imageio import list_images, read_image
from simgen.errors import DataError
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_real import RealSet
from simgen.simulate.tem import TemConfig, TemSampler
from simgen.simulate.tem_backgrounds import BackgroundTemSampler, clear_blobs
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


def _grey(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 (H, W): ``read_image`` and the real sources already give luminance."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise DataError(f"expected a greyscale (H, W) image, got shape {img.shape}")
    return img


def _signature(image: np.ndarray) -> np.ndarray:
    """Quarter-resolution, zero-mean, unit-variance copy (for near-duplicate tests)."""
    small = downscale_local_mean(image, (4, 4)) if min(image.shape) >= 16 else image
    return (small - small.mean()) / (small.std() + 1e-6)


def load_backgrounds(cfg: Sim2RealConfig, real: RealSet | None = None) -> Backgrounds:
    """The cleared backgrounds of ``cfg.backgrounds``, none of them a scored image of ``real``.

    An image is left out when its file stem is a scored image's name, or when it has a scored
    image's shape and correlates with it at ≥ ``cfg.background_max_corr`` (quarter resolution):
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
    stem) or a near copy of one (same shape, correlation ≥ ``cfg.background_max_corr`` at quarter
    resolution) is left out.  Of the rest at most ``cfg.background_images`` evenly spread ones are
    read and cleared (:func:`~simgen.simulate.tem_backgrounds.clear_blobs`, ``cfg.diameter_px``).
    """
    sigs = {name: _signature(_grey(img)) for name, img in scored.items()}
    left_out: dict[str, str] = {}
    kept: list[tuple[str, object]] = []  # (name, path or array): re-read when picked, not held in memory
    for name, item in candidates:
        stem = Path(name).stem
        if stem in sigs:
            left_out[name] = f"named like scored image {stem}"
            continue
        img = _grey(read_image(item) if isinstance(item, (str, Path)) else item)
        sig = _signature(img)
        twin = next((n for n, s in sigs.items()
                     if s.shape == sig.shape and float((s * sig).mean()) >= cfg.background_max_corr), None)
        if twin is not None:
            left_out[name] = f"near copy of scored image {twin}"
            continue
        kept.append((name, item))
    if not kept:
        raise DataError(f"no usable background image{' in ' + source if source else ''} "
                        f"({len(left_out)} left out as scored images or near copies)")
    picks = sorted({int(round(i)) for i in np.linspace(0, len(kept) - 1, min(cfg.background_images, len(kept)))})
    images, names, counts = [], [], []
    for i in picks:
        name, item = kept[i]
        img = _grey(read_image(item) if isinstance(item, (str, Path)) else item)
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
