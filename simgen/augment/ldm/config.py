"""Configurations of the mask-conditioned latent diffusion model (plain Python, no torch).

Two presets:

* ``tiny`` — 64² crops, a VAE with downsampling factor 4 (16² × 4 latents), a
  3-level UNet of 32/64/64 channels with attention only at 4² resolution; 600 VAE +
  1500 denoiser steps, about ten minutes on one free CPU thread (see
  ``benchmarks/ldm.py``).  The few-shot study uses it; tests use a narrower variant.
* ``full`` — 256² crops, a larger VAE (factor 4, 64² × 4 latents) and a 4-level
  UNet of 64/128/256/256 channels with attention at the two coarsest levels; meant
  for an accelerator (it runs, slowly, on a CPU).

Every field can be overridden (``LDMConfig.preset("tiny", unet_steps=500)``);
:meth:`LDMConfig.validate` checks the combination before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from simgen.errors import ParameterError

__all__ = ["PRESETS", "SCHEDULERS", "LDMConfig"]

#: Sampling schedulers understood by :mod:`simgen.augment.ldm.model`.
SCHEDULERS = ("ddim", "dpm")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class LDMConfig:
    """All hyper-parameters of one LDM run.

    Attributes
    ----------
    name : str
        Preset the config came from (``"tiny"``, ``"full"`` or ``"custom"``).
    crop_size : int
        Side of the square training crops (pixels).
    vae_channels : tuple of int
        ``block_out_channels`` of the :class:`diffusers.AutoencoderKL`; the VAE
        downsamples by ``2 ** (len(vae_channels) - 1)``.
    vae_layers : int
        ResNet layers per VAE block.
    vae_attention : bool
        Self-attention in the VAE's middle block.
    latent_channels : int
        Channels of the latent image.
    kl_weight : float
        Weight of the KL term of the VAE loss (L1 reconstruction + ``kl_weight`` · KL).
    texture_noise : bool
        Add to every generated image a stationary Gaussian field with the power spectrum
        of the VAE's reconstruction residuals (measured on training crops after VAE
        training).  A pixel-loss VAE averages away detector noise and fine grain
        (reconstructions lose about a decade of power above 0.2 cycles/px); this puts
        that power back without inventing structure.  It is independent of the mask.
    unet_channels : tuple of int
        ``block_out_channels`` of the :class:`diffusers.UNet2DModel` denoiser.
    unet_layers : int
        ResNet layers per UNet block.
    unet_attention_levels : int
        Number of coarsest UNet levels with self-attention (0 = none).
    mask_channels : int
        Channels of the learned mask embedding concatenated to the noisy latent.
    train_timesteps : int
        DDPM training timesteps.
    beta_schedule : str
        ``"linear"``, ``"scaled_linear"`` (LDM default) or ``"squaredcos_cap_v2"``.
    beta_start, beta_end : float
        Noise schedule end points (ignored by the cosine schedule).
    cfg_dropout : float
        Probability of dropping the mask during training (classifier-free guidance).
    sample_steps : int
        Default number of sampling steps.
    scheduler : {"ddim", "dpm"}
        Default sampler: DDIM (η = 0) or DPM-Solver++ (2nd order multistep).
    guidance : float
        Default classifier-free guidance scale (1 = plain conditional sampling).
    batch_size : int
        Crops per denoiser step.
    vae_batch_size : int
        Crops per VAE step (the VAE works at full resolution: the costlier phase).
    vae_steps, unet_steps : int
        Optimiser steps of the two training phases (VAE first, then the denoiser on
        frozen latents).
    vae_lr, unet_lr : float
        AdamW learning rates (constant after a linear warm-up of ``warmup`` steps).
    warmup : int
    weight_decay : float
    ema_decay : float
        Decay of the exponential moving average of the denoiser weights used for
        sampling (0 disables EMA).
    flips : bool
        Augment crops with random flips and 90° rotations (image and mask together).
    latent_stat_crops : int
        Random crops encoded after VAE training to measure the latent mean / std
        (the first batch also gives the reported reconstruction error).
    checkpoint_every : int
        Save a resumable checkpoint every this many steps (and at each phase end).
    log_every : int
        Record the mean loss every this many steps.
    """

    name: str = "tiny"
    crop_size: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_layers: int = 1
    vae_attention: bool = False
    latent_channels: int = 4
    kl_weight: float = 1e-6
    texture_noise: bool = True
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers: int = 1
    unet_attention_levels: int = 1
    mask_channels: int = 8
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    cfg_dropout: float = 0.1
    sample_steps: int = 25
    scheduler: str = "ddim"
    guidance: float = 1.25
    batch_size: int = 16
    vae_batch_size: int = 8
    vae_steps: int = 600
    unet_steps: int = 1500
    vae_lr: float = 1e-3
    unet_lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    flips: bool = True
    latent_stat_crops: int = 256
    checkpoint_every: int = 250
    log_every: int = 25

    # -- derived ------------------------------------------------------------
    @property
    def downsample(self) -> int:
        """Pixels per latent cell along each axis."""
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.crop_size // self.downsample

    @property
    def size_multiple(self) -> int:
        """Generated image sides must be multiples of this (VAE × UNet downsampling)."""
        return self.downsample * 2 ** (len(self.unet_channels) - 1)

    @property
    def total_steps(self) -> int:
        return self.vae_steps + self.unet_steps

    # -- construction ---------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> LDMConfig:
        """A named preset (``"tiny"`` or ``"full"``) with optional field overrides."""
        if name not in PRESETS:
            raise ParameterError(f"unknown LDM config {name!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name].replace(**overrides)

    def replace(self, **changes) -> LDMConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown LDM config field(s): {', '.join(sorted(unknown))}")
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return dataclasses.replace(self, **changes)

    def with_max_steps(self, max_steps: int | None) -> LDMConfig:
        """Scale both phases so that ``vae_steps + unet_steps == max_steps`` (each >= 1).

        The VAE keeps its share of the preset's total (rounded, at least 1 step).
        """
        if max_steps is None:
            return self
        if int(max_steps) != max_steps or max_steps < 2:
            raise ParameterError(f"max_steps must be an integer >= 2 (one VAE + one denoiser step), got {max_steps}")
        max_steps = int(max_steps)
        vae = min(max_steps - 1, max(1, round(max_steps * self.vae_steps / self.total_steps)))
        return self.replace(vae_steps=vae, unet_steps=max_steps - vae,
                            checkpoint_every=min(self.checkpoint_every, max_steps),
                            warmup=min(self.warmup, max(0, max_steps // 10)))

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f, v in
                ((f, getattr(self, f.name)) for f in dataclasses.fields(self))}

    @classmethod
    def from_dict(cls, data: dict) -> LDMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown LDM config field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}).validate()

    def validate(self) -> LDMConfig:
        """Raise :class:`ParameterError` for an impossible configuration; return self."""

        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < minimum:
                raise ParameterError(f"LDM config {name} must be an integer >= {minimum}, got {value!r}")

        for name in ("crop_size", "vae_layers", "latent_channels", "unet_layers", "mask_channels",
                     "train_timesteps", "sample_steps", "batch_size", "vae_batch_size", "latent_stat_crops", "checkpoint_every", "log_every"):
            positive_int(name)
        for name in ("vae_steps", "unet_steps", "warmup", "unet_attention_levels"):
            positive_int(name, 0)
        for name in ("vae_channels", "unet_channels"):
            chans = getattr(self, name)
            if not chans or any(int(c) != c or c < 4 for c in chans):
                raise ParameterError(f"LDM config {name} must be a non-empty list of integers >= 4, got {chans!r}")
            if len(chans) > 6:
                raise ParameterError(f"LDM config {name} has {len(chans)} levels; at most 6 are supported")
        if self.unet_attention_levels > len(self.unet_channels):
            raise ParameterError(
                f"unet_attention_levels {self.unet_attention_levels} exceeds the {len(self.unet_channels)} UNet levels")
        for name in ("vae_channels", "unet_channels"):
            groups = _norm_groups(getattr(self, name))
            if groups is None:
                raise ParameterError(f"LDM config {name} {getattr(self, name)} share no GroupNorm group count; "
                                     "use multiples of 8")
        if self.crop_size % self.size_multiple:
            raise ParameterError(
                f"crop_size {self.crop_size} must be a multiple of {self.size_multiple} "
                f"(VAE factor {self.downsample} × UNet factor {2 ** (len(self.unet_channels) - 1)})")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ParameterError(f"unknown beta_schedule {self.beta_schedule!r}; choose one of {', '.join(BETA_SCHEDULES)}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ParameterError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.scheduler not in SCHEDULERS:
            raise ParameterError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.sample_steps > self.train_timesteps:
            raise ParameterError(f"sample_steps {self.sample_steps} exceeds train_timesteps {self.train_timesteps}")
        if not 0 <= self.cfg_dropout < 1:
            raise ParameterError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ParameterError(f"guidance must be >= 0, got {self.guidance}")
        if self.guidance != 1 and self.cfg_dropout == 0:
            raise ParameterError("guidance != 1 needs a model trained with cfg_dropout > 0")
        for name in ("kl_weight", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ParameterError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vae_lr", "unet_lr"):
            if not 0 < getattr(self, name) < 1:
                raise ParameterError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ParameterError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        return self


def _norm_groups(channels) -> int | None:
    """Largest GroupNorm group count (<= 32) dividing every channel count."""
    for g in (32, 16, 8, 4):
        if all(int(c) % g == 0 for c in channels):
            return g
    return None


PRESETS: dict[str, LDMConfig] = {
    "tiny": LDMConfig(),
    "full": LDMConfig(
        name="full",
        crop_size=256,
        vae_channels=(64, 128, 128),
        vae_layers=2,
        vae_attention=True,
        latent_channels=4,
        unet_channels=(64, 128, 256, 256),
        unet_layers=2,
        unet_attention_levels=2,
        mask_channels=16,
        sample_steps=50,
        guidance=2.0,
        batch_size=16,
        vae_batch_size=8,
        vae_steps=20000,
        unet_steps=100000,
        vae_lr=4.5e-4,
        unet_lr=1e-4,
        warmup=1000,
        ema_decay=0.9999,
        latent_stat_crops=64,
        checkpoint_every=2000,
        log_every=100,
    ),
}
