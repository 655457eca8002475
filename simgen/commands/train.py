"""Detector commands: ``simgen train yolo``, ``simgen predict``, ``simgen baseline log``,
``simgen sim2real`` (``simgen track-video`` is in :mod:`simgen.commands.track`).

This module creates the ``train`` group (``simgen.commands.train_models`` adds
``maskrcnn`` and ``deltanet`` to it) and the ``baseline`` group.
"""

from __future__ import annotations

from pathlib import Path

import click

from simgen.atomic import check_output
from simgen.commands._options import (
    CONTEXT,
    TTA_CHOICES,
    box_scale_option,
    device_option,
    overwrite_option,
    parse_nested,
    progress_option,
    renamed_option,
    runtime_option,
)
from simgen.errors import DataError, ParameterError
from simgen.experiments.sim2real_film import FilmExperimentConfig, run_film_experiment
from simgen.experiments.sim2real_tem import Sim2RealConfig, run_sim2real
from simgen.train.baselines.log import (
    DEFAULT_GRID,
    QUICK_GRID,
    LogParams,
    load_params,
    predict_log,
    save_params,
    tune_log,
)
from simgen.train.yolo.adapt import adapt_detector, adapt_levers
from simgen.train.yolo.checkpoint import load_yolo_checkpoint
from simgen.train.yolo.config import PRESETS
from simgen.train.yolo.count_threshold import STUDENT_THRESHOLDS
from simgen.train.yolo.trainer import train_yolo

STUDENT_CONF_HELP = ("Threshold of a self-trained student: synthetic (picked on synthetic validation; default) or "
                     "teacher_count (as many detections on the unlabeled images as the synthetic model at its "
                     "threshold; label-free; better on dsva_fecral, worse on creme_316L and ti_anneal: README).")

restart_option = click.option("--overwrite", is_flag=True,
                              help="Start again in an existing run folder (its previous results are deleted first).")


@click.group("train", context_settings=CONTEXT)
def train_group():
    """Train detectors (yolo, maskrcnn) and change detectors (deltanet) on simgen data."""


@click.group("baseline", context_settings=CONTEXT)
def baseline_group():
    """Classical baselines every learned detector must beat (log)."""


# -- simgen train yolo -------------------------------------------------------------------------
@click.command("yolo")
@click.option("--data", "data", required=True, multiple=True, type=click.Path(),
              help="Training data: simgen HDF5 with boxes or a YOLO folder (images/ + labels/); repeatable.")
@click.option("--val", "val", multiple=True, type=click.Path(),
              help="Validation data (same forms; repeatable). Default: --val-fraction of --data.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Run folder: best.pt, simgen.json, metrics.jsonl, ultralytics/.")
@click.option("--config", "preset", type=click.Choice(["small", "full"]), default="full", show_default=True,
              help="small: seconds on a CPU (64² tiles, 2 epochs; tests); full: yolov8n, 320² tiles, 60 epochs.")
@click.option("--model", default=None, help="Model yaml: yolov8n, yolo11n, yolov8s, ... or a .yaml path (never .pt).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Start from trained weights (a local best.pt), e.g. to fine-tune on a few real images.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: the config's).")
@click.option("--batch-size", "batch", type=click.IntRange(min=1), default=None, help="Images per batch.")
@renamed_option("--batch", "--batch-size", "batch", type=click.IntRange(min=1))
@click.option("--imgsz", type=click.IntRange(min=32), default=None, help="Network input size (multiple of 32).")
@click.option("--tile", type=click.IntRange(min=0), default=None,
              help="Tile side for images larger than it (0 = no tiling). Default: imgsz.")
@click.option("--overlap", type=click.IntRange(min=0), default=None, help="Tile overlap (px).")
@click.option("--min-box", type=click.FloatRange(min=0), default=None, help="Grow smaller boxes to this size (px).")
@click.option("--scale", type=click.FloatRange(min=0.05, max=20), default=None,
              help="Resize images by this factor before tiling (train and predict).")
@click.option("--normalize", type=click.Choice(["percentile", "minmax", "none"]), default=None,
              help="Per-image contrast normalisation before 8-bit conversion.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of --data held out for validation when --val is not given.")
@click.option("--patience", type=click.IntRange(min=0), default=None, help="Early stopping patience (0 = off).")
@click.option("--save-period", type=click.IntRange(min=0), default=None,
              help="Also keep every N-th epoch's checkpoint (ultralytics/weights/epochN.pt, N from 0; default 0 = off).")
@click.option("--loader-workers", "workers", type=click.IntRange(min=0), default=None,
              help="Data-loading worker processes (--workers means Dask workers in simgen simulate).")
@renamed_option("--workers", "--loader-workers", "workers", type=click.IntRange(min=0))
@click.option("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default $SIMGEN_THREADS or 1).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Where YOLO exports are cached (default ~/.cache/simgen/yolo-data or $SIMGEN_CACHE_DIR).")
@click.option("--adapt-to", "adapt_to", multiple=True, type=click.Path(exists=True),
              help="Unlabeled real images (folder or files; repeatable) to adapt the trained model to, without "
                   "labels: writes OUTPUT/adapt/<lever>/best.pt. Needs --val (thresholds come from it).")
@click.option("--adapt", "adapt", default="self_train", show_default=True, metavar="LEVERS",
              help="With --adapt-to: bn, self_train or all (comma-separated).")
@click.option("--self-train-rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Self-training rounds (pseudo-label, train a student).")
@click.option("--self-train-epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Student epochs per self-training round.")
@click.option("--student-conf", type=click.Choice(STUDENT_THRESHOLDS), default="synthetic", show_default=True,
              help=STUDENT_CONF_HELP)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in the output folder.")
@restart_option
@progress_option
def train_yolo_command(data, val, output, preset, model, weights, epochs, batch, imgsz, tile, overlap, min_box, scale,
                       normalize, val_fraction, patience, save_period, workers, device, threads, seed, cache_dir,
                       adapt_to, adapt,
                       self_train_rounds, self_train_epochs, student_conf, resume, overwrite, progress):
    """Train a YOLO detector (Ultralytics, from a .yaml, fully offline) on simgen data.

    Images are contrast-normalised, tiled at native resolution and exported once to a
    cached YOLO folder; tiny boxes are grown to --min-box; up to 1000 detections per
    tile. best.pt is a standard Ultralytics checkpoint (ultralytics.YOLO(path) loads it)
    that also stores the tiling and the confidence threshold picked on validation data.

    \b
    Examples:
      simgen train yolo --data tem_train.h5 --val tem_val.h5 --epochs 40 -o runs/yolo
      simgen train yolo --data tem.h5 --config small -o runs/smoke
      simgen train yolo --data real_few/ --weights runs/yolo/best.pt --epochs 20 -o runs/finetune
      simgen train yolo --data tem_train.h5 --val tem_val.h5 --adapt-to my_micrographs/ -o runs/yolo_adapted
      simgen predict runs/yolo/best.pt ../shared/realdata/dev/dsva_fecral -o pred.h5
    """

    changes = {k: v for k, v in dict(model=model, epochs=epochs, batch=batch, imgsz=imgsz, overlap=overlap,
                                     min_box=min_box, scale=scale, normalize=normalize, val_fraction=val_fraction,
                                     patience=patience, save_period=save_period, workers=workers, device=device,
                                     seed=seed).items()
               if v is not None}
    if tile is not None:
        changes["tile"] = tile
    elif imgsz is not None:
        changes["tile"] = imgsz
    config = PRESETS[preset].replace(**changes).validate()
    levers = _levers(adapt) if adapt_to else ()
    if adapt_to and not levers:
        raise click.UsageError("--adapt-to needs at least one lever in --adapt")
    if adapt_to and {"self_train", "all"} & set(levers) and not val:
        raise ParameterError("--adapt-to with self-training needs --val: the pseudo-label threshold and the "
                             "student's best epoch are chosen on that (synthetic) validation set")
    if levers:
        adapt_levers(levers)  # refuse a bad lever before hours of training
    best = train_yolo(list(data), output, val=list(val) or None, config=config, weights=weights, resume=resume,
                      overwrite=overwrite, progress=progress, cache_dir=cache_dir, threads=threads)
    click.echo(f"wrote {best}")
    if levers:
        adapted = adapt_detector(best, list(adapt_to), Path(output) / "adapt", levers=levers, synthetic=list(data),
                                 synthetic_val=list(val), rounds=self_train_rounds, epochs=self_train_epochs,
                                 student_conf=student_conf,
                                 seed=config.seed, device=config.device, threads=threads, resume=resume,
                                 progress=progress)
        for lever, (path, _) in adapted.items():
            click.echo(f"adapted ({lever}): wrote {path}")


# -- simgen predict -----------------------------------------------------------------------------
@click.command("predict")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("source", type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Predictions HDF5 (label-only: boxes + score per image).")
@click.option("--conf", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Lowest confidence kept (YOLO default 0.01, so PR curves/AP can be computed).")
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=None, help="NMS IoU (tiles and seams).")
@click.option("--tile", type=click.IntRange(min=0), default=None, help="Tile side (default: as trained; 0 = none).")
@click.option("--overlap", type=click.IntRange(min=0), default=None, help="Tile overlap (px).")
@click.option("--scale", type=click.FloatRange(min=0.05, max=20), default=None,
              help="Resize factor before detection (default: as trained). Boxes come back in original pixels.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@runtime_option
@click.option("--agnostic-nms/--no-agnostic-nms", default=False, show_default=True,
              help="YOLO: NMS across classes, so overlapping boxes of different classes keep only the best one "
                   "(use it for two-class film models: their plus and minus boxes land on the same defect).")
@click.option("--nested", "nested", default="auto", show_default=True, metavar="auto|off|IOMIN",
              help="YOLO: drop boxes lying mostly inside a higher-scoring box (intersection over the smaller "
                   "area >= IOMIN); auto = as picked on the model's validation data and stored in it.")
@click.option("--tta", "tta", type=click.Choice(list(TTA_CHOICES)), default="auto", show_default=True,
              help="YOLO: flip test-time augmentation (the image and its 3 mirrors, boxes fused; 4x the time); "
                   "auto = as picked on the model's validation data and stored in it.")
@click.option("--mask-conf", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Mask R-CNN: mask probability threshold.")
@click.option("--fusion", type=click.Choice(["forward", "backward", "consecutive", "ensemble"]), default="ensemble",
              show_default=True, help="DeltaNet: which pair prediction to store (forward, backward = reversed pair, "
              "consecutive = chained t→t+1 steps, ensemble = mean of the available ones).")
@box_scale_option
@overwrite_option
@progress_option
def predict_command(weights, source, output, conf, iou, tile, overlap, scale, device, threads, runtime, agnostic_nms,
                    nested, tta, mask_conf, fusion, box_scale, overwrite, progress):
    """Run a trained detector on an HDF5 dataset, a YOLO folder or a folder of images.

    WEIGHTS is a best.pt from `simgen train yolo|maskrcnn|deltanet` (the model type is
    read from the checkpoint; any Ultralytics detection .pt works too), a LoG
    parameter JSON from `simgen baseline log tune` or the fused detector `fusion.json`
    of `simgen sim2real --fuse-log`.

    \b
    Examples:
      simgen predict runs/yolo/best.pt ../shared/realdata/dev/ti_anneal -o pred.h5
      simgen predict log_params.json ../shared/realdata/dev/ti_anneal -o pred_log.h5
      simgen predict runs/s2r/fusion.json ../shared/realdata/dev/ti_anneal -o pred_fused.h5
      simgen evaluate --pred pred.h5 --gt ../shared/realdata/dev/ti_anneal -o report/
    """

    check_output(output, overwrite)
    nested_value = parse_nested(nested)
    path = Path(weights)
    if not path.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    if path.suffix.lower() == ".json":
        from simgen.train.baselines.log import load_params, predict_log
        from simgen.train.fusion import is_fusion_file, predict_fused

        if is_fusion_file(path):
            out = predict_fused(path, source, output, overwrite=overwrite, progress=progress)
        else:
            out = predict_log(source, output, load_params(path), overwrite=overwrite, progress=progress)
        click.echo(f"wrote {out}")
        return
    model_type = _model_type(path)
    if model_type == "maskrcnn":
        from simgen.train.maskrcnn.predict import predict_maskrcnn

        out = predict_maskrcnn(path, source, output, overwrite=overwrite, mask_conf=mask_conf, device=device,
                               progress=progress)
    elif model_type == "deltanet":
        from simgen.train.changedet.predict import predict_deltanet

        out = predict_deltanet(path, source, output, fusion=fusion, overwrite=overwrite, device=device,
                               progress=progress)
    else:
        from simgen.train.yolo.predict import predict_yolo

        out = predict_yolo(path, source, output, overwrite=overwrite, progress=progress, conf=conf, iou=iou,
                           tile=tile, overlap=overlap, scale=scale, device=device, threads=threads, runtime=runtime,
                           agnostic_nms=agnostic_nms, box_scale=box_scale, nested=nested_value,
                           tta=TTA_CHOICES[tta])
    click.echo(f"wrote {out}")




def _model_type(path: Path) -> str:
    """``maskrcnn``, ``deltanet`` or ``yolo`` from a checkpoint's contents."""

    state = load_yolo_checkpoint(path)
    if isinstance(state, dict):
        if state.get("model_type") in ("maskrcnn", "deltanet"):
            return state["model_type"]
        if state.get("ema") is not None or state.get("model") is not None:
            return "yolo"
    raise DataError(f"{path} is neither a simgen nor an Ultralytics detector checkpoint")


# -- simgen baseline log ------------------------------------------------------------------------
@click.group("log", context_settings=CONTEXT)
def log_group():
    """Laplacian-of-Gaussian blob detector (scikit-image), tuned on annotated real images.

    \b
    Examples:
      simgen baseline log tune ../shared/realdata/dev/dsva_fecral -o log_dsva.json
      simgen baseline log predict ../shared/realdata/dev/dsva_fecral --params log_dsva.json -o pred_log.h5
    """


@log_group.command("tune")
@click.argument("source", type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="JSON with the tuned parameters and the tuning report.")
@click.option("--grid", type=click.Choice(["default", "quick"]), default="default", show_default=True,
              help="Parameter grid (quick: 2x2x2 points).")
@click.option("--cv", default="loo", show_default=True,
              help="Cross-validation: loo (leave one image out), K (folds) or none.")
@click.option("--polarity", type=click.Choice(["dark", "bright"]), default="dark", show_default=True,
              help="Defects darker (bright-field TEM) or brighter than the background.")
@overwrite_option
@progress_option
def log_tune_command(source, output, grid, cv, polarity, overwrite, progress):
    """Grid-search the LoG detector on annotated images (F1 at IoU 0.15) and save its parameters.

    The detection threshold is the best-F1 point of the PR curve. Tuning and scoring on
    the same images flatters the baseline, so a cross-validated score (parameters tuned
    without the held-out image) is reported as well; quote that one.
    """

    check_output(output, overwrite)
    cv_value = cv.strip().lower()
    if cv_value not in ("loo", "none"):
        if not cv_value.isdigit() or int(cv_value) < 2:
            raise ParameterError(f"--cv must be loo, none or an integer >= 2, got {cv!r}")
        cv_value = int(cv_value)
    res = tune_log(source, grid=QUICK_GRID if grid == "quick" else DEFAULT_GRID,
                   base=LogParams(threshold=0.03, polarity=polarity), cv=None if cv_value == "none" else cv_value,
                   progress=progress)
    save_params(output, res.params, extra={"tuning": res.to_dict(), "source": str(Path(source).resolve())},
                overwrite=overwrite)
    ins, cvs = res.insample, res.cv
    click.echo(f"tuned on all images (optimistic): P {ins['precision']:.3f} R {ins['recall']:.3f} "
               f"F1 {ins['f1']:.3f} AP {ins['mAP']:.3f}")
    if cvs:
        click.echo(f"cross-validated ({cvs['scheme']}): P {cvs['precision']:.3f} R {cvs['recall']:.3f} "
                   f"F1 {cvs['f1']:.3f} AP {cvs['mAP']:.3f}")
    click.echo(f"wrote {output}")


@log_group.command("predict")
@click.argument("source", type=click.Path())
@click.option("--params", "params_path", type=click.Path(dir_okay=False), default=None,
              help="Tuned parameters (JSON from `tune`); default: untuned defaults.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="Predictions HDF5.")
@overwrite_option
@progress_option
def log_predict_command(source, params_path, output, overwrite, progress):
    """Detect blobs in every image of SOURCE and write predictions (boxes + LoG response as score)."""

    params = load_params(params_path) if params_path else LogParams()
    out = predict_log(source, output, params, overwrite=overwrite, progress=progress)
    click.echo(f"wrote {out}")


# -- simgen sim2real -------------------------------------------------------------------------------
@click.command("sim2real")
@click.option("--real", "real", required=True, type=click.Path(file_okay=False),
              help="Annotated real images (YOLO layout: images/ + labels/).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Experiment folder.")
@click.option("--n-train", type=click.IntRange(min=8), default=None, help="Synthetic training images.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="YOLO epochs on the synthetic images (default 30: a fixed number, so the same command trains the "
                   "same model on any machine; ~75 min in all on a 2-core CPU with one thread).")
@click.option("--time-budget", "--budget", "time_budget", type=click.FloatRange(min=1), default=None, metavar="MIN",
              help="Optional wall-clock cap of the whole run in minutes (off by default): training stops early and "
                   "LoG tuning and the noise study are trimmed to fit, so the epochs run depend on the machine load.")
@click.option("--match/--no-match", default=True, show_default=True,
              help="Fit the synthetic look (background, texture, noise, blur, contrast) to the real images "
                   "(pixels only, no labels).")
@click.option("--preset", default=None, help="TEM preset as the base look (see simgen simulate tem --help).")
@click.option("--scale", type=click.Choice(["broad", "match", "preset"]), default=None,
              help="Synthetic defect sizes: broad (default; 5-45 px, one model for all magnifications), "
                   "match (estimated from the real pixels) or preset (the --preset's sizes).")
@click.option("--box-margin", type=click.FloatRange(min=0), default=None,
              help="Pixels added around the tight synthetic boxes (default 1).")
@click.option("--diameter-px", type=(click.FloatRange(min=1), click.FloatRange(min=1)), default=None,
              metavar="LO HI",
              help="Defect sizes to find (box side in px at the real images' scale; default 5 45): the broad scale "
                   "policy puts the 5th and 95th percentiles of the synthetic boxes there. Say so when you count "
                   "only loops above a size (README: ti_anneal's annotators left most dark spots under 12 px out).")
@click.option("--spec", default=None, help="Augmentation spec applied to the synthetic images.")
@click.option("--labels", type=click.Choice(["annotator", "annotator-final", "all"]), default=None,
              help="Which rendered defects carry a label: annotator (visible ones, outline at the visible dark "
                   "extent, look-alike background blobs flattened; the TEM presets' rule), annotator-final (the "
                   "same rule applied once more to the augmented image) or all (every rendered defect, geometric "
                   "outline). Default: the --preset's rule, else all.")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Tune and score the LoG baseline.")
@click.option("--robustness/--no-robustness", default=True, show_default=True,
              help="F1 drop under Poisson, salt-and-pepper and Gaussian noise.")
@click.option("--kfold", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also train YOLO on the real images themselves, K-fold (0 = skip; slow).")
@click.option("--kfold-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of the real-trained k-fold YOLO (default 60).")
@click.option("--few-real", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also fine-tune the synthetic model on N real images per fold (0 = skip; slow).")
@click.option("--adapt", default=None, metavar="LEVERS",
              help="Unsupervised adaptation with the unlabeled real pixels, comma-separated: bn (BatchNorm "
                   "statistics, seconds; lowered F1 on dsva_fecral, see README), self_train (pseudo-labels + "
                   "student, slow), all (both), backgrounds (fine-tuned with new renders on the other folds' "
                   "images, blobs painted over; slow), or none (default). Each is scored on held-out folds of "
                   "images it never adapted to.")
@click.option("--adapt-to", type=click.Path(exists=True, file_okay=False), default=None,
              help="More unlabeled real images to adapt with (e.g. ../shared/realdata/unlabeled/dsva_fecral_video); "
                   "labels are never read from it.")
@click.option("--self-train-rounds", type=click.IntRange(min=1), default=None,
              help="Self-training rounds per fold (default 1; each later round's teacher is the previous student, "
                   "pseudo-labelling at its --student-conf threshold). --resume adds rounds to a finished run.")
@click.option("--self-train-epochs", type=click.IntRange(min=1), default=None,
              help="Student epochs per self-training round (default 5).")
@click.option("--student-conf", type=click.Choice(STUDENT_THRESHOLDS), default=None, help=STUDENT_CONF_HELP)
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False), default=None,
              help="Unlabeled real images (e.g. ../shared/realdata/unlabeled/dsva_fecral_video) to render part of the "
                   "synthetic images on: their defect-like blobs are painted over, the synthetic defects keep exact "
                   "labels. Scored images and near copies of them are left out; labels are never read.")
@click.option("--background-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of synthetic images on a real background (default 0.5).")
@click.option("--synthetic-log/--no-synthetic-log", default=True, show_default=True,
              help="Also score LoG tuned on synthetic images only (a zero-label classical baseline).")
@click.option("--fuse-log/--no-fuse-log", default=False, show_default=True,
              help="Also score YOLO fused with the synthetic-tuned LoG (scores calibrated on synthetic validation, "
                   "equal weights, weighted boxes fusion); writes fusion.json, a detector for `simgen predict`.")
@click.option("--judge/--no-judge", default=True, show_default=True,
              help="Realism judge (simgen realism) on the synthetic training images vs the real pixels before "
                   "training: its AUC goes into the report (0.5 = cannot tell), its own report into realism/. "
                   "About 2-4 min with the full config on one thread.")
@click.option("--config", "preset_cfg", type=click.Choice(["small", "full"]), default="full", show_default=True,
              help="small: a smoke run in about a minute (tests).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default $SIMGEN_THREADS or 1; 2 on an idle 2-core machine is ~1.6x faster).")
@device_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--detector-scale", type=click.FloatRange(0.25, 8), default=None,
              help="Enlarge every image by this factor before the detector sees it, in training and on the real "
                   "images (default 1; 2 lets the stride-8 YOLO head resolve 4-8 px defects, at 4x the compute; "
                   "with --size 128 at the default's compute).")
@click.option("--size", type=click.IntRange(min=32), default=None,
              help="Side of the synthetic images in real-scale px (default 256; a multiple of 32). The YOLO "
                   "tile is size x detector scale.")
@click.option("--resume", is_flag=True, help="Reuse finished steps of an interrupted run in the output folder.")
@restart_option
@progress_option
def sim2real_command(real, output, n_train, epochs, time_budget, match, preset, scale, box_margin, diameter_px, spec,
                     labels, baseline, robustness, kfold, kfold_epochs, few_real, adapt, adapt_to, self_train_rounds,
                     self_train_epochs, student_conf,
                     backgrounds, background_fraction, synthetic_log, fuse_log, judge, preset_cfg, threads, device, seed,
                     detector_scale, size, resume, overwrite, progress):
    """The synthetic-only → real experiment, end to end.

    Generates synthetic TEM images (matched to the real images' look), trains YOLO on
    them only, predicts on the real folder (tiled), scores P/R/F1 at IoU 0.15, AP and
    peak F1, compares with the tuned LoG baseline, measures robustness to noise and
    writes report.md, report.json and figures.  The report also gives the realism
    judge's AUC of the synthetic training images against the real ones (--no-judge: off).

    Training runs a fixed number of epochs (30), so two runs of the same command train
    the same model whatever the machine load: about 2.3-2.45 min per epoch on a 2-core
    CPU with one thread (README, dsva_fecral), so the default run takes about 75 min
    and stays under 90 min. --time-budget MIN caps the wall-clock time instead.

    \b
    Example:
      simgen sim2real --real ../shared/realdata/dev/dsva_fecral -o runs/s2r
    """

    cfg = Sim2RealConfig.preset(preset_cfg).replace(
        **{k: v for k, v in dict(n_train=n_train, epochs=epochs, time_budget_minutes=time_budget, match=match,
                                 tem_preset=preset, scale=scale, box_margin=box_margin, diameter_px=diameter_px,
                                 spec=spec, labels=labels, baseline=baseline, robustness=robustness, kfold=kfold, kfold_epochs=kfold_epochs,
                                 few_real=few_real, threads=threads, device=device, adapt_to=adapt_to,
                                 self_train_rounds=self_train_rounds, self_train_epochs=self_train_epochs,
                                 student_conf=student_conf,
                                 backgrounds=backgrounds,
                                 background_fraction=background_fraction, synthetic_log=synthetic_log, fuse_log=fuse_log,
                                 judge=judge,
                                 adapt=_levers(adapt), seed=seed, detector_scale=detector_scale,
                                 size=size).items()
           if v is not None})
    result = run_sim2real(real, output, cfg, resume=resume, overwrite=overwrite, progress=progress)
    click.echo(result.summary_text)
    click.echo(f"wrote {result.report_md}")


def _levers(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    levers = tuple(s.strip() for s in text.split(",") if s.strip())
    return () if levers == ("none",) else levers


@click.command("sim2real-film")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Experiment folder.")
@click.option("--n-train", type=click.IntRange(min=8), default=None, help="Synthetic training images.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="YOLO epochs (default 30, fixed: the result does not depend on the machine's load).")
@click.option("--time-budget", "--budget", "time_budget", type=click.FloatRange(min=1), default=None, metavar="MIN",
              help="Wall-clock cap of the whole run in minutes (default: none; with a cap the number of epochs "
                   "depends on the machine's load).")
@click.option("--train-spec", default=None, help="Artifacts of the training images (default L-all).")
@click.option("--test-spec", default=None, help="Unseen artifacts of the thermal test films (default H-GB+H-FN+H-RV).")
@click.option("--two-class", is_flag=True, default=None,
              help="Classes plus/minus by sign instead of one class 'defect' (the sign is not identifiable from one "
                   "frame; flips are turned off).")
@click.option("--config", "preset_cfg", type=click.Choice(["small", "full"]), default="full", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default $SIMGEN_THREADS or 1).")
@device_option
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@restart_option
@progress_option
def sim2real_film_command(output, n_train, epochs, time_budget, train_spec, test_spec, two_class, preset_cfg, threads,
                          device, seed, overwrite, progress):
    """Film version of sim2real: YOLO trained on random-defect films only, tested on thermal-model films.

    No real film data exists yet, so the test films come from a different physics model
    (quenched XY dynamics) rendered with artifact settings never used in training.

    \b
    Example:
      simgen sim2real-film -o runs/film
    """

    cfg = FilmExperimentConfig.preset(preset_cfg).replace(
        **{k: v for k, v in dict(n_train=n_train, epochs=epochs, time_budget_minutes=time_budget,
                                 train_spec=train_spec, test_spec=test_spec, threads=threads, device=device,
                                 seed=seed, two_class=two_class).items() if v is not None})
    result = run_film_experiment(output, cfg, overwrite=overwrite, progress=progress)
    click.echo(result.summary_text)
    click.echo(f"wrote {result.output / 'report.md'}")


def register(groups):
    train_group.add_command(train_yolo_command)
    groups["main"].add_command(train_group)
    groups["train"] = train_group
    groups["main"].add_command(predict_command)
    baseline_group.add_command(log_group)
    groups["main"].add_command(baseline_group)
    groups["baseline"] = baseline_group
    groups["main"].add_command(sim2real_command)
    groups["main"].add_command(sim2real_film_command)
