"""In-situ TEM videos of evolving defects with exact ground-truth tracks.

The simulation is a population of defects (drawn like :mod:`simgen.simulate.tem`)
evolving frame by frame (time unit = one frame):

* **nucleation** — Poisson births, ``nucleation`` per frame per megapixel, at
  uniform positions; a new defect starts as a nucleus of diameter ``min_size_px``
  and its radius grows by ``growth`` px per frame up to its drawn final size.
* **motion** — a 2-D random walk: each frame ``Δx, Δy ~ N(0, 2D)`` (so the mean
  squared displacement is ``⟨|r(t+τ) − r(t)|²⟩ = 4Dτ``); a fraction
  ``glide_fraction`` of defects glides instead: 1-D random walk along the glide
  direction with ``Δs ~ N(0, 2 D_glide)`` (``⟨Δr²⟩ = 2 D_glide τ``).
* **coalescence** — two defects whose outlines touch (centre distance below the
  sum of their mean radii) merge: the larger keeps its id, takes the area-weighted
  centre and the summed area; the smaller's track ends ("coalesced").
* **disappearance** — each frame a stable defect starts dissolving with probability
  ``dissolution`` and then shrinks by ``shrink`` px per frame; its track ends
  ("dissolved") in the last frame its diameter is still >= ``min_size_px``.
  Defects whose centre leaves the field end there ("exited").

Every frame is rendered on one fixed specimen background with a per-frame
multiplicative intensity drift (log-brightness random walk, step ``drift``) and
fresh shot noise.  Instance masks carry the track id, so masks, boxes and the track
table agree by construction; births and deaths are exact by construction too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import check_seed, sample_rng
from simgen.simulate.tem import TemConfig, draw_defects, draw_image_params
from simgen.simulate.tem_render import DEFECT_DTYPE, apply_camera, background, render_defects

__all__ = ["VideoConfig", "VideoSampler", "simulate_tracks", "msd", "END_CAUSES", "TRACK_DTYPE"]

#: Why a track ended (``cause`` column of the lifetimes table).
END_CAUSES = ("alive", "dissolved", "coalesced", "exited")

#: One row of the ground-truth track table (per frame, per live defect).
TRACK_DTYPE = np.dtype(
    [("sample", "i8"), ("track_id", "i8"), ("x", "f4"), ("y", "f4"), ("x0", "f4"), ("y0", "f4"),
     ("x1", "f4"), ("y1", "f4"), ("class", "i2"), ("size", "f4")]
)


@dataclass(frozen=True)
class VideoConfig:
    """Parameters of one in-situ video (lengths in px, times in frames).

    Attributes
    ----------
    tem : TemConfig
        Appearance of defects and specimen (size, classes, contrast, background, noise).
    frames : int
    n_initial : int
        Defects present in frame 0 (at their final size).
    nucleation : float
        Births per frame per megapixel.
    diffusion : float
        2-D diffusion coefficient D (px²/frame) of non-gliding defects.
    glide_fraction, glide_diffusion : float
        Fraction of defects gliding in 1-D and their 1-D diffusion coefficient (px²/frame).
    glide_angle : float, optional
        Glide direction (rad); random per video when ``None``.
    growth, shrink : float
        Radius growth of new defects / shrink of dissolving ones (px/frame).
    dissolution : float
        Per-frame probability that a stable defect starts dissolving.
    coalescence : bool
        Merge defects on contact.
    drift : float
        Step of the per-frame log-brightness random walk.
    size_scale : float
        Final sizes are those of the TEM population times this factor.
    """

    tem: TemConfig = field(default_factory=lambda: TemConfig(density=(300.0, 300.0), arrangement="uniform",
                                                              lines=(0, 0), specks=(0.0, 0.0)))
    frames: int = 200
    n_initial: int = 30
    nucleation: float = 2.0
    diffusion: float = 0.5
    glide_fraction: float = 0.2
    glide_diffusion: float = 2.0
    glide_angle: float | None = None
    growth: float = 0.05
    shrink: float = 0.1
    dissolution: float = 0.002
    coalescence: bool = True
    drift: float = 0.003
    size_scale: float = 1.0

    def validate(self) -> "VideoConfig":
        self.tem.validate()
        if int(self.frames) != self.frames or self.frames < 2:
            raise ParameterError(f"frames must be an integer >= 2, got {self.frames}")
        if self.frames > 100000:
            raise ParameterError(f"frames must be <= 100000, got {self.frames}")
        if int(self.n_initial) != self.n_initial or self.n_initial < 0:
            raise ParameterError(f"n_initial must be a non-negative integer, got {self.n_initial}")
        for name in ("nucleation", "diffusion", "glide_diffusion", "growth", "shrink", "drift"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ParameterError(f"{name} must be >= 0, got {v}")
        if not (0 <= self.glide_fraction <= 1):
            raise ParameterError(f"glide_fraction must be in [0, 1], got {self.glide_fraction}")
        if not (0 <= self.dissolution <= 1):
            raise ParameterError(f"dissolution must be a probability in [0, 1], got {self.dissolution}")
        if self.shrink == 0 and self.dissolution > 0:
            raise ParameterError("dissolving defects need shrink > 0")
        if not (self.size_scale > 0):
            raise ParameterError(f"size_scale must be > 0, got {self.size_scale}")
        h, w = self.tem.shape
        expected = self.n_initial + self.nucleation * h * w / 1e6 * self.frames
        if expected > 60000:
            raise ParameterError(f"about {expected:.0f} defects would be born; ids must stay below 65536")
        return self

    def replace(self, **changes) -> "VideoConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tem"}
        d["tem"] = self.tem.to_dict()
        return d


@dataclass
class _Sim:
    frames: list  # per frame: (ids, DEFECT_DTYPE records)
    lifetimes: dict
    params: dict


class _Population:
    """Live defects as parallel arrays, plus the birth/death book-keeping."""

    def __init__(self):
        self.rec = np.zeros(0, DEFECT_DTYPE)
        self.ids = np.zeros(0, np.int64)
        self.a_final = np.zeros(0)
        self.ratio = np.zeros(0)
        self.glide = np.zeros(0, bool)
        self.dissolving = np.zeros(0, bool)
        self.births: dict[int, int] = {}
        self.deaths: dict[int, int] = {}
        self.causes: dict[int, int] = {}
        self.merged: dict[int, int] = {}
        self.next_id = 1

    def add(self, new, a_final, ratio, glide, frame: int) -> None:
        n = len(new)
        ids = np.arange(self.next_id, self.next_id + n)
        self.next_id += n
        for i in ids:
            self.births[int(i)] = frame
        self.rec = np.concatenate([self.rec, new])
        self.ids = np.concatenate([self.ids, ids])
        self.a_final = np.concatenate([self.a_final, a_final])
        self.ratio = np.concatenate([self.ratio, ratio])
        self.glide = np.concatenate([self.glide, glide])
        self.dissolving = np.concatenate([self.dissolving, np.zeros(n, bool)])

    def end(self, mask, cause: int, last_frame: int) -> None:
        """Remove the defects in ``mask``; their tracks end at ``last_frame`` (inclusive)."""
        if not mask.any():
            return
        for i in self.ids[mask]:
            self.deaths[int(i)] = last_frame
            self.causes[int(i)] = cause
        keep = ~mask
        for name in ("rec", "ids", "a_final", "ratio", "glide", "dissolving"):
            setattr(self, name, getattr(self, name)[keep])

    def coalesce(self, last_frame: int) -> None:
        """Merge touching pairs, largest first; an absorbed defect's track ends at ``last_frame``."""
        rec = self.rec
        if len(rec) < 2:
            return
        r = np.sqrt(rec["a"].astype(float) * rec["b"].astype(float))
        x, y = rec["x"].astype(float), rec["y"].astype(float)
        d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        touch = d < (r[:, None] + r[None, :])
        np.fill_diagonal(touch, False)
        if not touch.any():
            return
        absorbed = np.zeros(len(rec), bool)
        for i in np.argsort(-r, kind="stable"):
            if absorbed[i]:
                continue
            for j in np.nonzero(touch[i] & ~absorbed)[0]:
                # i absorbs j: area-weighted centre; areas add (a and b scale together)
                ai, aj = float(rec["a"][i] * rec["b"][i]), float(rec["a"][j] * rec["b"][j])
                tot = ai + aj
                rec["x"][i] = (rec["x"][i] * ai + rec["x"][j] * aj) / tot
                rec["y"][i] = (rec["y"][i] * ai + rec["y"][j] * aj) / tot
                scale = math.sqrt(tot / ai)
                rec["a"][i] *= scale
                rec["b"][i] *= scale
                self.a_final[i] = max(self.a_final[i] * scale, float(rec["a"][i]))
                absorbed[j] = True
                self.merged[int(self.ids[j])] = int(self.ids[i])
        self.end(absorbed, 2, last_frame)


def simulate_tracks(rng: np.random.Generator, config: VideoConfig, p: dict) -> _Sim:
    """Evolve the defect population; returns per-frame ``(ids, records)`` and exact lifetimes.

    A defect removed while computing frame ``t`` (dissolved below the minimum size,
    left the field, absorbed) was last present in frame ``t - 1``: its ``death``.
    """
    tem = config.tem
    h, w = tem.shape
    min_a = tem.min_size_px / 2
    glide_angle = config.glide_angle if config.glide_angle is not None else float(rng.uniform(0, math.pi))
    gdir = np.array([math.cos(glide_angle), math.sin(glide_angle)])
    pop = _Population()

    def spawn(n: int, frame: int, initial: bool) -> None:
        if n == 0:
            return
        new = draw_defects(rng, tem, p, n, xy=rng.uniform((0, 0), (w, h), size=(n, 2)))
        new["a"] *= config.size_scale
        new["b"] *= config.size_scale
        a_final = new["a"].astype(float)
        ratio = (new["b"] / new["a"]).astype(float)
        if not initial:  # nucleus of the minimum size, grows from there
            new["a"] = np.minimum(a_final, min_a)
            new["b"] = np.minimum(new["a"], np.maximum(new["a"] * ratio, 0.75))
        pop.add(new, a_final, ratio, rng.uniform(size=n) < config.glide_fraction, frame)

    frames = []
    area_mpx = h * w / 1e6
    for frame in range(config.frames):
        if frame == 0:
            spawn(config.n_initial, 0, True)
        else:
            rec = pop.rec
            n = len(rec)
            if n:
                # motion: 2-D random walk, or 1-D glide along gdir
                step = rng.normal(0.0, 1.0, size=(n, 2)) * math.sqrt(2 * config.diffusion)
                gstep = rng.normal(0.0, 1.0, size=n) * math.sqrt(2 * config.glide_diffusion)
                step[pop.glide] = gstep[pop.glide, None] * gdir[None, :]
                rec["x"] += step[:, 0]
                rec["y"] += step[:, 1]
                # growth and dissolution
                pop.dissolving |= rng.uniform(size=n) < config.dissolution
                grow = ~pop.dissolving
                rec["a"][grow] = np.minimum(pop.a_final[grow], rec["a"][grow] + config.growth)
                rec["a"][pop.dissolving] -= config.shrink
                rec["b"] = np.minimum(rec["a"], np.maximum(rec["a"] * pop.ratio, 0.75))
            pop.end(pop.dissolving & (pop.rec["a"] < min_a - 1e-6), 1, frame - 1)
            r = pop.rec
            pop.end((r["x"] < 0) | (r["x"] >= w) | (r["y"] < 0) | (r["y"] >= h), 3, frame - 1)
            if config.coalescence:
                pop.coalesce(frame - 1)
            spawn(int(rng.poisson(config.nucleation * area_mpx)), frame, False)
        frames.append((pop.ids.copy(), pop.rec.copy()))
    for i in pop.ids:
        pop.deaths[int(i)] = config.frames - 1
        pop.causes[int(i)] = 0
    all_ids = np.array(sorted(pop.births), np.int64)
    lifetimes = {
        "track_id": all_ids,
        "birth": np.array([pop.births[i] for i in all_ids], np.int64),
        "death": np.array([pop.deaths[i] for i in all_ids], np.int64),
        "cause": np.array([pop.causes[i] for i in all_ids], np.int8),
        "merged_into": np.array([pop.merged.get(int(i), -1) for i in all_ids], np.int64),
    }
    return _Sim(frames=frames, lifetimes=lifetimes, params={"glide_angle": glide_angle})


def msd(tracks, max_lag: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared displacement ``⟨|r(t+τ) − r(t)|²⟩`` over all tracks for τ = 1 … max_lag.

    Parameters
    ----------
    tracks : DataFrame or structured array with ``sample``, ``track_id``, ``x``, ``y``

    Returns
    -------
    (lags, msd) arrays; ``D_eff(τ) = msd / (4τ)`` for 2-D diffusion.
    """
    import pandas as pd

    df = pd.DataFrame(tracks) if not isinstance(tracks, pd.DataFrame) else tracks
    sums = np.zeros(max_lag)
    counts = np.zeros(max_lag)
    for _, g in df.sort_values(["track_id", "sample"]).groupby("track_id"):
        t = g["sample"].to_numpy()
        x, y = g["x"].to_numpy(float), g["y"].to_numpy(float)
        if len(t) < 2:
            continue
        if np.any(np.diff(t) != 1):
            raise ParameterError("tracks must be contiguous in frames")
        for lag in range(1, min(max_lag, len(t) - 1) + 1):
            dd = (x[lag:] - x[:-lag]) ** 2 + (y[lag:] - y[:-lag]) ** 2
            sums[lag - 1] += dd.sum()
            counts[lag - 1] += dd.size
    lags = np.arange(1, max_lag + 1)
    with np.errstate(invalid="ignore"):
        return lags, sums / counts


class VideoSampler:
    """A whole video as a sampler: ``sampler(frame)`` renders one annotated frame.

    The defect evolution is simulated once at construction from
    ``sample_rng(seed, 0, 1)``; the fixed background from ``sample_rng(seed, 0, 2)``;
    frame ``t``'s noise from ``sample_rng(seed, t)``.  Output is therefore identical
    however frames are produced.

    Attributes
    ----------
    n_frames, n_tracks : int
    lifetimes : dict of arrays ``track_id, birth, death, cause, merged_into`` (frames inclusive)
    tracks : structured array :data:`TRACK_DTYPE` of all frames (boxes from the rendered masks)
    """

    kind = "video"

    def __init__(self, config: VideoConfig | None = None, seed: int = 0):

        self.config = (config or VideoConfig()).validate()
        self.seed = check_seed(seed)
        tem = self.config.tem
        rng = sample_rng(self.seed, 0, 1)
        self._p = draw_image_params(rng, tem)
        self._sim = simulate_tracks(rng, self.config, self._p)
        self._background = background(sample_rng(self.seed, 0, 2), tem.shape, self._p)
        steps = sample_rng(self.seed, 0, 3).normal(0.0, self.config.drift, self.config.frames)
        steps[0] = 0.0
        self._gain = np.exp(np.cumsum(steps)).astype(np.float32)
        self.lifetimes = self._sim.lifetimes
        self.n_frames = self.config.frames
        self.n_tracks = int(len(self.lifetimes["track_id"]))
        self._tracks = None

    @property
    def class_names(self) -> list[str]:
        return self.config.tem.label_names

    def __len__(self) -> int:
        return self.n_frames

    def describe(self) -> dict:
        return {"sampler": "video", "config": self.config.to_dict(), "glide_angle": self._sim.params["glide_angle"]}

    def frame_defects(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Track ids and defect records (:data:`~simgen.simulate.tem_render.DEFECT_DTYPE`) of one frame."""
        if not 0 <= frame < self.n_frames:
            raise ParameterError(f"frame {frame} out of range for {self.n_frames} frames")
        return self._sim.frames[frame]

    def _labels(self, frame: int):
        ids, rec = self.frame_defects(frame)
        shape = self.config.tem.shape
        deficit, labels = render_defects(shape, rec, ids=ids)
        return ids, rec, deficit, labels

    def _rows(self, frame, ids, rec, labels) -> np.ndarray:
        from scipy.ndimage import find_objects

        tem = self.config.tem
        h, w = labels.shape
        rows = np.zeros(len(ids), TRACK_DTYPE)
        rows["sample"] = frame
        rows["track_id"] = ids
        rows["x"], rows["y"] = rec["x"], rec["y"]
        rows["class"] = 0 if tem.single_class else rec["kind"]
        rows["size"] = 2 * rec["a"]
        slices = find_objects(labels, max_label=int(ids.max())) if len(ids) else []
        for k, i in enumerate(ids):
            sl = slices[i - 1] if i - 1 < len(slices) else None
            if sl is not None:
                rows["x0"][k], rows["y0"][k], rows["x1"][k], rows["y1"][k] = sl[1].start, sl[0].start, sl[1].stop, sl[0].stop
            else:  # fully hidden under another defect (coalescence off): analytic box, clipped
                a = rec["a"][k]
                rows["x0"][k], rows["x1"][k] = max(rec["x"][k] - a, 0), min(rec["x"][k] + a, w)
                rows["y0"][k], rows["y1"][k] = max(rec["y"][k] - a, 0), min(rec["y"][k] + a, h)
        return rows

    def track_points(self):
        """Exact positions of every track in every frame (no rendering): DataFrame with
        ``sample, track_id, x, y, class, size``."""
        import pandas as pd

        parts = []
        for t, (ids, rec) in enumerate(self._sim.frames):
            parts.append(pd.DataFrame({"sample": np.full(len(ids), t, np.int64), "track_id": ids,
                                       "x": rec["x"].astype(np.float64), "y": rec["y"].astype(np.float64),
                                       "class": rec["kind"], "size": 2 * rec["a"]}))
        return pd.concat(parts, ignore_index=True)

    @property
    def tracks(self) -> np.ndarray:
        """Ground-truth track table of all frames (computed on first use)."""
        if self._tracks is None:
            parts = []
            for t in range(self.n_frames):
                ids, rec, _, labels = self._labels(t)
                parts.append(self._rows(t, ids, rec, labels))
            self._tracks = np.concatenate(parts) if parts else np.zeros(0, TRACK_DTYPE)
        return self._tracks

    def __call__(self, frame: int) -> dict:

        ids, rec, deficit, labels = self._labels(frame)
        p = self._p
        clean = self._background * (np.float32(1.0) - np.clip(deficit, -1.0, 0.97)) * self._gain[frame]
        image = apply_camera(sample_rng(self.seed, frame), clean, p["dose"], p["blur"], p["read_noise"])
        rows = self._rows(frame, ids, rec, labels)
        boxes = {
            "x0": rows["x0"], "y0": rows["y0"], "x1": rows["x1"], "y1": rows["y1"], "class": rows["class"],
            "instance": rows["track_id"].astype(np.int32), "size": rows["size"],
        }
        return {
            "image": image,
            "mask": labels,
            "boxes": boxes,
            "tracks": rows,
            "provenance": {"frame": int(frame), "n_defects": int(len(ids)), "gain": float(self._gain[frame])},
        }
