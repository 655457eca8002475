"""Train an Ultralytics YOLO from scratch, offline, resumable; pick its threshold on validation data."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from simgen import __version__
from simgen.atomic import atomic_write_text, fsync_path
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate.detection import evaluate_detections
from simgen.progress import ProgressLog, Timer
from simgen.runtime import seed_everything, setup_threads
from simgen.train.tiling import suppress_nested_boxes
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.config import NESTED_CANDIDATES, PRESETS, YoloConfig, _device_arg, model_yaml
from simgen.train.yolo.data import Input, as_inputs, describe_input, prepare_yolo_data
from simgen.train.yolo.offline import import_ultralytics
from simgen.train.yolo.predict import YoloDetector

__all__ = [
    "train_yolo",
    "select_threshold",
]


# -- training ---------------------------------------------------------------------------------
def _atomic_trainer_class():
    """DetectionTrainer whose checkpoints are written atomically (temp file + rename)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class AtomicDetectionTrainer(DetectionTrainer):
        def save_model(self):
            final_last, final_best = self.last, self.best
            tmp_last = final_last.with_name(f".{final_last.name}.{os.getpid()}.tmp")
            tmp_best = final_best.with_name(f".{final_best.name}.{os.getpid()}.tmp")
            self.last, self.best = tmp_last, tmp_best
            try:
                result = super().save_model()
            finally:
                self.last, self.best = final_last, final_best

            for tmp, final in ((tmp_last, final_last), (tmp_best, final_best)):
                if tmp.exists():
                    fsync_path(tmp)
                    os.replace(tmp, final)
            return result

    return AtomicDetectionTrainer




def train_yolo(train: Input | list[Input], output, *, val: Input | list[Input] | None = None,
               config: YoloConfig | None = None, weights=None, resume: bool = False, overwrite: bool = False,
               progress: bool = True, cache_dir=None, threads: int | None = None, train_names=None,
               val_names=None, select_conf: bool = True) -> Path:
    """Train a YOLO detector on simgen data; returns the path of ``<output>/best.pt``.

    Parameters
    ----------
    train, val : path, Source or list of them
        HDF5 datasets, sharded sets and/or YOLO folders, as paths or sources the caller
        opened with :func:`~simgen.datasets.sources.open_source` (left open; see
        :func:`prepare_yolo_data`).
    output : path
        Run folder.  Holds ``best.pt`` (standard Ultralytics checkpoint + simgen settings),
        ``simgen.json``, ``metrics.jsonl`` and Ultralytics' own run in ``ultralytics/``.
    config : YoloConfig
        Settings (default: ``PRESETS["full"]``).
    weights : path, optional
        Start from these trained weights (a local ``.pt``, e.g. a synthetic-only model to
        fine-tune on a few real images) instead of random initialisation.
    resume : bool
        Continue an interrupted run from ``ultralytics/weights/last.pt``.
    overwrite : bool
        Start afresh in a folder holding a finished or interrupted run.
    select_conf : bool
        Pick the confidence threshold with the best F1 (IoU 0.15) on the validation tiles
        and store it in the checkpoint (``simgen.conf_f1``).
    """
    config = (config or PRESETS["full"]).validate()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a run folder")
    ul_dir = out / "ultralytics"
    last = ul_dir / "weights" / "last.pt"
    has_run = (out / "best.pt").exists() or ul_dir.exists()
    if resume and not last.exists():
        raise ParameterError(f"nothing to resume in {out} (no {last})")
    if has_run and not (resume or overwrite):
        raise ParameterError(f"run folder {out} holds a run; pass --resume to continue it or --overwrite")
    if weights is not None and not Path(weights).is_file():
        raise ParameterError(f"weights {weights} do not exist")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        shutil.rmtree(ul_dir, ignore_errors=True)
        for name in ("best.pt", "simgen.json", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)

    log = ProgressLog(out / "metrics.jsonl", total_epochs=config.epochs, enabled=progress, prefix="[yolo] ")
    threads = setup_threads(threads)
    seed_everything(config.seed)
    data_yaml = prepare_yolo_data(train, val, config=config, cache_dir=cache_dir, train_names=train_names,
                                  val_names=val_names, progress=log)


    ultralytics = import_ultralytics()
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = threads
    warnings.filterwarnings("ignore", message="The image is already gray")
    if resume:
        model = ultralytics.YOLO(str(last))
    elif weights is not None:
        model = ultralytics.YOLO(str(weights))
    else:
        model = ultralytics.YOLO(model_yaml(config.model))

    state = {"stopped": False}  # set once the last training epoch was logged

    def on_fit_epoch_end(trainer):
        m = {k.split("/")[-1].replace("(B)", ""): float(v) for k, v in (trainer.metrics or {}).items()}
        if state["stopped"]:  # Ultralytics' final validation of best.pt (after the last epoch)
            log.message(f"best.pt on validation: P {m.get('precision', float('nan')):.3f}  "
                        f"R {m.get('recall', float('nan')):.3f}  mAP50 {m.get('mAP50', float('nan')):.3f}")
            return
        losses = {}
        if getattr(trainer, "tloss", None) is not None:
            items = trainer.label_loss_items(trainer.tloss, prefix="train")
            losses = {k.split("/")[-1]: float(v) for k, v in items.items()} if isinstance(items, dict) else {}
        state["stopped"] = bool(getattr(trainer, "stop", False))
        log.epoch(trainer.epoch, **losses, P=m.get("precision", float("nan")), R=m.get("recall", float("nan")),
                  mAP50=m.get("mAP50", float("nan")))

    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    args = dict(
        data=str(data_yaml), epochs=config.epochs, imgsz=config.imgsz, batch=config.batch,
        workers=config.workers, device=_device_arg(config.device), amp=False, plots=False,
        # pretrained=True only re-uses the weights already loaded from the local --weights file (no download);
        # with pretrained=False Ultralytics would re-initialise them
        pretrained=weights is not None,
        project=str(out.resolve()), name="ultralytics", exist_ok=True, seed=config.seed,
        patience=config.patience or 10**6,
        max_det=config.max_det, optimizer=config.optimizer, lr0=config.lr0, mosaic=config.mosaic,
        close_mosaic=config.close_mosaic, fliplr=config.fliplr, flipud=config.flipud, degrees=config.degrees,
        translate=config.translate, scale=config.scale_aug, hsv_h=0.0, hsv_s=0.0, hsv_v=config.hsv_v,
        cache="ram" if config.cache_images else False, verbose=False, val=True, save=True,
        nbs=config.nbs or config.batch, warmup_epochs=config.warmup_epochs,
        save_period=config.save_period or -1,
    )
    if config.hours > 0:
        args["time"] = float(config.hours)
    if resume:
        args = {"resume": True, "workers": config.workers, "device": args["device"]}
    log.message(f"training {config.model} on {data_yaml.parent.name} for {config.epochs} epochs "
                f"(imgsz {config.imgsz}, batch {config.batch}, device {args['device']}, {threads} thread(s))")
    with Timer() as t:
        model.train(trainer=_atomic_trainer_class(), **args)
    best_ul = ul_dir / "weights" / "best.pt"
    if not best_ul.exists():
        best_ul = last
    meta = {
        "simgen_version": _version(),
        "config": config.to_dict(),
        "tile": config.tile, "overlap": config.overlap, "imgsz": config.imgsz, "normalize": config.normalize,
        "scale": config.scale, "min_box": config.min_box, "iou": config.iou, "max_det": config.max_det,
        "train": [describe_input(p) for p in as_inputs(train)],
        "val": [describe_input(p) for p in as_inputs(val)],
        "data_yaml": str(data_yaml), "train_seconds": round(t.seconds, 1), "threads": threads,
        "conf_f1": 0.25,
    }
    ckpt = load_yolo_checkpoint(best_ul)
    ckpt["simgen"] = meta
    best = save_yolo_checkpoint(out / "best.pt", ckpt)
    if select_conf:
        conf, f1, nested, tta = _select_conf(best, data_yaml, config)
        meta.update(conf_f1=conf, val_f1=f1, nested=nested, tta=tta)
        ckpt["simgen"] = meta
        save_yolo_checkpoint(best, ckpt)
        log.message(f"validation: best F1@IoU0.15 {f1:.3f} at confidence {conf:.3f}"
                    + ("" if nested is None else f", nested boxes (IoMin >= {nested:g}) suppressed")
                    + (", flip test-time augmentation" if tta else ""))

    atomic_write_text(out / "simgen.json", json.dumps(meta, indent=2, default=str) + "\n", overwrite=True)
    log.message(f"done in {t.seconds:.0f}s: {best}")
    return best


def _version() -> str:
    return __version__


def _select_conf(weights: Path, data_yaml: Path, config: YoloConfig) -> tuple[float, float, float | None, bool]:
    """:func:`select_threshold` on the validation tiles of ``data_yaml`` (at most 400)."""
    import yaml

    data = yaml.safe_load(Path(data_yaml).read_text())
    tiles = [f.stem for f in sorted((Path(data["path"]) / data["val"]).glob("*.png"))[:400]]
    if not tiles:
        return (0.25, float("nan"), None if config.nested == "auto" else config.nested,
                config.tta is True)
    preds = {}
    for tta in ((False, True) if config.tta == "auto" else (bool(config.tta),)):
        det = YoloDetector(weights, device=config.device, normalize="none", tile=0, scale=1.0, nested=None, tta=tta)
        with open_source(Path(data["path"]), names=tiles) as src:  # the export is a YOLO folder
            preds[tta] = det.predict(src)
            gts = src.read_table()
    return select_threshold(preds, gts, n_frames=len(tiles), nested=config.nested)


def select_threshold(preds, gts, *, n_frames: int, nested: str | float | None = "auto"
                     ) -> tuple[float, float, float | None, bool]:
    """Confidence threshold, nested-box suppression and test-time augmentation with the best peak F1
    at IoU 0.15.

    Parameters
    ----------
    preds : DataFrame or dict {bool: DataFrame}
        Raw predictions (no nested suppression) of the *validation* images (synthetic ones in
        simgen's experiments: never real labels), with a ``sample`` column; a dict holds them
        without (``False``) and with (``True``) flip test-time augmentation.
    gts : DataFrame
        Their ground truth.
    n_frames : int
        Number of validation images.
    nested : "auto", float or None
        ``"auto"``: try every value of :data:`NESTED_CANDIDATES`; a float or ``None``: that one.

    Every combination is scored on the same images; one other than the first (no augmentation,
    no suppression) is kept only when it raises the peak F1.

    Returns
    -------
    (conf, peak F1, nested, tta)
    """
    by_tta = preds if isinstance(preds, dict) else {False: preds}
    candidates = NESTED_CANDIDATES if nested == "auto" else (nested,)
    best: tuple[float, float, float | None, bool] | None = None
    for tta in sorted(by_tta):
        for value in candidates:
            kept = suppress_nested_boxes(by_tta[tta], value, agnostic=False)
            res = evaluate_detections(kept, gts, threshold=0.15, conf=0.25, n_frames=n_frames)
            conf, f1 = float(res.summary["peak_f1_threshold"]), float(res.summary["peak_f1"])
            if not np.isfinite(conf) or conf <= 0:
                conf = 0.25
            if best is None or (np.isfinite(f1) and not f1 <= best[1]):
                best = (conf, f1, value, bool(tta))
    assert best is not None
    return best

