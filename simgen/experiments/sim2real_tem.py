"""The synthetic-only → real experiment (``simgen sim2real``), one named step per stage.

:func:`run_sim2real` runs the whole study on one annotated real folder (YOLO layout),
writes a report and returns a :class:`Sim2RealResult`.  Every step is a plain function
that can also be run alone; the real folder is opened once and handed from step to step
as a :class:`~simgen.experiments.sim2real_real.RealSet`::

    from simgen.datasets.sources import open_source
    from simgen.experiments.sim2real_real import load_real, predict_real
    from simgen.experiments.sim2real_tem import Sim2RealConfig, generate_synthetic, match_look, train_synthetic

    cfg = Sim2RealConfig()
    with open_source("real/") as src:
        real = load_real(src)
        data = generate_synthetic("out/", match_look(real, cfg), cfg)
        preds = predict_real(train_synthetic(data, "out/", cfg), real, "out/", cfg)

The synthetic side lives here, the real folder and predictions on it in
:mod:`~simgen.experiments.sim2real_real`, the comparisons in
:mod:`~simgen.experiments.sim2real_compare` and the report in
:mod:`~simgen.experiments.sim2real_report`:

1. **match** (:func:`match_look`) — image statistics of (up to ``match_images``) real
   images — background level, texture spectrum, noise, blur, defect contrast/size/density —
   estimated from the pixels alone (:func:`simgen.simulate.match.estimate`; labels are
   never read) and turned into a TEM simulator configuration, median over images.
2. **generate** (:func:`generate_synthetic`) — ``n_train`` + ``n_val`` synthetic images
   (``size``², a multiple of the tile) with the TEM sampler wrapped in the augmentation
   pipeline ``spec``.
   **judge** (:func:`~simgen.experiments.sim2real_judge.judge_synthetic`, on by default) — the
   realism judge's held-out AUC of the synthetic training images against the real pixels
   (0.5 = cannot tell); its report goes to ``realism/``.  It runs before training, so a
   ``time_budget_minutes`` cap counts it like the steps before it.
3. **train** (:func:`train_synthetic`) — YOLO on the synthetic images only, a fixed number of
   ``epochs`` (optionally capped by ``time_budget_minutes``).  The confidence threshold is
   picked on the *synthetic* validation images.
4. **predict + score** (``predict_real``, :func:`score_synthetic`) — tiled prediction on
   every real image; precision, recall and F1 at IoU 0.15 (greedy matching) at that
   threshold, AP (COCO 101-point) and peak F1 (the best threshold in hindsight — an upper
   bound), per class and per image.
5. **baseline** (``tune_baseline``) — the LoG blob detector tuned on the same real images;
   its score is the leave-one-image-out estimate (parameters tuned without the scored image).
6. **robustness** (``robustness_study``) — Poisson, salt-and-pepper and Gaussian noise
   (``skimage.util.random_noise`` defaults) added to the real images; F1 drop of the
   synthetic model (and of the baseline).
7. optional **kfold** (``kfold_study``) — YOLO of the same size trained on the real images
   themselves (k-fold over images) and **few_real** — the synthetic model fine-tuned on
   ``few_real`` real images of the training folds; both scored on the held-out folds.
8. **report** (``write_report``).

Outputs in the experiment folder: ``report.md``, ``report.json``, ``pr_curves.png``,
``examples.png``, ``synthetic_examples.png``, ``match.json``, ``realism/`` (``realism.json``,
``realism.md``, ``sheet.png``), the synthetic data, the YOLO
run (``yolo/best.pt`` — a standard Ultralytics checkpoint) and the prediction file.
With ``resume=True`` finished steps of an interrupted run are reused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_write_text
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate.errors_by_size import errors_by_size
from simgen.evaluate.matching import BOX_COLUMNS, box_side
from simgen.evaluate.report import to_jsonable
from simgen.experiments.common import ExperimentResult, StepClock, check_experiment_dir, empty_dir
from simgen.experiments.scoring import IOU, loo_threshold_scores, per_image_scores, public, score_predictions
from simgen.experiments.sim2real_adapt import adaptation_study
from simgen.experiments.sim2real_backgrounds import background_sampler, load_backgrounds
from simgen.experiments.sim2real_compare import (
    BaselineResult,
    fused_log_study,
    kfold_study,
    robustness_study,
    synthetic_log_baseline,
    tune_baseline,
)
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_judge import judge_synthetic
from simgen.experiments.sim2real_real import RealPredictions, RealSet, load_real, predict_real
from simgen.experiments.sim2real_report import score_line, summary_text, verdict, write_report
from simgen.progress import ProgressLog, format_duration
from simgen.runtime import default_threads, setup_threads
from simgen.simulate.match import estimate
from simgen.simulate.tem import ANNOTATOR_LABELS, KIND_SIZE, TemConfig, TemSampler, config_from_match
from simgen.spread import spread_indices
from simgen.train.yolo.trainer import train_yolo

__all__ = [
    "LookMatch",
    "Sim2RealConfig",
    "Sim2RealResult",
    "SyntheticData",
    "generate_synthetic",
    "match_look",
    "run_sim2real",
    "score_synthetic",
    "synthetic_box_stats",
    "box_sides",
    "calibrate_box_sides",
    "train_synthetic",
    "training_hours",
]

#: ``Sim2RealConfig.labels`` → the TEM label settings it sets (``None``: the base config's own rule).
#: ``annotator`` is the rule the TEM presets use (docs/tem.md, *Labels follow what an annotator sees*).
LABEL_RULES = {
    "annotator": ANNOTATOR_LABELS,
    "annotator-final": ANNOTATOR_LABELS,  # + the rule again on the augmented image (generate_synthetic)
    "all": {"label_extent": 0.0, "min_snr": 0.0, "lookalikes": "keep"},
}



# -- step results -----------------------------------------------------------------------------------
@dataclass
class LookMatch:
    """The TEM configuration of the synthetic set and the real-image statistics it was fitted to."""

    tem: TemConfig
    estimates: dict | None

    def save(self, path) -> Path:
        text = json.dumps({"estimates": self.estimates, "tem_config": self.tem.to_dict()}, indent=2, default=float)
        return atomic_write_text(path, text + "\n", overwrite=True)

    @classmethod
    def load(cls, path) -> "LookMatch":
        saved = json.loads(Path(path).read_text())
        return cls(TemConfig.from_dict(saved["tem_config"]).validate(), saved.get("estimates"))


@dataclass
class SyntheticData:
    """The synthetic training and validation sets (HDF5)."""

    train: Path
    val: Path


@dataclass
class Sim2RealResult(ExperimentResult):
    """Everything :func:`run_sim2real` measured; :meth:`to_dict` is ``report.json``.

    ``methods`` maps a method (``synthetic_yolo``, ``synthetic_yolo_loo_threshold``,
    ``log_baseline``, ``log_baseline_insample``, ``real_kfold_yolo``,
    ``synthetic_plus_few_real``) to its scores (private ``_curve`` entries hold PR curves);
    ``timing`` gives seconds per step; ``realism`` is the judge's summary
    (:func:`~simgen.experiments.sim2real_judge.judge_synthetic`; ``None`` when it did not run).
    """

    output: Path
    real: Path
    config: Sim2RealConfig
    look: LookMatch
    synthetic: SyntheticData
    weights: Path
    predictions: Path
    methods: dict[str, dict]
    robustness: dict[str, dict]
    timing: dict[str, float]
    threads: int
    n_real_images: int
    n_gt: int
    fps_real: float
    notes: list[str]
    scale: dict
    realism: dict | None = None

    @property
    def verdict(self) -> str:
        return verdict(self.methods)

    @property
    def summary_text(self) -> str:
        return self.to_dict()["summary_text"]

    @property
    def report_md(self) -> Path:
        return self.output / "report.md"

    def to_dict(self) -> dict:
        report = {
            "real": str(self.real.resolve()), "n_real_images": self.n_real_images, "n_gt": self.n_gt, "iou": IOU,
            "config": self.config.to_dict(), "tem_config": self.look.tem.to_dict(),
            "match_estimates": self.look.estimates, "threads": self.threads, "timing": self.timing,
            "fps_real": self.fps_real, "weights": str(self.weights), "notes": self.notes,
            "methods": {k: public(v) for k, v in self.methods.items()}, "robustness": self.robustness,
            "scale": self.scale, "realism": self.realism, "verdict": self.verdict,
        }
        report["summary_text"] = summary_text(report)
        return report


# -- steps ------------------------------------------------------------------------------------------
def postprocessing_note(detector) -> str:
    """One report line: the post-processing the synthetic model applies (picked on synthetic validation)."""
    steps = []
    if getattr(detector, "nested", None) is not None:
        steps.append(f"boxes lying inside a higher-scoring box (IoMin >= {detector.nested:g}) dropped")
    if getattr(detector, "tta", False):
        steps.append("flip test-time augmentation (4 views, weighted boxes fusion)")
    return ("Post-processing of the synthetic-only YOLO, picked with its threshold on the synthetic validation "
            "images: " + ("; ".join(steps) if steps else "none (neither helped there)") + ".")


def match_look(real: RealSet, cfg: Sim2RealConfig, log: ProgressLog | None = None) -> LookMatch:
    """TEM configuration of the synthetic set: look matched to the real pixels, scale per ``cfg.scale``."""
    base = TemConfig.from_preset(cfg.tem_preset) if cfg.tem_preset else TemConfig()
    rule = dict(LABEL_RULES.get(cfg.labels, {}))
    if cfg.labels == "annotator-final":  # look-alikes of every trained size, not only this image's
        rule["lookalike_px"] = tuple(cfg.diameter_px)
    base = base.replace(size=cfg.size, single_class=real.classes[0], box_margin=cfg.box_margin, **rule)
    med = None
    if cfg.match:
        n = len(real)
        picks = spread_indices(n, cfg.match_images).tolist()
        med = _median_estimates([estimate(real.image(k)) for k in picks])
        if log is not None:
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
        mix = math.exp(sum(wi * math.log(KIND_SIZE[k]) for wi, k in zip(tem.weights, tem.classes)))
        size_nm = mid * nominal / mix
        per_um2 = cfg.density_per_mpx / (nominal**2)  # defects per Mpx at the middle size → per µm²
        tem = tem.replace(size_nm=(size_nm, size_nm), pixel_nm=(nominal * mid / hi, nominal * mid / lo),
                          count_exponent=cfg.count_exponent,
                          density=(per_um2 / 1.5, per_um2 * 1.5), size_jitter=min(tem.size_jitter, 0.1),
                          max_size_px=cfg.size / 2).validate()
        tem = calibrate_box_sides(tem, (lo, hi), seed=cfg.seed)
    return LookMatch(tem, med)


def box_sides(tem: TemConfig, *, seed: int = 0, n_images: int = 48) -> np.ndarray:
    """Sides (√area, px, with ``box_margin``) of the boxes of ``n_images`` renders of ``tem``."""
    sampler = TemSampler(tem, seed=seed)
    boxes = [sampler(i)["boxes"] for i in range(n_images)]
    b = np.concatenate(boxes) if boxes else np.zeros(0)
    return np.sqrt((b["x1"] - b["x0"]) * (b["y1"] - b["y0"])) if len(b) else np.zeros(0)


def calibrate_box_sides(tem: TemConfig, target: tuple[float, float], *, seed: int = 0, iterations: int = 3,
                        n_images: int = 48) -> TemConfig:
    """Stretch and shift ``tem.pixel_nm`` until the 5th/95th percentiles of the box sides hit ``target``.

    Why: ``diameter_px`` promises *box* sizes, but a defect's box is not its nominal diameter —
    black dots are smaller than loops, defects are cut by the image border, the size jitter and
    the kind mixture widen the spread — so the uncalibrated policy gave boxes of 4.9/8.4/23.5 px
    (p5/median/p95) for a 5-45 px promise.  The calibration renders a few dozen synthetic images
    (no real data), measures the box sides and moves the log pixel-size range by the misfit of
    the geometric centre and widens it by the misfit of the log-spread (three passes; on renders of
    another seed the default lands at 5.0/10.2/40.8 px, within 10 % of the 45 px end).  The density range moves with the pixel size, so defects per pixel² stay as set.
    """
    lo, hi = target
    for _ in range(iterations):
        side = box_sides(tem, seed=seed, n_images=n_images)
        if len(side) < 20:
            break
        p5, p95 = np.percentile(side, [5, 95])
        shift = math.sqrt(lo * hi / (p5 * p95))  # box sides scale as 1 / pixel_nm
        stretch = math.log(hi / lo) - math.log(p95 / p5)  # extra log-width needed (may be < 0)
        a, b = (math.log(v) for v in tem.pixel_nm)
        width = max(0.05, (b - a) + stretch)
        centre = 0.5 * (a + b) - math.log(shift)
        # the largest kind's median diameter stays within max_size_px (else the large end only clips)
        floor = tem.size_nm[1] * max(KIND_SIZE[k] for k in tem.classes) / tem.max_diameter_px()
        pixel = (max(floor, math.exp(centre - width / 2)), math.exp(centre + width / 2))
        area = (tem.nominal_pixel_nm / math.sqrt(pixel[0] * pixel[1])) ** 2  # same defects per px²
        tem = tem.replace(pixel_nm=pixel, density=(tem.density[0] * area, tem.density[1] * area)).validate()
    return tem


def generate_synthetic(out, look: LookMatch, cfg: Sim2RealConfig, *, progress: bool = True,
                       resume: bool = False, real: RealSet | None = None) -> SyntheticData:
    """``synthetic_train.h5`` (``n_train``) and ``synthetic_val.h5`` (the next ``n_val`` samples) in ``out``.

    With ``cfg.backgrounds``, ``cfg.background_fraction`` of them are rendered on real backgrounds
    (:mod:`.sim2real_backgrounds`; the images of ``real`` — the scored ones — are never used as
    backgrounds, and ``backgrounds.json`` records which were).
    """
    out = Path(out)
    data = SyntheticData(out / "synthetic_train.h5", out / "synthetic_val.h5")
    if resume and data.train.exists() and data.val.exists():
        return data
    bgs = None
    if cfg.backgrounds is not None and cfg.background_fraction > 0:
        bgs = load_backgrounds(cfg, real)
        atomic_write_text(out / "backgrounds.json", json.dumps(
            {"folder": str(cfg.backgrounds), "fraction": cfg.background_fraction, **bgs.describe()}, indent=1))
    sampler = background_sampler(look.tem, cfg, bgs, cfg.background_fraction, estimates=look.estimates)
    if not (resume and data.train.exists()):
        write_dataset(data.train, sampler, cfg.n_train, overwrite=True, progress=progress)
    if not (resume and data.val.exists()):
        write_dataset(data.val, sampler, cfg.n_val, start=cfg.n_train, overwrite=True, progress=progress)
    return data


def training_hours(cfg: Sim2RealConfig, real: RealSet, elapsed_seconds: float = 0.0) -> float:
    """Training time cap in hours: 0 (off) without a time budget; with one, what the budget
    leaves after ``elapsed_seconds`` and a reserve for the steps after training."""
    if cfg.time_budget_minutes is None:
        return 0.0
    reserve = _reserve_minutes(cfg, real)
    remaining = cfg.time_budget_minutes - elapsed_seconds / 60 - reserve
    if remaining < 1:
        raise ParameterError(f"time budget of {cfg.time_budget_minutes:g} min leaves no time to train "
                             f"(other steps need ~{reserve:.0f} min); raise --time-budget")
    return remaining / 60


def train_synthetic(data: SyntheticData, out, cfg: Sim2RealConfig, *, hours: float = 0.0,
                    threads: int | None = None, progress: bool = True, resume: bool = False) -> Path:
    """Train YOLO on the synthetic images only (``cfg.epochs``, capped at ``hours`` when > 0); ``out/yolo/best.pt``."""
    run = Path(out) / "yolo"
    best = run / "best.pt"
    if resume and best.exists():
        return best
    again = resume and (run / "ultralytics" / "weights" / "last.pt").exists()
    return train_yolo(data.train, run, val=data.val, config=cfg.yolo_config(hours=hours), resume=again,
                      overwrite=not again, progress=progress, threads=threads)


def score_synthetic(preds: RealPredictions, real: RealSet) -> dict[str, dict]:
    """Scores of the synthetic-only model: at the synthetic threshold (with per-image rows and the
    false positives / misses by box size) and, with several images, with leave-one-image-out
    thresholds from the real labels."""
    n = len(real)
    methods = {"synthetic_yolo": score_predictions(preds.pred, real.gt, preds.conf, n)}
    methods["synthetic_yolo"]["per_image"] = per_image_scores(preds.pred, real.gt, preds.conf, real.names)
    sizes = errors_by_size(preds.pred, real.gt, conf=preds.conf, threshold=IOU)
    methods["synthetic_yolo"]["errors_by_size"] = to_jsonable(sizes.to_dict("records"))
    if n > 1:
        methods["synthetic_yolo_loo_threshold"] = loo_threshold_scores(preds.pred, real.gt, n)
    return methods


def synthetic_box_stats(path) -> dict:
    """Side (√area, px) percentiles of the synthetic boxes and boxes per image."""
    with open_dataset(path) as ds:
        b = ds.table("boxes")
    if b is None or not len(b):
        return {}
    side = box_side(b[BOX_COLUMNS])
    return {"p5": float(np.percentile(side, 5)), "median": float(np.median(side)),
            "p95": float(np.percentile(side, 95)), "per_image": float(len(b) / max(1, b["sample"].max() + 1))}


# -- the experiment ---------------------------------------------------------------------------------
def run_sim2real(real, output, config: Sim2RealConfig | None = None, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> Sim2RealResult:
    """Run the synthetic-only → real experiment on one annotated real folder (see module docstring).

    Returns the :class:`Sim2RealResult`; its ``to_dict()`` is also written to ``report.json``
    (and ``report.md``) in ``output``.
    """
    cfg = (config or Sim2RealConfig()).validate()
    real_path = Path(real)
    if not (real_path / "images").is_dir() or not (real_path / "labels").is_dir():
        raise DataError(f"{real_path} must be a YOLO folder with images/ and labels/")
    out = check_experiment_dir(output, overwrite=overwrite, resume=resume)
    log = ProgressLog(None, enabled=progress, prefix="[sim2real] ")
    with open_source(real_path) as src:
        real_set = load_real(src)
        training_hours(cfg, real_set)  # a time budget too small for any training fails before any output
        if overwrite and not resume and out.exists():
            empty_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        threads = setup_threads(cfg.threads or default_threads())
        log.message(f"{len(real_set)} real images, {len(real_set.gt)} annotated defects in {real_path}; "
                    f"{threads} thread(s)")
        return _run_steps(real_set, out, cfg, threads=threads, resume=resume, progress=progress, log=log)


def _run_steps(real: RealSet, out: Path, cfg: Sim2RealConfig, *, threads: int, resume: bool, progress: bool,
               log: ProgressLog) -> Sim2RealResult:
    clock = StepClock(log)
    budget = cfg.time_budget_minutes

    def seconds_left() -> float | None:
        return None if budget is None else budget * 60 - clock.elapsed()

    with clock.step("match"):
        match_path = out / "match.json"
        if resume and match_path.exists():
            look = LookMatch.load(match_path)
        else:
            look = match_look(real, cfg, log)
            look.save(match_path)
    with clock.step("generate"):
        data = generate_synthetic(out, look, cfg, progress=progress, resume=resume, real=real)
    notes: list[str] = []
    realism = None
    if cfg.judge:
        with clock.step("judge"):
            realism, skipped = judge_synthetic(data.train, real, out, cfg, threads=threads, resume=resume, log=log)
        notes += skipped
    with clock.step("train"):  # training_hours sees the time of every step above
        weights = train_synthetic(data, out, cfg, hours=training_hours(cfg, real, clock.elapsed()), threads=threads,
                                  progress=progress, resume=resume)
    with clock.step("predict"):
        preds = predict_real(weights, real, out, cfg, threads=threads)
        methods = score_synthetic(preds, real)
    notes.append(postprocessing_note(preds.detector))
    log.message(score_line("synthetic-only YOLO", methods["synthetic_yolo"]))
    baseline = BaselineResult(None, {})
    if cfg.baseline:
        with clock.step("baseline"):
            baseline = tune_baseline(real, out, cfg, seconds_left=seconds_left(), yolo_s_per_mpx=preds.s_per_mpx)
        methods.update(baseline.methods)
        notes += baseline.notes
        if "log_baseline" in methods:
            log.message(score_line("LoG baseline (LOO)", methods["log_baseline"]))
    robustness: dict = {}
    if cfg.robustness:
        with clock.step("robustness"):
            robustness, skipped = robustness_study(real, preds, baseline.params, cfg, seconds_left=seconds_left(),
                                                   log_s_per_mpx=baseline.s_per_mpx)
        notes += skipped
        if robustness:
            log.message("robustness F1 drop: " + ", ".join(f"{k} {v['drop']:.1%}" for k, v in robustness.items()
                                                           if v["drop"] is not None))
    if cfg.synthetic_log:
        with clock.step("synthetic_log"):
            methods.update(synthetic_log_baseline(real, data.val, cfg))
        log.message(score_line("LoG tuned on synthetic", methods["log_synthetic"]))
    if cfg.fuse_log:
        with clock.step("fuse_log"):
            methods.update(fused_log_study(real, data.val, preds.detector, methods["log_synthetic"]["params"], out))
        log.message(score_line("YOLO + synthetic LoG, fused", methods["fused_log"]))
    if cfg.adapt:
        with clock.step("adapt"):
            adapted = adaptation_study(real, cfg, weights, data.train, data.val, out, tem=look.tem, threads=threads,
                                       progress=progress, resume=resume, log=log)
        methods.update(adapted)
        for name, row in adapted.items():
            log.message(score_line(name, row))
    if cfg.kfold:
        with clock.step("kfold"):
            methods.update(kfold_study(real, cfg, weights, out, threads=threads, progress=progress, log=log))
    result = Sim2RealResult(
        output=out, real=real.path, config=cfg, look=look, synthetic=data, weights=weights, predictions=preds.path,
        methods=methods, robustness=robustness, timing=clock.finish(), threads=threads, n_real_images=len(real),
        n_gt=len(real.gt), fps_real=preds.fps, notes=notes,
        scale={"tile": cfg.size, "detector_scale": cfg.detector_scale, "network_tile": cfg.network_tile,
               "defect_size_px_estimate": (look.estimates or {}).get("defect_size_px"),
               "synthetic_box_size_px": synthetic_box_stats(data.train)}, realism=realism)
    write_report(result, real, preds, log)
    log.message(f"finished in {format_duration(result.timing['total'])}")
    return result


# -- helpers ----------------------------------------------------------------------------------------
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


def _reserve_minutes(cfg: Sim2RealConfig, real: RealSet) -> float:
    """Rough minutes the steps after training need (prediction, baseline, robustness) on a 2-core CPU.

    Measured on this machine under load: ~3 s per megapixel for tiled YOLO inference and
    ~4 s per megapixel per LoG scale-space pass (one thread); 1.5x for safety.
    """
    if cfg.size <= 64:
        return 0.0
    mpx = sum(real.megapixels)
    robust = min(mpx, cfg.robust_mpx) if cfg.robustness else 0.0
    seconds = 3 * (mpx + 3 * robust)
    if cfg.baseline:
        passes = 4 if cfg.baseline_grid == "quick" else 15
        seconds += 4 * (mpx * (passes + 1) + 3 * robust)
    return min(30.0, 1.0 + 1.5 * seconds / 60)
