"""The change-detection networks: Siamese U-Net with a shared encoder and one head per target, the U-Net
baseline on stacked frames, MultiTaskDeltaNet (a whole U-Net shared by both frames, final feature maps
concatenated, one FCN head per task), the single-frame segmentation U-Net; applying them to frames of
any size; the focal loss; swapping the direction of change maps."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simgen.errors import DataError, ParameterError
from simgen.train.changedet.config import (
    APPEARING,
    CHANGE_CLASSES,
    DISAPPEARING,
    NO_CHANGE,
    OVERLAPPING,
    DeltaNetConfig,
    get_config,
)

__all__ = [
    "focal_loss",
    "MTDN",
    "SegUNet",
    "SiameseUNet",
    "UNet",
    "build_deltanet",
    "forward_padded",
    "init_from_segmenter",
    "segment_padded",
    "swap_direction",
]


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


class _UNetBody(nn.Module):
    """A whole U-Net without its classifier: ``(B, cin, H, W)`` → ``(B, width, H, W)`` features."""

    def __init__(self, cin: int, width: int, depth: int, norm: str):
        super().__init__()
        self.encoder = _Encoder(cin, width, depth, norm)
        self.decoder = _Decoder(self.encoder.channels, norm)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _fcn_head(cin: int, width: int, n_classes: int, norm: str) -> nn.Module:
    """The study's task head: 3x3 convolutions ``cin → width → width/2`` (norm, ReLU), 1x1 to the classes."""
    mid = max(width // 2, 4)
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU(inplace=True),
        nn.Conv2d(width, mid, 3, padding=1, bias=False), _norm(norm, mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, n_classes, 1),
    )


class MTDN(nn.Module):
    """MultiTaskDeltaNet: one U-Net (encoder *and* decoder) shared by both frames, the two final
    feature maps concatenated, one fully convolutional head per task.

    ``forward(a, b)`` takes two ``(B, 1, H, W)`` frames (H, W multiples of ``2**depth``) and returns
    ``{target: (B, n_classes, H, W) logits}``.  ``body`` has the same layout as
    :class:`SegUNet`'s, so a trained segmentation U-Net can initialise it
    (:func:`init_from_segmenter`).
    """

    def __init__(self, width: int = 32, depth: int = 4, norm: str = "batch", targets=("a1", "a2"),
                 n_classes: int = 4):
        super().__init__()
        self.depth = depth
        self.targets = tuple(targets)
        self.body = _UNetBody(1, width, depth, norm)
        self.heads = nn.ModuleList([_fcn_head(2 * width, 2 * width, n_classes, norm) for _ in self.targets])

    def forward(self, a, b):
        n = a.shape[0]
        f = self.body(torch.cat([a, b], dim=0))  # shared weights: both frames in one batch
        both = torch.cat([f[:n], f[n:]], dim=1)
        return {t: h(both) for t, h in zip(self.targets, self.heads)}


class SegUNet(nn.Module):
    """Single-frame baseline: a U-Net segmenting each target (background / foreground) from one frame.

    ``forward(x)`` takes ``(B, 1, H, W)`` and returns ``{target: (B, n_classes, H, W) logits}``.
    """

    def __init__(self, width: int = 32, depth: int = 4, norm: str = "batch", targets=("a1", "a2"),
                 n_classes: int = 2):
        super().__init__()
        self.depth = depth
        self.body = _UNetBody(1, width, depth, norm)
        self.heads = _Heads(width, targets, n_classes, norm)

    def forward(self, x):
        return self.heads(self.body(x))


def build_deltanet(config: DeltaNetConfig | str = "full", targets=("a1", "a2")) -> nn.Module:
    """An untrained network of ``config.arch`` with one head per target: :class:`SiameseUNet`,
    :class:`UNet`, :class:`MTDN` (4 change classes) or :class:`SegUNet` (2 classes)."""
    cfg = get_config(config) if isinstance(config, str) else config.validate()
    targets = tuple(targets)
    if not targets or len(set(targets)) != len(targets):
        raise ParameterError(f"targets must be distinct names, got {targets}")
    if cfg.arch == "segunet":
        return SegUNet(cfg.width, cfg.depth, cfg.norm, targets, 2)
    cls = {"siamese": SiameseUNet, "unet": UNet, "mtdn": MTDN}[cfg.arch]
    return cls(cfg.width, cfg.depth, cfg.norm, targets, len(CHANGE_CLASSES))


def init_from_segmenter(model: nn.Module, state_dict: dict) -> int:
    """Copy the U-Net of a trained :class:`SegUNet` (its ``state_dict``) into ``model.body``.

    Returns the number of tensors copied.  Raises :class:`ParameterError` when ``model`` has no
    ``body`` or the two U-Nets differ in layout (width, depth, norm).
    """
    if not hasattr(model, "body"):
        raise ParameterError(f"{type(model).__name__} has no shared U-Net to initialise")
    body = {k[len("body."):]: v for k, v in state_dict.items() if k.startswith("body.")}
    own = model.body.state_dict()
    if set(body) != set(own) or any(tuple(body[k].shape) != tuple(own[k].shape) for k in own):
        raise ParameterError("the segmentation U-Net's layout differs from this model's (width, depth and norm "
                             "must match)")
    model.body.load_state_dict(body)
    return len(body)


def forward_padded(model: nn.Module, a: np.ndarray, b: np.ndarray, depth: int, device) -> dict:
    """Logits ``{target: (1, C, H, W)}`` for one pair of (H, W) frames of any size.

    The frames are reflect-padded to a multiple of ``2**depth`` (replicated when too small to
    reflect) and the logits cropped back.  No ``no_grad`` or mode change: the caller decides.
    """
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


def segment_padded(model: nn.Module, x: np.ndarray, depth: int, device) -> dict:
    """Logits ``{target: (1, C, H, W)}`` of a single-frame model for one (H, W) frame of any size
    (padded like :func:`forward_padded`)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise DataError(f"a frame must be a 2-D image, got shape {x.shape}")
    h, w = x.shape
    m = 2 ** depth
    ph, pw = -h % m, -w % m
    t = torch.from_numpy(x)[None, None].to(device)
    if ph or pw:
        t = F.pad(t, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return {k: v[..., :h, :w] for k, v in model(t).items()}


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
