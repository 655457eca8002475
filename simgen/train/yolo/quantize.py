"""INT8 YOLO for OpenVINO: NNCF post-training quantization calibrated on synthetic images only.

:func:`quantize_openvino` quantizes an fp32 OpenVINO IR of Ultralytics (``format="openvino"``)
with ``nncf.quantize`` (``MIXED`` preset, fast bias correction), keeping the detection head's
box decoding (its ``Sigmoid`` and DFL operations) in float as Ultralytics' own INT8 export does.
Activation ranges come from :func:`calibration_tiles`: simulated TEM micrographs
(:class:`~simgen.simulate.tem.TemSampler`) and Schlieren film images
(:class:`~simgen.simulate.film.FilmSampler`) with fixed seeds, contrast-normalised, resized and
cut into model-sized tiles as the detector does — never real data, whatever the checkpoint was
trained on.  Needs ``openvino`` and ``nncf`` (the ``int8`` extra); callers run it inside
:func:`simgen.train.yolo.exported.openvino_offline`.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np

from simgen.datasets.normalize import normalize_image, resize_image, to_uint8
from simgen.simulate.film import FilmConfig, FilmSampler
from simgen.simulate.tem import TemConfig, TemSampler
from simgen.spread import spread_indices
from simgen.train.tiling import pad_to, tile_windows

__all__ = ["CALIBRATION", "calibration_tiles", "quantize_openvino"]

#: The calibration recipe (part of the cache key of INT8 exports: change it when the recipe changes).
CALIBRATION = "calib=tem4+film4,seed0,max64"


def calibration_tiles(imgsz: int, *, normalize: str = "percentile", scale: float = 1.0, n_images: int = 4,
                      max_tiles: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Model inputs cut from synthetic images, as the detector would see them.

    Parameters
    ----------
    imgsz : int
        Tile side (the model's input side), pixels.
    normalize, scale : str, float
        The detector's contrast normalisation and resize factor.
    n_images : int
        Images of each simulator (default TEM micrographs 512², film images 256²).
    max_tiles : int
        At most this many tiles, evenly spaced over all of them.
    seed : int
        Seed of both samplers.

    Returns
    -------
    list of ``(1, 1, imgsz, imgsz)`` float32 arrays in [0, 1] (uint8-quantised like the
    detector's crops, divided by 255 like Ultralytics' pre-processing).
    """
    tiles = []
    for sampler in (TemSampler(TemConfig(), seed=seed), FilmSampler(FilmConfig(), seed=seed)):
        for k in range(n_images):
            img = resize_image(normalize_image(sampler(k)["image"], normalize), scale)
            for win in tile_windows(img.shape, imgsz, 0):
                crop = win.crop(img)
                crop = pad_to(crop, (max(crop.shape[0], imgsz), max(crop.shape[1], imgsz)))
                tiles.append(to_uint8(crop[:imgsz, :imgsz]))
    pick = spread_indices(len(tiles), max_tiles)
    return [(tiles[i].astype(np.float32) / 255.0)[None, None] for i in pick]


def _head_scope(model, nncf):
    """The detection head's box decoding (Sigmoid, DFL) as an NNCF ignored scope, as Ultralytics' INT8 export."""
    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return None
    head = sigmoids[-1].split("/", 1)[0]
    return nncf.IgnoredScope(names=[op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"
                                    or op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl"))])


def quantize_openvino(fp32_dir, out_dir, *, imgsz: int, normalize: str = "percentile", scale: float = 1.0) -> Path:
    """Write the INT8 quantization of the OpenVINO model in ``fp32_dir`` to ``out_dir``; returns ``out_dir``.

    Parameters
    ----------
    fp32_dir : path
        Ultralytics' OpenVINO export folder (``model.xml``, ``model.bin``, ``metadata.yaml``).
    out_dir : path
        New folder (its name must end in ``_openvino_model`` for ``ultralytics.YOLO``): the INT8
        ``model.xml`` / ``model.bin`` and a copy of ``metadata.yaml``.
    imgsz, normalize, scale
        Passed to :func:`calibration_tiles`.
    """
    import logging

    import nncf
    import openvino

    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    model = openvino.Core().read_model(str(fp32_dir / "model.xml"))
    channels = model.input(0).get_partial_shape()[1]
    channels = channels.get_length() if channels.is_static else 1
    tiles = [np.repeat(t, channels, axis=1) for t in calibration_tiles(imgsz, normalize=normalize, scale=scale)]
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: keep stdout for the commands' output
        quantized = nncf.quantize(model, nncf.Dataset(tiles), preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=len(tiles), ignored_scope=_head_scope(model, nncf))
    out_dir.mkdir(parents=True)
    openvino.save_model(quantized, str(out_dir / "model.xml"), compress_to_fp16=False)
    shutil.copyfile(fp32_dir / "metadata.yaml", out_dir / "metadata.yaml")
    return out_dir
