"""The single-frame baseline: a U-Net segmenting A1 (filament) and A2 (hollow core) from one frame.

Trained on every frame of a filament pair file with its per-frame masks
(``/filament/a1``, ``/filament/a2``), with the change detector's settings
(:class:`~simgen.train.changedet.config.DeltaNetConfig`, ``arch="segunet"``): the same
focal loss (two classes per task), AdamW, learning-rate schedule, crops and augmentation,
so that a run with the same ``epochs x steps_per_epoch x batch_size`` has the same budget.
Its U-Net can initialise MultiTaskDeltaNet (``DeltaNetConfig.init``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import confusion_matrix, scores_from_confusion
from simgen.runtime import seed_everything, select_device, setup_threads
from simgen.train.changedet.config import SEG_MODEL_TYPE, DeltaNetConfig, get_config
from simgen.train.changedet.data import _FrameSamples, class_weights, normalize_pair, open_pairs
from simgen.train.changedet.model import build_deltanet, focal_loss, segment_padded
from simgen.train.changedet.trainer import batches_per_epoch, epoch_order, make_scheduler
from simgen.train.engine import fit_batches, load_trained, open_run, resumed_config

__all__ = ["train_segmenter", "load_segmenter", "segment_frame"]


def _read_frames(train, val, cfg: DeltaNetConfig):
    with open_pairs(train, require_maps=False) as src:
        train_set = _FrameSamples(src, cfg.crop, cfg.depth, train=True, tasks=cfg.tasks)
    val_set = None
    if val is not None:
        with open_pairs(val, require_maps=False) as vsrc:
            val_set = _FrameSamples(vsrc, cfg.crop, cfg.depth, train=False, tasks=train_set.targets)
    return train_set, val_set


def _validate(model, val: _FrameSamples, cfg: DeltaNetConfig, device, alpha) -> dict:
    """Validation loss and mean foreground Dice over the tasks (whole frames)."""
    import torch

    model.eval()
    total = 0.0
    cms = {t: np.zeros((2, 2), np.int64) for t in val.targets}
    with torch.no_grad():
        for k in range(len(val)):
            x = normalize_pair(val.frame(k), val.frame(k), cfg.normalize)[0]
            logits = segment_padded(model, x, cfg.depth, device)
            y = {t: torch.from_numpy(val.masks[k][t].astype(np.int64))[None].to(device) for t in val.targets}
            total += float(sum(focal_loss(logits[t], y[t], cfg.gamma, alpha) for t in val.targets))
            for t in val.targets:
                cms[t] += confusion_matrix(logits[t][0].argmax(0).cpu().numpy(), val.masks[k][t], 2)
    dice = [float(scores_from_confusion(cm)["dice"][1]) for cm in cms.values()]
    dice = [d for d in dice if np.isfinite(d)]
    return {"val_loss": total / max(len(val), 1), "val_dice": float(np.mean(dice)) if dice else float("nan")}


def train_segmenter(
    train,
    out_dir,
    *,
    val=None,
    config: DeltaNetConfig | str = "study",
    epochs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    log: bool = False,
    stop_after: int | None = None,
) -> dict:
    """Train the single-frame segmentation U-Net on the frames and masks of a filament pair file.

    Parameters are those of :func:`simgen.train.changedet.trainer.train_deltanet`; ``config`` is
    used with ``arch="segunet"`` (its ``init`` is ignored).  ``alpha="auto"`` weights the two
    classes by their frequency in the training masks; ``monitor="val_dice"`` follows the mean
    foreground Dice of the tasks.

    Returns
    -------
    dict: :meth:`simgen.train.engine.FitResult.to_dict` plus ``n_train`` (frames).
    """
    import torch

    cfg = get_config(config) if isinstance(config, str) else config.validate()
    cfg = replace(cfg, arch="segunet", init="", reverse=0.0).validate()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs).validate()
    dev = select_device(device)
    train_set, val_set = _read_frames(train, val, cfg)
    run, state = open_run(out_dir, model_type=SEG_MODEL_TYPE, resume=resume, overwrite=overwrite)
    if state is not None:
        cfg = resumed_config(state, cfg, epochs)
        if tuple(state.get("targets", ())) != train_set.targets:
            raise DataError(f"targets of {train} {train_set.targets} differ from the checkpoint's {state.get('targets')}")
    run.write_json("config.json", {"model_type": SEG_MODEL_TYPE, "config": cfg.to_dict(),
                                   "targets": list(train_set.targets), "train": str(train),
                                   "val": None if val is None else str(val)})
    if cfg.alpha == "auto":
        alpha = class_weights((m for mp in train_set.masks for m in mp.values()), n_classes=2)
    else:
        alpha = None if cfg.alpha is None else tuple(float(a) for a in cfg.alpha)[:2]
    setup_threads()
    seed_everything(cfg.seed)
    model = build_deltanet(cfg, train_set.targets).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(opt, cfg, batches_per_epoch(len(train_set), cfg))

    def batch_loss(b, epoch: int):
        x, y = train_set.batch(b, cfg, epoch, dev)
        out = model(x)
        return sum(focal_loss(out[t], y[t], cfg.gamma, alpha) for t in y)

    result = fit_batches(
        run, model, opt, scheduler, batches=lambda epoch: epoch_order(len(train_set), cfg, epoch),
        batch_loss=batch_loss,
        validate=(lambda: _validate(model, val_set, cfg, dev, alpha)) if val_set is not None else None,
        config=cfg, state=state, maximize="val_dice",
        header={"model_type": SEG_MODEL_TYPE, "config": cfg.to_dict(), "targets": list(train_set.targets),
                "alpha": None if alpha is None else list(alpha)},
        name="segunet",
        message=f"[{cfg.preset}/segunet] on {dev}: {len(train_set)} training frames, "
                f"{len(val_set) if val_set else 0} validation frames, targets {list(train_set.targets)}; "
                f"lr {cfg.lr:g} {cfg.schedule}",
        log=log, progress=progress, stop_after=stop_after,
    )
    return {**result.to_dict(), "n_train": len(train_set)}


def load_segmenter(checkpoint, device: str = "auto"):
    """Rebuild a trained segmentation U-Net: ``(model, config, targets)`` in eval mode."""
    state = load_trained(checkpoint, SEG_MODEL_TYPE)
    cfg = DeltaNetConfig.from_dict(state["config"])
    if cfg.arch != "segunet":
        raise ParameterError(f"{checkpoint} holds a {cfg.arch!r} network, not the segmentation U-Net")
    targets = tuple(state.get("targets") or ("a1", "a2"))
    model = build_deltanet(cfg, targets)
    model.load_state_dict(state["state_dict"])
    model.to(select_device(device)).eval()
    return model, cfg, targets


def segment_frame(model, frame: np.ndarray, cfg: DeltaNetConfig, device=None) -> dict:
    """Foreground probability ``{target: (H, W) float32}`` of one frame (normalised as in training)."""
    import torch

    device = device if device is not None else next(model.parameters()).device
    x = normalize_pair(frame, frame, cfg.normalize)[0]
    model.eval()
    with torch.no_grad():
        logits = segment_padded(model, x, cfg.depth, device)
    return {t: torch.softmax(v[0].float(), 0)[1].cpu().numpy() for t, v in logits.items()}
