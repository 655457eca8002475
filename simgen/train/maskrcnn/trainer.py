"""Train Mask R-CNN from scratch on simgen data with the shared engine (resumable, early stopping)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from simgen.errors import DataError
from simgen.evaluate.detection import detection_counts
from simgen.rng import sample_rng
from simgen.runtime import seed_everything, select_device, setup_threads
from simgen.train.engine import fit_batches, open_run, resumed_config
from simgen.train.maskrcnn.config import MODEL_TYPE, MaskRCNNConfig, get_config
from simgen.train.maskrcnn.data import _check_classes, _mask_boxes, _Samples, open_instances
from simgen.train.maskrcnn.model import build_maskrcnn, freeze_batchnorm
from simgen.train.maskrcnn.predict import predict_raw

__all__ = [
    "train_maskrcnn",
]


def _val_metrics(model, samples: _Samples, cfg: MaskRCNNConfig, device) -> dict:
    """Validation loss (train-mode forward, no gradient, fixed RNG) and detection F1."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model.train()
        freeze_batchnorm(model)
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(samples), cfg.batch_size):
                batch = [samples.item(k, cfg, None, device) for k in range(start, min(start + cfg.batch_size, len(samples)))]
                losses = model([b[0] for b in batch], [b[1] for b in batch])
                total += float(sum(losses.values())) * len(batch)
                count += len(batch)
    f1 = _f1(model, samples, cfg, device)
    return {"val_loss": total / max(count, 1), "val_f1": f1}


def _f1(model, samples: _Samples, cfg: MaskRCNNConfig, device) -> float:
    """Detection F1 of the boxes at ``val_conf`` against the instances' boxes (IoU ``val_iou``)."""
    import pandas as pd

    preds, gts = [], []
    for k in range(len(samples)):
        out = predict_raw(model, samples.images[k].astype(np.float32), device)
        keep = out["scores"] >= cfg.val_conf
        preds.append(pd.DataFrame({"sample": k, "x0": out["boxes"][keep, 0], "y0": out["boxes"][keep, 1],
                                   "x1": out["boxes"][keep, 2], "y1": out["boxes"][keep, 3],
                                   "class": out["labels"][keep] - 1, "score": out["scores"][keep]}))
        m = samples.masks[k]
        ids = np.unique(m[m > 0])
        b = _mask_boxes(m, ids)
        gts.append(pd.DataFrame({"sample": k, "x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3],
                                 "class": [samples.classes[k].get(int(i), 0) for i in ids]}))
    pred = pd.concat(preds, ignore_index=True).astype({"sample": np.int64, "class": np.int64})
    gt = pd.concat(gts, ignore_index=True).astype({"sample": np.int64, "class": np.int64})
    return float(detection_counts(pred, gt, conf=cfg.val_conf, threshold=cfg.val_iou)["f1"])


def _read_data(train, val, cfg: MaskRCNNConfig) -> tuple[list, _Samples, _Samples | None]:
    """Class names and the training / validation samples, as ``cfg`` selects and normalises them."""
    with open_instances(train) as src:
        val_src = open_instances(val) if val is not None else None
        try:
            class_names = _check_classes(src.class_names, val_src.class_names if val_src else None)
            train_set = _Samples(src, cfg, len(class_names), select_empty=True)
            val_set = _Samples(val_src, cfg, len(class_names), select_empty=False) if val_src else None
        finally:
            if val_src is not None:
                val_src.close()
    if len(train_set) == 0:
        raise DataError(f"{train} holds no image with an instance of >= {cfg.min_instance_area} px")
    return class_names, train_set, val_set


def train_maskrcnn(
    train,
    out_dir,
    *,
    val=None,
    config: MaskRCNNConfig | str = "light",
    epochs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    log: bool = False,
    stop_after: int | None = None,
) -> dict:
    """Train a Mask R-CNN from scratch with :func:`simgen.train.engine.fit` into the run folder ``out_dir``.

    Parameters
    ----------
    train, val : path-like
        simgen HDF5 file with ``/labels/masks`` or YOLO folder with ``masks/``.
    out_dir : path-like
        Run folder: ``last.pt`` written atomically after every epoch (model, optimizer,
        scheduler, RNG and early-stopping state, history), ``best.pt`` whenever the monitored
        metric improves, ``metrics.jsonl`` and ``config.json``.
    config : MaskRCNNConfig or preset name ("tiny", "light", "full")
    epochs : int, optional
        Overrides ``config.epochs`` (also when resuming: lets a finished run continue).
    resume : bool
        Continue from ``out_dir/last.pt`` (same data order and RNG state as an
        uninterrupted run).  The stored config is used.
    overwrite : bool
        Start afresh in a run directory that already holds checkpoints.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    progress : bool
        Progress bar over batches on stderr.
    log : bool
        Print one line per epoch on stderr (``metrics.jsonl`` is written regardless).
    stop_after : int, optional
        Stop after this many epochs of *this call* (simulates a kill in tests).

    Returns
    -------
    dict: :meth:`simgen.train.engine.FitResult.to_dict` (``best``, ``monitor``, ``epochs_run``,
    ``stopped_early``, ``history``, paths) plus ``n_train``, the number of training images.
    """
    import torch

    cfg = get_config(config) if isinstance(config, str) else config.validate()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs).validate()
    dev = select_device(device)
    # read (and thereby validate) the data before the run folder is touched
    class_names, train_set, val_set = _read_data(train, val, cfg)
    run, state = open_run(out_dir, model_type=MODEL_TYPE, resume=resume, overwrite=overwrite)
    if state is not None:
        fresh, cfg = cfg, resumed_config(state, cfg, epochs)
        if replace(cfg, epochs=fresh.epochs) != fresh:  # the run's own settings decide which samples it sees
            class_names, train_set, val_set = _read_data(train, val, cfg)
        if state.get("class_names") != class_names:
            raise DataError(f"classes of {train} {class_names} differ from the checkpoint's {state.get('class_names')}")
    run.write_json("config.json", {"model_type": MODEL_TYPE, "config": cfg.to_dict(), "class_names": class_names,
                                   "train": str(train), "val": None if val is None else str(val)})

    setup_threads()
    seed_everything(cfg.seed)
    model = build_maskrcnn(cfg, len(class_names)).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    warm = max(cfg.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))

    def batches(epoch: int) -> list:
        order = sample_rng(cfg.seed, epoch, 1).permutation(len(train_set))
        return [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]

    def batch_loss(b, epoch: int) -> dict:
        items = [train_set.item(int(k), cfg, sample_rng(cfg.seed, epoch, 2, int(k)), dev) for k in b]
        return model([x for x, _ in items], [t for _, t in items])

    has_val = val_set is not None and len(val_set) > 0
    result = fit_batches(
        run, model, opt, sched, batches=batches, batch_loss=batch_loss,
        validate=(lambda: _val_metrics(model, val_set, cfg, dev)) if has_val else None,
        config=cfg, state=state, maximize="val_f1", clip=(params, cfg.grad_clip),
        header={"model_type": MODEL_TYPE, "config": cfg.to_dict(), "class_names": class_names},
        name="maskrcnn",
        message=f"[{cfg.preset}/{cfg.backbone}] on {dev}: {len(train_set)} training images "
                f"({train_set.n_empty_kept} without instances kept, {train_set.n_empty_skipped} skipped), "
                f"{len(val_set) if val_set else 0} validation images, classes {class_names}",
        log=log, progress=progress, stop_after=stop_after,
    )
    return {**result.to_dict(), "n_train": len(train_set)}
