"""The synthetic-only → real experiment (``simgen sim2real``).

One function, :func:`run_sim2real`, does the whole study on one annotated real
folder (YOLO layout) and writes a report:

1. **match** — image statistics of (up to ``match_images``) real images — background
   level, texture spectrum, noise, blur, defect contrast/size/density — estimated
   from the pixels alone (:func:`simgen.simulate.match.estimate`; labels are never
   read) and turned into a TEM simulator configuration
   (:func:`simgen.simulate.tem.config_from_match`), median over images.
2. **generate** — ``n_train`` + ``n_val`` synthetic images (``size``², a multiple of the
   tile) with the TEM sampler wrapped in the augmentation pipeline ``spec``.
3. **train** — YOLO on the synthetic images only (:func:`simgen.train.yolo.train_yolo`),
   training time capped so the whole run stays inside ``budget_minutes``.  The
   confidence threshold is picked on the *synthetic* validation images.
4. **predict + score** — tiled prediction on every real image; precision, recall and
   F1 at IoU 0.15 (greedy matching) at that threshold, AP (COCO 101-point) and peak
   F1 (the best threshold in hindsight — an upper bound), per class and per image.
5. **baseline** — the LoG blob detector tuned on the same real images; its score is
   the leave-one-image-out estimate (parameters tuned without the scored image).
6. **robustness** — Poisson, salt-and-pepper and Gaussian noise
   (``skimage.util.random_noise`` defaults) added to the real images; F1 drop of the
   synthetic model (and of the baseline).
7. optional **kfold** — YOLO of the same size trained on the real images themselves
   (k-fold over images) and **few_real** — the synthetic model fine-tuned on ``few_real``
   real images of the training folds; both scored on the held-out folds.

Outputs in the experiment folder: ``report.md``, ``report.json``, ``pr_curves.png``,
``examples.png``, ``synthetic_examples.png``, the synthetic data, the YOLO run
(``yolo/best.pt`` — a standard Ultralytics checkpoint) and all prediction files.
With ``resume=True`` finished steps of an interrupted run are reused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.augment.pipeline import AugmentedSampler
from simgen.augment.spec import parse_spec
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import evaluate_detections
from simgen.evaluate.report import to_jsonable
from simgen.experiments.sim2real_report import IOU, _figures, _line, _markdown, _summary_text, _verdict
from simgen.progress import ProgressLog, format_duration
from simgen.runtime import default_threads, setup_threads
from simgen.simulate.tem import KIND_SIZE, TemConfig, TemSampler, config_from_match
from simgen.train.baselines.log import LogParams, _grid_points, detect_log
from simgen.train.yolo.config import YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = [
    "Sim2RealConfig",
    "run_sim2real",
    "score_predictions",
    "NOISES",
]




#: Noise models of the robustness study (``skimage.util.random_noise`` modes, default strengths).
NOISES = {"poisson": {"mode": "poisson"}, "salt_pepper": {"mode": "s&p"}, "gaussian": {"mode": "gaussian"}}


@dataclass(frozen=True)
class Sim2RealConfig:
    """Settings of :func:`run_sim2real` (see :meth:`preset`).

    Attributes
    ----------
    n_train, n_val : int
        Synthetic training / validation images.
    size : int
        Side of the synthetic images (= the YOLO tile and input size).
    epochs : int
        YOLO epochs (upper bound; the time budget may stop training earlier).
    budget_minutes : float
        Wall-clock budget of the whole run; training gets what the other steps leave.
    match : bool
        Fit the TEM look to the real images (pixels only).
    match_images : int
        How many real images (evenly spread) the statistics are estimated from.
    tem_preset : str, optional
        TEM preset used as the base configuration (``--match`` then adjusts its look).
    scale : {"broad", "match", "preset"}
        Defect sizes of the synthetic set.  ``broad`` (default): the per-image pixel size is
        drawn log-uniformly so that median defect diameters span ``diameter_px`` and the
        areal density scales with it (``density_per_mpx`` at the middle size) — one model for
        all magnifications, no size estimate needed.  ``match``: size and density estimated
        from the real pixels (:func:`simgen.simulate.match.estimate`; unreliable when
        mottle is darker than the defects).  ``preset``: the TEM preset's sizes.
    diameter_px, density_per_mpx : (float, float), float
        ``broad`` scale settings.
    box_margin : float
        Pixels added around the tight synthetic boxes (annotators draw loose boxes).
    spec : str
        Augmentation spec applied to every synthetic image (``simgen.augment``).
    model, batch, overlap, min_box, patience : YOLO settings.
    baseline, baseline_grid : bool, {"quick", "default"}
        Tune and score the LoG baseline (leave-one-image-out).
    robustness : bool
    robust_mpx : float
        The noise study uses evenly spread real images totalling at most this many megapixels.
    kfold, few_real, few_real_epochs : int
        Real-trained k-fold YOLO (0 = skip) and synthetic + ``few_real`` real images.
    threads : int, optional
        CPU threads (default ``$SIMGEN_THREADS``, else 1: on a shared 2-core machine two
        torch threads collapse as soon as anything else runs; use 2 on an idle machine).
    device : str
    seed : int
    """

    n_train: int = 2000
    n_val: int = 200
    size: int = 256
    epochs: int = 60
    budget_minutes: float = 55.0
    match: bool = True
    match_images: int = 3
    tem_preset: str | None = None
    scale: str = "broad"
    diameter_px: tuple[float, float] = (5.0, 45.0)
    density_per_mpx: float = 150.0
    box_margin: float = 1.0
    # GN + SP (white and impulse noise over both levels) made the detector robust to noise at no
    # cost on clean real images (README: dsva F1 0.69 -> 0.72, noise drop 35-49 % -> none).
    spec: str = "L-FN+RV+GB+GN+SP"
    model: str = "yolov8n"
    batch: int = 16
    overlap: int = 64
    min_box: float = 5.0
    patience: int = 10
    baseline: bool = True
    baseline_grid: str = "quick"
    robustness: bool = True
    robust_mpx: float = 9.0
    kfold: int = 0
    few_real: int = 0
    few_real_epochs: int = 15
    threads: int | None = None
    device: str = "auto"
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "Sim2RealConfig":
        """``full`` (the default experiment, < 1 h on 2 CPU cores) or ``small`` (a one-minute smoke run)."""
        if name == "full":
            return cls()
        if name == "small":
            return cls(n_train=24, n_val=8, size=64, epochs=1, budget_minutes=10, match_images=1, batch=4,
                       overlap=16, patience=0, baseline_grid="quick", few_real_epochs=1, spec="L-GB")
        raise ParameterError(f"unknown sim2real preset {name!r}; choose small or full")

    def replace(self, **changes) -> "Sim2RealConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown sim2real setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Sim2RealConfig":
        if self.n_train < 8 or self.n_val < 1:
            raise ParameterError("need n_train >= 8 and n_val >= 1")
        if self.size < 32 or self.size % 32:
            raise ParameterError(f"size must be a multiple of 32 (>= 32), got {self.size}")
        if self.budget_minutes <= 0 or self.epochs < 1:
            raise ParameterError("budget_minutes must be > 0 and epochs >= 1")
        if self.baseline_grid not in ("quick", "default"):
            raise ParameterError(f"baseline_grid must be quick or default, got {self.baseline_grid!r}")
        if self.kfold == 1 or self.kfold < 0 or self.few_real < 0:
            raise ParameterError("kfold must be 0 or >= 2 and few_real >= 0")
        if self.few_real and not self.kfold:
            raise ParameterError("few_real needs kfold >= 2 (the held-out folds are what is scored)")
        if self.scale not in ("broad", "match", "preset"):
            raise ParameterError(f"scale must be broad, match or preset, got {self.scale!r}")
        if not 1 <= self.diameter_px[0] <= self.diameter_px[1] or self.density_per_mpx <= 0:
            raise ParameterError("need 1 <= diameter_px[0] <= diameter_px[1] and density_per_mpx > 0")
        if self.box_margin < 0 or self.match_images < 1:
            raise ParameterError("box_margin must be >= 0 and match_images >= 1")

        parse_spec(self.spec)
        self.yolo_config()
        return self

    def yolo_config(self, **changes):

        return YoloConfig(model=self.model, epochs=self.epochs, batch=self.batch, imgsz=self.size, tile=self.size,
                          overlap=min(self.overlap, self.size // 2), min_box=self.min_box, patience=self.patience,
                          device=self.device, seed=self.seed, val_fraction=0.0,
                          close_mosaic=min(5, max(0, self.epochs // 4)),
                          mosaic=1.0 if self.size >= 128 else 0.0).replace(**changes).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- scoring ----------------------------------------------------------------------------------------
def score_predictions(pred: pd.DataFrame, gt: pd.DataFrame, conf: float, n_frames: int) -> dict:
    """P/R/F1 at IoU 0.15 and ``conf``, AP and peak F1 (class-agnostic and per class)."""

    res = evaluate_detections(pred, gt, threshold=IOU, conf=float(conf), n_frames=n_frames)
    s = res.summary
    out = {k: _f(s[k]) for k in ("precision", "recall", "f1", "mAP", "peak_f1", "peak_f1_threshold")}
    out.update(tp=int(s["tp"]), fp=int(s["fp"]), fn=int(s["fn"]), n_gt=int(s["n_gt"]), conf=float(conf))
    out["ap"] = out.pop("mAP")
    out["per_class"] = {str(c): {k: _f(v) for k, v in row.items()} for c, row in res.per_class.iterrows()}
    out["_curve"] = res.curve
    return out


def _f(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return v
    return v if math.isfinite(v) else None


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


# -- steps ------------------------------------------------------------------------------------------
def _real_truth(real) -> tuple[list[str], pd.DataFrame, list[str]]:

    with open_source(real) as src:
        if not src.has_labels:
            raise DataError(f"{real} has no labels/ folder; sim2real needs annotated real images")
        names = [src.name(k) for k in range(len(src))]
        parts = []
        for k in range(len(src)):
            b = src.boxes(k)[["x0", "y0", "x1", "y1", "class"]].copy()
            b.insert(0, "sample", k)
            parts.append(b)
        classes = list(src.class_names) or ["loop"]
    gt = pd.concat(parts, ignore_index=True)
    return names, gt, classes


def _median_estimates(ests: list[dict]) -> dict:
    """Per-key median over images (element-wise for equal-length lists of numbers)."""
    out = {}
    for key, first in ests[0].items():
        if key in ("psd", "psd_k", "shape"):
            continue
        vals = [e.get(key) for e in ests]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vals):
            out[key] = float(np.median(vals))
        elif all(isinstance(v, (list, tuple)) and len(v) == len(first) for v in vals) and first and all(
                isinstance(x, (int, float)) for v in vals for x in v):
            out[key] = [float(x) for x in np.median(np.asarray(vals, float), axis=0)]
    return out


def _match_config(real, cfg: Sim2RealConfig, class_name: str, log: ProgressLog):
    """TEM configuration for the synthetic set: look matched to the real pixels, scale per ``cfg.scale``."""

    base = TemConfig.from_preset(cfg.tem_preset) if cfg.tem_preset else TemConfig()
    base = base.replace(size=cfg.size, single_class=class_name, box_margin=cfg.box_margin)
    med = None
    if cfg.match:
        from simgen.simulate.match import estimate

        with open_source(real) as src:
            n = len(src)
            picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(cfg.match_images, n))})
            med = _median_estimates([estimate(src.image(k)) for k in picks])
        log.message(f"matched the TEM look to {len(picks)} real image(s): " + ", ".join(
            f"{k} {v:.3g}" for k, v in med.items() if isinstance(v, float)))
        used = dict(med)
        if cfg.scale != "match":  # size and density come from the scale policy, not the estimator
            used.pop("defect_size_px", None)
            used.pop("density_per_mpx", None)
        tem = config_from_match(used, base=base)
    else:
        tem = base.validate()
    if cfg.scale == "broad":
        lo, hi = cfg.diameter_px
        hi = min(hi, cfg.size / 3)  # the largest kind (1.4x the median) must fit the image
        lo = min(lo, hi)
        mid = math.sqrt(lo * hi)
        nominal = tem.nominal_pixel_nm
        w = tem.weights
        mix = math.exp(sum(wi * math.log(KIND_SIZE[k]) for wi, k in zip(w, tem.classes)))
        size_nm = mid * nominal / mix
        per_um2 = cfg.density_per_mpx / (nominal**2)  # defects per Mpx at the middle size → per µm²
        tem = tem.replace(size_nm=(size_nm, size_nm), pixel_nm=(nominal * mid / hi, nominal * mid / lo),
                          density=(per_um2 / 1.5, per_um2 * 1.5), size_jitter=min(tem.size_jitter, 0.1),
                          max_size_px=min(cfg.size / 2, 2 * hi)).validate()
    elif cfg.scale == "preset" and not cfg.tem_preset:
        raise ParameterError("scale='preset' needs tem_preset")
    return tem, med


def _generate(out: Path, tem, cfg: Sim2RealConfig, match: dict | None, progress: bool, resume: bool):

    sampler = AugmentedSampler(TemSampler(tem, seed=cfg.seed, match=match), cfg.spec, seed=cfg.seed)
    train, val = out / "synthetic_train.h5", out / "synthetic_val.h5"
    if not (resume and train.exists()):
        write_dataset(train, sampler, cfg.n_train, overwrite=True, progress=progress)
    if not (resume and val.exists()):
        write_dataset(val, sampler, cfg.n_val, start=cfg.n_train, overwrite=True, progress=progress)
    return train, val


def _detect_all(detector, real, images=None, noise=None, seed: int = 0, names=None) -> pd.DataFrame:
    """Predictions of ``detector`` (YoloDetector or LogParams) on the real images, optionally noised."""

    parts = []
    with open_source(real) as src:
        for k in range(len(src)):
            if names is not None and src.name(k) not in names:
                continue
            img = src.image(k) if images is None else images[k]
            if noise is not None:
                from skimage.util import random_noise

                img = random_noise(img, rng=np.random.default_rng([seed, k]), **noise).astype(np.float32)
            p = detect_log(img, detector) if isinstance(detector, LogParams) else detector.detect(img)
            p = p.copy()
            p.insert(0, "sample", k)
            parts.append(p)
    if not parts:
        return pd.DataFrame({c: [] for c in ("sample", "x0", "y0", "x1", "y1", "class", "score")})
    return pd.concat(parts, ignore_index=True)


def _write_predictions(path: Path, pred: pd.DataFrame, real, names, classes, attrs: dict) -> None:

    with open_source(real) as src:
        shapes = [src.shape(k) for k in range(len(src))]
    with DatasetWriter(path, kind="predictions", class_names=classes, overwrite=True, attrs=attrs) as w:
        for k, name in enumerate(names):
            rows = pred[pred["sample"] == k].drop(columns="sample")
            w.append(None, boxes=rows, name=name, shape=shapes[k])


def _folds(n: int, k: int) -> list[list[int]]:
    k = min(k, n)
    return [list(range(n))[i::k] for i in range(k)]


# -- the experiment ---------------------------------------------------------------------------------
def run_sim2real(real, output, config: Sim2RealConfig | None = None, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Run the synthetic-only → real experiment on one annotated real folder (see module docstring).

    Returns
    -------
    dict (also written to ``report.json``) with ``methods`` (scores per method), ``robustness``,
    ``timing``, ``config`` and ``summary_text``.
    """

    cfg = (config or Sim2RealConfig()).validate()
    real = Path(real)
    if not (real / "images").is_dir() or not (real / "labels").is_dir():
        raise DataError(f"{real} must be a YOLO folder with images/ and labels/")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise ParameterError(f"output {out} exists; pass --resume to continue it or --overwrite to start again")
    if overwrite and not resume and out.exists():
        import shutil

        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    threads = setup_threads(cfg.threads or default_threads())
    log = ProgressLog(None, enabled=progress, prefix="[sim2real] ")
    t0 = time.perf_counter()
    timing: dict[str, float] = {}

    def lap(name, since):
        timing[name] = round(time.perf_counter() - since, 1)
        total = format_duration(time.perf_counter() - t0)
        log.message(f"{name} done in {format_duration(timing[name])} (total {total})")

    names, gt, classes = _real_truth(real)
    n_real = len(names)
    class_name = classes[0]
    gt["class"] = 0
    log.message(f"{n_real} real images, {len(gt)} annotated defects in {real}; {threads} thread(s)")

    # 1-2: match and generate
    t = time.perf_counter()
    match_path = out / "match.json"
    if resume and match_path.exists():
        from simgen.simulate.tem import TemConfig

        saved = json.loads(match_path.read_text())
        tem, med = TemConfig.from_dict(saved["tem_config"]).validate(), saved.get("estimates")
    else:
        tem, med = _match_config(real, cfg, class_name, log)
        from simgen.atomic import atomic_write_text

        atomic_write_text(match_path, json.dumps({"estimates": med, "tem_config": tem.to_dict()}, indent=2,
                                                 default=float) + "\n", overwrite=True)
    lap("match", t)
    t = time.perf_counter()
    syn_train, syn_val = _generate(out, tem, cfg, med, progress, resume)
    lap("generate", t)

    # 3: train (time-capped)

    reserve = _reserve_minutes(cfg, real, n_real)
    remaining = cfg.budget_minutes - (time.perf_counter() - t0) / 60 - reserve
    if remaining < 1:
        raise ParameterError(f"time budget of {cfg.budget_minutes:g} min leaves no time to train "
                             f"(other steps need ~{reserve:.0f} min); raise --budget")
    best = out / "yolo" / "best.pt"
    t = time.perf_counter()
    if not (resume and best.exists()):
        ycfg = cfg.yolo_config(hours=remaining / 60)
        again = resume and (out / "yolo" / "ultralytics" / "weights" / "last.pt").exists()
        train_yolo(syn_train, out / "yolo", val=syn_val, config=ycfg, resume=again, overwrite=not again,
                   progress=progress, threads=threads)
    lap("train", t)

    # 4: predict + score
    t = time.perf_counter()
    det = YoloDetector(best, device=cfg.device, threads=threads)
    t_pred = time.perf_counter()
    pred = _detect_all(det, real)
    pred_seconds = time.perf_counter() - t_pred
    fps = n_real / max(pred_seconds, 1e-9)
    mpx = _megapixels(real)
    yolo_s_per_mpx = pred_seconds / max(sum(mpx.values()), 1e-9)
    _write_predictions(out / "pred_synthetic_yolo.h5", pred, real, names, classes,
                       {"weights": str(best), "conf_f1": det.conf_f1, "fps": fps})
    methods: dict[str, dict] = {}
    methods["synthetic_yolo"] = score_predictions(pred, gt, det.conf_f1, n_real)
    methods["synthetic_yolo"]["per_image"] = _per_image(pred, gt, det.conf_f1, names)
    if n_real > 1:
        methods["synthetic_yolo_loo_threshold"] = _loo_threshold(pred, gt, n_real)
    lap("predict", t)
    log.message(_line("synthetic-only YOLO", methods["synthetic_yolo"]))
    notes: list[str] = []

    def left() -> float:
        return cfg.budget_minutes * 60 - (time.perf_counter() - t0)

    # 5: LoG baseline (trimmed to the time left)
    log_params = None
    log_s_per_mpx = 0.0
    if cfg.baseline:
        t = time.perf_counter()
        from simgen.train.baselines.log import DEFAULT_GRID, QUICK_GRID, LogParams, log_blobs, save_params, tune_log

        smallest = min(mpx, key=mpx.get)
        with open_source(real, names=[smallest]) as src:
            probe = src.image(0)
        t_probe = time.perf_counter()
        log_blobs(probe, LogParams(min_sigma=1.0, max_sigma=8.0, threshold=0.03))
        log_s_per_mpx = (time.perf_counter() - t_probe) / max(mpx[smallest], 1e-9)
        grid = QUICK_GRID if cfg.baseline_grid == "quick" else DEFAULT_GRID
        robust_need = 3 * min(sum(mpx.values()), cfg.robust_mpx) * (yolo_s_per_mpx + log_s_per_mpx) \
            if cfg.robustness else 0.0
        need = lambda g: 2.0 * _grid_passes(g) * sum(mpx.values()) * log_s_per_mpx + 30  # noqa: E731
        if grid is DEFAULT_GRID and need(grid) > left() - robust_need:
            grid = QUICK_GRID
            notes.append("LoG tuned on the quick grid to stay within the time budget")
        if need(grid) > left():
            notes.append("LoG baseline skipped: not enough time left in the budget")
        else:
            res = tune_log(real, grid=grid, base=LogParams(threshold=0.03), cv="loo")
            log_params = res.params
            save_params(out / "log_params.json", res.params, extra={"tuning": res.to_dict()}, overwrite=True)
            cv_pred = _detect_cv_log(res, real)
            methods["log_baseline"] = {**res.cv, "ap": res.cv.get("mAP"), "scheme": "leave-one-image-out"}
            methods["log_baseline"].pop("mAP", None)
            methods["log_baseline"]["_curve"] = _curve(cv_pred, gt, n_real)
            methods["log_baseline_insample"] = {k: v for k, v in res.insample.items() if k != "mAP"}
            methods["log_baseline_insample"]["ap"] = res.insample["mAP"]
            lap("baseline", t)
            log.message(_line("LoG baseline (LOO)", methods["log_baseline"]))

    # 6: robustness (on a subset that fits the time left)
    robustness = {}
    if cfg.robustness:
        t = time.perf_counter()
        subset = _robust_subset(real, names, cfg.robust_mpx)
        per_mpx = 3 * (yolo_s_per_mpx + (log_s_per_mpx if log_params is not None else 0.0)) * 1.5
        while subset and sum(mpx[n] for n in subset) * per_mpx > left() - 20:
            subset = subset[:-1]
        if not subset:
            notes.append("robustness study skipped: not enough time left in the budget")
        else:
            keep = {names.index(n) for n in subset}
            gt_sub = gt[gt["sample"].isin(keep)]
            clean = score_predictions(pred[pred["sample"].isin(keep)], gt_sub, det.conf_f1, n_real)["f1"] or 0.0
            log_clean = None
            if log_params is not None:
                lp = _detect_all(log_params, real, names=subset)
                log_clean = score_predictions(lp, gt_sub, log_params.threshold, n_real)["f1"] or 0.0
            for name, noise in NOISES.items():
                p = _detect_all(det, real, noise=noise, seed=cfg.seed, names=subset)
                s = score_predictions(p, gt_sub, det.conf_f1, n_real)
                entry = {"f1_clean": clean, "f1": s["f1"], "ap": s["ap"], "drop": _drop(clean, s["f1"]),
                         "images": len(subset)}
                if log_params is not None:
                    lp = _detect_all(log_params, real, noise=noise, seed=cfg.seed, names=subset)
                    ls = score_predictions(lp, gt_sub, log_params.threshold, n_real)
                    entry.update(log_f1_clean=log_clean, log_f1=ls["f1"], log_drop=_drop(log_clean, ls["f1"]))
                robustness[name] = entry
            lap("robustness", t)
            log.message("robustness F1 drop: " + ", ".join(f"{k} {v['drop']:.1%}" for k, v in robustness.items()
                                                           if v["drop"] is not None))

    # 7: real k-fold and synthetic + few real
    if cfg.kfold:
        t = time.perf_counter()
        methods.update(_kfold(real, names, gt, cfg, best, out, threads, progress, log))
        lap("kfold", t)

    total = time.perf_counter() - t0
    timing["total"] = round(total, 1)
    report = {
        "real": str(real.resolve()), "n_real_images": n_real, "n_gt": int(len(gt)), "iou": IOU,
        "config": cfg.to_dict(), "tem_config": tem.to_dict(), "match_estimates": med, "threads": threads,
        "timing": timing, "fps_real": fps, "weights": str(best), "notes": notes,
        "methods": {k: _public(v) for k, v in methods.items()}, "robustness": robustness,
        "scale": {"tile": cfg.size, "defect_size_px_estimate": (med or {}).get("defect_size_px"),
                  "synthetic_box_size_px": _box_stats(syn_train)},
    }
    report["verdict"] = _verdict(methods)
    report["summary_text"] = _summary_text(report)
    _figures(out, methods, real, names, gt, det, syn_train, log)

    atomic_write_text(out / "report.json", json.dumps(to_jsonable(report), indent=2) + "\n", overwrite=True)
    atomic_write_text(out / "report.md", _markdown(report), overwrite=True)
    log.message(f"finished in {format_duration(total)}")
    return report


def _reserve_minutes(cfg: Sim2RealConfig, real, n_real: int) -> float:
    """Rough minutes the steps after training need (prediction, baseline, robustness) on a 2-core CPU.

    Measured on this machine under load: ~3 s per megapixel for tiled YOLO inference and
    ~4 s per megapixel per LoG scale-space pass (one thread); 1.5x for safety.
    """
    if cfg.size <= 64:
        return 0.0

    with open_source(real) as src:
        mpx = sum(h * w for h, w in (src.shape(k) for k in range(len(src)))) / 1e6
    robust = min(mpx, cfg.robust_mpx) if cfg.robustness else 0.0
    seconds = 3 * (mpx + 3 * robust)
    if cfg.baseline:
        passes = 4 if cfg.baseline_grid == "quick" else 15
        seconds += 4 * (mpx * (passes + 1) + 3 * robust)
    return min(30.0, 1.0 + 1.5 * seconds / 60)


def _per_image(pred, gt, conf, names) -> list[dict]:
    rows = []
    for k, name in enumerate(names):
        s = score_predictions(pred[pred["sample"] == k].assign(sample=0), gt[gt["sample"] == k].assign(sample=0),
                              conf, 1)
        rows.append({"image": name, "n_gt": s["n_gt"], "precision": s["precision"], "recall": s["recall"],
                     "f1": s["f1"]})
    return rows


def _loo_threshold(pred, gt, n) -> dict:
    """P/R/F1 with each image's threshold chosen on the *other* images' labels (as the LoG baseline's).

    The weights stay synthetic-only; only the operating point is calibrated on real labels,
    which makes the F1 comparable with the cross-validated LoG baseline.
    """

    kept, thresholds = [], []
    for k in range(n):
        others_p, others_g = pred[pred["sample"] != k], gt[gt["sample"] != k]
        res = evaluate_detections(others_p, others_g, threshold=IOU, conf=0.5, n_frames=n)
        t = float(res.summary["peak_f1_threshold"])
        t = t if np.isfinite(t) else 0.25
        thresholds.append(t)
        p = pred[pred["sample"] == k]
        kept.append(p[p["score"] >= t])
    out = score_predictions(pd.concat(kept, ignore_index=True), gt, 0.0, n)
    full = score_predictions(pred, gt, 0.0, n)
    return {**{k: out[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "n_gt")},
            "ap": full["ap"], "peak_f1": full["peak_f1"], "thresholds": thresholds,
            "scheme": "leave-one-image-out threshold"}


def _curve(pred, gt, n):

    return evaluate_detections(pred, gt, threshold=IOU, conf=0.25, n_frames=n).curve


def _detect_cv_log(res, real) -> pd.DataFrame:
    """Held-out LoG predictions of the cross-validation (each image with its fold's parameters)."""
    parts = []
    for fold in res.folds:
        params = res.params.replace(**fold["params"], threshold=0.03)
        p = _detect_all(params, real, names=set(fold["held_out"]))
        parts.append(p[p["score"] >= 0])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _megapixels(real) -> dict[str, float]:

    with open_source(real) as src:
        return {src.name(k): src.shape(k)[0] * src.shape(k)[1] / 1e6 for k in range(len(src))}


def _grid_passes(grid: dict) -> int:
    """Scale-space passes per image of a LoG tuning grid (box_scale is applied afterwards)."""
    g = {k: v for k, v in grid.items() if k != "box_scale"}

    return len(_grid_points(g)) if g else 1


def _robust_subset(real, names, max_mpx: float) -> list[str]:
    """Evenly spread image names totalling at most ``max_mpx`` megapixels (at least one image)."""

    with open_source(real) as src:
        mpx = [h * w / 1e6 for h, w in (src.shape(k) for k in range(len(src)))]
    chosen, total = [], 0.0
    for k in _spread(len(names)):
        if chosen and total + mpx[k] > max_mpx:
            continue
        chosen.append(k)
        total += mpx[k]
    return [names[k] for k in sorted(chosen)]


def _spread(n: int) -> list[int]:
    """0 .. n-1 in an order that spreads early picks over the range (0, n-1, mid, ...)."""
    out, seen = [], set()
    for step in range(1, n + 1):
        for k in np.linspace(0, n - 1, step).round().astype(int).tolist():
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def _drop(clean, noisy):
    if clean is None or noisy is None or clean <= 0:
        return None
    return float(1 - noisy / clean)


def _kfold(real, names, gt, cfg, synthetic_best, out, threads, progress, log) -> dict:

    folds = _folds(len(names), cfg.kfold)
    real_parts, few_parts = [], []
    confs_real, confs_few = [], []
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0xFE,)))
    for i, held in enumerate(folds):
        train_idx = [k for k in range(len(names)) if k not in held]
        held_names = {names[k] for k in held}
        ycfg = cfg.yolo_config(hours=0.0, val_fraction=0.0)
        run = out / "kfold" / f"fold{i}"
        best = run / "best.pt"
        if not best.exists():
            train_yolo(real, run, config=ycfg, train_names=[[names[k] for k in train_idx]], overwrite=True,
                       progress=progress, threads=threads)
        det = YoloDetector(best, device=cfg.device, threads=threads)
        p = _detect_all(det, real, names=held_names)
        real_parts.append((p, p[p["score"] >= det.conf_f1]))
        confs_real.append(det.conf_f1)
        log.message(f"fold {i + 1}/{len(folds)}: real-trained model done")
        if cfg.few_real:
            chosen = sorted(rng.choice(train_idx, size=min(cfg.few_real, len(train_idx)), replace=False).tolist())
            run = out / "few_real" / f"fold{i}"
            best = run / "best.pt"
            if not best.exists():
                fcfg = cfg.yolo_config(hours=0.0, val_fraction=0.0, epochs=cfg.few_real_epochs, lr0=0.002,
                                       optimizer="AdamW", close_mosaic=0, patience=0)
                train_yolo(real, run, config=fcfg, train_names=[[names[k] for k in chosen]], weights=synthetic_best,
                           overwrite=True, progress=progress, threads=threads)
            det = YoloDetector(best, device=cfg.device, threads=threads)
            p = _detect_all(det, real, names=held_names)
            few_parts.append((p, p[p["score"] >= det.conf_f1]))
            confs_few.append(det.conf_f1)
    res = {}
    if real_parts:
        res["real_kfold_yolo"] = {**_pooled(real_parts, gt, len(names)), "folds": len(folds),
                                  "conf_per_fold": confs_real}
    if few_parts:
        res["synthetic_plus_few_real"] = {**_pooled(few_parts, gt, len(names)), "folds": len(folds),
                                          "n_real": cfg.few_real, "conf_per_fold": confs_few}
    return res


def _pooled(parts, gt, n) -> dict:
    """Score held-out predictions of several folds: P/R/F1 from each fold's thresholded
    predictions, AP and peak F1 from the pooled raw scores."""
    raw = pd.concat([p for p, _ in parts], ignore_index=True)
    kept = pd.concat([k for _, k in parts], ignore_index=True)
    s_raw = score_predictions(raw, gt, 0.0, n)
    s_kept = score_predictions(kept, gt, 0.0, n)
    out = dict(s_raw)
    for k in ("precision", "recall", "f1", "tp", "fp", "fn"):
        out[k] = s_kept[k]
    out["conf"] = None
    return out


def _box_stats(path) -> dict:

    with open_dataset(path) as ds:
        b = ds.table("boxes")
    if b is None or not len(b):
        return {}
    side = np.sqrt((b["x1"] - b["x0"]).to_numpy() * (b["y1"] - b["y0"]).to_numpy())
    return {"p5": float(np.percentile(side, 5)), "median": float(np.median(side)),
            "p95": float(np.percentile(side, 95)), "per_image": float(len(b) / max(1, b["sample"].max() + 1))}

