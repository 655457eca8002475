"""Pipelines built from spec strings, and samplers that apply them at the right stage.

:class:`Pipeline` turns a spec (``"L-FN+GB+RB+islands"``) into transforms applied in
the order of the imaging chain (see :data:`simgen.augment.spec.CODES`).

Randomness: every code draws from its *own* stream,
``SeedSequence(key, spawn_key=(code_tag,))`` where ``key`` is one number drawn per
image.  So adding or removing a code never changes the draws of the others: sample 7
of ``"GB"`` and of ``"FN+GB"`` get the same blur, and ``"L-GB"``/``"H-GB"`` map the same
uniform variate to their own ranges.  This makes ablation datasets paired
comparisons.

:class:`AugmentedSampler` wraps any sampler (``sampler(index) -> dict``, see
:class:`simgen.simulate.film.FilmSampler`).  Simulation-time codes (``DC``, ``RD``,
``LR``) are turned into per-sample parameters and handed to a *simulation hook* that
re-runs the sampler with adjusted settings; image-level codes are applied to the
rendered image.  The per-sample key comes from
``simgen.rng.sample_rng(seed, index, TAG_AUGMENT)``, so output does not depend on
worker count or order, and augmenting a stored dataset later with the same seed
(``simgen augment``) draws exactly the same parameters.

Simulation hooks
----------------
A hook is ``hook(sampler, index, params) -> sample dict`` where ``params`` maps the
simulation codes present to their draws::

    {"LG": {}, "DC": {"angle": radians}, "RD": {"density": defects per 10^4 px^2, "quench": sites},
     "LR": {"factor": run-length multiplier}}

A sampler can provide its own by defining ``with_overrides(params) -> sampler`` (and
optionally ``check_overrides(codes)`` raising :class:`~simgen.errors.SpecError` for codes
it cannot honour) — the film and TEM samplers do (see
:meth:`simgen.simulate.film.FilmSampler.with_overrides`); otherwise a hook registered for
its ``kind`` with :func:`register_simulation_hook` is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from simgen.augment.readnoise import NoiseProfile
from simgen.augment.spec import CODES, Spec, SpecItem, parse_spec
from simgen.augment.transforms import TRANSFORMS, Decross, Transform, _as_image, draw
from simgen.errors import ParameterError, SpecError
from simgen.rng import check_seed, sample_rng

__all__ = [
    "Pipeline",
    "AugmentedSampler",
    "TAG_AUGMENT",
    "ANNOTATION_KEYS",
    "register_simulation_hook",
    "simulation_hook",
]

#: Spawn-key tag of the per-sample augmentation stream ("aug").
TAG_AUGMENT = 0x617567
#: Sample-dict entries that are annotations (passed through every transform).
ANNOTATION_KEYS = ("points", "boxes", "mask", "tracks", "tables")


def _code_rng(key: int, item: SpecItem) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(key), spawn_key=(item.info.tag,))))


class Pipeline:
    """The transforms of a spec, applied in imaging-chain order.

    Parameters
    ----------
    spec : str or Spec
    noise_profile : NoiseProfile, optional
        Spectrum for ``FN`` (default: :func:`simgen.augment.readnoise.synthetic_profile`).
    dc : {"simulation", "image"}
        Where ``DC`` acts: handed to the sampler (``"simulation"``) or re-rendered from the
        phase field passed in ``context["phase"]`` (``"image"``).
    decross, regime, anisotropy :
        Base decross angle (radians), Schlieren regime and analyzer-regime anisotropy for
        ``dc="image"`` (taken from the dataset's generator parameters).

    Examples
    --------
    >>> p = Pipeline("L-FN+GB+RB+islands")
    >>> out, ann = p(np.full((64, 64), 0.5, np.float32), np.random.default_rng(0))
    >>> out.shape, out.dtype
    ((64, 64), dtype('float32'))
    """

    def __init__(
        self,
        spec: str | Spec | None = None,
        *,
        noise_profile: NoiseProfile | None = None,
        dc: str = "simulation",
        decross: float = 0.0,
        regime: str = "decrossed",
        anisotropy: float = 0.2,
    ):
        if dc not in ("simulation", "image"):
            raise ParameterError(f"dc must be 'simulation' or 'image', got {dc!r}")
        self.spec = parse_spec(spec)
        self.dc = dc
        self.noise_profile = noise_profile
        self.steps: list[tuple[SpecItem, Transform]] = []
        self.simulation: list[SpecItem] = []
        for item in self.spec.items:
            if item.code == "DC" and dc == "image":
                self.steps.append((item, Decross(**item.ranges(), base=decross, regime=regime, anisotropy=anisotropy)))
            elif item.stage == "simulation":
                self.simulation.append(item)
            elif item.code == "FN":
                self.steps.append((item, TRANSFORMS["FN"](noise_profile, **item.ranges())))
            else:
                self.steps.append((item, TRANSFORMS[item.code](**item.ranges())))

    # -- introspection -------------------------------------------------------
    @property
    def codes(self) -> tuple[str, ...]:
        return self.spec.codes

    @property
    def simulation_codes(self) -> tuple[str, ...]:
        return tuple(i.code for i in self.simulation)

    @property
    def image_codes(self) -> tuple[str, ...]:
        return tuple(i.code for i, _ in self.steps)

    def describe(self) -> dict:
        out = self.spec.describe()
        out["order"] = [str(i) for i in self.spec.items]
        out["dc_stage"] = self.dc if "DC" in self.spec else None
        if "FN" in self.spec:
            t = dict((i.code, t) for i, t in self.steps)["FN"]
            out["noise_profile"] = t.profile.describe()
        return out

    def __repr__(self) -> str:
        return f"Pipeline({self.spec.canonical!r})"

    # -- drawing -------------------------------------------------------------
    @staticmethod
    def new_key(rng: np.random.Generator) -> int:
        """One per-image key from ``rng`` (the only draw the pipeline makes from it)."""
        return int(rng.integers(0, 2**63 - 1))

    def simulation_params(self, key: int) -> dict[str, dict]:
        """Draws of the simulation-time codes for the image of ``key``."""
        out = {}
        for item in self.simulation:
            g = _code_rng(key, item)
            params = {}
            for p in item.info.params:
                lo, hi = item.ranges()[p.name]
                value = draw(g, lo, hi, log=p.log, signed=p.signed, integer=p.integer)
                params[p.name] = math.radians(value) if item.code == "DC" else value
            out[item.code] = {k: round(v, 6) if isinstance(v, float) else v for k, v in params.items()}
        return out

    def image_params(self, key: int, shape: tuple[int, int]) -> dict[str, dict]:
        """Draws of the image-level codes for an image of ``shape`` and ``key``."""
        return {item.code: t.get_params(_code_rng(key, item), shape) for item, t in self.steps}

    # -- applying ------------------------------------------------------------
    def apply_params(self, image, params: dict, annotations=None, *, context=None):
        """Apply the image-level steps with given parameters; returns ``(image, annotations)``."""
        img = _as_image(image)
        for item, t in self.steps:
            img, annotations = t.apply(img, params[item.code], annotations, clip=False, context=context)
        if not self.steps or self.steps[-1][0].code != "ST":
            img = np.clip(img, 0.0, 1.0, out=img if img is not image else None)
        return img.astype(np.float32, copy=False), annotations

    def apply(self, image, key: int, annotations=None, *, context=None):
        """Apply the image-level steps for ``key``; returns ``(image, annotations, params)``."""
        img = _as_image(image)
        params = self.image_params(key, img.shape)
        img, annotations = self.apply_params(img, params, annotations, context=context)
        return img, annotations, params

    def __call__(self, image, rng: np.random.Generator, annotations=None, *, context=None):
        """Albumentations-style: ``(image, annotations)`` with one key drawn from ``rng``."""
        img, annotations, _ = self.apply(image, self.new_key(rng), annotations, context=context)
        return img, annotations


# --------------------------------------------------------------------------- simulation hooks

SimulationHook = Callable[[object, int, dict], dict]
_HOOKS: dict[str, tuple[SimulationHook, Callable | None]] = {}


def register_simulation_hook(kind: str, hook: SimulationHook, check: Callable | None = None) -> None:
    """Register ``hook(sampler, index, params) -> sample`` for samplers of ``kind``.

    ``check(sampler, codes)`` is called once up front and raises
    :class:`~simgen.errors.SpecError` for codes the sampler cannot honour.
    """
    _HOOKS[str(kind)] = (hook, check)


def _overrides_hook(sampler, index: int, params: dict) -> dict:
    return sampler.with_overrides(params)(index)


def simulation_hook(sampler, codes) -> SimulationHook:
    """The hook applying ``codes`` to ``sampler`` (validated), or raise :class:`SpecError`."""
    codes = tuple(codes)
    if hasattr(sampler, "with_overrides"):
        if hasattr(sampler, "check_overrides"):
            sampler.check_overrides(codes)
        return _overrides_hook
    kind = getattr(sampler, "kind", type(sampler).__name__)
    if kind not in _HOOKS:
        raise SpecError(
            f"{'+'.join(codes)} act at simulation time and sampler {kind!r} has no simulation hook; "
            f"image-level codes only for it ({', '.join(c for c in CODES if CODES[c].stage == 'image')})"
        )
    hook, check = _HOOKS[kind]
    if check is not None:
        check(sampler, codes)
    return hook


# --------------------------------------------------------------------------- sampler wrapper


class AugmentedSampler:
    """A sampler whose samples carry the artifacts of ``spec``.

    Parameters
    ----------
    sampler : sampler
        Any object following the sampler protocol (``kind``, ``class_names``,
        ``describe()``, ``__call__(index) -> dict``).
    spec : str, Spec or Pipeline
    noise_profile : NoiseProfile, optional
        For ``FN`` (ignored when ``spec`` is a Pipeline).
    seed : int, optional
        Augmentation master seed (default: the sampler's ``seed``).
    relabel : bool
        After the augmentation, let the sampler make the labels follow the final image
        (its ``relabel(sample) -> sample`` method, e.g.
        :meth:`simgen.simulate.tem.TemSampler.relabel`): labels made on the render cannot
        know the noise and texture added here.

    Raises
    ------
    SpecError
        If simulation-time codes are requested that the sampler cannot honour.
    ParameterError
        If ``relabel`` is asked of a sampler without a ``relabel`` method.
    """

    def __init__(self, sampler, spec, *, noise_profile: NoiseProfile | None = None, seed: int | None = None,
                 relabel: bool = False):
        if relabel and not callable(getattr(sampler, "relabel", None)):
            raise ParameterError(f"sampler {getattr(sampler, 'kind', type(sampler).__name__)!r} cannot relabel "
                                 "the final image (no relabel method)")
        self.relabel = bool(relabel)
        self.sampler = sampler
        self.pipeline = spec if isinstance(spec, Pipeline) else Pipeline(spec, noise_profile=noise_profile)
        if self.pipeline.dc != "simulation":
            raise ParameterError("AugmentedSampler needs a pipeline with dc='simulation'")
        self.seed = check_seed(getattr(sampler, "seed", 0) if seed is None else seed)
        codes = self.pipeline.simulation_codes
        self._hook = simulation_hook(sampler, codes) if codes else None

    kind = property(lambda self: self.sampler.kind)
    class_names = property(lambda self: self.sampler.class_names)

    @property
    def spec(self) -> Spec:
        return self.pipeline.spec

    def describe(self) -> dict:
        aug = {**self.pipeline.describe(), "seed": self.seed}
        if self.relabel:
            aug["relabel"] = True
        return {**self.sampler.describe(), "augment": aug}

    def __call__(self, index: int) -> dict:
        key = Pipeline.new_key(sample_rng(self.seed, index, TAG_AUGMENT))
        sim = self.pipeline.simulation_params(key)
        sample = self._hook(self.sampler, index, sim) if sim else self.sampler(index)
        out = dict(sample)
        annotations = {k: out[k] for k in ANNOTATION_KEYS if k in out}
        image, annotations, params = self.pipeline.apply(
            out["image"], key, annotations, context={"phase": out.get("phase")}
        )
        out.update(annotations)
        out["image"] = image
        out["provenance"] = {**out.get("provenance", {}), "augment": {**sim, **params}}
        return self.sampler.relabel(out) if self.relabel else out
