"""Held-out smectic-C films: other physics, other optics, other seeds than any training path.

A test set rendered by the training renderer (:mod:`simgen.simulate.film`) measures how well a
detector learned *that renderer*.  This one differs in every stage a detector could overfit:

* **physics** — superposed ±1 defects are relaxed (:func:`simgen.simulate.frank.relax_frank`)
  under *anisotropic* Frank elasticity, splay ≠ bend (``K1/K3`` log-uniform in ``splay_bend``),
  on a canvas padded by ``pad`` px with a fixed outer ring; the view is cropped from its centre.
  Labels are the plaquette winding numbers of the relaxed field in view (pairs that annihilate
  during relaxation are gone, surviving defects are boxed where they ended up);
* **optics** — reflected light through a polariser and a slightly decrossed analyser computed
  with Jones matrices (:mod:`simgen.simulate.jones`: retardance and diattenuation of the film,
  fast axis along φ) instead of the ``cos² 2φ``-type Schlieren formulas; film thickness in
  terraces of whole smectic layers (:func:`~simgen.simulate.film_camera.terrace_layers`) sets
  the local retardance (∝ layers) and reflection amplitude (∝ layers, thin-film limit);
* **microscope and camera** (:mod:`simgen.simulate.film_camera`) — dust specks, vignetting,
  auto-exposure, Poisson shot noise, read noise, 8-bit quantisation and JPEG compression;
* **seeds** — sample ``i`` draws from ``SeedSequence(seed, spawn_key=(i, HOLDOUT_TAG))``, a
  stream no training sampler (``spawn_key=(i,)``) ever uses.

Boxes are one class, ``defect``, by default (``single_class=False``: ``plus``/``minus``), as in
:class:`simgen.simulate.film.FilmSampler`; the charge of every defect is kept in ``points``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import sample_rng
from simgen.simulate.film import (
    FilmSample,
    FilmSamplerBase,
    defect_boxes,
    random_defect_phase,
    sample_defects,
)
from simgen.simulate.film_camera import camera, dust_transmission, terrace_layers, vignetting
from simgen.simulate.frank import frank_constants, relax_frank
from simgen.simulate.jones import reflected_intensity
from simgen.simulate.winding import find_defects

__all__ = ["HOLDOUT_TAG", "HoldoutFilmConfig", "HoldoutFilmSampler", "simulate_holdout_film"]

#: Extra spawn-key element of every held-out sample's seed ("hold" in ASCII).
HOLDOUT_TAG = 0x686F6C64


def _range(name: str, value, lo: float, hi: float) -> None:
    a, b = value
    if not (np.isfinite(a) and np.isfinite(b) and lo <= a <= b <= hi):
        raise ParameterError(f"{name} must be a range lo <= hi inside [{lo:g}, {hi:g}], got {tuple(value)}")


@dataclass(frozen=True)
class HoldoutFilmConfig:
    """Parameters of one held-out film image; ranges ``(lo, hi)`` are drawn per image.

    Attributes
    ----------
    size : int
        Image side (px).
    n_defects : (int, int)
        Defects placed before relaxation (pairs may annihilate while relaxing).
    min_separation, margin : float
        Minimum defect distance and distance from the image border at placement (px).
    pad : int
        Canvas margin around the view (px); its outer ring is held fixed while relaxing.
    splay_bend : (float, float)
        Range of ``K1/K3`` (log-uniform); ``(1, 1)`` is the one-constant XY energy.
    relax_steps : int
        Gradient-descent steps of the relaxation.
    retardance : (float, float)
        Retardance Γ (radians) of a film of ``layers[0]`` layers; thicker terraces scale it.
    diattenuation : (float, float)
        Diattenuation ``D`` of the film's reflection (see :mod:`simgen.simulate.jones`).
    decross : (float, float)
        Analyser decrossing |δ| in degrees; the sign is random.
    layers : (int, int)
        Thickness of the thinnest terrace in smectic layers.
    terraces : (int, int)
        Number of thickness steps (0: uniform film), each 1–2 layers.
    dust : (int, int)
        Number of dust specks.
    vignetting : (float, float)
        Illumination fall-off at the half-diagonal.
    full_well : (float, float)
        Camera full well (electrons; lower = more shot noise).
    read_noise : (float, float)
        Read noise (electrons).
    jpeg_quality : (int, int)
        JPEG quality; ``(0, 0)`` stores the image without compression.
    box_size : float
        Side of the square box around each defect (clipped to the image).
    single_class : bool
        One class ``defect`` (default) or ``plus``/``minus`` by charge.
    """

    size: int = 256
    n_defects: tuple[int, int] = (2, 12)
    min_separation: float = 16.0
    margin: float = 8.0
    pad: int = 16
    splay_bend: tuple[float, float] = (0.3, 3.0)
    relax_steps: int = 300
    retardance: tuple[float, float] = (0.3, 1.5)
    diattenuation: tuple[float, float] = (0.05, 0.3)
    decross: tuple[float, float] = (1.0, 6.0)
    layers: tuple[int, int] = (4, 12)
    terraces: tuple[int, int] = (0, 3)
    dust: tuple[int, int] = (0, 12)
    vignetting: tuple[float, float] = (0.1, 0.45)
    full_well: tuple[float, float] = (300.0, 3000.0)
    read_noise: tuple[float, float] = (1.0, 6.0)
    jpeg_quality: tuple[int, int] = (35, 90)
    box_size: float = 16.0
    single_class: bool = True

    def validate(self) -> "HoldoutFilmConfig":
        """Raise :class:`ParameterError` for any out-of-range parameter; return self."""
        if int(self.size) != self.size or self.size < 16:
            raise ParameterError(f"size must be an integer >= 16 pixels, got {self.size}")
        if int(self.pad) != self.pad or self.pad < 2:
            raise ParameterError(f"pad must be an integer >= 2 pixels, got {self.pad}")
        lo, hi = self.n_defects
        if lo < 0 or hi < lo:
            raise ParameterError(f"n_defects must be a range 0 <= lo <= hi, got {self.n_defects}")
        if self.min_separation < 0 or self.margin < 0 or 2 * self.margin >= self.size:
            raise ParameterError("min_separation and margin must be >= 0, and the margin must leave room in the image")
        if not 0 < self.box_size <= self.size:
            raise ParameterError(f"box_size must be in (0, size], got {self.box_size}")
        if int(self.relax_steps) != self.relax_steps or self.relax_steps < 0:
            raise ParameterError(f"relax_steps must be an integer >= 0, got {self.relax_steps}")
        _range("splay_bend (K1/K3)", self.splay_bend, 0.01, 100.0)
        _range("retardance", self.retardance, 0.0, 2 * math.pi)
        _range("diattenuation", self.diattenuation, 0.0, 0.95)
        _range("decross (degrees)", self.decross, 0.0, 45.0)
        _range("layers", self.layers, 1, 1000)
        _range("terraces", self.terraces, 0, 20)
        _range("dust", self.dust, 0, 1000)
        _range("vignetting", self.vignetting, 0.0, 0.95)
        _range("full_well", self.full_well, 1.0, 1e7)
        _range("read_noise", self.read_noise, 0.0, 1e4)
        if tuple(self.jpeg_quality) != (0, 0):
            _range("jpeg_quality", self.jpeg_quality, 1, 95)
        return self

    def replace(self, **changes) -> "HoldoutFilmConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _uniform(rng, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1])) if bounds[1] > bounds[0] else float(bounds[0])


def _integer(rng, bounds) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def simulate_holdout_film(rng: np.random.Generator, config: HoldoutFilmConfig | None = None) -> FilmSample:
    """Simulate, relax, render and annotate one held-out film image.

    Parameters
    ----------
    rng : numpy.random.Generator
        The sample's own stream (:class:`HoldoutFilmSampler` uses ``sample_rng(seed, i, HOLDOUT_TAG)``).
    config : HoldoutFilmConfig, optional

    Returns
    -------
    FilmSample
        ``image`` (H, W) float32 in [0, 1], ``phi`` the relaxed c-director field in view,
        ``points`` its winding-number defects, ``boxes`` around them, ``params`` the draws.
    """
    cfg = (config or HoldoutFilmConfig()).validate()
    size, pad = int(cfg.size), int(cfg.pad)
    canvas = size + 2 * pad
    view = (slice(pad, pad + size), slice(pad, pad + size))

    # physics: ideal defects, relaxed under splay != bend elasticity
    n = _integer(rng, cfg.n_defects)
    placed = sample_defects(rng, n, size, cfg.min_separation, cfg.margin)
    placed["x"] += pad
    placed["y"] += pad
    phi0 = float(rng.uniform(0, 2 * np.pi))
    ratio = float(np.exp(_uniform(rng, np.log(cfg.splay_bend))))
    k1, k3 = frank_constants(ratio)
    phi = relax_frank(random_defect_phase(placed, (canvas, canvas), phi0), k1, k3, cfg.relax_steps)[view]
    points = find_defects(phi)

    # optics: Jones-matrix reflection of a terraced film between polariser and decrossed analyser
    base = _integer(rng, cfg.layers)
    layers = terrace_layers(rng, (size, size), base, _integer(rng, cfg.terraces), step=_integer(rng, (1, 2)))
    gamma = _uniform(rng, cfg.retardance)
    diatt = _uniform(rng, cfg.diattenuation)
    decross = math.radians(_uniform(rng, cfg.decross)) * (1 if rng.uniform() < 0.5 else -1)
    thickness = (layers / np.float32(base)).astype(np.float32)
    light = reflected_intensity(phi, gamma * thickness, decross, diatt, amplitude=thickness)

    # microscope and camera
    strength = _uniform(rng, cfg.vignetting)
    centre = rng.uniform(0.35 * size, 0.65 * size, size=2)
    n_dust = _integer(rng, cfg.dust)
    light = light * vignetting((size, size), strength, centre) * dust_transmission(rng, (size, size), n_dust)
    quality = None if tuple(cfg.jpeg_quality) == (0, 0) else _integer(rng, cfg.jpeg_quality)
    cam = {"full_well": _uniform(rng, cfg.full_well), "read_noise": _uniform(rng, cfg.read_noise),
           "black": _uniform(rng, (0.01, 0.06)), "fill": _uniform(rng, (0.6, 0.95))}
    image = camera(rng, light, jpeg_quality=quality, **cam)

    boxes = defect_boxes(points, cfg.box_size, (size, size), cfg.single_class)
    params = {"model": "holdout", "placed_defects": n, "n_defects": int(len(points)), "phi0": phi0,
              "splay_bend": ratio, "retardance": gamma, "diattenuation": diatt, "decross_deg": math.degrees(decross),
              "base_layers": base, "layer_levels": int(len(np.unique(layers))), "dust": n_dust,
              "vignetting": strength, "jpeg_quality": quality or 0, **cam}
    return FilmSample(image=image, phi=phi, points=points, boxes=boxes, params=params)


class HoldoutFilmSampler(FilmSamplerBase):
    """Picklable per-index held-out film generator (the sampler protocol of
    :class:`simgen.simulate.film.FilmSampler`; datasets of kind ``film``).

    Sample ``i`` draws only from ``sample_rng(seed, i, HOLDOUT_TAG)``, never a training stream.

    Parameters
    ----------
    config : HoldoutFilmConfig
    seed : int
        Master seed.
    store_phase : bool
        Include the relaxed phase field φ (radians) in each sample.
    """

    config_class = HoldoutFilmConfig

    def describe(self) -> dict:
        return {"sampler": "film-holdout", "seed_tag": HOLDOUT_TAG, "config": self.config.to_dict(),
                "store_phase": self.store_phase}

    def simulate(self, index: int) -> FilmSample:
        """Sample ``index`` as a :class:`~simgen.simulate.film.FilmSample` (``sampler(index)``: a dict)."""
        return simulate_holdout_film(sample_rng(self.seed, index, HOLDOUT_TAG), self.config)
