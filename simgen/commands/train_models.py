"""``simgen train maskrcnn`` and ``simgen train deltanet``.

The ``train`` group itself is created by :mod:`simgen.commands.train` (registered
before this module, alphabetically); if it is missing this module creates it.
Prediction for both model types goes through ``simgen predict``, which dispatches on
the checkpoint's ``model_type`` to :func:`simgen.train.maskrcnn.predict.predict_maskrcnn` /
:func:`simgen.train.changedet.predict.predict_deltanet`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import click

from simgen.atomic import atomic_write_text
from simgen.commands._options import overwrite_option, progress_option
from simgen.errors import ParameterError
from simgen.train.changedet.config import get_config as changedet_config
from simgen.train.maskrcnn.config import BACKBONES as MASKRCNN_BACKBONES
from simgen.train.maskrcnn.config import get_config as maskrcnn_config
from simgen.train.maskrcnn.trainer import train_maskrcnn


def _run_options(f):
    for deco in reversed([
        click.option("--data", "data", required=True, type=click.Path(),
                     help="Training data."),
        click.option("--val", "val", type=click.Path(), default=None, help="Validation data (early stopping, best.pt)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: the config's)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images/pairs per step."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate."),
        click.option("--patience", type=click.IntRange(min=0), default=None,
                     help="Early stopping: epochs without improvement (0 = off)."),
        click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default 0)."),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N."),
        click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
                     help="Run folder (last.pt, best.pt, metrics.jsonl, config.json)."),
        click.option("--resume", is_flag=True, help="Continue the run in the output folder from its last.pt."),
        overwrite_option,
        progress_option,
    ]):
        f = deco(f)
    return f


@click.command("maskrcnn")
@_run_options
@click.option("--config", "preset", type=click.Choice(["tiny", "light", "full"]), default="light", show_default=True,
              help="tiny: tests (64² images); light: ResNet-18-FPN for CPU; full: ResNet-50-FPN for GPUs.")
@click.option("--backbone", type=click.Choice(MASKRCNN_BACKBONES), default=None, help="Override the config's backbone.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None, help="Default adamw.")
@click.option("--monitor", type=click.Choice(["val_loss", "val_f1"]), default=None,
              help="Early stopping / best.pt criterion (default val_loss).")
@click.option("--anchors", default=None, help="Anchor sizes in px per pyramid level, e.g. 8,16,32,64,128.")
@click.option("--normalize", type=click.Choice(["percentile", "minmax", "none"]), default=None,
              help="Per-image contrast stretch in training and prediction (default percentile).")
@click.option("--crop", type=click.IntRange(min=0), default=None,
              help="Train on random crops of this side from larger images (0 = whole images).")
@click.option("--no-augment", is_flag=True, help="No random flips/rotations.")
def maskrcnn_command(data, val, epochs, batch_size, lr, patience, seed, device, output, resume, overwrite, progress,
                     preset, backbone, optimizer, monitor, anchors, normalize, crop, no_augment):
    """Train a Mask R-CNN (torchvision, from scratch, native resolution) on instance masks.

    DATA/--val: simgen HDF5 with /labels/masks (simgen simulate tem), a sharded
    manifest, or a YOLO folder with masks/ (real data).

    \b
    Examples:
      simgen train maskrcnn --data tem_train.h5 --val tem_val.h5 --epochs 30 -o runs/mrcnn
      simgen train maskrcnn --data tem_train.h5 --config full --device cuda -o runs/mrcnn_full
      simgen predict runs/mrcnn/best.pt images/ -o pred.h5
    """

    anchor_sizes = None
    if anchors:
        try:
            anchor_sizes = tuple(int(a) for a in anchors.replace(" ", "").split(","))
        except ValueError:
            raise ParameterError(f"--anchors must be comma-separated integers, got {anchors!r}") from None
    cfg = maskrcnn_config(preset, backbone=backbone, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                          optimizer=optimizer, monitor=monitor, anchor_sizes=anchor_sizes, normalize=normalize,
                          crop=crop, augment=False if no_augment else None)
    res = train_maskrcnn(data, output, val=val, config=cfg, epochs=epochs, resume=resume, overwrite=overwrite,
                         device=device, progress=progress, log=True)
    _report(res)


@click.command("deltanet")
@_run_options
@click.option("--config", "preset", type=click.Choice(["tiny", "light", "full", "study"]), default="full",
              show_default=True,
              help="tiny: 64² crops, 8 channels (tests); light: 128², 16 channels, batch 8 (CPU); "
                   "full: 256², 32 channels, batch 16 (GPU); study: MultiTaskDeltaNet's recipe (mtdn, "
                   "lr 9.5e-4 with linear decay, batch 16, 256², blur/brightness).")
@click.option("--arch", type=click.Choice(["siamese", "unet", "mtdn"]), default=None,
              help="siamese (default): shared encoder + fusion; unet: baseline on stacked frames; mtdn: one "
                   "U-Net shared by both frames, final features concatenated, one head per task (the study's). "
                   "The single-frame U-Net baseline trains inside simgen changedet study.")
@click.option("--crop", type=click.IntRange(min=0), default=None, help="Training crop side (0 = whole frames).")
@click.option("--gamma", type=click.FloatRange(min=0), default=None, help="Focal-loss gamma (default 2).")
@click.option("--monitor", type=click.Choice(["val_loss", "val_dice"]), default=None,
              help="Early stopping / best.pt criterion (default val_loss).")
@click.option("--alpha", default=None,
              help="Focal class weights: auto (from class frequencies, default), none, or 4 numbers a,b,c,d.")
@click.option("--normalize", type=click.Choice(["percentile", "minmax", "none"]), default=None,
              help="Contrast stretch shared by the two frames of a pair (default percentile).")
@click.option("--steps-per-epoch", type=click.IntRange(min=0), default=None, help="Batches per epoch (0 = one pass).")
def deltanet_command(data, val, epochs, batch_size, lr, patience, seed, device, output, resume, overwrite, progress,
                     preset, arch, crop, gamma, monitor, alpha, normalize, steps_per_epoch):
    """Train the two-head change detector (A1 filament, A2 hollow core) on filament pairs.

    DATA/--val: pair files from simgen simulate filament. With --val, the per-class
    Dice/IoU of every fusion (forward, backward, consecutive, ensemble) of best.pt is
    written to val_scores.csv in the run folder.

    \b
    Examples:
      simgen train deltanet --data pairs_train.h5 --val pairs_val.h5 --epochs 100 -o runs/delta
      simgen train deltanet --data pairs_train.h5 --val pairs_val.h5 --arch unet -o runs/unet
      simgen train deltanet --data fil_all.h5 --val fil_val.h5 --config study -o runs/mtdn
      simgen predict runs/delta/best.pt pairs_test.h5 -o change_pred.h5
    """
    # the change detector's modules import torch (its networks are nn.Module subclasses): keep `--help` fast
    from simgen.train.changedet.predict import evaluate_deltanet
    from simgen.train.changedet.trainer import train_deltanet

    overrides = {}
    if alpha is not None:
        text = alpha.strip().lower()
        if text == "none":
            overrides["alpha"] = None
        elif text == "auto":
            overrides["alpha"] = "auto"
        else:
            try:
                overrides["alpha"] = tuple(float(v) for v in text.split(","))
            except ValueError:
                raise ParameterError(f"--alpha must be auto, none or 4 comma-separated numbers, got {alpha!r}") from None
    cfg = changedet_config(preset, arch=arch, batch_size=batch_size, lr=lr, patience=patience, seed=seed, crop=crop,
                           gamma=gamma, monitor=monitor, steps_per_epoch=steps_per_epoch, normalize=normalize)
    if overrides:
        cfg = replace(cfg, **overrides).validate()
    res = train_deltanet(data, output, val=val, config=cfg, epochs=epochs, resume=resume, overwrite=overwrite,
                         device=device, progress=progress, log=True)
    _report(res)
    if val is not None and res["epochs_run"] > 0:
        scores = evaluate_deltanet(res["best_checkpoint"], val, device=device)
        atomic_write_text(Path(output) / "val_scores.csv", scores.to_csv(index=False), overwrite=True)
        change = scores[scores["class"] > 0].groupby(["fusion", "target"])["dice"].mean().unstack()
        for fusion, row in change.iterrows():
            click.echo(f"val mean change Dice [{fusion}]: " + "  ".join(f"{t} {v:.3f}" for t, v in row.items()))


def _report(res: dict) -> None:
    best = res["best"]
    value = best.get(res["monitor"])
    shown = "n/a" if value is None or math.isnan(value) else f"{value:.4g}"
    stop = " (stopped early)" if res["stopped_early"] else ""
    click.echo(f"{res['epochs_run']} epoch(s) run{stop}; best {res['monitor']} {shown} at epoch {best['epoch'] + 1}; "
               f"wrote {res['best_checkpoint']}")


def _train_group(groups):
    group = groups.get("train")
    if group is None:  # simgen.commands.train normally creates it
        @groups["main"].group("train", context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100})
        def train():
            """Train detectors and change detectors on simgen data."""

        group = groups["train"] = train
    return group


def register(groups):
    group = _train_group(groups)
    group.add_command(maskrcnn_command)
    group.add_command(deltanet_command)
