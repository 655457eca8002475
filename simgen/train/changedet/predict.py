"""Change maps of frame pairs, segmentation recovered by fusion, and evaluation of a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simgen.atomic import check_output
from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import confusion_matrix, scores_from_confusion
from simgen.progress import track
from simgen.runtime import select_device
from simgen.train.changedet.config import (
    APPEARING,
    CHANGE_CLASSES,
    DISAPPEARING,
    FUSIONS,
    MODEL_TYPE,
    OVERLAPPING,
    DeltaNetConfig,
)
from simgen.train.changedet.data import normalize_pair, open_pairs
from simgen.train.changedet.model import build_deltanet, forward_padded, swap_direction
from simgen.train.engine import load_trained

__all__ = [
    "chain_probabilities",
    "evaluate_deltanet",
    "fuse_pair",
    "load_deltanet",
    "predict_deltanet",
    "predict_pair",
]


def chain_probabilities(first, last, axis: int = 0) -> np.ndarray:
    """4-class probabilities of ``(t, t + k)`` from the first and last consecutive links.

    ``P(present at t) = first[disappearing] + first[overlapping]`` and ``P(present at
    t + k) = last[appearing] + last[overlapping]``; the four classes are the products
    of these two presences (independent given the frames).
    """
    first = np.moveaxis(np.asarray(first, np.float32), axis, 0)
    last = np.moveaxis(np.asarray(last, np.float32), axis, 0)
    p0 = first[DISAPPEARING] + first[OVERLAPPING]
    p1 = last[APPEARING] + last[OVERLAPPING]
    out = np.stack([(1 - p0) * (1 - p1), (1 - p0) * p1, p0 * (1 - p1), p0 * p1])
    return np.moveaxis(out, 0, axis)


def load_deltanet(checkpoint, device: str = "auto"):
    """Rebuild a trained change detector: returns ``(model, config, targets)`` in eval mode."""
    state = load_trained(checkpoint, MODEL_TYPE)
    cfg = DeltaNetConfig.from_dict(state["config"])
    targets = tuple(state.get("targets") or ("a1", "a2"))
    dev = select_device(device)
    model = build_deltanet(cfg, targets)
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    return model, cfg, targets


def predict_pair(model, a: np.ndarray, b: np.ndarray, depth: int | None = None, device=None,
                 normalize: str = "percentile") -> dict:
    """Class probabilities ``{target: (4, H, W) float32}`` of the change from frame ``a`` to frame ``b``.

    ``normalize`` must match the model's ``config.normalize`` (applied here to the pair).
    """
    device = device if device is not None else next(model.parameters()).device
    depth = depth if depth is not None else model.depth
    import torch

    a, b = normalize_pair(a, b, normalize)
    model.eval()
    with torch.no_grad():
        logits = forward_padded(model, a, b, depth, device)
    return {t: torch.softmax(v[0].float(), 0).cpu().numpy() for t, v in logits.items()}


def fuse_pair(model, frames, *, chain: bool = False, depth: int | None = None, modes=FUSIONS, device=None,
              normalize: str = "percentile") -> dict:
    """Forward, backward, consecutive-chain and ensemble probabilities for one pair.

    Parameters
    ----------
    frames : sequence of (H, W) arrays
        ``[f_t, f_t+k]``, or with ``chain=True`` every frame ``[f_t, f_t+1, ..., f_t+k]``.
    chain : bool
        ``frames`` are consecutive (enables ``consecutive``; without it that mode is left out).
    modes : iterable of str
        Any of :data:`FUSIONS`.
    normalize : str
        The model's ``config.normalize`` (each pair is stretched on its own).

    Returns
    -------
    ``{mode: {target: (4, H, W) probabilities}}`` for the requested modes that could be
    computed.  ``ensemble`` averages whichever of forward, backward and consecutive exist.
    """
    modes = tuple(modes)
    bad = sorted(set(modes) - set(FUSIONS))
    if bad:
        raise ParameterError(f"fusion modes must be among {', '.join(FUSIONS)}, got {', '.join(bad)}")
    frames = list(frames)
    if len(frames) < 2:
        raise DataError("a pair needs at least two frames")
    a, b = frames[0], frames[-1]
    need = set(modes)
    if "ensemble" in need:
        need |= {"forward", "backward", "consecutive"}
    out: dict = {}
    if "forward" in need:
        out["forward"] = predict_pair(model, a, b, depth, device, normalize)
    if "backward" in need:
        back = predict_pair(model, b, a, depth, device, normalize)
        out["backward"] = {t: swap_direction(p, axis=0) for t, p in back.items()}
    if "consecutive" in need and chain and len(frames) > 2:
        first = predict_pair(model, frames[0], frames[1], depth, device, normalize)
        last = predict_pair(model, frames[-2], frames[-1], depth, device, normalize)
        out["consecutive"] = {t: chain_probabilities(first[t], last[t]) for t in first}
    elif "consecutive" in need and chain:
        # k = 1: the chain is the pair itself
        out["consecutive"] = out["forward"] if "forward" in out else predict_pair(model, a, b, depth, device, normalize)
    if "ensemble" in need:
        parts = [out[m] for m in ("forward", "backward", "consecutive") if m in out]
        out["ensemble"] = {t: np.mean([p[t] for p in parts], axis=0) for t in parts[0]}
    return {m: out[m] for m in modes if m in out}


def predict_deltanet(
    checkpoint,
    source,
    out,
    *,
    fusion: str = "ensemble",
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Predict change maps for every pair of a filament pair file; write them in the same layout.

    The output (``kind="predictions"``, label-only: one sample per source frame, so
    ``/names`` and ``/shapes`` stay aligned) holds

    * ``/pairs/index`` (and ``gap``, ``direction``, ``/filament/sequence``, ``/filament/frame``
      when the source has them), copied;
    * ``/pairs/change_<target>`` (M, H, W) uint8: the chosen ``fusion`` — the same paths as
      the ground truth, so evaluation compares like with like;
    * ``/pairs/fusion/<mode>/change_<target>`` for every mode (``consecutive`` only when every
      pair's intermediate frames are in the file).

    Maps are written pair by pair (memory stays at one pair); an error leaves no output.
    """

    if fusion not in FUSIONS:
        raise ParameterError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    check_output(out, overwrite)
    model, cfg, targets = load_deltanet(checkpoint, device)
    with open_pairs(source, require_maps=False) as src:
        if src.targets and src.targets != targets:
            raise DataError(f"{source} has targets {src.targets}, the model predicts {targets}")
        h, w = src.frame(0).shape
        chains = [src.chain(p) for p in range(src.n)]
        modes = [m for m in FUSIONS if m != "consecutive" or all(c is not None for c in chains)]
        if fusion not in modes:
            raise DataError(f"{source} lacks the intermediate frames of some pairs; fusion 'consecutive' is not possible")
        with DatasetWriter(
            out, kind="predictions", overwrite=overwrite,
            generator={"function": "simgen.train.changedet.predict.predict_deltanet", "checkpoint": str(checkpoint),
                       "source": str(source), "fusion": fusion, "config": cfg.to_dict()},
            attrs={"model_type": MODEL_TYPE, "source": str(source), "checkpoint": str(checkpoint), "fusion": fusion},
        ) as writer:
            ds = src.source.dataset  # the pair file: frame names and pair metadata are copied from it
            for i in range(ds.n):
                writer.append(None, name=ds.name(i), shape=(h, w))
            writer.create_array("pairs/index", src.index)
            for extra in ("pairs/gap", "pairs/direction", "filament/sequence", "filament/frame"):
                if ds.has(extra):
                    writer.create_array(extra, ds.array(extra))
            maps = {"shape": (src.n, h, w), "dtype": "u1", "chunks": (1, h, w), "compression": "gzip",
                    "compression_opts": 1}
            out_maps = {(m, t): writer.create_array(f"pairs/fusion/{m}/change_{t}", **maps)
                        for m in modes for t in targets}
            chosen = {t: writer.create_array(f"pairs/change_{t}", **maps) for t in targets}
            for p in track(range(src.n), description="predict pairs", enabled=progress, total=src.n):
                frames = [src.frame(i) for i in chains[p]] if chains[p] is not None else list(src.frames(p))
                fused = fuse_pair(model, frames, chain=chains[p] is not None, depth=cfg.depth, modes=modes,
                                  normalize=cfg.normalize)
                for m in modes:
                    for t in targets:
                        label = fused[m][t].argmax(0).astype(np.uint8)
                        out_maps[m, t][p] = label
                        if m == fusion:
                            chosen[t][p] = label
            src_attrs = ds.file["pairs"].attrs
            writer.set_group_attrs("pairs", targets=src_attrs.get("targets", json.dumps(list(targets))),
                                   classes=src_attrs.get("classes", json.dumps(list(CHANGE_CLASSES))), fusion=fusion)
    return Path(out)


def evaluate_deltanet(checkpoint, data, *, modes=FUSIONS, device: str = "auto", progress: bool = False):
    """Per-class Dice and IoU of every fusion mode and target on a pair file with ground truth.

    Pixel counts are pooled over all pairs (confusion matrices accumulated pair by pair with
    :func:`simgen.evaluate.segmentation.confusion_matrix`).

    Returns
    -------
    DataFrame with columns ``fusion, target, class, name, tp, fp, fn, dice, iou`` — the
    change classes' rows are what to compare between the Siamese model and the U-Net baseline.
    """
    import pandas as pd


    modes = tuple(modes)
    model, cfg, targets = load_deltanet(checkpoint, device)
    n = len(CHANGE_CLASSES)
    with open_pairs(data) as src:
        if src.targets != targets:
            raise DataError(f"{data} has targets {src.targets}, the model predicts {targets}")
        chains = [src.chain(p) for p in range(src.n)]
        modes = tuple(m for m in modes if m != "consecutive" or all(c is not None for c in chains))
        cms = {(m, t): np.zeros((n, n), np.int64) for m in modes for t in targets}
        for p in track(range(src.n), description="evaluate pairs", enabled=progress, total=src.n):
            frames = [src.frame(i) for i in chains[p]] if chains[p] is not None else list(src.frames(p))
            fused = fuse_pair(model, frames, chain=chains[p] is not None, depth=cfg.depth, modes=modes,
                              normalize=cfg.normalize)
            maps = src.maps(p)
            for m in modes:
                for t in targets:
                    cms[m, t] += confusion_matrix(fused[m][t].argmax(0), maps[t], n)
    frames = []
    for (m, t), cm in cms.items():
        df = scores_from_confusion(cm)
        df.insert(0, "target", t)
        df.insert(0, "fusion", m)
        df["name"] = list(CHANGE_CLASSES)
        frames.append(df)
    cols = ["fusion", "target", "class", "name", "tp", "fp", "fn", "dice", "iou"]
    return pd.concat(frames, ignore_index=True)[cols]

