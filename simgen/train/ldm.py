"""Training of the mask-conditioned LDM (resumable, two phases) on the shared engine.

Phase 1 trains the VAE on random crops (L1 reconstruction + ``kl_weight`` · KL);
at its end the per-channel latent mean / std are measured on fresh crops.  Phase 2
freezes the VAE and trains the mask-conditioned denoiser with the DDPM ε-objective
(masks dropped with probability ``cfg_dropout``), keeping an EMA of its weights.

The LDM counts optimiser steps, not epochs, and has no validation metric, so each phase is a
:func:`simgen.train.engine.fit_steps` loop rather than :func:`~simgen.train.engine.fit`; the run
folder and resume are the engine's too: :func:`~simgen.train.engine.open_run` opens the folder and
reads its ``last.pt`` (checked with :func:`simgen.augment.ldm.sampling.check_checkpoint`), and
:func:`~simgen.train.engine.capture_state` / :func:`~simgen.train.engine.restore_state` carry the
model, both optimisers and the data / noise generators.  ``last.pt`` also holds the step counters,
the learned mask statistics, the class names and the loss history; it is written every
``checkpoint_every`` steps and at the end of each phase, so ``resume=True`` continues a killed run
exactly where its last checkpoint left it.
"""

from __future__ import annotations

import math

import numpy as np

from simgen.augment.ldm.config import LDMConfig
from simgen.augment.ldm.data import CropSampler, TrainingPairs
from simgen.augment.ldm.masks import MaskStatistics
from simgen.augment.ldm.model import MaskLDM, one_hot_masks, train_scheduler
from simgen.augment.ldm.sampling import (
    ARCH_FIELDS,
    FORMAT,
    FORMAT_VERSION,
    check_checkpoint,
    checkpoint_mask_statistics,
)
from simgen.errors import ParameterError
from simgen.rng import check_seed, sample_rng, sample_seedseq
from simgen.runtime import select_device, setup_threads
from simgen.train.engine import capture_state, fit_steps, open_run, restore_state

__all__ = [
    "train_ldm",
]


def _lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up of the learning rate over the first ``warmup`` steps."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _ema_update(ema, model, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for the parameters; buffers are copied."""
    import torch

    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm.detach(), 1.0 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def train_ldm(
    pairs: TrainingPairs,
    config: LDMConfig,
    run_dir,
    *,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    log=None,
    threads: int | None = None,
) -> dict:
    """Train (or resume training) a mask-conditioned LDM; returns a summary dict.

    Parameters
    ----------
    pairs : TrainingPairs
        Images with class maps and instance masks (see :mod:`simgen.datasets.ldm_io`).
    config : LDMConfig
        Hyper-parameters; ``config.vae_steps`` / ``config.unet_steps`` are the step
        targets of this invocation (see :meth:`LDMConfig.with_max_steps`).
    run_dir : path-like
        Run folder (``config.json``, ``last.pt``).
    seed : int
        Master seed of crops, noise, timesteps and initial weights.
    resume : bool
        Continue the run in ``run_dir`` from its checkpoint (architecture must match;
        the step targets may grow).
    overwrite : bool
        Start afresh in a folder that already holds a run.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    progress : bool
        Progress bar on stderr.
    log : callable, optional
        ``log(str)`` receives one line per ``log_every`` steps.
    threads : int, optional
        Torch threads (default ``SIMGEN_THREADS``, else 1: on a shared CPU one thread per
        process beats oversubscription).

    Returns
    -------
    dict with ``steps`` (per phase), ``vae`` (reconstruction MAE vs a constant predictor, when the
    latent statistics were measured in this call), ``vae_seconds`` / ``unet_seconds`` and
    ``vae_steps_per_s`` / ``unet_steps_per_s`` (this call), ``history`` (the last loss rows),
    ``mask_statistics``, ``seed``, ``device``, ``resumed_from`` and ``checkpoint``.
    """
    import torch

    seed = check_seed(seed)
    config = config.validate()
    pairs = pairs.validate(config.crop_size)
    dev = select_device(device)
    setup_threads(threads)
    run, state = open_run(run_dir, resume=resume, overwrite=overwrite, check=check_checkpoint)
    if state is not None:
        old = LDMConfig.from_dict(state["config"])
        changed = [f for f in ARCH_FIELDS if getattr(old, f) != getattr(config, f)]
        if changed:
            raise ParameterError(f"run {run.path} was trained with a different architecture ({', '.join(changed)}); "
                                 "use the same --config or a new run folder")
        if state["n_classes"] != pairs.n_classes:
            raise ParameterError(f"run {run.path} has {state['n_classes']} classes, the data {pairs.n_classes}")
        seed = int(state["seed"])
    run.write_json("config.json", {"config": config.to_dict(), "seed": seed, "class_names": list(pairs.class_names),
                                   "source": pairs.source})

    torch.manual_seed(seed)  # initial weights (only used on a fresh run)
    model = MaskLDM(config, pairs.n_classes).to(dev)
    vae_opt = torch.optim.AdamW(model.vae.parameters(), lr=config.vae_lr, weight_decay=config.weight_decay)
    unet_opt = torch.optim.AdamW(model.denoiser.parameters(), lr=config.unet_lr, weight_decay=config.weight_decay)
    data_rng = np.random.Generator(np.random.PCG64(sample_seedseq(seed, 0, 0x1D)))
    noise_gen = torch.Generator().manual_seed(int(sample_seedseq(seed, 1, 0x1D).generate_state(1, np.uint64)[0] >> 1))
    parts = {"model": model, "vae_opt": vae_opt, "unet_opt": unet_opt, "rng": {"numpy": data_rng, "torch": noise_gen}}
    if state is None:
        stats = MaskStatistics.fit(pairs.instance_masks, pairs.class_maps, pairs.n_classes, rng=sample_rng(seed, 2, 0x1D))
        vae_step = unet_step = 0
        latents_ready = False
        history: list = []
    else:
        restore_state(state, parts)
        stats = checkpoint_mask_statistics(state)
        vae_step, unet_step = int(state["vae_step"]), int(state["unet_step"])
        latents_ready = bool(state["latents_ready"])
        history = list(state["history"])
    sampler = CropSampler(pairs, config.crop_size, config.flips)
    sched = train_scheduler(config)
    say = log or (lambda text: None)
    summary = {"seed": seed, "device": str(dev), "resumed_from": {"vae": vae_step, "unet": unet_step} if state else None}

    def save(vae_done: int, unet_done: int, ready: bool) -> None:
        run.save({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "n_classes": pairs.n_classes,
            "class_names": list(pairs.class_names),
            "source": pairs.source,
            "seed": seed,
            **capture_state(parts),
            "vae_step": vae_done,
            "unet_step": unet_done,
            "latents_ready": ready,
            "mask_stats": stats.to_state(),
            "history": history,
            "summary": {k: v for k, v in summary.items() if k != "checkpoint"},
        })

    def batch(size=config.batch_size):
        imgs, maps = sampler.batch(data_rng, size)
        return torch.from_numpy(imgs).to(dev), torch.from_numpy(maps).to(dev)

    steps = {"checkpoint_every": config.checkpoint_every, "log_every": config.log_every, "log": say,
             "progress": progress, "history": history}

    # -- phase 1: VAE (frozen once the denoiser phase has begun) -------------------------------
    def vae_step_fn(i: int) -> float:
        for g in vae_opt.param_groups:
            g["lr"] = config.vae_lr * _lr_factor(i, config.warmup)
        x, _ = batch(config.vae_batch_size)
        dist = model.vae.encode(x * 2 - 1).latent_dist
        z = dist.sample(noise_gen if dev.type == "cpu" else None)
        recon = (model.vae.decode(z).sample + 1) / 2
        loss = (recon - x).abs().mean() + config.kl_weight * dist.kl().mean() / x[0].numel()
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.vae.parameters(), 1.0)
        vae_opt.step()
        return float(loss.detach())

    model.vae.train()
    vae_stop = vae_step if unet_step > 0 or latents_ready else config.vae_steps
    phase = fit_steps(vae_step_fn, start=vae_step, stop=vae_stop, name="vae", description="LDM: VAE",
                      save=lambda done: save(done, 0, False), **steps)
    vae_step = phase.step
    summary["vae_seconds"], summary["vae_steps_per_s"] = phase.seconds, phase.steps_per_s

    # -- latent statistics --------------------------------------------------------------
    model.vae.eval().requires_grad_(False)
    if not latents_ready:
        with torch.no_grad():
            zs, err, err_const = [], [], []
            n_crops = config.latent_stat_crops
            per_batch = min(config.vae_batch_size, n_crops)
            residuals = []
            for _ in range(math.ceil(n_crops / per_batch)):
                x = torch.from_numpy(sampler.batch(data_rng, per_batch)[0]).to(dev)
                z = model.vae.encode(x * 2 - 1).latent_dist.mode()
                zs.append(z)
                recon = ((model.vae.decode(z).sample + 1) / 2).clamp(0, 1)
                residuals.append((x - recon).cpu())
                err.append(float((recon - x).abs().mean()))
                err_const.append(float((x - x.mean(dim=(1, 2, 3), keepdim=True)).abs().mean()))
            model.set_latent_stats(torch.cat(zs))
            model.set_residual_spectrum(torch.cat(residuals).to(dev))
        latents_ready = True
        summary["vae"] = {"recon_mae": float(np.mean(err)), "constant_mae": float(np.mean(err_const))}
        say(f"VAE reconstruction MAE {summary['vae']['recon_mae']:.4f} (per-crop constant: {summary['vae']['constant_mae']:.4f})")
        save(vae_step, unet_step, latents_ready)

    # -- phase 2: denoiser ------------------------------------------------------------------
    def denoiser_step_fn(i: int) -> float:
        for g in unet_opt.param_groups:
            g["lr"] = config.unet_lr * _lr_factor(i, config.warmup)
        x, maps = batch()
        with torch.no_grad():
            z0 = model.encode(x)
        b = z0.shape[0]
        noise = torch.randn(z0.shape, generator=noise_gen).to(dev)
        t = torch.randint(0, config.train_timesteps, (b,), generator=noise_gen).to(dev)
        keep = (torch.rand(b, generator=noise_gen) >= config.cfg_dropout).float().to(dev)
        zt = sched.add_noise(z0, noise, t)
        hot = one_hot_masks(maps, pairs.n_classes) * keep[:, None, None, None]
        pred = model.denoiser(zt, t, model.denoiser.encode_mask(hot))
        loss = torch.nn.functional.mse_loss(pred, noise)
        unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), 1.0)
        unet_opt.step()
        if model.ema is not None:
            done = i + 1
            _ema_update(model.ema, model.denoiser, min(config.ema_decay, (1 + done) / (10 + done)))
        return float(loss.detach())

    model.denoiser.train()
    phase = fit_steps(denoiser_step_fn, start=unet_step, stop=config.unet_steps, name="unet", description="LDM: denoiser",
                      save=lambda done: save(vae_step, done, True), **steps)
    unet_step = phase.step
    summary["unet_seconds"], summary["unet_steps_per_s"] = phase.seconds, phase.steps_per_s
    summary.update(steps={"vae": vae_step, "unet": unet_step}, mask_statistics=stats.summary(),
                   history=history[-4:])
    save(vae_step, unet_step, latents_ready)
    summary["checkpoint"] = str(run.last)
    return summary
