"""MultiTaskDeltaNet-style change detection for filament gasification (plain torch).

A pair of frames ``(t, t + k)`` of an operando TEM sequence goes in; for each of two
targets — **A1** the filament, **A2** its hollow core — a per-pixel 4-class change
map comes out, in the class order of :data:`simgen.evaluate.segmentation.CHANGE_CLASSES`:
``0`` no change (absent in both frames), ``1`` appearing (absent at t, present at
t + k), ``2`` disappearing (present at t, absent at t + k), ``3`` overlapping
(present in both).

Models
------
:class:`SiameseUNet`
    One U-Net encoder shared by both frames (the frames run through it as one batch).
    At every scale the two feature maps are fused by concatenating ``[f_t, f_tk,
    f_tk - f_t]`` (the signed difference carries the direction of change) and a 1x1
    convolution; a U-Net decoder upsamples the fused pyramid; two heads (A1, A2) give
    4 logits per pixel each.
:class:`UNet`
    Baseline: the same encoder/decoder/heads on the two frames stacked as channels.

Training: multi-class focal loss (:func:`focal_loss`, summed over the two heads),
AdamW (lr 1e-3), batch 16 of 256² crops in the ``full`` config; random flips and
90° rotations applied identically to both frames and both maps.  The ``tiny``
config (64², narrow and shallow) trains in seconds for tests.

Fusion at prediction time (:func:`fuse_pair`):

* ``forward``: the model on ``(t, t + k)``;
* ``backward``: the model on ``(t + k, t)`` with appearing/disappearing swapped back;
* ``consecutive``: the chain of consecutive pairs ``(t, t+1) ... (t+k-1, t+k)`` of the
  same sequence: the presence of the material at ``t`` comes from the first link
  (disappearing + overlapping), at ``t + k`` from the last link (appearing +
  overlapping), and the four classes are their products (only where the sequence
  holds every intermediate frame; ``k = 1`` makes it the forward prediction);
* ``ensemble``: the mean of the available probability maps of the three.

Checkpoints are self-describing: ``{"model_type": "deltanet", "config": {...},
"targets": [...], "state_dict": ...}``.

Data layout
-----------
The pair file written by :mod:`simgen.simulate.filament` (see :func:`open_pairs`, which
documents the layout read here).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ParameterError
from ..rng import check_seed, sample_rng
from . import common

__all__ = [
    "MODEL_TYPE",
    "CHANGE_CLASSES",
    "FUSIONS",
    "PRESETS",
    "DeltaNetConfig",
    "get_config",
    "focal_loss",
    "SiameseUNet",
    "UNet",
    "build_deltanet",
    "swap_direction",
    "chain_probabilities",
    "normalize_pair",
    "class_weights",
    "PairSource",
    "open_pairs",
    "train_deltanet",
    "load_deltanet",
    "predict_pair",
    "fuse_pair",
    "predict_deltanet",
    "evaluate_deltanet",
]

MODEL_TYPE = "deltanet"
#: Class order of the change maps (same as :data:`simgen.evaluate.segmentation.CHANGE_CLASSES`).
CHANGE_CLASSES = ("no change", "appearing", "disappearing", "overlapping")
NO_CHANGE, APPEARING, DISAPPEARING, OVERLAPPING = 0, 1, 2, 3
FUSIONS = ("forward", "backward", "consecutive", "ensemble")
ARCHS = ("siamese", "unet")


# -- configuration -----------------------------------------------------------
@dataclass(frozen=True)
class DeltaNetConfig:
    """Model and training parameters (stored in every checkpoint).

    arch : {"siamese", "unet"}
        Siamese U-Net with feature fusion, or the baseline U-Net on stacked frames.
    width : int
        Channels of the first encoder level (doubling per level).
    depth : int
        Number of 2x down-samplings (inputs must be multiples of ``2**depth``; prediction
        pads automatically).
    norm : {"batch", "group"}
    crop : int
        Side of the square training crops (0 = whole frames).
    epochs, batch_size, lr, weight_decay (AdamW), gamma (focal-loss focusing), alpha (per-class
    focal weights: ``"auto"`` = ``f_c**-0.5`` from the training maps' class frequencies ``f_c``,
    normalised to a pixel-weighted mean of 1 — appearing/disappearing are rare slivers;
    ``None`` = all 1; or four numbers), patience (0 = never stop early), min_delta, monitor
    ({"val_loss", "val_dice"}: mean Dice of the three change classes over both targets),
    normalize ({"percentile", "minmax", "none"}: one contrast stretch computed on both frames of
    a pair together, so brightness changes between them survive), augment (flips and 90°
    rotations), reverse (probability of training on the reversed
    pair with appearing/disappearing swapped), steps_per_epoch (0 = one pass over the
    pairs), seed.
    """

    preset: str = "full"
    arch: str = "siamese"
    width: int = 32
    depth: int = 4
    norm: str = "batch"
    crop: int = 256
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    gamma: float = 2.0
    alpha: tuple | str | None = "auto"
    patience: int = 10
    min_delta: float = 0.0
    monitor: str = "val_loss"
    normalize: str = "percentile"
    augment: bool = True
    reverse: float = 0.0
    steps_per_epoch: int = 0
    seed: int = 0

    def validate(self) -> "DeltaNetConfig":
        if self.arch not in ARCHS:
            raise ParameterError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.norm not in ("batch", "group"):
            raise ParameterError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if self.normalize not in ("percentile", "minmax", "none"):
            raise ParameterError(f"normalize must be percentile, minmax or none, got {self.normalize!r}")
        if self.monitor not in ("val_loss", "val_dice"):
            raise ParameterError(f"monitor must be 'val_loss' or 'val_dice', got {self.monitor!r}")
        for name in ("width", "depth", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if self.depth > 6:
            raise ParameterError(f"depth must be <= 6, got {self.depth}")
        if self.norm == "group" and self.width % 4:
            raise ParameterError(f"width must be a multiple of 4 with group norm, got {self.width}")
        for name in ("crop", "patience", "steps_per_epoch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ParameterError(f"{name} must be a non-negative integer, got {v!r}")
        if self.crop and self.crop % (2 ** self.depth):
            raise ParameterError(f"crop {self.crop} must be a multiple of 2**depth = {2 ** self.depth}")
        for name in ("lr", "weight_decay", "gamma", "min_delta"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ParameterError(f"{name} must be a non-negative number, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= float(self.reverse) <= 1.0:
            raise ParameterError(f"reverse must be a probability in [0, 1], got {self.reverse}")
        if isinstance(self.alpha, str):
            if self.alpha != "auto":
                raise ParameterError(f"alpha must be 'auto', None or {len(CHANGE_CLASSES)} class weights, got {self.alpha!r}")
        elif self.alpha is not None:
            a = np.asarray(self.alpha, np.float64)
            if a.shape != (len(CHANGE_CLASSES),) or not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ParameterError(f"alpha must be {len(CHANGE_CLASSES)} non-negative class weights, got {self.alpha}")
        check_seed(self.seed)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alpha"] = self.alpha if self.alpha is None or isinstance(self.alpha, str) else [float(a) for a in self.alpha]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeltaNetConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ParameterError(f"unknown DeltaNet config field(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("alpha"), list):
            d["alpha"] = tuple(d["alpha"])
        return cls(**d).validate()


#: ``tiny``: 64² crops, 8 channels, 3 levels, lr 3e-3 (tests, seconds).  ``light``: 128² crops, 16
#: channels, 4 levels, batch 8 (CPU runs).  ``full``: 256² crops, 32 channels, 4 levels,
#: batch 16, AdamW 1e-3 (the published setting; GPU runs).
PRESETS: dict[str, DeltaNetConfig] = {
    "tiny": DeltaNetConfig(preset="tiny", width=8, depth=3, crop=64, epochs=20, batch_size=8, lr=3e-3, patience=0),
    "light": DeltaNetConfig(preset="light", width=16, depth=4, crop=128, epochs=60, batch_size=8),
    "full": DeltaNetConfig(preset="full"),
}


def get_config(preset: str = "full", **overrides) -> DeltaNetConfig:
    """A preset with fields replaced (``None`` values ignored), validated."""
    if preset not in PRESETS:
        raise ParameterError(f"config must be one of {', '.join(PRESETS)}, got {preset!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - {f.name for f in fields(DeltaNetConfig)})
    if unknown:
        raise ParameterError(f"unknown DeltaNet config field(s): {', '.join(unknown)}")
    if overrides.get("alpha") is not None and not isinstance(overrides["alpha"], str):
        overrides["alpha"] = tuple(overrides["alpha"])
    return replace(PRESETS[preset], **overrides).validate()


# -- loss ----------------------------------------------------------------------
def focal_loss(logits, target, gamma: float = 2.0, alpha=None, reduction: str = "mean"):
    """Multi-class focal loss ``-alpha_y (1 - p_y)**gamma log p_y`` (Lin et al. 2017).

    Parameters
    ----------
    logits : (B, C, ...) tensor
        Unnormalised class scores.
    target : (B, ...) int64 tensor
        Class ids in ``0..C-1``.
    gamma : float
        Focusing parameter; ``gamma = 0`` and ``alpha = None`` give the cross-entropy.
    alpha : sequence of C floats or tensor, optional
        Per-class weights (applied to the true class of each pixel).
    reduction : {"mean", "sum", "none"}
        ``mean`` averages over all pixels (not over weights).

    Examples
    --------
    >>> import torch
    >>> float(focal_loss(torch.zeros(1, 4, 1), torch.zeros(1, 1, dtype=torch.long), gamma=0.0))  # log 4
    1.3862943649291992
    """
    if logits.ndim < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ParameterError(f"focal_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    if gamma < 0:
        raise ParameterError(f"gamma must be >= 0, got {gamma}")
    if reduction not in ("mean", "sum", "none"):
        raise ParameterError(f"reduction must be mean, sum or none, got {reduction!r}")
    target = target.long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise DataError(f"focal_loss: class ids outside [0, {logits.shape[1] - 1}]")
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    loss = -logp if gamma == 0 else -((1.0 - logp.exp()).clamp(min=0.0) ** gamma) * logp
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
        if a.shape != (logits.shape[1],):
            raise ParameterError(f"alpha must hold {logits.shape[1]} weights, got shape {tuple(a.shape)}")
        loss = loss * a[target]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# -- networks --------------------------------------------------------------------
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.BatchNorm2d(channels)


def _block(cin: int, cout: int, norm: str) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
    )


class _Encoder(nn.Module):
    """U-Net encoder: ``depth + 1`` double-conv levels, 2x max-pooling between them."""

    def __init__(self, cin: int, width: int, depth: int, norm: str):
        super().__init__()
        self.channels = [width * 2 ** i for i in range(depth + 1)]
        self.blocks = nn.ModuleList(
            [_block(cin if i == 0 else self.channels[i - 1], c, norm) for i, c in enumerate(self.channels)]
        )
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


class _Decoder(nn.Module):
    """U-Net decoder: transposed-conv upsampling, skip concatenation, double conv."""

    def __init__(self, chans: list, norm: str):
        super().__init__()
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(len(chans) - 1)])
        self.blocks = nn.ModuleList([_block(2 * chans[i], chans[i], norm) for i in range(len(chans) - 1)])

    def forward(self, feats):
        x = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            x = self.blocks[i](torch.cat([feats[i], self.up[i](x)], dim=1))
        return x


class _Heads(nn.Module):
    """One small head (3x3 conv, norm, ReLU, 1x1 conv to the classes) per target."""

    def __init__(self, width: int, targets: tuple, n_classes: int, norm: str):
        super().__init__()
        self.targets = tuple(targets)
        self.heads = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), _norm(norm, width),
                          nn.ReLU(inplace=True), nn.Conv2d(width, n_classes, 1))
            for _ in self.targets
        ])

    def forward(self, x):
        return {t: h(x) for t, h in zip(self.targets, self.heads)}


class SiameseUNet(nn.Module):
    """Shared encoder for both frames, ``[f_t, f_tk, f_tk - f_t]`` fusion per scale, U-Net decoder, heads.

    ``forward(a, b)`` takes two ``(B, 1, H, W)`` frames (H, W multiples of ``2**depth``) and
    returns ``{target: (B, n_classes, H, W) logits}``.
    """

    def __init__(self, width: int = 32, depth: int = 4, norm: str = "batch", targets=("a1", "a2"),
                 n_classes: int = 4):
        super().__init__()
        self.depth = depth
        self.encoder = _Encoder(1, width, depth, norm)
        self.fuse = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3 * c, c, 1, bias=False), _norm(norm, c), nn.ReLU(inplace=True))
            for c in self.encoder.channels
        ])
        self.decoder = _Decoder(self.encoder.channels, norm)
        self.heads = _Heads(width, targets, n_classes, norm)

    def forward(self, a, b):
        n = a.shape[0]
        feats = self.encoder(torch.cat([a, b], dim=0))  # shared weights: both frames in one batch
        fused = [f(torch.cat([x[:n], x[n:], x[n:] - x[:n]], dim=1)) for f, x in zip(self.fuse, feats)]
        return self.heads(self.decoder(fused))


class UNet(nn.Module):
    """Baseline: a U-Net on the two frames stacked as channels, with the same heads."""

    def __init__(self, width: int = 32, depth: int = 4, norm: str = "batch", targets=("a1", "a2"),
                 n_classes: int = 4):
        super().__init__()
        self.depth = depth
        self.encoder = _Encoder(2, width, depth, norm)
        self.decoder = _Decoder(self.encoder.channels, norm)
        self.heads = _Heads(width, targets, n_classes, norm)

    def forward(self, a, b):
        return self.heads(self.decoder(self.encoder(torch.cat([a, b], dim=1))))


def build_deltanet(config: DeltaNetConfig | str = "full", targets=("a1", "a2")) -> nn.Module:
    """An untrained :class:`SiameseUNet` or :class:`UNet` (``config.arch``) with one head per target."""
    cfg = get_config(config) if isinstance(config, str) else config.validate()
    targets = tuple(targets)
    if not targets or len(set(targets)) != len(targets):
        raise ParameterError(f"targets must be distinct names, got {targets}")
    cls = SiameseUNet if cfg.arch == "siamese" else UNet
    return cls(cfg.width, cfg.depth, cfg.norm, targets, len(CHANGE_CLASSES))


# -- change-map algebra -------------------------------------------------------------
def swap_direction(x, axis: int = 1):
    """Swap the appearing and disappearing classes (probabilities along ``axis`` or label maps).

    The change map of ``(t + k, t)`` turned into that of ``(t, t + k)``.  Works on numpy arrays
    and torch tensors; integer arrays are treated as label maps.
    """
    if hasattr(x, "dtype") and not _is_float(x):
        out = x.copy() if isinstance(x, np.ndarray) else x.clone()
        out[x == APPEARING] = DISAPPEARING
        out[x == DISAPPEARING] = APPEARING
        return out
    idx = [NO_CHANGE, DISAPPEARING, APPEARING, OVERLAPPING]
    if isinstance(x, np.ndarray):
        return np.take(x, idx, axis=axis)
    return torch.index_select(x, axis, torch.tensor(idx, device=x.device))


def _is_float(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "f"
    return x.is_floating_point()


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


# -- data -----------------------------------------------------------------------------
class PairSource:
    """Frame pairs and their change maps from a filament pair file (see :func:`open_pairs`).

    Attributes
    ----------
    path : Path
    n : int
        Number of pairs.
    index : (M, 2) int64
        Frame (sample) indices ``(first, second)`` of every pair; ``second < first`` for
        backward pairs.
    targets : tuple of str
        Change-map names, ``("a1", "a2")`` for ``/pairs/change_a1`` and ``/pairs/change_a2``.
    has_maps : bool
        Whether change maps are stored (prediction does not need them).
    """

    def __init__(self, path, ds, index, targets, maps, sequence, time):
        self.path = Path(path)
        self._ds = ds
        self.index = index
        self.n = len(index)
        self.targets = tuple(targets)
        self._maps = maps
        self.has_maps = maps is not None
        self.sequence = sequence
        self.time = time
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()  # small LRU cache (chains reuse frames)

    @property
    def n_frames(self) -> int:
        return self._ds.n

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as float32 (H, W) in [0, 1]."""
        i = int(i)
        if i in self._frames:
            self._frames.move_to_end(i)
        else:
            self._frames[i] = self._ds.image(i)
            while len(self._frames) > 64:
                self._frames.popitem(last=False)
        return self._frames[i]

    def frames(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.index[p]
        return self.frame(a), self.frame(b)

    def maps(self, p: int) -> dict[str, np.ndarray]:
        if self._maps is None:
            raise DataError(f"{self.path} stores no change maps")
        return {t: np.asarray(self._maps[t][p]) for t in self.targets}

    def chain(self, p: int) -> list[int] | None:
        """Frame indices ``t, t±1, ..., t±k`` from the first to the second frame of pair ``p``
        when they all belong to one sequence and follow each other in time, else ``None``."""
        if self.sequence is None:
            return None
        a, b = (int(v) for v in self.index[p])
        if a == b:
            return None
        step = 1 if b > a else -1
        frames = list(range(a, b + step, step))
        seq, time = self.sequence[frames], self.time[frames]
        if np.all(seq == seq[0]) and np.all(np.diff(time) == step):
            return frames
        return None

    def close(self) -> None:
        self._ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_pairs(path, require_maps: bool = True) -> PairSource:
    """Open a filament pair file written by :func:`simgen.datasets.video_io.write_filament`.

    Layout read::

        /images                 (N, H, W) frames of all sequences (one sample per frame)
        /pairs/index            (M, 2) int   frame indices (first, second) of each pair
        /pairs/change_<target>  (M, H, W) uint8 change maps (0 background, 1 appearing,
                                2 disappearing, 3 unchanged-present); targets a1, a2
        /filament/sequence      (N,) sequence of each frame  } for the consecutive chain
        /filament/frame         (N,) time index in it        } (optional)

    Raises
    ------
    DataError, SchemaError
        Missing file, no images, no ``/pairs/index``, maps of the wrong shape, bad indices.
    """
    from ..datasets.h5io import open_dataset

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    ds = open_dataset(path)
    try:
        if ds.images is None:
            raise DataError(f"{path} stores no images")
        if not ds.has("pairs/index"):
            raise DataError(f"{path} has no /pairs/index; change detection needs a filament pair file "
                            "(simgen simulate filament)")
        index = np.asarray(ds.array("pairs/index"), np.int64)
        if index.ndim != 2 or index.shape[1] != 2 or len(index) == 0:
            raise DataError(f"{path}: /pairs/index has shape {index.shape}, expected (M, 2) with M >= 1")
        if index.min() < 0 or index.max() >= ds.n:
            raise DataError(f"{path}: /pairs/index refers to frames outside 0..{ds.n - 1}")
        targets = tuple(sorted(k[len("change_"):] for k in ds.file["pairs"] if k.startswith("change_")))
        maps = None
        if targets:
            maps = {t: ds.file[f"pairs/change_{t}"] for t in targets}
            for t, m in maps.items():
                if m.shape != (len(index), *ds.image_shape):
                    raise DataError(f"{path}: /pairs/change_{t} has shape {m.shape}, "
                                    f"expected {(len(index), *ds.image_shape)}")
        elif require_maps:
            raise DataError(f"{path} has no change maps /pairs/change_<target>")
        else:
            targets = None  # prediction: the model's targets are used
        sequence, time = _sequence_info(ds)
    except BaseException:
        ds.close()
        raise
    return PairSource(path, ds, index, targets or (), maps, sequence, time)


def _sequence_info(ds):
    if ds.has("filament/sequence") and ds.has("filament/frame"):
        seq = np.asarray(ds.array("filament/sequence"), np.int64)
        time = np.asarray(ds.array("filament/frame"), np.int64)
        if seq.shape == time.shape == (ds.n,):
            return seq, time
    return None, None


def normalize_pair(a: np.ndarray, b: np.ndarray, mode: str = "percentile") -> tuple[np.ndarray, np.ndarray]:
    """Contrast-stretch two frames with one mapping (0.5/99.5 percentiles or min/max of both)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if mode == "none":
        return a, b
    both = np.concatenate([a.ravel(), b.ravel()])
    if mode == "percentile":
        lo, hi = np.percentile(both, [0.5, 99.5])
    elif mode == "minmax":
        lo, hi = float(both.min()), float(both.max())
    else:
        raise ParameterError(f"normalize must be percentile, minmax or none, got {mode!r}")
    if not hi > lo:
        return np.full_like(a, 0.5), np.full_like(b, 0.5)
    lo, scale = np.float32(lo), np.float32(1.0 / (hi - lo))
    return np.clip((a - lo) * scale, 0, 1).astype(np.float32), np.clip((b - lo) * scale, 0, 1).astype(np.float32)


def _augment_pair(a, b, maps, rng, crop: int, augment: bool = True):
    """Random ``crop``² window (when the frames are larger), then flips and 90° rotations."""
    h, w = a.shape
    if crop and (h > crop or w > crop):
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        sl = (slice(y, y + crop), slice(x, x + crop))
        a, b, maps = a[sl], b[sl], {t: m[sl] for t, m in maps.items()}
    if augment:
        if rng.random() < 0.5:
            a, b, maps = a[:, ::-1], b[:, ::-1], {t: m[:, ::-1] for t, m in maps.items()}
        if rng.random() < 0.5:
            a, b, maps = a[::-1], b[::-1], {t: m[::-1] for t, m in maps.items()}
        if a.shape[0] == a.shape[1]:
            k = int(rng.integers(4))
            a, b, maps = np.rot90(a, k), np.rot90(b, k), {t: np.rot90(m, k) for t, m in maps.items()}
    return a, b, maps


class _PairSamples:
    """Pairs cached in memory: every frame once (float16), change maps per pair (uint8)."""

    def __init__(self, src: PairSource, crop: int, depth: int, train: bool):
        used = np.unique(src.index)
        self.frames = {int(i): np.asarray(src.frame(int(i)), np.float32).astype(np.float16) for i in used}
        src._frames.clear()
        self.index = src.index.copy()
        self.maps = [{t: np.asarray(m, np.uint8) for t, m in src.maps(p).items()} for p in range(src.n)]
        self.targets = src.targets
        h, w = self.frames[int(used[0])].shape
        m = 2 ** depth
        if train and crop and (h < crop or w < crop):
            raise DataError(f"{src.path}: frames of {h}x{w} px are smaller than the {crop}² training crop")
        if train and not crop and (h % m or w % m):
            raise DataError(f"{src.path}: frames of {h}x{w} px must be multiples of {m} without cropping; set a crop")
        for mp in self.maps:
            for t, arr in mp.items():
                if arr.size and arr.max() >= len(CHANGE_CLASSES):
                    raise DataError(f"{src.path}: change map {t!r} holds class ids >= {len(CHANGE_CLASSES)}")

    def pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        i, j = self.index[k]
        return self.frames[int(i)].astype(np.float32), self.frames[int(j)].astype(np.float32)

    def __len__(self):
        return len(self.index)

    def batch(self, ks, cfg: DeltaNetConfig, epoch: int | None, device):
        xa, xb, ys = [], [], {t: [] for t in self.targets}
        for k in ks:
            (a, b), maps = self.pair(k), self.maps[k]
            a, b = normalize_pair(a, b, cfg.normalize)
            if epoch is not None:
                rng = sample_rng(cfg.seed, epoch, 2, int(k))
                a, b, maps = _augment_pair(a, b, maps, rng, cfg.crop, cfg.augment)
                if cfg.reverse and rng.random() < cfg.reverse:
                    a, b, maps = b, a, {t: swap_direction(m) for t, m in maps.items()}
            xa.append(np.ascontiguousarray(a))
            xb.append(np.ascontiguousarray(b))
            for t in self.targets:
                ys[t].append(np.ascontiguousarray(maps[t]))
        ta = torch.from_numpy(np.stack(xa)[:, None]).to(device)
        tb = torch.from_numpy(np.stack(xb)[:, None]).to(device)
        return ta, tb, {t: torch.from_numpy(np.stack(v).astype(np.int64)).to(device) for t, v in ys.items()}


def _loss(out: dict, y: dict, cfg: DeltaNetConfig, alpha=None):
    return sum(focal_loss(out[t], y[t], cfg.gamma, alpha) for t in y)


def class_weights(maps, power: float = 0.5, floor: float = 1e-4) -> tuple:
    """Per-class weights ``f_c**-power`` from change maps, normalised so that sum_c f_c w_c = 1.

    ``maps`` is an iterable of label arrays; class frequencies below ``floor`` are raised to
    it (a class absent from the data gets a large but finite weight).
    """
    counts = np.zeros(len(CHANGE_CLASSES), np.float64)
    for m in maps:
        counts += np.bincount(np.asarray(m, np.int64).ravel(), minlength=len(CHANGE_CLASSES))[: len(CHANGE_CLASSES)]
    if counts.sum() == 0:
        return tuple([1.0] * len(CHANGE_CLASSES))
    f = np.maximum(counts / counts.sum(), floor)
    w = f ** -power
    w /= float((f * w).sum() / f.sum())
    return tuple(round(float(x), 4) for x in w)


def _mean_change_dice(cms: dict) -> float:
    """Mean Dice of appearing, disappearing and overlapping over all targets (NaN classes skipped)."""
    from ..evaluate.segmentation import scores_from_confusion

    vals = []
    for cm in cms.values():
        d = scores_from_confusion(cm)["dice"].to_numpy()
        vals.extend(float(d[c]) for c in (APPEARING, DISAPPEARING, OVERLAPPING) if np.isfinite(d[c]))
    return float(np.mean(vals)) if vals else float("nan")


def _validate(model, val: _PairSamples, cfg: DeltaNetConfig, device, alpha=None) -> dict:
    """Validation loss and mean change-class Dice (forward predictions on whole frames)."""
    from ..evaluate.segmentation import confusion_matrix

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
    dev = common.select_device(device)
    with open_pairs(train) as src:
        train_set = _PairSamples(src, cfg.crop, cfg.depth, train=True)
    val_set = None
    if val is not None:
        with open_pairs(val) as vsrc:
            if vsrc.targets != train_set.targets:
                raise DataError(f"validation targets {vsrc.targets} differ from training targets {train_set.targets}")
            val_set = _PairSamples(vsrc, cfg.crop, cfg.depth, train=False)
    run = common.RunDir(out_dir, resume=resume, overwrite=overwrite)
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
    common.setup_threads()
    common.seed_everything(cfg.seed)
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
        for b in _track(batches, f"epoch {epoch + 1}/{cfg.epochs}", progress):
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
    logger = common.ProgressLog(run.path / "metrics.jsonl", total_epochs=cfg.epochs, enabled=log, prefix="deltanet ")
    logger.message(f"[{cfg.preset}/{cfg.arch}] on {dev}: {len(train_set)} training pairs, "
                   f"{len(val_set) if val_set else 0} validation pairs, targets {list(train_set.targets)}; "
                   f"focal gamma {cfg.gamma:g}, class weights {alpha}; monitoring {monitor}")
    from .maskrcnn import _fit_epochs

    result = _fit_epochs(
        run, model, opt, sched, train_epoch, state=state, epochs=cfg.epochs, monitor=monitor,
        mode="max" if monitor == "val_dice" else "min", patience=cfg.patience, min_delta=cfg.min_delta,
        header={"model_type": MODEL_TYPE, "config": cfg.to_dict(), "targets": list(train_set.targets),
                "alpha": None if alpha is None else list(alpha)},
        logger=logger, stop_after=stop_after,
    )
    result["n_train"] = len(train_set)
    return result


def _track(iterable, description: str, enabled: bool, total: int | None = None):
    from ..progress import track

    return track(iterable, total=total if total is not None else len(iterable), description=description,
                 enabled=enabled)


# -- inference -------------------------------------------------------------------------
def load_deltanet(checkpoint, device: str = "auto"):
    """Rebuild a trained change detector: returns ``(model, config, targets)`` in eval mode."""
    state = common.load_checkpoint(checkpoint, weights_only=True)
    if state.get("model_type") != MODEL_TYPE:
        raise ParameterError(f"{checkpoint} is a {state.get('model_type')!r} checkpoint, not {MODEL_TYPE!r}")
    cfg = DeltaNetConfig.from_dict(state["config"])
    targets = tuple(state.get("targets") or ("a1", "a2"))
    dev = common.select_device(device)
    model = build_deltanet(cfg, targets)
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    return model, cfg, targets


def _forward_padded(model, a: np.ndarray, b: np.ndarray, depth: int, device) -> dict:
    """Logits for one pair of (H, W) frames of any size (reflect-padded to a multiple of 2**depth)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(f"frames must be two 2-D images of one shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    m = 2 ** depth
    ph, pw = -h % m, -w % m
    ta = torch.from_numpy(a)[None, None].to(device)
    tb = torch.from_numpy(b)[None, None].to(device)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        ta = F.pad(ta, (0, pw, 0, ph), mode=mode)
        tb = F.pad(tb, (0, pw, 0, ph), mode=mode)
    out = model(ta, tb)
    return {t: v[..., :h, :w] for t, v in out.items()}


def predict_pair(model, a: np.ndarray, b: np.ndarray, depth: int | None = None, device=None,
                 normalize: str = "percentile") -> dict:
    """Class probabilities ``{target: (4, H, W) float32}`` of the change from frame ``a`` to frame ``b``.

    ``normalize`` must match the model's ``config.normalize`` (applied here to the pair).
    """
    device = device if device is not None else next(model.parameters()).device
    depth = depth if depth is not None else model.depth
    a, b = normalize_pair(a, b, normalize)
    model.eval()
    with torch.no_grad():
        logits = _forward_padded(model, a, b, depth, device)
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
    from ..datasets.atomic import check_output
    from ..datasets.h5io import DatasetWriter

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
            generator={"function": "simgen.train.deltanet.predict_deltanet", "checkpoint": str(checkpoint),
                       "source": str(source), "fusion": fusion, "config": cfg.to_dict()},
            attrs={"model_type": MODEL_TYPE, "source": str(source), "checkpoint": str(checkpoint), "fusion": fusion},
        ) as writer:
            ds = src._ds
            for i in range(ds.n):
                writer.append(None, name=ds.name(i), shape=(h, w))
            writer.create_array("pairs/index", src.index)
            for extra in ("pairs/gap", "pairs/direction", "filament/sequence", "filament/frame"):
                if ds.has(extra):
                    writer.create_array(extra, ds.array(extra))
            f = writer._f
            comp = {"compression": "gzip", "compression_opts": 1, "chunks": (1, h, w), "dtype": "u1"}
            out_maps = {(m, t): f.create_dataset(f"pairs/fusion/{m}/change_{t}", shape=(src.n, h, w), **comp)
                        for m in modes for t in targets}
            chosen = {t: f.create_dataset(f"pairs/change_{t}", shape=(src.n, h, w), **comp) for t in targets}
            for p in _track(range(src.n), "predict pairs", progress, total=src.n):
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
            f["pairs"].attrs["targets"] = src_attrs.get("targets", json.dumps(list(targets)))
            f["pairs"].attrs["classes"] = src_attrs.get("classes", json.dumps(list(CHANGE_CLASSES)))
            f["pairs"].attrs["fusion"] = fusion
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

    from ..evaluate.segmentation import confusion_matrix, scores_from_confusion

    modes = tuple(modes)
    model, cfg, targets = load_deltanet(checkpoint, device)
    n = len(CHANGE_CLASSES)
    with open_pairs(data) as src:
        if src.targets != targets:
            raise DataError(f"{data} has targets {src.targets}, the model predicts {targets}")
        chains = [src.chain(p) for p in range(src.n)]
        modes = tuple(m for m in modes if m != "consecutive" or all(c is not None for c in chains))
        cms = {(m, t): np.zeros((n, n), np.int64) for m in modes for t in targets}
        for p in _track(range(src.n), "evaluate pairs", progress, total=src.n):
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
