"""Artifact codes, their intensity levels and the spec-string grammar.

Every artifact has a short code.  The single declarative table :data:`CODES` says,
for each code, at which *stage* it acts, in which order it is applied and the
parameter ranges of its low (``L-``) and high (``H-``) intensity levels.  A code
without a prefix draws from the span of both levels.

Grammar (case-insensitive, spaces ignored)::

    spec    := "none" | term ("+" term)*
    term    := [level "-"] name [ "@" value [":" value] ]
    level   := "L" | "H"
    name    := code | "all" | "image"

* ``all``   = every artifact of the instrument: ``FN RV RB GB DC islands``;
  ``image`` = the image-level ones only (``FN RV RB GB islands``).  The model
  codes ``LG``, ``RD`` and ``LR`` and the robustness noises ``PN GN SP`` are named
  explicitly (``LG+all+RD+LR``).  A level prefix applies to every code of the keyword
  (``L-all``); a code given explicitly overrides the keyword's level
  (``all+H-GB``).
* ``CODE@v`` fixes the code's primary parameter to ``v`` (``FN@0.04``: read noise of
  RMS 0.04); ``CODE@a:b`` draws it from ``[a, b]``.
* Codes are applied in the fixed order of the imaging chain (the order of
  :data:`CODES`), not in the order written: a spec is a *set* of artifacts, so
  ``"GB+FN"`` and ``"FN+GB"`` are the same pipeline.

Stages: ``LG``, ``LR``, ``RD`` and ``DC`` act at *simulation* time (film model, run
length, defect number, decross angle of the renderer); ``DC`` can also act on an
existing image when the phase field φ was stored.  Everything else acts on the
rendered image.

Model codes of the film simulator (:class:`simgen.simulate.film.FilmSampler`):

* ``LG`` selects the Landau–Ginzburg (thermal XY) model for the samples (the same as
  ``--model thermal``), so every row of the published Table 1 is one spec.
* ``RD`` randomizes the number of defects.  Random-defect model: the count is drawn
  from ``density``.  LG model: the quench starts from a field of random correlation
  length ``quench`` (log-uniform, lattice sites), i.e. a random initial defect density.
* ``LR`` stretches the LG run: ``steps × factor`` with ``factor`` log-uniform, so
  stopping times are log-uniform up to ``factor_max × steps`` and the power-law fall of
  the defect count is covered evenly down to low densities.  Long runs exist only for
  the LG model, so ``LR`` implies ``LG``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from simgen.errors import SpecError

__all__ = [
    "Param",
    "CodeInfo",
    "CODES",
    "ORDER",
    "KEYWORDS",
    "LEVELS",
    "Spec",
    "SpecItem",
    "parse_spec",
    "code_ranges",
    "levels_table",
]


@dataclass(frozen=True)
class Param:
    """One randomized parameter of a code.

    ``low``/``high`` are the inclusive ranges of the ``L-``/``H-`` levels; the
    default level spans both.  ``log`` draws log-uniformly, ``signed`` gives the
    drawn magnitude a random sign, ``integer`` draws integers.
    """

    name: str
    low: tuple[float, float]
    high: tuple[float, float]
    unit: str
    doc: str
    log: bool = False
    signed: bool = False
    integer: bool = False

    @property
    def default(self) -> tuple[float, float]:
        return (min(self.low[0], self.high[0]), max(self.low[1], self.high[1]))

    def range(self, level: str | None) -> tuple[float, float]:
        return {"L": self.low, "H": self.high, None: self.default}[level]


@dataclass(frozen=True)
class CodeInfo:
    """A row of the artifact table."""

    code: str
    stage: str  # "simulation" | "image"
    group: str  # "model" | "artifact" | "robustness" | "standardize"
    summary: str
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    tag: int = 0  # stable id: per-code random stream (see Pipeline)

    @property
    def randomized(self) -> bool:
        return bool(self.params)


def _p(*args, **kwargs) -> Param:
    return Param(*args, **kwargs)


#: The artifact table, in application order (the imaging chain: simulation, scene,
#: illumination, optics, photon noise, gain, read noise, defective pixels, standardization).
CODES: dict[str, CodeInfo] = {
    c.code: c
    for c in (
        CodeInfo("LG", "simulation", "model", "Landau-Ginzburg (thermal XY) film model: quenched, coarsened dynamics",
                 aliases=("thermal",), tag=14),
        CodeInfo("LR", "simulation", "model",
                 "long runs: log-uniform stopping time of the thermal (LG) run, up to factor x steps",
                 (_p("factor", (1, 10), (10, 100), "x", "multiplier of the thermal run length (steps)", log=True),),
                 tag=1),
        CodeInfo("RD", "simulation", "model",
                 "random defect number: random count (random model), random quench density (LG model)",
                 (_p("density", (0.1, 0.5), (0.5, 2.0), "1/(100 px)^2",
                     "random model: defects per 10^4 px^2 of usable area"),
                  _p("quench", (0.5, 4.0), (4.0, 24.0), "sites",
                     "LG model: correlation length of the quench's start (about 0.07/quench^2 defects per site)",
                     log=True)), tag=2),
        CodeInfo("DC", "simulation", "artifact", "random decross angle (re-render from phi)",
                 (_p("angle", (2.0, 10.0), (10.0, 45.0), "deg", "offset of the decross angle", signed=True),), tag=3),
        CodeInfo("islands", "image", "artifact", "random circles of random brightness and radius (neutral objects)",
                 (_p("count", (1, 3), (3, 8), "", "number of islands", integer=True),
                  _p("radius", (0.02, 0.06), (0.06, 0.15), "x side", "radius as a fraction of the shorter image side"),
                  _p("opacity", (0.2, 0.5), (0.5, 0.9), "", "blend weight of the island's own brightness")),
                 aliases=("island", "IS"), tag=4),
        CodeInfo("RB", "image", "artifact", "random lighting quadrants (split at a random point)",
                 (_p("amplitude", (0.02, 0.05), (0.05, 0.12), "", "max relative gain change of a quadrant"),), tag=5),
        CodeInfo("GB", "image", "artifact", "Gaussian blur of random sigma",
                 (_p("sigma", (0.4, 1.0), (1.0, 2.5), "px", "standard deviation of the blur"),), tag=6),
        CodeInfo("PN", "image", "robustness", "Poisson (shot) noise",
                 (_p("dose", (300.0, 1000.0), (30.0, 300.0), "counts", "photon counts at intensity 1", log=True),),
                 aliases=("poisson",), tag=7),
        CodeInfo("RV", "image", "artifact", "random brightness and contrast (gain and offset)",
                 (_p("contrast", (0.05, 0.15), (0.15, 0.4), "", "gain change |g - 1|", signed=True),
                  _p("brightness", (0.02, 0.06), (0.06, 0.15), "", "offset |o|", signed=True)), tag=8),
        CodeInfo("FN", "image", "artifact", "Fourier read noise (periodic camera noise from a real spectrum)",
                 (_p("rms", (0.01, 0.03), (0.03, 0.08), "", "RMS of the injected periodic noise"),), tag=9),
        CodeInfo("GN", "image", "robustness", "Gaussian (white read) noise",
                 (_p("sigma", (0.01, 0.04), (0.04, 0.12), "", "standard deviation"),),
                 aliases=("gauss", "gaussian"), tag=10),
        CodeInfo("SP", "image", "robustness", "salt-and-pepper (dead/hot pixel) noise",
                 (_p("amount", (0.001, 0.005), (0.005, 0.03), "", "fraction of pixels replaced", log=True),),
                 aliases=("s&p", "saltpepper"), tag=11),
        CodeInfo("JP", "image", "artifact", "lossy JPEG storage of the frame (8x8 block DCT quantization)",
                 (_p("quality", (75, 95), (30, 75), "", "JPEG quality factor (lower = coarser)", integer=True),),
                 aliases=("jpeg", "jpg"), tag=13),
        CodeInfo("ST", "image", "standardize", "standardization x' = (x - mean)/(6 sigma) + 0.5, clipped",
                 aliases=("std", "standardize"), tag=12),
    )
}
ORDER = tuple(CODES)
LEVELS = ("L", "H")
KEYWORDS: dict[str, tuple[str, ...]] = {
    "all": ("FN", "RV", "RB", "GB", "DC", "islands"),
    "image": ("FN", "RV", "RB", "GB", "islands"),
}
_LOOKUP: dict[str, str] = {}
for _info in CODES.values():
    for _name in (_info.code, *_info.aliases):
        _LOOKUP[_name.lower()] = _info.code


def _valid_list() -> str:
    return (
        f"valid codes: {', '.join(ORDER)}; keywords: {', '.join(KEYWORDS)}, none; "
        "prefixes L- (low) and H- (high)"
    )


@dataclass(frozen=True)
class SpecItem:
    """One code of a spec: its level and optional fixed range of the primary parameter."""

    code: str
    level: str | None = None
    fixed: tuple[float, float] | None = None

    @property
    def info(self) -> CodeInfo:
        return CODES[self.code]

    @property
    def stage(self) -> str:
        return self.info.stage

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Parameter ranges ``{name: (lo, hi)}`` of this item."""
        out = {p.name: tuple(p.range(self.level)) for p in self.info.params}
        if self.fixed is not None:
            out[self.info.params[0].name] = self.fixed
        return out

    def __str__(self) -> str:
        text = f"{self.level}-{self.code}" if self.level else self.code
        if self.fixed is not None:
            lo, hi = self.fixed
            text += f"@{_num(lo)}" if lo == hi else f"@{_num(lo)}:{_num(hi)}"
        return text


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Spec:
    """A parsed spec: a set of :class:`SpecItem` in application order."""

    items: tuple[SpecItem, ...] = ()
    text: str = "none"

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(i.code for i in self.items)

    @property
    def canonical(self) -> str:
        return "+".join(str(i) for i in self.items) or "none"

    @property
    def simulation_items(self) -> tuple[SpecItem, ...]:
        return tuple(i for i in self.items if i.stage == "simulation")

    @property
    def image_items(self) -> tuple[SpecItem, ...]:
        return tuple(i for i in self.items if i.stage == "image")

    def item(self, code: str) -> SpecItem | None:
        for i in self.items:
            if i.code == code:
                return i
        return None

    def __contains__(self, code: str) -> bool:
        return self.item(code) is not None

    def without(self, *codes: str) -> "Spec":
        items = tuple(i for i in self.items if i.code not in codes)
        return Spec(items, "+".join(str(i) for i in items) or "none")

    def describe(self) -> dict:
        """JSON-able provenance: the text, canonical form and resolved parameter ranges."""
        return {
            "spec": self.text,
            "canonical": self.canonical,
            "codes": {str(i): {"stage": i.stage, "ranges": {k: list(v) for k, v in i.ranges().items()}} for i in self.items},
        }

    def __str__(self) -> str:
        return self.canonical


def _parse_fixed(code: str, text: str, spec: str) -> tuple[float, float]:
    info = CODES[code]
    if not info.params:
        raise SpecError(f"{code} takes no value (in spec {spec!r})")
    lo_s, sep, hi_s = text.partition(":")
    try:
        lo = float(lo_s)
        hi = float(hi_s) if sep else lo
    except ValueError:
        raise SpecError(f"bad value {text!r} for {code} in spec {spec!r}; write {code}@0.5 or {code}@0.2:0.8") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise SpecError(f"bad range {text!r} for {code} in spec {spec!r}; need finite lo <= hi")
    p = info.params[0]
    if lo < 0 and not p.signed:
        raise SpecError(f"{code}@{text}: {p.name} must be >= 0")
    if p.log and lo <= 0:
        raise SpecError(f"{code}@{text}: {p.name} must be > 0")
    return (lo, hi)


def parse_spec(text: "str | Spec | None") -> Spec:
    """Parse a spec string (see module docstring) into a :class:`Spec`.

    Raises
    ------
    SpecError
        On an unknown code (the message lists the valid ones), a repeated code, a
        level on a code without levels, or a malformed value.
    """
    if isinstance(text, Spec):
        return text
    if text is None:
        return Spec()
    if not isinstance(text, str):
        raise SpecError(f"a spec must be a string like 'FN+GB+RB', got {type(text).__name__}")
    raw = text
    clean = "".join(text.split())
    if clean.lower() in ("", "none", "raw"):
        return Spec((), raw.strip() or "none")
    explicit: dict[str, SpecItem] = {}
    implied: dict[str, SpecItem] = {}
    for term in clean.split("+"):
        if not term:
            raise SpecError(f"empty term in spec {raw!r}; separate codes with single '+' (e.g. 'FN+GB')")
        level = None
        body = term
        if len(term) > 2 and term[1] == "-" and term[0].upper() in LEVELS:
            level, body = term[0].upper(), term[2:]
        name, at, value = body.partition("@")
        key = name.lower()
        if key in KEYWORDS:
            if at:
                raise SpecError(f"keyword {key!r} takes no value (in spec {raw!r})")
            for code in KEYWORDS[key]:
                implied[code] = SpecItem(code, level)
            continue
        if key in ("none", "raw"):
            raise SpecError(f"'{name}' cannot be combined with other codes (in spec {raw!r})")
        code = _LOOKUP.get(key)
        if code is None:
            close = difflib.get_close_matches(key, list(_LOOKUP) + list(KEYWORDS), n=1, cutoff=0.6)
            hint = f" (did you mean {_LOOKUP.get(close[0], close[0])!r}?)" if close else ""
            raise SpecError(f"unknown augmentation code {name!r} in spec {raw!r}{hint}; {_valid_list()}")
        info = CODES[code]
        if level and not info.randomized:
            raise SpecError(f"{code} has no intensity levels; write {code} instead of {level}-{code}")
        fixed = _parse_fixed(code, value, raw) if at else None
        if level and fixed:
            raise SpecError(f"{term!r}: give either a level prefix or a value, not both")
        if code in explicit:
            raise SpecError(f"{code} appears twice in spec {raw!r}")
        explicit[code] = SpecItem(code, level, fixed)
    merged = {**implied, **explicit}
    items = tuple(merged[c] for c in ORDER if c in merged)
    return Spec(items, raw.strip())


def code_ranges(code: str, level: str | None = None) -> dict[str, tuple[float, float]]:
    """Parameter ranges of ``code`` at ``level`` (``"L"``, ``"H"`` or ``None``)."""
    key = _LOOKUP.get(str(code).lower())
    if key is None:
        raise SpecError(f"unknown augmentation code {code!r}; {_valid_list()}")
    if level not in (None, *LEVELS):
        raise SpecError(f"unknown level {level!r}; choose L or H")
    return SpecItem(key, level).ranges()


def levels_table() -> list[dict]:
    """Rows ``{code, stage, group, param, unit, low, high, default, summary}`` of :data:`CODES`."""
    rows = []
    for info in CODES.values():
        params = info.params or (None,)
        for p in params:
            rows.append(
                {
                    "code": info.code,
                    "stage": "simulation or image (phi stored)" if info.code == "DC" else info.stage,
                    "group": info.group,
                    "param": p.name if p else "",
                    "unit": p.unit if p else "",
                    "low": list(p.low) if p else None,
                    "high": list(p.high) if p else None,
                    "default": list(p.default) if p else None,
                    "summary": info.summary,
                    "aliases": list(info.aliases),
                }
            )
    return rows
