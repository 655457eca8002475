"""Diffraction-contrast structures of bright-field TEM specimens (numpy in, numpy out).

The real micrographs show more than defects on smooth mottle; this module renders the
specimen structures that two-beam diffraction contrast produces, each from its
physical cause (kinematical/dynamical theory in its simplest closed forms; Hirsch et
al., *Electron Microscopy of Thin Crystals*; Williams & Carter ch. 24-26):

* :func:`rocking_curve` — two-beam bright-field transmission with absorption: the
  diffracted fraction ``R(w) = [1 - V cos(2π t_ξ √(1+w²))] / (2 (1 + w²))`` of a
  column of thickness ``t = t_ξ ξ_g`` at deviation ``w = s ξ_g``; ``V`` the
  visibility of the pendellösung oscillation (1 = no absorption, 0 = thick,
  absorption-averaged crystal).
* :func:`bend_contours` — a bent foil sweeps ``w`` through zero along lines: broad
  dark bands (Lorentzian ``1/(1+w²)`` flanks) with subsidiary fringes of visibility ``V``.
* :func:`thickness_fringes` — near a wedge-shaped foil edge the thickness grows
  linearly, so the transmitted intensity oscillates with period ``ξ_g / tan(wedge)``
  (fringes parallel to the edge, damped by absorption as the foil thickens) over a
  mean that darkens with thickness.
* :func:`dark_patches` — regions of dense unresolved damage / dislocation tangles
  whose overlapping strain fields diffract strongly: connected dark patches with
  ragged edges (a thresholded smooth random field, roughened by the mottle).
* :func:`render_dislocations` — dislocation lines inclined in the foil: the image
  of a dislocation crossing the foil from one surface to the other oscillates along
  its projection with the projected extinction distance (dotted / zig-zag
  contrast), lies to one side of the core with the side alternating, and splits
  into a double image for ``g·b = 2`` or large ``s``.
* :func:`specimen_background` — the whole background ``B`` of
  :mod:`simgen.simulate.tem` (thickness gradient, mottle and streaks, bend
  contours, thickness fringes, dark patches).

Streaks (anisotropic mottle) are an extra anisotropic band of the texture
spectrum (:func:`simgen.simulate.tem_render.texture_field`); the black-white lobes of
small loops live in the defect profile (:func:`simgen.simulate.tem_render.defect_deficit`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as _ndi
from scipy.special import ndtri as _ndtri

from simgen.simulate.tem_render import graded_mottle, smooth_field

__all__ = [
    "rocking_curve",
    "bend_contours",
    "thickness_fringes",
    "dark_patches",
    "render_dislocations",
    "specimen_background",
]


def rocking_curve(w, t_xi: float, visibility: float) -> np.ndarray:
    """Diffracted fraction of the two-beam rocking curve, normalised to a peak of ~1.

    ``R(w) = [1 - V cos(2π t_ξ √(1+w²))] / (1 + w²) / (1 + V)`` (see module docstring);
    the bright-field transmission is ``1 - amp R``.
    """
    f32 = np.float32
    w = np.asarray(w, np.float32)
    q = w * w
    q += f32(1.0)
    out = np.float32(1.0) / q
    if visibility > 0:
        osc = np.sqrt(q)
        osc *= f32(2 * math.pi * t_xi)
        np.cos(osc, out=osc)
        osc *= f32(-visibility)
        osc += f32(1.0)
        out *= osc
    out *= f32(1.0 / (1.0 + visibility))
    return out


def bend_contours(rng: np.random.Generator, shape, count: int, amp: float, width: float,
                  visibility: float = 0.0, scale: float | None = None) -> np.ndarray:
    """Multiplicative bright-field factor ``1 - amp max_i R(w_i)`` of ``count`` bend contours.

    The foil's local tilt is a smooth unit-variance field ``S`` (correlation length
    ``scale``, default a third of the field); contour ``i`` is where ``S`` crosses a random
    level ``l_i``, with deviation ``w_i = (S - l_i) / width``.
    """
    h, w = shape
    s = smooth_field(rng, shape, scale or max(h, w) / 3)
    levels = rng.uniform(-1.2, 1.2, int(count))
    t_xi = rng.uniform(2.0, 5.0, int(count))
    band = np.zeros(shape, np.float32)
    inv = np.float32(1.0 / width)
    for lv, tx in zip(levels, t_xi):
        np.maximum(band, rocking_curve((s - np.float32(lv)) * inv, float(tx), visibility), out=band)
    band *= np.float32(-amp)
    band += np.float32(1.0)
    return band


def thickness_fringes(rng: np.random.Generator, shape, amp: float, period: float, count: float) -> np.ndarray:
    """Multiplicative factor of thickness fringes parallel to a (gently curved) foil edge.

    The edge lies just outside the field at a random angle; ``u`` is the distance from it
    (px), the thickness ``t = u / period`` extinction distances.  Factor
    ``1 - amp V(u) (1 - cos 2πu/period) / 2 + amp V(u)² / 2`` with ``V = e^{-u/λ}``,
    ``λ = count × period``: the diffracted fraction oscillates with the thickness, its
    visibility fading by absorption into the uniform thick-foil level, and the thin edge
    transmits more.
    """
    h, w = shape
    f32 = np.float32
    phi = rng.uniform(0, 2 * math.pi)
    nx, ny = math.cos(phi), math.sin(phi)
    xs = np.arange(w, dtype=np.float32) + f32(0.5)
    ys = np.arange(h, dtype=np.float32) + f32(0.5)
    u = xs[None, :] * f32(nx) + ys[:, None] * f32(ny)
    # gentle curvature of the edge (the thickness contours of a dished foil)
    t = ys[:, None] * f32(nx) - xs[None, :] * f32(ny)
    t -= f32(0.5 * (float(t.max()) + float(t.min())))
    side = max(h, w)
    u += f32(rng.uniform(-0.4, 0.4) / side) * t * t
    u -= f32(float(u.min()) - rng.uniform(0.0, 0.5 * period))
    lam = f32(max(count, 0.1) * period)
    vis = np.exp(-u / lam)
    osc = np.cos(u * f32(2 * math.pi / period))
    # diffracted fraction (1 - V cos)/2 oscillates about 1/2; the thin edge transmits more
    out = f32(1.0) - f32(amp) * vis * (f32(0.5) - f32(0.5) * osc) + f32(0.5 * amp) * vis * vis
    return out.astype(np.float32, copy=False)


def dark_patches(rng: np.random.Generator, shape, fraction: float, amp: float, scale: float,
                 edge: float = 0.35, rough: np.ndarray | None = None, roughness: float = 0.35) -> np.ndarray:
    """Multiplicative factor ``1 - amp P`` of connected dark patches covering ~``fraction`` of the field.

    ``Z = Z_ℓ + 0.8 Z_ℓ/3 + roughness × (normalised mottle)`` — smooth unit-variance fields of
    correlation length ``ℓ = scale`` (where the damage is dense) and ``ℓ / 3`` (clumps
    within), roughened by the fine texture ``rough`` (ragged edges); ``z_f`` its
    ``1 - fraction`` quantile; ``P = sigmoid((Z - z_f) / (edge σ_Z))``, so patches darken
    gradually towards their cores.
    """
    f32 = np.float32
    z = smooth_field(rng, shape, scale)
    z += f32(0.8) * smooth_field(rng, shape, max(scale / 3.0, 2.0))
    var = 1.0 + 0.64
    if rough is not None and roughness > 0:
        sd = float(rough.std())
        if sd > 0:
            z += rough * f32(roughness / sd)
            var += roughness * roughness
    sz = math.sqrt(var)
    thr = sz * float(_ndtri(1.0 - min(max(fraction, 1e-4), 1 - 1e-4)))
    t = (z - f32(thr)) * f32(-1.0 / max(edge * sz, 1e-3))
    np.minimum(t, f32(30.0), out=t)
    np.exp(t, out=t)
    t += f32(1.0)
    p = np.reciprocal(t, out=t)
    p *= f32(-amp)
    p += f32(1.0)
    return p


def render_dislocations(shape, curves, amps, widths, deficit: np.ndarray, *, beads=None, periods=None,
                        phases=None, doubles=None) -> None:
    """Add inclined-dislocation images along ``curves`` to ``deficit`` (in place).

    Per line ``i``: Gaussian cross-section of width ``widths[i]`` px and mean peak deficit
    ``amps[i]``; along the arc length ``s`` the depth in the foil changes, so the contrast
    oscillates as ``1 + m cos(2π s / P + φ)`` (``m = beads[i]``, ``P = periods[i]``) and
    the image swings to alternating sides of the line by ``m × width / 2``; a double image
    (relative strength ``doubles[i]``) runs parallel at ``2.5 × width`` with the
    oscillation in antiphase.  Points are splatted bilinearly and blurred once per line.
    """
    h, w = shape
    n = len(curves)
    beads = np.zeros(n) if beads is None else beads
    periods = np.full(n, 10.0) if periods is None else periods
    phases = np.zeros(n) if phases is None else phases
    doubles = np.zeros(n) if doubles is None else doubles
    for pts, amp, wd, m, per, ph, dbl in zip(curves, amps, widths, beads, periods, phases, doubles):
        pts = np.asarray(pts, np.float32)
        if len(pts) < 2:
            continue
        tan = np.gradient(pts, axis=0)
        tan /= np.maximum(np.hypot(tan[:, 0], tan[:, 1]), 1e-6)[:, None]
        nrm = np.stack([-tan[:, 1], tan[:, 0]], 1)
        s = np.cumsum(np.r_[0.0, np.hypot(*np.diff(pts, axis=0).T)]).astype(np.float32)
        arg = np.float32(2 * math.pi / max(per, 1.0)) * s + np.float32(ph)
        cs, sn = np.cos(arg), np.sin(arg)
        sets = [(pts + (np.float32(0.5 * m * wd) * sn)[:, None] * nrm, np.float32(amp) * (1 + np.float32(m) * cs))]
        if dbl > 0:
            off = np.float32(2.5 * wd)
            sets.append((pts + (off - np.float32(0.5 * m * wd) * sn)[:, None] * nrm,
                         np.float32(amp * dbl) * (1 - np.float32(m) * cs)))
        allp = np.concatenate([p for p, _ in sets])
        allw = np.concatenate([a for _, a in sets])
        margin = 3 * wd + 1
        inside = (allp[:, 0] >= -margin) & (allp[:, 0] < w + margin) & (allp[:, 1] >= -margin) & (allp[:, 1] < h + margin)
        if not inside.any():
            continue
        allp, allw = allp[inside], allw[inside]
        pad = int(math.ceil(4 * wd)) + 2
        c0 = max(int(math.floor(allp[:, 0].min())) - pad, 0)
        r0 = max(int(math.floor(allp[:, 1].min())) - pad, 0)
        c1 = min(int(math.ceil(allp[:, 0].max())) + pad, w)
        r1 = min(int(math.ceil(allp[:, 1].max())) + pad, h)
        if c1 <= c0 or r1 <= r0:
            continue
        dep = np.zeros((r1 - r0, c1 - c0), np.float32)
        # pixel centres at +0.5: bilinear weights of the point relative to its four neighbours
        fx, fy = allp[:, 0] - 0.5 - c0, allp[:, 1] - 0.5 - r0
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        ax, ay = (fx - ix).astype(np.float32), (fy - iy).astype(np.float32)
        wt = allw * np.float32(math.sqrt(2 * math.pi) * wd)  # line integral -> peak amp after the blur
        for dy_, dx_, ww in ((0, 0, (1 - ax) * (1 - ay)), (0, 1, ax * (1 - ay)), (1, 0, (1 - ax) * ay), (1, 1, ax * ay)):
            rr, cc = iy + dy_, ix + dx_
            ok = (rr >= 0) & (rr < dep.shape[0]) & (cc >= 0) & (cc < dep.shape[1])
            np.add.at(dep, (rr[ok], cc[ok]), (wt * ww)[ok])
        deficit[r0:r1, c0:c1] += _ndi.gaussian_filter(dep, wd, truncate=3.0)


def specimen_background(rng: np.random.Generator, shape, p: dict) -> np.ndarray:
    """Background ``B`` of one image (float32, around ``p['level']``).

    ``B = level (1 + gradient + texture) × bend contours × thickness fringes × dark patches``.
    Keys of ``p`` (per-image draws of :func:`simgen.simulate.tem.draw_image_params`):
    ``level, gradient, gradient_angle, texture_components`` (2-tuples and anisotropic
    4-tuples, e.g. streaks), ``anisotropy, mottle_angle, texture_skew``; ``bend_count,
    bend_amp, bend_width, bend_fringes``; ``fringes`` (bool), ``fringe_amp,
    fringe_period, fringe_count``; ``patch_frac, patch_amp, patch_scale, patch_edge``.
    """
    h, w = shape
    f32 = np.float32
    bgi, tex = graded_mottle(rng, shape, p)
    n_bend = int(p.get("bend_count", 0))
    if n_bend > 0 and p.get("bend_amp", 0) > 0:
        bgi *= bend_contours(rng, shape, n_bend, p["bend_amp"], p["bend_width"], p.get("bend_fringes", 0.0),
                             p.get("bend_scale"))
    if p.get("fringes") and p.get("fringe_amp", 0) > 0:
        bgi *= thickness_fringes(rng, shape, p["fringe_amp"], p["fringe_period"], p["fringe_count"])
    if p.get("patch_frac", 0) > 0 and p.get("patch_amp", 0) > 0:
        fac = dark_patches(rng, shape, p["patch_frac"], p["patch_amp"], p["patch_scale"], p.get("patch_edge", 0.15),
                           rough=tex)
        gain = float(p.get("patch_texture", 0.0))
        if gain > 0 and tex is not None:
            # dense damage: the mottle is stronger where the patches are (P = (1 - fac) / amp)
            bgi += f32(p["level"] * gain / p["patch_amp"]) * (f32(1.0) - fac) * tex
        bgi *= fac
    return bgi
