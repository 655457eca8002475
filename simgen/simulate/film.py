"""Smectic-C film phase fields with defects that annotate themselves.

Two models produce the c-director angle field φ of a free-standing smectic-C film:

* **random-defect model** — a superposition of point defects,
  ``φ(x, y) = Σ_k s_k · atan2(y − y_k, x − x_k) + φ0`` with charges ``s_k = ±1``,
  a random count, positions drawn uniformly with a minimum separation and a
  border margin, and a random global phase ``φ0``.  Labels are the placed
  defects themselves (exact positions and charges).
* **thermal model** (``LG``, Landau–Ginzburg) — XY dynamics on a periodic lattice
  quenched from a random start (see :mod:`simgen.simulate.xy`); labels come from the
  plaquette winding numbers of the final field (:mod:`simgen.simulate.winding`).

Both are rendered as Schlieren images (:mod:`simgen.simulate.schlieren`) and
boxes of a configurable size are put around every defect for detectors.

Classes.  Boxes have **one class, "defect"**, by default; every defect keeps its charge
(winding number ±1) in the ``points`` table.  ``single_class=False`` labels boxes by sign
(``plus``/``minus``) instead, but the sign is not identifiable from the texture around a
defect: every regime renders ``f(2φ)`` with ``f`` symmetric about some angle, so an isolated
+1 defect with global phase c, ``φ = θ + c``, renders exactly like an isolated −1 defect
``φ = −θ + c'`` with another phase c' (``c' = −c`` in the decrossed regime at δ = 0), and the
two are mirror images of each other across any line through the core.  With a uniformly random global phase the two classes look
the same locally; only the far field (how brushes connect neighbouring defects) carries
the sign, and a mirror flip swaps it (so flip augmentation contradicts sign labels).

Simulation-time augmentation codes (:meth:`FilmSampler.with_overrides`): ``LG`` selects
the thermal model, ``RD`` randomizes the defect number (random model: the count; thermal
model: the correlation length of the quench's start, i.e. the initial defect density),
``LR`` multiplies the thermal run length by a log-uniform factor, ``DC`` offsets the
decross angle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from simgen.errors import ParameterError, SpecError
from simgen.rng import check_seed, sample_rng
from simgen.simulate.schlieren import REGIMES, schlieren
from simgen.simulate.winding import DEFECT_DTYPE, find_defects
from simgen.simulate.xy import BACKENDS

__all__ = [
    "FilmConfig",
    "FilmSample",
    "FilmSampler",
    "FilmSamplerBase",
    "film_defect_count",
    "sample_defects",
    "random_defect_phase",
    "defect_boxes",
    "simulate_film",
    "FILM_CLASSES",
    "BOX_DTYPE",
]

MODELS = ("random", "thermal")
#: Class names of two-class film boxes (``single_class=False``): class 0 = +1 defect, class 1 = −1 defect.
FILM_CLASSES = ("plus", "minus")
#: Class name of single-class film boxes (the default).
DEFECT_CLASS = "defect"
BOX_DTYPE = np.dtype([("x0", "f4"), ("y0", "f4"), ("x1", "f4"), ("y1", "f4"), ("class", "i2")])


@dataclass(frozen=True)
class FilmConfig:
    """Parameters of one film image (all lengths in pixels, angles in radians).

    Attributes
    ----------
    model : {"random", "thermal"}
    size : int
        Image side (the thermal lattice is ``size // upsample`` sites).
    n_defects : (int, int)
        Inclusive range of the defect count of the random-defect model (the RD code).
    min_separation : float
        Minimum distance between two placed defects (random model).
    margin : float
        Minimum distance of a placed defect from the image border (random model).
    neutral : bool
        Random model: force equal numbers of +1 and −1 defects (odd counts get one extra).
    decross : float
        Decross angle δ of the Schlieren rendering (the DC code).
    regime : {"decrossed", "crossed", "analyzer"}
        Schlieren regime (see :mod:`simgen.simulate.schlieren`).
    anisotropy : float
        Film cross-polarised amplitude ρ of the ``"analyzer"`` regime.
    box_size : float
        Side of the square box put around every defect (clipped to the image).
    single_class : bool
        True (default): every box is class 0, ``"defect"`` (the charge stays in ``points``).
        False: class by sign, ``"plus"``/``"minus"`` — see the module docstring for why the
        sign is not identifiable from a single frame.
    steps, dt, kappa, temperature : int, float, float, float
        Thermal model: number of steps after the quench (LR multiplies it), time step,
        coupling κ and temperature T (noise variance 2T/Δt per step).
    quench_length : float
        Thermal model: correlation length ξ (lattice sites) of the quench's random start;
        0 = fully random (see :func:`simgen.simulate.xy.random_start`).  RD draws it per sample.
    backend : {"numpy", "numba", "jax"}
        Compute backend: thermal dynamics (all three) and the random-defect field
        (numba kernel; numpy otherwise).  Thermal noise streams differ between backends.
    upsample : int
        Thermal model: render at ``upsample`` pixels per lattice site (bilinear in cos φ, sin φ).
    """

    model: str = "random"
    size: int = 256
    n_defects: tuple[int, int] = (2, 12)
    min_separation: float = 12.0
    margin: float = 8.0
    neutral: bool = False
    decross: float = 0.0
    regime: str = "decrossed"
    anisotropy: float = 0.2
    box_size: float = 16.0
    single_class: bool = True
    steps: int = 200
    dt: float = 0.1
    kappa: float = 1.0
    temperature: float = 0.05
    backend: str = "numba"
    upsample: int = 1
    quench_length: float = 0.0

    def validate(self) -> "FilmConfig":
        """Raise :class:`ParameterError` for any out-of-range parameter; return self."""

        if self.model not in MODELS:
            raise ParameterError(f"unknown film model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.regime not in REGIMES:
            raise ParameterError(f"unknown Schlieren regime {self.regime!r}; choose one of {', '.join(REGIMES)}")
        if self.backend not in BACKENDS:
            raise ParameterError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if int(self.size) != self.size or self.size < 8:
            raise ParameterError(f"size must be an integer >= 8 pixels, got {self.size}")
        lo, hi = self.n_defects
        if lo < 0 or hi < lo:
            raise ParameterError(f"n_defects must be a range 0 <= lo <= hi, got {self.n_defects}")
        if self.min_separation < 0 or self.margin < 0:
            raise ParameterError("min_separation and margin must be >= 0")
        if 2 * self.margin >= self.size:
            raise ParameterError(f"margin {self.margin} leaves no room in a {self.size}-pixel image")
        if not self.anisotropy > 0:
            raise ParameterError(f"anisotropy must be > 0, got {self.anisotropy}")
        if self.box_size <= 0:
            raise ParameterError(f"box_size must be > 0, got {self.box_size}")
        if self.box_size > self.size:
            raise ParameterError(f"box_size {self.box_size} is larger than the image ({self.size})")
        if self.steps < 0 or self.dt <= 0 or self.kappa <= 0 or self.temperature < 0:
            raise ParameterError("thermal model needs steps >= 0, dt > 0, kappa > 0, temperature >= 0")
        if self.dt * self.kappa > 0.25:
            # explicit Euler (gradient descent) on the XY energy is stable for dt < 2 / λmax with
            # λmax = 8κ, the largest eigenvalue of the coupling Hessian on a square lattice
            raise ParameterError(f"dt*kappa = {self.dt * self.kappa:g} > 0.25: the explicit update is unstable")
        if not (np.isfinite(self.quench_length) and self.quench_length >= 0):
            raise ParameterError(f"quench_length must be a finite number >= 0 sites, got {self.quench_length}")
        if self.upsample < 1 or self.size % self.upsample:
            raise ParameterError(f"upsample must be a positive divisor of size, got {self.upsample}")
        if self.model == "thermal" and self.size // self.upsample < 4:
            raise ParameterError("thermal lattice must have at least 4x4 sites")
        return self

    def replace(self, **changes) -> "FilmConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["n_defects"] = list(self.n_defects)
        return d


@dataclass
class FilmSample:
    """One rendered film image and its labels.

    Attributes
    ----------
    image : (H, W) float32 in [0, 1]
    phi : (H, W) float32, radians
    points : structured array (x, y, charge)
    boxes : structured array (x0, y0, x1, y1, class)
    params : dict of the random draws (count, φ0, ...) for provenance
    """

    image: np.ndarray
    phi: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    params: dict = field(default_factory=dict)


def sample_defects(
    rng: np.random.Generator,
    n: int,
    size: int | tuple[int, int],
    min_separation: float = 12.0,
    margin: float = 8.0,
    neutral: bool = False,
    max_tries: int = 200,
) -> np.ndarray:
    """Draw ``n`` defect positions and charges.

    Positions are uniform in ``[margin, W - margin] x [margin, H - margin]``, accepted
    only if at least ``min_separation`` from every earlier defect.

    Returns
    -------
    structured array (x, y, charge) of length ``n``

    Raises
    ------
    ParameterError
        If ``n`` defects cannot be placed (the image is too crowded).
    """
    h, w = (size, size) if np.isscalar(size) else size
    out = np.empty(n, DEFECT_DTYPE)
    if n == 0:
        return out
    placed = np.empty((n, 2))
    k = 0
    tries = 0
    while k < n:
        if tries >= max_tries:
            raise ParameterError(
                f"cannot place {n} defects {min_separation:g} px apart in a {w}x{h} image "
                f"with margin {margin:g}; lower the defect count or the separation"
            )
        tries += 1
        cand = rng.uniform((margin, margin), (w - margin, h - margin), size=(4 * (n - k) + 8, 2))
        for p in cand:  # sequential acceptance over a handful of candidates (not over pixels)
            if k == 0 or np.min(np.hypot(*(placed[:k] - p).T)) >= min_separation:
                placed[k] = p
                k += 1
                if k == n:
                    break
    out["x"], out["y"] = placed[:, 0], placed[:, 1]
    if neutral:
        charges = np.where(np.arange(n) < (n + 1) // 2, 1, -1)
        out["charge"] = rng.permutation(charges)
    else:
        out["charge"] = rng.choice(np.array([-1, 1], np.int8), size=n)
    return out


def random_defect_phase(
    defects: np.ndarray, shape: tuple[int, int], phi0: float = 0.0
) -> np.ndarray:
    """Phase field of a superposition of point defects.

    ``φ(x, y) = Σ_k s_k atan2(y − y_k, x − x_k) + φ0`` evaluated at pixel centres
    ``(c + 0.5, r + 0.5)``, returned wrapped into (−π, π].

    Parameters
    ----------
    defects : structured array (x, y, charge)
    shape : (H, W)
    phi0 : float
        Global phase (radians).

    Returns
    -------
    (H, W) float32 array

    Notes
    -----
    Evaluated as the argument of ``e^{iφ0} Π_k (z − z_k)^{s_k}`` — one complex
    multiply per defect and a single ``angle`` at the end instead of one
    ``atan2`` per defect; factors are renormalised every few defects so the
    product never over- or underflows in single precision.
    """
    h, w = shape
    xs = np.arange(w, dtype=np.float32) + np.float32(0.5)
    ys = np.arange(h, dtype=np.float32) + np.float32(0.5)
    prod = np.full((h, w), np.complex64(np.exp(1j * phi0)))
    for k, d in enumerate(defects):
        dz = (xs - np.float32(d["x"]))[None, :] + 1j * (ys - np.float32(d["y"]))[:, None]
        prod *= dz.astype(np.complex64) if d["charge"] > 0 else np.conj(dz).astype(np.complex64)
        if k % 4 == 3:
            prod /= np.abs(prod)
    return np.angle(prod).astype(np.float32)


def defect_boxes(points: np.ndarray, box_size: float, shape: tuple[int, int], single_class: bool = False) -> np.ndarray:
    """Square boxes of side ``box_size`` centred on each defect, clipped to the image.

    Class 0 for charge > 0 and 1 for charge < 0 (or 0 for all with ``single_class``).
    """
    h, w = shape
    half = box_size / 2.0
    boxes = np.empty(len(points), BOX_DTYPE)
    boxes["x0"] = np.clip(points["x"] - half, 0, w)
    boxes["y0"] = np.clip(points["y"] - half, 0, h)
    boxes["x1"] = np.clip(points["x"] + half, 0, w)
    boxes["y1"] = np.clip(points["y"] + half, 0, h)
    boxes["class"] = 0 if single_class else np.where(points["charge"] > 0, 0, 1)
    return boxes


def film_defect_count(config: FilmConfig, density: float) -> int:
    """Defects of the random model for ``density`` per 10^4 px^2 of the usable area, capped to what fits.

    The usable area is the image minus its ``margin``; the cap keeps defects of diameter
    ``min_separation`` below 30 % of it.
    """
    side = max(config.size - 2 * config.margin, 0.0)
    area = side * side
    n = int(round(density * area / 1e4))
    if config.min_separation > 0:
        cap = int(0.3 * area / (np.pi * (config.min_separation / 2) ** 2))
        n = min(n, max(cap, 0))
    return max(n, 0)


def _upsample_phase(phi: np.ndarray, factor: int) -> np.ndarray:
    """Periodic bilinear upsampling of an angle field through (cos φ, sin φ)."""
    from scipy.ndimage import zoom

    if factor == 1:
        return phi
    c = zoom(np.cos(phi), factor, order=1, mode="grid-wrap", grid_mode=True)
    s = zoom(np.sin(phi), factor, order=1, mode="grid-wrap", grid_mode=True)
    return np.arctan2(s, c).astype(np.float32)


def simulate_film(rng: np.random.Generator, config: FilmConfig | None = None, **overrides) -> FilmSample:
    """Simulate, render and annotate one film image.

    Parameters
    ----------
    rng : numpy.random.Generator
        The sample's own random stream (see :func:`simgen.rng.sample_rng`).
    config : FilmConfig, optional
        Parameters; keyword ``overrides`` replace individual fields.

    Returns
    -------
    FilmSample
    """
    config = (config or FilmConfig()).replace(**overrides).validate()
    size = int(config.size)
    params: dict = {"model": config.model}
    if config.model == "random":
        lo, hi = config.n_defects
        n = int(rng.integers(lo, hi + 1))
        points = sample_defects(rng, n, size, config.min_separation, config.margin, config.neutral)
        phi0 = float(rng.uniform(0, 2 * np.pi))
        if config.backend == "numba":  # same field to ~1e-6 rad, ~10x faster
            from simgen.simulate.kernels_numba import random_defect_phase_numba

            phi = random_defect_phase_numba(points["x"], points["y"], points["charge"], (size, size), phi0)
        else:
            phi = random_defect_phase(points, (size, size), phi0)
        params.update(n_defects=n, phi0=phi0)
    else:
        from simgen.simulate.xy import quench

        lattice = size // config.upsample
        noise_seed = int(rng.integers(0, 2**63 - 1))
        snap = quench(
            lattice,
            [config.steps],
            dt=config.dt,
            kappa=config.kappa,
            temperature=config.temperature,
            seed=noise_seed,
            backend=config.backend,
            correlation=config.quench_length,
        )[0]
        points = find_defects(snap, periodic=True)
        points["x"] *= config.upsample
        points["y"] *= config.upsample
        phi = _upsample_phase(snap.astype(np.float32), config.upsample)
        params.update(noise_seed=noise_seed, n_defects=int(len(points)), steps=config.steps,
                      quench_length=config.quench_length)
    image = schlieren(phi, config.decross, config.regime, config.anisotropy)
    boxes = defect_boxes(points, config.box_size, (size, size), config.single_class)
    return FilmSample(image=image, phi=phi.astype(np.float32, copy=False), points=points, boxes=boxes, params=params)


class FilmSamplerBase:
    """What every film sampler shares: ``kind = "film"``, the checked ``config``, ``seed`` and
    ``store_phase``, the class names and the sample dict.  A subclass sets ``config_class`` and
    implements ``simulate(index) -> FilmSample`` (and ``describe``)."""

    kind = "film"
    config_class: type

    def __init__(self, config=None, seed: int = 0, store_phase: bool = False):
        self.config = (config or self.config_class()).validate()
        self.seed = check_seed(seed)
        self.store_phase = bool(store_phase)

    @property
    def class_names(self) -> list[str]:
        return [DEFECT_CLASS] if self.config.single_class else list(FILM_CLASSES)

    def simulate(self, index: int) -> FilmSample:
        raise NotImplementedError

    def __call__(self, index: int) -> dict:
        s = self.simulate(index)
        out = {
            "image": s.image,
            "points": s.points,
            "boxes": s.boxes,
            "provenance": {"index": int(index), **s.params},
        }
        if self.store_phase:
            out["phase"] = s.phi
        return out


class FilmSampler(FilmSamplerBase):
    """Picklable per-index film generator: ``sampler(i)`` → one annotated sample.

    Sample ``i`` draws only from ``sample_rng(seed, i)``, so any subset of indices can
    be produced in any order, by any number of workers, with identical results.

    Parameters
    ----------
    config : FilmConfig
    seed : int
        Master seed.
    store_phase : bool
        Include the phase field φ in each sample (lets DC re-render later).

    Notes
    -----
    Every sampler (film, TEM, ...) follows the same protocol: attributes ``kind`` and
    ``class_names``, ``describe()`` returning a JSON-able description of the generator,
    and ``__call__(index)`` returning a dict with ``image`` and any of ``points``,
    ``boxes``, ``mask``, ``phase``, ``tables``, ``provenance``.
    """

    config_class = FilmConfig

    def describe(self) -> dict:
        return {"sampler": "film", "config": self.config.to_dict(), "store_phase": self.store_phase}

    # -- simulation-time augmentation codes (simgen.augment.AugmentedSampler) ----------
    def check_overrides(self, codes) -> None:
        """Raise :class:`SpecError` for codes that do not act at simulation time on films.

        ``LG``, ``LR``, ``RD`` and ``DC`` work with either configured model (``LG`` and
        ``LR`` select the thermal one).
        """
        unknown = [c for c in codes if c not in ("LG", "LR", "RD", "DC")]
        if unknown:
            raise SpecError(f"{'+'.join(unknown)}: not a simulation-time code of the film sampler (LG, LR, RD, DC)")

    def with_overrides(self, params: dict) -> "FilmSampler":
        """The sampler of one sample's simulation-time draws ``params`` (see :mod:`simgen.augment.pipeline`).

        Parameters
        ----------
        params : dict
            ``{"LG": {}, "LR": {"factor": x}, "RD": {"density": per 10^4 px^2, "quench": sites},
            "DC": {"angle": radians}}``, any subset.

        Returns
        -------
        FilmSampler
            Same seed: ``LG`` sets ``model="thermal"``; ``LR`` multiplies the thermal run length
            (at least 1 step) and, as long runs exist only for the thermal model, implies ``LG``;
            ``DC`` adds its angle to the decross angle; ``RD`` fixes the defect count of the
            random model (:func:`film_defect_count`) or the quench correlation length of the
            thermal model.
        """
        cfg = self.config
        changes: dict = {}
        model = "thermal" if "LG" in params or "LR" in params else cfg.model
        if model != cfg.model:
            changes["model"] = model
        if "DC" in params:
            changes["decross"] = cfg.decross + params["DC"]["angle"]
        if "RD" in params:
            if model == "random":
                n = film_defect_count(cfg, params["RD"]["density"])
                changes["n_defects"] = (n, n)
            else:
                changes["quench_length"] = float(params["RD"]["quench"])
        if "LR" in params:
            changes["steps"] = max(1, int(round(cfg.steps * params["LR"]["factor"])))
        return FilmSampler(cfg.replace(**changes), seed=self.seed, store_phase=self.store_phase)

    def simulate(self, index: int) -> FilmSample:
        """Sample ``index`` as a :class:`FilmSample` (``sampler(index)`` gives it as a dict)."""
        return simulate_film(sample_rng(self.seed, index), self.config)
