"""Mask R-CNN run settings (:class:`MaskRCNNConfig`) and presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from simgen.errors import ParameterError
from simgen.rng import check_seed

__all__ = [
    "BACKBONES",
    "MODEL_TYPE",
    "PRESETS",
    "MaskRCNNConfig",
    "get_config",
]


MODEL_TYPE = "maskrcnn"


BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small")


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Model and training parameters (all JSON-serialisable; stored in every checkpoint).

    Model
    -----
    backbone : {"resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small"}
        ResNets feed a 5-level pyramid (strides 4-64); torchvision's MobileNet-v3 FPN uses
        only its stride-16/32 stages (3 levels, 256 channels), too coarse for defects under
        ~16 px — it is offered for speed on larger objects.
    norm : {"group", "batch"}
        Normalisation in the backbone.  GroupNorm (default) trains from scratch with tiny
        batches; BatchNorm needs >= 8 images per batch.
    fpn_channels : int
        Width of the feature pyramid (torchvision: 256).
    anchor_sizes : tuple of int
        One anchor size (px) per pyramid level, finest first (5 levels for ResNets).
    aspect_ratios : tuple of float
    box_head_size : int
        Hidden width of the two-layer box MLP (torchvision: 1024).
    mask_head_channels : int
        Width of the four mask-head convolutions (torchvision: 256).
    rpn_pre_nms_train, rpn_post_nms_train, rpn_pre_nms_test, rpn_post_nms_test : int
        Proposals kept per image before / after RPN NMS.
    box_batch_per_image : int
        RoIs sampled per image for the box/mask losses (torchvision: 512).
    detections_per_image : int
        Maximum detections per image (TEM frames hold hundreds of loops).
    score_threshold : float
        Minimum score of a reported detection.
    mask_threshold : float
        Mask probability above which a pixel belongs to an instance.

    Training
    --------
    epochs, batch_size, optimizer ({"adamw", "sgd"}), lr, weight_decay, momentum,
    warmup_steps (linear learning-rate warm-up), grad_clip (max gradient norm, 0 = off),
    patience (epochs without improvement before stopping, 0 = never stop early),
    min_delta, monitor ({"val_loss", "val_f1"}; without validation data the training loss
    is monitored), normalize ({"percentile", "minmax", "none"}: per-image contrast
    stretch applied in training and prediction, as for YOLO), crop (train on random crop²
    windows of larger images, e.g. 2048² real frames; 0 = whole images; prediction always
    sees whole images), val_iou / val_conf (matching IoU and confidence for ``val_f1``),
    augment (random flips and, for square images, 90° rotations), min_instance_area
    (instances smaller than this many pixels are ignored), max_empty_fraction (images
    without instances kept as negatives, as a fraction of the images with instances),
    seed.
    """

    preset: str = "light"
    backbone: str = "resnet18"
    norm: str = "group"
    fpn_channels: int = 128
    anchor_sizes: tuple = (8, 16, 32, 64, 128)
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    box_head_size: int = 256
    mask_head_channels: int = 128
    rpn_pre_nms_train: int = 1000
    rpn_post_nms_train: int = 500
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 500
    box_batch_per_image: int = 128
    detections_per_image: int = 300
    score_threshold: float = 0.05
    mask_threshold: float = 0.5
    # training
    epochs: int = 30
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 100
    grad_clip: float = 10.0
    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    val_iou: float = 0.5
    val_conf: float = 0.5
    normalize: str = "percentile"
    crop: int = 0
    augment: bool = True
    min_instance_area: int = 4
    max_empty_fraction: float = 0.1
    seed: int = 0

    def validate(self) -> "MaskRCNNConfig":
        """Check every field; raise :class:`ParameterError` naming the first bad one."""
        if self.backbone not in BACKBONES:
            raise ParameterError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.norm not in ("group", "batch"):
            raise ParameterError(f"norm must be 'group' or 'batch', got {self.norm!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ParameterError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.normalize not in ("percentile", "minmax", "none"):
            raise ParameterError(f"normalize must be percentile, minmax or none, got {self.normalize!r}")
        if self.monitor not in ("val_loss", "val_f1"):
            raise ParameterError(f"monitor must be 'val_loss' or 'val_f1', got {self.monitor!r}")
        n_levels = 5 if self.backbone.startswith("resnet") else 3
        if len(self.anchor_sizes) != n_levels or any(float(s) <= 0 for s in self.anchor_sizes):
            raise ParameterError(
                f"anchor_sizes must hold {n_levels} positive sizes (one per pyramid level of {self.backbone}), "
                f"got {tuple(self.anchor_sizes)}"
            )
        if not self.aspect_ratios or any(float(r) <= 0 for r in self.aspect_ratios):
            raise ParameterError(f"aspect_ratios must be positive, got {tuple(self.aspect_ratios)}")
        for name in ("fpn_channels", "box_head_size", "mask_head_channels", "rpn_pre_nms_train", "rpn_post_nms_train",
                     "rpn_pre_nms_test", "rpn_post_nms_test", "box_batch_per_image", "detections_per_image",
                     "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.crop and self.crop < 32:
            raise ParameterError(f"crop must be 0 (off) or >= 32 px, got {self.crop}")
        if self.norm == "group" and self.fpn_channels % 8:
            raise ParameterError(f"fpn_channels must be a multiple of 8, got {self.fpn_channels}")
        for name in ("warmup_steps", "patience", "min_instance_area", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ParameterError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("score_threshold", "mask_threshold", "val_iou", "val_conf"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ParameterError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("lr", "weight_decay", "momentum", "grad_clip", "min_delta", "max_empty_fraction"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ParameterError(f"{name} must be a non-negative number, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        check_seed(self.seed)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["anchor_sizes"] = [int(s) for s in self.anchor_sizes]
        d["aspect_ratios"] = [float(r) for r in self.aspect_ratios]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MaskRCNNConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"unknown Mask R-CNN config field(s): {', '.join(unknown)}")
        d = dict(d)
        for key in ("anchor_sizes", "aspect_ratios"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d).validate()


#: Named configurations.  ``tiny``: unit tests and smoke runs on 64² images (a few
#: seconds per epoch on one core).  ``light``: ResNet-18-FPN for CPU runs on 512²
#: images.  ``full``: ResNet-50-FPN with torchvision's head sizes, for GPUs.
PRESETS: dict[str, MaskRCNNConfig] = {
    "tiny": MaskRCNNConfig(
        preset="tiny", backbone="resnet18", fpn_channels=32, anchor_sizes=(4, 8, 16, 32, 64), box_head_size=64,
        mask_head_channels=32, rpn_pre_nms_train=200, rpn_post_nms_train=100, rpn_pre_nms_test=200,
        rpn_post_nms_test=100, box_batch_per_image=32, detections_per_image=50, epochs=20, batch_size=4,
        lr=2e-3, warmup_steps=5, patience=0, min_instance_area=2,
    ),
    "light": MaskRCNNConfig(preset="light"),
    "full": MaskRCNNConfig(
        preset="full", backbone="resnet50", fpn_channels=256, box_head_size=1024, mask_head_channels=256,
        rpn_pre_nms_train=2000, rpn_post_nms_train=2000, rpn_pre_nms_test=1000, rpn_post_nms_test=1000,
        box_batch_per_image=512, epochs=50, batch_size=4, lr=2e-4, warmup_steps=500,
    ),
}


def get_config(preset: str = "light", **overrides) -> MaskRCNNConfig:
    """A preset with some fields replaced (``None`` values are ignored), validated."""
    if preset not in PRESETS:
        raise ParameterError(f"config must be one of {', '.join(PRESETS)}, got {preset!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(MaskRCNNConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"unknown Mask R-CNN config field(s): {', '.join(unknown)}")
    for key in ("anchor_sizes", "aspect_ratios"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    base = PRESETS[preset]
    if "backbone" in overrides and "anchor_sizes" not in overrides:
        # MobileNet pyramids have 3 levels (strides 16, 32, 64), ResNet ones 5 (strides 4 ... 64)
        mobile = str(overrides["backbone"]).startswith("mobilenet")
        if mobile and len(base.anchor_sizes) == 5:
            overrides["anchor_sizes"] = tuple(base.anchor_sizes[2:])
        elif not mobile and len(base.anchor_sizes) == 3:
            overrides["anchor_sizes"] = tuple(s // 4 for s in base.anchor_sizes[:2]) + tuple(base.anchor_sizes)
    return replace(base, **overrides).validate()

