"""Lever 1 of unsupervised adaptation (see ``docs/adapt.md``): normalization statistics (AdaBN).

:func:`adapt_batchnorm` re-estimates every BatchNorm layer's running mean and variance on tiles
of the user's unlabeled real images, shown to the network exactly as :class:`YoloDetector` shows
them at prediction time; no weight changes.  The images are opened with
:func:`~simgen.train.yolo.unlabeled.open_unlabeled` (no label is ever read), and the adapted model
keeps the source's synthetic-validation threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simgen.atomic import check_output
from simgen.errors import DataError, ParameterError
from simgen.progress import Timer, track
from simgen.rng import check_seed
from simgen.runtime import select_device, setup_threads
from simgen.train.yolo.adaptation_record import _now, _plain
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.detector_input import _detector_crops, _input_channels, _n_tiles, _network_input
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.unlabeled import _Opened

__all__ = ["adapt_batchnorm"]

#: Seed-stream tags (``SeedSequence(seed, spawn_key=(tag, ...))``), one per random choice; the
#: series 0xAD0... is shared with :mod:`.self_train` (0xAD2, 0xAD3): keep the values distinct.
_TAG_BN_TILES, _TAG_BN_ORDER = 0xAD0, 0xAD1


def adapt_batchnorm(weights, images, output, *, tile: int | None = None, overlap: int | None = None,
                    passes: int = 1, batch: int = 16, max_tiles: int = 1024, weight: float = 1.0, seed: int = 0,
                    exclude: Sequence[str] = (), device: str = "auto", threads: int | None = None,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Re-estimate every BatchNorm layer's running statistics on real tiles (AdaBN); write a new checkpoint.

    The network sees the real images exactly as :class:`YoloDetector` shows them at prediction
    time (same contrast normalization, resize, tiles, letterbox and ``/255``).  All BatchNorm
    layers are reset and put in training mode with ``momentum=None`` (a cumulative average over
    all batches); every other layer stays in evaluation mode and no weight changes (no gradients).

    Parameters
    ----------
    weights : path
        A YOLO checkpoint (``best.pt`` from :func:`train_yolo`, read safely).
    images : path, sequence or UnlabeledImages
        Unlabeled real images (see :class:`UnlabeledImages`; labels are never read).
    output : path
        The new checkpoint (``.pt``).  A standard Ultralytics checkpoint: ``ultralytics.YOLO(output)``
        and :class:`YoloDetector` load it.  It keeps the source's ``simgen`` metadata (including
        ``conf_f1``, the threshold picked on *synthetic* validation) and appends a record of this
        adaptation to ``simgen["adaptation"]``.
    tile, overlap : int, optional
        Tiling of the real images (default: as the detector predicts).
    passes : int
        Passes over the tiles.  The first sees the tiles as the detector does; each further pass
        shuffles the batches anew and flips every tile at random (horizontal/vertical), which
        averages the statistics over the flips training used.
    batch : int
        Tiles per forward pass.  The running variance is the mean of per-batch variances, so
        larger batches (of tiles from different images: batches are shuffled) estimate it better.
    max_tiles : int
        At most this many tiles (a seeded random subset) are used per pass.
    weight : float in (0, 1]
        Share of the real statistics in the result: ``(1 - weight) * synthetic + weight * real``
        (1 = plain AdaBN).
    seed : int
        Seeds the tile subset, the batch order and the flips.
    exclude : sequence of str
        Image names to leave out (e.g. the frames that will be scored).
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda:N``.
    overwrite : bool
        Replace an existing ``output`` (never the input ``weights``).

    Returns
    -------
    Path of the new checkpoint.

    Raises
    ------
    ParameterError
        Bad parameters, ``output`` exists (without ``overwrite``) or is the input.
    DataError
        Unreadable checkpoint or images, or a model without BatchNorm layers (fused).
    """
    import torch

    seed = check_seed(seed)
    if int(passes) < 1 or int(batch) < 1 or int(max_tiles) < 1:
        raise ParameterError("passes, batch and max_tiles must be >= 1")
    if not 0 < float(weight) <= 1:
        raise ParameterError(f"weight must be in (0, 1], got {weight}")
    weights, out = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    if out.exists() and out.resolve() == weights.resolve():
        raise ParameterError(f"output {out} is the input checkpoint; write the adapted model elsewhere")
    check_output(out, overwrite)
    dev = select_device(device)
    threads = setup_threads(threads)

    det = YoloDetector(weights, device="cpu", tile=tile, overlap=overlap, threads=threads)  # settings only
    ckpt = load_yolo_checkpoint(weights)
    key = "ema" if ckpt.get("ema") is not None else "model"
    net = ckpt.get(key)
    if not isinstance(net, torch.nn.Module):
        raise DataError(f"{weights} holds no model")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise DataError(f"{weights} has no BatchNorm layers (a fused model?); nothing to adapt")
    dtype = next(net.parameters()).dtype
    stride = int(max(getattr(net, "stride", torch.tensor([32.0])).max().item(), 32))
    channels = _input_channels(net)

    with _Opened(images, exclude) as src, Timer() as t:
        # every tile the detector would see, then a seeded subset of at most max_tiles
        plan = [(k, j) for k in range(len(src))
                for j in range(_n_tiles(src.shape(k), det.tile, det.overlap, det.scale))]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_BN_TILES,)))
        if len(plan) > max_tiles:
            plan = [plan[i] for i in np.sort(rng.choice(len(plan), int(max_tiles), replace=False))]
        wanted: dict[int, list[int]] = {}
        for k, j in plan:
            wanted.setdefault(k, []).append(j)
        crops = []
        for k in track(sorted(wanted), total=len(wanted), description="read real tiles", enabled=progress):
            all_crops = _detector_crops(det, src.image(k))
            crops += [all_crops[j] for j in wanted[k]]
        source_info = src.describe()

        old = [(m.running_mean.detach().float().clone(), m.running_var.detach().float().clone(), m.momentum)
               for m in bns]
        net.float().to(dev).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch
            m.train()
        order_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_BN_ORDER,)))
        n_batches = 0
        with torch.no_grad():
            for p in range(int(passes)):
                order = order_rng.permutation(len(crops))
                for start in range(0, len(order), int(batch)):
                    chunk = []
                    for i in order[start : start + int(batch)]:
                        c = crops[i]
                        if p > 0:
                            fh, fv = order_rng.integers(0, 2, 2)
                            c = c[:, ::-1] if fh else c
                            c = c[::-1] if fv else c
                        chunk.append(np.ascontiguousarray(c))
                    x = _network_input(chunk, det.predict_imgsz, stride, channels).to(dev)
                    net(x)
                    n_batches += 1
        for m, (mean0, var0, momentum) in zip(bns, old):
            m.eval()
            m.momentum = momentum
            if weight < 1:
                m.running_mean.copy_((1 - weight) * mean0.to(dev) + weight * m.running_mean)
                m.running_var.copy_((1 - weight) * var0.to(dev) + weight * m.running_var)
    net.to("cpu").to(dtype)
    ckpt[key] = net
    meta = dict(ckpt.get("simgen") or {})
    record = {
        "method": "batchnorm", "date": _now(), "source_weights": str(weights.resolve()),
        "images": source_info, "n_tiles": len(crops), "passes": int(passes), "batch": int(batch),
        "n_batches": n_batches, "weight": float(weight), "seed": seed, "layers": len(bns),
        "tile": det.tile, "overlap": det.overlap, "scale": det.scale, "normalize": det.normalize,
        "imgsz": det.predict_imgsz, "seconds": round(t.seconds, 2),
        "threshold": "conf_f1 kept from the source model's synthetic validation",
    }
    meta["adaptation"] = [*meta.get("adaptation", []), record]
    ckpt["simgen"] = _plain(meta)
    return save_yolo_checkpoint(out, ckpt)
