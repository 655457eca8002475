"""Train the change detector from scratch (resumable, early stopping on validation change Dice)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import confusion_matrix, scores_from_confusion
from simgen.progress import ProgressLog, track
from simgen.rng import sample_rng
from simgen.runtime import RunDir, seed_everything, select_device, setup_threads
from simgen.train.changedet.config import (
    APPEARING,
    CHANGE_CLASSES,
    DISAPPEARING,
    MODEL_TYPE,
    OVERLAPPING,
    DeltaNetConfig,
    get_config,
)
from simgen.train.changedet.data import _PairSamples, class_weights, normalize_pair, open_pairs
from simgen.train.changedet.model import build_deltanet, focal_loss
from simgen.train.changedet.predict import _forward_padded
from simgen.train.engine import _fit_epochs

__all__ = [
    "train_deltanet",
]


def _loss(out: dict, y: dict, cfg: DeltaNetConfig, alpha=None):
    return sum(focal_loss(out[t], y[t], cfg.gamma, alpha) for t in y)


def _mean_change_dice(cms: dict) -> float:
    """Mean Dice of appearing, disappearing and overlapping over all targets (NaN classes skipped)."""

    vals = []
    for cm in cms.values():
        d = scores_from_confusion(cm)["dice"].to_numpy()
        vals.extend(float(d[c]) for c in (APPEARING, DISAPPEARING, OVERLAPPING) if np.isfinite(d[c]))
    return float(np.mean(vals)) if vals else float("nan")


def _validate(model, val: _PairSamples, cfg: DeltaNetConfig, device, alpha=None) -> dict:
    """Validation loss and mean change-class Dice (forward predictions on whole frames)."""

    model.eval()
    total = 0.0
    n = len(CHANGE_CLASSES)
    cms = {t: np.zeros((n, n), np.int64) for t in val.targets}
    with torch.no_grad():
        for k in range(len(val)):
            a, b = normalize_pair(*val.pair(k), cfg.normalize)
            logits = _forward_padded(model, a, b, cfg.depth, device)
            y = {t: torch.from_numpy(val.maps[k][t].astype(np.int64))[None].to(device) for t in val.targets}
            total += float(_loss({t: logits[t] for t in val.targets}, y, cfg, alpha))
            for t in val.targets:
                cms[t] += confusion_matrix(logits[t][0].argmax(0).cpu().numpy(), val.maps[k][t], n)
    return {"val_loss": total / max(len(val), 1), "val_dice": _mean_change_dice(cms)}


def train_deltanet(
    train,
    out_dir,
    *,
    val=None,
    config: DeltaNetConfig | str = "full",
    epochs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    log: bool = False,
    stop_after: int | None = None,
) -> dict:
    """Train a change detector (Siamese U-Net or baseline U-Net) on filament pairs.

    Parameters
    ----------
    train, val : path-like
        Filament pair files (see :func:`open_pairs`).
    out_dir : path-like
        Run folder: ``last.pt`` every epoch (model, optimizer, RNG, early stopping),
        ``best.pt`` when the monitored value improves, ``metrics.jsonl``, ``config.json``.
    config : DeltaNetConfig or preset name ("tiny", "light", "full")
    epochs : int, optional
        Overrides ``config.epochs`` (also when resuming).
    resume, overwrite : bool
        Continue the run in ``out_dir`` / start afresh there.
    device : {"auto", "cpu", "cuda", ...}
    progress : bool
        Progress bar over batches.
    log : bool
        One line per epoch on stderr.
    stop_after : int, optional
        Stop after this many epochs of this call (tests simulate a kill with it).

    Returns
    -------
    dict with ``best``, ``monitor``, ``epochs_run``, ``stopped_early``, ``history``, paths.
    """
    cfg = get_config(config) if isinstance(config, str) else config.validate()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs).validate()
    dev = select_device(device)
    with open_pairs(train) as src:
        train_set = _PairSamples(src, cfg.crop, cfg.depth, train=True)
    val_set = None
    if val is not None:
        with open_pairs(val) as vsrc:
            if vsrc.targets != train_set.targets:
                raise DataError(f"validation targets {vsrc.targets} differ from training targets {train_set.targets}")
            val_set = _PairSamples(vsrc, cfg.crop, cfg.depth, train=False)
    run = RunDir(out_dir, resume=resume, overwrite=overwrite)
    state = run.resume_state()
    if state is not None:
        if state.get("model_type") != MODEL_TYPE:
            raise ParameterError(f"{run.last} is a {state.get('model_type')!r} checkpoint, not {MODEL_TYPE!r}")
        stored = DeltaNetConfig.from_dict(state["config"])
        cfg = replace(stored, epochs=cfg.epochs if epochs is not None else stored.epochs).validate()
        if tuple(state.get("targets", ())) != train_set.targets:
            raise DataError(f"targets of {train} {train_set.targets} differ from the checkpoint's {state.get('targets')}")
    run.write_json("config.json", {"model_type": MODEL_TYPE, "config": cfg.to_dict(), "targets": list(train_set.targets),
                                   "train": str(train), "val": None if val is None else str(val)})

    if cfg.alpha == "auto":
        alpha = class_weights(m for mp in train_set.maps for m in mp.values())
    else:
        alpha = None if cfg.alpha is None else tuple(float(a) for a in cfg.alpha)
    setup_threads()
    seed_everything(cfg.seed)
    model = build_deltanet(cfg, train_set.targets).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # constant; kept for a uniform checkpoint

    def train_epoch(epoch: int) -> dict:
        model.train()
        n = len(train_set)
        rng = sample_rng(cfg.seed, epoch, 1)
        if cfg.steps_per_epoch:
            order = np.concatenate([rng.permutation(n) for _ in range(-(-cfg.steps_per_epoch * cfg.batch_size // n))])
            order = order[: cfg.steps_per_epoch * cfg.batch_size]
        else:
            order = rng.permutation(n)
        batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        total, seen = 0.0, 0
        for b in track(batches, description=f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress):
            a, bb, y = train_set.batch(b, cfg, epoch, dev)
            loss = _loss(model(a, bb), y, cfg, alpha)
            if not torch.isfinite(loss):
                raise DataError(f"training diverged (loss {float(loss)}) in epoch {epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
        row = {"loss": total / seen}
        if val_set is not None:
            row.update(_validate(model, val_set, cfg, dev, alpha))
        return row

    monitor = cfg.monitor if val_set is not None else "loss"
    logger = ProgressLog(run.path / "metrics.jsonl", total_epochs=cfg.epochs, enabled=log, prefix="deltanet ")
    logger.message(f"[{cfg.preset}/{cfg.arch}] on {dev}: {len(train_set)} training pairs, "
                   f"{len(val_set) if val_set else 0} validation pairs, targets {list(train_set.targets)}; "
                   f"focal gamma {cfg.gamma:g}, class weights {alpha}; monitoring {monitor}")

    result = _fit_epochs(
        run, model, opt, sched, train_epoch, state=state, epochs=cfg.epochs, monitor=monitor,
        mode="max" if monitor == "val_dice" else "min", patience=cfg.patience, min_delta=cfg.min_delta,
        header={"model_type": MODEL_TYPE, "config": cfg.to_dict(), "targets": list(train_set.targets),
                "alpha": None if alpha is None else list(alpha)},
        logger=logger, stop_after=stop_after,
    )
    result["n_train"] = len(train_set)
    return result



