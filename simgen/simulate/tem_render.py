"""Rendering primitives of bright-field TEM defect images (numpy in, numpy out).

The image model is multiplicative, as for diffraction contrast in a bright-field
image: ``I = B(x, y) * (1 - D(x, y))`` with a smooth specimen background ``B``
(thickness gradient, bend contours, mottled texture) and a *deficit* ``D`` holding
the strain contrast of every defect (positive = darker, negative = brighter lobe)
plus unlabelled hard negatives (dislocation lines, dirt specks).  Camera effects the
renderer itself needs follow: shot noise at a dose, detector blur and read noise.
Everything a detector should *not* learn to call a defect is in ``B`` or in the
negative layer and is never labelled.

Every defect is rendered in its own small patch (a few times its size), never as
full-frame operations, so the cost of an image is a handful of full-frame passes
(one inverse FFT for the texture, two small matrix products for the bend-contour
field, one noise draw and one blur) plus O(patch area) per defect.

Geometry of one defect: an ellipse with semi-axes ``a >= b`` (pixels), major-axis
angle ``angle`` (radians from +x toward +y, i.e. clockwise on screen) centred at
``(x, y)`` in the continuous pixel frame (pixel ``(r, c)`` has centre
``(c + 0.5, r + 0.5)``).  A first-order signed distance to the ellipse,
``d = (ρ - 1) / |∇ρ|`` with ``ρ² = (u/a)² + (v/b)²``, drives all profiles; the
labelled instance mask is exactly ``d <= 0`` (ρ <= 1).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndi

__all__ = [
    "DEFECT_DTYPE",
    "ellipse_patch",
    "patch_of",
    "defect_deficit",
    "render_patch",
    "render_defects",
    "TEXTURE_SCALES",
    "texture_band",
    "texture_field",
    "smooth_field",
    "background",
    "random_curves",
    "render_lines",
    "apply_camera",
]

#: One rendered defect (geometry in pixels, contrast as a fraction of the local background).
DEFECT_DTYPE = np.dtype(
    [
        ("x", "f4"),  # centre, continuous pixel frame
        ("y", "f4"),
        ("a", "f4"),  # semi-major axis of the labelled ellipse (px)
        ("b", "f4"),  # semi-minor axis (px)
        ("angle", "f4"),  # major-axis direction (rad)
        ("kind", "i2"),  # index into simgen.simulate.tem.KINDS
        ("contrast", "f4"),  # peak deficit (fraction of the background)
        ("fill", "f4"),  # interior darkness relative to the rim (1 = filled black dot)
        ("rim", "f4"),  # rim FWHM (px); 0 = no rim
        ("edge", "f4"),  # edge softness (px, logistic scale)
        ("halo", "f4"),  # strain-halo amplitude relative to the core
        ("halo_ext", "f4"),  # halo 1/e extent outside the ellipse (px)
        ("lobe", "f4"),  # black-white lobe strength (>1: bright lobe on one side)
        ("bean", "f4"),  # coffee-bean strength: contrast lost on the line normal to g
        ("g_angle", "f4"),  # direction of the diffraction vector g (rad)
        ("h2", "f4"),  # relative amplitude of the 2nd angular harmonic of the outline
        ("p2", "f4"),  # its phase (rad)
        ("h3", "f4"),  # 3rd harmonic (irregular, egg/bean-like outlines)
        ("p3", "f4"),
        ("bw", "f4"),  # black-white dipole amplitude relative to ``contrast`` (no contrast on the line ⟂ g)
    ]
)


def _patch_bounds(x: float, y: float, reach: float) -> tuple[int, int, int, int]:
    c0 = int(np.floor(x - reach))
    r0 = int(np.floor(y - reach))
    c1 = int(np.ceil(x + reach)) + 1
    r1 = int(np.ceil(y + reach)) + 1
    return r0, r1, c0, c1


def ellipse_patch(x, y, a, b, angle, reach, h2=0.0, p2=0.0, h3=0.0, p3=0.0):
    """Signed distance ``d`` (px) to a (perturbed) ellipse on the unclipped patch around it.

    The outline is ``ρ = f(φ) = 1 + h2 cos(2φ + p2) + h3 cos(3φ + p3)`` in the
    ellipse's normalised coordinates (``φ`` the angle there), so ``h2 = h3 = 0`` is
    the exact ellipse.  ``d ≈ (ρ - f) / |∇ρ|`` (first order).

    Returns
    -------
    (r0, c0, d, dx, dy) : the patch's top-left pixel, the (h, w) float32 distance
    field and the pixel-centre offsets from the ellipse centre (broadcastable rows/cols).
    """
    r0, r1, c0, c1 = _patch_bounds(x, y, reach)
    dx = (np.arange(c0, c1, dtype=np.float32) + np.float32(0.5 - x))[None, :]
    dy = (np.arange(r0, r1, dtype=np.float32) + np.float32(0.5 - y))[:, None]
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    uu = (dx * ca + dy * sa) / np.float32(a)
    vv = (dy * ca - dx * sa) / np.float32(b)
    rho = np.sqrt(uu * uu + vv * vv)
    # |∇ρ| = sqrt((u/a²)² + (v/b²)²)/ρ lies in [1/a, 1/b]; the clip handles ρ = 0 exactly
    ua, vb = uu * np.float32(1.0 / a), vv * np.float32(1.0 / b)
    g = np.sqrt(ua * ua + vb * vb)
    g /= np.maximum(rho, np.float32(1e-6))
    np.maximum(g, np.float32(1.0 / a), out=g)
    np.minimum(g, np.float32(1.0 / b), out=g)
    if h2 or h3:
        # cos(mφ + p) from c = cos φ, s = sin φ by multiple-angle formulas (no atan2/cos per pixel)
        inv = np.float32(1.0) / np.maximum(rho, np.float32(1e-6))
        c, sn = uu * inv, vv * inv
        c2, s2 = c * c - sn * sn, np.float32(2.0) * c * sn
        c3, s3 = c * (np.float32(4.0) * c * c - np.float32(3.0)), sn * (np.float32(3.0) - np.float32(4.0) * sn * sn)
        f = np.float32(1.0) + np.float32(h2) * (c2 * np.float32(np.cos(p2)) - s2 * np.float32(np.sin(p2))) \
            + np.float32(h3) * (c3 * np.float32(np.cos(p3)) - s3 * np.float32(np.sin(p3)))
        d = (rho - f) / g
    else:
        rho -= np.float32(1.0)
        d = rho
        d /= g
    return r0, c0, d, dx, dy


def patch_of(rec: dict):
    """:func:`ellipse_patch` of one defect record (a dict with the DEFECT_DTYPE fields)."""
    reach = _reach(rec["a"] * (1 + abs(rec["h2"]) + abs(rec["h3"])), rec["b"], rec["edge"], rec["halo_ext"])
    if rec.get("bw", 0.0):
        reach = max(reach, 3.0 * _bw_sigma(rec) + 1.0)
    return ellipse_patch(rec["x"], rec["y"], rec["a"], rec["b"], rec["angle"], reach,
                         rec["h2"], rec["p2"], rec["h3"], rec["p3"])


def _reach(a, b, edge, halo_ext) -> float:
    # the logistic edge is < 2 % beyond 4 edge widths, the halo < 5 % of itself beyond 3 extents
    return float(a + 4.0 * max(edge, 0.5) + 3.0 * halo_ext + 1.0)


def _bw_sigma(rec) -> float:
    # the dipole's lobes peak at ~ the defect's radius (strain field of a small loop ~ r³/d² decays fast)
    return float(0.5 * (rec["a"] + rec["b"]) + 0.5)


def defect_deficit(rec: dict, d, dx, dy) -> np.ndarray:
    """Deficit profile of one defect on its patch (see module docstring for the model)."""
    f32 = np.float32
    edge = f32(max(rec["edge"], 0.3))
    # logistic edge: 1 deep inside, 0.5 on the mask boundary
    t = d * (f32(1.0) / edge)
    np.minimum(t, f32(30.0), out=t)
    np.exp(t, out=t)
    t += f32(1.0)
    fill = np.reciprocal(t, out=t)
    if rec["rim"] > 0 and rec["fill"] < 1.0:
        w = f32(rec["rim"] / 2.3548)  # FWHM -> sigma
        rim = np.exp(-0.5 * ((d + f32(rec["rim"] / 2)) / w) ** 2) * fill * f32(1.6)
        core = np.maximum(fill * f32(rec["fill"]), np.minimum(rim, fill))
    else:
        # filled blob, darker towards the centre
        shade = d * f32(1.0 / max(rec["b"], 1.0))
        shade += f32(1.0)
        np.maximum(shade, f32(0.0), out=shade)
        np.minimum(shade, f32(1.0), out=shade)
        shade *= f32(-0.3)
        shade += f32(1.0)
        core = shade
        core *= fill
    if rec["halo"] > 0:
        halo = np.maximum(d, f32(0.0))
        halo *= f32(-1.0 / max(rec["halo_ext"], 0.5))
        np.exp(halo, out=halo)
        halo *= f32(rec["halo"])
        np.maximum(core, halo, out=core)
    if rec["lobe"] > 0 or rec["bean"] > 0:
        gx, gy = f32(np.cos(rec["g_angle"])), f32(np.sin(rec["g_angle"]))
        soft = f32(0.5 * max(rec["b"], 1.0)) ** 2
        cosg = (dx * gx + dy * gy) / np.sqrt(dx * dx + dy * dy + soft)
        mod = f32(1.0) + f32(rec["lobe"]) * cosg
        if rec["bean"] > 0:
            mod = mod * (f32(1.0) - f32(rec["bean"]) * (f32(1.0) - np.abs(cosg)))
        core = core * mod
    bw = rec.get("bw", 0.0)
    if bw:
        # black-white contrast of a small loop near a surface: an antisymmetric dipole along g,
        # dark on one side, bright on the other, no contrast on the line through the centre
        # perpendicular to g (phenomenological form of the dynamical images; Eyre et al. 1977)
        gx, gy = f32(np.cos(rec["g_angle"])), f32(np.sin(rec["g_angle"]))
        sb = f32(_bw_sigma(rec))
        proj = (dx * gx + dy * gy) * (f32(1.0) / sb)
        r2 = (dx * dx + dy * dy) * (f32(0.5) / (sb * sb))
        dip = proj * np.exp(f32(0.5) - r2)
        core = core + f32(bw) * dip
    core *= f32(rec["contrast"])
    return core


def render_patch(rec: dict):
    """Distance field and deficit of one defect on its (unclipped) patch: ``(r0, c0, d, deficit)``.

    Vectorised numpy (a fused numba kernel was measured 2.7x slower: this numba build
    has no vectorised libm, numpy's exp/sqrt are SIMD).
    """
    r0, c0, d, dx, dy = patch_of(rec)
    return r0, c0, d, defect_deficit(rec, d, dx, dy)


def render_defects(
    shape: tuple[int, int],
    defects: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    deficit: np.ndarray | None = None,
    first_id: int = 1,
    ids=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``defects`` into a deficit image and an instance label image.

    Parameters
    ----------
    shape : (H, W)
    defects : structured array of :data:`DEFECT_DTYPE`
        Rendered in order; a later defect's mask overwrites earlier ones where they overlap.
    labels, deficit : arrays to paint into (created when ``None``)
    first_id : int
        Instance id of ``defects[0]``; ids increase by one per defect.
    ids : sequence of int, optional
        Explicit instance id of every defect (e.g. track ids); overrides ``first_id``.

    Returns
    -------
    (deficit float32 (H, W), labels uint16 (H, W))
    """
    h, w = shape
    if deficit is None:
        deficit = np.zeros(shape, np.float32)
    if labels is None:
        labels = np.zeros(shape, np.uint16)
    names = defects.dtype.names
    for k, row in enumerate(defects.tolist()):
        rec = dict(zip(names, row))
        r0, c0, d, val = render_patch(rec)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + d.shape[0], h), min(c0 + d.shape[1], w)
        if rr1 <= rr0 or cc1 <= cc0:
            continue
        sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        deficit[rr0:rr1, cc0:cc1] += val[sl]
        inside = d[sl] <= 0
        labels[rr0:rr1, cc0:cc1][inside] = first_id + k if ids is None else ids[k]
    return deficit, labels


# ---------------------------------------------------------------------------
# background
#: Octave scales (px) of the texture basis (shared with :mod:`simgen.simulate.match`).
TEXTURE_SCALES = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def texture_band(k2, scale: float):
    """Unit-variance band spectrum ``S_ℓ(k) = 16 ℓ⁴ k² exp(-4ℓ²k²) / π`` (``k`` in cycles/px).

    ``∫ S_ℓ d²k = 1``; the band peaks at ``k = 1/(2ℓ)``, i.e. blobs ~``ℓ`` px across.
    """
    a = np.float32(4.0 * scale * scale)
    return a * a * k2 * np.exp(-a * k2) / np.float32(np.pi)


def texture_field(rng: np.random.Generator, shape, components, anisotropy: float = 0.0,
                  direction: float = 0.0) -> np.ndarray:
    """Zero-mean Gaussian random field with power spectrum ``Σ_i w_i² S_{ℓ_i}(k)``.

    Parameters
    ----------
    components : sequence of (ℓ, w) or (ℓ, w, stretch, angle)
        Band scale in px and standard deviation of each band (their variances add).
        A 4-tuple is an anisotropic band of its own: blobs stretched ``stretch`` (>= 1)
        times along ``angle`` (rad), e.g. streaks.
    anisotropy : float in [0, 1)
        Stretches the blobs of the 2-tuple bands along ``direction`` by ``1 / (1 - anisotropy)``
        (streaky mottle).

    Notes
    -----
    One inverse real FFT in single precision of complex white noise times
    ``sqrt(S(k) H W / 2)``, which gives the field the variance ``∫ S d²k`` (the same
    normalisation :func:`simgen.simulate.match.radial_psd` measures).  Stretching space
    by ``L`` along ``u`` maps ``S(k)`` to ``L S(L k_u, k_v)`` (variance kept).
    """
    h, w = shape
    ky = _fft.fftfreq(h).astype(np.float32)[:, None]
    kx = _fft.rfftfreq(w).astype(np.float32)[None, :]

    def stretched_k2(stretch, angle):
        if stretch == 1.0:
            return kx * kx + ky * ky
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        ku = (kx * c + ky * s) * np.float32(stretch)
        kv = ky * c - kx * s
        return ku * ku + kv * kv

    power = np.zeros((h, w // 2 + 1), np.float32)
    cache: dict = {}
    for comp in components:
        ell, wgt = comp[0], comp[1]
        if not wgt > 0:
            continue
        if len(comp) >= 4:
            stretch, angle = max(float(comp[2]), 1.0), float(comp[3])
        else:
            stretch, angle = (1.0 / (1.0 - anisotropy), direction) if anisotropy > 0 else (1.0, 0.0)
        key = (stretch, angle)
        if key not in cache:
            cache[key] = stretched_k2(stretch, angle)
        power += np.float32(wgt * wgt * stretch) * texture_band(cache[key], ell)
    amp = np.sqrt(power * np.float32(h * w / 2.0))
    spec = rng.standard_normal((*amp.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spec *= amp
    return _fft.irfft2(spec, s=(h, w), workers=1).astype(np.float32, copy=False)


def _rbf_basis(n: int, m: int) -> np.ndarray:
    centres = (np.arange(m) + 0.5) * (n / m)
    pos = np.arange(n) + 0.5
    width = n / m
    return np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / width) ** 2).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    """Smooth random field with correlation length ``~scale`` px (unit variance).

    A grid of independent weights on Gaussian radial basis functions, evaluated as
    two small matrix products (much cheaper than an FFT for very smooth fields).
    """
    h, w = shape
    my = max(2, int(np.ceil(h / scale)) + 2)
    mx = max(2, int(np.ceil(w / scale)) + 2)
    ky = _rbf_basis(h + 2 * int(scale), my)[int(scale): int(scale) + h]
    kx = _rbf_basis(w + 2 * int(scale), mx)[int(scale): int(scale) + w]
    field = ky @ rng.standard_normal((my, mx), dtype=np.float32) @ kx.T
    sd = float(field.std())
    return field / np.float32(sd if sd > 0 else 1.0)


def mottle(rng: np.random.Generator, shape, p: dict) -> np.ndarray | None:
    """The specimen mottle of image parameters ``p`` (``texture_components``, ``anisotropy``,
    ``mottle_angle``, ``texture_skew``) as a relative field ``(H, W)``, or ``None`` when it is off."""
    comps = p.get("texture_components") or []
    if not any(c[1] > 0 for c in comps):
        return None
    f32 = np.float32
    tex = texture_field(rng, shape, comps, p.get("anisotropy", 0.0), p.get("mottle_angle", 0.0))
    kappa = float(p.get("texture_skew", 0.0))
    if kappa > 0:
        # dark-skewed mottle: z - κ(z² - 1) for unit-variance z (skewness ≈ -6κ), variance kept
        sd = f32(np.sqrt(sum(c[1] * c[1] for c in comps)))
        z = tex / sd
        tex = (z - f32(kappa) * (z * z - f32(1.0))) * (sd / f32(np.sqrt(1 + 2 * kappa * kappa)))
    return tex


def graded_mottle(rng: np.random.Generator, shape, p: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """``(p['level'] × (1 + gradient + mottle), mottle)``: every TEM background before its bands.

    ``gradient`` is the relative change across the field along ``gradient_angle``; the mottle is
    :func:`mottle` (the only draw from ``rng``; ``None`` when off), returned for the callers that
    modulate it further.
    """
    h, w = shape
    f32 = np.float32
    ys = (np.arange(h, dtype=np.float32) + f32(0.5 - h / 2)) / f32(max(h, w))
    xs = (np.arange(w, dtype=np.float32) + f32(0.5 - w / 2)) / f32(max(h, w))
    ga = p.get("gradient_angle", 0.0)
    rel = f32(p["gradient"]) * (xs[None, :] * f32(np.cos(ga)) + ys[:, None] * f32(np.sin(ga)))
    tex = mottle(rng, shape, p)
    if tex is not None:
        rel = rel + tex
    return f32(p["level"]) * (f32(1.0) + rel), tex


def background(rng: np.random.Generator, shape, p: dict) -> np.ndarray:
    """Specimen background ``B`` (float32, around ``p['level']``).

    Uses ``p`` keys: ``level``, ``gradient`` (relative change across the field) and
    ``gradient_angle``; ``texture_components`` (list of (ℓ px, relative std)),
    ``anisotropy``, ``mottle_angle``, ``texture_skew`` (texture; bright-field mottle
    is dark-skewed: ``z - κ(z² - 1)`` has skewness ≈ -6κ); ``bend_count``, ``bend_amp``,
    ``bend_width``, ``bend_scale`` (bend contours as dark bands along level sets
    of a smooth field).
    """
    h, w = shape
    f32 = np.float32
    bgi, _ = graded_mottle(rng, shape, p)
    n_bend = int(p.get("bend_count", 0))
    if n_bend > 0 and p.get("bend_amp", 0) > 0:
        s = smooth_field(rng, shape, p.get("bend_scale", max(h, w) / 3))
        levels = rng.uniform(-1.2, 1.2, n_bend)
        band = np.zeros(shape, np.float32)
        wd = f32(p["bend_width"])
        for lv in levels:
            band = np.maximum(band, np.exp(-(((s - f32(lv)) / wd) ** 2)))
        bgi *= f32(1.0) - f32(p["bend_amp"]) * band
    return bgi


# ---------------------------------------------------------------------------
# hard negatives: dislocation lines and specks
def random_curves(rng: np.random.Generator, shape, count: int, length: tuple[float, float],
                  curvature: float = 0.02) -> list[np.ndarray]:
    """Smooth random curves (dislocation lines) as ``(n, 2)`` arrays of ``(x, y)`` at ~1 px steps."""
    h, w = shape
    out = []
    for _ in range(int(count)):
        n = int(rng.uniform(*length) * max(h, w))
        n = max(n, 8)
        turn = np.cumsum(rng.normal(0, curvature, n)).astype(np.float32)
        turn = np.convolve(turn, np.ones(9, np.float32) / 9, mode="same")
        theta = rng.uniform(0, 2 * np.pi) + turn
        start = rng.uniform((0, 0), (w, h))
        x = start[0] + np.cumsum(np.cos(theta))
        y = start[1] + np.cumsum(np.sin(theta))
        # centre the curve on its start so it crosses the field
        x -= (x[-1] - x[0]) / 2
        y -= (y[-1] - y[0]) / 2
        out.append(np.stack([x, y], axis=1).astype(np.float32))
    return out


def render_lines(shape, curves, amps, widths, deficit: np.ndarray) -> None:
    """Add dark lines of peak deficit ``amps[i]`` and Gaussian width ``widths[i]`` (px) along curves."""
    h, w = shape
    for pts, amp, wd in zip(curves, amps, widths):
        inside = (pts[:, 0] >= -3 * wd) & (pts[:, 0] < w + 3 * wd) & (pts[:, 1] >= -3 * wd) & (pts[:, 1] < h + 3 * wd)
        if not inside.any():
            continue
        pts = pts[inside]
        pad = int(np.ceil(4 * wd)) + 1
        c0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
        r0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
        c1 = min(int(np.ceil(pts[:, 0].max())) + pad, w)
        r1 = min(int(np.ceil(pts[:, 1].max())) + pad, h)
        if c1 <= c0 or r1 <= r0:
            continue
        dep = np.zeros((r1 - r0, c1 - c0), np.float32)
        cc = np.floor(pts[:, 0]).astype(np.int64) - c0
        rr = np.floor(pts[:, 1]).astype(np.int64) - r0
        ok = (cc >= 0) & (cc < dep.shape[1]) & (rr >= 0) & (rr < dep.shape[0])
        np.add.at(dep, (rr[ok], cc[ok]), np.float32(amp * np.sqrt(2 * np.pi) * wd))
        deficit[r0:r1, c0:c1] += _ndi.gaussian_filter(dep, wd, truncate=3.0)


# ---------------------------------------------------------------------------
# camera
def apply_camera(rng: np.random.Generator, clean: np.ndarray, dose: float, blur: float,
                 read_noise: float = 0.0) -> np.ndarray:
    """Shot noise at ``dose`` electrons/px (intensity 1), detector blur, read noise; clip to [0, 1].

    Shot noise uses the Gaussian limit ``I + sqrt(I / dose) N(0, 1)`` (indistinguishable
    from Poisson counts at the doses of real micrographs, and ~8x faster); exact
    Poisson counts are drawn only below 5 electrons/px.  ``dose <= 0`` or ``inf``
    means noise-free.
    """
    img = np.array(clean, dtype=np.float32, copy=True)
    np.maximum(img, 0.0, out=img)
    np.minimum(img, 1.0, out=img)
    if dose and np.isfinite(dose) and dose > 0:
        if dose >= 5:
            sd = img * np.float32(1.0 / dose)
            np.sqrt(sd, out=sd)
            sd *= rng.standard_normal(img.shape, dtype=np.float32)
            img += sd
        else:
            img = (rng.poisson(img.astype(np.float64) * dose) / dose).astype(np.float32)
    if blur > 0:
        img = _ndi.gaussian_filter(img, blur, truncate=3.0, mode="reflect")
    if read_noise > 0:
        img += np.float32(read_noise) * rng.standard_normal(img.shape, dtype=np.float32)
    np.maximum(img, 0.0, out=img)
    np.minimum(img, 1.0, out=img)
    return img
