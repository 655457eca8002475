"""Mask-conditioned latent diffusion: learn the look of microscopy images, generate labelled image–mask pairs.

A small :class:`diffusers.AutoencoderKL` and a :class:`diffusers.UNet2DModel` denoiser
conditioned on the multi-class defect mask (built from configs, never downloaded
weights), trained with the DDPM objective and sampled with DDIM or DPM-Solver++,
optionally with classifier-free guidance.  New masks come from layout statistics
learned from the training masks (or from a simulator), so generated pairs need no
manual labels.

Public API
----------
* :class:`LDMConfig` — hyper-parameters; presets ``"tiny"`` (CPU) and ``"full"``.
* :class:`TrainingPairs` — images + class maps + instance masks in memory
  (read files with :mod:`simgen.datasets.ldm_io`); :func:`toy_pairs` makes a synthetic set.
* :func:`simgen.train.ldm.train_ldm` — resumable two-phase training into a run folder (a trainer, so it lives in ``train/``).
* :func:`load_ldm` → :class:`TrainedLDM` with ``sample(...)`` / ``generate_images(...)``.
* :class:`MaskStatistics`, :class:`SimulatorMaskSource` — mask sources.
* :mod:`simgen.augment.ldm.quality` — sample-quality checks.

Names are resolved lazily: ``config``, ``masks``, ``data`` and ``quality`` are pure
NumPy; touching the model or sampler imports torch and diffusers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LDMConfig": "config",
    "PRESETS": "config",
    "TrainingPairs": "data",
    "CropSampler": "data",
    "toy_pairs": "data",
    "MaskStatistics": "masks",
    "SimulatorMaskSource": "masks",
    "class_map_from_instances": "masks",
    "instance_classes_from_map": "masks",
    "instance_properties": "masks",
    "MaskLDM": "model",
    "one_hot_masks": "model",
    "load_ldm": "sampling",
    "TrainedLDM": "sampling",
}

__all__ = [  # noqa: RUF022 - grouped like _EXPORTS
    "CropSampler",
    "LDMConfig",
    "MaskLDM",
    "MaskStatistics",
    "PRESETS",
    "SimulatorMaskSource",
    "TrainedLDM",
    "TrainingPairs",
    "class_map_from_instances",
    "instance_classes_from_map",
    "instance_properties",
    "load_ldm",
    "one_hot_masks",
    "toy_pairs",
]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
