"""Videos of a coarsening smectic-C film with ground-truth defect tracks.

One thermal quench of the Landau–Ginzburg XY model (:mod:`simgen.simulate.xy`) filmed at
log-spaced times: frame ``k`` is the field after ``steps[k]`` update steps
(:func:`frame_steps`, ``t_min … t_max``, geometric), rendered as a Schlieren image
exactly like ``simgen simulate film --model thermal`` (:func:`~simgen.simulate.schlieren.schlieren`,
no camera noise), with the plaquette winding-number defects (:func:`~simgen.simulate.winding.find_defects`)
as labels.

**Ground-truth tracks.**  Between frames the field is also sampled every ``link_every`` steps
(the *linking snapshots*, a superset of the frame times).  The defects of all snapshots are
linked with trackpy (``trackpy.link``, no memory, ``search_range`` px), each sign on its own,
so a track never changes charge; a ± pair that annihilates ends both tracks.  The frame rows
of those tracks are the stored track table.  Because the snapshots are dense, a defect moves
less than the search range from one snapshot to the next (guaranteed by the linker) even when
frames are far apart in time.

Limits: the lattice is periodic but trackpy is not — a defect crossing the seam ends its track
there and starts a new one (cause ``"seam"``).  A track that ends without an opposite-sign
partner ending next to it in the same snapshot is marked ``"other"`` (thermal pair or a
fast core move beyond the search range).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import check_seed, sample_rng
from simgen.simulate.film import DEFECT_CLASS, FilmConfig, _upsample_phase
from simgen.simulate.schlieren import schlieren
from simgen.simulate.winding import find_defects
from simgen.simulate.xy import evolve, random_start

__all__ = ["FilmVideoConfig", "FilmVideoSampler", "frame_steps", "link_defects", "FILM_END_CAUSES"]

#: Why a film track ended (``cause`` column of ``/video/lifetimes``).
FILM_END_CAUSES = ("alive", "annihilated", "seam", "other")

#: One row of the ground-truth track table (per frame, per defect).
FILM_TRACK_DTYPE = np.dtype(
    [("sample", "i8"), ("track_id", "i8"), ("x", "f4"), ("y", "f4"), ("x0", "f4"), ("y0", "f4"),
     ("x1", "f4"), ("y1", "f4"), ("class", "i2"), ("size", "f4"), ("charge", "i1")]
)


def frame_steps(frames: int, t_min: int, t_max: int) -> np.ndarray:
    """Strictly increasing integer step counts, geometrically spaced from ``t_min`` to ``t_max``.

    ``round(geomspace(t_min, t_max, frames))`` made strictly increasing (early frames closer
    than one step are pushed apart by one step each); needs ``frames <= t_max - t_min + 1``.

    Returns
    -------
    (frames,) int64 array with ``[0] == t_min`` and ``[-1] == t_max``
    """
    if int(frames) != frames or frames < 2:
        raise ParameterError(f"frames must be an integer >= 2, got {frames}")
    if int(t_min) != t_min or int(t_max) != t_max or t_min < 1 or t_max <= t_min:
        raise ParameterError(f"need integer step counts 1 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if frames > t_max - t_min + 1:
        raise ParameterError(f"{frames} frames do not fit between step {t_min} and step {t_max} (one step apart)")
    t = np.rint(np.geomspace(t_min, t_max, int(frames))).astype(np.int64)
    for k in range(1, len(t)):
        t[k] = max(t[k], t[k - 1] + 1)
    t[-1] = t_max
    for k in range(len(t) - 2, -1, -1):
        t[k] = min(t[k], t[k + 1] - 1)
    return t


@dataclass(frozen=True)
class FilmVideoConfig:
    """Parameters of one coarsening film video (times in update steps, lengths in px).

    Attributes
    ----------
    film : FilmConfig
        Lattice and rendering: ``size``, ``upsample``, ``dt``, ``kappa``, ``temperature``,
        ``backend``, ``quench_length``, Schlieren ``regime``/``decross``/``anisotropy``,
        ``box_size`` (its ``model`` must be ``"thermal"``; ``steps`` is not used).
    frames : int
        Number of frames.
    t_min, t_max : int
        Steps after the quench of the first and last frame.
    link_every : int
        Steps between the snapshots the ground truth is linked on (smaller: safer, slower).
    search_range : float
        Largest move of a defect between linking snapshots (px of the image).
    """

    film: FilmConfig = field(default_factory=lambda: FilmConfig(model="thermal", size=256))
    frames: int = 64
    t_min: int = 20
    t_max: int = 2000
    link_every: int = 2
    search_range: float = 3.0

    def validate(self) -> FilmVideoConfig:
        self.film.validate()
        if self.film.model != "thermal":
            raise ParameterError("film videos need the thermal model (a quench to film)")
        frame_steps(self.frames, self.t_min, self.t_max)
        if int(self.link_every) != self.link_every or self.link_every < 1:
            raise ParameterError(f"link_every must be an integer >= 1 step, got {self.link_every}")
        if not (math.isfinite(self.search_range) and self.search_range > 0):
            raise ParameterError(f"search_range must be > 0 px, got {self.search_range}")
        if self.search_range >= self.film.size / 4:
            raise ParameterError(f"search_range {self.search_range:g} px is too large for a {self.film.size}-px film")
        return self

    def replace(self, **changes) -> FilmVideoConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "film"}
        d["film"] = self.film.to_dict()
        return d


def link_defects(points, search_range: float):
    """Link defects snapshot to snapshot with trackpy, each charge sign on its own.

    Parameters
    ----------
    points : DataFrame
        ``sample`` (snapshot index), ``x, y`` (px) and ``charge`` (±1).
    search_range : float
        Largest move between consecutive snapshots (px); no memory (a defect never blinks).

    Returns
    -------
    DataFrame
        ``points`` with an int64 ``track_id`` (1, 2, … in order of first appearance: by
        snapshot, then by the input order), sorted by ``sample`` then input order.

    Raises
    ------
    ParameterError
        When trackpy's subnetworks stay too large even with its adaptive search (down to half
        the range): too many defects within the search range.
    """
    import pandas as pd
    import trackpy
    from trackpy.linking.utils import SubnetOversizeException

    trackpy.quiet()
    df = points.reset_index(drop=True).assign(_order=np.arange(len(points)))
    if len(df) == 0:
        return df.drop(columns="_order").assign(track_id=np.zeros(0, np.int64))
    parts = []
    for sign in (1, -1):
        sub = df[df["charge"] == sign]
        if len(sub):
            try:
                linked = trackpy.link(sub, float(search_range), memory=0, pos_columns=["x", "y"], t_column="sample",
                                      link_strategy="nonrecursive", adaptive_stop=0.5, adaptive_step=0.9)
            except SubnetOversizeException:
                raise ParameterError(f"trackpy cannot link the defects at search range {search_range:g} px "
                                     "(subnetworks too large); lower the search range or link more often") from None
            parts.append(linked.assign(_key=sign * (linked["particle"].to_numpy(np.int64) + 1)))
    out = pd.concat(parts).sort_values(["sample", "_order"], kind="stable")
    out["track_id"] = pd.factorize(out["_key"].to_numpy())[0].astype(np.int64) + 1
    return out.drop(columns=["particle", "_key", "_order"]).reset_index(drop=True)


@dataclass
class _Run:
    phases: np.ndarray  # (frames, L, L) float32
    steps: np.ndarray  # (frames,) steps of the frames
    snapshot_steps: np.ndarray  # steps of the linking snapshots
    fine: object  # DataFrame: linked defects of every snapshot (sample = snapshot index)


def _simulate(config: FilmVideoConfig, rng: np.random.Generator) -> _Run:
    f = config.film
    lattice = f.size // f.upsample
    noise_seed = int(rng.integers(0, 2**63 - 1))
    steps = frame_steps(config.frames, config.t_min, config.t_max)
    grid = np.arange(int(steps[0]), int(steps[-1]) + 1, int(config.link_every))
    snaps = np.union1d(grid, steps)
    phi = random_start(lattice, rng, f.quench_length)
    phases = np.empty((len(steps), lattice, lattice), np.float32)
    import pandas as pd

    rows, done, k = [], 0, 0
    kw = {"dt": f.dt, "kappa": f.kappa, "temperature": f.temperature, "seed": noise_seed, "backend": f.backend}
    for s_idx, s in enumerate(snaps):
        phi = evolve(phi, int(s) - done, step0=done, **kw)
        done = int(s)
        pts = find_defects(phi, periodic=True)
        rows.append(pd.DataFrame({"sample": np.full(len(pts), s_idx, np.int64),
                                  "x": pts["x"].astype(np.float64) * f.upsample,
                                  "y": pts["y"].astype(np.float64) * f.upsample,
                                  "charge": pts["charge"].astype(np.int8)}))
        if k < len(steps) and s == steps[k]:
            phases[k] = phi
            k += 1
    fine = link_defects(pd.concat(rows, ignore_index=True), config.search_range)
    return _Run(phases=phases, steps=steps, snapshot_steps=snaps, fine=fine)


def _end_causes(ends, last_snap: int, radius: float, border: float, size: int) -> np.ndarray:
    """Cause index (:data:`FILM_END_CAUSES`) of every track from its last row ``ends`` (x, y, charge, sample)."""
    from scipy.spatial import cKDTree

    s = ends["sample"].to_numpy(np.int64)
    x, y = ends["x"].to_numpy(np.float64), ends["y"].to_numpy(np.float64)
    q = ends["charge"].to_numpy()
    cause = np.where(s == last_snap, 0, 3).astype(np.int8)
    for snap in np.unique(s[s < last_snap]):
        idx = np.flatnonzero(s == snap)
        plus, minus = idx[q[idx] > 0], idx[q[idx] < 0]
        if len(plus) and len(minus):  # an opposite-sign track ending next to it: annihilated
            for a, b in ((plus, minus), (minus, plus)):
                d, _ = cKDTree(np.c_[x[b], y[b]]).query(np.c_[x[a], y[a]], k=1)
                cause[a[d <= radius]] = 1
    seam = (cause == 3) & (np.minimum.reduce([x, y, size - x, size - y]) <= border)
    cause[seam] = 2
    return cause


def _lifetimes(run: _Run, config: FilmVideoConfig) -> dict:
    """Births/deaths in frames and end causes of the tracks present in at least one frame."""
    fine = run.fine
    frame_of_snap = np.searchsorted(run.steps, run.snapshot_steps)  # the frame at (or after) each snapshot
    is_frame = np.isin(run.snapshot_steps, run.steps)
    ends = fine.groupby("track_id").tail(1).set_index("track_id")
    up = config.film.upsample
    cause = _end_causes(ends, len(run.snapshot_steps) - 1, 2 * config.search_range + 2 * up,
                        config.search_range + up, config.film.size)
    cause = dict(zip(ends.index.to_numpy().tolist(), cause.tolist()))
    in_frames = fine[is_frame[fine["sample"].to_numpy()]].groupby("track_id")["sample"]
    first_f, last_f = in_frames.min(), in_frames.max()
    ids = first_f.index.to_numpy(np.int64)
    return {
        "track_id": ids,
        "birth": frame_of_snap[first_f.to_numpy()].astype(np.int64),
        "death": frame_of_snap[last_f.to_numpy()].astype(np.int64),
        "cause": np.array([cause[i] for i in ids.tolist()], np.int8),
        "merged_into": np.full(len(ids), -1, np.int64),
    }


class FilmVideoSampler:
    """A coarsening film video as a sampler: ``sampler(frame)`` renders one annotated frame.

    The quench is simulated once at construction from ``sample_rng(seed, 0, 1)`` (start field
    and noise key); frames are rendered on demand.  Writes with
    :func:`simgen.datasets.video_io.write_video` like a TEM video (``kind = "video"``).

    Attributes
    ----------
    n_frames, n_tracks : int
    steps : (n_frames,) int64
        Update steps after the quench of every frame.
    times : (n_frames,) float64
        ``steps · dt`` (time units of the dynamics).
    tracks : structured array ``FILM_TRACK_DTYPE`` of all frames
    link_table : DataFrame
        The linked defects of every linking snapshot (``sample`` = snapshot index,
        ``x, y, charge, track_id``); ``snapshot_steps`` gives their steps.
    lifetimes : dict of arrays ``track_id, birth, death, cause, merged_into`` (frames, inclusive;
        ``cause`` indexes :data:`FILM_END_CAUSES`)
    """

    kind = "video"
    end_causes = FILM_END_CAUSES

    def __init__(self, config: FilmVideoConfig | None = None, seed: int = 0):
        self.config = (config or FilmVideoConfig()).validate()
        self.seed = check_seed(seed)
        self._run = _simulate(self.config, sample_rng(self.seed, 0, 1))
        self.steps = self._run.steps
        self.times = self.steps.astype(np.float64) * self.config.film.dt
        self.snapshot_steps = self._run.snapshot_steps
        self.link_table = self._run.fine
        self.n_frames = int(self.config.frames)
        self.tracks = self._frame_rows()
        self.lifetimes = _lifetimes(self._run, self.config)
        self.n_tracks = int(len(self.lifetimes["track_id"]))

    @property
    def class_names(self) -> list[str]:
        return [DEFECT_CLASS]

    @property
    def video_arrays(self) -> dict[str, np.ndarray]:
        """Extra per-frame arrays written under ``/video``: ``step`` and ``time``."""
        return {"step": self.steps, "time": self.times}

    def __len__(self) -> int:
        return self.n_frames

    def describe(self) -> dict:
        return {"sampler": "film_video", "config": self.config.to_dict(), "steps": self.steps.tolist()}

    def phase(self, frame: int) -> np.ndarray:
        """Phase field φ of one frame on the lattice (``(L, L)`` float32 radians, before upsampling)."""
        if not 0 <= frame < self.n_frames:
            raise ParameterError(f"frame {frame} out of range for {self.n_frames} frames")
        return self._run.phases[frame]

    def _frame_rows(self) -> np.ndarray:
        fine = self.link_table
        snap_to_frame = {int(np.searchsorted(self.snapshot_steps, s)): k for k, s in enumerate(self.steps)}
        sel = fine[fine["sample"].isin(list(snap_to_frame))]
        rows = np.zeros(len(sel), FILM_TRACK_DTYPE)
        rows["sample"] = [snap_to_frame[int(s)] for s in sel["sample"]]
        rows["track_id"] = sel["track_id"].to_numpy()
        rows["x"], rows["y"] = sel["x"].to_numpy(), sel["y"].to_numpy()
        size, half = self.config.film.size, self.config.film.box_size / 2
        rows["x0"], rows["x1"] = np.clip(rows["x"] - half, 0, size), np.clip(rows["x"] + half, 0, size)
        rows["y0"], rows["y1"] = np.clip(rows["y"] - half, 0, size), np.clip(rows["y"] + half, 0, size)
        rows["size"] = self.config.film.box_size
        rows["charge"] = sel["charge"].to_numpy()
        return rows

    def __call__(self, frame: int) -> dict:
        f = self.config.film
        phi = _upsample_phase(self.phase(frame), f.upsample)
        image = schlieren(phi, f.decross, f.regime, f.anisotropy)
        t = self.tracks
        lo, hi = np.searchsorted(t["sample"], [frame, frame + 1])
        rows = t[lo:hi]
        boxes = {"x0": rows["x0"], "y0": rows["y0"], "x1": rows["x1"], "y1": rows["y1"], "class": rows["class"],
                 "instance": rows["track_id"].astype(np.int32), "size": rows["size"]}
        points = {"x": rows["x"], "y": rows["y"], "charge": rows["charge"]}
        return {
            "image": image,
            "points": points,
            "boxes": boxes,
            "tracks": rows,
            "provenance": {"frame": int(frame), "step": int(self.steps[frame]), "time": float(self.times[frame]),
                           "n_defects": int(len(rows))},
        }
