"""Artifact ablation: one dataset per artifact combination, optionally a detector per dataset.

A *grid* (YAML, see ``simgen/configs/ablation.yaml``) names the sampler, its
parameters, the images per combination and the combinations themselves — explicitly
(``combinations: {name: spec}``) and/or generated Table-1 style (``table1:``: raw,
each artifact alone, every pair, all, all at low intensity, each model alone and all
artifacts with each model).

*Named grids* ship in ``simgen/configs``: ``--grid table1`` is the 21-row Table 1 of the
smectic-C film study (``configs/table1.yaml``: its two published rows with their peak F1
and mAP under ``published:``, and a documented reconstruction of the others, see
``docs/film.md``).  A grid file may start from a named grid with ``base: <name>``: its keys
replace the base's, and its ``config`` is merged into the base's (a tiny ``table1`` for
tests: ``{base: table1, config: {size: 64}, n: 4}``).

:func:`run_ablation` runs these steps (plain functions, each can be run alone):

1. :func:`plan_ablation` — validate the grid and decide, per combination, whether its
   dataset ``datasets/<name>.h5`` is generated or reused (a dataset made from the same
   grid entry is reused, so an interrupted ablation resumes); nothing is written;
2. :func:`make_dataset` — generate one combination's dataset;
3. with ``eval_on`` — :func:`realism_distances` of each dataset to those (real) images;
4. with training — :func:`train_and_evaluate`: ``train_fn(train_h5, run_dir) -> weights``
   and ``eval_fn(weights, eval_on) -> {"peak_f1": ..., "ap": ..., ...}`` per combination.
   Without ``eval_on`` the detectors are scored on a held-out synthetic set
   (:func:`plan_eval_set`: ``eval/heldout.h5``, the grid's sampler with another seed and
   ``eval_spec``).  The default hooks, ``train_for_ablation`` and ``eval_for_ablation`` of
   :data:`TRAIN_HOOKS_MODULE`, train a YOLO per dataset and score peak F1 / AP;
   ``hooks_module`` (``--hooks``) names another module providing both.  **Importing a
   module runs its code: give only modules you trust.**
5. :func:`write_results` — ``ablation.csv``, ``ablation.md``, ``ablation.json`` and, when
   there are metrics, the bar plot ``ablation.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import itertools
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path, atomic_write_text
from simgen.augment.realism import ImageSetStats, realism_distance
from simgen.augment.spec import CODES, parse_spec
from simgen.datasets.augment_io import augmented_sampler, iter_images, load_noise_profile
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.errors import DataError, ParameterError, SimgenError
from simgen.experiments.common import ExperimentResult
from simgen.rng import check_seed
from simgen.simulate.film import FilmConfig, FilmSampler
from simgen.simulate.tem import TemConfig, TemSampler

__all__ = [
    "TRAIN_HOOKS_MODULE",
    "AblationGrid",
    "AblationResult",
    "PlannedDataset",
    "expand_combinations",
    "load_grid",
    "make_dataset",
    "make_sampler",
    "plan_ablation",
    "plan_eval_set",
    "named_grids",
    "grid_rows",
    "select_combinations",
    "realism_distances",
    "resolve_training_hooks",
    "run_ablation",
    "train_and_evaluate",
    "write_results",
]

#: Module providing the default ``train_for_ablation`` and ``eval_for_ablation`` (YOLO, peak F1 / AP).
TRAIN_HOOKS_MODULE = "simgen.experiments.ablation_yolo"
_HOOKS_SIGNATURE = ("train_for_ablation(train_h5, run_dir) -> weights and "
                    "eval_for_ablation(weights, eval_on) -> {'peak_f1', 'ap', ...}")
_GRID_KEYS = ("sampler", "config", "n", "seed", "image_dtype", "standardize", "noise_profile", "realism_images",
              "table1", "combinations", "eval_spec", "eval_n", "eval_seed", "published", "base")
_TABLE1_KEYS = ("artifacts", "models", "raw", "singles", "pairs", "all", "low")
#: Name of the held-out evaluation set (``eval/heldout.h5``) used when no ``eval_on`` is given.
HELDOUT = "heldout"
_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class AblationGrid:
    """A parsed ablation grid (see module docstring and ``simgen/configs/ablation.yaml``).

    ``eval_spec``, ``eval_n`` and ``eval_seed`` describe the held-out synthetic set trained
    detectors are scored on when no real evaluation set is given (defaults: all ``table1``
    artifacts together, else ``none``; as many images as each combination; ``seed + 1``).
    """

    sampler: str = "film"
    config: dict = field(default_factory=dict)
    n: int = 1000
    seed: int = 0
    image_dtype: str = "uint8"
    standardize: bool = True
    noise_profile: str = "default"
    realism_images: int = 64
    table1: dict | None = None
    combinations: dict = field(default_factory=dict)
    eval_spec: str | None = None
    eval_n: int | None = None
    eval_seed: int | None = None
    published: dict = field(default_factory=dict)
    path: str | None = None

    def validate(self) -> "AblationGrid":
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ParameterError(f"grid n must be a positive integer, got {self.n!r}")
        self.seed = check_seed(self.seed)
        if self.image_dtype not in ("uint8", "uint16", "float32"):
            raise ParameterError(f"grid image_dtype must be uint8, uint16 or float32, got {self.image_dtype!r}")
        if not isinstance(self.config, dict):
            raise ParameterError("grid config must be a mapping of sampler parameters")
        if not isinstance(self.realism_images, int) or self.realism_images < 0:
            raise ParameterError(f"grid realism_images must be an integer >= 0, got {self.realism_images!r}")
        if not isinstance(self.combinations, dict):
            raise ParameterError("grid combinations must be a mapping name: spec")
        if not isinstance(self.published, dict) or not all(
                isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
                for v in self.published.values()):
            raise ParameterError("grid published must be a mapping name: {metric: number}")
        if self.table1 is not None:
            if not isinstance(self.table1, dict):
                raise ParameterError("grid table1 must be a mapping")
            unknown = sorted(set(self.table1) - set(_TABLE1_KEYS))
            if unknown:
                raise ParameterError(f"unknown table1 key(s) {', '.join(unknown)}; valid: {', '.join(_TABLE1_KEYS)}")
        if self.eval_n is not None and (isinstance(self.eval_n, bool) or not isinstance(self.eval_n, int)
                                        or self.eval_n < 1):
            raise ParameterError(f"grid eval_n must be a positive integer, got {self.eval_n!r}")
        if self.eval_seed is not None and check_seed(self.eval_seed) == self.seed:
            raise ParameterError(f"grid eval_seed must differ from seed ({self.seed}): the evaluation set is held out")
        parse_spec(self.heldout_spec())
        combos = expand_combinations(self)
        if not combos:
            raise ParameterError("the grid defines no combinations (give table1: or combinations:)")
        stray = sorted(set(self.published) - {name for name, _ in combos})
        if stray:
            raise ParameterError(f"grid published names row(s) the grid does not have: {', '.join(stray)}")
        return self

    def heldout_spec(self) -> str:
        """Spec of the held-out evaluation set: ``eval_spec``, else all table1 artifacts, else ``none``."""
        if self.eval_spec is not None:
            return str(self.eval_spec)
        arts = [str(a) for a in (self.table1 or {}).get("artifacts", [])] if self.table1 else []
        return "+".join(arts) or "none"


@dataclass
class PlannedDataset:
    """One dataset of the ablation: its name, full (canonical) spec, sampler and file; ``reuse``: the
    file exists and was made from the same grid entry, so it is not generated again."""

    name: str
    spec: str
    sampler: object
    path: Path
    n: int
    seed: int
    reuse: bool
    attrs: dict
    row: int | None = None


@dataclass
class AblationResult(ExperimentResult):
    """One row per combination (name, spec, dataset, realism distances, weights, metrics) and the files
    written; ``eval_on`` is what trained detectors were scored on (``None`` without training)."""

    output: Path
    rows: list[dict]
    files: list[Path]
    eval_on: Path | None = None

    @property
    def table(self) -> Path:
        return self.output / "ablation.md"

    def to_dict(self) -> dict:
        return {"rows": self.rows, "files": [str(f) for f in self.files],
                "eval_on": None if self.eval_on is None else str(self.eval_on)}


def named_grids() -> dict[str, Path]:
    """The grids shipped in ``simgen/configs``: ``{name: path}`` (``table1``, ``ablation``)."""
    return {p.stem: p for p in sorted(_CONFIGS.glob("*.yaml"))}


def _resolve_grid_path(path) -> Path:
    """``path`` itself when it exists, else the shipped grid of that name."""
    p = Path(path)
    if p.exists():
        return p
    named = named_grids()
    if str(path) in named:
        return named[str(path)]
    raise DataError(f"grid {path} does not exist (named grids: {', '.join(named)})")


def _read_grid(path, seen: tuple = ()) -> dict:
    import yaml

    path = _resolve_grid_path(path)
    if path.resolve() in seen:
        raise ParameterError(f"grid {path}: 'base' grids form a loop")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"cannot parse grid {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(raw, dict):
        raise DataError(f"grid {path} must be a YAML mapping")
    unknown = sorted(set(raw) - set(_GRID_KEYS))
    if unknown:
        raise ParameterError(f"unknown grid key(s) {', '.join(unknown)} in {path}; valid: {', '.join(_GRID_KEYS)}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or base not in named_grids():
        raise ParameterError(f"grid {path}: base must name a shipped grid ({', '.join(named_grids())}), got {base!r}")
    merged = _read_grid(named_grids()[base], (*seen, path.resolve()))
    config = {**(merged.get("config") or {}), **(raw.pop("config", None) or {})}
    return {**merged, **raw, "config": config}


def load_grid(path) -> AblationGrid:
    """Read and validate a grid: a YAML file, or the name of a shipped grid (:func:`named_grids`)."""
    raw = _read_grid(path)
    grid = AblationGrid(**{k: v for k, v in raw.items() if v is not None or k == "table1"},
                        path=str(_resolve_grid_path(path)))
    return grid.validate()


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9+_.@:=-]", "_", str(name))
    if not clean or clean.startswith("."):
        raise ParameterError(f"combination name {name!r} cannot be a file name")
    return clean


def expand_combinations(grid: AblationGrid) -> list[tuple[str, str]]:
    """``[(name, spec)]`` of the grid, in table order (specs without the ST suffix)."""
    out: dict[str, str] = {}
    t = grid.table1
    if t:
        arts = [str(a) for a in t.get("artifacts", ["FN", "RV", "RB", "GB", "DC", "islands"])]
        models = [str(m) for m in t.get("models", ["RD", "LR"])]
        for code in arts + models:
            parse_spec(code)  # unknown codes fail here with the list of valid ones
        if t.get("raw", True):
            out["raw"] = "none"
        if t.get("singles", True):
            for code in arts + models:
                out[code] = code
        if t.get("pairs", True):
            for a, b in itertools.combinations(arts, 2):
                out[f"{a}+{b}"] = f"{a}+{b}"
        if t.get("all", True) and arts:
            out["all"] = "+".join(arts)
        if t.get("low", True) and arts:
            out["L-all"] = "+".join(f"L-{a}" if CODES[parse_spec(a).codes[0]].randomized else a for a in arts)
        if t.get("all", True) and arts:
            for m in models:
                out[f"all+{m}"] = "+".join(arts + [m])
    for name, spec in (grid.combinations or {}).items():
        out[str(name)] = "none" if spec is None else str(spec)
    rows = []
    for name, spec in out.items():
        _safe_name(name)
        parse_spec(spec)
        rows.append((str(name), spec))
    return rows


def make_sampler(kind: str, config: dict, seed: int):
    """A sampler of ``kind``: ``film`` (:class:`FilmConfig` fields) or ``tem`` (:class:`TemConfig`
    fields, or ``preset: <name>`` plus overrides)."""
    config = dict(config or {})
    if kind == "film":
        valid = [f.name for f in dataclasses.fields(FilmConfig)]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ParameterError(f"unknown film parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        if "n_defects" in config:
            nd = config["n_defects"]
            config["n_defects"] = (int(nd), int(nd)) if np.isscalar(nd) else tuple(int(v) for v in nd)
        return FilmSampler(FilmConfig(**config).validate(), seed=seed)
    if kind == "tem":
        try:
            cfg = TemConfig.from_preset(config.pop("preset"), **config) if "preset" in config else \
                TemConfig.from_dict(config)
        except TypeError as exc:
            raise ParameterError(f"bad tem parameters: {' '.join(str(exc).split())}") from None
        return TemSampler(cfg.validate(), seed=seed)
    raise ParameterError(f"unknown sampler {kind!r}; choose film or tem")


def resolve_training_hooks(module: str | None = None):
    """``(train_fn, eval_fn)``: ``train_for_ablation`` and ``eval_for_ablation`` of ``module``
    (default :data:`TRAIN_HOOKS_MODULE`, a YOLO per dataset).

    Importing ``module`` runs its code: name only modules you trust.

    Raises
    ------
    ParameterError
        If the module cannot be imported or lacks either function.
    """
    name = module or TRAIN_HOOKS_MODULE
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ParameterError(f"--hooks {name}: no such module; it must provide {_HOOKS_SIGNATURE}") from None
        raise ParameterError(f"cannot import the hooks module {name}: {' '.join(str(exc).split())}") from None
    except ImportError as exc:
        raise ParameterError(f"cannot import the hooks module {name}: {' '.join(str(exc).split())}") from None
    train_fn = getattr(mod, "train_for_ablation", None)
    eval_fn = getattr(mod, "eval_for_ablation", None)
    if not callable(train_fn) or not callable(eval_fn):
        raise ParameterError(f"--hooks {name} must provide {_HOOKS_SIGNATURE}")
    return train_fn, eval_fn


def _full_spec(spec: str, standardize: bool) -> str:
    s = parse_spec(spec)
    if standardize and "ST" not in s:
        return f"{spec}+ST" if s.items else "ST"
    return spec


def _reusable(path: Path, spec_canonical: str, generator: dict, n: int) -> bool:
    try:
        with open_dataset(path) as ds:
            ok = ds.n == n and ds.attrs.get("ablation_spec") == spec_canonical
            return ok and json.dumps(ds.attrs.get("generator"), sort_keys=True) == json.dumps(generator, sort_keys=True)
    except SimgenError:
        return False


def _plan(name: str, spec: str, path: Path, grid: AblationGrid, seed: int, n: int, profile,
          overwrite: bool) -> PlannedDataset:
    full = _full_spec(spec, grid.standardize)
    sampler = augmented_sampler(make_sampler(grid.sampler, grid.config, seed), full, noise_profile=profile, seed=seed)
    canonical = parse_spec(full).canonical
    generator = json.loads(json.dumps(sampler.describe(), default=_default))
    reuse = path.exists() and not overwrite and _reusable(path, canonical, generator, n)
    if path.exists() and not overwrite and not reuse:
        raise ParameterError(f"{path} exists but was made from different settings; pass --overwrite to regenerate")
    return PlannedDataset(name, canonical, sampler, path, n, seed, reuse,
                          {"ablation_spec": canonical, "ablation_name": name})


# -- steps ------------------------------------------------------------------------------------------
def select_combinations(grid: AblationGrid, *, only=None, rows=None) -> list[tuple[int, str, str]]:
    """``[(row, name, spec)]`` of the grid (``row``: 1-based position in table order), all of them or
    those named in ``only`` and/or numbered in ``rows``.

    Raises
    ------
    ParameterError
        Unknown names or row numbers out of range.
    """
    combos = [(k, name, spec) for k, (name, spec) in enumerate(expand_combinations(grid), 1)]
    if not only and not rows:
        return combos
    wanted = set()
    if only:
        known = {name for _, name, _ in combos}
        missing = [str(o) for o in only if str(o) not in known]
        if missing:
            raise ParameterError(f"unknown combination(s) {', '.join(missing)}; grid has {', '.join(sorted(known))}")
        wanted |= {str(o) for o in only}
    for r in rows or ():
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= len(combos):
            raise ParameterError(f"row {r!r} out of range: the grid has rows 1..{len(combos)}")
        wanted.add(combos[int(r) - 1][1])
    return [c for c in combos if c[1] in wanted]


def grid_rows(grid: AblationGrid) -> list[dict]:
    """The rows of ``grid`` without generating anything: ``row`` (1-based), ``name``, ``spec`` (as
    generated, with ``ST`` when the grid standardizes) and ``published_*`` figures where the grid has them.

    Every spec is checked against the grid's sampler (e.g. a simulation-time code it cannot honour
    raises :class:`~simgen.errors.SpecError`).
    """
    grid.validate()
    out = []
    profile = load_noise_profile(grid.noise_profile)
    for row, name, spec in select_combinations(grid):
        full = _full_spec(spec, grid.standardize)
        augmented_sampler(make_sampler(grid.sampler, grid.config, grid.seed), full, noise_profile=profile)  # accepted
        out.append({"row": row, "name": name, "spec": parse_spec(full).canonical,
                    **{f"published_{m}": v for m, v in grid.published.get(name, {}).items()}})
    return out


def plan_ablation(grid: AblationGrid, out_dir, *, only=None, rows=None, n: int | None = None,
                  overwrite: bool = False) -> list[PlannedDataset]:
    """Validate ``grid`` and plan one dataset per combination (``only``: these names; ``rows``: these
    1-based row numbers); writes nothing.

    Raises
    ------
    ParameterError
        Unknown names in ``only``, rows out of range, or an existing dataset made from other settings
        (without ``overwrite``).
    """
    grid.validate()
    n_images = grid.n if n is None else int(n)
    if n_images < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    selected = select_combinations(grid, only=only, rows=rows)
    combos = [(name, spec) for _, name, spec in selected]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ParameterError(f"output {out_dir} exists and is not a folder")
    profile = load_noise_profile(grid.noise_profile)
    plan = [_plan(name, spec, out_dir / "datasets" / f"{_safe_name(name)}.h5", grid, grid.seed, n_images, profile,
                  overwrite) for name, spec in combos]
    for item, (row, _, _) in zip(plan, selected):
        item.row = row
    return plan


def plan_eval_set(grid: AblationGrid, out_dir, *, n: int | None = None, overwrite: bool = False) -> PlannedDataset:
    """The held-out synthetic evaluation set ``eval/heldout.h5``: the grid's sampler with ``eval_seed``
    (default ``seed + 1``: no image is shared with any combination), ``eval_spec`` and ``eval_n`` images
    (default ``n``, the images per combination)."""
    n_images = grid.eval_n or (grid.n if n is None else int(n))
    seed = grid.seed + 1 if grid.eval_seed is None else grid.eval_seed
    return _plan(HELDOUT, grid.heldout_spec(), Path(out_dir) / "eval" / f"{HELDOUT}.h5", grid, seed, n_images,
                 load_noise_profile(grid.noise_profile), overwrite)


def make_dataset(item: PlannedDataset, grid: AblationGrid, *, progress: bool = False) -> Path:
    """Generate ``item`` (unless it is reused); returns its path."""
    if not item.reuse:
        write_dataset(item.path, item.sampler, item.n, overwrite=True, image_dtype=grid.image_dtype,
                      progress=progress, attrs=item.attrs)
    return item.path


def realism_distances(path, reference: ImageSetStats, max_images: int) -> dict:
    """Power-spectrum and histogram distances of (up to ``max_images`` images of) ``path`` to ``reference``."""
    d = realism_distance(ImageSetStats().extend(iter_images(path, max_images)), reference)
    return {"psd_distance": round(d.psd, 4), "histogram_distance": round(d.histogram, 4)}


def train_and_evaluate(item: PlannedDataset, out_dir, eval_on, train_fn, eval_fn) -> dict:
    """Train a detector on ``item``'s dataset (``runs/<name>/``) and score it on ``eval_on``.

    A run folder left from a dataset that has been generated again is cleared first, so no
    hook can reuse weights trained on other images.  Returns ``weights`` and the metrics.
    """
    run_dir = Path(out_dir) / "runs" / _safe_name(item.name)
    if not item.reuse and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = train_fn(item.path, run_dir)
    metrics = eval_fn(weights, Path(eval_on))
    if not isinstance(metrics, dict) or not {"peak_f1", "ap"} <= set(metrics):
        raise DataError(f"eval_fn must return a dict with 'peak_f1' and 'ap', got {metrics!r}")
    return {"weights": str(weights), **{key: _number(v) for key, v in metrics.items()}}


# -- the ablation -----------------------------------------------------------------------------------
def run_ablation(
    grid: AblationGrid | str | Path,
    out_dir,
    *,
    train: bool = False,
    eval_on=None,
    train_fn=None,
    eval_fn=None,
    hooks_module: str | None = None,
    only=None,
    rows=None,
    n: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    log=None,
) -> AblationResult:
    """Generate (and optionally train/evaluate) every combination of ``grid``.

    Parameters
    ----------
    grid : AblationGrid or path of a YAML grid
    out_dir : path-like
        Output folder (created).
    train : bool
        Train a detector per combination and score it on ``eval_on`` (default: a held-out
        synthetic set, see :func:`plan_eval_set`).  The hooks are ``train_fn``/``eval_fn``,
        else those of ``hooks_module`` (default :data:`TRAIN_HOOKS_MODULE`; importing a
        module runs its code — give only trusted ones).
    eval_on : path-like, optional
        Annotated images (a YOLO folder or an HDF5 dataset): realism distances of every
        combination to them (a folder of YOLO folders works too), and the evaluation of
        trained detectors.
    only : iterable of str, optional
        Run only these combination names.
    rows : iterable of int, optional
        Run only these rows (1-based, in table order; with ``only``: either selects).
    n : int, optional
        Override the grid's images per combination.
    overwrite : bool
        Regenerate datasets that exist (otherwise matching ones are reused and
        mismatching ones are an error).
    log : callable, optional
        ``log(message)`` for one line per step (the CLI passes ``click.echo``).
    """
    log = log or (lambda message: None)
    grid = grid if isinstance(grid, AblationGrid) else load_grid(grid)
    # validate everything before the first byte is written
    plan = plan_ablation(grid, out_dir, only=only, rows=rows, n=n, overwrite=overwrite)
    if eval_on is not None and not Path(eval_on).exists():
        raise DataError(f"evaluation set {eval_on} does not exist")
    heldout = plan_eval_set(grid, out_dir, n=n, overwrite=overwrite) if train and eval_on is None else None
    if train and (train_fn is None or eval_fn is None):
        train_fn, eval_fn = resolve_training_hooks(hooks_module)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if heldout is not None:
        log(f"held-out evaluation set: {'reusing' if heldout.reuse else 'generating'} {heldout.path} "
            f"({heldout.n} images, {heldout.spec}, seed {heldout.seed})")
        eval_on = make_dataset(heldout, grid, progress=progress)
    real_stats = None
    if eval_on is not None and heldout is None and grid.realism_images > 0:
        real_stats = ImageSetStats().extend(iter_images(eval_on))
    scored_on = Path(eval_on) if train else None
    results = []
    for k, item in enumerate(plan, 1):
        step = f"[{k}/{len(plan)}] {item.name}"
        log(f"{step}: reusing {item.path}" if item.reuse else f"{step}: generating {item.n} images ({item.spec})")
        make_dataset(item, grid, progress=progress)
        row = {"name": item.name, "row": item.row, "spec": item.spec, "n": item.n,
               "dataset": str(item.path.relative_to(out_dir))}
        if real_stats is not None:
            row.update(realism_distances(item.path, real_stats, grid.realism_images))
        if train:
            log(f"{step}: training")
            row.update(train_and_evaluate(item, out_dir, eval_on, train_fn, eval_fn))
            log(f"{step}: " + ", ".join(f"{m} {row[m]:.3f}" for m in ("peak_f1", "ap", "f1")
                                        if isinstance(row.get(m), (int, float))))
        row.update({f"published_{m}": v for m, v in grid.published.get(item.name, {}).items()})
        results.append(row)
        if k < len(plan):  # the table so far, so a long run that stops leaves its finished rows readable
            write_results(results, out_dir, grid, eval_on=scored_on)
    return AblationResult(out_dir, results, write_results(results, out_dir, grid, eval_on=scored_on), scored_on)


def _number(v):
    if isinstance(v, (np.floating, float)):
        return round(float(v), 4)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return v


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def write_results(rows: list[dict], out_dir: Path, grid: AblationGrid | None = None, *, eval_on=None) -> list[Path]:
    """``ablation.csv``, ``ablation.md``, ``ablation.json`` and (with metrics) ``ablation.png``.

    ``eval_on``: what the metrics were measured on (recorded in ``ablation.json``).
    """
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files = [atomic_write_text(out_dir / "ablation.csv", buf.getvalue(), overwrite=True)]
    md = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        md.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    files.append(atomic_write_text(out_dir / "ablation.md", "\n".join(md) + "\n", overwrite=True))
    manifest = {"grid": None if grid is None else {k: v for k, v in vars(grid).items()}, "rows": rows,
                "eval_on": None if eval_on is None else str(eval_on)}
    files.append(atomic_write_text(out_dir / "ablation.json", json.dumps(manifest, indent=2, default=_default), True))
    metrics = [m for m in ("peak_f1", "ap") if any(m in r for r in rows)]
    if metrics:  # the published figures of the same rows beside the measured ones
        metrics += [f"published_{m}" for m in ("peak_f1", "ap") if any(f"published_{m}" in r for r in rows)]
    if not metrics:
        metrics = [m for m in ("psd_distance", "histogram_distance") if any(m in r for r in rows)]
    if metrics:
        files.append(plot_bars(rows, metrics, out_dir / "ablation.png"))
    return files


def plot_bars(rows: list[dict], metrics: list[str], out) -> Path:
    """Grouped bar plot of ``metrics`` per combination (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    x = np.arange(len(names))
    width = 0.8 / len(metrics)
    # tall enough for the rotated spec names; the legend above the axes, where no bar is
    longest = max((len(n) for n in names), default=10)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.38 * len(names) + 2), 3.0 + 0.06 * longest))
    for j, m in enumerate(metrics):
        vals = [math.nan if r.get(m) is None else float(r[m]) for r in rows]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, vals, width, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=7, ncol=len(metrics), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out)
