"""Load predictions and ground truth from any supported source into DataFrames.

Supported sources (detected from the path):

========================  ==============================================================
``*.h5`` / ``*.hdf5``     simgen dataset: ``boxes`` (else ``points``) table, ``tracks``
                          table, images, instance masks, ``names`` (a shard set's
                          ``virtual.h5`` reads the whole set)
``manifest.json``         sharded simgen dataset (also its directory)
``*.json``                COCO dataset (images/annotations/categories) or results list
``*.txt``                 MOTChallenge file (gt.txt, det.txt or tracker output)
``*.csv``                 table with ``sample`` (or ``frame``), ``x, y`` and/or
                          ``x0, y0, x1, y1`` [, ``class, score, track_id``], e.g. from
                          ``simgen track``
directory                 MOTChallenge sequence (``seqinfo.ini`` / ``gt/gt.txt``), COCO
                          folder (``annotations.json``) or YOLO folder (``images/`` +
                          ``labels/`` [+ ``masks/``], or only ``labels/`` / ``*.txt``
                          for predictions: 6th column = confidence)
========================  ==============================================================

Everything becomes an :class:`Annotations` whose ``table`` has the columns
``sample, x, y, class`` (+ ``x0, y0, x1, y1`` for boxes, ``score``,
``track_id`` when known).  Predictions are put on the ground truth's frame
indices with :func:`align`: by file stem when both sides have real file names
(YOLO, COCO, HDF5 with ``/names``), else by frame index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Callable, Literal, Self

import numpy as np
import pandas as pd

from simgen.datasets.formats.coco import read_coco
from simgen.datasets.formats.mot import open_mot_sequence, read_mot
from simgen.datasets.formats.yolo_folder import open_yolo_folder
from simgen.datasets.imageio import read_image
from simgen.datasets.shards.write import MANIFEST_NAME
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError, SchemaError
from simgen.evaluate.matching import BOX_COLUMNS, box_centres

__all__ = ["Annotations", "load_annotations", "align", "detect_format"]


@dataclass
class Annotations:
    """Annotations (ground truth or predictions) of a sequence of frames.

    Attributes
    ----------
    table : DataFrame
        Detections: ``sample, x, y, class`` [+ ``x0, y0, x1, y1``, ``score``, ``track_id``].
    names : list of str
        Frame names (file stems), one per frame.
    shapes : list of (H, W) or None
        Image size per frame when known.
    class_names : list of str
    source : str
    fmt : str
        ``"hdf5"``, ``"yolo"``, ``"coco"``, ``"mot"`` or ``"csv"``.
    named : bool
        Names are real file stems (pair by name) rather than frame numbers.
    has_boxes : bool
    tracks : DataFrame or None
        Tracks (``sample, track_id, x, y`` [+ boxes]) when the source has identities.
    image : callable or None
        ``image(i) -> float32 (H, W)``.
    mask : callable or None
        ``mask(i) -> instance label image or None``.
    """

    table: pd.DataFrame
    names: list
    shapes: list | None
    class_names: list
    source: str
    fmt: str
    named: bool
    has_boxes: bool
    tracks: pd.DataFrame | None = None
    image: Callable | None = None
    mask: Callable | None = None
    meta: dict = field(default_factory=dict, repr=False)
    _closers: list = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def has_scores(self) -> bool:
        return "score" in self.table.columns

    def close(self) -> None:
        for c in self._closers:
            c()
        self._closers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False


def _normalise(df: pd.DataFrame | None, what: str) -> tuple[pd.DataFrame, bool]:
    """Common column set; box centres as x, y; class defaults to 0."""
    if df is None:
        df = pd.DataFrame({"sample": np.zeros(0, np.int64)})
    df = df.reset_index(drop=True)
    if "sample" not in df.columns:
        if "frame" in df.columns:
            df = df.rename(columns={"frame": "sample"})
        else:
            raise DataError(f"{what}: no 'sample' (or 'frame') column (has {list(df.columns)})")
    has_boxes = all(c in df.columns for c in BOX_COLUMNS)
    if has_boxes:
        for c in BOX_COLUMNS:
            df[c] = df[c].astype(np.float64)
        if not ("x" in df.columns and "y" in df.columns):
            centres = box_centres(df[BOX_COLUMNS].to_numpy(np.float64))
            df["x"], df["y"] = centres[:, 0], centres[:, 1]
    elif not ("x" in df.columns and "y" in df.columns):
        if len(df) == 0:
            df["x"], df["y"] = np.zeros(0), np.zeros(0)
        else:
            raise DataError(f"{what}: needs box columns x0, y0, x1, y1 or point columns x, y")
    df["x"] = df["x"].astype(np.float64)
    df["y"] = df["y"].astype(np.float64)
    if "class" not in df.columns:
        df["class"] = np.zeros(len(df), np.int64)
    try:
        cls = df["class"].to_numpy(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: class ids must be integers") from None
    if len(df) and (not np.all(np.isfinite(cls)) or np.any(cls != np.round(cls)) or np.any(cls < 0)):
        raise DataError(f"{what}: class ids must be non-negative integers")
    df["class"] = cls.astype(np.int64)
    s = df["sample"].to_numpy()
    if len(df) and (s.dtype.kind not in "iuf" or not np.all(np.isfinite(s.astype(np.float64)))
                    or np.any(s.astype(np.float64) != np.round(s.astype(np.float64)))):
        raise DataError(f"{what}: frame ids must be integers")
    df["sample"] = s.astype(np.int64)
    if "score" in df.columns:
        df["score"] = df["score"].astype(np.float64)
    return df, has_boxes


def detect_format(path: str | PathLike) -> str:
    """Guess the format of a path: ``hdf5``, ``coco``, ``mot``, ``csv`` or ``yolo``."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".h5", ".hdf5"):
            return "hdf5"
        if suffix == ".json":
            return "hdf5" if p.name == MANIFEST_NAME else "coco"
        if suffix == ".txt":
            return "mot"
        if suffix == ".csv":
            return "csv"
        raise DataError(f"{p}: unknown file type {p.suffix!r} (expected .h5, .json, .txt (MOT), .csv or a folder)")
    if (p / "seqinfo.ini").exists() or (p / "gt" / "gt.txt").exists() or (p / "det" / "det.txt").exists():
        return "mot"
    if (p / MANIFEST_NAME).is_file():
        return "hdf5"
    if (p / "annotations.json").exists():
        return "coco"
    return "yolo"


def load_annotations(path: str | PathLike, *, like: Annotations | None = None, table: str | None = None,
                     role: str = "annotations") -> Annotations:
    """Read a source into :class:`Annotations`.

    Parameters
    ----------
    path : path-like
        File or folder (see module docstring).
    like : Annotations, optional
        Ground truth, needed to read label-only YOLO folders (image sizes) and
        COCO results lists (image/category ids).
    table : str, optional
        HDF5 table to use (default ``boxes``, else ``points``, else ``tracks``).
    role : str
        Word used in error messages ("predictions", "ground truth").

    Raises
    ------
    DataError, SchemaError
        Unreadable or inconsistent sources.
    """
    fmt = detect_format(path)
    loader = {"hdf5": _load_hdf5, "coco": _load_coco, "mot": _load_mot, "csv": _load_csv, "yolo": _load_yolo}[fmt]
    return loader(Path(path), like=like, table=table, role=role)


# -- loaders ---------------------------------------------------------------------
def _stem(name: str) -> str:
    return Path(name).stem or name


def _load_hdf5(path: Path, *, like, table, role) -> Annotations:
    return _load_source(path, fmt="hdf5", table=table, role=role)


def _load_source(path: Path, *, fmt: str, table, role) -> Annotations:
    """Annotations of anything :func:`open_source` reads (HDF5 files, shard sets, YOLO folders with images)."""
    src = open_source(path, require_images=False)
    try:
        tables = src.tables
        if table is not None and fmt == "hdf5":
            if table not in tables:
                raise DataError(f"{path} has no {table!r} table (has {tables or 'none'})")
            name = table
        else:
            name = next((t for t in ("boxes", "points", "tracks") if t in tables), None)
            if name is None and fmt == "hdf5":
                raise DataError(f"{path} has no boxes, points or tracks table to evaluate")
        df, has_boxes = _normalise(src.read_table(name) if name else None, f"{role} {path}:{name}")
        has_boxes = has_boxes or fmt == "yolo"
        tracks = None
        if "tracks" in tables:
            tracks, _ = _normalise(src.read_table("tracks"), f"{role} {path}:tracks")
        stem = (lambda name: name) if src.kind == "yolo" else _stem  # YOLO names are file stems already
        names = [stem(src.name(k)) for k in range(len(src))]
        try:
            shapes = [src.shape(k) for k in range(len(src))]
        except SchemaError:  # label-only file without /shapes
            shapes = None
    except BaseException:
        src.close()
        raise
    ann = Annotations(df, names, shapes, src.class_names, str(path), fmt, src.named, has_boxes, tracks,
                      image=src.image if src.has_images else None, mask=src.mask if src.has_masks else None,
                      meta=_stored_threshold(src))
    ann._closers.append(src.close)
    return ann


def _stored_threshold(src) -> dict:
    """``{"conf_f1": t}`` when a prediction file carries the threshold its model chose (simgen
    predictions keep every candidate with its score and store the threshold beside them)."""
    attrs = getattr(getattr(src, "dataset", None), "attrs", None) or {}
    raw = attrs.get("conf_f1")
    if not isinstance(raw, (int, float, np.number)) or isinstance(raw, bool):
        return {}
    value = float(raw)
    return {"conf_f1": value} if np.isfinite(value) else {}


def _load_coco(path: Path, *, like, table, role) -> Annotations:

    json_path = path / "annotations.json" if path.is_dir() else path
    kwargs = {}
    like_coco = like is not None and "coco_ids" in like.meta
    if like_coco:
        kwargs = {"image_ids": like.meta["coco_ids"][0], "category_ids": like.meta["coco_ids"][1]}
    data = read_coco(json_path, **kwargs)
    df, _ = _normalise(data.boxes, f"{role} {json_path}")
    if data.is_results:
        n = like.n if like is not None else len(data.image_ids)
        if like is not None and not like_coco and data.image_ids and len(data.image_ids) > like.n:
            raise DataError(f"{json_path}: results refer to image_id {len(data.image_ids)} but the ground truth "
                            f"has {like.n} frames (image_id = frame + 1 expected)")
        names = list(like.names) if like is not None else [f"{i:06d}" for i in range(n)]
        ann = Annotations(df, names, like.shapes if like is not None else None, data.class_names, str(json_path),
                          "coco", False, True)
        return ann
    names = [_stem(n) if n else f"{i:06d}" for i, n in enumerate(data.names)]
    named = all(data.names)
    shapes = data.shapes if all(h > 0 and w > 0 for h, w in data.shapes) else None
    image = None
    images_dir = json_path.parent / "images"
    if images_dir.is_dir() and named:
        def image(i, _d=images_dir, _n=data.names):
            return read_image(_d / Path(_n[i]).name)

    return Annotations(df, names, shapes, data.class_names, str(json_path), "coco", named, True, image=image,
                       meta={"coco_ids": (data.image_ids, data.category_ids)})


def _load_mot(path: Path, *, like, table, role) -> Annotations:

    if path.is_dir():
        seq = open_mot_sequence(path)
        df = seq.tracks
        n = seq.n_frames
        shapes = [seq.shape()] * n if ("imHeight" in seq.info or seq.has_images()) else None
        image = seq.image if seq.has_images() else None
        source = str(seq.source)
    else:
        df = read_mot(path)
        n = int(df["sample"].max()) + 1 if len(df) else 0
        if like is not None:
            n = max(n, like.n)
        shapes, image, source = None, None, str(path)
    df, _ = _normalise(df, f"{role} {source}")
    tracks = df if "track_id" in df.columns else None
    return Annotations(df, [f"{i:06d}" for i in range(n)], shapes, [], source, "mot", False, True, tracks,
                       image=image)


def _load_csv(path: Path, *, like, table, role) -> Annotations:
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0][:100]})") from None
    df, has_boxes = _normalise(raw, f"{role} {path}")
    n = int(df["sample"].max()) + 1 if len(df) else 0
    if like is not None:
        n = max(n, like.n)
    tracks = df if "track_id" in df.columns else None
    if tracks is not None:
        tid = tracks["track_id"].to_numpy(np.float64)
        if not np.all(np.isfinite(tid)):
            raise DataError(f"{path}: track_id has missing values")
        df["track_id"] = tid.astype(np.int64)
    return Annotations(df, [f"{i:06d}" for i in range(n)], None, [], str(path), "csv", False, has_boxes, tracks)


def _load_yolo(path: Path, *, like, table, role) -> Annotations:
    if (path / "images").is_dir():
        return _load_source(path, fmt="yolo", table=table, role=role)
    # label-only predictions (labels/ or bare *.txt): image sizes come from the ground truth
    folder = open_yolo_folder(path)
    if like is None or like.shapes is None:
        raise DataError(f"{path} holds labels only; its image sizes must come from ground truth with images")
    index = {n: i for i, n in enumerate(like.names)}
    unknown = [n for n in folder.names if n not in index]
    if unknown:
        raise DataError(f"{role} {path}: {len(unknown)} label file(s) have no ground-truth image, "
                        f"e.g. {unknown[0]!r}.txt")
    frames = []
    for n in folder.names:
        i = index[n]
        b = folder.boxes(n, shape=like.shapes[i])
        frames.append(b.assign(sample=np.full(len(b), i, np.int64)))
    df, _ = _normalise(pd.concat(frames, ignore_index=True) if frames else None, f"{role} {path}")
    # label-only predictions live on the reference's frames directly
    return Annotations(df, list(like.names), list(like.shapes), list(folder.class_names), str(path), "yolo",
                       like.named, True)


# -- pairing -----------------------------------------------------------------------
def align(pred: Annotations, gt: Annotations) -> Annotations:
    """Put predictions on the ground truth's frame indices.

    Frames are paired by name when both sides carry real file names, else by
    index.  Ground-truth frames without predictions simply have no detections
    (YOLO writes no file for an empty image).

    Raises
    ------
    DataError
        A prediction frame has no ground-truth counterpart (unknown file stem,
        or frame id beyond the ground truth's last frame).
    """
    if pred.named and gt.named:
        index = {}
        for i, n in enumerate(gt.names):
            if n in index:
                raise DataError(f"ground truth {gt.source} has two frames named {n!r}")
            index[n] = i
        unknown = [n for n in pred.names if n not in index]
        if unknown:
            raise DataError(
                f"predictions {pred.source}: {len(unknown)} frame(s) not in ground truth {gt.source}, "
                f"e.g. {unknown[0]!r} (frames are paired by file name)"
            )
        mapping = np.array([index[n] for n in pred.names], np.int64)

        def remap(df):
            if df is None:
                return None
            s = df["sample"].to_numpy(np.int64)
            if len(s) and s.max() >= len(mapping):
                raise DataError(f"predictions {pred.source}: frame id {int(s.max())} beyond its {len(mapping)} frames")
            return df.assign(sample=mapping[s] if len(s) else s)
    else:
        def remap(df):
            if df is None:
                return None
            s = df["sample"].to_numpy(np.int64)
            if len(s) and s.max() >= gt.n:
                raise DataError(
                    f"predictions {pred.source} have frame id {int(s.max())} but ground truth {gt.source} "
                    f"has {gt.n} frame(s) (frames are paired by index)"
                )
            return df

    out = Annotations(remap(pred.table), list(gt.names), gt.shapes, pred.class_names or gt.class_names,
                      pred.source, pred.fmt, gt.named, pred.has_boxes, remap(pred.tracks),
                      image=gt.image, mask=None)
    if pred.mask is not None:
        if pred.named and gt.named:
            inverse = {int(j): i for i, j in enumerate(mapping.tolist())}
            out.mask = lambda i, _m=pred.mask, _inv=inverse: _m(_inv[i]) if i in _inv else None
        else:
            out.mask = pred.mask
    out._closers = pred._closers
    return out


def validate_options(*, iou: float | None = None, max_distance: float | None = None,
                     conf: float | None = None) -> None:
    """Check numeric options before any work (raise :class:`ParameterError`)."""
    if iou is not None and not (np.isfinite(iou) and 0.0 < iou <= 1.0):
        raise ParameterError(f"--iou must be in (0, 1], got {iou}")
    if max_distance is not None and not (np.isfinite(max_distance) and max_distance > 0):
        raise ParameterError(f"--max-dist must be > 0 pixels, got {max_distance}")
    if conf is not None and not np.isfinite(conf):
        raise ParameterError(f"--conf must be a number, got {conf}")
