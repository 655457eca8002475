"""A trained mask-conditioned LDM: its checkpoint format, loading it, and sampling labelled images from masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simgen.augment.ldm.config import LDMConfig
from simgen.augment.ldm.masks import MaskStatistics, class_map_from_instances
from simgen.augment.ldm.model import MaskLDM
from simgen.errors import DataError, ParameterError
from simgen.progress import track
from simgen.rng import check_seed, sample_rng, sample_seedseq
from simgen.runtime import load_checkpoint, select_device, setup_threads

__all__ = [
    "ARCH_FIELDS",
    "CHECKPOINT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "TrainedLDM",
    "check_checkpoint",
    "checkpoint_mask_statistics",
    "load_ldm",
]


#: The checkpoint in a run folder (see :func:`simgen.train.ldm.train_ldm`).
CHECKPOINT_NAME = "last.pt"


#: ``format`` / ``format_version`` entries that identify an LDM checkpoint.
FORMAT = "simgen-ldm"


FORMAT_VERSION = 1


#: Config fields that define the architecture; a resumed run must keep them.
ARCH_FIELDS = ("crop_size", "vae_channels", "vae_layers", "vae_attention", "latent_channels", "unet_channels",
               "unet_layers", "unet_attention_levels", "mask_channels", "train_timesteps", "beta_schedule",
               "beta_start", "beta_end")


def check_checkpoint(state, path) -> dict:
    """``state`` if it is an LDM checkpoint this version reads, else a :class:`DataError` naming ``path``."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path} is not a simgen LDM checkpoint")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{path} was written by a newer simgen (LDM checkpoint version {state['format_version']})")
    return state


@dataclass
class TrainedLDM:
    """A trained LDM ready for sampling (see :func:`load_ldm`).

    Attributes
    ----------
    model : MaskLDM
    mask_statistics : MaskStatistics
    class_names : list of str
    path : Path
        The checkpoint.
    meta : dict
        Steps, seed, training source, summary.
    """

    model: MaskLDM
    mask_statistics: MaskStatistics
    class_names: list
    path: Path
    meta: dict

    @property
    def config(self) -> LDMConfig:
        return self.model.config

    def describe(self) -> dict:
        """JSON-serialisable description (goes into generated datasets' ``generator`` attribute)."""
        return {
            "function": "simgen.augment.ldm.sampling.TrainedLDM.sample",
            "checkpoint": str(self.path),
            "config": self.config.to_dict(),
            "steps_trained": {"vae": self.meta["vae_step"], "unet": self.meta["unet_step"]},
            "train_seed": self.meta["seed"],
            "training_data": self.meta.get("source", {}),
            "class_names": list(self.class_names),
            "mask_statistics": self.mask_statistics.summary(),
        }

    def noise(self, seed: int, index: int, height: int, width: int):
        """The initial latent noise of sample ``index`` (depends only on ``seed`` and ``index``), a tensor."""
        import torch

        g = torch.Generator().manual_seed(int(sample_seedseq(seed, index, 1).generate_state(1, np.uint64)[0] >> 1))
        return torch.randn(self.model.latent_shape(height, width), generator=g)

    def white(self, seed: int, index: int, height: int, width: int):
        """The white noise of sample ``index`` that becomes its texture noise, a tensor."""
        import torch

        g = torch.Generator().manual_seed(int(sample_seedseq(seed, index, 2).generate_state(1, np.uint64)[0] >> 1))
        return torch.randn((height, width), generator=g)

    def generate_images(self, class_maps, seeds, *, seed: int = 0, steps=None, scheduler=None, guidance=None,
                        batch_size: int = 16, texture_noise: bool = True, progress: bool = False) -> np.ndarray:
        """Images for given class maps ``(N, H, W)``; sample ``i`` uses the noise of ``(seed, seeds[i])``.

        ``texture_noise=False`` skips the residual texture noise even if the config enables it.

        Returns float32 ``(N, H, W)`` in [0, 1].
        """
        import torch

        maps = np.asarray(class_maps)
        if maps.ndim != 3:
            raise ParameterError(f"class maps must be (N, H, W), got shape {maps.shape}")
        n, h, w = maps.shape
        self.model.check_size(h, w)
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ParameterError("need one noise index per class map")
        out = np.empty((n, h, w), np.float32)
        starts = range(0, n, batch_size)
        for a in track(starts, total=len(starts), description="LDM: sampling", enabled=progress):
            b = min(n, a + batch_size)
            noise = torch.stack([self.noise(seed, s, h, w) for s in seeds[a:b]])
            texture = (torch.stack([self.white(seed, s, h, w) for s in seeds[a:b]])
                       if self.config.texture_noise and texture_noise else None)
            imgs = self.model.generate(torch.from_numpy(maps[a:b].astype(np.int64)), noise, steps=steps,
                                       scheduler=scheduler, guidance=guidance, texture=texture)
            out[a:b] = imgs.cpu().numpy()
        return out

    def sample(self, n: int, *, seed: int = 0, start: int = 0, size: int | None = None, steps=None, scheduler=None,
               guidance=None, batch_size: int = 16, mask_source=None, progress: bool = False):
        """Yield ``n`` new auto-labelled samples ``{image, mask, classes, class_map, provenance, name}``.

        Sample ``i`` (``start <= i < start + n``) draws its layout from ``mask_source``
        (default: the learned :class:`MaskStatistics`) with ``sample_rng(seed, i, 0)`` and
        its latent noise from ``(seed, i)``, so it does not depend on ``batch_size``
        (up to float round-off) nor on the other samples.
        """
        seed = check_seed(seed)
        if int(n) != n or n < 1:
            raise ParameterError(f"number of samples must be a positive integer, got {n}")
        if start < 0:
            raise ParameterError(f"start must be >= 0, got {start}")
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        size = int(size or self.config.crop_size)
        self.model.check_size(size, size)
        source = mask_source or self.mask_statistics
        if getattr(source, "n_classes", self.model.n_classes) > self.model.n_classes:
            raise ParameterError(f"mask source has {source.n_classes} classes, the model {self.model.n_classes}")
        steps = int(steps or self.config.sample_steps)
        scheduler = scheduler or self.config.scheduler
        guidance = self.config.guidance if guidance is None else float(guidance)
        if guidance != 1 and self.config.cfg_dropout == 0:
            raise ParameterError("this model was trained without mask dropout; use guidance 1")

        indices = list(range(start, start + int(n)))
        chunks = [indices[a : a + batch_size] for a in range(0, len(indices), batch_size)]
        source_name = getattr(source, "description", None) or {"source": "learned mask statistics"}
        for chunk in track(chunks, total=len(chunks), description="LDM: sampling", enabled=progress):
            layouts = [source.sample(sample_rng(seed, i, 0), (size, size)) for i in chunk]
            maps = np.stack([class_map_from_instances(inst, cls) for inst, cls in layouts])
            imgs = self.generate_images(maps, chunk, seed=seed, steps=steps, scheduler=scheduler, guidance=guidance,
                                        batch_size=len(chunk))
            for i, img, (inst, cls), cmap in zip(chunk, imgs, layouts, maps):
                yield {
                    "image": img,
                    "mask": inst,
                    "classes": cls,
                    "class_map": cmap,
                    "name": f"ldm_{i:06d}",
                    "provenance": {"generator": "ldm", "index": i, "seed": seed, "steps": steps,
                                   "scheduler": scheduler, "guidance": guidance, "mask_source": source_name,
                                   "n_defects": len(cls)},
                }


def load_ldm(path, device: str = "auto", threads: int | None = None) -> TrainedLDM:
    """Load a trained LDM from a run folder (its ``last.pt``) or a checkpoint file.

    Raises
    ------
    DataError
        If there is no checkpoint, it is not an LDM checkpoint, or training never
        reached the denoiser phase.
    """
    setup_threads(threads)
    path = Path(path)
    ckpt = path / CHECKPOINT_NAME if path.is_dir() else path
    if not ckpt.exists():
        raise DataError(f"no LDM checkpoint at {ckpt}; train one with `simgen ldm train`")
    state = check_checkpoint(load_checkpoint(ckpt, map_location="cpu"), ckpt)
    if not state["latents_ready"]:
        raise DataError(f"{ckpt}: training stopped inside the VAE phase; resume it with `simgen ldm train --resume`")
    config = LDMConfig.from_dict(state["config"])
    model = MaskLDM(config, int(state["n_classes"]))
    model.load_state_dict(state["model"])
    model.to(select_device(device)).eval()
    stats = checkpoint_mask_statistics(state)
    meta = {k: state[k] for k in ("vae_step", "unet_step", "seed", "source", "history", "summary")}
    return TrainedLDM(model=model, mask_statistics=stats, class_names=list(state["class_names"]), path=ckpt, meta=meta)


def checkpoint_mask_statistics(state: dict) -> MaskStatistics:
    """The learned mask statistics of an LDM checkpoint (stored as tensors, rebuilt from NumPy arrays)."""
    return MaskStatistics.from_state({k: v.cpu().numpy() if hasattr(v, "cpu") else v
                                      for k, v in state["mask_stats"].items()})
