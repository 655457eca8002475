"""Mask R-CNN (torchvision) for instance segmentation of TEM defects, trained from scratch.

The model is assembled from torchvision parts with **no pretrained weights**
(``weights=None`` everywhere; nothing is ever downloaded):

* backbone: ResNet-18/34/50 or MobileNet-v3 with a feature pyramid (FPN), first
  convolution adapted to **one input channel** (microscopy is greyscale), and
  GroupNorm instead of torchvision's frozen BatchNorm (frozen statistics only make
  sense for ImageNet weights; GroupNorm trains from scratch with 1-4 images per
  batch and behaves the same in train and eval mode; ``norm="batch"`` is offered
  for large-batch accelerator runs);
* anchors suited to small defects (8-128 px, one size per pyramid level);
* a **native-resolution** transform: images are normalised and padded but never
  rescaled (torchvision's default would upscale a 512² image to 800², ~3x slower
  and not what the defects look like).  Boxes and masks come back in the
  input's pixel frame;
* light heads for CPU configs (narrower FPN, smaller box MLP, fewer RoIs).

Presets (:data:`PRESETS`): ``tiny`` (tests, 64² images, seconds per epoch),
``light`` (ResNet-18-FPN, CPU runs) and ``full`` (ResNet-50-FPN with torchvision's
head sizes, for accelerators).

Data come from a simgen HDF5 file with ``/labels/masks`` (instance-id label
images; classes from the ``boxes`` table's ``instance`` column) or from a YOLO
folder with ``masks/`` (the real TEM sets).  Predictions are written back in the
schema: a ``kind="predictions"`` HDF5 file with a ``boxes`` table (``x0, y0, x1,
y1, class, score, instance``) and an instance-id label image per sample in
``/labels/masks``.

Training checkpoints are self-describing (``{"model_type": "maskrcnn", "config":
{...}, "class_names": [...], "state_dict": ...}``) so that ``simgen predict`` can
rebuild the model from the file alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..errors import DataError, ParameterError
from ..rng import check_seed, sample_rng
from . import common
from .yolo import normalize_image

__all__ = [
    "MODEL_TYPE",
    "PRESETS",
    "MaskRCNNConfig",
    "get_config",
    "build_maskrcnn",
    "InstanceSource",
    "open_instances",
    "instance_target",
    "train_maskrcnn",
    "load_maskrcnn",
    "predict_maskrcnn",
    "predict_images",
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


# -- model -------------------------------------------------------------------
def _group_norm(channels: int):
    from torch import nn

    return nn.GroupNorm(math.gcd(32, int(channels)), int(channels))


def _first_conv_to_grey(module) -> None:
    """Replace the first 3-channel convolution of ``module`` by a 1-channel one (same geometry)."""
    from torch import nn

    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.in_channels == 3:
            new = nn.Conv2d(1, child.out_channels, child.kernel_size, child.stride, child.padding,
                            child.dilation, child.groups, child.bias is not None)
            setattr(module, name, new)
            return True
        if _first_conv_to_grey(child):
            return True
    return False


_NATIVE = None


def _native_transform(mean: float = 0.5, std: float = 0.25):
    """A GeneralizedRCNNTransform that normalises and pads to a multiple of 32 but never rescales.

    The subclass is created on first use (torchvision imported lazily) and registered as
    ``simgen.train.maskrcnn.NativeRCNNTransform`` so that whole models stay picklable.
    """
    global _NATIVE
    if _NATIVE is None:
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        class NativeRCNNTransform(GeneralizedRCNNTransform):
            """Normalise and pad to a multiple of 32; keep the native pixel size."""

            def resize(self, image, target=None):
                return image, target

            def postprocess(self, result, image_shapes, original_image_sizes):
                return result if self.training else _paste_masks(result, image_shapes)

        NativeRCNNTransform.__module__ = __name__
        NativeRCNNTransform.__qualname__ = "NativeRCNNTransform"
        globals()["NativeRCNNTransform"] = _NATIVE = NativeRCNNTransform
    # min_size/max_size are unused by the native resize (kept for torchvision's repr only)
    return _NATIVE(min_size=0, max_size=0, image_mean=[mean], image_std=[std])


def __getattr__(name):  # unpickling a whole model in a fresh process finds the class here
    if name == "NativeRCNNTransform":
        _native_transform()
        return _NATIVE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _paste_masks(result, image_shapes):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    for pred, shape in zip(result, image_shapes):
        if "masks" in pred:
            pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], shape)
    return result


def build_maskrcnn(config: MaskRCNNConfig | str = "light", num_classes: int = 1):
    """Build an untrained Mask R-CNN (no weights are downloaded).

    Parameters
    ----------
    config : MaskRCNNConfig or preset name
    num_classes : int
        Number of object classes (background excluded; torchvision's label ``k + 1`` is
        simgen class ``k``).

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        Takes a list of ``(1, H, W)`` float tensors in [0, 1].
    """
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    cfg = get_config(config) if isinstance(config, str) else config.validate()
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ParameterError(f"num_classes must be a positive integer, got {num_classes!r}")
    norm_layer = _group_norm if cfg.norm == "group" else nn.BatchNorm2d
    c = cfg.fpn_channels
    if cfg.backbone.startswith("resnet"):
        from torchvision.models import resnet

        body = getattr(resnet, cfg.backbone)(weights=None, norm_layer=norm_layer)
        _first_conv_to_grey(body)
        stage2 = body.inplanes // 8
        backbone = BackboneWithFPN(
            body, {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)}, [stage2 * 2 ** (k - 1) for k in (1, 2, 3, 4)],
            c, extra_blocks=LastLevelMaxPool(),
        )
        featmaps = ["0", "1", "2", "3"]
    else:
        from torchvision.models.detection.backbone_utils import mobilenet_backbone

        backbone = mobilenet_backbone(backbone_name=cfg.backbone, weights=None, fpn=True, norm_layer=norm_layer,
                                      trainable_layers=6)
        _first_conv_to_grey(backbone.body)
        # mobilenet_backbone fixes the FPN at 256 channels
        c = backbone.out_channels
        featmaps = ["0", "1"]
    from torchvision.ops import MultiScaleRoIAlign

    n_levels = len(cfg.anchor_sizes)
    anchors = AnchorGenerator(tuple((int(s),) for s in cfg.anchor_sizes),
                              (tuple(float(r) for r in cfg.aspect_ratios),) * n_levels)
    box_pool = MultiScaleRoIAlign(featmaps, 7, 2)
    mask_pool = MultiScaleRoIAlign(featmaps, 14, 2)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(c * 7 * 7, cfg.box_head_size),
        box_predictor=FastRCNNPredictor(cfg.box_head_size, int(num_classes) + 1),
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(c, [cfg.mask_head_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, int(num_classes) + 1),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        box_batch_size_per_image=cfg.box_batch_per_image,
        box_detections_per_img=cfg.detections_per_image,
        box_score_thresh=cfg.score_threshold,
    )
    model.transform = _native_transform()
    return model


# -- data --------------------------------------------------------------------
@dataclass
class InstanceSource:
    """Uniform read access to instance-annotated images (HDF5 dataset or YOLO folder).

    Attributes
    ----------
    path : Path
    n : int
    class_names : list of str
    """

    path: Path
    n: int
    class_names: list
    _ds: object = field(repr=False, default=None)
    _folder: object = field(repr=False, default=None)

    def image(self, i: int) -> np.ndarray:
        return self._ds.image(i) if self._ds is not None else self._folder.image(i)

    def mask(self, i: int) -> np.ndarray | None:
        return self._ds.mask(i) if self._ds is not None else self._folder.mask(i)

    def name(self, i: int) -> str:
        return self._ds.name(i) if self._ds is not None else self._folder.names[i]

    def boxes(self, i: int):
        if self._ds is not None:
            return self._ds.rows("boxes", i)
        return self._folder.boxes(i)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_instances(path, require_masks: bool = True) -> InstanceSource:
    """Open a simgen HDF5 file, a sharded set (``manifest.json``) or a YOLO folder with ``masks/``.

    Raises
    ------
    DataError, SchemaError
        If the source is unreadable, holds no images, or no instance masks while ``require_masks``.
    """
    from ..datasets.shards import is_manifest_path

    path = Path(path)
    if path.is_dir() and not is_manifest_path(path):
        from ..datasets.formats.yolo import open_yolo_folder

        folder = open_yolo_folder(path)
        if not folder.has_images:
            raise DataError(f"{path} holds no images/ folder")
        if require_masks and folder.masks_dir is None:
            raise DataError(f"{path} has no masks/ folder; Mask R-CNN needs instance masks")
        return InstanceSource(path, len(folder), list(folder.class_names), _folder=folder)
    from ..datasets.sharded import open_any

    if not path.exists():
        raise DataError(f"{path} does not exist")
    ds = open_any(path)
    try:
        if ds.n == 0:
            raise DataError(f"{path} holds no samples")
        if require_masks and not ds.has("labels/masks"):
            raise DataError(f"{path} has no /labels/masks; Mask R-CNN needs instance masks (e.g. simgen simulate tem)")
        ds.image(0)  # raises SchemaError for label-only files
    except BaseException:
        ds.close()
        raise
    return InstanceSource(path, ds.n, list(ds.class_names), _ds=ds)


def _instance_classes(ids: np.ndarray, boxes, mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Class of every instance id: from the ``instance`` column, else best box overlap, else 0."""
    out = np.zeros(len(ids), np.int64)
    if boxes is None or len(boxes) == 0 or n_classes <= 1:
        return out
    cls = boxes["class"].to_numpy(np.int64)
    if "instance" in boxes.columns:
        lookup = dict(zip(boxes["instance"].to_numpy(np.int64).tolist(), cls.tolist()))
        return np.array([lookup.get(int(k), 0) for k in ids], np.int64)
    from ..evaluate.matching import box_iou

    inst_boxes = _mask_boxes(mask, ids)
    iou = box_iou(inst_boxes, boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))
    best = iou.argmax(axis=1)
    return np.where(iou.max(axis=1) > 0, cls[best], 0)


def _mask_boxes(mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Tight boxes ``(x0, y0, x1, y1)`` of instance ids in a label image (pixel-edge frame)."""
    from scipy import ndimage

    out = np.zeros((len(ids), 4), np.float32)
    if not len(ids):
        return out
    lab = np.asarray(mask)
    slices = ndimage.find_objects(lab.astype(np.int64), max_label=int(ids.max()))
    for k, i in enumerate(ids):
        sl = slices[int(i) - 1]
        out[k] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return out


def instance_target(mask: np.ndarray, classes: np.ndarray | None = None, min_area: int = 1) -> dict:
    """Instance-id label image → per-instance binary masks, boxes and labels (numpy).

    Parameters
    ----------
    mask : (H, W) integer array
        0 = background, every other value one instance.
    classes : (K,) int array, optional
        simgen class of each id in ``np.unique(mask[mask > 0])`` order (default all 0).
    min_area : int
        Instances with fewer pixels are dropped.

    Returns
    -------
    dict with ``ids`` (K,), ``masks`` (K, H, W) uint8, ``boxes`` (K, 4) float32 in the
    pixel-edge frame, ``labels`` (K,) int64 = class + 1 (torchvision's 0 is background).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"instance masks must be 2-D label images, got shape {mask.shape}")
    ids, areas = np.unique(mask[mask > 0], return_counts=True)
    classes = np.zeros(len(ids), np.int64) if classes is None else np.asarray(classes, np.int64)
    keep = areas >= max(int(min_area), 1)
    ids, classes = ids[keep], classes[keep]
    masks = (mask[None, :, :] == ids[:, None, None]).astype(np.uint8)
    return {"ids": ids, "masks": masks, "boxes": _mask_boxes(mask, ids), "labels": classes + 1}


def _augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int = 0, flips: bool = True):
    """Random ``crop``² window of larger images, then random flips and (square) 90° rotations."""
    h, w = image.shape
    if crop and (h > crop or w > crop):
        ch, cw = min(crop, h), min(crop, w)
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        image, mask = image[y:y + ch, x:x + cw], mask[y:y + ch, x:x + cw]
    if flips:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if image.shape[0] == image.shape[1]:
            k = int(rng.integers(4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class _Samples:
    """Training/validation samples of an :class:`InstanceSource`, cached in memory as compact arrays
    (normalised images as float16, masks as uint8/uint16: ~2-3 bytes per pixel)."""

    def __init__(self, source: InstanceSource, cfg: MaskRCNNConfig, n_classes: int, select_empty: bool):
        self.normalize = cfg.normalize
        self.images, self.masks, self.classes, self.names = [], [], [], []
        empty = []
        for i in range(source.n):
            m = source.mask(i)
            if m is None:
                raise DataError(f"{source.path}: sample {source.name(i)} has no instance mask")
            img = source.image(i)
            if m.shape != img.shape:
                raise DataError(f"{source.path}: mask of {source.name(i)} has shape {m.shape}, image {img.shape}")
            ids, areas = np.unique(m[m > 0], return_counts=True)
            ids = ids[areas >= max(cfg.min_instance_area, 1)]
            if not len(ids):
                empty.append(i)
                continue
            self._add(source, i, img, m, ids, n_classes)
        self.n_with = len(self.images)
        n_empty = len(empty)
        if select_empty and empty:
            n_keep = min(n_empty, math.floor(cfg.max_empty_fraction * max(self.n_with, 1)))
            chosen = sorted(sample_rng(cfg.seed, 0, 7).choice(n_empty, n_keep, replace=False).tolist())
            empty = [empty[k] for k in chosen]
        for i in empty:
            m = source.mask(i)
            self._add(source, i, source.image(i), m, np.zeros(0, np.int64), n_classes)
        self.n_empty_kept = len(empty)
        self.n_empty_skipped = n_empty - len(empty)

    def _add(self, source, i, img, m, ids, n_classes):
        cls = _instance_classes(ids, source.boxes(i), m, n_classes)
        self.images.append(normalize_image(img, self.normalize).astype(np.float16))  # half the memory
        self.masks.append(m.astype(np.uint16 if m.max(initial=0) > 255 else np.uint8))
        self.classes.append(dict(zip(ids.tolist(), cls.tolist())))
        self.names.append(source.name(i))

    def __len__(self):
        return len(self.images)

    def item(self, k: int, cfg: MaskRCNNConfig, rng: np.random.Generator | None, device):
        import torch

        img, m = self.images[k].astype(np.float32), self.masks[k]
        if rng is not None:  # training: crop + augmentation; validation: whole image
            img, m = _augment(img, m, rng, cfg.crop, cfg.augment)
        ids = np.unique(m[m > 0])
        cls = np.array([self.classes[k].get(int(i), 0) for i in ids], np.int64)
        t = instance_target(m, cls, cfg.min_instance_area)
        target = {
            "boxes": torch.from_numpy(t["boxes"]).to(device),
            "labels": torch.from_numpy(t["labels"]).to(device),
            "masks": torch.from_numpy(t["masks"]).to(device),
        }
        return torch.from_numpy(img[None]).to(device), target


# -- training ----------------------------------------------------------------
def _check_classes(train_names: list, val_names: list | None) -> list:
    names = list(train_names) or ["object"]
    if val_names and list(val_names) != list(train_names):
        raise DataError(f"validation classes {val_names} differ from training classes {train_names}")
    return names


def _val_metrics(model, samples: _Samples, cfg: MaskRCNNConfig, device) -> dict:
    """Validation loss (train-mode forward, no gradient, fixed RNG) and detection F1."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model.train()
        _freeze_batchnorm(model)
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(samples), cfg.batch_size):
                batch = [samples.item(k, cfg, None, device) for k in range(start, min(start + cfg.batch_size, len(samples)))]
                losses = model([b[0] for b in batch], [b[1] for b in batch])
                total += float(sum(losses.values())) * len(batch)
                count += len(batch)
    f1 = _f1(model, samples, cfg, device)
    return {"val_loss": total / max(count, 1), "val_f1": f1}


def _freeze_batchnorm(model) -> None:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _f1(model, samples: _Samples, cfg: MaskRCNNConfig, device) -> float:
    import pandas as pd

    from ..evaluate.detection import detection_counts

    preds, gts = [], []
    for k in range(len(samples)):
        out = _predict_one(model, samples.images[k].astype(np.float32), device)
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
    """Train a Mask R-CNN from scratch; write ``last.pt``, ``best.pt`` and ``history.csv`` in ``out_dir``.

    Parameters
    ----------
    train, val : path-like
        simgen HDF5 file with ``/labels/masks`` or YOLO folder with ``masks/``.
    out_dir : path-like
        Run directory.  ``last.pt`` is written atomically after every epoch (model,
        optimizer, scheduler, RNG and early-stopping state); ``best.pt`` whenever the
        monitored metric improves.
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
    dict with ``best`` (epoch and metrics), ``epochs_run``, ``stopped_early``, ``out_dir``,
    ``history`` (list of per-epoch dicts).
    """
    import torch

    cfg = get_config(config) if isinstance(config, str) else config.validate()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs).validate()
    dev = common.select_device(device)
    # open (and thereby validate) the data before the run folder is touched
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
    run = common.RunDir(out_dir, resume=resume, overwrite=overwrite)
    state = run.resume_state()
    if state is not None:
        if state.get("model_type") != MODEL_TYPE:
            raise ParameterError(f"{run.last} is a {state.get('model_type')!r} checkpoint, not {MODEL_TYPE!r}")
        stored = MaskRCNNConfig.from_dict(state["config"])
        cfg = replace(stored, epochs=cfg.epochs if epochs is not None else stored.epochs).validate()
        if state.get("class_names") != class_names:
            raise DataError(f"classes of {train} {class_names} differ from the checkpoint's {state.get('class_names')}")
    run.write_json("config.json", {"model_type": MODEL_TYPE, "config": cfg.to_dict(), "class_names": class_names,
                                   "train": str(train), "val": None if val is None else str(val)})

    common.setup_threads()
    common.seed_everything(cfg.seed)
    model = build_maskrcnn(cfg, len(class_names)).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    warm = max(cfg.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))

    def train_epoch(epoch: int) -> dict:
        model.train()
        order = sample_rng(cfg.seed, epoch, 1).permutation(len(train_set))
        batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        sums: dict[str, float] = {}
        n_seen = 0
        for b in _track(batches, f"epoch {epoch + 1}/{cfg.epochs}", progress):
            items = [train_set.item(int(k), cfg, sample_rng(cfg.seed, epoch, 2, int(k)), dev) for k in b]
            losses = model([x for x, _ in items], [t for _, t in items])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise DataError(f"training diverged (loss {float(loss)}) in epoch {epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(b)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * len(b)
            n_seen += len(b)
        row = {k: v / n_seen for k, v in sums.items()}
        if val_set is not None and len(val_set):
            row.update(_val_metrics(model, val_set, cfg, dev))
        return row

    monitor = cfg.monitor if val_set is not None and len(val_set) else "loss"
    logger = common.ProgressLog(run.path / "metrics.jsonl", total_epochs=cfg.epochs, enabled=log, prefix="maskrcnn ")
    logger.message(f"[{cfg.preset}/{cfg.backbone}] on {dev}: {len(train_set)} training images "
                   f"({train_set.n_empty_kept} without instances kept, {train_set.n_empty_skipped} skipped), "
                   f"{len(val_set) if val_set else 0} validation images, classes {class_names}; "
                   f"monitoring {monitor}")
    result = _fit_epochs(
        run, model, opt, sched, train_epoch, state=state, epochs=cfg.epochs, monitor=monitor,
        mode="max" if monitor == "val_f1" else "min", patience=cfg.patience, min_delta=cfg.min_delta,
        header={"model_type": MODEL_TYPE, "config": cfg.to_dict(), "class_names": class_names},
        logger=logger, stop_after=stop_after,
    )
    result["n_train"] = len(train_set)
    return result


def _track(iterable, description: str, enabled: bool, total: int | None = None):
    from ..progress import track

    return track(iterable, total=total if total is not None else len(iterable), description=description,
                 enabled=enabled)


def _fit_epochs(run, model, opt, sched, train_epoch, *, state, epochs, monitor, mode, patience, min_delta, header,
                logger, stop_after=None) -> dict:
    """Epoch loop shared by the trainers of this module: checkpoint, early stopping, resume.

    ``state`` is the resumed ``last.pt`` (or ``None``).  After every epoch ``last.pt`` holds
    model, optimizer, scheduler, torch RNG, early-stopping state and history, so a killed
    run restarted from it repeats exactly what the uninterrupted run would have done.
    """
    import torch

    stopper = common.EarlyStopping(patience=patience, mode=mode, min_delta=min_delta)
    history: list[dict] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():  # pragma: no cover - GPU only
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        if stopper.should_stop:
            logger.message(f"run had stopped early at epoch {start}; nothing to do")
            start = epochs
    run_now = 0
    for epoch in range(start, epochs):
        row = train_epoch(epoch)
        value = row.get(monitor, float("nan"))
        improved = stopper.step(value, epoch)
        row = {"epoch": epoch, **{k: float(v) for k, v in row.items()}, "lr": float(opt.param_groups[0]["lr"])}
        history.append(row)
        ckpt = {
            **header,
            "epoch": epoch,
            "state_dict": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "early_stopping": stopper.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "history": history,
            "monitor": monitor,
        }
        run.save(ckpt, best=improved)
        logger.epoch(epoch, **{k: v for k, v in row.items() if k != "epoch"}, best="*" if improved else "")
        run_now += 1
        if stopper.should_stop or (stop_after is not None and run_now >= stop_after):
            break
    return {
        "out_dir": str(run.path),
        "best": {"epoch": stopper.best_epoch, monitor: stopper.best},
        "monitor": monitor,
        "epochs_run": run_now,
        "stopped_early": stopper.should_stop,
        "history": history,
        "last": str(run.last),
        "best_checkpoint": str(run.best),
    }


# -- inference ---------------------------------------------------------------
def load_maskrcnn(checkpoint, device: str = "auto"):
    """Rebuild a trained model from a checkpoint: returns ``(model, config, class_names)`` in eval mode."""
    state = common.load_checkpoint(checkpoint, weights_only=True)
    if state.get("model_type") != MODEL_TYPE:
        raise ParameterError(f"{checkpoint} is a {state.get('model_type')!r} checkpoint, not {MODEL_TYPE!r}")
    cfg = MaskRCNNConfig.from_dict(state["config"])
    names = list(state.get("class_names") or ["object"])
    dev = common.select_device(device)
    model = build_maskrcnn(cfg, len(names))
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    return model, cfg, names


def _predict_one(model, image: np.ndarray, device) -> dict:
    import torch

    model.eval()
    with torch.no_grad():
        out = model([torch.from_numpy(np.ascontiguousarray(image, np.float32)[None]).to(device)])[0]
    return {
        "boxes": out["boxes"].cpu().numpy().astype(np.float32).reshape(-1, 4),
        "scores": out["scores"].cpu().numpy().astype(np.float32),
        "labels": out["labels"].cpu().numpy().astype(np.int64),
        "masks": out["masks"][:, 0].cpu().numpy().astype(np.float32) if "masks" in out else None,
    }


def predict_images(model, images, *, mask_threshold: float = 0.5, mask_conf: float = 0.5, normalize: str = "percentile",
                   device=None):
    """Run a model on float images; yield ``(boxes DataFrame, instance label image)`` per image.

    Boxes (``x0, y0, x1, y1, class, score, instance``) hold every detection with score >=
    the model's ``score_threshold`` (so PR curves can be drawn).  The label image paints
    detections with ``score >= mask_conf`` (pixels with mask probability >= ``mask_threshold``),
    highest score on top; ``instance`` is the detection's id in it (0 = not painted).
    Images are contrast-normalised with ``normalize`` first (use the model's ``config.normalize``).
    """
    import pandas as pd

    device = device if device is not None else next(model.parameters()).device
    for image in images:
        image = np.asarray(image, np.float32)
        if image.ndim != 2:
            raise DataError(f"images must be 2-D greyscale, got shape {image.shape}")
        out = _predict_one(model, normalize_image(image, normalize), device)
        order = np.argsort(-out["scores"], kind="stable")
        boxes, scores, labels = out["boxes"][order], out["scores"][order], out["labels"][order]
        label_image = np.zeros(image.shape, np.uint16)
        instance = np.zeros(len(order), np.int32)
        painted = 0
        for k in range(len(order) - 1, -1, -1):  # lowest score first, so the best ends on top
            if scores[k] < mask_conf or out["masks"] is None:
                continue
            pix = out["masks"][order[k]] >= mask_threshold
            if pix.any():
                instance[k] = k + 1
                label_image[pix] = k + 1
                painted += 1
        # renumber painted ids to 1..K in score order (ids fully covered by better ones vanish)
        present = np.unique(label_image[label_image > 0])
        remap = np.zeros(len(order) + 1, np.uint16)
        remap[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
        label_image = remap[label_image]
        instance = np.where(instance > 0, remap[instance].astype(np.int32), 0)
        df = pd.DataFrame({"x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
                           "class": (labels - 1).astype(np.int16), "score": scores, "instance": instance})
        yield df, label_image


def _image_inputs(source):
    """``(n, names, read(i), shapes, handle)`` for an HDF5 file, a sharded set or an image folder."""
    from ..datasets.imageio import list_images, read_image
    from ..datasets.sharded import open_any
    from ..datasets.shards import is_manifest_path

    source = Path(source)
    if source.is_dir() and not is_manifest_path(source):
        from PIL import Image

        folder = source / "images" if (source / "images").is_dir() else source
        files = list_images(folder)
        if not files:
            raise DataError(f"{folder} holds no images (.png, .tif, .jpg, ...)")
        shapes = []
        for p in files:
            try:
                with Image.open(p) as im:
                    shapes.append((im.height, im.width))
            except OSError as exc:
                raise DataError(f"cannot read image {p}: {exc}") from None
        return len(files), [p.name for p in files], (lambda i: read_image(files[i])), shapes, None
    if not source.exists():
        raise DataError(f"{source} does not exist")
    ds = open_any(source)
    try:
        if ds.n == 0:
            raise DataError(f"{source} holds no samples")
        ds.image(0)  # SchemaError for label-only files
    except BaseException:
        ds.close()
        raise
    return ds.n, [ds.name(i) for i in range(ds.n)], ds.image, [ds.shape(i) for i in range(ds.n)], ds


def predict_maskrcnn(
    checkpoint,
    source,
    out,
    *,
    overwrite: bool = False,
    mask_conf: float = 0.5,
    device: str = "auto",
    progress: bool = False,
) -> Path:
    """Predict instances in an HDF5 dataset or an image folder; write a predictions HDF5 file.

    The output (``kind="predictions"``) has one sample per input image, in input order:
    ``/names``, ``/shapes``, the ``boxes`` table (``x0, y0, x1, y1, class, score,
    instance``) and ``/labels/masks`` (instance-id label images).  Root attributes
    record the checkpoint, the source and the model type.  Images of different sizes
    (a folder of 512² tiles and a 1024² frame) share one ``(N, H_max, W_max)`` mask
    stack: smaller label images are zero-padded at the bottom/right, the root attribute
    ``masks_padded`` is 1 and ``/shapes`` holds each image's true ``(H, W)`` — crop
    ``mask(i)[:H, :W]``.

    Raises
    ------
    ParameterError, SchemaError, DataError
        Bad thresholds, an existing output without ``overwrite``, a foreign checkpoint, an
        unreadable source.  Nothing is written then.
    """
    from ..datasets.atomic import check_output
    from ..datasets.h5io import DatasetWriter

    if not 0.0 <= float(mask_conf) <= 1.0:
        raise ParameterError(f"mask confidence must be in [0, 1], got {mask_conf}")
    check_output(out, overwrite)
    model, cfg, names = load_maskrcnn(checkpoint, device)
    n, file_names, read, shapes, handle = _image_inputs(source)
    full = (max(h for h, _ in shapes), max(w for _, w in shapes))
    padded = any(tuple(sh) != full for sh in shapes)
    try:
        with DatasetWriter(
            out, kind="predictions", class_names=names, overwrite=overwrite,
            generator={"function": "simgen.train.maskrcnn.predict_maskrcnn", "checkpoint": str(checkpoint),
                       "source": str(source), "mask_conf": float(mask_conf), "config": cfg.to_dict()},
            attrs={"model_type": MODEL_TYPE, "source": str(source), "checkpoint": str(checkpoint),
                   "masks_padded": int(padded)},
        ) as writer:
            images = (read(i) for i in range(n))
            results = predict_images(model, images, mask_threshold=cfg.mask_threshold, mask_conf=mask_conf,
                                     normalize=cfg.normalize)
            for i, (boxes, label_image) in enumerate(_track(results, "predict", progress, total=n)):
                h, w = label_image.shape
                if padded:  # one (N, H, W) stack: smaller images are padded with 0 at the bottom/right
                    label_image = np.pad(label_image, ((0, full[0] - h), (0, full[1] - w)))
                writer.append(None, boxes=boxes, mask=label_image, name=file_names[i], shape=(h, w))
    finally:
        if handle is not None:
            handle.close()
    return Path(out)


