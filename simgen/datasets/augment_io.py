"""The file side of :mod:`simgen.augment`: noise profiles, augmented datasets, sheets, realism.

* Noise profiles (``.npz``): :func:`save_noise_profile` (atomic), :func:`load_noise_profile`
  (``"default"`` = the profile shipped in ``simgen/data/readnoise_default.npz``),
  :func:`extract_noise_profile` (images or folders → profile).
* :func:`augment_dataset` applies the image-level codes of a spec to every image of an
  HDF5 dataset and writes a new one (annotations, masks, phase and extra arrays
  copied; the spec, seed and drawn parameters stored as provenance).
* :func:`transform_sheet` draws the before/after PNG of each code on one image.
* :func:`iter_images` / :func:`realism_report` compare image sets (HDF5, YOLO folders,
  image folders) with :func:`simgen.augment.realism.realism_distance`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from simgen.atomic import atomic_path, check_output
from simgen.augment.pipeline import TAG_AUGMENT, AugmentedSampler, Pipeline
from simgen.augment.readnoise import NoiseProfile, extract_profile
from simgen.augment.realism import ImageSetStats, realism_distance
from simgen.augment.spec import Spec, parse_spec
from simgen.datasets.h5io import Dataset, DatasetWriter, open_dataset
from simgen.datasets.imageio import IMAGE_SUFFIXES, list_images, read_image
from simgen.datasets.schema import Sampler, table_path
from simgen.errors import DataError, ParameterError, SpecError
from simgen.progress import track
from simgen.rng import check_seed, sample_rng

__all__ = [
    "DEFAULT_PROFILE",
    "default_profile_path",
    "save_noise_profile",
    "load_noise_profile",
    "extract_noise_profile",
    "build_pipeline",
    "augmented_sampler",
    "check_image_spec",
    "augment_dataset",
    "transform_sheet",
    "iter_images",
    "realism_report",
]

DEFAULT_PROFILE = "default"
#: A noise profile, its ``.npz`` file, or ``None`` / ``"default"`` for the shipped one.
ProfileSource: TypeAlias = NoiseProfile | str | PathLike | None
_KNOWN = {"images", "phase", "names", "shapes", "provenance", "labels/masks", "labels/classes"}


# --------------------------------------------------------------------------- noise profiles


def default_profile_path() -> Path:
    """Path of the read-noise profile shipped with simgen."""
    return Path(__file__).resolve().parents[1] / "data" / "readnoise_default.npz"


def save_noise_profile(profile: NoiseProfile, path: str | PathLike, overwrite: bool = False) -> Path:
    """Write ``profile`` to an ``.npz`` file atomically; returns the path."""
    if not isinstance(profile, NoiseProfile):
        raise ParameterError(f"expected a NoiseProfile, got {type(profile).__name__}")
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:  # a file object: numpy must not append '.npz' to the name
            # numpy's stub: a **dict might also fill savez_compressed's bool allow_pickle keyword
            np.savez_compressed(fh, **profile.to_arrays())  # type: ignore[arg-type]
    return Path(path)


def load_noise_profile(source: ProfileSource = None) -> NoiseProfile:
    """Read a noise profile: a path, a :class:`NoiseProfile`, or ``None``/``"default"``.

    Raises
    ------
    DataError
        If the file is missing or is not a simgen read-noise profile.
    """
    if isinstance(source, NoiseProfile):
        return source
    if source is None or source == DEFAULT_PROFILE:
        path, shipped = default_profile_path(), True
    else:
        path, shipped = Path(source), False
    if not path.exists():
        raise DataError(f"noise profile {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read noise profile {path}: {str(exc).splitlines()[0]}") from None
    profile = NoiseProfile.from_arrays(arrays)
    meta = dict(profile.meta)
    meta.setdefault("source", str(path))
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    meta["file"] = DEFAULT_PROFILE if shipped else str(path)
    return NoiseProfile(profile.freqs, profile.power, profile.cell, profile.rms_ratio, meta)


def _image_files(inputs) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            folder = p / "images" if (p / "images").is_dir() else p
            found = list_images(folder)
            if not found:
                raise DataError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"image {p} does not exist")
    if not files:
        raise DataError("no input images given")
    return files


def extract_noise_profile(inputs: str | PathLike | Iterable[str | PathLike], out: str | PathLike | None = None, *,
                          overwrite: bool = False, name: str | None = None, **kwargs: Any) -> NoiseProfile:
    """Measure a read-noise profile from image files or folders (and save it to ``out``).

    ``kwargs`` go to :func:`simgen.augment.readnoise.extract_profile` (``tile``,
    ``min_freq``, ``line_ratio``, ``peak_ratio``, ``fpr``).
    """
    if out is not None:
        check_output(out, overwrite)
    files = _image_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
    profile = extract_profile((read_image(f) for f in files), name=name, sources=[f.name for f in files], **kwargs)
    if out is not None:
        save_noise_profile(profile, out, overwrite)
    return profile


# --------------------------------------------------------------------------- pipelines


def build_pipeline(spec: str | Spec | None, *, noise_profile: ProfileSource = None, **kwargs: Any) -> Pipeline:
    """A :class:`Pipeline` with the noise profile loaded from a file when ``FN`` needs one."""
    spec = parse_spec(spec)
    profile = load_noise_profile(noise_profile) if "FN" in spec else None
    return Pipeline(spec, noise_profile=profile, **kwargs)


def schlieren_options(ds: Dataset) -> dict:
    """Decross angle, regime and anisotropy of a *film* dataset's Schlieren rendering (what DC varies).

    Only film datasets store them; other generators use some of the same names for other things (a
    TEM config's ``anisotropy`` is the [lo, hi] range of its streaky background), so every other
    kind gets the pipeline's defaults.
    """
    gen = ds.attrs.get("generator")
    cfg = gen.get("config") if isinstance(gen, dict) else None
    if ds.kind != "film" or not isinstance(cfg, dict):
        return {}
    try:
        return {"decross": float(cfg.get("decross", 0.0)), "regime": str(cfg.get("regime", "decrossed")),
                "anisotropy": float(cfg.get("anisotropy", 0.2))}
    except (TypeError, ValueError):
        raise DataError("the film dataset's generator config has a non-numeric decross/anisotropy") from None


def augmented_sampler(sampler: Sampler, spec: str | Spec | None, *, noise_profile: ProfileSource = None,
                      seed: int | None = None, relabel: bool = False) -> Sampler:
    """Wrap ``sampler`` in an :class:`AugmentedSampler` (``spec`` "none" returns it unchanged;
    ``relabel``: the sampler's label rule once more on the augmented image)."""
    pipeline = build_pipeline(spec, noise_profile=noise_profile)
    if not pipeline.codes:
        return sampler
    return AugmentedSampler(sampler, pipeline, seed=seed, relabel=relabel)


def check_image_spec(spec: Spec, has_phase: bool, where: str = "an existing dataset") -> None:
    """Raise :class:`SpecError` naming the codes that cannot act on stored images."""
    problems = []
    sim = [i.code for i in spec.simulation_items if i.code != "DC"]
    if sim:
        problems.append(
            f"{', '.join(sim)} act at simulation time (LG sets the model, RD the defect number, LR the run length); "
            "give them to the simulator ('simgen simulate film --spec ...')"
        )
    if "DC" in spec and not has_phase:
        problems.append("DC re-renders from the phase field, which is not stored (simulate with --store-phase)")
    if problems:
        image_only = spec.without("LG", "RD", "LR", *(() if has_phase else ("DC",))).canonical
        raise SpecError(f"cannot apply to {where}: " + "; ".join(problems) + f"; image-level part: '{image_only}'")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def augment_dataset(
    source: str | PathLike,
    out: str | PathLike,
    spec: str | Spec | None,
    *,
    seed: int = 0,
    noise_profile: ProfileSource = None,
    overwrite: bool = False,
    progress: bool = False,
    image_dtype: str | None = None,
) -> Path:
    """Apply the image-level codes of ``spec`` to every image of a dataset → new dataset.

    Sample ``i`` uses ``sample_rng(seed, first_index + i, TAG_AUGMENT)``, the stream an
    :class:`~simgen.augment.pipeline.AugmentedSampler` with the same seed uses, so
    ``simulate --spec X --seed s`` and ``simulate --seed s`` + ``augment --spec X --seed s``
    draw the same artifacts.  ``DC`` re-renders from the stored phase field.

    All tables, masks, phase, names and extra arrays are copied (annotations are left
    bit-identical: no code moves content).  Root attributes record the augmentation:
    ``augment`` (JSON: spec, canonical form, ranges, seed, noise profile, source, any
    earlier augmentation) and ``augment_spec`` (canonical string); each sample's
    provenance gains the drawn parameters under ``"augment"``.

    Raises
    ------
    SpecError
        If the spec holds simulation-time codes (RD, LR; DC without stored phase).
    """
    seed = check_seed(seed)
    spec = parse_spec(spec)
    src = Path(source)
    if src.resolve() == Path(out).resolve():
        raise ParameterError("input and output are the same file; write the augmented dataset elsewhere")
    with open_dataset(src) as ds:
        if ds.images is None:
            raise DataError(f"{src} stores no images to augment")
        check_image_spec(spec, ds.has("phase"), str(src))
        gen = ds.attrs.get("generator") if isinstance(ds.attrs.get("generator"), dict) else {}
        pipeline = build_pipeline(spec, noise_profile=noise_profile, dc="image", **schlieren_options(ds))
        dtype = image_dtype or str(ds.images.dtype)
        check_output(out, overwrite)
        first = int(ds.attrs.get("first_index", 0))
        previous = ds.attrs.get("augment")
        record = {
            **pipeline.describe(),
            "seed": seed,
            "source": str(src),
            "stream": f"sample_rng(seed, first_index + i, {TAG_AUGMENT:#x})",
        }
        if previous:
            record["previous"] = json.loads(previous) if isinstance(previous, str) else previous
        skip = {"schema", "schema_version", "n_samples", "simgen_version", "created", "kind", "generator", "seed",
                "augment", "augment_spec"}
        extra = {k: v for k, v in ds.attrs.items() if k not in skip}
        tables = ds.tables
        names = ds.has("names")
        with DatasetWriter(
            out, kind=ds.kind or "unknown", image_dtype=dtype, class_names=ds.class_names or None,
            generator=gen, seed=ds.attrs.get("seed"), overwrite=overwrite,
            attrs={**extra, "augment": _json(record), "augment_spec": spec.canonical},
        ) as writer:
            for i in track(range(ds.n), total=ds.n, description=f"augment {spec.canonical} → {Path(out).name}",
                           enabled=progress):
                phase = ds.phase(i)
                if "DC" in spec and (phase is None or not np.all(np.isfinite(phase))):
                    raise DataError(f"{src}: sample {i} has no stored phase field; DC cannot re-render it")
                annotations: dict[str, Any] = {t: ds.rows(t, i) for t in tables}
                mask = ds.mask(i)
                if mask is not None:
                    annotations["mask"] = mask
                key = Pipeline.new_key(sample_rng(seed, first + i, TAG_AUGMENT))
                image, annotations, params = pipeline.apply(ds.image(i), key, annotations, context={"phase": phase})
                tabs = {t: annotations[t] for t in tables if t not in ("points", "boxes", "tracks")}
                writer.append(
                    image,
                    points=annotations.get("points"),
                    boxes=annotations.get("boxes"),
                    tracks=annotations.get("tracks"),
                    tables=tabs or None,
                    mask=annotations.get("mask"),
                    phase=phase if ds.has("phase") else None,
                    provenance={**ds.provenance(i), "augment": params},
                    name=ds.name(i) if names else None,
                )
            for path in _extra_arrays(ds.file, tables):
                writer.create_array(path, ds.file[path][()])
    return Path(out)


def _extra_arrays(f, tables) -> list[str]:

    skip = set(_KNOWN) | {table_path(t) for t in tables}
    found: list[str] = []

    def visit(name, obj):
        if any(name == s or name.startswith(s + "/") for s in skip):
            return
        if hasattr(obj, "shape") and hasattr(obj, "dtype"):
            found.append(name)

    f.visititems(visit)
    return found


# --------------------------------------------------------------------------- before/after sheet


def _source_sample(source, index: int, size: int, seed: int):
    """``(sample dict, sampler or None, label)`` for a sheet."""
    if source is None:
        from simgen.simulate.film import FilmConfig, FilmSampler

        hi = max(2, min(12, size * size // 5000))  # the default 2-12 defects, fewer in small images
        sampler = FilmSampler(FilmConfig(size=size, n_defects=(2, hi)), seed=seed, store_phase=True)
        return sampler(index), sampler, f"film simulation #{index} (seed {seed})"
    path = Path(source)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return {"image": read_image(path)}, None, path.name
    with open_dataset(path) as ds:
        if ds.images is None:
            raise DataError(f"{path} stores no images")
        if not 0 <= index < ds.n:
            raise ParameterError(f"index {index} out of range for {ds.n} samples")
        sample: dict[str, Any] = {"image": ds.image(index), "phase": ds.phase(index)}
        for t in ("points", "boxes"):
            rows = ds.rows(t, index)
            if rows is not None:
                sample[t] = rows
        sample["_optics"] = schlieren_options(ds)
        return sample, None, f"{path.name} #{index}"


def _fmt_params(params: dict) -> str:
    parts = []
    for k, v in params.items():
        if k == "seed":
            continue
        if k == "discs":
            parts.append(f"{len(v)} discs")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        elif isinstance(v, list):
            parts.append(f"{k}=" + ",".join(f"{x:.2g}" for x in v))
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def transform_sheet(
    source: str | PathLike | None,
    out: str | PathLike,
    spec: str | Spec | None,
    *,
    index: int = 0,
    seed: int = 0,
    size: int = 256,
    noise_profile: ProfileSource = None,
    overwrite: bool = False,
    dpi: int = 110,
) -> Path:
    """PNG sheet: the original, each code of ``spec`` alone, and all of them together.

    Parameters
    ----------
    source : path-like or None
        An HDF5 dataset (sample ``index``), an image file, or ``None`` to simulate a
        film image of side ``size`` (then simulation-time codes RD, LR and DC are shown
        too, by re-simulating).
    seed : int
        Augmentation seed; every panel of one code uses the same draws as the combined
        panel (per-code random streams).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = check_seed(seed)
    spec = parse_spec(spec)
    if not spec.items:
        raise SpecError("the spec is empty; give codes to preview, e.g. 'all' or 'FN+GB+RB'")
    check_output(out, overwrite)
    sample, sampler, label = _source_sample(source, index, size, seed)
    if sampler is None:
        check_image_spec(spec, bool(sample.get("phase") is not None and np.all(np.isfinite(sample["phase"]))), label)
    profile = load_noise_profile(noise_profile) if "FN" in spec else None
    panels = [("original", sample["image"], "")]
    combos = [(str(item), Spec((item,), str(item))) for item in spec.items]
    if len(spec.items) > 1:
        combos.append((spec.canonical, spec))
    for title, sub in combos:
        if sampler is not None:
            aug = AugmentedSampler(sampler, Pipeline(sub, noise_profile=profile), seed=seed)
            s = aug(index)
            params = s["provenance"]["augment"]
            img = s["image"]
        else:
            pipe = Pipeline(sub, noise_profile=profile, dc="image", **sample.get("_optics", {}))
            key = Pipeline.new_key(sample_rng(seed, index, TAG_AUGMENT))
            img, _, params = pipe.apply(sample["image"], key, None, context={"phase": sample.get("phase")})
        note = _fmt_params(params[sub.items[0].code]) if len(sub.items) == 1 else ""
        panels.append((title, img, note))
    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.25 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, img, note) in zip(axes.flat, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        head = title if len(title) < 40 else title[:37] + "..."
        ax.set_title(f"{head}\n{note}" if note else head, fontsize=7, pad=2)
    fig.suptitle(f"{label}: spec {spec.canonical} (seed {seed})", fontsize=9)
    fig.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    with atomic_path(out, overwrite) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(out)


# --------------------------------------------------------------------------- realism


def iter_images(source: str | PathLike, max_images: int | None = None) -> Iterator[np.ndarray]:
    """Yield float images from an HDF5 dataset, a YOLO folder, an image folder or an image file.

    A folder without images but with sub-folders holding them (``realdata/dev``) yields
    the images of every sub-folder in name order.
    """
    path = Path(source)
    count = 0

    def limit():
        return max_images is not None and count >= max_images

    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        yield read_image(path)
        return
    if path.is_file():
        with open_dataset(path) as ds:
            if ds.images is None:
                raise DataError(f"{path} stores no images")
            for i in range(ds.n):
                if limit():
                    return
                yield ds.image(i)
                count += 1
        return
    if not path.is_dir():
        raise DataError(f"{path} does not exist")
    folders = [path / "images"] if (path / "images").is_dir() else [path]
    if not list_images(folders[0]):
        folders = [d / "images" if (d / "images").is_dir() else d for d in sorted(path.iterdir()) if d.is_dir()]
    files = [f for d in folders for f in list_images(d)]
    if not files:
        raise DataError(f"{path} holds no images")
    for f in files:
        if limit():
            return
        yield read_image(f)
        count += 1


def realism_report(
    a: str | PathLike,
    b: str | PathLike,
    *,
    spec: str | Spec | None = None,
    seed: int = 0,
    noise_profile: ProfileSource = None,
    max_images: int | None = None,
) -> dict:
    """Realism distances of set ``a`` (optionally augmented with image-level ``spec``) to set ``b``.

    Returns ``{"psd", "histogram", "n_a", "n_b", "spec"}``; with a spec also the
    distances of the raw set under ``"raw"`` so the change is visible.
    """
    spec = parse_spec(spec)
    check_image_spec(spec, False, "images read from files")
    stats_b = ImageSetStats().extend(iter_images(b, max_images))
    raw = ImageSetStats()
    aug = ImageSetStats() if spec.items else None
    pipeline = build_pipeline(spec, noise_profile=noise_profile) if aug is not None else None
    for i, img in enumerate(iter_images(a, max_images)):
        raw.add(img)
        if aug is not None and pipeline is not None:  # both set together
            out, _, _ = pipeline.apply(img, Pipeline.new_key(sample_rng(seed, i, TAG_AUGMENT)))
            aug.add(out)
    result = realism_distance(aug if aug is not None else raw, stats_b).to_dict()
    result["spec"] = spec.canonical
    if aug is not None:
        result["raw"] = realism_distance(raw, stats_b).to_dict()
    return result

