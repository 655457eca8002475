"""Artifact ablation: one dataset per artifact combination, optionally a detector per dataset.

A *grid* (YAML, see ``simgen/configs/ablation.yaml``) names the sampler, its
parameters, the images per combination and the combinations themselves — explicitly
(``combinations: {name: spec}``) and/or generated Table-1 style (``table1:``: raw,
each artifact alone, every pair, all, all at low intensity, each model alone and all
artifacts with each model).

:func:`run_ablation` writes ``datasets/<name>.h5`` for every combination (existing
datasets made from the same grid entry are reused, so an interrupted ablation
resumes), then optionally

* with ``eval_dir`` — realism distances (power spectrum, intensity histogram) of each
  dataset to the real images;
* with training — ``train_fn(train_h5, out_dir) -> weights`` and
  ``eval_fn(weights, real_dir) -> {"peak_f1": ..., "ap": ..., ...}`` per combination.
  By default both come from :data:`TRAIN_HOOKS_MODULE` (functions
  ``train_for_ablation`` and ``eval_for_ablation``); until that trainer exists,
  training is refused with a one-line error;

and writes ``ablation.csv``, ``ablation.md``, ``ablation.json`` and, when there are
metrics, the bar plot ``ablation.png``.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import json
import math
import re
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
from simgen.rng import check_seed

__all__ = [
    "AblationGrid",
    "load_grid",
    "expand_combinations",
    "make_sampler",
    "resolve_training_hooks",
    "run_ablation",
    "TRAIN_HOOKS_MODULE",
]

#: Module expected to provide ``train_for_ablation`` and ``eval_for_ablation``.
TRAIN_HOOKS_MODULE = "simgen.train.yolo"
_GRID_KEYS = ("sampler", "config", "n", "seed", "image_dtype", "standardize", "noise_profile", "realism_images",
              "table1", "combinations")
_TABLE1_KEYS = ("artifacts", "models", "raw", "singles", "pairs", "all", "low")


@dataclass
class AblationGrid:
    """A parsed ablation grid (see module docstring and ``simgen/configs/ablation.yaml``)."""

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
        if self.table1 is not None:
            if not isinstance(self.table1, dict):
                raise ParameterError("grid table1 must be a mapping")
            unknown = sorted(set(self.table1) - set(_TABLE1_KEYS))
            if unknown:
                raise ParameterError(f"unknown table1 key(s) {', '.join(unknown)}; valid: {', '.join(_TABLE1_KEYS)}")
        if not expand_combinations(self):
            raise ParameterError("the grid defines no combinations (give table1: or combinations:)")
        return self


def load_grid(path) -> AblationGrid:
    """Read and validate a grid YAML file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise DataError(f"grid {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"cannot parse grid {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(raw, dict):
        raise DataError(f"grid {path} must be a YAML mapping")
    unknown = sorted(set(raw) - set(_GRID_KEYS))
    if unknown:
        raise ParameterError(f"unknown grid key(s) {', '.join(unknown)} in {path}; valid: {', '.join(_GRID_KEYS)}")
    grid = AblationGrid(**{k: v for k, v in raw.items() if v is not None or k == "table1"}, path=str(path))
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
    """A sampler of ``kind`` (``film``; ``tem`` once :mod:`simgen.simulate.tem` exists)."""
    config = dict(config or {})
    if kind == "film":
        import dataclasses

        from simgen.simulate.film import FilmConfig, FilmSampler

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
            mod = importlib.import_module("simgen.simulate.tem")
        except ModuleNotFoundError:
            raise ParameterError("sampler 'tem' is not available yet (simgen.simulate.tem has not landed)") from None
        if not hasattr(mod, "TemSampler") or not hasattr(mod, "TemConfig"):
            raise ParameterError("simgen.simulate.tem provides no TemSampler/TemConfig")
        try:
            if "preset" in config and hasattr(mod.TemConfig, "from_preset"):
                cfg = mod.TemConfig.from_preset(config.pop("preset"), **config)
            elif hasattr(mod.TemConfig, "from_dict"):
                cfg = mod.TemConfig.from_dict(config)
            else:
                cfg = mod.TemConfig(**config)
            return mod.TemSampler(cfg, seed=seed)
        except TypeError as exc:
            raise ParameterError(f"bad tem parameters: {' '.join(str(exc).split())}") from None
    raise ParameterError(f"unknown sampler {kind!r}; choose film or tem")


def resolve_training_hooks(module: str | None = None):
    """``(train_fn, eval_fn)`` from ``module`` (default :data:`TRAIN_HOOKS_MODULE`).

    Raises
    ------
    ParameterError
        If the module or either function is missing (the trainer has not landed).
    """
    name = module or TRAIN_HOOKS_MODULE
    need = (
        "train_for_ablation(train_h5, out_dir) -> weights and "
        "eval_for_ablation(weights, real_dir) -> {'peak_f1', 'ap', ...}"
    )
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ParameterError(
                f"--train needs a detector trainer, but {name} does not exist yet (the YOLO trainer has not landed); "
                f"run without --train to generate the datasets, or pass --hooks MODULE providing {need}"
            ) from None
        raise ParameterError(f"cannot import the trainer {name}: {' '.join(str(exc).split())}") from None
    except ImportError as exc:
        raise ParameterError(f"cannot import the trainer {name}: {' '.join(str(exc).split())}") from None
    train_fn = getattr(mod, "train_for_ablation", None)
    eval_fn = getattr(mod, "eval_for_ablation", None)
    if not callable(train_fn) or not callable(eval_fn):
        raise ParameterError(f"--train needs {name} to provide {need}; it does not (yet)")
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


def run_ablation(
    grid: AblationGrid | str | Path,
    out_dir,
    *,
    train: bool = False,
    eval_dir=None,
    train_fn=None,
    eval_fn=None,
    hooks_module: str | None = None,
    only=None,
    n: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    log=None,
) -> dict:
    """Generate (and optionally train/evaluate) every combination of ``grid``.

    Parameters
    ----------
    grid : AblationGrid or path of a YAML grid
    out_dir : path-like
        Output folder (created).
    train : bool
        Train a detector per combination (needs ``eval_dir``); the hooks come from
        ``train_fn``/``eval_fn`` or :func:`resolve_training_hooks`.
    eval_dir : path-like, optional
        Real annotated images (a YOLO folder or a folder of them): realism distances and
        the evaluation of trained detectors.
    only : iterable of str, optional
        Run only these combination names.
    n : int, optional
        Override the grid's images per combination.
    overwrite : bool
        Regenerate datasets that exist (otherwise matching ones are reused and
        mismatching ones are an error).
    log : callable, optional
        ``log(message)`` for one line per step (the CLI passes ``click.echo``).

    Returns
    -------
    dict with ``rows`` (one dict per combination) and the output ``files``.
    """

    log = log or (lambda message: None)
    grid = grid if isinstance(grid, AblationGrid) else load_grid(grid)
    grid.validate()
    n_images = grid.n if n is None else int(n)
    if n_images < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    combos = expand_combinations(grid)
    if only:
        wanted = [str(o) for o in only]
        known = {name for name, _ in combos}
        missing = [o for o in wanted if o not in known]
        if missing:
            raise ParameterError(f"unknown combination(s) {', '.join(missing)}; grid has {', '.join(sorted(known))}")
        combos = [(name, spec) for name, spec in combos if name in wanted]
    if train and eval_dir is None:
        raise ParameterError("--train needs --eval-on DIR (real annotated images to evaluate on)")
    if eval_dir is not None and not Path(eval_dir).is_dir():
        raise DataError(f"evaluation folder {eval_dir} does not exist")
    if train and (train_fn is None or eval_fn is None):
        train_fn, eval_fn = resolve_training_hooks(hooks_module)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ParameterError(f"output {out_dir} exists and is not a folder")

    # validate everything before the first byte is written
    base = make_sampler(grid.sampler, grid.config, grid.seed)
    profile = load_noise_profile(grid.noise_profile)
    plan = []
    for name, spec in combos:
        full = _full_spec(spec, grid.standardize)
        sampler = augmented_sampler(base, full, noise_profile=profile, seed=grid.seed)
        path = out_dir / "datasets" / f"{_safe_name(name)}.h5"
        canonical = parse_spec(full).canonical
        generator = json.loads(json.dumps(sampler.describe(), default=_default))
        reuse = path.exists() and not overwrite and _reusable(path, canonical, generator, n_images)
        if path.exists() and not overwrite and not reuse:
            raise ParameterError(f"{path} exists but was made from different settings; pass --overwrite to regenerate")
        plan.append((name, full, canonical, sampler, path, reuse))
    out_dir.mkdir(parents=True, exist_ok=True)

    real_stats = None
    if eval_dir is not None and grid.realism_images > 0:
        real_stats = ImageSetStats().extend(iter_images(eval_dir))
    rows = []
    for k, (name, full, canonical, sampler, path, reuse) in enumerate(plan, 1):
        if reuse:
            log(f"[{k}/{len(plan)}] {name}: reusing {path}")
        else:
            log(f"[{k}/{len(plan)}] {name}: generating {n_images} images ({canonical})")
            write_dataset(path, sampler, n_images, overwrite=True, image_dtype=grid.image_dtype, progress=progress,
                          attrs={"ablation_spec": canonical, "ablation_name": name})
        row = {"name": name, "spec": canonical, "n": n_images, "dataset": str(path.relative_to(out_dir))}
        if real_stats is not None:
            d = realism_distance(ImageSetStats().extend(iter_images(path, grid.realism_images)), real_stats)
            row.update(psd_distance=round(d.psd, 4), histogram_distance=round(d.histogram, 4))
        if train:
            run_dir = out_dir / "runs" / _safe_name(name)
            run_dir.mkdir(parents=True, exist_ok=True)
            log(f"[{k}/{len(plan)}] {name}: training")
            weights = train_fn(path, run_dir)
            metrics = eval_fn(weights, Path(eval_dir))
            if not isinstance(metrics, dict) or not {"peak_f1", "ap"} <= set(metrics):
                raise DataError(f"eval_fn must return a dict with 'peak_f1' and 'ap', got {metrics!r}")
            row["weights"] = str(weights)
            row.update({key: _number(v) for key, v in metrics.items()})
        rows.append(row)
    files = write_results(rows, out_dir, grid)
    return {"rows": rows, "files": [str(f) for f in files]}


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


def write_results(rows: list[dict], out_dir: Path, grid: AblationGrid | None = None) -> list[Path]:
    """``ablation.csv``, ``ablation.md``, ``ablation.json`` and (with metrics) ``ablation.png``."""
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
    manifest = {"grid": None if grid is None else {k: v for k, v in vars(grid).items()}, "rows": rows}
    files.append(atomic_write_text(out_dir / "ablation.json", json.dumps(manifest, indent=2, default=_default), True))
    metrics = [m for m in ("peak_f1", "ap") if any(m in r for r in rows)]
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
    fig, ax = plt.subplots(figsize=(max(6.0, 0.38 * len(names) + 2), 3.6))
    for j, m in enumerate(metrics):
        vals = [float(r.get(m, math.nan)) for r in rows]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, vals, width, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(" / ".join(metrics))
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out)
