"""The YOLO folder layout, read side: label text codec and :class:`YoloFolder`.

A YOLO folder is ``root/images/<stem>.<ext>`` + ``root/labels/<stem>.txt`` with one
line per object, ``class xc yc w h [confidence]`` normalised by the image width
and height.  Optional extras understood here: ``root/masks/<stem>.png`` (instance
id label images), ``root/classes.txt`` (one class name per line) and
``root/data.yaml`` (Ultralytics dataset description).  Ultralytics' split layout
(``images/train/x.png`` + ``labels/train/x.txt``) is read as one set.

Most code reads such folders through :func:`simgen.datasets.sources.open_source`;
exporting lives in :mod:`simgen.datasets.formats.yolo`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.imageio import IMAGE_SUFFIXES, image_shape, read_image
from simgen.errors import DataError

__all__ = [
    "BOX_COLUMNS",
    "read_yolo_labels",
    "format_yolo_labels",
    "yolo_drop_reasons",
    "DROP_REASONS",
    "YoloFolder",
    "open_yolo_folder",
]

BOX_COLUMNS = ["x0", "y0", "x1", "y1", "class"]


def read_yolo_labels(path: str | PathLike, width: int, height: int, n_classes: int | None = None,
                     tolerance: float = 0.01) -> pd.DataFrame:
    """Read one YOLO label file into pixel boxes.

    Parameters
    ----------
    path : path-like
        ``.txt`` file; a missing file means "no objects".
    width, height : int
        Image size in pixels.
    n_classes : int, optional
        Number of classes of the folder (``classes.txt``); a larger class id is refused.
    tolerance : float
        Normalized coordinates may leave [0, 1] by this much (rounding of exporters); further
        out is refused as a label file that does not belong to the image.

    Returns
    -------
    DataFrame with columns x0, y0, x1, y1 (float, pixels), class (int) and, when the
    file has a sixth column, score (the confidence).

    Raises
    ------
    DataError
        On malformed lines (wrong column count, non-numbers, negative sizes, class ids beyond
        ``n_classes``, coordinates outside [0, 1]) and files that are not UTF-8 text.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame({c: np.zeros(0, np.float32) for c in BOX_COLUMNS}).astype({"class": np.int16})
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text label file") from None
    rows = []
    ncols = None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (5, 6):
            raise DataError(f"{path}:{lineno}: expected 5 or 6 columns (class xc yc w h [conf]), got {len(parts)}")
        if ncols is not None and len(parts) != ncols:
            raise DataError(f"{path}:{lineno}: mixes lines with and without a confidence column")
        ncols = len(parts)
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric value in {line.strip()!r}") from None
    arr = np.array(rows, np.float64).reshape(-1, ncols or 5)
    cls, xc, yc, w, h = arr[:, 0], arr[:, 1] * width, arr[:, 2] * height, arr[:, 3] * width, arr[:, 4] * height
    if np.any(w < 0) or np.any(h < 0) or not np.all(np.isfinite(arr[:, 1:5])):
        raise DataError(f"{path}: boxes with negative or non-finite size")
    if np.any(cls < 0) or np.any(cls != np.round(cls)):
        raise DataError(f"{path}: class ids must be non-negative integers")
    if n_classes is not None and len(cls) and cls.max() >= n_classes:
        raise DataError(f"{path}: class id {int(cls.max())} but the folder has {n_classes} class(es) "
                        "(classes.txt)")
    norm = arr[:, 1:5]
    lo, hi = norm[:, :2] - norm[:, 2:] / 2, norm[:, :2] + norm[:, 2:] / 2
    if len(norm) and (lo.min() < -tolerance or hi.max() > 1 + tolerance):
        raise DataError(f"{path}: box coordinates outside the image (normalized values must lie in [0, 1])")
    df = pd.DataFrame(
        {
            "x0": (xc - w / 2).astype(np.float32),
            "y0": (yc - h / 2).astype(np.float32),
            "x1": (xc + w / 2).astype(np.float32),
            "y1": (yc + h / 2).astype(np.float32),
            "class": cls.astype(np.int16),
        }
    )
    if ncols == 6:
        df["score"] = arr[:, 5].astype(np.float32)
    return df


#: Why :func:`yolo_drop_reasons` drops a box; code ``k`` is ``DROP_REASONS[k]`` (0 = kept).
DROP_REASONS = ("kept", "non-finite coordinates", "outside the image", "smaller than min-box")


def yolo_drop_reasons(boxes: pd.DataFrame | dict | None, width: int, height: int, min_size: float = 0.0) -> np.ndarray:
    """Which boxes a YOLO label file keeps, and why the others are dropped.

    Parameters
    ----------
    boxes : DataFrame or dict of arrays
        ``x0, y0, x1, y1`` in pixels.
    width, height : int
        Image size in pixels.
    min_size : float
        Smallest width and height (pixels, after clipping to the image) a kept box has.

    Returns
    -------
    (N,) int8
        Index into :data:`DROP_REASONS`: 0 kept, 1 a coordinate is NaN/inf, 2 the box does not
        overlap the image, 3 narrower or lower than ``min_size`` after clipping (also boxes of
        zero width or height).
    """
    if boxes is None or len(boxes) == 0:
        return np.zeros(0, np.int8)
    b = pd.DataFrame(boxes) if not isinstance(boxes, pd.DataFrame) else boxes
    x0, y0, x1, y1 = (b[c].to_numpy(np.float64) for c in ("x0", "y0", "x1", "y1"))
    finite = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(x1) & np.isfinite(y1)
    with np.errstate(invalid="ignore"):
        outside = (x1 <= 0) | (y1 <= 0) | (x0 >= width) | (y0 >= height)
        w = np.clip(x1, 0, width) - np.clip(x0, 0, width)
        h = np.clip(y1, 0, height) - np.clip(y0, 0, height)
        small = (w < max(min_size, 1e-9)) | (h < max(min_size, 1e-9))
    return np.select([~finite, outside, small], [1, 2, 3], 0).astype(np.int8)


def format_yolo_labels(boxes: pd.DataFrame | dict | None, width: int, height: int, min_size: float = 0.0) -> str:
    """Pixel boxes (x0, y0, x1, y1, class [, score]) → YOLO label text.

    Boxes are clipped to the image; boxes narrower or lower than ``min_size``
    pixels after clipping are dropped (Ultralytics discards boxes under ~3 px
    anyway; dropping them here keeps labels and training in agreement), and so are
    boxes outside the image or with NaN/inf coordinates (:func:`yolo_drop_reasons`).
    """
    if boxes is None or len(boxes) == 0:
        return ""
    b = pd.DataFrame(boxes) if not isinstance(boxes, pd.DataFrame) else boxes
    keep = yolo_drop_reasons(b, width, height, min_size) == 0
    x0 = np.clip(b["x0"].to_numpy(np.float64), 0, width)[keep]
    x1 = np.clip(b["x1"].to_numpy(np.float64), 0, width)[keep]
    y0 = np.clip(b["y0"].to_numpy(np.float64), 0, height)[keep]
    y1 = np.clip(b["y1"].to_numpy(np.float64), 0, height)[keep]
    cls = b["class"].to_numpy()[keep].astype(int)
    xc, yc = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    w, h = (x1 - x0) / width, (y1 - y0) / height
    cols = [cls, xc, yc, w, h]
    if "score" in b:
        cols.append(b["score"].to_numpy()[keep])
        fmt = "{:d} {:.6f} {:.6f} {:.6f} {:.6f} {:.5f}"
    else:
        fmt = "{:d} {:.6f} {:.6f} {:.6f} {:.6f}"
    return "".join(fmt.format(*row) + "\n" for row in zip(*cols))


class YoloFolder:
    """A folder of images with YOLO labels (real annotated data or predictions).

    Parameters
    ----------
    root : path-like
        Folder with ``images/`` and ``labels/`` (optional ``masks/``, ``classes.txt``).
        A folder holding only ``labels/`` or bare ``*.txt`` files is a *label-only*
        folder (predictions); its boxes need image sizes from elsewhere.
    """

    def __init__(self, root: str | PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a directory")
        images_dir = self.root / "images"
        labels_dir = self.root / "labels"
        self.labels_dir = labels_dir if labels_dir.is_dir() else self.root
        self.masks_dir = self.root / "masks" if (self.root / "masks").is_dir() else None
        self._images: dict[str, Path] = {}
        # Ultralytics' split layout (images/train/x.png + labels/train/x.txt, what
        # `simgen export yolo` writes) is read as one set; stems must be unique across splits.
        self._split: dict[str, str] = {}
        if images_dir.is_dir():
            for folder in [images_dir, *sorted(d for d in images_dir.iterdir() if d.is_dir())]:
                for p in sorted(folder.iterdir()):
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                        self._add(p.stem, p, "" if folder == images_dir else folder.name)
            self.names = sorted(self._images)
        else:
            labels = [(p, "") for p in self.labels_dir.glob("*.txt")]
            labels += [(p, d.name) for d in sorted(self.labels_dir.iterdir()) if d.is_dir() for p in d.glob("*.txt")]
            for p, split in labels:
                if p.name != "classes.txt":
                    self._add(p.stem, None, split)
            self.names = sorted(self._split)
        if not self.names:
            raise DataError(f"{self.root} holds no images (images/) and no label files")
        self.class_names = self._read_class_names()
        self._shapes: dict[str, tuple[int, int]] = {}

    def _add(self, key: str, image: Path | None, split: str) -> None:
        if key in self._split:
            raise DataError(f"{self.root}: {key!r} appears in more than one split folder; stems must be unique")
        self._split[key] = split
        if image is not None:
            self._images[key] = image

    @property
    def has_images(self) -> bool:
        return bool(self._images)

    def _read_class_names(self) -> list[str]:
        txt = self.root / "classes.txt"
        try:
            if txt.exists():
                return [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
            yaml_path = self.root / "data.yaml"
            if yaml_path.exists():
                import yaml

                doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
                names = doc.get("names", []) if isinstance(doc, dict) else None
                if isinstance(names, dict):
                    return [str(names[k]) for k in sorted(names)]
                if not isinstance(names, list):
                    raise DataError(f"{yaml_path}: 'names' must be a list or a mapping of class names")
                return [str(n) for n in names]
        except UnicodeDecodeError:
            raise DataError(f"{self.root}: classes.txt / data.yaml is not UTF-8 text") from None
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001 - yaml raises its own error types
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{self.root}/data.yaml is not valid YAML ({type(exc).__name__})") from None
        return []

    def __len__(self) -> int:
        return len(self.names)

    def _key(self, i: int | str) -> str:
        return i if isinstance(i, str) else self.names[i]

    def image_path(self, i: int | str) -> Path:
        key = self._key(i)
        if key not in self._images:
            raise DataError(f"{self.root}: no image for {key!r}")
        return self._images[key]

    def image(self, i: int | str) -> np.ndarray:
        """Image as float32 ``(H, W)`` in [0, 1]."""
        img = read_image(self.image_path(i))
        self._shapes[self._key(i)] = img.shape
        return img

    def shape(self, i: int | str) -> tuple[int, int]:
        """``(H, W)`` of an image (read from the header only)."""
        key = self._key(i)
        if key not in self._shapes:
            self._shapes[key] = image_shape(self.image_path(key))  # MRC / DM headers too
        return self._shapes[key]

    def label_path(self, i: int | str) -> Path:
        key = self._key(i)
        return self.labels_dir / self._split.get(key, "") / f"{key}.txt"

    def boxes(self, i: int | str, shape: tuple[int, int] | None = None) -> pd.DataFrame:
        """Boxes of one image in pixels (``shape`` needed for label-only folders)."""
        h, w = shape if shape is not None else self.shape(i)
        return read_yolo_labels(self.label_path(i), w, h, n_classes=len(self.class_names) or None)

    def mask(self, i: int | str) -> np.ndarray | None:
        """Instance-id label image (``masks/<stem>.png``) or ``None``."""
        if self.masks_dir is None:
            return None
        key = self._key(i)
        path = self.masks_dir / self._split.get(key, "") / f"{key}.png"
        if not path.exists():
            return None
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im).astype(np.uint16)


def open_yolo_folder(root: str | PathLike) -> YoloFolder:
    """Open a YOLO-layout folder (see :class:`YoloFolder`)."""
    return YoloFolder(root)
