"""SDEdit translation: move images (e.g. synthetic renders) toward the look a trained LDM learned.

Each image is encoded with the VAE, its latent is noised to the timestep given by
``strength`` with the scheduler's ``add_noise`` (0 = unchanged, 1 = the first timestep
of the schedule, practically pure noise), then denoised back to 0 with DDIM (η = 0),
conditioned on the image's own class map (defects stay where the labels are) or on the
null condition (unconditional: what a model trained on unlabelled real tiles knows),
and decoded.  Geometry follows the input, so its labels stay valid as long as the
strength is small enough for the defects to survive (check with
:mod:`simgen.augment.ldm.visibility`).

Reference: Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic
Differential Equations", ICLR 2022.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.augment.ldm.model import sample_scheduler
from simgen.augment.ldm.sampling import TrainedLDM
from simgen.errors import ParameterError
from simgen.progress import track
from simgen.rng import check_seed, sample_seedseq

__all__ = ["check_translation", "start_step", "translate"]

#: Spawn keys of the per-sample random streams (generation uses 1 and 2).
_NOISE_KEY, _TEXTURE_KEY = 3, 4


def start_step(strength: float, steps: int) -> int:
    """Number of DDIM steps run for ``strength`` out of a ``steps``-step schedule (``round(steps · strength)``)."""
    return int(min(steps, math.floor(steps * float(strength) + 0.5)))


def check_translation(model: TrainedLDM, *, strength: float, steps: int | None, guidance: float | None,
                      conditioned: bool) -> tuple[int, float]:
    """Validate translation settings before any work; returns ``(steps, guidance)`` with defaults filled in.

    Raises
    ------
    ParameterError
        Strength outside [0, 1], steps outside [1, train_timesteps], negative guidance,
        guidance without a CFG-trained model, a mask condition for a model trained on
        unlabelled images, or the null condition for a model trained without mask dropout.
    """
    cfg = model.config
    try:
        ok = 0 <= float(strength) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"strength must be in [0, 1], got {strength!r}")
    steps = int(steps or cfg.sample_steps)
    if not 1 <= steps <= cfg.train_timesteps:
        raise ParameterError(f"steps must be in [1, {cfg.train_timesteps}], got {steps}")
    guidance = cfg.guidance if guidance is None else float(guidance)
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ParameterError(f"guidance must be >= 0, got {guidance}")
    if conditioned:
        if model.meta.get("source", {}).get("unlabeled"):
            raise ParameterError("this model was trained on unlabelled images (all-background masks); "
                                 "translate unconditionally (--condition none)")
        if guidance != 1 and cfg.cfg_dropout == 0:
            raise ParameterError("this model was trained without mask dropout; use guidance 1")
    elif cfg.cfg_dropout == 0:
        raise ParameterError("this model was trained without mask dropout, so it has no unconditional mode; "
                             "translate with the masks (--condition mask)")
    return steps, guidance


def _normal(seed: int, index: int, key: int, shape):
    import torch

    g = torch.Generator().manual_seed(int(sample_seedseq(seed, index, key).generate_state(1, np.uint64)[0] >> 1))
    return torch.randn(tuple(shape), generator=g)


def translate(model: TrainedLDM, images, masks=None, *, strength: float = 0.3, steps: int | None = None,
              guidance: float | None = None, seed: int = 0, start: int = 0, batch_size: int = 8,
              texture_noise: bool = True, progress: bool = False) -> np.ndarray:
    """SDEdit-translate images with a trained LDM, keeping their geometry (and so their labels).

    Parameters
    ----------
    model : TrainedLDM
        From :func:`simgen.augment.ldm.sampling.load_ldm`.
    images : (N, H, W) array
        Images in [0, 1] (any ``H, W``: they are reflect-padded to the model's size multiple
        and cropped back).
    masks : (N, H, W) integer array, optional
        Class maps (0 = background, ``c + 1`` = class ``c``) to condition on; ``None``
        denoises unconditionally (null condition).
    strength : float
        In [0, 1]: how far into the diffusion the latent is pushed.  0 returns the VAE
        reconstruction (plus texture noise), 1 starts from (practically) pure noise.
        ``round(steps · strength)`` DDIM steps are run.
    steps : int, optional
        Steps of the full DDIM schedule (default ``config.sample_steps``).
    guidance : float, optional
        Classifier-free guidance scale of the mask condition (default the config's).
    seed : int
        Master seed: image ``i`` uses the streams ``(seed, start + i)`` only, so results do
        not depend on the batch size or on the other images.
    start : int
        Index of the first image (for translating a file in chunks).
    batch_size : int
        Images per forward pass.
    texture_noise : bool
        Add the model's residual texture noise (only when its config enables it).

    Returns
    -------
    (N, H, W) float32 array in [0, 1].
    """
    import torch

    seed = check_seed(seed)
    imgs = np.asarray(images, np.float32)
    if imgs.ndim != 3 or not imgs.size:
        raise ParameterError(f"images must be a non-empty (N, H, W) array, got shape {imgs.shape}")
    if not (np.isfinite(imgs).all() and imgs.min() >= 0 and imgs.max() <= 1):
        raise ParameterError("images must be finite and in [0, 1]")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != imgs.shape:
            raise ParameterError(f"masks have shape {masks.shape}, images {imgs.shape}")
        if masks.min(initial=0) < 0 or masks.max(initial=0) > model.model.n_classes:
            raise ParameterError(f"class map values must be in [0, {model.model.n_classes}] for this model, got "
                                 f"[{masks.min()}, {masks.max()}]")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    steps, guidance = check_translation(model, strength=strength, steps=steps, guidance=guidance,
                                        conditioned=masks is not None)
    net = model.model
    n, h, w = imgs.shape
    m = net.config.size_multiple
    ph, pw = -h % m, -w % m
    pad = ((0, 0), (0, ph), (0, pw))
    if ph or pw:
        imgs = np.pad(imgs, pad, mode="symmetric")
        masks = None if masks is None else np.pad(masks, pad, mode="symmetric")
    hp, wp = h + ph, w + pw
    n_run = start_step(strength, steps)
    texture = bool(texture_noise and net.config.texture_noise)
    device = net.latent_mean.device
    out = np.empty((n, h, w), np.float32)
    starts = range(0, n, int(batch_size))
    for a in track(starts, total=len(starts), description="LDM: translating", enabled=progress):
        b = min(n, a + int(batch_size))
        with torch.no_grad():
            z = net.encode(torch.from_numpy(imgs[a:b, None]).to(device))
            if n_run:
                sched = sample_scheduler(net.config, "ddim")
                sched.set_timesteps(steps, device=device)
                timesteps = sched.timesteps[steps - n_run:]
                noise = torch.stack([_normal(seed, start + i, _NOISE_KEY, z.shape[1:]) for i in range(a, b)])
                z = sched.add_noise(z, noise.to(device), timesteps[:1].expand(b - a))
                maps = None if masks is None else torch.from_numpy(masks[a:b].astype(np.int64))
                z = net.denoise(z, sched, timesteps, maps, guidance=guidance)
            res = net.decode(z)[:, 0]
            if texture:
                white = torch.stack([_normal(seed, start + i, _TEXTURE_KEY, (hp, wp)) for i in range(a, b)])
                res = (res + net.texture(white.to(device))).clamp(0, 1)
        out[a:b] = res[:, :h, :w].cpu().numpy()
    return out
