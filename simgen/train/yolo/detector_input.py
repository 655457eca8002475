"""What a :class:`YoloDetector` feeds its network: the uint8 tiles of an image and the tensor
Ultralytics' predictor makes of them (letterbox, HWC→BCHW, ``/255``).

Used to show real images to a network exactly as prediction does (:mod:`.adapt_batchnorm`) and to
count the tiles of a training set (:mod:`.self_train`).  torch and Ultralytics are imported lazily.
"""

from __future__ import annotations

import numpy as np

from simgen.datasets.normalize import normalize_image, resize_image, to_uint8
from simgen.train.tiling import pad_to, tile_windows
from simgen.train.yolo.predict import YoloDetector


def _detector_crops(det: YoloDetector, image: np.ndarray) -> list[np.ndarray]:
    """The uint8 tiles :meth:`YoloDetector.detect` feeds the network for ``image`` (same normalization, scale, tiling)."""
    img = resize_image(normalize_image(image, det.normalize), det.scale)
    if not det.tile:
        return [to_uint8(img)]
    crops = []
    for win in tile_windows(img.shape, det.tile, det.overlap):
        c = win.crop(img)
        if c.shape != (det.tile, det.tile):
            c = pad_to(c, (max(c.shape[0], det.tile), max(c.shape[1], det.tile)))
        crops.append(to_uint8(c))
    return crops


def _n_tiles(shape: tuple[int, int], tile: int, overlap: int, scale: float) -> int:
    h, w = (max(1, int(round(s * scale))) for s in shape) if scale != 1.0 else shape
    return len(tile_windows((h, w), tile, overlap)) if tile else 1


def _network_input(crops: list[np.ndarray], imgsz: int, stride: int, channels: int):
    """Ultralytics' predictor preprocessing of uint8 crops: letterbox, HWC→BCHW, /255 (float tensor)."""
    import torch
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox(imgsz, auto=len({c.shape for c in crops}) == 1, stride=stride)
    out = []
    for c in crops:
        x = np.atleast_3d(c)
        if channels != x.shape[2]:
            x = np.repeat(x[..., :1], channels, axis=2)
        x = np.atleast_3d(letterbox(image=x))
        out.append(x)
    t = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    return t.float().div_(255.0)


def _input_channels(net) -> int:
    import torch

    first = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3
