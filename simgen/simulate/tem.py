"""Bright-field TEM images of irradiation defects that annotate themselves.

Per image the sampler draws a *population* of defects and renders it on a
specimen background (see :mod:`simgen.simulate.tem_render` for the image model):

* **classes** — physical kinds ``black_dot`` (unresolved clusters: filled dark
  blobs, black-white lobes), ``loop111`` and ``loop100`` (dislocation loops on
  {111} / {100} habit planes: dark rims of finite width with a lighter interior
  once resolved).  Label names are configurable (``class_names``) or collapsed to
  one class (``single_class``).
* **sizes** — log-normal diameters in nm (median ``size_nm`` for ``loop111``,
  scaled per kind by :data:`KIND_SIZE`, log-sd ``size_sigma``, per-image jitter of
  the median ``size_jitter``), converted with ``pixel_nm``.
* **density** — areal density in defects per µm², log-uniform per image in the
  ``density`` range; the count is Poisson.
* **arrangement** — ``uniform`` (Poisson), ``clustered`` (Thomas process),
  ``lines`` (decorating the rendered dislocation lines) or ``mixed``.
* **projected shape** — a loop of radius ``r`` on a habit plane of unit normal
  ``n`` (lab frame, beam along z) projects to an ellipse with semi-axes ``r`` and
  ``r |n_z|``, major axis perpendicular to ``(n_x, n_y)``.  Per image the crystal
  sits near a low-index zone axis (``zones``) tilted by up to ``tilt_max`` and
  rotated in-plane at random; every loop picks one variant of its habit-plane
  family.  Hence ⟨111⟩ loops are ellipses at a few shared orientations while
  ⟨100⟩ loops are round (normal along the beam) or edge-on lines.
* **overlap** — ``avoid`` (masks at least ``min_gap`` px apart) or ``allow``
  (overlap up to ``max_overlap`` of either mask; the later defect is on top).

Labels come from the geometry itself: the instance label image is the union of
the ellipses ``ρ <= 1`` of the accepted defects, tight boxes are exactly the
bounding boxes of each instance's pixels in that label image (``box_margin``
widens the ``x0..y1`` columns, the ``tx0..ty1`` columns keep the tight box),
``size`` is the major axis ``2a`` in pixels.  A candidate whose mask is less than
``min_visible`` inside the field, or that violates the overlap rule, is neither
rendered nor labelled; with the defaults every rendered defect is labelled and every
label is a rendered defect.  Dislocation lines, bend contours, thickness fringes,
streaks, dark patches, mottle and dirt specks are rendered but never labelled (hard
negatives; see :mod:`simgen.simulate.tem_structures`).

Labels can follow what an annotator sees (:func:`annotate_visible`, on in the presets):
``label_extent`` makes the outline the defect's visible dark extent, ``min_snr`` drops
the labels of defects too faint to see against their local background on the final
image (they stay rendered), ``lookalikes`` flattens (or labels) unlabelled dark blobs
that look like defects; :func:`simgen.simulate.tem_labels.label_noise` measures both
kinds of label noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as _ndi

from simgen.errors import ParameterError
from simgen.simulate.tem_labels import _default_sigmas, _free_mask, find_lookalikes, scale_space, visibility
from simgen.simulate.tem_render import (
    DEFECT_DTYPE,
    apply_camera,
    random_curves,
    render_patch,
)
from simgen.simulate.tem_structures import render_dislocations, specimen_background

__all__ = [
    "KINDS",
    "KIND_SIZE",
    "PRESETS",
    "TemConfig",
    "TemSample",
    "TemSampler",
    "simulate_tem",
    "draw_image_params",
    "sample_population",
    "draw_defects",
    "place_and_render",
    "boxes_from_labels",
    "crystal_rotation",
    "project_loop",
    "config_from_match",
    "annotate_visible",
    "relabel_final",
    "ANNOTATOR_LABELS",
    "BOX_DTYPE",
    "LOOKALIKES",
]

#: Physical defect kinds (class ids follow the order of ``TemConfig.classes``).
KINDS = ("black_dot", "loop111", "loop100")
#: Median diameter of each kind relative to ``size_nm`` (the ⟨111⟩ loop median).
KIND_SIZE = {"black_dot": 0.55, "loop111": 1.0, "loop100": 1.4}
#: Default relative abundance of each kind.
KIND_WEIGHT = {"black_dot": 0.45, "loop111": 0.35, "loop100": 0.2}
#: Habit-plane normals (crystal frame) of each loop family.
HABIT_NORMALS = {
    "loop111": np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], float) / math.sqrt(3),
    "loop100": np.eye(3),
}
#: Zone axes the beam may be close to.
ZONES = {"001": (0, 0, 1), "011": (0, 1, 1), "111": (1, 1, 1), "112": (1, 1, 2)}
ARRANGEMENTS = ("uniform", "clustered", "lines", "mixed")
LOOKALIKES = ("keep", "suppress", "label")

#: The label rule of the presets (:func:`annotate_visible`): outline at 35 % of the defect's own
#: peak deficit, a label only from SNR 2.5 up, look-alike background blobs flattened.
ANNOTATOR_LABELS = {"label_extent": 0.35, "min_snr": 2.5, "lookalikes": "suppress"}
OVERLAPS = ("avoid", "allow")
EDGES = ("partial", "inside")

BOX_DTYPE = np.dtype(
    [
        ("x0", "f4"), ("y0", "f4"), ("x1", "f4"), ("y1", "f4"), ("class", "i2"),
        ("instance", "i4"), ("size", "f4"), ("minor", "f4"), ("angle", "f4"),
        ("tx0", "f4"), ("ty0", "f4"), ("tx1", "f4"), ("ty1", "f4"),
        ("kind", "i2"), ("contrast", "f4"),
    ]
)

# Range-valued parameters: a scalar means "always this value"; (lo, hi) is drawn per image.
_RANGES = {
    # name: (lower bound, upper bound or None, integer?)
    "pixel_nm": (1e-4, None, False),
    "density": (0.0, None, False),
    "size_nm": (1e-3, None, False),
    "contrast": (0.0, 0.95, False),
    "edge_px": (0.05, 10.0, False),
    "edge_frac": (0.0, 1.0, False),
    "irregularity": (0.0, 0.4, False),
    "rim_nm": (0.0, None, False),
    "loop_fill": (0.0, 1.0, False),
    "halo": (0.0, 1.0, False),
    "lobe": (0.0, 2.0, False),
    "bean": (0.0, 1.0, False),
    "level": (0.01, 1.0, False),
    "gradient": (0.0, 1.0, False),
    "bend_count": (0, 10, True),
    "bend_amp": (0.0, 0.9, False),
    "bend_width": (0.01, 2.0, False),
    "mottle_amp": (0.0, 0.5, False),
    "mottle_scale": (0.5, None, False),
    "grain_amp": (0.0, 0.5, False),
    "coarse_amp": (0.0, 0.5, False),
    "texture_gain": (0.0, 5.0, False),
    "texture_skew": (0.0, 0.5, False),
    "anisotropy": (0.0, 0.95, False),
    "lines": (0, 50, True),
    "line_amp": (0.0, 0.9, False),
    "line_width": (0.3, 50.0, False),
    "specks": (0.0, None, False),
    "dose": (0.0, None, False),
    "blur": (0.0, 10.0, False),
    "read_noise": (0.0, 0.5, False),
    # diffraction-contrast structures (simgen.simulate.tem_structures)
    "line_beads": (0.0, 1.0, False),
    "line_period": (1.0, None, False),
    "line_double": (0.0, 1.0, False),
    "line_curvature": (0.0, 0.5, False),
    "line_length": (0.01, 3.0, False),
    "edge_on": (0.0, 1.0, False),
    "bend_fringes": (0.0, 1.0, False),
    "fringe_amp": (0.0, 0.9, False),
    "fringe_period": (2.0, None, False),
    "fringe_count": (0.1, 50.0, False),
    "streak_amp": (0.0, 0.5, False),
    "streak_scale": (0.5, None, False),
    "streak_length": (1.0, 50.0, False),
    "streak_angle": (-2 * math.pi, 2 * math.pi, False),
    "black_white": (0.0, 1.5, False),
    "contrast_tail": (0.0, 1.0, False),
    "patch_frac": (0.0, 0.8, False),
    "patch_amp": (0.0, 0.9, False),
    "patch_scale": (2.0, None, False),
    "patch_edge": (0.01, 2.0, False),
    "patch_texture": (0.0, 5.0, False),
}
#: Ranges drawn log-uniformly (scale parameters); everything else is uniform.
_LOG_RANGES = ("pixel_nm", "density", "size_nm", "dose", "mottle_scale")


@dataclass(frozen=True)
class TemConfig:
    """Parameters of one TEM defect image (lengths in px unless the name says nm).

    Range parameters accept a scalar or ``(lo, hi)``; a new value is drawn per image
    (uniform, log-uniform for ``density``, ``size_nm``, ``dose``, ``mottle_scale``).

    Attributes
    ----------
    size : int or (H, W)
        Image side, or ``(height, width)``.
    pixel_nm : range
        Pixel size in nm (converts ``size_nm``, ``rim_nm`` and ``density``); a range
        models magnification changes between images (sizes in px and densities per
        px² then change together, as they do between real micrographs).
    classes : tuple of str
        Defect kinds present, a subset of :data:`KINDS`; class id = position.
    class_names : tuple of str, optional
        Label names of ``classes`` (default: the kind names).
    single_class : str, optional
        Label every defect as class 0 with this name (e.g. ``"loop"``).
    class_weights : tuple of float, optional
        Relative abundances of ``classes`` (default :data:`KIND_WEIGHT`).
    density : range, defects per µm²
        At the nominal pixel size (geometric mean of ``pixel_nm``); see ``count_exponent``.
    count_exponent : float
        How the defect count of an image follows its pixel size: count ∝ ``pixel_nm**count_exponent``
        at a fixed ``density``.  2 (default) is a constant areal density, as in one specimen
        imaged at several magnifications.  Below 2, images at high magnification (large
        defects in px) hold more defects than one specimen would give: a training set across
        magnifications then has enough large boxes, as a microscopist picks the magnification
        per specimen so that the field holds a useful number of defects (0 = the count is
        independent of the pixel size).
    size_nm : range, nm
        Median ⟨111⟩-loop diameter of an image (log-uniform per image).
    size_sigma, size_jitter : float
        Log-normal sigma of diameters within an image; extra log-sd of the per-image median.
    min_size_px, max_size_px : float
        Diameters are redrawn into ``[min, max]`` px (``max`` default: a quarter of the
        shorter image side).
    arrangement : {"uniform", "clustered", "lines", "mixed"}
    cluster_size, cluster_sigma : float
        Mean defects per cluster; cluster radius in units of the median diameter.
    overlap : {"avoid", "allow"}
    min_gap, max_overlap : float
        ``avoid``: minimum px between masks; ``allow``: largest overlapped mask fraction.
    edge : {"partial", "inside"}
        Whether defects may be cut by the image border.
    min_visible : float
        ``partial``: smallest in-field fraction of a mask that is kept.
    box_margin : float
        Px added on every side of the tight box in ``x0, y0, x1, y1`` (clipped).
    zones, tilt_max : tuple of str, float
        Zone axes near which the crystal sits; largest tilt away from it (rad).
    contrast, edge_px, edge_frac, irregularity, rim_nm, loop_fill, halo, lobe, bean : ranges
        Defect appearance: peak deficit (fraction of background); edge softness
        ``edge_px + edge_frac x b`` (px, logistic scale; strain contrast fades over a
        width growing with the defect); outline irregularity (amplitude of the 2nd and 3rd
        angular harmonics); rim FWHM of resolved loops (nm); loop interior darkness
        relative to the rim; strain-halo amplitude; black-white lobe strength;
        coffee-bean strength.
    min_aspect : float
        Smallest projected minor/major ratio: the strain field of an edge-on loop keeps
        a width of at least this fraction of its diameter.
    contrast_spread : float
        Per-defect contrast factor ``U(1 - s, 1 + s)`` around the image value.
    level, gradient, bend_count, bend_amp, bend_width : ranges
        Background intensity, thickness-gradient relative change, bend contours.
    mottle_amp, mottle_scale, grain_amp, coarse_amp, anisotropy : ranges
        Mottled texture: relative std and blob size (px) of the main band, relative std of
        a fine (size/4) and a coarse (size x 4) band, streakiness.
    texture : tuple of float, optional
        Texture spectrum as standard deviations of the octave bands
        :data:`~simgen.simulate.tem_render.TEXTURE_SCALES` (4 … 128 px), as estimated by
        :func:`simgen.simulate.match.estimate`; replaces the mottle bands when given.
    texture_gain : range
        Per-image factor on ``texture``.
    texture_skew : range
        Dark skew κ of the mottle (intensity skewness ≈ -6κ; bright-field strain
        contrast darkens, it rarely brightens).
    lines, line_amp, line_width : ranges
        Unlabelled dislocation lines: count, mean peak deficit, Gaussian width (px at the
        nominal pixel size; scales with the per-image magnification, as does ``line_period``).
    line_beads, line_period, line_double, line_curvature, line_length : ranges
        Inclined dislocations (drawn per line): depth-oscillation (dotted / zig-zag)
        contrast strength 0…1 and its period along the line (px, the projected extinction
        distance); relative strength of a double image (0 = single); rms turn of the line
        direction per px (rad); length as a fraction of the image side.
    edge_on : range
        Fraction of loops seen (nearly) edge-on: dark lines of aspect 0.05–0.2, exempt
        from ``min_aspect``.
    bend_fringes : range
        Visibility 0…1 of the subsidiary fringes of bend contours (two-beam rocking
        curve with absorption; 0 = one broad Lorentzian band).
    fringes : float
        Probability that an image shows a foil edge with thickness fringes.
    fringe_amp, fringe_period, fringe_count : ranges
        Their contrast, period (px) and number of fringes before absorption fades them.
    streak_amp, streak_scale, streak_length, streak_angle : ranges
        Streaky (anisotropic) background: relative std, across-streak band scale (px),
        length/width elongation, direction (rad; also the direction of ``anisotropy``).
    black_white : range
        Black-white dipole amplitude (relative to the contrast) of unresolved loops and dots.
    contrast_tail : range
        Weight 0…1 of an exponential dark tail of per-defect contrasts (near-surface
        defects diffract strongly): factor ``(1 - τ) + τ E``, ``E ~ Exp(1)``.
    patch_frac, patch_amp, patch_scale, patch_edge, patch_texture : ranges
        Large connected dark patches (dense damage): area fraction, deficit, correlation
        length (px), edge softness (in field standard deviations), extra mottle inside them
        (the texture's gain rises by this factor in a patch).
    label_extent : float
        0: the label outline is the defect's geometric outline (``d <= 0``); > 0: the
        outline is the contour at this fraction of the defect's own peak deficit (the
        visible dark extent; the lighter interior of a resolved loop filled), so halos,
        black-white lobes and soft edges shape the box as an annotator sees it.
    min_snr : float
        Visibility rule: a defect is labelled only if its LoG response at its own scale
        on the final image is at least ``min_snr`` × the local background fluctuation
        (:mod:`simgen.simulate.tem_labels`); 0 = label every rendered defect.
    lookalikes : {"keep", "suppress", "label"}
        Unlabelled defect-like dark blobs of the background (blob-shaped, defect size,
        SNR >= max(min_snr, 25th percentile of the labelled defects)): left alone, flattened
        below that level (a smooth bright Gaussian matched to the blob), or labelled
        (as ``black_dot`` if that class exists, else class 0).
    lookalike_px : (low, high), optional
        Box sides (px) of the look-alike search.  None (default): the 5-95 % range of the
        image's own labelled boxes.  A fixed range (e.g. the 5-45 px a detector is trained
        for) also catches the blobs of the other images' sizes: with one pixel size per
        image, a dark 30 px blob in an image of 8 px defects is a label elsewhere and an
        unlabelled negative here.
    specks : range
        Unlabelled dirt specks per Mpx.
    dose, blur, read_noise : ranges
        Electrons per px at intensity 1 (0 = noise-free), detector blur (px), read noise.
    preset : str, optional
        Name of the preset these values came from (provenance only).
    """

    size: int | tuple[int, int] = 512
    pixel_nm: tuple[float, float] = (0.4, 0.4)
    classes: tuple[str, ...] = KINDS
    class_names: tuple[str, ...] | None = None
    single_class: str | None = None
    class_weights: tuple[float, ...] | None = None
    density: tuple[float, float] = (150.0, 1500.0)
    count_exponent: float = 2.0
    size_nm: tuple[float, float] = (3.0, 8.0)
    size_sigma: float = 0.4
    size_jitter: float = 0.25
    min_size_px: float = 3.0
    max_size_px: float | None = None
    arrangement: str = "mixed"
    cluster_size: float = 5.0
    cluster_sigma: float = 3.0
    overlap: str = "avoid"
    min_gap: float = 1.0
    max_overlap: float = 0.3
    edge: str = "partial"
    min_visible: float = 0.5
    box_margin: float = 0.0
    zones: tuple[str, ...] = ("001", "011", "111")
    tilt_max: float = math.radians(20.0)
    contrast: tuple[float, float] = (0.35, 0.75)
    contrast_spread: float = 0.25
    edge_px: tuple[float, float] = (0.6, 1.6)
    edge_frac: tuple[float, float] = (0.1, 0.3)
    irregularity: tuple[float, float] = (0.0, 0.15)
    min_aspect: float = 0.3
    rim_nm: tuple[float, float] = (0.8, 2.0)
    loop_fill: tuple[float, float] = (0.45, 0.95)
    halo: tuple[float, float] = (0.0, 0.35)
    lobe: tuple[float, float] = (0.0, 0.8)
    bean: tuple[float, float] = (0.0, 0.5)
    level: tuple[float, float] = (0.42, 0.62)
    gradient: tuple[float, float] = (0.0, 0.25)
    bend_count: tuple[int, int] = (0, 2)
    bend_amp: tuple[float, float] = (0.1, 0.35)
    bend_width: tuple[float, float] = (0.08, 0.25)
    mottle_amp: tuple[float, float] = (0.08, 0.28)
    mottle_scale: tuple[float, float] = (6.0, 40.0)
    grain_amp: tuple[float, float] = (0.0, 0.08)
    coarse_amp: tuple[float, float] = (0.0, 0.2)
    texture: tuple[float, ...] | None = None
    texture_gain: tuple[float, float] = (0.8, 1.2)
    texture_skew: tuple[float, float] = (0.0, 0.15)
    anisotropy: tuple[float, float] = (0.0, 0.6)
    lines: tuple[int, int] = (0, 3)
    line_amp: tuple[float, float] = (0.08, 0.3)
    line_width: tuple[float, float] = (1.0, 3.5)
    specks: tuple[float, float] = (0.0, 40.0)
    dose: tuple[float, float] = (25.0, 400.0)
    blur: tuple[float, float] = (0.4, 1.2)
    read_noise: tuple[float, float] = (0.0, 0.01)
    line_beads: tuple[float, float] = (0.0, 0.0)
    line_period: tuple[float, float] = (8.0, 20.0)
    line_double: tuple[float, float] = (0.0, 0.0)
    line_curvature: tuple[float, float] = (0.02, 0.02)
    line_length: tuple[float, float] = (0.3, 1.0)
    edge_on: tuple[float, float] = (0.0, 0.0)
    bend_fringes: tuple[float, float] = (0.0, 0.0)
    fringes: float = 0.0
    fringe_amp: tuple[float, float] = (0.1, 0.3)
    fringe_period: tuple[float, float] = (12.0, 30.0)
    fringe_count: tuple[float, float] = (2.0, 5.0)
    streak_amp: tuple[float, float] = (0.0, 0.0)
    streak_scale: tuple[float, float] = (3.0, 6.0)
    streak_length: tuple[float, float] = (4.0, 8.0)
    streak_angle: tuple[float, float] = (0.0, math.pi)
    black_white: tuple[float, float] = (0.0, 0.0)
    contrast_tail: tuple[float, float] = (0.0, 0.0)
    patch_frac: tuple[float, float] = (0.0, 0.0)
    patch_amp: tuple[float, float] = (0.2, 0.45)
    patch_scale: tuple[float, float] = (25.0, 60.0)
    patch_edge: tuple[float, float] = (0.1, 0.25)
    patch_texture: tuple[float, float] = (0.0, 0.0)
    label_extent: float = 0.0
    min_snr: float = 0.0
    lookalikes: str = "keep"
    lookalike_px: tuple[float, float] | None = None
    preset: str | None = None

    def __post_init__(self):
        for name in _RANGES:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    raise ParameterError(f"{name} must be a number or a (low, high) pair, got {value!r}")
                value = (value[0], value[1])
            elif isinstance(value, (int, float, np.number)):
                value = (value, value)
            else:
                raise ParameterError(f"{name} must be a number or a (low, high) pair, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) if not _RANGES[name][2] else v for v in value))
        for name in ("classes", "class_names", "class_weights", "zones", "texture"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    value = tuple(s.strip() for s in value.split(",") if s.strip())
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.size, (list, tuple)):
            object.__setattr__(self, "size", tuple(self.size))
        if self.lookalike_px is not None:
            if not isinstance(self.lookalike_px, (list, tuple)) or len(self.lookalike_px) != 2:
                raise ParameterError(f"lookalike_px must be a (low, high) pair of px, got {self.lookalike_px!r}")
            object.__setattr__(self, "lookalike_px", tuple(float(v) for v in self.lookalike_px))

    # -- derived -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        return tuple(self.size) if isinstance(self.size, tuple) else (self.size, self.size)

    @property
    def label_names(self) -> list[str]:
        """Names of the label classes (index = class id)."""
        if self.single_class:
            return [self.single_class]
        return list(self.class_names or self.classes)

    @property
    def nominal_pixel_nm(self) -> float:
        """Geometric mean of the ``pixel_nm`` range."""
        return math.sqrt(self.pixel_nm[0] * self.pixel_nm[1])

    @property
    def weights(self) -> np.ndarray:
        w = self.class_weights or tuple(KIND_WEIGHT[k] for k in self.classes)
        w = np.asarray(w, float)
        return w / w.sum()

    def max_diameter_px(self) -> float:
        h, w = self.shape
        return float(self.max_size_px) if self.max_size_px is not None else min(h, w) / 4.0

    # -- validation ----------------------------------------------------------
    def validate(self) -> "TemConfig":
        """Raise :class:`ParameterError` for any out-of-range parameter; return self."""
        h, w = self.shape
        for v in (h, w):
            if isinstance(v, bool) or int(v) != v or v < 16:
                raise ParameterError(f"image size must be an integer >= 16 pixels, got {self.size}")
        if not self.classes:
            raise ParameterError("at least one defect class is required")
        for k in self.classes:
            if k not in KINDS:
                raise ParameterError(f"unknown defect class {k!r}; choose from {', '.join(KINDS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ParameterError(f"defect classes repeat: {', '.join(self.classes)}")
        if self.class_names is not None and len(self.class_names) != len(self.classes):
            raise ParameterError(
                f"{len(self.class_names)} class names given for {len(self.classes)} classes ({', '.join(self.classes)})"
            )
        if self.class_names is not None and any(not n for n in self.class_names):
            raise ParameterError("class names must not be empty")
        if self.single_class is not None and not str(self.single_class).strip():
            raise ParameterError("single_class must be a non-empty name")
        if self.class_weights is not None:
            if len(self.class_weights) != len(self.classes):
                raise ParameterError(f"{len(self.class_weights)} class weights given for {len(self.classes)} classes")
            if any(not (x >= 0) for x in self.class_weights) or sum(self.class_weights) <= 0:
                raise ParameterError("class weights must be >= 0 with a positive sum")
        for name, (lo_b, hi_b, integer) in _RANGES.items():
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ParameterError(f"{name} must be finite, got {(lo, hi)}")
            if hi < lo:
                raise ParameterError(f"{name} range ({lo:g}, {hi:g}) is empty (high < low)")
            if lo < lo_b or (hi_b is not None and hi > hi_b):
                bound = f">= {lo_b:g}" + (f" and <= {hi_b:g}" if hi_b is not None else "")
                raise ParameterError(f"{name} must be {bound}, got {lo:g}" + (f"-{hi:g}" if hi != lo else ""))
            if integer and (int(lo) != lo or int(hi) != hi):
                raise ParameterError(f"{name} must be whole numbers, got {(lo, hi)}")
        for name in _LOG_RANGES:
            lo, hi = getattr(self, name)
            if lo <= 0 < hi and name != "dose":
                raise ParameterError(f"{name} is drawn log-uniformly and must be > 0, got {lo:g}")
        dlo, dhi = self.dose
        if (dlo == 0) != (dhi == 0):
            raise ParameterError("dose range must be all zero (noise-free) or all positive")
        if not (0 <= self.size_sigma <= 2) or not (0 <= self.size_jitter <= 2):
            raise ParameterError("size_sigma and size_jitter must be in [0, 2]")
        if self.min_size_px < 1:
            raise ParameterError(f"min_size_px must be >= 1, got {self.min_size_px}")
        max_d = self.max_diameter_px()
        if max_d < self.min_size_px:
            raise ParameterError(f"max_size_px {max_d:g} is smaller than min_size_px {self.min_size_px:g}")
        if max_d > min(h, w):
            raise ParameterError(f"max_size_px {max_d:g} is larger than the image ({min(h, w)} px)")
        biggest = self.size_nm[1] * max(KIND_SIZE[k] for k in self.classes) / self.pixel_nm[0]
        if biggest > min(h, w):
            raise ParameterError(
                f"median defect size {biggest:.0f} px (size_nm {self.size_nm[1]:g} at {self.pixel_nm[0]:g} nm/px) "
                f"is larger than the image ({min(h, w)} px)"
            )
        if self.arrangement not in ARRANGEMENTS:
            raise ParameterError(f"unknown arrangement {self.arrangement!r}; choose one of {', '.join(ARRANGEMENTS)}")
        if self.overlap not in OVERLAPS:
            raise ParameterError(f"unknown overlap rule {self.overlap!r}; choose one of {', '.join(OVERLAPS)}")
        if self.edge not in EDGES:
            raise ParameterError(f"unknown edge rule {self.edge!r}; choose one of {', '.join(EDGES)}")
        if self.cluster_size < 1 or self.cluster_sigma <= 0:
            raise ParameterError("cluster_size must be >= 1 and cluster_sigma > 0")
        if self.min_gap < 0 or not (0 <= self.max_overlap < 1):
            raise ParameterError("min_gap must be >= 0 and max_overlap in [0, 1)")
        if not (0 < self.min_visible <= 1):
            raise ParameterError(f"min_visible must be in (0, 1], got {self.min_visible}")
        if self.box_margin < 0:
            raise ParameterError(f"box_margin must be >= 0, got {self.box_margin}")
        if not (0 < self.min_aspect <= 1):
            raise ParameterError(f"min_aspect must be in (0, 1], got {self.min_aspect}")
        if not (0 <= self.contrast_spread < 1):
            raise ParameterError(f"contrast_spread must be in [0, 1), got {self.contrast_spread}")
        if not (0 <= self.fringes <= 1):
            raise ParameterError(f"fringes is a probability in [0, 1], got {self.fringes}")
        if not (0 <= self.label_extent < 1):
            raise ParameterError(f"label_extent must be in [0, 1), got {self.label_extent}")
        if not (0 <= self.min_snr <= 100):
            raise ParameterError(f"min_snr must be in [0, 100], got {self.min_snr}")
        if self.lookalikes not in LOOKALIKES:
            raise ParameterError(f"unknown lookalikes rule {self.lookalikes!r}; choose one of {', '.join(LOOKALIKES)}")
        if self.lookalike_px is not None and not 1 <= self.lookalike_px[0] <= self.lookalike_px[1]:
            raise ParameterError(f"lookalike_px must satisfy 1 <= low <= high, got {self.lookalike_px}")
        if self.texture is not None:
            from simgen.simulate.tem_render import TEXTURE_SCALES

            if len(self.texture) != len(TEXTURE_SCALES) or any(not (0 <= t <= 1) for t in self.texture):
                raise ParameterError(
                    f"texture must be {len(TEXTURE_SCALES)} band amplitudes in [0, 1] "
                    f"(scales {', '.join(f'{x:g}' for x in TEXTURE_SCALES)} px)"
                )
        if not self.zones:
            raise ParameterError("at least one zone axis is required")
        for z in self.zones:
            if z not in ZONES:
                raise ParameterError(f"unknown zone axis {z!r}; choose from {', '.join(ZONES)}")
        if not (0 <= self.tilt_max <= math.pi / 2):
            raise ParameterError(f"tilt_max must be in [0, pi/2] rad, got {self.tilt_max}")
        if not 0.0 <= self.count_exponent <= 2.0:
            raise ParameterError(f"count_exponent must be in [0, 2], got {self.count_exponent}")
        area_um2 = h * w * (self.pixel_nm[1] * 1e-3) ** 2
        if self.density[1] * area_um2 > 20000:
            raise ParameterError(
                f"density {self.density[1]:g}/µm² means {self.density[1] * area_um2:.0f} defects per image; "
                "lower the density (at most 20000 per image)"
            )
        return self

    def replace(self, **changes) -> "TemConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TemConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError(f"unknown TEM parameters: {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TemConfig":
        """A preset (see :data:`PRESETS`) with ``overrides`` applied."""
        if name not in PRESETS:
            raise ParameterError(f"unknown TEM preset {name!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[name]["config"], **overrides, "preset": name}
        return cls(**values)


#: Presets per real data set, derived from label and image statistics of
#: ``../shared/realdata/dev`` (dataset-level numbers, never single images; see
#: ``docs/tem.md`` and ``benchmarks/realism_tem.py --derive``).  ``stats`` holds the
#: measured numbers each preset was derived from.
PRESETS: dict[str, dict] = {}


def _define_presets() -> None:
    # ``stats``: measured on ../shared/realdata/dev by benchmarks/realism_tem.py --derive
    # (label statistics: box longer side px, per-image medians, within-image log-sd,
    # density per Mpx, box depth = darkness relative to the surrounding; image
    # statistics: medians over the set of simgen.simulate.match.estimate).  The config
    # values follow from them: per-image size and density ranges span the per-image
    # values, texture/noise/level are the set medians (texture measured with the labelled
    # defects inpainted), ``size_nm``, ``density`` and ``contrast`` were then calibrated so
    # that synthetic labels reproduce the box size, density and depth medians.  creme
    # mixes two magnifications (fov tiles ~38 px loops at 23-80/Mpx, test_03 ~10 px at
    # 600/Mpx: the same areal density in nm²), hence its ``pixel_nm`` range; its 64/128 px
    # texture bands were raised (0.074, 0.043 -> 0.10, 0.08) to restore the low-k power of
    # the unlabelled dislocation bands that inpainting removed.
    PRESETS["creme"] = {
        "description": "creme_316L: ion-irradiated 316L (fcc), ~0.39 nm/px, dark loops 4-45 px, noisy fine grain",
        "stats": {
            "major_pct": [4.0, 7.0, 10.0, 14.0, 37.0], "image_median_major": [10.0, 37.5, 44.0],
            "log_sd": 0.36, "density_per_mpx": [22.9, 53.4, 598.0], "depth_pct": [0.23, 0.30, 0.42, 0.55, 0.66],
            "level": 0.478, "blur": 0.9, "dose": 47.7, "read_noise": 0.0045,
            "texture": [0.106, 0.123, 0.050, 0.078, 0.074, 0.043], "anisotropy": 0.026, "texture_skew": 0.02,
        },
        "config": {
            "pixel_nm": (0.39, 1.5), "classes": ("black_dot", "loop111"), "class_weights": (0.4, 0.6),
            "size_nm": (17.0, 23.0), "size_sigma": 0.3, "size_jitter": 0.1, "density": (150.0, 600.0),
            "arrangement": "mixed", "contrast": (0.5, 0.9), "edge_px": (0.5, 1.3), "halo": (0.0, 0.25),
            "edge_frac": (0.15, 0.35), "irregularity": (0.05, 0.2), "loop_fill": (0.6, 1.0),
            "level": (0.44, 0.6), "gradient": (0.0, 0.2), "bend_count": (0, 2), "bend_amp": (0.1, 0.3),
            "texture": (0.106, 0.123, 0.050, 0.078, 0.074, 0.043), "texture_gain": (0.8, 1.2),
            "texture_skew": (0.0, 0.06),
            "anisotropy": (0.0, 0.35), "lines": (1, 4), "line_amp": (0.25, 0.5), "line_width": (2.0, 4.0),
            "specks": 0.0, "dose": (30.0, 70.0), "blur": (0.6, 1.1), "read_noise": (0.0, 0.01),
            # structures (issue 15): beaded / double-image inclined dislocations decorated by loops,
            # edge-on loops as dark lines, bend contours with subsidiary fringes, dark contrast tail
            "line_beads": (0.4, 1.0), "line_period": (8.0, 16.0), "line_double": (0.0, 0.5),
            "line_curvature": (0.02, 0.05), "line_length": (0.2, 0.8), "edge_on": (0.2, 0.5),
            "bend_fringes": (0.0, 0.5), "black_white": (0.0, 0.4), "contrast_tail": (0.1, 0.3),
            **ANNOTATOR_LABELS,
        },
    }
    PRESETS["dsva"] = {
        "description": "dsva_fecral: in-situ irradiated FeCrAl (bcc) video frames, loose boxes, smooth, low noise",
        "stats": {
            "major_pct": [10.5, 15.0, 19.0, 24.0, 34.0], "image_median_major": [14.0, 18.25, 22.0],
            "log_sd": 0.31, "density_per_mpx": [52.8, 142.1, 167.3], "depth_pct": [0.35, 0.43, 0.55, 0.68, 0.78],
            "level": 0.549, "blur": 0.85, "dose": 194.0, "read_noise": 0.0076,
            "texture": [0.025, 0.040, 0.081, 0.070, 0.055, 0.032], "anisotropy": 0.2, "texture_skew": 0.06,
        },
        "config": {
            "pixel_nm": (0.42, 0.48), "classes": KINDS, "class_weights": (0.55, 0.25, 0.2), "box_margin": 2.0,
            "size_nm": (6.0, 10.4), "size_sigma": 0.25, "size_jitter": 0.08, "density": (450.0, 1150.0),
            "arrangement": "mixed", "contrast": (0.75, 0.95), "edge_px": (0.5, 1.0), "halo": (0.0, 0.15),
            "edge_frac": (0.05, 0.15), "irregularity": (0.03, 0.15), "loop_fill": (0.85, 1.0), "min_aspect": 0.4,
            "level": (0.52, 0.63), "gradient": (0.0, 0.1), "bend_count": (0, 1), "bend_amp": (0.05, 0.15),
            "texture": (0.025, 0.040, 0.045, 0.040, 0.055, 0.032), "texture_gain": (0.8, 1.25),
            "texture_skew": (0.03, 0.09),
            "anisotropy": (0.0, 0.15), "lines": (0, 2), "line_amp": (0.15, 0.35), "line_width": (1.5, 3.0),
            "specks": (5.0, 40.0), "dose": (150.0, 250.0), "blur": (0.75, 0.95), "read_noise": (0.004, 0.01),
            # structures (issue 15): streaky background along ~150° (match.streak_statistics on the dev
            # frames, inpainted: amp 0.087, ℓ 16 px, L 1.5, 150°; the streak variance was taken out of the
            # 16/32 px bands), inclined dislocations with zig-zag contrast, black-white lobes, dark tail
            "streak_amp": (0.07, 0.1), "streak_scale": (12.0, 20.0), "streak_length": (1.5, 2.5),
            "streak_angle": (2.45, 2.8), "line_beads": (0.5, 1.0), "line_period": (10.0, 20.0),
            "line_double": (0.0, 0.3), "line_curvature": (0.005, 0.02), "line_length": (0.15, 0.5),
            "black_white": (0.0, 0.35), "contrast_tail": (0.2, 0.4),
            **ANNOTATOR_LABELS, "min_snr": 2.0,
        },
    }
    PRESETS["ti"] = {
        "description": "ti_anneal: neutron-irradiated Ti frames, dark loops 13-55 px on strong dark mottle, noisy",
        "stats": {
            "major_pct": [13.3, 18.5, 24.7, 34.2, 55.0], "image_median_major": [16.9, 22.6, 40.5],
            "log_sd": 0.37, "density_per_mpx": [57.2, 107.2, 135.7], "depth_pct": [0.23, 0.30, 0.39, 0.50, 0.61],
            "level": 0.529, "blur": 0.55, "dose": 53.9, "read_noise": 0.021,
            "texture": [0.0, 0.036, 0.072, 0.130, 0.153, 0.126], "anisotropy": 0.06, "texture_skew": 0.036,
        },
        "config": {
            "pixel_nm": (0.45, 0.55), "classes": ("black_dot", "loop111"), "class_weights": (0.35, 0.65),
            "size_nm": (10.0, 22.0), "size_sigma": 0.3, "size_jitter": 0.08, "density": (660.0, 1440.0),
            "arrangement": "mixed", "contrast": (0.45, 0.75), "edge_px": (1.0, 2.2), "halo": (0.05, 0.35),
            "edge_frac": (0.15, 0.35), "irregularity": (0.05, 0.2), "loop_fill": (0.6, 1.0), "min_aspect": 0.4,
            "level": (0.5, 0.61), "gradient": (0.0, 0.1), "bend_count": (0, 1), "bend_amp": (0.05, 0.15),
            "texture": (0.0, 0.036, 0.072, 0.130, 0.153, 0.126), "texture_gain": (0.8, 1.2),
            "texture_skew": (0.01, 0.06),
            "anisotropy": (0.02, 0.12), "lines": (0, 2), "line_amp": (0.08, 0.2), "line_width": (1.0, 3.0),
            "specks": 0.0, "dose": (42.0, 60.0), "blur": (0.45, 0.6), "read_noise": (0.0, 0.03),
            # structures (issue 15): large connected dark patches of dense damage (darker, with
            # stronger mottle inside), weak streaks (streak_statistics on the dev frames: amp 0.068,
            # ℓ 22, L 1.5, ~120°), dark contrast tail, faint beaded lines.  Patches replacing part of
            # the texture, or darker / sharper patches, made the realism judge's AUC worse (docs/tem.md).
            # Only visible defects are labelled (min_snr 2.5: ~45 % of the rendered ones on this busy
            # mottle), so the density was doubled to keep the labelled density nearer the dev set's
            "patch_frac": (0.1, 0.25), "patch_amp": (0.15, 0.3), "patch_scale": (20.0, 40.0),
            "patch_edge": (0.3, 0.5), "patch_texture": (0.8, 1.5),
            "streak_amp": (0.03, 0.06), "streak_scale": (16.0, 24.0),
            "streak_length": (1.5, 2.0), "streak_angle": (1.9, 2.25), "contrast_tail": (0.2, 0.4),
            "line_beads": (0.3, 0.8), "line_period": (10.0, 20.0),
            **ANNOTATOR_LABELS,
        },
    }


_define_presets()


@dataclass
class TemSample:
    """One rendered TEM image and its labels.

    Attributes
    ----------
    image : (H, W) float32 in [0, 1]
    mask : (H, W) uint16 instance ids (0 = background; id ``i`` = ``boxes[i-1]``)
    boxes : structured array :data:`BOX_DTYPE`
    defects : structured array :data:`~simgen.simulate.tem_render.DEFECT_DTYPE` (accepted defects)
    params : dict of the per-image draws (provenance)
    layers : dict of float32 arrays (``background``, ``defects``, ``negatives``, ``clean``) when requested
    """

    image: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray
    defects: np.ndarray
    params: dict = field(default_factory=dict)
    layers: dict | None = None


# ---------------------------------------------------------------------------
# per-image draws
def _draw(rng: np.random.Generator, name: str, rng_range) -> float:
    lo, hi = rng_range
    if _RANGES[name][2]:
        return int(rng.integers(int(lo), int(hi) + 1))
    if hi == lo:
        return float(lo)
    if name in _LOG_RANGES and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_image_params(rng: np.random.Generator, config: TemConfig) -> dict:
    """Draw every per-image scalar of ``config`` (ranges, orientation, size median)."""
    p = {name: _draw(rng, name, getattr(config, name)) for name in _RANGES}
    p["size_median_nm"] = float(p["size_nm"] * math.exp(rng.normal(0.0, config.size_jitter)))
    p["zone"] = str(config.zones[int(rng.integers(len(config.zones)))])
    p["tilt"] = float(config.tilt_max * math.sqrt(rng.uniform()))
    p["tilt_axis"] = float(rng.uniform(0, 2 * math.pi))
    p["psi"] = float(rng.uniform(0, 2 * math.pi))
    p["g_angle"] = float(rng.uniform(0, 2 * math.pi))
    p["gradient_angle"] = float(rng.uniform(0, 2 * math.pi))
    # streaks and the anisotropy of the mottle share one direction (the specimen's)
    p["mottle_angle"] = p["streak_angle"]
    f = config.fringes
    p["fringes"] = bool(f >= 1 or (f > 0 and rng.uniform() < f))
    if config.texture is not None:
        from simgen.simulate.tem_render import TEXTURE_SCALES

        jitter = rng.uniform(0.85, 1.15, len(TEXTURE_SCALES))
        p["texture_components"] = [(float(sc), float(wt * p["texture_gain"] * j))
                                   for sc, wt, j in zip(TEXTURE_SCALES, config.texture, jitter)]
    else:
        ms = p["mottle_scale"]
        p["texture_components"] = [(ms, p["mottle_amp"]), (max(2.0, ms / 4), p["grain_amp"]),
                                   (ms * 4, p["coarse_amp"])]
    if p["streak_amp"] > 0:
        p["texture_components"].append((p["streak_scale"], p["streak_amp"], p["streak_length"], p["streak_angle"]))
    return p


def crystal_rotation(zone: str, tilt: float, tilt_axis: float, psi: float) -> np.ndarray:
    """Rotation matrix crystal frame → lab frame (beam along lab +z).

    The crystal zone axis is first tilted by ``tilt`` about an axis perpendicular to
    it (azimuth ``tilt_axis``), then brought onto the beam, then rotated in-plane by ``psi``.
    """
    z = np.asarray(ZONES[zone], float)
    z /= np.linalg.norm(z)
    # an orthonormal pair perpendicular to z
    ref = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(z, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(z, e1)
    axis = math.cos(tilt_axis) * e1 + math.sin(tilt_axis) * e2
    beam = _rodrigues(axis, tilt) @ z  # beam direction in crystal coordinates
    # rotation taking `beam` onto +z
    ez = np.array([0.0, 0.0, 1.0])
    v = np.cross(beam, ez)
    s, c = np.linalg.norm(v), float(beam @ ez)
    align = np.eye(3) if s < 1e-12 else _rodrigues(v / s, math.atan2(s, c))
    cz, sz = math.cos(psi), math.sin(psi)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ align


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def project_loop(normals_lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projected aspect ``b/a = |n_z|`` and major-axis angle (⟂ to ``(n_x, n_y)``) of circular loops."""
    n = np.asarray(normals_lab, float)
    aspect = np.abs(n[:, 2])
    angle = np.arctan2(n[:, 1], n[:, 0]) + np.pi / 2
    return aspect, angle


def _positions(rng, n: int, shape, mode: str, config: TemConfig, median_px: float, curves) -> np.ndarray:
    h, w = shape
    if n == 0:
        return np.zeros((0, 2))
    if mode == "mixed":
        modes = rng.choice(3, size=n, p=[0.5, 0.25, 0.25])
        parts = [
            _positions(rng, int((modes == 0).sum()), shape, "uniform", config, median_px, curves),
            _positions(rng, int((modes == 1).sum()), shape, "clustered", config, median_px, curves),
            _positions(rng, int((modes == 2).sum()), shape, "lines", config, median_px, curves),
        ]
        return np.concatenate(parts)
    if mode == "uniform":
        return rng.uniform((0, 0), (w, h), size=(n, 2))
    if mode == "lines" and curves:
        pts = np.concatenate(curves)
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
        if len(pts):
            xy = pts[rng.integers(len(pts), size=n)] + rng.normal(0, 0.4 * median_px + 1.0, size=(n, 2))
            return _refill(rng, xy, shape)
    # clustered (also the fallback for "lines" without lines in the field): Thomas process
    n_par = max(1, int(round(n / config.cluster_size)))
    parents = rng.uniform((0, 0), (w, h), size=(n_par, 2))
    xy = parents[rng.integers(n_par, size=n)] + rng.normal(0, config.cluster_sigma * median_px, size=(n, 2))
    return _refill(rng, xy, shape)


def _refill(rng, xy: np.ndarray, shape) -> np.ndarray:
    """Replace points outside the field by uniform ones (keeps the count)."""
    h, w = shape
    out = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
    if out.any():
        xy[out] = rng.uniform((0, 0), (w, h), size=(int(out.sum()), 2))
    return xy


def sample_population(rng: np.random.Generator, config: TemConfig, p: dict, curves=()) -> np.ndarray:
    """Candidate defects of one image (before the visibility and overlap rules).

    The count is Poisson with mean ``density x area``; see :func:`draw_defects`.
    """
    h, w = config.shape
    area_um2 = h * w * (p["pixel_nm"] * 1e-3) ** 2
    # count ∝ pixel_nm**count_exponent: the areal density is scaled by (nominal / pixel)**(2 - exponent)
    scale = (config.nominal_pixel_nm / p["pixel_nm"]) ** (2.0 - config.count_exponent)
    n = int(rng.poisson(p["density"] * scale * area_um2))
    return draw_defects(rng, config, p, n, curves)


def draw_defects(rng: np.random.Generator, config: TemConfig, p: dict, n: int, curves=(), xy=None) -> np.ndarray:
    """Draw ``n`` defects (kind, size, projected shape, appearance, position).

    Parameters
    ----------
    p : dict
        Per-image draws of :func:`draw_image_params`.
    xy : (n, 2) array, optional
        Positions; drawn according to ``config.arrangement`` when omitted.

    Returns a structured array of :data:`~simgen.simulate.tem_render.DEFECT_DTYPE`; its
    ``kind`` holds the index into ``config.classes``.
    """
    h, w = config.shape
    out = np.zeros(n, DEFECT_DTYPE)
    if n == 0:
        return out
    cls = rng.choice(len(config.classes), size=n, p=config.weights)
    kinds = [config.classes[c] for c in cls]
    factor = np.array([KIND_SIZE[k] for k in kinds])
    median_px = p["size_median_nm"] / p["pixel_nm"]
    diam = median_px * factor * np.exp(rng.normal(0, config.size_sigma, n))
    lo, hi = config.min_size_px, config.max_diameter_px()
    for _ in range(4):  # redraw out-of-range diameters (truncated log-normal)
        bad = (diam < lo) | (diam > hi)
        if not bad.any():
            break
        diam[bad] = median_px * factor[bad] * np.exp(rng.normal(0, config.size_sigma, int(bad.sum())))
    diam = np.clip(diam, lo, hi)
    a = diam / 2
    # projected shape
    rot = crystal_rotation(p["zone"], p["tilt"], p["tilt_axis"], p["psi"])
    aspect = np.empty(n)
    angle = np.empty(n)
    is_loop = np.array([k != "black_dot" for k in kinds])
    for k in ("loop111", "loop100"):
        sel = np.array([kk == k for kk in kinds])
        if sel.any():
            fam = HABIT_NORMALS[k]
            normals = fam[rng.integers(len(fam), size=int(sel.sum()))] @ rot.T
            asp, ang = project_loop(normals)
            aspect[sel], angle[sel] = asp, ang + rng.normal(0, 0.05, int(sel.sum()))
    dots = ~is_loop
    if dots.any():
        nd = int(dots.sum())
        aspect[dots] = rng.uniform(0.55, 1.0, nd)
        along_g = rng.uniform(size=nd) < 0.6
        angle[dots] = np.where(along_g, p["g_angle"] + rng.normal(0, 0.35, nd), rng.uniform(0, np.pi, nd))
    rim_px = np.clip(rng.uniform(*config.rim_nm, n) / p["pixel_nm"], 1.0, None)
    asp = np.maximum(aspect, config.min_aspect)
    if p["edge_on"] > 0:
        # loops whose habit plane contains the beam: a dark line along the trace of the plane
        eo = is_loop & (rng.uniform(size=n) < p["edge_on"])
        asp = np.where(eo, rng.uniform(0.05, 0.2, n), asp)
    # edge-on loops keep the width of their rim; tiny defects stay at least 0.75 px thick
    b = np.maximum(a * asp, np.where(is_loop, np.minimum(rim_px / 2, a), 0.75))
    b = np.minimum(b, a)
    if xy is None:
        xy = _positions(rng, n, (h, w), config.arrangement, config, float(np.median(diam)), list(curves))
        xy = xy[rng.permutation(n)]  # positions of the modes come in blocks; shuffle them
    xy = np.asarray(xy, float).reshape(n, 2)
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    out["a"], out["b"], out["angle"] = a, b, np.mod(angle, np.pi)
    out["kind"] = cls
    s = config.contrast_spread
    factor = rng.uniform(1 - s, 1 + s, n)
    tail = p["contrast_tail"]
    if tail > 0:
        factor = factor * ((1 - tail) + tail * rng.exponential(1.0, n))
    out["contrast"] = np.clip(p["contrast"] * factor, 0.05, 0.95)
    out["edge"] = p["edge_px"] * rng.uniform(0.8, 1.25, n) + p["edge_frac"] * b
    irr = p["irregularity"]
    out["h2"] = irr * rng.uniform(0, 1, n)
    out["h3"] = irr * rng.uniform(0, 1, n)
    out["p2"] = rng.uniform(0, 2 * np.pi, n)
    out["p3"] = rng.uniform(0, 2 * np.pi, n)
    # a loop shows a rim (lighter interior) only once resolved: inner radius > rim width
    resolved = is_loop & (b > 1.2 * rim_px)
    out["rim"] = np.where(resolved, rim_px, 0.0)
    out["fill"] = np.where(resolved, rng.uniform(*config.loop_fill, n), 1.0)
    out["halo"] = rng.uniform(*config.halo, n)
    out["halo_ext"] = (0.3 + 0.5 * rng.uniform(size=n)) * b + 1.0
    lobe = rng.uniform(*config.lobe, n)
    out["lobe"] = lobe
    out["bean"] = np.where(rng.uniform(size=n) < 0.3, rng.uniform(*config.bean, n), 0.0)
    flip = rng.uniform(size=n) < 0.5  # black-white direction flips with depth in the foil
    out["g_angle"] = p["g_angle"] + np.where(flip, np.pi, 0.0)
    if config.black_white[1] > 0:
        out["bw"] = np.where(resolved, 0.0, rng.uniform(*config.black_white, n))
    return out


def place_and_render(candidates: np.ndarray, config: TemConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the visibility and overlap rules and paint the accepted defects.

    Returns
    -------
    (deficit float32 (H, W), labels uint16 (H, W), accepted defects)
    """
    h, w = config.shape
    deficit = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.uint16)
    keep = []
    areas: dict[int, int] = {}
    names = candidates.dtype.names
    avoid = config.overlap == "avoid"
    gap = np.float32(config.min_gap)
    extent = float(config.label_extent)
    for row in candidates.tolist():
        rec = dict(zip(names, row))
        r0, c0, d, val = render_patch(rec)
        if extent > 0:
            peak = float(val.max())
            if not peak > 0:
                continue
            inside = _dark_extent(val, extent * peak, d if rec["rim"] > 0 else None)
        else:
            inside = d <= 0
        total = int(inside.sum())
        if total == 0:  # sub-pixel ellipse missing every pixel centre: not visible, not labelled
            continue
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + d.shape[0], h), min(c0 + d.shape[1], w)
        if rr1 <= rr0 or cc1 <= cc0:
            continue
        sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        vis = inside[sl]
        n_vis = int(vis.sum())
        if config.edge == "inside" and n_vis < total:
            continue
        if n_vis < config.min_visible * total or n_vis == 0:
            continue
        lab = labels[rr0:rr1, cc0:cc1]
        if avoid:
            near = d[sl] <= gap
            if extent > 0:
                near |= vis
            if lab[near].any():
                continue
        else:
            hit = lab[vis]
            hit = hit[hit > 0]
            if hit.size:
                if hit.size > config.max_overlap * n_vis:
                    continue
                ids, counts = np.unique(hit, return_counts=True)
                if any(c > config.max_overlap * areas[int(i)] for i, c in zip(ids, counts)):
                    continue
                for i, c in zip(ids, counts):
                    areas[int(i)] -= int(c)
        new_id = len(keep) + 1
        keep.append(row)
        areas[new_id] = n_vis
        deficit[rr0:rr1, cc0:cc1] += val[sl]
        lab[vis] = new_id
    accepted = np.array(keep, dtype=DEFECT_DTYPE) if keep else np.zeros(0, DEFECT_DTYPE)
    return deficit, labels, accepted


def _dark_extent(val: np.ndarray, level: float, d: np.ndarray | None = None) -> np.ndarray:
    """Pixels of a defect patch at least ``level`` dark; with ``d``, the loop's interior (``d <= 0``) too."""
    m = val >= np.float32(level)
    if d is not None:
        m |= d <= 0
    return m


def boxes_from_labels(labels: np.ndarray, defects: np.ndarray, config: TemConfig) -> np.ndarray:
    """Boxes of every instance: tight = bounding box of its pixels in ``labels``.

    Instance ``i`` (1-based) belongs to ``defects[i - 1]``.
    """
    from scipy.ndimage import find_objects

    h, w = labels.shape
    n = len(defects)
    boxes = np.zeros(n, BOX_DTYPE)
    if n == 0:
        return boxes
    slices = find_objects(labels, max_label=n)
    tight = np.zeros((n, 4), np.float32)
    for i, sl in enumerate(slices):
        if sl is None:  # cannot happen: every accepted defect keeps visible pixels
            raise AssertionError(f"instance {i + 1} has no pixels")
        tight[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    m = np.float32(config.box_margin)
    boxes["tx0"], boxes["ty0"], boxes["tx1"], boxes["ty1"] = tight.T
    boxes["x0"] = np.clip(tight[:, 0] - m, 0, w)
    boxes["y0"] = np.clip(tight[:, 1] - m, 0, h)
    boxes["x1"] = np.clip(tight[:, 2] + m, 0, w)
    boxes["y1"] = np.clip(tight[:, 3] + m, 0, h)
    boxes["class"] = 0 if config.single_class else defects["kind"]
    boxes["kind"] = [KINDS.index(config.classes[k]) for k in defects["kind"]]
    boxes["instance"] = np.arange(1, n + 1)
    boxes["size"] = 2 * defects["a"]
    boxes["minor"] = 2 * defects["b"]
    boxes["angle"] = defects["angle"]
    boxes["contrast"] = defects["contrast"]
    return boxes


def _specks(rng, shape, per_mpx: float, deficit: np.ndarray) -> int:
    """Unlabelled dirt specks: tiny (sub-2-px) very dark dots."""
    h, w = shape
    n = int(rng.poisson(per_mpx * h * w / 1e6))
    for _ in range(n):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(0.45, 0.75)
        amp = rng.uniform(0.3, 0.7)
        r0, c0 = int(y) - 3, int(x) - 3
        ys = np.arange(r0, r0 + 7) + 0.5 - y
        xs = np.arange(c0, c0 + 7) + 0.5 - x
        g = amp * np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * s * s))
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r0 + 7, h), min(c0 + 7, w)
        if rr1 > rr0 and cc1 > cc0:
            deficit[rr0:rr1, cc0:cc1] += g[rr0 - r0: rr1 - r0, cc0 - c0: cc1 - c0].astype(np.float32)
    return n


def annotate_visible(image: np.ndarray, labels: np.ndarray, defects: np.ndarray, config: TemConfig,
                     kind_of_lookalike: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Make the labels follow what an annotator sees (``min_snr``, ``lookalikes``; see :class:`TemConfig`).

    Measures every labelled defect's SNR (normalised LoG response at its own scale / local
    background fluctuation, :mod:`simgen.simulate.tem_labels`) on the final ``image``;
    drops the labels of those below ``config.min_snr`` (they stay rendered: invisible);
    then finds unlabelled defect-like blobs (blob-shaped, within the 5-95 % size range of
    the kept labels, SNR >= max(min_snr, 25th percentile of the kept SNRs)) and flattens or
    labels them — the same definitions :func:`simgen.simulate.tem_labels.label_noise` measures.

    Returns
    -------
    (image, labels, defects, info) — the (possibly flattened) image, relabelled instance
    image (ids 1…m in order), the labelled defects (instance ``i`` = ``defects[i - 1]``) and
    counts ``n_invisible``, ``n_lookalikes``, ``n_lookalike_labels``.
    """
    info = {"n_invisible": 0, "n_lookalikes": 0, "n_lookalike_labels": 0}
    n = len(defects)
    if n == 0 or (config.min_snr <= 0 and config.lookalikes == "keep"):
        return image, labels, defects, info
    h, w = labels.shape
    tight = np.zeros((n, 4))
    for i, sl in enumerate(_ndi.find_objects(labels, max_label=n)):
        if sl is not None:
            tight[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    size = np.maximum(tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1])
    # the lattice scales the sizes need (the 2-98 % range ±√2; the rare extremes use the nearest)
    s_lo, s_hi = np.percentile(size, [2, 98]) if n > 10 else (float(size.min()), float(size.max()))
    if config.lookalike_px is not None and config.lookalikes != "keep":
        s_lo, s_hi = min(s_lo, config.lookalike_px[0]), max(s_hi, config.lookalike_px[1])
    ss = scale_space(image, _default_sigmas(float(s_lo) / math.sqrt(2), float(s_hi) * math.sqrt(2)))
    ss.set_background(_free_mask((h, w), tight, 2.0))
    snr, _ = visibility(ss, tight)
    keep = snr >= config.min_snr if config.min_snr > 0 else np.ones(n, bool)
    info["n_invisible"] = int(n - keep.sum())
    if not keep.all():
        lut = np.zeros(n + 1, labels.dtype)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        labels = lut[labels]
        defects = defects[keep]
    if config.lookalikes != "keep" and keep.any():
        kept_box = tight[keep]
        ksz = size[keep]
        if config.lookalike_px is not None:
            lo_px, hi_px = config.lookalike_px
        else:
            lo_px, hi_px = np.percentile(ksz, [5, 95]) if len(ksz) > 2 else (float(ksz.min()), float(ksz.max()))
        lo = int(ss.scale_index(max(float(lo_px), 2.0) / (2 * math.sqrt(2)))) - 1
        hi = int(ss.scale_index(max(float(hi_px), 2.0) / (2 * math.sqrt(2)))) + 1
        # The background (and so every SNR) is measured around the labels only, as label_noise does;
        # flattening or labelling a blob changes it, which can make a weaker neighbour stand out:
        # re-measure and repeat once.
        active = range(max(lo - 1, 0), min(hi + 2, len(ss.sigmas)))  # scales the search and its threshold use
        for it in range(_LOOKALIKE_PASSES):
            free = _free_mask((h, w), kept_box, 2.0)
            if it > 0 or not keep.all():  # (else the background is the one just measured)
                ss.set_background(free, indices=None if it == 0 else active)
            ks, _ = visibility(ss, kept_box)
            thr = max(config.min_snr, float(np.percentile(ks, 25)))
            look = find_lookalikes(ss, free, thr, (lo, hi))
            if it == 0:
                info["n_lookalikes"] = int(len(look))
            if not len(look):
                break
            if config.lookalikes == "suppress":
                image = _flatten_blobs(image, look, ss, 0.5 * thr)
                if it + 1 < _LOOKALIKE_PASSES:
                    ss.recompute(image, active)
            else:
                labels, defects, new_boxes = _label_blobs(image, labels, defects, look, config, kind_of_lookalike)
                info["n_lookalike_labels"] += len(new_boxes)
                if not len(new_boxes):
                    break
                kept_box = np.concatenate([kept_box, new_boxes])
    return image, labels, defects, info



def relabel_final(image: np.ndarray, mask: np.ndarray, boxes: np.ndarray,
                  config: TemConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Apply the annotator rule of ``config`` again, on the final (augmented) image.

    :func:`simulate_tem` labels what is visible on the *rendered* image; noise, texture,
    blur and JPEG added afterwards (:mod:`simgen.augment`) hide some of those defects and
    make new defect-like blobs, so the labels a detector is trained on no longer follow
    what is seen (measured in the README: 3.5-12.4 % invisible labels and 1.7-5.4
    look-alikes per box in the augmented training images, against 0.5 % and 0.4 in the
    real dsva_fecral frames).  This drops the labels whose SNR on ``image`` is below
    ``config.min_snr`` and flattens the unlabelled look-alikes (``lookalikes="suppress"``),
    exactly as :func:`annotate_visible` does on the render.

    Parameters
    ----------
    image : (H, W) float array in [0, 1]
        The final image.
    mask : (H, W) int array
        Instance labels, ``i`` ↔ ``boxes[i - 1]`` (as a :class:`TemSampler` sample).
    boxes : (n,) structured array of :data:`BOX_DTYPE`
    config : TemConfig
        Its ``min_snr`` and ``lookalikes`` (``keep`` or ``suppress``; ``label`` would need
        the defect records, which a sample does not carry).

    Returns
    -------
    (image, mask, boxes, info) — the (possibly flattened) image, the renumbered instance
    labels, the kept boxes (``instance`` renumbered 1…m) and the counts of
    :func:`annotate_visible`.
    """
    if config.lookalikes == "label":
        raise ParameterError("relabelling the final image supports lookalikes keep or suppress, not label")
    n = len(boxes)
    if mask.shape != image.shape or (n and int(mask.max()) > n):
        raise ParameterError(f"mask {mask.shape} with ids up to {int(mask.max()) if mask.size else 0} does not "
                             f"match image {image.shape} and {n} boxes")
    # annotate_visible only subsets its defect records: pass their indices and subset the boxes
    image, mask, kept, info = annotate_visible(np.asarray(image, np.float32), mask, np.arange(n), config)
    boxes = boxes[kept].copy()
    boxes["instance"] = np.arange(1, len(boxes) + 1)
    return image, mask, boxes, info

_LOOKALIKE_PASSES = 2


def _flatten_blobs(image: np.ndarray, look: np.ndarray, ss, target_snr: float, widen: float = 1.3) -> np.ndarray:
    """Add a smooth bright Gaussian to every blob so its response drops to ``target_snr``.

    For ``g = A exp(-r²/2s²)`` the normalised LoG response at scale σ is
    ``-2 A σ² s² / (s² + σ²)²`` (relative to the level); ``s = widen × σ`` (a bump a little
    wider than the blob also lowers weaker neighbours).  The image noise is kept.
    """
    img = image.copy()
    h, w = img.shape
    for x, y, sg, snr, depth in look.tolist():
        fl = depth / snr if snr > 0 else 0.0
        sb = widen * sg
        gain = 2.0 * sg * sg * sb * sb / (sb * sb + sg * sg) ** 2
        amp = ss.level * (depth - target_snr * fl) / gain
        if amp <= 0:
            continue
        rad = int(math.ceil(3 * sb))
        c0, c1 = max(int(x) - rad, 0), min(int(x) + rad + 1, w)
        r0, r1 = max(int(y) - rad, 0), min(int(y) + rad + 1, h)
        yy = (np.arange(r0, r1, dtype=np.float32) + np.float32(0.5 - y))[:, None]
        xx = (np.arange(c0, c1, dtype=np.float32) + np.float32(0.5 - x))[None, :]
        img[r0:r1, c0:c1] += np.float32(amp) * np.exp((xx * xx + yy * yy) * np.float32(-0.5 / (sb * sb)))
    np.clip(img, 0.0, 1.0, out=img)
    return img


def _label_blobs(image, labels, defects, look, config: TemConfig, kind_of_lookalike):
    """Label look-alike blobs: the disc of the blob's LoG radius ``√2 σ`` (unlabelled pixels only).

    The disc has the diameter ``2√2 σ`` that the LoG scale σ corresponds to, so a labelled
    look-alike is measured at the scale it was found at.  Returns the relabelled image,
    the defects with one record per new label (a round record of the ``black_dot`` kind
    when that class exists, radius ``√2 σ``, contrast = its response) and the new labels'
    tight boxes.
    """
    h, w = labels.shape
    labels = labels.copy()
    kind = kind_of_lookalike
    if kind is None:
        kind = config.classes.index("black_dot") if "black_dot" in config.classes else 0
    recs, boxes = [], []
    for x, y, sg, _snr, depth in look.tolist():
        r = math.sqrt(2) * sg
        rad = int(math.ceil(r)) + 1
        c0, c1 = max(int(x) - rad, 0), min(int(x) + rad + 1, w)
        r0, r1 = max(int(y) - rad, 0), min(int(y) + rad + 1, h)
        yy = (np.arange(r0, r1) + 0.5 - y)[:, None]
        xx = (np.arange(c0, c1) + 0.5 - x)[None, :]
        m = (xx * xx + yy * yy <= r * r) & (labels[r0:r1, c0:c1] == 0)
        if m.sum() < 2:
            continue
        new_id = len(defects) + len(recs) + 1
        labels[r0:r1, c0:c1][m] = new_id
        rows_, cols_ = np.nonzero(m)
        boxes.append((c0 + cols_.min(), r0 + rows_.min(), c0 + cols_.max() + 1, r0 + rows_.max() + 1))
        rec = np.zeros(1, DEFECT_DTYPE)
        rec["x"], rec["y"], rec["a"], rec["b"] = x, y, r, r
        rec["kind"], rec["contrast"], rec["fill"] = kind, min(max(depth, 0.05), 0.95), 1.0
        recs.append(rec)
    if recs:
        defects = np.concatenate([defects, *recs])
    return labels, defects, np.asarray(boxes, float).reshape(-1, 4)


def simulate_tem(rng: np.random.Generator, config: TemConfig | None = None, *, layers: bool = False,
                 **overrides) -> TemSample:
    """Simulate, render and annotate one TEM image.

    Parameters
    ----------
    rng : numpy.random.Generator
        The sample's own random stream.
    config : TemConfig, optional
        Parameters; keyword ``overrides`` replace individual fields.
    layers : bool
        Also return the clean background, defect and negative deficit layers.
    """
    config = (config or TemConfig()).replace(**overrides).validate() if overrides else (config or TemConfig()).validate()
    shape = config.shape
    p = draw_image_params(rng, config)
    lo_len, hi_len = config.line_length
    curves = random_curves(rng, shape, p["lines"], (lo_len, hi_len), p["line_curvature"]) if p["lines"] else []
    candidates = sample_population(rng, config, p, curves)
    bg = specimen_background(rng, shape, p)
    deficit, labels, defects = place_and_render(candidates, config)
    neg = np.zeros(shape, np.float32)
    if curves:
        k = len(curves)
        mag = config.nominal_pixel_nm / p["pixel_nm"]  # widths and periods are physical lengths
        amps = rng.uniform(*config.line_amp, k)
        widths = np.maximum(rng.uniform(*config.line_width, k) * mag, 0.5)
        beads = rng.uniform(*config.line_beads, k)
        periods = np.maximum(rng.uniform(*config.line_period, k) * mag, 2.0 * widths)
        phases = rng.uniform(0, 2 * math.pi, k)
        doubles = rng.uniform(*config.line_double, k)
        render_dislocations(shape, curves, amps, widths, neg, beads=beads, periods=periods, phases=phases,
                            doubles=doubles)
    n_specks = _specks(rng, shape, p["specks"], neg) if p["specks"] > 0 else 0
    total = deficit + neg if (curves or n_specks) else deficit.copy()
    np.minimum(total, np.float32(0.97), out=total)
    np.maximum(total, np.float32(-1.0), out=total)
    np.subtract(np.float32(1.0), total, out=total)
    clean = total
    clean *= bg
    image = apply_camera(rng, clean, p["dose"], p["blur"], p["read_noise"])
    n_rendered = int(len(defects))
    image, labels, defects, info = annotate_visible(image, labels, defects, config)
    boxes = boxes_from_labels(labels, defects, config)
    params = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.items()}
    params.update(n_candidates=int(len(candidates)), n_defects=n_rendered, n_labels=int(len(defects)),
                  n_lines=len(curves), n_specks=n_specks, **info)
    lay = None
    if layers:
        lay = {"background": bg, "defects": deficit, "negatives": neg, "clean": clean}
    return TemSample(image=image, mask=labels, boxes=boxes, defects=defects, params=params, layers=lay)


class TemSampler:
    """Picklable per-index TEM generator: ``sampler(i)`` → one annotated sample.

    Follows the sampler protocol of :class:`simgen.simulate.film.FilmSampler`:
    sample ``i`` draws only from ``sample_rng(seed, i)``.

    Parameters
    ----------
    config : TemConfig
    seed : int
    match : dict, optional
        Image statistics the config was fitted to (stored in ``describe()``).
    """

    kind = "tem"

    def __init__(self, config: TemConfig | None = None, seed: int = 0, match: dict | None = None):
        from simgen.rng import check_seed

        self.config = (config or TemConfig()).validate()
        self.seed = check_seed(seed)
        self.match = match

    @property
    def class_names(self) -> list[str]:
        return self.config.label_names

    def describe(self) -> dict:
        d = {"sampler": "tem", "config": self.config.to_dict()}
        if self.match is not None:
            d["match"] = self.match
        return d

    # -- simulation-time augmentation codes (simgen.augment.AugmentedSampler) ----------
    def check_overrides(self, codes) -> None:
        """Only ``RD`` (defect density) acts at simulation time for TEM images."""
        from simgen.errors import SpecError

        bad = [c for c in codes if c != "RD"]
        if bad:
            raise SpecError(f"{'+'.join(bad)} act at simulation time on film samplers only; TEM takes RD "
                            "(defect density) and the image-level codes")

    def with_overrides(self, params: dict) -> "TemSampler":
        """A sampler with ``RD``'s density (defects per 10⁴ px²) as a fixed areal density."""
        cfg = self.config
        if "RD" in params:
            per_um2 = params["RD"]["density"] / (1e4 * (cfg.nominal_pixel_nm * 1e-3) ** 2)
            cfg = cfg.replace(density=(per_um2, per_um2))
        return TemSampler(cfg, seed=self.seed, match=self.match)

    def __call__(self, index: int) -> dict:
        from simgen.rng import sample_rng

        s = simulate_tem(sample_rng(self.seed, index), self.config)
        return {
            "image": s.image,
            "mask": s.mask,
            "boxes": s.boxes,
            "provenance": {"index": int(index), **s.params},
        }

    def relabel(self, sample: dict) -> dict:
        """``sample`` with its labels following the final image (:func:`relabel_final`, this config's rule).

        Called by :class:`simgen.augment.AugmentedSampler` (``relabel=True``) after the augmentation.
        """
        image, mask, boxes, info = relabel_final(sample["image"], sample["mask"], sample["boxes"], self.config)
        prov = {**sample.get("provenance", {}), "relabel": info}
        return {**sample, "image": image, "mask": mask, "boxes": boxes, "provenance": prov}


#: Smallest estimated streak amplitude that ``config_from_match`` renders as streaks (the
#: estimator's floor on isotropic texture is ~0.02, see tests/simulate/test_tem_structures.py).
_MIN_STREAK = 0.03


def _remove_band(texture, ell: float, amp: float) -> tuple:
    """Octave weights with ``amp²`` of variance removed around scale ``ell`` (overlap-weighted, floored at 0)."""
    from simgen.simulate.tem_render import TEXTURE_SCALES

    w2 = np.asarray(texture, float) ** 2
    share = np.exp(-0.5 * (np.log(np.asarray(TEXTURE_SCALES) / ell) / math.log(2)) ** 2)
    share = share * (w2 > 0)
    if share.sum() <= 0:
        return tuple(float(x) for x in texture)
    w2 = np.maximum(w2 - amp * amp * share / share.sum(), 0.0)
    return tuple(float(math.sqrt(x)) for x in w2)


def config_from_match(estimates: dict, base: TemConfig | None = None, spread: float = 0.2) -> TemConfig:
    """A config whose per-image ranges are centred on statistics estimated from a real image.

    Parameters
    ----------
    estimates : dict
        Output of :func:`simgen.simulate.match.estimate` (background level, texture
        amplitude and scale, noise dose and blur, defect contrast, size and density).
    base : TemConfig, optional
        Everything not estimated (classes, arrangement, bend contours, lines, dark
        patches, edge-on loops, black-white lobes, label rules, ...).  Streaks (direction,
        amplitude, scale, elongation) are estimated; their variance is taken out of the
        isotropic texture bands they overlap.
    spread : float
        Relative half-width of the ranges around each estimate.
    """
    base = base or TemConfig()
    base = base.replace(pixel_nm=base.nominal_pixel_nm)  # one image: one magnification
    # estimates that could not be made (e.g. no dark blob found) are NaN: keep the base values
    estimates = {k: v for k, v in estimates.items()
                 if not (isinstance(v, float) and not math.isfinite(v))}

    def around(v, lo=None, hi=None):
        a, b = v * (1 - spread), v * (1 + spread)
        if lo is not None:
            a, b = max(a, lo), max(b, lo)
        if hi is not None:
            a, b = min(a, hi), min(b, hi)
        return (float(a), float(b))

    changes: dict = {}
    if "level" in estimates:
        changes["level"] = around(estimates["level"], 0.02, 0.98)
    if "texture" in estimates:
        changes["texture"] = tuple(float(min(max(t, 0.0), 1.0)) for t in estimates["texture"])
        changes["texture_gain"] = (1 - spread / 2, 1 + spread / 2)
    if "texture_skew" in estimates:
        changes["texture_skew"] = around(estimates["texture_skew"], 0.0, 0.5)
    if "anisotropy" in estimates:
        changes["anisotropy"] = around(estimates["anisotropy"], 0.0, 0.9)
    if "dose" in estimates:
        changes["dose"] = around(estimates["dose"], 1.0)
    if "blur" in estimates:
        changes["blur"] = around(estimates["blur"], 0.0, 5.0)
    if "read_noise" in estimates:
        changes["read_noise"] = around(estimates["read_noise"], 0.0, 0.5)
    if "contrast" in estimates:
        changes["contrast"] = around(estimates["contrast"], 0.05, 0.9)
    if "defect_size_px" in estimates:
        w = base.replace(**changes).weights if base.class_weights else base.weights
        mix = math.exp(sum(wi * math.log(KIND_SIZE[k]) for wi, k in zip(w, base.classes)))
        changes["size_nm"] = around(estimates["defect_size_px"] * base.nominal_pixel_nm / mix, 1e-3)
        changes["size_jitter"] = min(base.size_jitter, 0.15)
    if estimates.get("streak_amp", 0.0) >= _MIN_STREAK:
        # streaks replace part of the isotropic texture: take their variance out of the octave
        # bands they overlap (weights ∝ the overlap of the band spectra), keep the direction
        amp, ell = float(estimates["streak_amp"]), float(estimates["streak_scale"])
        changes["streak_amp"] = around(amp, 0.0, 0.5)
        changes["streak_scale"] = around(ell, 0.5)
        changes["streak_length"] = around(max(float(estimates["streak_length"]), 1.0), 1.0, 50.0)
        ang = float(estimates["streak_angle"])
        changes["streak_angle"] = (ang - 0.1, ang + 0.1)
        if "texture" in changes:
            changes["texture"] = _remove_band(changes["texture"], ell, amp)
        changes["anisotropy"] = (0.0, min(0.1, base.anisotropy[1]))
    elif "streak_amp" in estimates:
        changes["streak_amp"] = (0.0, 0.0)
        if "anisotropy_angle" in estimates:
            ang = float(estimates["anisotropy_angle"])
            changes["streak_angle"] = (ang - 0.1, ang + 0.1)
    if "density_per_mpx" in estimates and estimates["density_per_mpx"] > 0:
        per_um2 = estimates["density_per_mpx"] / (1e6 * (base.nominal_pixel_nm * 1e-3) ** 2)
        changes["density"] = (per_um2 / 1.6, per_um2 * 1.6)
    return base.replace(**changes).validate()
