"""Train the change detector with the shared engine (resumable, early stopping): from scratch or, for
``mtdn``, from a trained single-frame U-Net; constant or linearly decaying learning rate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import confusion_matrix, scores_from_confusion
from simgen.rng import sample_rng
from simgen.runtime import seed_everything, select_device, setup_threads
from simgen.train.changedet.config import (
    APPEARING,
    CHANGE_CLASSES,
    DISAPPEARING,
    MODEL_TYPE,
    OVERLAPPING,
    SEG_MODEL_TYPE,
    DeltaNetConfig,
    get_config,
)
from simgen.train.changedet.data import _PairSamples, class_weights, normalize_pair, open_pairs
from simgen.train.changedet.model import build_deltanet, focal_loss, forward_padded, init_from_segmenter
from simgen.train.engine import fit_batches, load_trained, open_run, resumed_config

__all__ = [
    "batches_per_epoch",
    "epoch_order",
    "make_scheduler",
    "read_init",
    "train_deltanet",
]


def batches_per_epoch(n: int, cfg: DeltaNetConfig) -> int:
    """Optimiser steps per epoch: ``steps_per_epoch``, or one pass over ``n`` samples."""
    return cfg.steps_per_epoch or -(-n // cfg.batch_size)


def make_scheduler(opt, cfg: DeltaNetConfig, steps_per_epoch: int):
    """``None`` (constant rate) or a per-step ``LambdaLR`` decaying linearly from ``lr`` to 0 over
    ``cfg.epochs x steps_per_epoch`` steps (factor ``1 - step / total``)."""
    import torch

    if cfg.schedule == "constant":
        return None
    total = max(int(cfg.epochs) * int(steps_per_epoch), 1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))


def epoch_order(n: int, cfg: DeltaNetConfig, epoch: int) -> list:
    """The batches (index arrays) of one epoch, drawn from ``sample_rng(seed, epoch, 1)``."""
    rng = sample_rng(cfg.seed, epoch, 1)
    if cfg.steps_per_epoch:
        order = np.concatenate([rng.permutation(n) for _ in range(-(-cfg.steps_per_epoch * cfg.batch_size // n))])
        order = order[: cfg.steps_per_epoch * cfg.batch_size]
    else:
        order = rng.permutation(n)
    return [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]


def read_init(cfg: DeltaNetConfig) -> dict:
    """The weights of the segmentation checkpoint ``cfg.init`` (checked: a ``segunet`` of the same
    width, depth and norm) that initialise an ``mtdn`` model's shared U-Net."""
    state = load_trained(cfg.init, SEG_MODEL_TYPE)
    seg = DeltaNetConfig.from_dict(state["config"])
    if (seg.width, seg.depth, seg.norm) != (cfg.width, cfg.depth, cfg.norm):
        raise ParameterError(f"{cfg.init}: U-Net width/depth/norm {(seg.width, seg.depth, seg.norm)} differ from "
                             f"{(cfg.width, cfg.depth, cfg.norm)}")
    return state["state_dict"]


def _loss(out: dict, y: dict, cfg: DeltaNetConfig, alpha=None):
    """Focal loss summed over the targets."""
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
    import torch

    model.eval()
    total = 0.0
    n = len(CHANGE_CLASSES)
    cms = {t: np.zeros((n, n), np.int64) for t in val.targets}
    with torch.no_grad():
        for k in range(len(val)):
            a, b = normalize_pair(*val.pair(k), cfg.normalize)
            logits = forward_padded(model, a, b, cfg.depth, device)
            y = {t: torch.from_numpy(val.maps[k][t].astype(np.int64))[None].to(device) for t in val.targets}
            total += float(_loss({t: logits[t] for t in val.targets}, y, cfg, alpha))
            for t in val.targets:
                cms[t] += confusion_matrix(logits[t][0].argmax(0).cpu().numpy(), val.maps[k][t], n)
    return {"val_loss": total / max(len(val), 1), "val_dice": _mean_change_dice(cms)}


def _read_data(train, val, cfg: DeltaNetConfig) -> tuple[_PairSamples, _PairSamples | None]:
    """The training and validation pairs, checked against ``cfg`` (crop, depth, tasks)."""
    with open_pairs(train) as src:
        train_set = _PairSamples(src, cfg.crop, cfg.depth, train=True, tasks=cfg.tasks)
    val_set = None
    if val is not None:
        with open_pairs(val) as vsrc:
            if not set(train_set.targets) <= set(vsrc.targets):
                raise DataError(f"validation targets {vsrc.targets} differ from training targets {train_set.targets}")
            val_set = _PairSamples(vsrc, cfg.crop, cfg.depth, train=False, tasks=train_set.targets)
    return train_set, val_set


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
    """Train a change detector (Siamese U-Net or baseline U-Net) on filament pairs with
    :func:`simgen.train.engine.fit`.

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
    dict: :meth:`simgen.train.engine.FitResult.to_dict` (``best``, ``monitor``, ``epochs_run``,
    ``stopped_early``, ``history``, paths) plus ``n_train``, the number of training pairs.
    """
    import torch

    cfg = get_config(config) if isinstance(config, str) else config.validate()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs).validate()
    if cfg.arch == "segunet":
        raise ParameterError("arch 'segunet' segments single frames: train it with train_segmenter")
    dev = select_device(device)
    # read (and thereby validate) the data before the run folder is touched
    train_set, val_set = _read_data(train, val, cfg)
    init_weights = read_init(cfg) if cfg.init else None
    run, state = open_run(out_dir, model_type=MODEL_TYPE, resume=resume, overwrite=overwrite)
    if state is not None:
        fresh, cfg = cfg, resumed_config(state, cfg, epochs)
        if (cfg.crop, cfg.depth, cfg.tasks) != (fresh.crop, fresh.depth, fresh.tasks):  # the run's own settings
            train_set, val_set = _read_data(train, val, cfg)
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
    model = build_deltanet(cfg, train_set.targets)
    if init_weights is not None and state is None:  # a resumed run restores its own weights
        init_from_segmenter(model, init_weights)
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(opt, cfg, batches_per_epoch(len(train_set), cfg))

    def batch_loss(b, epoch: int):
        a, bb, y = train_set.batch(b, cfg, epoch, dev)
        return _loss(model(a, bb), y, cfg, alpha)

    result = fit_batches(
        run, model, opt, scheduler, batches=lambda epoch: epoch_order(len(train_set), cfg, epoch),
        batch_loss=batch_loss,
        validate=(lambda: _validate(model, val_set, cfg, dev, alpha)) if val_set is not None else None,
        config=cfg, state=state, maximize="val_dice",
        header={"model_type": MODEL_TYPE, "config": cfg.to_dict(), "targets": list(train_set.targets),
                "alpha": None if alpha is None else list(alpha)},
        name="deltanet",
        message=f"[{cfg.preset}/{cfg.arch}] on {dev}: {len(train_set)} training pairs, "
                f"{len(val_set) if val_set else 0} validation pairs, targets {list(train_set.targets)}; "
                f"focal gamma {cfg.gamma:g}, class weights {alpha}; lr {cfg.lr:g} {cfg.schedule}"
                f"{'; U-Net from ' + cfg.init if cfg.init else ''}",
        log=log, progress=progress, stop_after=stop_after,
    )
    return {**result.to_dict(), "n_train": len(train_set)}
