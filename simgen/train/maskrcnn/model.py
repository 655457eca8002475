"""The Mask R-CNN network: torchvision's model for greyscale micrographs at native size, built untrained
(nothing is downloaded)."""

from __future__ import annotations

import math

from simgen.errors import ParameterError
from simgen.train.maskrcnn.config import MaskRCNNConfig, get_config

__all__ = [
    "build_maskrcnn",
    "freeze_batchnorm",
]


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

    The subclass is created on first use, so that importing this module does not import torchvision.
    Checkpoints hold state dicts only, so the class never needs to be found by name.
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

        _NATIVE = NativeRCNNTransform
    # min_size/max_size are unused by the native resize (kept for torchvision's repr only)
    return _NATIVE(min_size=0, max_size=0, image_mean=[mean], image_std=[std])


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


def freeze_batchnorm(model) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics frozen), the rest unchanged."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()

