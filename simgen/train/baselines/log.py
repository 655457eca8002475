"""The classical baseline: Laplacian-of-Gaussian blob detection, tuned on real images.

What microscopists already use for black dots and small loops is scikit-image's
LoG blob detector (:func:`skimage.feature.blob_log`).  Any claim that a detector
trained on synthetic data is useful has to beat it *with its parameters tuned on
the real images*, so this module ships it as a complete detector:

* :func:`detect_log` — the LoG scale space of ``skimage.feature.blob_log``
  (``-σ² ∇²G_σ * I`` over ``num_sigma`` scales, maxima over a 3×3×3 neighbourhood
  above ``threshold``) on the contrast-normalised image, inverted for dark defects.
  Each blob becomes a box of half-side ``box_scale · √2 σ`` (``√2 σ`` is the blob
  radius) with the scale-normalised LoG response as its score.  Overlapping blobs
  are pruned as in scikit-image (overlap fraction of the smaller circle > ``overlap``),
  except that the weaker blob is removed rather than the smaller one.
* :func:`tune_log` — grid search over the scale range and box size; the detection
  threshold is chosen on the precision-recall curve (the threshold with the best F1
  at IoU 0.15, greedy matching).  Because tuning and evaluating on the same images
  flatters the baseline, it also reports a cross-validated estimate: for each
  held-out image (leave-one-image-out, or k folds for larger sets) the parameters are
  tuned on the remaining images and applied to the held-out one; P/R/F1 are pooled
  over the held-out predictions.
* :func:`save_params` / :func:`load_params` — tuned parameters as JSON;
  :func:`predict_log` writes predictions in the schema like the YOLO detector.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text, check_output, json_default, read_json_object
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.normalize import normalize_image
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import evaluate_detections
from simgen.progress import Timer, track

__all__ = [
    "LogParams",
    "DEFAULT_GRID",
    "QUICK_GRID",
    "detect_log",
    "log_blobs",
    "blobs_to_boxes",
    "tune_log",
    "TuneResult",
    "save_params",
    "load_params",
    "predict_log",
]

IOU_CUTOFF = 0.15


@dataclass(frozen=True)
class LogParams:
    """Parameters of the LoG detector (lengths in pixels of the input image).

    Attributes
    ----------
    min_sigma, max_sigma : float
        Range of Gaussian scales; a blob of radius r has σ ≈ r / √2.
    num_sigma : int
        Number of scales between them (log-spaced when ``log_scale``).
    threshold : float
        Minimum scale-normalised LoG response (image contrast-normalised to [0, 1]).
    overlap : float
        Blobs whose circles overlap by more than this fraction (of the smaller) are pruned.
    box_scale : float
        Box half-side = ``box_scale · √2 σ``.
    polarity : {"dark", "bright"}
        Defects darker (bright-field TEM) or brighter than the background.
    normalize : {"percentile", "minmax", "none"}
        Contrast normalisation before filtering.
    downscale : int
        Process at ``1/downscale`` resolution (speed on large images; sigmas are in
        full-resolution pixels either way).  0 = automatic: ``max(1, floor(min_sigma / 1.5))``,
        so the smallest scale is still >= 1.5 pixels where it is filtered.
    max_blobs : int
        Keep at most this many strongest blobs per image.
    """

    min_sigma: float = 2.0
    max_sigma: float = 8.0
    num_sigma: int = 6
    log_scale: bool = True
    threshold: float = 0.05
    overlap: float = 0.5
    box_scale: float = 1.0
    polarity: str = "dark"
    normalize: str = "percentile"
    downscale: int = 0
    max_blobs: int = 20000

    def validate(self) -> "LogParams":
        if not 0 < self.min_sigma <= self.max_sigma:
            raise ParameterError(f"need 0 < min_sigma <= max_sigma, got {self.min_sigma}, {self.max_sigma}")
        if self.num_sigma < 1:
            raise ParameterError(f"num_sigma must be >= 1, got {self.num_sigma}")
        if self.threshold < 0:
            raise ParameterError(f"threshold must be >= 0, got {self.threshold}")
        if not 0 <= self.overlap <= 1:
            raise ParameterError(f"overlap must be in [0, 1], got {self.overlap}")
        if self.box_scale <= 0:
            raise ParameterError(f"box_scale must be > 0, got {self.box_scale}")
        if self.polarity not in ("dark", "bright"):
            raise ParameterError(f"polarity must be 'dark' or 'bright', got {self.polarity!r}")
        if self.normalize not in ("percentile", "minmax", "none"):
            raise ParameterError(f"normalize must be percentile, minmax or none, got {self.normalize!r}")
        if int(self.downscale) != self.downscale or self.downscale < 0:
            raise ParameterError(f"downscale must be a non-negative integer (0 = auto), got {self.downscale}")
        if self.max_blobs < 1:
            raise ParameterError("max_blobs must be >= 1")
        return self

    def replace(self, **changes) -> "LogParams":
        return dataclasses.replace(self, **changes)

    @property
    def factor(self) -> int:
        """The downscale factor actually used."""
        if self.downscale:
            return int(self.downscale)
        return max(1, int(self.min_sigma // 1.5))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LogParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ParameterError(f"unknown LoG parameter(s): {', '.join(sorted(unknown))}")
        return cls(**data).validate()


#: Tuning grid: scale ranges × box sizes (the threshold comes from the PR curve).
DEFAULT_GRID = {
    "min_sigma": [1.0, 2.0, 3.0, 5.0],
    "max_sigma": [4.0, 8.0, 14.0, 24.0],
    "box_scale": [0.7, 1.0, 1.4],
}
#: A small grid for tests and quick runs.
QUICK_GRID = {"min_sigma": [1.5, 3.0], "max_sigma": [6.0, 12.0], "box_scale": [0.8, 1.2]}


# -- detection ---------------------------------------------------------------------------
def _prepare(image: np.ndarray, params: LogParams) -> np.ndarray:

    img = normalize_image(np.asarray(image, np.float32), params.normalize)
    if params.polarity == "dark":
        img = 1.0 - img
    if params.factor > 1:
        from skimage.transform import downscale_local_mean

        f = params.factor
        h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f  # whole blocks only (no zero padding)
        img = downscale_local_mean(img[:h, :w], (f, f)).astype(np.float32)
    return img


def _sigmas(params: LogParams) -> np.ndarray:
    lo, hi = params.min_sigma / params.factor, params.max_sigma / params.factor
    if params.num_sigma == 1:
        return np.array([lo], np.float64)
    if params.log_scale:
        return np.logspace(np.log10(lo), np.log10(hi), params.num_sigma)
    return np.linspace(lo, hi, params.num_sigma)


def log_blobs(image: np.ndarray, params: LogParams) -> pd.DataFrame:
    """LoG blobs of a float image: DataFrame ``y, x, sigma, score`` (full-resolution pixels).

    ``y, x`` are pixel indices (row, column) of the maximum; ``sigma`` in pixels; ``score``
    the scale-normalised response.  Sorted by decreasing score.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    params = params.validate()
    img = _prepare(image, params)
    sigmas = _sigmas(params)
    cube = np.empty(img.shape + (len(sigmas),), np.float32)
    for i, s in enumerate(sigmas):
        cube[..., i] = -ndi.gaussian_laplace(img, s) * s**2
    peaks = peak_local_max(cube, threshold_abs=params.threshold, exclude_border=False,
                           footprint=np.ones((3, 3, 3)))
    if len(peaks) == 0:
        return pd.DataFrame({"y": np.zeros(0, np.float32), "x": np.zeros(0, np.float32),
                             "sigma": np.zeros(0, np.float32), "score": np.zeros(0, np.float32)})
    score = cube[peaks[:, 0], peaks[:, 1], peaks[:, 2]]
    order = np.argsort(-score, kind="stable")
    peaks, score = peaks[order], score[order]
    sig = sigmas[peaks[:, 2]]
    y, x = peaks[:, 0].astype(np.float64), peaks[:, 1].astype(np.float64)
    keep = _prune(y, x, sig, params.overlap)
    keep = keep[: params.max_blobs]
    d = params.factor
    # a downscaled pixel (r, c) covers full-res rows d*r .. d*r + d - 1
    yy = (y[keep] + 0.5) * d - 0.5
    xx = (x[keep] + 0.5) * d - 0.5
    return pd.DataFrame({"y": yy.astype(np.float32), "x": xx.astype(np.float32),
                         "sigma": (sig[keep] * d).astype(np.float32), "score": score[keep].astype(np.float32)})


def _prune(y, x, sigma, overlap: float) -> np.ndarray:
    """Indices (in the given score order) surviving overlap pruning of circles r = √2 σ."""
    n = len(y)
    if n == 0 or overlap >= 1:
        return np.arange(n)
    from scipy.spatial import cKDTree

    r = sigma * math.sqrt(2)
    tree = cKDTree(np.column_stack([y, x]))
    pairs = tree.query_pairs(2 * float(r.max()), output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.hypot(y[i] - y[j], x[i] - x[j])
    frac = _circle_overlap(r[i], r[j], d)
    bad = frac > overlap
    i, j = i[bad], j[bad]
    # i < j in query_pairs; lower index = higher score: j is the weaker partner
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    alive = np.ones(n, bool)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    for a, b in zip(lo.tolist(), hi.tolist()):
        if alive[a]:
            alive[b] = False
    return np.flatnonzero(alive)


def _circle_overlap(r1, r2, d) -> np.ndarray:
    """Intersection area of two circles divided by the area of the smaller one."""
    r1, r2, d = (np.asarray(v, np.float64) for v in (r1, r2, d))
    small = np.minimum(r1, r2)
    out = np.zeros_like(d)
    inside = d <= np.abs(r1 - r2)
    out[inside] = 1.0
    part = (~inside) & (d < r1 + r2)
    if part.any():
        a, b, dd = r1[part], r2[part], d[part]
        c1 = np.clip((dd**2 + a**2 - b**2) / (2 * dd * a), -1, 1)
        c2 = np.clip((dd**2 + b**2 - a**2) / (2 * dd * b), -1, 1)
        area = (a**2 * np.arccos(c1) + b**2 * np.arccos(c2)
                - 0.5 * np.sqrt(np.clip((-dd + a + b) * (dd + a - b) * (dd - a + b) * (dd + a + b), 0, None)))
        out[part] = area / (np.pi * small[part] ** 2)
    return out


def blobs_to_boxes(blobs: pd.DataFrame, box_scale: float, shape: tuple[int, int] | None = None) -> pd.DataFrame:
    """Blobs (``y, x, sigma, score``) → boxes ``x0, y0, x1, y1, class, score`` (class 0)."""
    half = box_scale * math.sqrt(2) * blobs["sigma"].to_numpy(np.float64)
    cx = blobs["x"].to_numpy(np.float64) + 0.5  # pixel index → continuous centre
    cy = blobs["y"].to_numpy(np.float64) + 0.5
    x0, x1, y0, y1 = cx - half, cx + half, cy - half, cy + half
    if shape is not None:
        h, w = shape
        x0, x1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
        y0, y1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
    return pd.DataFrame({"x0": x0.astype(np.float32), "y0": y0.astype(np.float32), "x1": x1.astype(np.float32),
                         "y1": y1.astype(np.float32), "class": np.zeros(len(blobs), np.int16),
                         "score": blobs["score"].to_numpy(np.float32)})


def detect_log(image: np.ndarray, params: LogParams | None = None) -> pd.DataFrame:
    """Boxes (``x0, y0, x1, y1, class, score``) of dark (or bright) blobs in a float image."""
    params = (params or LogParams()).validate()
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise DataError(f"expected a 2-D image, got shape {image.shape}")
    return blobs_to_boxes(log_blobs(image, params), params.box_scale, image.shape)


# -- tuning ------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """Outcome of :func:`tune_log`.

    Attributes
    ----------
    params : LogParams
        Parameters tuned on *all* images (what ships; its in-sample score is optimistic).
    insample : dict
        P/R/F1 at the chosen threshold, AP and peak F1 of ``params`` on all images.
    cv : dict
        Cross-validated estimate: predictions of each held-out fold made with parameters
        tuned on the other folds, pooled (precision, recall, f1 at each fold's threshold;
        AP and peak F1 from the pooled scores).
    folds : list of dict
        Per fold: held-out image names and the parameters chosen without them.
    grid : DataFrame
        In-sample peak F1 of every grid point.
    """

    params: LogParams
    insample: dict
    cv: dict
    folds: list
    grid: pd.DataFrame

    def to_dict(self) -> dict:
        return {"params": self.params.to_dict(), "insample": self.insample, "cv": self.cv, "folds": self.folds,
                "grid": self.grid.to_dict(orient="records"), "iou_cutoff": IOU_CUTOFF}


def _summary(res) -> dict:
    s = res.summary
    return {k: (float(s[k]) if isinstance(s[k], (int, float, np.floating, np.integer)) else s[k])
            for k in ("precision", "recall", "f1", "mAP", "peak_f1", "peak_f1_threshold", "tp", "fp", "fn",
                      "n_gt", "n_pred", "conf")}


def _evaluate(preds: list[pd.DataFrame], gts: list[pd.DataFrame], conf: float):

    p = pd.concat([df.assign(sample=i) for i, df in enumerate(preds)], ignore_index=True)
    g = pd.concat([df.assign(sample=i) for i, df in enumerate(gts)], ignore_index=True)
    return evaluate_detections(p, g, threshold=IOU_CUTOFF, conf=conf, n_frames=len(preds))


def _grid_points(grid: dict) -> list[dict]:
    keys = sorted(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        if point.get("min_sigma", 0) <= point.get("max_sigma", math.inf):
            points.append(point)
    if not points:
        raise ParameterError("the LoG tuning grid has no valid point (need min_sigma <= max_sigma)")
    return points


def _folds(n: int, cv) -> list[np.ndarray]:
    if cv in (None, 0, "none"):
        return []
    if cv == "loo" or (isinstance(cv, int) and cv >= n):
        return [np.array([i]) for i in range(n)]
    k = int(cv)
    if k < 2:
        raise ParameterError(f"cross-validation needs >= 2 folds, got {cv}")
    return [np.arange(n)[i::k] for i in range(k)]


def tune_log(source, *, grid: dict | None = None, base: LogParams | None = None, cv="loo",
             progress: bool = False, names=None) -> TuneResult:
    """Tune the LoG detector on annotated real images (see module docstring).

    Parameters
    ----------
    source : path
        YOLO folder (``images/`` + ``labels/``) or HDF5 dataset with boxes.
    grid : dict of lists, optional
        Values to try for any :class:`LogParams` fields that change detection
        (``min_sigma``, ``max_sigma``, ``num_sigma``, ``overlap``, ``downscale``, ...) and
        ``box_scale``.  Default :data:`DEFAULT_GRID`.  The threshold is not gridded: it is
        the best-F1 point of the PR curve.
    base : LogParams, optional
        Values of all fields not in the grid.  ``base.threshold`` is the detection floor
        (keep it low).
    cv : "loo", int or None
        Leave-one-image-out, k folds, or no cross-validation.
    names : list of str, optional
        Restrict to these images.
    """

    grid = dict(grid or DEFAULT_GRID)
    base = (base or LogParams(threshold=0.03)).validate()
    fields = {f.name for f in dataclasses.fields(LogParams)}
    unknown = set(grid) - fields
    if unknown:
        raise ParameterError(f"unknown LoG grid parameter(s): {', '.join(sorted(unknown))}")
    if "threshold" in grid:
        raise ParameterError("the threshold is chosen from the PR curve; do not put it in the grid")
    box_scales = list(grid.pop("box_scale", [base.box_scale]))
    points = _grid_points(grid) if grid else [{}]
    for p in points:
        base.replace(**p).validate()

    with open_source(source, names=names) as src:
        if not src.has_labels:
            raise DataError(f"{source} has no box labels to tune on")
        n = len(src)
        if n == 0:
            raise DataError(f"{source} holds no images")
        images = [src.image(k) for k in range(n)]
        gts = [src.boxes(k)[["x0", "y0", "x1", "y1", "class"]].assign(**{"class": 0}) for k in range(n)]
        image_names = [src.name(k) for k in range(n)]
    folds = _folds(n, cv)

    # detect once per structural grid point and image, at the floor threshold
    blobs = {}
    work = [(pi, k) for pi in range(len(points)) for k in range(n)]
    for pi, k in track(work, total=len(work), description="LoG grid", enabled=progress):
        blobs[pi, k] = log_blobs(images[k], base.replace(**points[pi]))

    candidates = [(pi, bs) for pi in range(len(points)) for bs in box_scales]
    boxes = {}

    def preds_for(c, ks):
        pi, bs = c
        out = []
        for k in ks:
            if (pi, bs, k) not in boxes:
                boxes[pi, bs, k] = blobs_to_boxes(blobs[pi, k], bs, images[k].shape)
            out.append(boxes[pi, bs, k])
        return out

    def best_on(ks):
        scored = []
        for c in candidates:
            res = _evaluate(preds_for(c, ks), [gts[k] for k in ks], conf=0.0)
            scored.append((float(res.summary["peak_f1"]), float(res.summary["peak_f1_threshold"]), c))
        scored.sort(key=lambda t: (-t[0], t[2]))
        return scored

    all_k = list(range(n))
    scored = best_on(all_k)
    f1, thr, (pi, bs) = scored[0]
    thr = max(thr, base.threshold) if np.isfinite(thr) else base.threshold
    params = base.replace(**points[pi], box_scale=bs, threshold=float(thr)).validate()
    ins = _summary(_evaluate(preds_for((pi, bs), all_k), [gts[k] for k in all_k], conf=thr))
    grid_table = pd.DataFrame([{**points[c[0]], "box_scale": c[1], "peak_f1": f, "threshold": t}
                               for f, t, c in scored])

    fold_info, cv_preds, cv_gts, cv_kept = [], [], [], []
    for held in folds:
        train_k = [k for k in all_k if k not in set(held.tolist())]
        if not train_k:
            continue
        f_f1, f_thr, (fpi, fbs) = best_on(train_k)[0]
        f_thr = max(f_thr, base.threshold) if np.isfinite(f_thr) else base.threshold
        for k in held.tolist():
            p = preds_for((fpi, fbs), [k])[0]
            cv_preds.append(p)
            cv_kept.append(p[p["score"] >= f_thr])
            cv_gts.append(gts[k])
        fold_info.append({"held_out": [image_names[k] for k in held.tolist()],
                          "params": {**points[fpi], "box_scale": fbs},
                          "threshold": float(f_thr), "train_peak_f1": float(f_f1)})
    cv_summary = {}
    if cv_preds:
        raw = _summary(_evaluate(cv_preds, cv_gts, conf=0.0))
        kept = _summary(_evaluate(cv_kept, cv_gts, conf=0.0))
        cv_summary = {"precision": kept["precision"], "recall": kept["recall"], "f1": kept["f1"],
                      "tp": kept["tp"], "fp": kept["fp"], "fn": kept["fn"], "n_gt": kept["n_gt"],
                      "mAP": raw["mAP"], "peak_f1": raw["peak_f1"], "scheme": "loo" if cv == "loo" else str(cv)}
    return TuneResult(params=params, insample=ins, cv=cv_summary, folds=fold_info, grid=grid_table)


def save_params(path, params: LogParams, extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write tuned parameters (and optional tuning report) as JSON, atomically."""

    data = {"detector": "log", "params": params.to_dict(), **(extra or {})}
    return atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n", overwrite=overwrite)


def load_params(path) -> LogParams:
    """Read parameters written by :func:`save_params` (or a bare ``{field: value}`` JSON)."""
    data = read_json_object(path, "LoG parameter file")
    return LogParams.from_dict(data.get("params", data))


#: Detection floor of stored LoG predictions: every candidate above it is kept with its score.
CANDIDATE_FLOOR = 0.01


def predict_log(source, output, params: LogParams, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Run the LoG detector on every image of ``source``; write a ``predictions`` HDF5 (like :func:`predict_yolo`).

    Every candidate down to :data:`CANDIDATE_FLOOR` (or the tuned threshold, if lower) is kept with
    its score, and the tuned threshold is stored as ``conf_f1``: ``simgen evaluate`` scores P/R/F1
    at it and AP over all candidates, so tune and evaluate agree (they once gave 0.805 vs 0.733).
    """
    params = params.validate()
    candidates = params.replace(threshold=min(params.threshold, CANDIDATE_FLOOR))
    check_output(output, overwrite)
    with open_source(source) as src:
        with DatasetWriter(output, kind="predictions", class_names=src.class_names or ["loop"], overwrite=overwrite,
                           generator={"function": "simgen.train.baselines.log.predict_log", **params.to_dict()},
                           attrs={"source": str(Path(source).resolve()), "conf_f1": params.threshold}) as w:
            with Timer() as t:
                for k in track(range(len(src)), total=len(src), description="LoG", enabled=progress):
                    img = src.image(k)
                    w.append(None, boxes=detect_log(img, candidates), name=src.name(k), shape=img.shape)
            w.set_attrs(fps=len(src) / max(t.seconds, 1e-9), seconds=round(t.seconds, 3))
    return Path(output)

