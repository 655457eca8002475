"""Export simgen sources to the folder layout Ultralytics trains on (tiled, normalized, cached)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.formats.yolo import format_yolo_labels
from simgen.datasets.normalize import normalize_image, resize_image, to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import ProgressLog, Timer
from simgen.train.tiling import Window, crop_boxes, pad_to, tile_windows
from simgen.train.yolo.config import YoloConfig

__all__ = [
    "prepare_yolo_data",
    "cache_root",
    "as_inputs",
    "describe_input",
]


# -- export for Ultralytics ----------------------------------------------------------------
def cache_root() -> Path:
    """Where prepared YOLO exports are cached (``$SIMGEN_CACHE_DIR/yolo-data`` or ``~/.cache/simgen/yolo-data``)."""
    env = os.environ.get("SIMGEN_CACHE_DIR", "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(env).expanduser() if env else (Path(xdg) if xdg else Path.home() / ".cache") / "simgen"
    return base / "yolo-data"


def _grow_boxes(df: pd.DataFrame, min_box: float) -> pd.DataFrame:
    if min_box <= 0 or len(df) == 0:
        return df
    df = df.copy()
    for a, b in (("x0", "x1"), ("y0", "y1")):
        lo, hi = df[a].to_numpy(np.float64), df[b].to_numpy(np.float64)
        c, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, min_box / 2)
        df[a], df[b] = (c - half).astype(np.float32), (c + half).astype(np.float32)
    return df


def _scale_boxes(df: pd.DataFrame, scale: float) -> pd.DataFrame:
    if scale == 1.0 or df is None or len(df) == 0:
        return df
    df = df.copy()
    for c in ("x0", "y0", "x1", "y1"):
        df[c] = (df[c].to_numpy(np.float64) * scale).astype(np.float32)
    return df


def _prepare_image(image: np.ndarray, config: YoloConfig) -> np.ndarray:
    return resize_image(normalize_image(image, config.normalize), config.scale)


def _export_split(sources: list[Source], out: Path, split: str, config: YoloConfig, select=None,
                  prefix: str = "s") -> int:
    """Write the tiles of ``sources`` to ``out/images/<split>`` and ``out/labels/<split>``; returns tile count.

    Tiles are named ``<prefix><source number>_<sample name>[_t<tile>]``: training sources use
    ``s``, separate validation sources ``v``, so names are unique across splits and the export
    reads back as one YOLO folder.
    """
    from PIL import Image

    img_dir, lab_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for s, src in enumerate(sources):
        for k in range(len(src)):
            if select is not None and not select(s, k):
                continue
            image = _prepare_image(src.image(k), config)
            boxes = src.boxes(k)
            if boxes is None:
                boxes = pd.DataFrame({c: np.zeros(0, np.float32) for c in ("x0", "y0", "x1", "y1", "class")})
            boxes = _grow_boxes(_scale_boxes(boxes[["x0", "y0", "x1", "y1", "class"]], config.scale), config.min_box)
            h, w = image.shape
            windows = tile_windows((h, w), config.tile, config.overlap) if config.tile else [
                Window(0, 0, h, w, (0.0, 0.0, float(w), float(h)))]
            stem = _safe(f"{prefix}{s}_{src.name(k)}")
            for t, win in enumerate(windows):
                crop = win.crop(image)
                tb = crop_boxes(boxes, win, config.min_visible)
                th, tw = crop.shape
                if config.tile and (th < config.tile or tw < config.tile):
                    crop = pad_to(crop, (max(th, config.tile), max(tw, config.tile)))
                    th, tw = crop.shape
                name = f"{stem}_t{t:03d}" if len(windows) > 1 else stem
                Image.fromarray(to_uint8(crop)).save(img_dir / f"{name}.png")
                (lab_dir / f"{name}.txt").write_text(format_yolo_labels(tb, tw, th, min_size=0.5))
                count += 1
    return count


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


#: One input of :func:`prepare_yolo_data`: a path or an open :class:`~simgen.datasets.sources.Source`.
Input = str | PathLike | Source


def as_inputs(data: Input | list[Input] | tuple[Input, ...] | None) -> list[Input]:
    """``data`` as a list of inputs (a single path or Source becomes a one-element list)."""
    if data is None:
        return []
    return [data] if isinstance(data, (str, PathLike, Source)) else list(data)


def describe_input(data: Input) -> str:
    """The path of an input, for logs and run metadata."""
    return str(data.path if isinstance(data, Source) else data)


def prepare_yolo_data(train: Input | list[Input], val: Input | list[Input] | None = None, *,
                      config: YoloConfig | None = None, cache_dir: str | PathLike | None = None,
                      train_names: list[list[str] | None] | None = None,
                      val_names: list[list[str] | None] | None = None,
                      progress: ProgressLog | None = None) -> Path:
    """Export training (and validation) data to a cached Ultralytics YOLO folder; returns ``data.yaml``.

    Parameters
    ----------
    train, val : path, Source or list of them
        Labelled inputs :func:`~simgen.datasets.sources.open_source` reads: simgen HDF5 files
        with a ``boxes`` table, sharded sets, YOLO folders (``images/`` + ``labels/``), or
        sources opened by the caller (used as they are, left open).
        Without ``val``, ``config.val_fraction`` of the training *images* is held out
        (seeded); with ``val_fraction = 0`` validation runs on the training data.
    config : YoloConfig
        Export settings: tile, overlap, min_box, min_visible, normalize, scale.
    cache_dir : path, optional
        Cache root (default :func:`cache_root`).
    train_names, val_names : list of list of str, optional
        Per input, the sample names to use (cross-validation folds of real folders).
    progress : ProgressLog, optional
        Where to report cache hits and export counts.

    Returns
    -------
    Path of ``data.yaml`` inside ``<cache>/<key>/``.  The key hashes the sources' content,
    the selected names and the export settings; an existing complete export is reused.
    """
    import yaml

    config = (config or YoloConfig()).validate()
    train, val = as_inputs(train), as_inputs(val)
    if not train:
        raise ParameterError("no training data given")
    train_names = train_names or [None] * len(train)
    val_names = val_names or [None] * len(val)
    with contextlib.ExitStack() as stack:
        tr = [stack.enter_context(open_source(p, n)) for p, n in zip(train, train_names)]
        va = [stack.enter_context(open_source(p, n)) for p, n in zip(val, val_names)]
        for src in tr + va:
            if not src.has_labels:
                raise DataError(f"{src.path} has no box labels to train on")
        class_names = next((s.class_names for s in tr if s.class_names), None)
        if not class_names:
            n_cls = 1 + max(int(s.boxes(k)["class"].max(initial=0)) for s in tr for k in range(min(len(s), 50)))
            class_names = [str(c) for c in range(n_cls)]
        key_data = {
            "format": 3,
            "train": [s.checksum() for s in tr],
            "val": [s.checksum() for s in va],
            "export": config.export_params(),
            "val_fraction": config.val_fraction if not va else None,
            "seed": config.seed if not va else None,
            "classes": list(class_names),
        }
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(cache_dir) if cache_dir is not None else cache_root()
        final = root / key
        if (final / "data.yaml").is_file():
            if progress:
                progress.message(f"using cached YOLO export {final}")
            return final / "data.yaml"
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
        try:
            with Timer() as t:
                if va:
                    n_train = _export_split(tr, tmp, "train", config)
                    n_val = _export_split(va, tmp, "val", config, prefix="v")
                    val_dir = "images/val"
                else:
                    total = [(s, k) for s, src in enumerate(tr) for k in range(len(src))]
                    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0x7A1,)))
                    n_hold = int(round(config.val_fraction * len(total)))
                    if config.val_fraction > 0 and len(total) > 1:
                        n_hold = min(max(n_hold, 1), len(total) - 1)
                    held = {total[i] for i in rng.choice(len(total), n_hold, replace=False)} if n_hold else set()
                    n_train = _export_split(tr, tmp, "train", config, select=lambda s, k: (s, k) not in held)
                    if held:
                        n_val = _export_split(tr, tmp, "val", config, select=lambda s, k: (s, k) in held)
                        val_dir = "images/val"
                    else:
                        n_val, val_dir = n_train, "images/train"
            data = {
                "path": str(final.resolve()),
                "train": "images/train",
                "val": val_dir,
                "names": {i: n for i, n in enumerate(class_names)},
                "channels": 1,
            }
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            (tmp / "source.json").write_text(json.dumps(
                {**key_data, "train_paths": [str(s.path) for s in tr], "val_paths": [str(s.path) for s in va],
                 "n_train_tiles": n_train, "n_val_tiles": n_val}, indent=2))
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same export first
                shutil.rmtree(tmp, ignore_errors=True)
            if progress:
                progress.message(f"exported {n_train} train / {n_val} val tiles to {final} in {t.seconds:.1f}s")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final / "data.yaml"

