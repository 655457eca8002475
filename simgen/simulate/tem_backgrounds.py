"""Rendered defects on the user's own (unlabelled) micrographs.

The realism judge tells every synthetic TEM training set from the real frames (AUC 1.00,
README): most of what gives a render away is its *background* — the real frames' streaky,
JPEG-blocky grain, burnt-in text, bend contours — which no parametric background
reproduces.  Every user has unlabelled micrographs of their instrument, so the background
can simply be real: :func:`clear_blobs` paints over the defect-like dark blobs of a real
image (their positions and sizes are unknown: no labels are read), and
:class:`BackgroundTemSampler` multiplies the rendered defect contrast of a
:class:`~simgen.simulate.tem.TemSampler` sample onto a random crop of such a cleared
image.  The labels are the render's, exact by construction; what the detector sees around
them is the real instrument's.

Why clear the backgrounds: an unlabelled real loop left in a training background teaches the
detector that real loops are background.  :func:`clear_blobs` uses the annotator yardstick of
:mod:`simgen.simulate.tem_labels` (normalised LoG response over the local background
fluctuation): every blob-shaped dark maximum of defect size with SNR ≥ ``snr`` is painted
over with the level of its surroundings plus the image's own grain (:func:`fill_discs`; a
smooth bright bump that cancels the blob's response, as the renderer's look-alike rule
uses, left bright halos where the real loops had been — a cue of its own).  Faint real
defects below the threshold stay and are label noise (:func:`simgen.simulate.tem_labels.label_noise`
measures it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as _ndi

from simgen.errors import ParameterError
from simgen.simulate.tem import TemSampler, simulate_tem
from simgen.simulate.tem_labels import _default_sigmas, find_lookalikes, scale_space

__all__ = ["clear_blobs", "fill_discs", "BackgroundTemSampler"]


def clear_blobs(image: np.ndarray, diameter_px: tuple[float, float] = (5.0, 45.0), *, snr: float = 3.0,
                grow: float = 1.3, passes: int = 2) -> tuple[np.ndarray, int]:
    """Paint over the defect-like dark blobs of a real micrograph (no labels needed).

    Parameters
    ----------
    image : (H, W) float array in [0, 1]
        A greyscale micrograph.
    diameter_px : (float, float)
        Blob diameters (px) to clear: those of the defects that will be rendered on it.
    snr : float
        A blob is cleared when its normalised LoG response is at least ``snr`` times the local
        background fluctuation (the renderer's "visible" rule, :data:`simgen.simulate.tem.TemConfig.min_snr`).
    grow : float
        Painted-over disc radius in blob radii (``√2 σ`` at the blob's scale).
    passes : int
        Search-and-fill passes (filling a blob lowers the fluctuation around it, which can
        make a weaker neighbour stand out).

    Returns
    -------
    (cleared, n_cleared) — float32 (H, W) in [0, 1] and the number of blobs filled.
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 2:
        raise ParameterError(f"clear_blobs expects a 2-D greyscale image, got shape {img.shape}")
    lo, hi = (float(v) for v in diameter_px)
    if not 1 <= lo <= hi:
        raise ParameterError(f"need 1 <= diameter_px[0] <= diameter_px[1], got {diameter_px}")
    if not snr > 0 or not grow > 0 or passes < 1:
        raise ParameterError("need snr > 0, grow > 0 and passes >= 1")
    # the lattice one √2 step either side of the range, as the renderer's label rule uses it
    ss = scale_space(img, _default_sigmas(lo / math.sqrt(2), hi * math.sqrt(2)))
    free = np.ones(img.shape, bool)  # no labels: the whole image is "background"
    ss.set_background(free)
    s_lo = int(ss.scale_index(lo / (2 * math.sqrt(2))))
    s_hi = int(ss.scale_index(hi / (2 * math.sqrt(2))))
    active = range(len(ss.sigmas))
    n = 0
    for it in range(passes):
        look = find_lookalikes(ss, free, snr, (s_lo, s_hi))
        if not len(look):
            break
        n += len(look)
        img = fill_discs(img, look["x"], look["y"], grow * math.sqrt(2) * look["sigma"])
        if it + 1 < passes:
            ss.recompute(img, active)
            ss.set_background(free)
    return img, n


def fill_discs(image: np.ndarray, x, y, radius, *, grain_sigma: float = 1.5,
               shift: tuple[int, int] = (37, 53)) -> np.ndarray:
    """``image`` with discs (centres ``x``, ``y``, radii ``radius``, px) painted over by their surroundings.

    The fill is the local mean of the unmasked pixels around each hole (normalised
    convolution, coarser where a hole is wide) plus the image's own fine grain (``image −
    G_grain_sigma * image``) taken from a displaced unmasked place, so a filled hole has the level and
    the noise of its neighbourhood — neither a dark blob nor a smooth or bright patch.
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape
    mask = np.zeros((h, w), bool)
    for cx, cy, r in zip(np.asarray(x, float), np.asarray(y, float), np.asarray(radius, float)):
        rr = int(math.ceil(r)) + 1
        y0, y1 = max(int(cy) - rr, 0), min(int(cy) + rr + 1, h)
        x0, x1 = max(int(cx) - rr, 0), min(int(cx) + rr + 1, w)
        dy = np.arange(y0, y1)[:, None] + 0.5 - cy  # pixel-centre offsets of the disc's bounding box only
        dx = np.arange(x0, x1)[None, :] + 0.5 - cx
        mask[y0:y1, x0:x1] |= dx * dx + dy * dy <= r * r
    if not mask.any():
        return img.copy()
    keep = (~mask).astype(np.float32)
    fill = np.zeros_like(img)
    todo = mask.copy()
    for s in (3.0, 8.0, 24.0, 72.0):  # finer where the hole is small, coarser where it is wide
        num = _ndi.gaussian_filter(img * keep, s, mode="reflect")
        den = _ndi.gaussian_filter(keep, s, mode="reflect")
        ok = todo & (den > 0.05)
        fill[ok] = num[ok] / den[ok]
        todo &= ~ok
        if not todo.any():
            break
    if todo.any():
        fill[todo] = float(np.median(img[~mask]))
    grain = img - _ndi.gaussian_filter(img, grain_sigma, mode="reflect")
    g = np.roll(grain, shift, axis=(0, 1))
    gm = np.roll(mask, shift, axis=(0, 1))
    fill += np.where(gm, 0.0, g).astype(np.float32)
    out = np.where(mask, fill, img).astype(np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out


class BackgroundTemSampler:
    """A :class:`~simgen.simulate.tem.TemSampler` whose defects land on real backgrounds.

    Sample ``i`` is rendered exactly as ``sampler(i)``; with probability ``fraction`` (drawn
    from its own stream, ``sample_rng(seed, i, 1)``, so the render itself does not change)
    its defect layer — the rendered contrast deficit ``d`` (dislocation lines and specks are
    left out: a real background has its own), blurred like the render's camera — is put on a
    random crop ``B`` (random mirror flips) of one of ``backgrounds``: ``image = B (1 − d)``.
    Boxes and masks are the render's.  The labels follow the rule of the sampler's config on
    the *rendered* image (``min_snr``, look-alikes); with the default ``labels all`` every
    rendered defect is labelled either way.

    Parameters
    ----------
    sampler : TemSampler
    backgrounds : sequence of (H, W) float arrays in [0, 1]
        Greyscale real images (cleared with :func:`clear_blobs` first), any size; smaller than
        the sample in a dimension → reflect-padded.
    fraction : float in [0, 1]
        Share of samples drawn on a real background (the rest are full renders).
    names : sequence of str, optional
        One name per background, recorded in each sample's provenance.
    """

    kind = "tem"

    def __init__(self, sampler: TemSampler, backgrounds: Sequence[np.ndarray], fraction: float = 0.5,
                 names: Sequence[str] | None = None):
        if not 0.0 <= fraction <= 1.0:
            raise ParameterError(f"fraction must be in [0, 1], got {fraction}")
        bgs = [np.asarray(b, np.float32) for b in backgrounds]
        if fraction > 0 and not bgs:
            raise ParameterError("no background images")
        for b in bgs:
            if b.ndim != 2 or min(b.shape) < 8:
                raise ParameterError(f"backgrounds must be 2-D greyscale images of at least 8 px, got {b.shape}")
        if names is not None and len(names) != len(bgs):
            raise ParameterError(f"{len(names)} names for {len(bgs)} backgrounds")
        self.sampler = sampler
        self.backgrounds = bgs
        self.fraction = float(fraction)
        self.names = list(names) if names is not None else [f"background_{k}" for k in range(len(bgs))]

    config = property(lambda self: self.sampler.config)
    seed = property(lambda self: self.sampler.seed)
    class_names = property(lambda self: self.sampler.class_names)

    def describe(self) -> dict:
        return {**self.sampler.describe(), "backgrounds": {"fraction": self.fraction, "images": list(self.names)}}

    def check_overrides(self, codes) -> None:
        self.sampler.check_overrides(codes)

    def with_overrides(self, params: dict) -> "BackgroundTemSampler":
        return BackgroundTemSampler(self.sampler.with_overrides(params), self.backgrounds, self.fraction, self.names)

    def relabel(self, sample: dict) -> dict:
        return self.sampler.relabel(sample)

    def crop(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
        """A random crop of ``shape`` from a random background (random mirror flips) and where it came from."""
        k = int(rng.integers(len(self.backgrounds)))
        bg = self.backgrounds[k]
        h, w = shape
        ph, pw = max(0, h - bg.shape[0]), max(0, w - bg.shape[1])
        if ph or pw:
            bg = np.pad(bg, ((0, ph), (0, pw)), mode="reflect")
        y0 = int(rng.integers(bg.shape[0] - h + 1))
        x0 = int(rng.integers(bg.shape[1] - w + 1))
        out = bg[y0:y0 + h, x0:x0 + w]
        flip_y, flip_x = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        if flip_y:
            out = out[::-1]
        if flip_x:
            out = out[:, ::-1]
        return np.ascontiguousarray(out), {"background": self.names[k], "y0": y0, "x0": x0,
                                           "flip_y": flip_y, "flip_x": flip_x}

    def __call__(self, index: int) -> dict:
        from simgen.rng import sample_rng

        s = simulate_tem(sample_rng(self.seed, index), self.config, layers=True)
        out = {"image": s.image, "mask": s.mask, "boxes": s.boxes,
               "provenance": {"index": int(index), **s.params, "background": None}}
        draw = sample_rng(self.seed, index, 1)
        if draw.random() >= self.fraction:
            return out
        assert s.layers is not None
        deficit = np.clip(s.layers["defects"], 0.0, 0.97).astype(np.float32)
        blur = float(s.params.get("blur", 0.0))
        if blur > 0:  # as sharp as the render's camera makes them
            deficit = _ndi.gaussian_filter(deficit, blur, truncate=3.0, mode="reflect")
        crop, where = self.crop(draw, s.image.shape)
        image = crop * (np.float32(1.0) - deficit)
        np.clip(image, 0.0, 1.0, out=image)
        out["image"] = image.astype(np.float32)
        out["provenance"].update(background=where["background"], background_crop=where)
        return out
