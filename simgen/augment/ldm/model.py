"""The mask-conditioned latent diffusion model, built from diffusers components (config only).

Architecture
------------
* :class:`diffusers.AutoencoderKL` (1 input channel) maps an image in [0, 1] (scaled to
  [-1, 1]) to a ``latent_channels × H/f × W/f`` latent (``f`` = VAE downsampling).
  Latents are standardised per channel with statistics measured after VAE training.
* :class:`MaskEncoder` turns the multi-class defect mask (one-hot, background
  included) into ``mask_channels`` feature maps at latent resolution: a lossless
  space-to-depth (pixel-unshuffle by ``f``) followed by two 3×3 convolutions.  An
  all-zero one-hot — impossible for a real mask — is the *null* condition used for
  classifier-free guidance (masks are dropped with probability ``cfg_dropout`` in
  training).
* :class:`diffusers.UNet2DModel` denoises ``[noisy latent ‖ mask features]`` and
  predicts the noise ε (DDPM objective).  Sampling uses DDIM (η = 0) or DPM-Solver++
  with a configurable number of steps and guidance scale.

No weights are ever downloaded: every module is constructed from its config.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from simgen.augment.ldm.config import SCHEDULERS, LDMConfig, _norm_groups
from simgen.errors import ParameterError

__all__ = [
    "LatentDenoiser",
    "MaskEncoder",
    "MaskLDM",
    "build_unet",
    "build_vae",
    "one_hot_masks",
    "sample_scheduler",
    "train_scheduler",
]


def build_vae(config: LDMConfig):
    """A single-channel :class:`diffusers.AutoencoderKL` for ``config`` (random init)."""
    from diffusers import AutoencoderKL

    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(int(c) for c in config.vae_channels),
        layers_per_block=int(config.vae_layers),
        latent_channels=int(config.latent_channels),
        norm_num_groups=_norm_groups(config.vae_channels),
        sample_size=int(config.crop_size),
        mid_block_add_attention=bool(config.vae_attention),
        scaling_factor=1.0,  # we standardise latents ourselves (per channel)
    )


def build_unet(config: LDMConfig):
    """The latent :class:`diffusers.UNet2DModel` (input: latent ‖ mask features; output: ε)."""
    from diffusers import UNet2DModel

    n = len(config.unet_channels)
    attn = [i >= n - config.unet_attention_levels for i in range(n)]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DModel(
        sample_size=int(config.latent_size),
        in_channels=int(config.latent_channels + config.mask_channels),
        out_channels=int(config.latent_channels),
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(int(c) for c in config.unet_channels),
        layers_per_block=int(config.unet_layers),
        norm_num_groups=_norm_groups(config.unet_channels),
        attention_head_dim=8,
        add_attention=config.unet_attention_levels > 0,
    )


def one_hot_masks(class_maps: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, H, W)`` class maps (0 = background, ``c + 1`` = class ``c``) → ``(B, n_classes + 1, H, W)`` float."""
    class_maps = class_maps.long()
    if class_maps.numel() and (int(class_maps.min()) < 0 or int(class_maps.max()) > n_classes):
        raise ParameterError(f"class map values must be in [0, {n_classes}], got [{int(class_maps.min())}, "
                             f"{int(class_maps.max())}]")
    return F.one_hot(class_maps, n_classes + 1).permute(0, 3, 1, 2).float()


class MaskEncoder(nn.Module):
    """One-hot mask at image resolution → ``out_channels`` maps at latent resolution.

    Space-to-depth by ``factor`` keeps every mask pixel (a defect of 2 px still shows),
    then two 3×3 convolutions mix neighbouring cells.
    """

    def __init__(self, n_classes: int, factor: int, out_channels: int, hidden: int = 32):
        super().__init__()
        self.n_classes = int(n_classes)
        self.factor = int(factor)
        c_in = (self.n_classes + 1) * self.factor**2
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(one_hot, self.factor) if self.factor > 1 else one_hot
        return self.net(x)


class LatentDenoiser(nn.Module):
    """UNet + mask encoder: ``eps = unet([z_t ‖ E(mask)], t)``."""

    def __init__(self, config: LDMConfig, n_classes: int):
        super().__init__()
        self.unet = build_unet(config)
        self.mask_encoder = MaskEncoder(n_classes, config.downsample, config.mask_channels)

    def encode_mask(self, one_hot: torch.Tensor) -> torch.Tensor:
        return self.mask_encoder(one_hot)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([latents, mask_features], dim=1), timesteps).sample


def train_scheduler(config: LDMConfig):
    """The DDPM noise schedule used for training (``add_noise``)."""
    from diffusers import DDPMScheduler

    kwargs = {"beta_start": config.beta_start, "beta_end": config.beta_end} if config.beta_schedule != "squaredcos_cap_v2" else {}
    return DDPMScheduler(
        num_train_timesteps=int(config.train_timesteps),
        beta_schedule=config.beta_schedule,
        clip_sample=False,
        prediction_type="epsilon",
        **kwargs,
    )


def sample_scheduler(config: LDMConfig, name: str | None = None):
    """A fresh sampling scheduler (``"ddim"``, η = 0, or ``"dpm"``, DPM-Solver++ 2M) on the training schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = name or config.scheduler
    if name not in SCHEDULERS:
        raise ParameterError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    base = train_scheduler(config).config
    if name == "ddim":
        return DDIMScheduler.from_config(base, timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                   timestep_spacing="trailing", lower_order_final=True)


#: Radial frequency bins of the residual spectrum, over [0, sqrt(1/2)] cycles/px.
RESIDUAL_BINS = 64


def _radial_bins(height: int, width: int, device=None) -> torch.Tensor:
    """Bin index of every rfft2 frequency of an ``height x width`` image."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    r = torch.sqrt(fy * fy + fx * fx) / (0.5 ** 0.5)
    return (r * RESIDUAL_BINS).long().clamp_(0, RESIDUAL_BINS - 1)


class MaskLDM(nn.Module):
    """VAE + conditional latent denoiser (+ its EMA copy) + latent standardisation.

    Parameters
    ----------
    config : LDMConfig
    n_classes : int
        Number of defect classes of the conditioning masks.
    """

    def __init__(self, config: LDMConfig, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ParameterError(f"n_classes must be >= 1, got {n_classes}")
        self.config = config
        self.n_classes = int(n_classes)
        self.vae = build_vae(config)
        self.denoiser = LatentDenoiser(config, n_classes)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False) if config.ema_decay > 0 else None
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
        # radially averaged power spectrum of the VAE's reconstruction residuals (texture noise)
        self.register_buffer("residual_psd", torch.zeros(RESIDUAL_BINS))

    # -- latents ------------------------------------------------------------------
    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """``(B, 1, H, W)`` images in [0, 1] → standardised latents (posterior mean, or a sample)."""
        dist = self.vae.encode(images * 2 - 1).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents → images in [0, 1] ``(B, 1, H, W)``."""
        z = latents * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        return ((self.vae.decode(z).sample + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Set per-channel mean / std from raw (unstandardised) latents ``(N, C, h, w)``."""
        self.latent_mean.copy_(latents.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(latents.std(dim=(0, 2, 3)).clamp_min(1e-4))

    @torch.no_grad()
    def set_residual_spectrum(self, residuals: torch.Tensor) -> None:
        """Measure the radial power spectrum of reconstruction residuals ``(N, [1,] H, W)``.

        Uses the orthonormal FFT, so the values are spectral densities per pixel and apply
        to any image size.  Empty bins take the value of the nearest filled bin below.
        """
        r = residuals.reshape(-1, *residuals.shape[-2:]).double()
        r = r - r.mean(dim=(-2, -1), keepdim=True)
        power = torch.fft.rfft2(r, norm="ortho").abs().pow(2).mean(0)
        idx = _radial_bins(*r.shape[-2:], device=r.device).reshape(-1)
        total = torch.zeros(RESIDUAL_BINS, dtype=torch.float64, device=r.device).index_add_(0, idx, power.reshape(-1))
        count = torch.zeros(RESIDUAL_BINS, dtype=torch.float64, device=r.device).index_add_(
            0, idx, torch.ones_like(power.reshape(-1)))
        psd = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
        for k in range(RESIDUAL_BINS):  # fill empty bins (small images) from below
            if torch.isnan(psd[k]):
                psd[k] = psd[k - 1] if k else 0.0
        psd[0] = 0.0  # no DC offset
        self.residual_psd.copy_(psd.float())

    def texture(self, white: torch.Tensor) -> torch.Tensor:
        """White noise ``(B, H, W)`` → a Gaussian field with the residual power spectrum."""
        h, w = white.shape[-2:]
        amp = self.residual_psd.clamp_min(0).sqrt()[_radial_bins(h, w, device=white.device)]
        return torch.fft.irfft2(torch.fft.rfft2(white, norm="ortho") * amp, s=(h, w), norm="ortho")

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.config.downsample
        return (self.config.latent_channels, height // f, width // f)

    def check_size(self, height: int, width: int) -> None:
        m = self.config.size_multiple
        if height < m or width < m or height % m or width % m:
            raise ParameterError(f"generated image sides must be positive multiples of {m}, got {height}x{width}")

    # -- sampling --------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, sched, timesteps, class_maps: torch.Tensor | None, *,
                guidance: float = 1.0, use_ema: bool = True, callback=None) -> torch.Tensor:
        """Run the sampler ``sched`` over ``timesteps`` from ``latents``; returns the denoised latents.

        Parameters
        ----------
        latents : (B, latent_channels, h, w) tensor
            Latents at the first of ``timesteps`` (pure noise for generation, a noised
            encoding for SDEdit translation).
        sched : diffusers scheduler
            A scheduler from :func:`sample_scheduler` on which ``set_timesteps`` was called.
        timesteps : 1-D tensor
            The (descending) timesteps to run, a tail of ``sched.timesteps``.
        class_maps : (B, H, W) integer tensor or None
            The condition (``H = h · f``); ``None`` uses the null condition (an all-zero
            one-hot, what classifier-free-guidance dropout trains): unconditional denoising.
        guidance : float
            Classifier-free guidance scale (ignored for the null condition).
        """
        net = self.ema if (use_ema and self.ema is not None) else self.denoiser
        b, _, h, w = latents.shape
        f = self.config.downsample
        device = self.latent_mean.device
        if class_maps is None:
            cond = net.encode_mask(torch.zeros((b, self.n_classes + 1, h * f, w * f), device=device))
            uncond = None
        else:
            hot = one_hot_masks(class_maps.to(device), self.n_classes)
            cond = net.encode_mask(hot)
            uncond = net.encode_mask(torch.zeros_like(hot)) if guidance != 1 else None
        x = latents.to(device)
        for i, t in enumerate(timesteps):
            xin = sched.scale_model_input(x, t)
            if uncond is None:
                eps = net(xin, t.expand(b), cond)
            else:
                both = net(torch.cat([xin, xin]), t.expand(2 * b), torch.cat([cond, uncond]))
                eps_c, eps_u = both.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            x = sched.step(eps, t, x).prev_sample
            if callback is not None:
                callback(i)
        return x

    @torch.no_grad()
    def generate(
        self,
        class_maps: torch.Tensor,
        noise: torch.Tensor,
        *,
        steps: int | None = None,
        scheduler: str | None = None,
        guidance: float | None = None,
        use_ema: bool = True,
        texture: torch.Tensor | None = None,
        callback=None,
    ) -> torch.Tensor:
        """Denoise ``noise`` conditioned on ``class_maps``; returns images ``(B, H, W)`` in [0, 1].

        Parameters
        ----------
        class_maps : (B, H, W) integer tensor
            0 = background, ``c + 1`` = class ``c``.
        noise : (B, latent_channels, H/f, W/f) tensor
            Initial latent noise (draw it per sample for batch-independent results).
        steps : int
            Number of sampling steps (default ``config.sample_steps``).
        scheduler : {"ddim", "dpm"}
        guidance : float
            Classifier-free guidance scale; 1 = conditional only (one UNet pass per step).
        use_ema : bool
            Use the EMA weights when the model has them.
        texture : (B, H, W) tensor, optional
            White Gaussian noise turned into texture noise (see ``LDMConfig.texture_noise``);
            ``None`` adds none.
        callback : callable, optional
            Called with the step index after every step.
        """
        cfg = self.config
        steps = int(steps or cfg.sample_steps)
        guidance = cfg.guidance if guidance is None else float(guidance)
        if steps < 1 or steps > cfg.train_timesteps:
            raise ParameterError(f"steps must be in [1, {cfg.train_timesteps}], got {steps}")
        if guidance < 0:
            raise ParameterError(f"guidance must be >= 0, got {guidance}")
        b, h, w = class_maps.shape
        self.check_size(h, w)
        if tuple(noise.shape) != (b, *self.latent_shape(h, w)):
            raise ParameterError(f"noise has shape {tuple(noise.shape)}, expected {(b, *self.latent_shape(h, w))}")
        sched = sample_scheduler(cfg, scheduler)
        sched.set_timesteps(steps, device=self.latent_mean.device)
        x = noise.to(self.latent_mean.device) * sched.init_noise_sigma
        x = self.denoise(x, sched, sched.timesteps, class_maps, guidance=guidance, use_ema=use_ema, callback=callback)
        images = self.decode(x)[:, 0]
        if texture is not None:
            if tuple(texture.shape) != (b, h, w):
                raise ParameterError(f"texture noise has shape {tuple(texture.shape)}, expected {(b, h, w)}")
            images = (images + self.texture(texture.to(images.device))).clamp(0, 1)
        return images
