"""The adaptation step of sim2real: unsupervised levers that use the user's *unlabeled* micrographs.

Each lever gets its own report row, whether it helps or not:

* ``synthetic_yolo_bn`` — BatchNorm statistics re-estimated on real tiles (:func:`adapt_batchnorm`);
* ``synthetic_yolo_self_train`` — pseudo-labels of the synthetic model (synthetic-validation threshold,
  flip-consistent) and a student trained on synthetic + pseudo-labelled real tiles (:func:`self_train`);
* ``synthetic_yolo_adapted`` — both: BatchNorm first, then self-training from the adapted model;
* ``synthetic_yolo_backgrounds`` — the synthetic model fine-tuned on its synthetic data plus new
  renders on the other folds' images, their defect-like blobs painted over
  (:mod:`.sim2real_backgrounds`): the real instrument's backgrounds with exact synthetic labels.

Honesty: the real labels are never read here.  Images used for adaptation and images scored are
disjoint: the real set is cut into ``cfg.adapt_folds`` folds over images; fold *i* is scored by a
model adapted on the other folds' pixels (plus the frames of ``cfg.adapt_to``, if given, minus any
frame named like a scored image or a near copy of one, e.g. its neighbouring video frames:
:func:`~.sim2real_disjoint.exclude_scored`).  Thresholds are the synthetic-validation ones of each
model; a self-trained student's may instead (``cfg.student_conf="teacher_count"``) be the score at
which it finds as many defects on its own adaptation pool as the synthetic model does there —
never on the scored images.
"""

from __future__ import annotations

import json
from pathlib import Path

from simgen.atomic import atomic_write_text
from simgen.datasets.generate import write_dataset
from simgen.datasets.imageio import list_images
from simgen.errors import DataError, ParameterError
from simgen.experiments.scoring import pooled_scores
from simgen.experiments.sim2real_backgrounds import background_sampler, clear_backgrounds
from simgen.experiments.sim2real_config import Sim2RealConfig
from simgen.experiments.sim2real_disjoint import exclude_scored
from simgen.experiments.sim2real_real import RealSet, detect_real
from simgen.progress import ProgressLog
from simgen.simulate.tem import TemConfig
from simgen.train.yolo.adapt import adapt_detector
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo
from simgen.train.yolo.unlabeled import image_folder, open_unlabeled

__all__ = ["LEVERS", "adaptation_folds", "adaptation_study"]

#: Report row of each lever.
LEVERS = {"bn": "synthetic_yolo_bn", "self_train": "synthetic_yolo_self_train", "all": "synthetic_yolo_adapted",
          "backgrounds": "synthetic_yolo_backgrounds"}


def adaptation_folds(n: int, k: int) -> list[list[int]]:
    """``k`` folds over ``n`` images (every k-th image), the scored images of each adapted model."""
    k = max(2, min(k, n))
    return [list(range(n))[i::k] for i in range(k)]


def adaptation_study(real: RealSet, cfg: Sim2RealConfig, synthetic_weights, train_h5, val_h5, out, *,
                     tem: TemConfig | None = None, threads: int | None = None, progress: bool = True,
                     resume: bool = False, log: ProgressLog | None = None) -> dict[str, dict]:
    """Score every lever of ``cfg.adapt`` on held-out folds; returns report rows (see module docstring).

    Parameters
    ----------
    real : RealSet
        The annotated real set; only its pixels are used for adaptation, its labels only to score.
    synthetic_weights : path-like
        The synthetic-only model (``best.pt``).
    train_h5, val_h5 : path-like
        The synthetic training and validation sets (self-training keeps them in every batch and picks
        the student's threshold on the synthetic validation set).
    out : path-like
        Run folder; results go to ``out/adapt/fold<i>/``.
    tem : TemConfig, optional
        The synthetic set's TEM configuration; the ``backgrounds`` lever renders new images with it.
    """
    n = len(real)
    if n < 2 or not cfg.adapt:
        return {}
    parts: dict[str, list] = {lever: [] for lever in cfg.adapt}
    confs: dict[str, list[float]] = {lever: [] for lever in cfg.adapt}
    records: dict[str, list] = {lever: [] for lever in cfg.adapt}
    images = Path(real.path) / "images"
    for i, held in enumerate(adaptation_folds(n, cfg.adapt_folds)):
        fold = Path(out) / "adapt" / f"fold{i}"
        fold.mkdir(parents=True, exist_ok=True)
        scored = {real.names[k]: real.image(k) for k in held}
        candidates = list_images(images) + (list_images(image_folder(Path(cfg.adapt_to))) if cfg.adapt_to else [])
        kept, left_out = exclude_scored([(str(p), p) for p in candidates], scored, cfg.near_copy_corr)
        files, first = [], {}
        for name, _ in kept:  # a frame of --adapt-to may be a real image of another fold: adapt to it once
            stem = Path(name).stem
            if stem in first:
                left_out[name] = f"same name as {first[stem]}"
            else:
                first[stem] = Path(name).name
                files.append(Path(name))
        if not files:
            raise DataError(f"adaptation fold {i}: no unlabeled image left once the scored images and their "
                            f"near copies are left out")
        levers = [lv for lv in cfg.adapt if lv != "backgrounds"]
        weights: dict[str, tuple[Path, dict]] = {}
        unlabeled_names = [p.name for p in files]
        if levers:
            with open_unlabeled(files) as unlabeled:
                unlabeled_names = [unlabeled.name(k) for k in range(len(unlabeled))]
                weights = _adapt_fold(cfg, levers, synthetic_weights, train_h5, val_h5, unlabeled, fold,
                                      threads=threads, progress=progress, resume=resume)
        if "backgrounds" in cfg.adapt:
            if tem is None:
                raise ParameterError("the backgrounds lever needs the synthetic set's TEM configuration")
            weights["backgrounds"] = background_fold(cfg, tem, synthetic_weights, train_h5, val_h5, files, fold,
                                                     threads=threads, progress=progress, resume=resume)
        for lever, (path, record) in weights.items():
            record = {**record, "adapted_on": list(unlabeled_names), "scored": sorted(scored),
                      "left_out": {Path(k).name: v for k, v in left_out.items()}}
            det = YoloDetector(path, device=cfg.device, threads=threads)
            p = detect_real(det, real, indices=held)
            parts[lever].append((p, p[p["score"] >= det.conf_f1]))
            confs[lever].append(det.conf_f1)
            records[lever].append(record)
        if log is not None:
            log.message(f"adaptation fold {i + 1}: " + ", ".join(sorted(weights)))
    return {LEVERS[lever]: {**pooled_scores(parts[lever], real.gt, n), "folds": len(parts[lever]),
                            "conf_per_fold": confs[lever], "adaptation": records[lever],
                            **({"student_conf": cfg.student_conf, "self_train_rounds": cfg.self_train_rounds}
                               if lever in ("self_train", "all") else {})}
            for lever in cfg.adapt if parts[lever]}


def _adapt_fold(cfg: Sim2RealConfig, levers, weights, train_h5, val_h5, unlabeled, fold: Path, *, threads, progress,
                resume) -> dict[str, tuple[Path, dict]]:
    """The adapted checkpoints of one fold, lever → (weights, what the adaptation did)."""
    return adapt_detector(weights, unlabeled, fold, levers=levers, synthetic=train_h5, synthetic_val=val_h5,
                          rounds=cfg.self_train_rounds, epochs=cfg.self_train_epochs,
                          config=cfg.yolo_config(epochs=cfg.self_train_epochs), student_conf=cfg.student_conf,
                          seed=cfg.seed, device=cfg.device, threads=threads, resume=resume, progress=progress)


def background_fold(cfg: Sim2RealConfig, tem: TemConfig, weights, train_h5, val_h5, files, fold: Path, *,
                    threads, progress, resume) -> tuple[Path, dict]:
    """The ``backgrounds`` lever of one fold: ``(best.pt, record)``.

    Renders ``n_train // 2`` + ``n_val // 2`` new images (sample indices after the synthetic set's,
    so new defects) all on cleared backgrounds from ``files`` — the fold's adaptation pool, already
    without the scored images and their near copies (:func:`adaptation_study`) —, then fine-tunes
    the synthetic model for ``self_train_epochs`` epochs on the synthetic training set plus these
    (the synthetic data stays in every batch, as in self-training); threshold and post-processing
    are picked on the synthetic validation set plus the new validation renders.
    """
    run = fold / "backgrounds"
    best = run / "best.pt"
    record_path = fold / "backgrounds.json"
    if resume and best.exists() and record_path.exists():
        return best, json.loads(record_path.read_text())
    bgs = clear_backgrounds([(p.name, p) for p in files], {}, cfg)  # files are disjoint from the scored images
    sampler = background_sampler(tem, cfg, bgs, 1.0)
    n_tr, n_va = max(8, cfg.n_train // 2), max(1, cfg.n_val // 2)
    start = cfg.n_train + cfg.n_val
    comp_train, comp_val = fold / "backgrounds_train.h5", fold / "backgrounds_val.h5"
    if not (resume and comp_train.exists()):
        write_dataset(comp_train, sampler, n_tr, start=start, overwrite=True, progress=progress)
    if not (resume and comp_val.exists()):
        write_dataset(comp_val, sampler, n_va, start=start + n_tr, overwrite=True, progress=progress)
    again = resume and (run / "ultralytics" / "weights" / "last.pt").exists()
    best = train_yolo([train_h5, comp_train], run, val=[val_h5, comp_val],
                      config=cfg.yolo_config(epochs=cfg.self_train_epochs), weights=None if again else weights,
                      resume=again, overwrite=not again, progress=progress, threads=threads)
    record = {"backgrounds": bgs.describe(), "renders": {"train": n_tr, "val": n_va, "first_index": start},
              "epochs": cfg.self_train_epochs}
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return best, record
