"""Training (resumable, two phases) and loading of the mask-conditioned LDM.

Phase 1 trains the VAE on random crops (L1 reconstruction + ``kl_weight`` · KL);
at its end the per-channel latent mean / std are measured on fresh crops.  Phase 2
freezes the VAE and trains the mask-conditioned denoiser with the DDPM ε-objective
(masks dropped with probability ``cfg_dropout``), keeping an EMA of its weights.

A run folder holds ``config.json`` and ``last.pt`` — one checkpoint with the
model, both optimisers, the step counters, the data/noise RNG states, the learned
mask statistics, the class names and the loss history — written atomically every
``checkpoint_every`` steps and at the end of each phase, so ``resume=True`` continues
a killed run exactly where its last checkpoint left it.

Helpers from :mod:`simgen.train` (device choice, atomic checkpoints, run folders)
are reached only through :func:`_from_train`, the one explicit door the
architecture allows from ``augment/ldm`` into ``train``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from simgen.augment.ldm.config import LDMConfig
from simgen.augment.ldm.data import CropSampler, TrainingPairs
from simgen.augment.ldm.masks import MaskStatistics
from simgen.augment.ldm.model import MaskLDM, one_hot_masks, train_scheduler
from simgen.augment.ldm.sampling import ARCH_FIELDS, FORMAT, FORMAT_VERSION, _check_state, _numpy_state, _torch_state
from simgen.errors import ParameterError
from simgen.progress import track
from simgen.rng import check_seed, sample_rng, sample_seedseq
from simgen.runtime import RunDir, load_checkpoint, save_checkpoint, select_device, setup_threads

__all__ = [
    "train_ldm",
]



def _lr_factor(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0






@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
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
    dict with ``steps``, ``losses``, ``vae`` (reconstruction MAE vs a constant predictor),
    ``seconds`` and ``steps_per_s`` per phase, ``mask_statistics`` and ``checkpoint``.
    """
    seed = check_seed(seed)
    config = config.validate()
    pairs = pairs.validate(config.crop_size)
    dev = select_device(device)
    setup_threads(threads)
    run = RunDir(run_dir, resume=resume, overwrite=overwrite)
    state = None
    if run.resume and run.last.exists():
        state = load_checkpoint(run.last, map_location="cpu")
    if state is not None:
        state = _check_state(state, run.last)
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
    model = MaskLDM(config, pairs.n_classes)
    vae_opt = torch.optim.AdamW(model.vae.parameters(), lr=config.vae_lr, weight_decay=config.weight_decay)
    unet_opt = torch.optim.AdamW(model.denoiser.parameters(), lr=config.unet_lr, weight_decay=config.weight_decay)
    data_rng = np.random.Generator(np.random.PCG64(sample_seedseq(seed, 0, 0x1D)))
    noise_gen = torch.Generator().manual_seed(int(sample_seedseq(seed, 1, 0x1D).generate_state(1, np.uint64)[0] >> 1))
    if state is None:
        stats = MaskStatistics.fit(pairs.instance_masks, pairs.class_maps, pairs.n_classes, rng=sample_rng(seed, 2, 0x1D))
        vae_step = unet_step = 0
        latents_ready = False
        history: list = []
    else:
        model.load_state_dict(state["model"])
        vae_opt.load_state_dict(state["vae_opt"])
        unet_opt.load_state_dict(state["unet_opt"])
        stats = MaskStatistics.from_state(_numpy_state(state["mask_stats"]))
        vae_step, unet_step = int(state["vae_step"]), int(state["unet_step"])
        latents_ready = bool(state["latents_ready"])
        history = list(state["history"])
        data_rng.bit_generator.state = state["rng"]["numpy"]
        noise_gen.set_state(state["rng"]["torch"])
    model.to(dev)
    for opt in (vae_opt, unet_opt):  # optimiser state follows the parameters' device
        for s in opt.state.values():
            for k, v in s.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    s[k] = v.to(dev)
    sampler = CropSampler(pairs, config.crop_size, config.flips)
    sched = train_scheduler(config)
    say = log or (lambda text: None)
    summary = {"seed": seed, "device": str(dev), "resumed_from": {"vae": vae_step, "unet": unet_step} if state else None}

    def save():
        ckpt = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "n_classes": pairs.n_classes,
            "class_names": list(pairs.class_names),
            "source": pairs.source,
            "seed": seed,
            "model": model.state_dict(),
            "vae_opt": vae_opt.state_dict(),
            "unet_opt": unet_opt.state_dict(),
            "vae_step": vae_step,
            "unet_step": unet_step,
            "latents_ready": latents_ready,
            "mask_stats": _torch_state(stats.to_state()),
            "rng": {"numpy": data_rng.bit_generator.state, "torch": noise_gen.get_state()},
            "history": history,
            "summary": {k: v for k, v in summary.items() if k != "checkpoint"},
        }
        save_checkpoint(run.last, ckpt)

    def batch(size=config.batch_size):
        imgs, maps = sampler.batch(data_rng, size)
        return torch.from_numpy(imgs).to(dev), torch.from_numpy(maps).to(dev)

    # -- phase 1: VAE -----------------------------------------------------------------
    unet_started = unet_step > 0 or latents_ready
    losses = []
    t0 = time.perf_counter()
    done0 = vae_step
    if not unet_started and vae_step < config.vae_steps:
        model.vae.train()
        for _ in track(range(vae_step, config.vae_steps), total=config.vae_steps - vae_step,
                       description="LDM: VAE", enabled=progress):
            for g in vae_opt.param_groups:
                g["lr"] = config.vae_lr * _lr_factor(vae_step, config.warmup)
            x, _ = batch(config.vae_batch_size)
            dist = model.vae.encode(x * 2 - 1).latent_dist
            z = dist.sample(noise_gen if dev.type == "cpu" else None)
            recon = (model.vae.decode(z).sample + 1) / 2
            loss = (recon - x).abs().mean() + config.kl_weight * dist.kl().mean() / x[0].numel()
            vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.vae.parameters(), 1.0)
            vae_opt.step()
            vae_step += 1
            losses.append(float(loss.detach()))
            if vae_step % config.log_every == 0 or vae_step == config.vae_steps:
                history.append(["vae", vae_step, float(np.mean(losses[-config.log_every:]))])
                say(f"vae step {vae_step}/{config.vae_steps}  loss {history[-1][2]:.4f}")
            if vae_step % config.checkpoint_every == 0 and vae_step < config.vae_steps:
                save()
    summary["vae_seconds"] = time.perf_counter() - t0
    summary["vae_steps_per_s"] = (vae_step - done0) / summary["vae_seconds"] if vae_step > done0 else None

    # -- latent statistics --------------------------------------------------------------
    model.vae.eval().requires_grad_(False)
    if not latents_ready:
        with torch.no_grad():
            zs, err, err_const = [], [], []
            n_crops = config.latent_stat_crops
            per_batch = min(config.vae_batch_size, n_crops)
            residuals = []
            for k in range(math.ceil(n_crops / per_batch)):
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
        save()

    # -- phase 2: denoiser ------------------------------------------------------------------
    losses = []
    t0 = time.perf_counter()
    done0 = unet_step
    if unet_step < config.unet_steps:
        model.denoiser.train()
        for _ in track(range(unet_step, config.unet_steps), total=config.unet_steps - unet_step,
                       description="LDM: denoiser", enabled=progress):
            for g in unet_opt.param_groups:
                g["lr"] = config.unet_lr * _lr_factor(unet_step, config.warmup)
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
            unet_step += 1
            if model.ema is not None:
                _ema_update(model.ema, model.denoiser, min(config.ema_decay, (1 + unet_step) / (10 + unet_step)))
            losses.append(float(loss.detach()))
            if unet_step % config.log_every == 0 or unet_step == config.unet_steps:
                history.append(["unet", unet_step, float(np.mean(losses[-config.log_every:]))])
                say(f"denoiser step {unet_step}/{config.unet_steps}  loss {history[-1][2]:.4f}")
            if unet_step % config.checkpoint_every == 0 and unet_step < config.unet_steps:
                save()
    summary["unet_seconds"] = time.perf_counter() - t0
    summary["unet_steps_per_s"] = (unet_step - done0) / summary["unet_seconds"] if unet_step > done0 else None
    summary.update(steps={"vae": vae_step, "unet": unet_step}, mask_statistics=stats.summary(),
                   history=history[-4:])
    save()
    summary["checkpoint"] = str(run.last)
    return summary

