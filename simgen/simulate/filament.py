"""Frame pairs of hollow carbon filaments gasified by catalyst particles.

A *sequence* is ``frames`` bright-field frames of one field of view holding a few
carbon filaments (smooth random centre lines, outer radius ``R_o``, hollow core of
radius ``R_i``).  Active filaments carry a dark catalyst particle at their front
that moves along the centre line at ``v`` px/frame and gasifies the filament behind
it: the filament exists for arclength ``s >= s_front(t) = s_0 + v t``.  The walls
also thin (``R_o`` shrinks) and the core widens (``R_i`` grows) slowly, so both
targets change in both directions.

Two targets per frame: **A1** filament area (``dist <= R_o`` and ``s >= s_front``)
and **A2** hollow core (``dist <= R_i`` inside the same, away from the closed far
end); a filament lying on top of another hides the lower one (instance masks are
label images).  Every pair ``(first, second)`` gets a per-pixel change map per
target: 0 background (absent in both), 1 appearing (absent → present),
2 disappearing (present → absent), 3 unchanged-present.  Pairs come from frame gaps
``k`` (``gaps``) as *forward* ``(t, t+k)``, *backward* ``(t+k, t)`` and
*consecutive* ``(t, t+1)``, or — as in MultiTaskDeltaNet — from *all* pairs
``(i, j)``, ``i < j``, of a sequence (``n (n - 1) / 2`` per sequence of ``n`` frames),
optionally with the ``n`` *self* pairs ``(t, t)``.

The study's pair counts (126 / 64 / 41 frames → 2968 / 1188 / 442 pairs) are sums of
``n_s (n_s - 1) / 2`` over the sequences ``s`` of a split — e.g. 41 = 27 + 14 frames
→ 351 + 91 = 442 and 64 = 46 + 18 → 1035 + 153 = 1188 pairs; no split of 41 or 64
frames into two sequences gives those counts with ``n²`` (ordered) or ``n (n + 1) / 2``
(with self pairs).  ``pairing="all"`` therefore gives the distinct unordered pairs,
oriented forward in time; add ``"self"`` for the self pairs.

With ``mask_others`` a sequence follows one *target* filament (drawn on top, always
gasifying, its centre line through the field centre, outer diameter ``diameter`` when
given): A1/A2, the instance mask and the boxes hold the target only, and the pixels of
every other filament (their area over the whole sequence, dilated by 2 px) are masked
out — set to the median of the frame's background — as in the study's crops.

Intensities follow Beer–Lambert on the projected thickness of a hollow tube,
``t(r) = 2(√(R_o²−r²) − √(R_i²−r²))``, and of spherical particles, on a TEM
support-film background with shot noise and blur (:mod:`simgen.simulate.tem_render`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import check_seed, sample_rng
from simgen.simulate.tem_render import apply_camera, background, random_curves

__all__ = ["FilamentConfig", "FilamentSampler", "change_map", "pair_list", "PAIRINGS", "FILAMENT_CLASSES"]

PAIRINGS = ("forward", "backward", "consecutive", "all", "self")
FILAMENT_CLASSES = ("filament", "catalyst")


@dataclass(frozen=True)
class FilamentConfig:
    """Parameters of filament sequences (lengths px, times frames).

    Attributes
    ----------
    size : int or (H, W)
    frames : int
        Frames per sequence.
    gaps : tuple of int
        Frame gaps ``k`` of the pairs.
    pairing : tuple of {"forward", "backward", "consecutive", "all", "self"}
        ``all``: every pair ``(i, j)`` with ``i < j``; ``self``: the pairs ``(t, t)``.
    n_filaments : (int, int)
        Inclusive range of filaments per field.
    radius : (float, float)
        Outer radius range ``R_o``.
    core_frac : (float, float)
        Core radius as a fraction of ``R_o``.
    length : (float, float)
        Centre-line length as a fraction of the larger image side.
    active : float
        Probability that a filament carries a gasifying catalyst particle.
    rate : float
        Mean front speed (px/frame) of active filaments (uniform in [0.5, 1.5] x rate).
    particle : (float, float)
        Catalyst radius as a fraction of ``R_o``.
    thinning, core_growth : float
        Largest wall-thinning / core-widening speed (px/frame, uniform per filament).
    contrast : float
        Absorption per px of filament wall (Beer–Lambert ``exp(-μ t)``).
    dose, blur : float
        Shot noise (electrons/px) and detector blur (px).
    mask_others : bool
        One target filament per sequence; the others are masked out of the images and labels.
    diameter : float or None
        Outer diameter (px) of the target filament (``mask_others``); ``None`` draws it from ``radius``.
    """

    size: int | tuple[int, int] = 256
    frames: int = 6
    gaps: tuple[int, ...] = (1, 2, 4)
    pairing: tuple[str, ...] = ("forward", "backward")
    n_filaments: tuple[int, int] = (2, 5)
    radius: tuple[float, float] = (5.0, 11.0)
    core_frac: tuple[float, float] = (0.4, 0.65)
    length: tuple[float, float] = (0.5, 1.3)
    active: float = 0.7
    rate: float = 3.0
    particle: tuple[float, float] = (0.7, 1.1)
    thinning: float = 0.15
    core_growth: float = 0.25
    contrast: float = 0.04
    dose: float = 200.0
    blur: float = 0.8
    mask_others: bool = False
    diameter: float | None = None

    def __post_init__(self):
        for name in ("gaps", "pairing", "n_filaments", "radius", "core_frac", "length", "particle"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = tuple(s.strip() for s in v.split(",") if s.strip())
            elif np.isscalar(v):
                v = (v,) if name in ("gaps", "pairing") else (v, v)
            object.__setattr__(self, name, tuple(v))
        if isinstance(self.size, list):
            object.__setattr__(self, "size", tuple(self.size))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.size) if isinstance(self.size, tuple) else (self.size, self.size)

    def validate(self) -> "FilamentConfig":
        h, w = self.shape
        if any(isinstance(v, bool) or int(v) != v or v < 32 for v in (h, w)):
            raise ParameterError(f"filament frames must be integers >= 32 px, got {self.size}")
        if int(self.frames) != self.frames or self.frames < 2:
            raise ParameterError(f"frames must be an integer >= 2, got {self.frames}")
        if not self.gaps and {"forward", "backward"} & set(self.pairing):
            raise ParameterError("at least one frame gap is required")
        for g in self.gaps if {"forward", "backward"} & set(self.pairing) else ():
            if int(g) != g or g < 1:
                raise ParameterError(f"frame gaps must be positive integers, got {g}")
            if g >= self.frames:
                raise ParameterError(f"frame gap {g} needs more than {self.frames} frames per sequence")
        if not self.pairing:
            raise ParameterError(f"choose at least one pairing ({', '.join(PAIRINGS)})")
        for p in self.pairing:
            if p not in PAIRINGS:
                raise ParameterError(f"unknown pairing {p!r}; choose from {', '.join(PAIRINGS)}")
        lo, hi = self.n_filaments
        if int(lo) != lo or int(hi) != hi or lo < 1 or hi < lo or hi > 50:
            raise ParameterError(f"n_filaments must be a range 1 <= lo <= hi <= 50, got {self.n_filaments}")
        for name, lo_b, hi_b in (("radius", 1.0, min(h, w) / 4), ("core_frac", 0.0, 0.9), ("length", 0.05, 5.0),
                                 ("particle", 0.1, 3.0)):
            lo, hi = getattr(self, name)
            if not (lo_b <= lo <= hi <= hi_b):
                raise ParameterError(f"{name} must be a range within [{lo_b:g}, {hi_b:g}], got {(lo, hi)}")
        if not (0 <= self.active <= 1):
            raise ParameterError(f"active must be a probability, got {self.active}")
        for name in ("rate", "thinning", "core_growth", "contrast", "dose", "blur"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ParameterError(f"{name} must be >= 0, got {v}")
        if self.diameter is not None:
            d = self.diameter
            if isinstance(d, bool) or not (isinstance(d, (int, float, np.integer, np.floating)) and math.isfinite(d)) \
                    or not 3.0 <= d <= min(h, w) / 2:
                raise ParameterError(f"diameter must be a number of px in [3, {min(h, w) / 2:g}], got {d!r}")
            if not self.mask_others:
                raise ParameterError("diameter sets the target filament's size: it needs mask_others")
        return self

    def replace(self, **changes) -> "FilamentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def change_map(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-pixel change classes of two binary masks: 0 absent in both, 1 appearing,
    2 disappearing, 3 present in both (uint8)."""
    a = np.asarray(first, bool)
    b = np.asarray(second, bool)
    return np.where(a, np.where(b, 3, 2), np.where(b, 1, 0)).astype(np.uint8)


def pair_list(frames: int, gaps, pairing) -> list[dict]:
    """Pairs ``(first, second, gap, direction)`` of one sequence, without duplicates.

    ``direction`` is +1 forward in time, -1 backward, 0 for self pairs; ``gap = |second - first|``.

    Examples
    --------
    >>> [(p["first"], p["second"]) for p in pair_list(3, (), ("all",))]
    [(0, 1), (0, 2), (1, 2)]
    >>> len(pair_list(41, (), ("all",))), len(pair_list(5, (), ("all", "self")))
    (820, 15)
    """
    out, seen = [], set()

    def add(i, j, k, direction):
        if (i, j) not in seen:
            seen.add((i, j))
            out.append({"first": i, "second": j, "gap": k, "direction": direction})

    for kind in pairing:
        if kind == "consecutive":
            for t in range(frames - 1):
                add(t, t + 1, 1, 1)
            continue
        if kind == "all":
            for i in range(frames):
                for j in range(i + 1, frames):
                    add(i, j, j - i, 1)
            continue
        if kind == "self":
            for t in range(frames):
                add(t, t, 0, 0)
            continue
        for k in gaps:
            for t in range(frames - k):
                if kind == "forward":
                    add(t, t + k, k, 1)
                else:
                    add(t + k, t, k, -1)
    return out


class _Filament:
    """Geometry of one filament: distance and arclength of its nearest centre-line point per pixel."""

    def __init__(self, pts: np.ndarray, shape, pad: float):
        from scipy.ndimage import distance_transform_edt

        h, w = shape
        step = np.hypot(*np.diff(pts, axis=0).T)
        self.s = np.concatenate([[0.0], np.cumsum(step)])
        self.length = float(self.s[-1])
        self.pts = pts
        # rasterise the centre line on a padded grid (the line may leave the field)
        p = int(math.ceil(pad)) + 2
        grid = np.ones((h + 2 * p, w + 2 * p), bool)
        sgrid = np.full(grid.shape, -1.0)
        cc = np.floor(pts[:, 0]).astype(int) + p
        rr = np.floor(pts[:, 1]).astype(int) + p
        ok = (cc >= 0) & (cc < grid.shape[1]) & (rr >= 0) & (rr < grid.shape[0])
        grid[rr[ok], cc[ok]] = False
        sgrid[rr[ok], cc[ok]] = self.s[ok]
        dist, (ir, ic) = distance_transform_edt(grid, return_indices=True)
        self.dist = dist[p: p + h, p: p + w].astype(np.float32)
        self.s_near = sgrid[ir, ic][p: p + h, p: p + w].astype(np.float32)

    def point(self, s: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(self.s, s), 0, len(self.s) - 1))
        return self.pts[i]


class FilamentSampler:
    """``sampler(i)`` → sequence ``i``: frames (sample dicts), A1/A2 stacks and pairs.

    Sequence ``i`` draws only from ``sample_rng(seed, i)`` (frame noise from
    ``sample_rng(seed, i, t + 1)``).
    """

    kind = "filament"

    def __init__(self, config: FilamentConfig | None = None, seed: int = 0):

        self.config = (config or FilamentConfig()).validate()
        self.seed = check_seed(seed)

    @property
    def class_names(self) -> list[str]:
        return list(FILAMENT_CLASSES)

    def describe(self) -> dict:
        return {"sampler": "filament", "config": self.config.to_dict(), "change_classes":
                ["background", "appearing", "disappearing", "unchanged"]}

    def pairs(self) -> list[dict]:
        c = self.config
        return pair_list(c.frames, c.gaps, c.pairing)

    def __call__(self, index: int) -> dict:

        c = self.config
        h, w = c.shape
        rng = sample_rng(self.seed, index)
        n_fil = int(rng.integers(c.n_filaments[0], c.n_filaments[1] + 1))
        curves = random_curves(rng, (h, w), n_fil, c.length, curvature=0.015)
        if c.mask_others:  # the target (filament 0) crosses the field centre
            mid = curves[0][len(curves[0]) // 2]
            curves[0] = (curves[0] + np.array([w / 2, h / 2], np.float32) - mid).astype(np.float32)
        fils = []
        for k, pts in enumerate(curves):
            r_o = float(rng.uniform(*c.radius))
            target = c.mask_others and k == 0
            if target and c.diameter is not None:
                r_o = float(c.diameter) / 2
            f = _Filament(pts, (h, w), pad=r_o)
            active = rng.uniform() < c.active or target
            f.r_o = r_o
            f.r_i = r_o * float(rng.uniform(*c.core_frac))
            f.v = float(c.rate * rng.uniform(0.5, 1.5)) if active else 0.0
            f.from_end = bool(rng.uniform() < 0.5)  # which end the particle eats from
            f.s0 = float(rng.uniform(0.0, 0.3) * f.length)
            f.thin = float(rng.uniform(0, c.thinning))
            f.core = float(rng.uniform(0, c.core_growth))
            f.rp = r_o * float(rng.uniform(*c.particle))
            f.has_particle = active or rng.uniform() < 0.3
            fils.append(f)
        p_bg = {"level": float(rng.uniform(0.55, 0.75)), "gradient": float(rng.uniform(0, 0.1)),
                "gradient_angle": float(rng.uniform(0, 2 * np.pi)),
                "texture_components": [(3.0, float(rng.uniform(0.01, 0.04))), (12.0, float(rng.uniform(0.01, 0.05)))],
                "anisotropy": 0.0, "mottle_angle": 0.0, "bend_count": 0}
        bg = background(rng, (h, w), p_bg)
        # the target is drawn last (on top); ids stay k + 1
        order = list(range(1, n_fil)) + [0] if c.mask_others else list(range(n_fil))
        others = np.zeros((h, w), bool)  # area of the non-target filaments and particles over the sequence
        frames, a1s, a2s, cleans = [], [], [], []
        for t in range(c.frames):
            thick = np.zeros((h, w), np.float32)
            labels = np.zeros((h, w), np.uint16)
            core = np.zeros((h, w), bool)
            boxes = []
            part_thick = np.zeros((h, w), np.float32)
            for k in order:
                f = fils[k]
                keep = not c.mask_others or k == 0
                r_o = max(f.r_o - f.thin * t, 1.5)
                r_i = min(f.r_i + f.core * t, r_o - 1.0)
                front = f.s0 + f.v * t
                s_rel = f.s_near if not f.from_end else (f.length - f.s_near)
                exists = (s_rel >= front) & (f.dist <= r_o)
                # closed far end: no core within r_o of the far end
                is_core = exists & (f.dist <= r_i) & (s_rel <= f.length - r_o)
                r2 = f.dist.astype(np.float32) ** 2
                tube = 2 * (np.sqrt(np.maximum(r_o * r_o - r2, 0)) - np.sqrt(np.maximum(r_i * r_i - r2, 0)))
                thick += np.where(exists, tube, 0).astype(np.float32)
                if keep:
                    labels[exists] = k + 1
                    core[exists] = False  # a filament on top hides the core below
                    core |= is_core
                else:
                    others |= exists
                if exists.any() and keep:
                    rows = np.nonzero(exists.any(axis=1))[0]
                    cols = np.nonzero(exists.any(axis=0))[0]
                    boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1, 0, k + 1))
                if f.has_particle:
                    s_abs = front if not f.from_end else f.length - front
                    if 0 <= s_abs <= f.length:
                        cx, cy = f.point(s_abs)
                        rp = f.rp
                        y0, y1 = max(int(cy - rp) - 1, 0), min(int(cy + rp) + 2, h)
                        x0, x1 = max(int(cx - rp) - 1, 0), min(int(cx + rp) + 2, w)
                        if y1 > y0 and x1 > x0:
                            yy = np.arange(y0, y1)[:, None] + 0.5 - cy
                            xx = np.arange(x0, x1)[None, :] + 0.5 - cx
                            rr2 = yy * yy + xx * xx
                            sph = 2 * np.sqrt(np.maximum(rp * rp - rr2, 0))
                            part_thick[y0:y1, x0:x1] += sph.astype(np.float32)
                            inside = rr2 <= rp * rp
                            if not keep:
                                others[y0:y1, x0:x1] |= inside
                            elif inside.any():
                                r_in = np.nonzero(inside.any(axis=1))[0]
                                c_in = np.nonzero(inside.any(axis=0))[0]
                                boxes.append((x0 + c_in[0], y0 + r_in[0], x0 + c_in[-1] + 1, y0 + r_in[-1] + 1, 1, 0))
            a1 = labels > 0
            a2 = core & a1
            cleans.append(bg * np.exp(-c.contrast * thick - 4 * c.contrast * part_thick))
            b = np.array(boxes, float).reshape(-1, 6)
            frames.append({
                "mask": labels,
                "boxes": {"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
                          "class": b[:, 4].astype(np.int16), "instance": b[:, 5].astype(np.int32)},
                "provenance": {"sequence": int(index), "frame": t, "n_filaments": n_fil},
            })
            a1s.append(a1.astype(np.uint8))
            a2s.append(a2.astype(np.uint8))
        masked = None
        if c.mask_others and others.any():
            from scipy.ndimage import binary_dilation

            target = np.any(a1s, axis=0)
            masked = binary_dilation(others, iterations=2) & ~target
        for t, frame in enumerate(frames):
            image = apply_camera(sample_rng(self.seed, index, t + 1), cleans[t], c.dose, c.blur)
            if masked is not None:
                free = ~masked & ~a1s[t].astype(bool)
                image = np.where(masked, np.median(image[free]) if free.any() else 0.5, image).astype(image.dtype)
            frame["image"] = image
        pairs = []
        for pr in self.pairs():
            i, j = pr["first"], pr["second"]
            pairs.append({**pr, "change_a1": change_map(a1s[i], a1s[j]), "change_a2": change_map(a2s[i], a2s[j])})
        return {"frames": frames, "a1": np.stack(a1s), "a2": np.stack(a2s), "pairs": pairs}
