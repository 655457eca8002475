"""Seeded image transforms that make simulated images look like a real instrument.

Every transform is a small class with

* ``get_params(rng, shape) -> dict`` — draw this image's random parameters (plain
  JSON-able numbers, recorded as provenance; noise fields are drawn later from a
  ``seed`` in the dict so the record stays small);
* ``apply(image, params, annotations=None, *, clip=True, context=None)`` — apply
  them deterministically and return ``(image, annotations)``;
* ``__call__(image, rng, annotations=None) -> (image, annotations)`` — both at once,
  albumentations style.

Images are float32 ``(H, W)``; outputs of ``__call__`` are float32 in [0, 1].  Inside a
:class:`~simgen.augment.pipeline.Pipeline` intermediate results are not clipped (the
scene can be brighter than the camera's range); the camera clips once at the end.

Annotations are a mapping of named records (``points``, ``boxes``, ``mask``, ...).
Every transform here is photometric — none moves content, and islands are never
opaque (``opacity < 1``) so no defect is hidden — so all return the annotations
object unchanged (bit-identical).  A transform that moved or hid content would set
``moves_content = True`` and return updated records.

Parameter ranges come from :data:`simgen.augment.spec.CODES` (one declarative table
with the ``L-``/``H-`` levels); the constructors' defaults are the default levels.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.augment.fast import gaussian_blur, poisson_counts
from simgen.augment.readnoise import NoiseProfile, synthesize, synthetic_profile
from simgen.augment.spec import CODES
from simgen.errors import ParameterError
from simgen.simulate.schlieren import REGIMES, schlieren

__all__ = [
    "Transform",
    "Islands",
    "LightingQuadrants",
    "GaussianBlur",
    "PoissonNoise",
    "BrightnessContrast",
    "ReadNoise",
    "GaussianNoise",
    "SaltPepper",
    "Jpeg",
    "Standardize",
    "Decross",
    "standardize",
    "draw",
    "TRANSFORMS",
]


def standardize(image: np.ndarray) -> np.ndarray:
    """``x' = (x - mean) / (6 sigma) + 0.5``, clipped to [0, 1] (float32).

    Applied alike to simulated and real images so that both reach a network with the
    same mean (0.5) and spread (±3σ fills [0, 1]).  A constant image maps to 0.5.
    """
    x = np.asarray(image, np.float32)
    mean = float(x.mean(dtype=np.float64))
    out = x - np.float32(mean)
    flat = out.reshape(-1)
    # variance of the centred values: a float32 dot product (no cancellation after centring)
    sd = float(np.sqrt(max(float(np.dot(flat, flat)) / max(flat.size, 1), 0.0)))
    if not sd > 0 or not np.isfinite(sd):
        return np.full(x.shape, 0.5, np.float32)
    out *= np.float32(1.0 / (6.0 * sd))
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def draw(rng: np.random.Generator, lo: float, hi: float, *, log: bool = False, signed: bool = False, integer: bool = False):
    """One draw from ``[lo, hi]`` (log-uniform, random sign, integer as requested).

    Always consumes the same number of variates (one uniform, plus one for the sign)
    so level changes do not shift later draws.
    """
    u = float(rng.random())
    if integer:
        value = int(math.floor(lo + u * (hi - lo + 1)))
        value = min(value, int(hi))
    elif log and lo > 0:
        value = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    else:
        value = float(lo + u * (hi - lo))
    if signed:
        value = value if rng.random() < 0.5 else -value
    return value


def _check_range(name: str, r, lo_bound=None, hi_bound=None) -> tuple[float, float]:
    try:
        lo, hi = (float(r), float(r)) if np.isscalar(r) else (float(r[0]), float(r[1]))
    except (TypeError, ValueError, IndexError):
        raise ParameterError(f"{name} must be a number or a (low, high) pair, got {r!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ParameterError(f"{name} range must be finite with low <= high, got {r!r}")
    if lo_bound is not None and lo < lo_bound:
        raise ParameterError(f"{name} must be >= {lo_bound}, got {r!r}")
    if hi_bound is not None and hi > hi_bound:
        raise ParameterError(f"{name} must be <= {hi_bound}, got {r!r}")
    return lo, hi


def _default(code: str, param: str) -> tuple[float, float]:
    for p in CODES[code].params:
        if p.name == param:
            return p.default
    raise KeyError(param)


def _param_info(code: str, param: str):
    return next(p for p in CODES[code].params if p.name == param)


class Transform:
    """Base class: a seeded, photometric image transform."""

    code: str = ""
    moves_content = False

    def get_params(self, rng: np.random.Generator, shape: tuple[int, int]) -> dict:
        return {}

    def apply(self, image: np.ndarray, params: dict, annotations=None, *, clip: bool = True, context=None):
        raise NotImplementedError

    def __call__(self, image: np.ndarray, rng: np.random.Generator, annotations=None):
        image = _as_image(image)
        params = self.get_params(rng, image.shape)
        return self.apply(image, params, annotations, clip=True)

    def _range(self, param: str, value, lo_bound=None, hi_bound=None) -> tuple[float, float]:
        """Validated ``(lo, hi)`` of ``param``; ``None`` means the default level of the table."""
        value = _default(self.code, param) if value is None else value
        return _check_range(f"{self.code} {param}", value, lo_bound, hi_bound)

    def _draw(self, rng, param: str, r):
        p = _param_info(self.code, param)
        return draw(rng, r[0], r[1], log=p.log, signed=p.signed, integer=p.integer)

    def describe(self) -> dict:
        return {"code": self.code, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _as_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ParameterError(f"transforms take 2-D (H, W) images, got shape {image.shape}")
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    return image


def _finish(out: np.ndarray, clip: bool) -> np.ndarray:
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


class Islands(Transform):
    """islands — random discs of random brightness and radius.

    Imitates neutral, non-defect objects: islands (thicker regions) of a smectic film,
    dust or inclusions.  Each disc blends the image towards its own brightness ``b``
    with weight ``opacity < 1`` and a one-pixel soft edge, so the texture underneath
    stays visible and annotations are unchanged.
    """

    code = "islands"

    def __init__(self, count=None, radius=None, opacity=None, brightness=(0.0, 1.0)):
        self.count = self._range("count", count, 0)
        self.radius = self._range("radius", radius, 0, 1)
        self.opacity = self._range("opacity", opacity, 0, 1)
        self.brightness = _check_range("islands brightness", brightness, 0, 1)
        if self.opacity[1] >= 1.0:
            raise ParameterError("islands opacity must stay below 1 (opaque islands would hide defects)")

    def get_params(self, rng, shape):
        h, w = shape
        n = self._draw(rng, "count", self.count)
        side = min(h, w)
        discs = []
        for _ in range(int(n)):
            r = self._draw(rng, "radius", self.radius) * side
            discs.append(
                [
                    round(float(rng.uniform(0, w)), 3),
                    round(float(rng.uniform(0, h)), 3),
                    round(float(r), 3),
                    round(float(rng.uniform(*self.brightness)), 4),
                    round(float(self._draw(rng, "opacity", self.opacity)), 4),
                ]
            )
        return {"discs": discs}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        out = np.array(image, np.float32, copy=True)
        h, w = out.shape
        for x, y, r, b, a in params["discs"]:
            if r <= 0 or a <= 0:
                continue
            r0, r1 = max(0, int(y - r - 2)), min(h, int(math.ceil(y + r + 2)))
            c0, c1 = max(0, int(x - r - 2)), min(w, int(math.ceil(x + r + 2)))
            if r0 >= r1 or c0 >= c1:
                continue
            yy = np.arange(r0, r1, dtype=np.float32)[:, None] + np.float32(0.5 - y)
            xx = np.arange(c0, c1, dtype=np.float32)[None, :] + np.float32(0.5 - x)
            cover = np.clip(np.float32(r + 0.5) - np.sqrt(yy * yy + xx * xx), 0.0, 1.0) * np.float32(a)
            win = out[r0:r1, c0:c1]
            win += cover * (np.float32(b) - win)
        return _finish(out, clip), annotations


class LightingQuadrants(Transform):
    """RB — random lighting quadrants.

    Imitates uneven illumination / tiled exposure: the image is split at a random point
    into four quadrants whose illumination differs slightly, a multiplicative gain
    ``1 + d_q`` with ``|d_q| <= amplitude``.
    """

    code = "RB"

    def __init__(self, amplitude=None, split=(0.25, 0.75)):
        self.amplitude = self._range("amplitude", amplitude, 0, 1)
        self.split = _check_range("RB split", split, 0, 1)

    def get_params(self, rng, shape):
        a = self._draw(rng, "amplitude", self.amplitude)
        cy, cx = (float(rng.uniform(*self.split)) for _ in range(2))
        gains = [round(1.0 + float(rng.uniform(-a, a)), 5) for _ in range(4)]
        return {"split": [round(cy, 5), round(cx, 5)], "gains": gains}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        out = np.array(image, np.float32, copy=True)
        h, w = out.shape
        cy, cx = params["split"]
        r, c = int(round(cy * h)), int(round(cx * w))
        g = [np.float32(v) for v in params["gains"]]
        out[:r, :c] *= g[0]
        out[:r, c:] *= g[1]
        out[r:, :c] *= g[2]
        out[r:, c:] *= g[3]
        return _finish(out, clip), annotations


class GaussianBlur(Transform):
    """GB — Gaussian blur of random sigma.

    Imitates the point-spread function of the optics (defocus, finite aperture) with a
    Gaussian of standard deviation ``sigma`` px (reflecting borders, kernel truncated at
    3.5 sigma as in PIL/albumentations).  Runs on OpenCV's separable blur when installed
    (SciPy otherwise, equal to float32 rounding; see :func:`simgen.augment.fast.gaussian_blur`).
    """

    code = "GB"

    def __init__(self, sigma=None, truncate: float = 3.5):
        self.sigma = self._range("sigma", sigma, 0)
        self.truncate = float(truncate)

    def get_params(self, rng, shape):
        return {"sigma": round(self._draw(rng, "sigma", self.sigma), 5)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        out = gaussian_blur(image, float(params["sigma"]), self.truncate)
        return _finish(out, clip), annotations


class PoissonNoise(Transform):
    """PN — Poisson (photon shot) noise.

    ``x' = Poisson(dose * x) / dose``: ``dose`` is the number of photons (electrons)
    at intensity 1.  Same as ``skimage.util.random_noise(mode="poisson")`` on an image
    with ``dose`` grey levels (skimage infers that count from the unique values).  Counts
    are exact below a mean of 15 and a second-order Cornish-Fisher normal approximation
    above (total-variation distance <= 0.0003 from the Poisson law, same mean and variance;
    see :func:`simgen.augment.fast.poisson_counts`), drawn in float32.
    """

    code = "PN"

    def __init__(self, dose=None):
        self.dose = self._range("dose", dose, 1e-6)

    def get_params(self, rng, shape):
        return {"dose": round(self._draw(rng, "dose", self.dose), 4), "seed": _seed(rng)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        dose = np.float32(params["dose"])
        lam = np.maximum(np.asarray(image, np.float32), np.float32(0.0))
        lam *= dose
        out = poisson_counts(lam, np.random.default_rng(params["seed"]))
        out /= dose
        return _finish(out, clip), annotations


class BrightnessContrast(Transform):
    """RV — random brightness and contrast.

    Imitates the camera's gain and black level changing between sessions:
    ``x' = g x + o`` with ``g = 1 ± contrast`` and ``o = ± brightness``.  Applied
    before the read noise, so it also changes the signal-to-noise ratio; on its own it
    is undone by standardization except where it saturates.
    """

    code = "RV"

    def __init__(self, contrast=None, brightness=None):
        self.contrast = self._range("contrast", contrast, 0, 1)
        self.brightness = self._range("brightness", brightness, 0, 1)

    def get_params(self, rng, shape):
        g = 1.0 + self._draw(rng, "contrast", self.contrast)
        o = self._draw(rng, "brightness", self.brightness)
        return {"gain": round(g, 5), "offset": round(o, 5)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        out = np.asarray(image, np.float32) * np.float32(params["gain"])
        out += np.float32(params["offset"])
        return _finish(out, clip), annotations


class ReadNoise(Transform):
    """FN — Fourier read noise (see :mod:`simgen.augment.readnoise`).

    Adds a periodic noise field with the power spectrum of ``profile`` (amplitudes of a
    real camera, random phases) and standard deviation ``rms`` (intensity units).
    """

    code = "FN"

    def __init__(self, profile: NoiseProfile | None = None, rms=None):
        if profile is not None and not isinstance(profile, NoiseProfile):
            raise ParameterError(f"FN needs a NoiseProfile, got {type(profile).__name__}")
        self.profile = profile if profile is not None else synthetic_profile()
        self.rms = self._range("rms", rms, 0)
        self._cache: dict = {}

    def get_params(self, rng, shape):
        return {"rms": round(self._draw(rng, "rms", self.rms), 6), "seed": _seed(rng)}

    def noise(self, shape, seed: int) -> np.ndarray:
        """The unit-variance noise field of ``seed``."""
        return synthesize(self.profile, shape, np.random.default_rng(seed), self._cache)

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        field_ = self.noise(np.shape(image), params["seed"])
        field_ *= np.float32(params["rms"])
        field_ += np.asarray(image, np.float32)
        return _finish(field_, clip), annotations

    def describe(self) -> dict:
        return {"code": self.code, "rms": self.rms, "profile": self.profile.describe()}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


class GaussianNoise(Transform):
    """GN — additive white Gaussian noise (read noise without structure).

    Same as ``skimage.util.random_noise(mode="gaussian", var=sigma**2)``.
    """

    code = "GN"

    def __init__(self, sigma=None):
        self.sigma = self._range("sigma", sigma, 0)

    def get_params(self, rng, shape):
        return {"sigma": round(self._draw(rng, "sigma", self.sigma), 6), "seed": _seed(rng)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        noise = np.random.default_rng(params["seed"]).standard_normal(np.shape(image), dtype=np.float32)
        noise *= np.float32(params["sigma"])
        noise += np.asarray(image, np.float32)
        return _finish(noise, clip), annotations


class SaltPepper(Transform):
    """SP — salt-and-pepper noise: dead (0) and hot/saturated (1) pixels.

    A fraction ``amount`` of the pixels is replaced, half by 1 and half by 0, as
    ``skimage.util.random_noise(mode="s&p", amount=amount)``.
    """

    code = "SP"

    def __init__(self, amount=None, salt_vs_pepper: float = 0.5):
        self.amount = self._range("amount", amount, 0, 1)
        self.salt_vs_pepper = float(salt_vs_pepper)
        if not 0 <= self.salt_vs_pepper <= 1:
            raise ParameterError(f"salt_vs_pepper must be in [0, 1], got {salt_vs_pepper}")

    def get_params(self, rng, shape):
        return {"amount": round(self._draw(rng, "amount", self.amount), 6), "seed": _seed(rng)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        out = np.array(image, np.float32, copy=True)
        g = np.random.default_rng(params["seed"])
        n = int(round(float(params["amount"]) * out.size))
        if n:
            idx = g.choice(out.size, size=n, replace=False)
            salt = g.random(n) < self.salt_vs_pepper
            flat = out.reshape(-1)
            flat[idx] = np.where(salt, np.float32(1.0), np.float32(0.0))
        return _finish(out, clip), annotations


class Jpeg(Transform):
    """JP — store the frame as an 8-bit JPEG at a random quality and read it back.

    Many real micrographs reach the user as JPEG (video frames, exported figures): 8x8 block
    artifacts and quantized fine detail are part of their look.  Pillow's encoder (libjpeg,
    4:4:4 greyscale, no chroma) is deterministic for a given quality, so no seed is needed.
    """

    code = "JP"

    def __init__(self, quality=None):
        self.quality = self._range("quality", quality, 1, 100)

    def get_params(self, rng, shape):
        return {"quality": int(round(self._draw(rng, "quality", self.quality)))}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        import io

        from PIL import Image

        img = np.asarray(image, np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.rint(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)).save(
            buf, format="JPEG", quality=int(params["quality"]))
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im, np.float32) / np.float32(255.0)
        return _finish(out, clip), annotations


class Standardize(Transform):
    """ST — :func:`standardize` (deterministic; no levels)."""

    code = "ST"

    def apply(self, image, params, annotations=None, *, clip=True, context=None):
        return standardize(image), annotations


class Decross(Transform):
    """DC — random decross angle: re-render the Schlieren image from the phase field φ.

    The decross angle δ rotates the extinction direction of the analyser.  At
    simulation time the sampler renders with ``decross + angle``; on an existing image
    this transform re-renders from the stored φ (``context["phase"]``) with
    :func:`simgen.simulate.schlieren.schlieren`, discarding the old pixels.

    Note: in the pure ``"decrossed"``/``"crossed"`` limits the renderer depends on
    ``φ - δ`` only, so for the random-defect and thermal models (whose global phase is
    uniform) DC changes each image but not the distribution of images.  In the
    ``"analyzer"`` regime δ sets the balance of the two- and four-brush contributions,
    and DC changes the look of the texture.
    """

    code = "DC"

    def __init__(self, angle=None, base: float = 0.0, regime: str = "decrossed", anisotropy: float = 0.2):

        self.angle = self._range("angle", angle)
        self.base = float(base)
        if regime not in REGIMES:
            raise ParameterError(f"unknown Schlieren regime {regime!r}; choose one of {', '.join(REGIMES)}")
        self.regime = regime
        self.anisotropy = float(anisotropy)

    def get_params(self, rng, shape):
        return {"angle": round(math.radians(self._draw(rng, "angle", self.angle)), 6)}

    def apply(self, image, params, annotations=None, *, clip=True, context=None):

        phase = None if context is None else context.get("phase")
        if phase is None:
            raise ParameterError("DC re-renders from the phase field, but this sample has none (simulate with --store-phase)")
        out = schlieren(np.asarray(phase, np.float32), self.base + float(params["angle"]), self.regime, self.anisotropy)
        return _finish(np.array(out, np.float32, copy=True), clip), annotations

    def __call__(self, image, rng, annotations=None, phase=None):
        image = _as_image(image)
        params = self.get_params(rng, image.shape)
        return self.apply(image, params, annotations, context={"phase": phase})


#: Image-level transform class of each code.
TRANSFORMS: dict[str, type[Transform]] = {
    "islands": Islands,
    "RB": LightingQuadrants,
    "GB": GaussianBlur,
    "PN": PoissonNoise,
    "RV": BrightnessContrast,
    "FN": ReadNoise,
    "GN": GaussianNoise,
    "SP": SaltPepper,
    "JP": Jpeg,
    "ST": Standardize,
    "DC": Decross,
}
