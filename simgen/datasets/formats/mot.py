"""MOTChallenge files: reading tracks/detections and exporting simgen video datasets.

A MOTChallenge sequence folder holds ``seqinfo.ini``, ``img1/000001.jpg ...``
and ``gt/gt.txt``; tracker output is one text file per sequence.  Lines are
comma separated::

    gt.txt       frame, id, bb_left, bb_top, bb_width, bb_height, conf, class, visibility
    results      frame, id, bb_left, bb_top, bb_width, bb_height, conf, x, y, z
    det.txt      like results with id = -1

Conventions used here (documented in ``docs/evaluate.md``):

* frames are 1-based on disk (``frame = sample + 1``), as TrackEval requires;
* track ids are 1-based on disk (``id = track_id + 1``); ``id = -1`` means "no
  identity" (detections), read back without a ``track_id``;
* gt ``class`` is 1-based (``class = simgen class + 1``; 1 = MOTChallenge's
  "pedestrian", which TrackEval's MOT loader insists on);
* box coordinates are written as they are (``bb_left = x0``, pixel origin 0 like
  Python trackers write them).  Pass ``pixel_origin=1`` to shift to the 1-based
  pixel convention of the original MATLAB devkit;
* gt rows with ``conf = 0`` are "ignore" rows; :func:`read_mot` drops them by default.
"""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_dir, atomic_write_text, check_output_dir
from simgen.datasets.formats.names import clean_stem
from simgen.datasets.formats.text import read_text
from simgen.datasets.imageio import read_image
from simgen.datasets.normalize import to_uint8
from simgen.datasets.sources import Source, open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import track

__all__ = ["read_mot", "format_mot", "write_mot_file", "read_seqinfo", "format_seqinfo", "MotSequence",
           "open_mot_sequence", "export_mot", "tracks_with_boxes"]


#: Bound on frame counts and image sides read from files (a seqLength of 2e9 once ended in MemoryError).
MAX_FRAMES_OR_PIXELS = 1_000_000


def read_mot(path: str | PathLike, *, kind: str = "auto", pixel_origin: int = 0,
             drop_ignored: bool = True) -> pd.DataFrame:
    """Read a MOTChallenge text file.

    Parameters
    ----------
    path : path-like
        ``gt.txt``, ``det.txt`` or a tracker result file.
    kind : {"auto", "gt", "results"}
        ``"gt"``: column 7 is the consider flag, 8 the class, 9 the visibility;
        ``"results"``: column 7 is the confidence (-> ``score``).  ``"auto"``: gt
        for a file named ``gt.txt`` or with exactly 9 columns, else results.
    pixel_origin : {0, 1}
        Pixel coordinate origin used in the file (subtracted on reading).
    drop_ignored : bool
        Drop gt rows with consider flag 0.

    Returns
    -------
    DataFrame
        ``sample, track_id, x0, y0, x1, y1, x, y, class`` plus ``score`` (results) or
        ``visibility`` (gt); no ``track_id`` when every id is -1.

    Raises
    ------
    DataError
        On malformed lines, negative sizes, frame numbers < 1 or mixed -1/real ids.
    """
    path = Path(path)
    if kind not in ("auto", "gt", "results"):
        raise ParameterError(f"kind must be 'auto', 'gt' or 'results', got {kind!r}")
    if pixel_origin not in (0, 1):
        raise ParameterError(f"pixel_origin must be 0 or 1, got {pixel_origin}")
    text = read_text(path, "MOT file")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        arr = np.zeros((0, 10))
        ncol = 10 if kind != "gt" else 9
    else:
        ncol = len(lines[0].replace(" ", "").split(","))
        if ncol < 6:
            raise DataError(f"{path}:1: expected at least 6 comma-separated columns, got {ncol}")
        try:
            arr = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"{path}: malformed MOT line ({str(exc).splitlines()[0][:120]})") from None
    if kind == "auto":
        kind = "gt" if (path.name == "gt.txt" or ncol == 9) else "results"
    if arr.shape[1] < 6:
        raise DataError(f"{path}: expected at least 6 columns, got {arr.shape[1]}")
    if not np.all(np.isfinite(arr[:, :6])):
        raise DataError(f"{path}: non-finite frame, id or box values")
    frame = arr[:, 0]
    if np.any(frame < 1) or np.any(frame != np.round(frame)):
        raise DataError(f"{path}: frame numbers must be integers >= 1 (MOTChallenge frames are 1-based)")
    if len(frame) and frame.max() > MAX_FRAMES_OR_PIXELS:
        raise DataError(f"{path}: frame number {int(frame.max())} is beyond {MAX_FRAMES_OR_PIXELS}")
    if np.any(arr[:, 4] < 0) or np.any(arr[:, 5] < 0):
        raise DataError(f"{path}: boxes with negative width or height")
    ids = arr[:, 1]
    if np.any(ids != np.round(ids)):
        raise DataError(f"{path}: track ids must be integers")
    x0 = arr[:, 2] - pixel_origin
    y0 = arr[:, 3] - pixel_origin
    df = pd.DataFrame({"sample": (frame - 1).astype(np.int64)})
    untracked = ids == -1
    if untracked.any() and not untracked.all():
        raise DataError(f"{path}: mixes id -1 (untracked detections) with track ids")
    if not untracked.all():
        df["track_id"] = (ids - 1).astype(np.int64)
    df["x0"] = x0.astype(np.float64)
    df["y0"] = y0.astype(np.float64)
    df["x1"] = (x0 + arr[:, 4]).astype(np.float64)
    df["y1"] = (y0 + arr[:, 5]).astype(np.float64)
    df["x"] = (x0 + arr[:, 4] / 2).astype(np.float64)
    df["y"] = (y0 + arr[:, 5] / 2).astype(np.float64)
    keep = np.ones(len(df), bool)
    if kind == "gt":
        cls = arr[:, 7] if arr.shape[1] > 7 else np.ones(len(df))
        df["class"] = np.clip(cls - 1, 0, None).astype(np.int16)
        if arr.shape[1] > 8:
            df["visibility"] = arr[:, 8].astype(np.float64)
        if drop_ignored and arr.shape[1] > 6:
            keep = arr[:, 6] != 0
    else:
        df["class"] = np.zeros(len(df), np.int16)
        if arr.shape[1] > 6:
            df["score"] = arr[:, 6].astype(np.float64)
    df = df[keep].sort_values("sample", kind="stable").reset_index(drop=True)
    return df


def tracks_with_boxes(tracks: pd.DataFrame, box_size: float | None = None) -> pd.DataFrame:
    """Make sure a tracks table has box columns.

    Uses existing ``x0, y0, x1, y1``; else squares of side ``size`` (column) or
    ``box_size`` centred on ``x, y``.
    """
    if all(c in tracks.columns for c in ("x0", "y0", "x1", "y1")):
        return tracks
    if "size" in tracks.columns and box_size is None:
        side = tracks["size"].to_numpy(np.float64)
    elif box_size is not None:
        if not box_size > 0:
            raise ParameterError(f"box size must be > 0 pixels, got {box_size}")
        side = np.full(len(tracks), float(box_size))
    else:
        raise ParameterError("tracks have no boxes (x0, y0, x1, y1) or 'size' column; give a box size (--box-size)")
    x = tracks["x"].to_numpy(np.float64)
    y = tracks["y"].to_numpy(np.float64)
    return tracks.assign(x0=x - side / 2, y0=y - side / 2, x1=x + side / 2, y1=y + side / 2)


def format_mot(tracks: pd.DataFrame, *, kind: str = "gt", pixel_origin: int = 0, box_size: float | None = None,
               keep_classes: bool = False) -> str:
    """Tracks (``sample, track_id`` + boxes or ``x, y``) → MOTChallenge text.

    ``kind="gt"`` writes 9 columns (consider flag 1, class + 1, visibility or 1);
    ``kind="results"`` writes 10 columns (``score`` or 1 as confidence, -1 -1 -1).
    Rows are sorted by frame then id.
    """
    if kind not in ("gt", "results"):
        raise ParameterError(f"kind must be 'gt' or 'results', got {kind!r}")
    if len(tracks) == 0:
        return ""
    t = tracks_with_boxes(tracks, box_size)
    if "track_id" in t.columns:
        ids = t["track_id"].to_numpy(np.int64) + 1
    else:
        ids = np.full(len(t), -1, np.int64)
    frame = t["sample"].to_numpy(np.int64) + 1
    order = np.lexsort((ids, frame))
    b = t[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)[order]
    left, top = b[:, 0] + pixel_origin, b[:, 1] + pixel_origin
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    frame, ids = frame[order], ids[order]
    if kind == "gt":
        # class 1 ("pedestrian") for every object by default: TrackEval's MOTChallenge preprocessing
        # treats class 2 as a distractor and drops class 3, so a multi-class ground truth scored
        # against itself would give MOTA 0.3; keep_classes writes class + 1 for tools that use it
        if keep_classes and "class" in t.columns:
            cls = t["class"].to_numpy(np.int64)[order] + 1
        else:
            cls = np.ones(len(t), np.int64)
        vis = t["visibility"].to_numpy(np.float64)[order] if "visibility" in t.columns else np.ones(len(t))
        return "".join(
            f"{f},{i},{a:.3f},{c:.3f},{d:.3f},{e:.3f},1,{k},{v:.3g}\n"
            for f, i, a, c, d, e, k, v in zip(frame.tolist(), ids.tolist(), left.tolist(), top.tolist(), w.tolist(),
                                              h.tolist(), cls.tolist(), vis.tolist())
        )
    conf = t["score"].to_numpy(np.float64)[order] if "score" in t.columns else np.ones(len(t))
    return "".join(
        f"{f},{i},{a:.3f},{c:.3f},{d:.3f},{e:.3f},{s:.6g},-1,-1,-1\n"
        for f, i, a, c, d, e, s in zip(frame.tolist(), ids.tolist(), left.tolist(), top.tolist(), w.tolist(),
                                       h.tolist(), conf.tolist())
    )


def write_mot_file(tracks: pd.DataFrame, path: str | PathLike, *, kind: str = "results", pixel_origin: int = 0,
                   box_size: float | None = None, keep_classes: bool = False, overwrite: bool = False) -> Path:
    """Write tracks as a MOTChallenge text file, atomically (see :func:`format_mot`)."""

    text = format_mot(tracks, kind=kind, pixel_origin=pixel_origin, box_size=box_size, keep_classes=keep_classes)
    return atomic_write_text(path, text, overwrite=overwrite)


class _CaseConfigParser(configparser.ConfigParser):
    """A ConfigParser that keeps the case of keys (``seqLength``, not ``seqlength``)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def read_seqinfo(path: str | PathLike) -> dict[str, str | int]:
    """Read ``seqinfo.ini`` → dict (``name, imDir, frameRate, seqLength, imWidth, imHeight, imExt``)."""
    cp = _CaseConfigParser()
    try:
        if not cp.read(Path(path)):
            raise DataError(f"{path} does not exist")
    except configparser.Error as exc:
        raise DataError(f"{path}: not a valid seqinfo.ini ({type(exc).__name__})") from None
    if "Sequence" not in cp:
        raise DataError(f"{path}: no [Sequence] section")
    info: dict[str, str | int] = dict(cp["Sequence"])
    for key in ("frameRate", "seqLength", "imWidth", "imHeight"):
        if key in info:
            try:
                value = int(float(info[key]))
            except (ValueError, OverflowError):
                raise DataError(f"{path}: {key} must be a number, got {info[key]!r}") from None
            if not 0 <= value <= MAX_FRAMES_OR_PIXELS:
                raise DataError(f"{path}: {key}={value} is outside 0..{MAX_FRAMES_OR_PIXELS}")
            info[key] = value
    return info


def format_seqinfo(name: str, n_frames: int, width: int, height: int, frame_rate: float = 25,
                   im_dir: str = "img1", im_ext: str = ".jpg") -> str:
    """Text of a ``seqinfo.ini`` (``name`` made safe by :func:`~simgen.datasets.formats.names.clean_stem`)."""
    return (
        "[Sequence]\n"
        f"name={clean_stem(name, strip_suffix=False)}\n"
        f"imDir={im_dir}\nframeRate={frame_rate:g}\nseqLength={int(n_frames)}\n"
        f"imWidth={int(width)}\nimHeight={int(height)}\nimExt={im_ext}\n"
    )


@dataclass
class MotSequence:
    """A MOTChallenge sequence folder (see :func:`open_mot_sequence`)."""

    root: Path
    info: dict
    tracks: pd.DataFrame
    source: Path
    _shape: tuple | None = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        top = int(self.tracks["sample"].max()) + 1 if len(self.tracks) else 0
        return max(int(self.info.get("seqLength", 0)), top)

    def image_path(self, i: int) -> Path:
        d = self.root / str(self.info.get("imDir", "img1"))
        return d / f"{i + 1:06d}{self.info.get('imExt', '.jpg')}"

    def has_images(self) -> bool:
        return self.image_path(0).exists()

    def image(self, i: int) -> np.ndarray:

        return read_image(self.image_path(i))

    def shape(self, i: int = 0) -> tuple[int, int]:
        if "imHeight" in self.info and "imWidth" in self.info:
            return int(self.info["imHeight"]), int(self.info["imWidth"])
        if self._shape is None:
            self._shape = self.image(i).shape
        return self._shape


def open_mot_sequence(root: str | PathLike, *, pixel_origin: int = 0) -> MotSequence:
    """Open a MOTChallenge sequence folder: ``seqinfo.ini`` + ``gt/gt.txt`` (or ``det/det.txt``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory")
    info = read_seqinfo(root / "seqinfo.ini") if (root / "seqinfo.ini").exists() else {"name": root.name}
    for rel in ("gt/gt.txt", "det/det.txt"):
        if (root / rel).exists():
            source = root / rel
            break
    else:
        raise DataError(f"{root}: no gt/gt.txt or det/det.txt (not a MOTChallenge sequence)")
    return MotSequence(root, info, read_mot(source, pixel_origin=pixel_origin), source)


def export_mot(
    source: str | PathLike | Source,
    out_dir: str | PathLike,
    *,
    table: str = "tracks",
    name: str | None = None,
    frame_rate: float = 25.0,
    box_size: float | None = None,
    images: bool = True,
    pixel_origin: int = 0,
    keep_classes: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Export a simgen video dataset as a MOTChallenge sequence folder.

    Layout: ``out_dir/seqinfo.ini``, ``out_dir/gt/gt.txt`` and, with ``images``,
    ``out_dir/img1/000001.jpg ...`` (8-bit greyscale JPEG, quality 95).  Written
    under a temporary name and renamed when complete.

    Parameters
    ----------
    source : path-like, Source or Dataset
        A simgen HDF5 file or sharded set (directory, ``manifest.json`` or ``virtual.h5``)
        with a tracks table (``sample, track_id, x, y`` [+ boxes or ``size``]); label-only
        files with ``images=False``.
    out_dir : path-like
        Destination folder (must not exist unless ``overwrite``).
    table : str
        Table to export (``tracks``; a ``boxes`` table with a ``track_id`` column works too).
    name : str, optional
        Sequence name (default: the folder name), made safe by
        :func:`~simgen.datasets.formats.names.clean_stem` in :func:`format_seqinfo` (no line
        breaks, ``=`` or separators reach ``seqinfo.ini``).
    frame_rate : float
        Written to ``seqinfo.ini``.
    box_size : float, optional
        Side of the square box for point tracks without ``size``.
    images : bool
        Write ``img1/*.jpg``.
    pixel_origin : {0, 1}
        See module notes.
    keep_classes : bool
        Write each object's class + 1 in the class column.  Off by default: every object is
        class 1 (MOTChallenge "pedestrian"), the one class TrackEval scores by default.
    overwrite : bool
    progress : bool
        Show a progress bar over the frames written on stderr (``"export mot"``).

    Returns
    -------
    Path of ``gt/gt.txt``.
    """

    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    if not frame_rate > 0:
        raise ParameterError(f"frame rate must be > 0, got {frame_rate}")
    with open_source(source, table=table, require_images=False) as src:
        if not src.has_labels:
            raise DataError(f"{src.path} has no {table!r} table (has {src.tables or 'none'})")
        tracks = src.read_table()
        if tracks is None or "track_id" not in tracks.columns:
            raise DataError(f"{src.path}: table {table!r} has no track_id column")
        if images and not src.has_images:
            raise DataError(f"{src.path} stores no images; export with images=False (--no-images)")
        text = format_mot(tracks, kind="gt", pixel_origin=pixel_origin, box_size=box_size, keep_classes=keep_classes)
        h, w = src.shape(0)
        seq = name or out_dir.resolve().name  # made safe by format_seqinfo
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            (tmp / "gt").mkdir()
            (tmp / "gt" / "gt.txt").write_text(text)
            (tmp / "seqinfo.ini").write_text(format_seqinfo(seq, len(src), w, h, frame_rate))
            if images:
                from PIL import Image

                (tmp / "img1").mkdir()
                for k in track(range(len(src)), total=len(src), description="export mot", enabled=progress):
                    Image.fromarray(to_uint8(src.image(k))).save(tmp / "img1" / f"{k + 1:06d}.jpg", quality=95)
    return out_dir / "gt" / "gt.txt"
