"""SDEdit-translate a labelled dataset with a trained LDM: new images, the same labels.

:func:`translate_file` reads any input (:func:`simgen.datasets.sources.open_source`),
translates its images with :func:`simgen.augment.ldm.translate.translate` and writes a
normal simgen HDF5 dataset (atomically, through :class:`DatasetWriter`) whose boxes,
masks and every other annotation table are copied unchanged, with the model, strength
and seed in the provenance.  It also reports how many labels are still visible
(:mod:`simgen.augment.ldm.visibility`) and, given a real reference set, the power-spectrum
and histogram distances to it before and after (:mod:`simgen.augment.realism`).
"""

from __future__ import annotations

import time
from os import PathLike
from pathlib import Path

import numpy as np

from simgen.atomic import check_output
from simgen.augment.ldm.masks import class_map_from_instances
from simgen.augment.ldm.sampling import TrainedLDM
from simgen.augment.ldm.translate import check_translation, start_step, translate
from simgen.augment.ldm.visibility import box_cnr, kept_labels, visibility_summary
from simgen.augment.realism import ImageSetStats, realism_distance
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.ldm_io import instance_classes_from_boxes
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import track
from simgen.runtime import check_image_memory

__all__ = ["CONDITIONS", "translate_file"]

#: ``auto`` = the input's masks when it has them and the model was trained on labelled masks, else ``none``.
CONDITIONS = ("auto", "mask", "none")


def _real_stats(real, max_real: int) -> ImageSetStats:
    stats = ImageSetStats()
    with open_source(real) as src:
        picks = np.unique(np.linspace(0, src.n - 1, min(src.n, int(max_real))).round().astype(int))
        for k in picks:
            stats.add(src.image(int(k)))
    return stats


def translate_file(
    model: TrainedLDM,
    source: str | PathLike,
    output: str | PathLike,
    *,
    strength: float = 0.3,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    condition: str = "auto",
    batch_size: int = 8,
    texture_noise: bool = True,
    image_dtype: str = "uint8",
    real: str | PathLike | None = None,
    max_real: int = 64,
    threshold: float = 0.5,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Translate every image of ``source`` into a new dataset at ``output``; labels are copied unchanged.

    Parameters
    ----------
    model : TrainedLDM
    source : path-like
        Any input :func:`open_source` reads (a simgen HDF5 file of renders, typically); its
        images must share one size.
    output : path-like
        New HDF5 file; never the input (refused even with ``overwrite``).
    strength, steps, guidance, seed, batch_size, texture_noise
        As in :func:`simgen.augment.ldm.translate.translate` (image ``k`` of the input uses
        the streams ``(seed, k)``).
    condition : {"auto", "mask", "none"}
        Condition on each image's own class map (built from its instance mask and the
        classes of its boxes), or denoise unconditionally.
    image_dtype : {"uint8", "uint16", "float32"}
    real : path-like, optional
        A real image set; the report then holds the realism distances of the images to it
        before and after translation.
    max_real : int
        Use at most this many real images (evenly spaced).
    threshold : float
        ``|CNR|`` at which a label counts as visible.

    Returns
    -------
    dict: ``path``, ``n``, ``condition``, ``strength``, ``steps_run``, ``labels``
    (:func:`visibility_summary`), ``realism`` (``before_vs_real``, ``after_vs_real`` or None),
    ``seconds`` and ``seconds_per_image``.

    Raises
    ------
    ParameterError, DataError
        Before the output is created: bad settings, output = input, images of several
        sizes, a mask condition without masks or with classes the model does not know.
    """
    if condition not in CONDITIONS:
        raise ParameterError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if int(max_real) != max_real or max_real < 1:
        raise ParameterError(f"max_real must be a positive integer, got {max_real}")
    if not threshold > 0:
        raise ParameterError(f"threshold must be > 0, got {threshold}")
    src_path, out_path = Path(source), Path(output)
    if out_path.resolve() == src_path.resolve():
        raise ParameterError(f"output {output} is the input; translation never overwrites its input")
    check_output(output, overwrite)
    t0 = time.perf_counter()
    with open_source(source) as src:
        shapes = {src.shape(k) for k in range(src.n)}
        if len(shapes) > 1:
            raise DataError(f"{source}: images differ in size {sorted(shapes)}; a dataset holds one image size")
        check_image_memory(next(iter(shapes)), n_images=batch_size, working_copies=64, what="translating one batch",
                           option="input images")
        unlabeled_model = bool(model.meta.get("source", {}).get("unlabeled"))
        if condition == "auto":
            condition = "mask" if src.has_masks and not unlabeled_model else "none"
        if condition == "mask":
            if not src.has_masks:
                raise DataError(f"{source} has no instance masks to condition on; use --condition none")
            known = list(model.class_names)
            if src.class_names and list(src.class_names) != known[: len(src.class_names)]:
                raise ParameterError(f"{source} has classes {src.class_names}, the model {known}; "
                                     "condition only on the classes the model was trained with")
        steps, guidance = check_translation(model, strength=strength, steps=steps, guidance=guidance,
                                            conditioned=condition == "mask")
        real_stats = _real_stats(real, max_real) if real is not None else None
        before_stats, after_stats = ImageSetStats(), ImageSetStats()
        cnr_before, cnr_after = [], []
        n_run = start_step(strength, steps)
        settings = {"strength": float(strength), "steps": steps, "steps_run": n_run, "guidance": guidance,
                    "condition": condition, "seed": int(seed), "texture_noise": bool(texture_noise)}
        dataset = src.dataset
        generator = {"function": "simgen.datasets.translate_io.translate_file", **settings,
                     "model": {"checkpoint": str(model.path), "config": model.config.to_dict(),
                               "class_names": list(model.class_names),
                               "steps_trained": {"vae": model.meta["vae_step"], "unet": model.meta["unet_step"]},
                               "training_data": model.meta.get("source", {})},
                     "input": str(src_path.resolve()),
                     "input_generator": dataset.attrs.get("generator") if dataset is not None else None}
        tables = [t for t in src.tables if t]
        chunks = [range(a, min(src.n, a + int(batch_size))) for a in range(0, src.n, max(1, int(batch_size)))]
        with DatasetWriter(output, kind=src.sample_kind, image_dtype=image_dtype, class_names=src.class_names or None,
                           generator=generator, seed=int(seed), attrs={"translated": True},
                           overwrite=overwrite) as writer:
            for chunk in track(chunks, total=len(chunks), description=f"translate → {out_path.name}",
                               enabled=progress):
                images = np.stack([src.image(k) for k in chunk])
                inst = [src.mask(k) for k in chunk]
                boxes = [src.boxes(k) for k in chunk]
                maps = (np.stack([_class_map(m, b, src.name(k)) for m, b, k in zip(inst, boxes, chunk)])
                        if condition == "mask" else None)
                out = translate(model, images, maps, strength=strength, steps=steps, guidance=guidance, seed=seed,
                                start=chunk[0], batch_size=len(chunk), texture_noise=texture_noise)
                for j, k in enumerate(chunk):
                    before_stats.add(images[j])
                    after_stats.add(out[j])
                    a = box_cnr(images[j], boxes[j]) if boxes[j] is not None else np.zeros(0)
                    b = box_cnr(out[j], boxes[j]) if boxes[j] is not None else np.zeros(0)
                    cnr_before.append(a)
                    cnr_after.append(b)
                    vis, kept = kept_labels(a, b, threshold)
                    origin = dataset.provenance(int(src.indices[k])) if dataset is not None else {}
                    writer.append(out[j], mask=inst[j], tables={t: src.rows(t, k) for t in tables},
                                  name=src.name(k),
                                  provenance={**origin, "translate": {**settings, "index": int(k),
                                                                      "labels_visible_before": int(vis.sum()),
                                                                      "labels_kept": int(kept.sum())}})
        n = src.n
    seconds = time.perf_counter() - t0
    realism = None
    if real_stats is not None:
        before = realism_distance(before_stats, real_stats).to_dict()
        after = realism_distance(after_stats, real_stats).to_dict()
        realism = {"before_vs_real": before, "after_vs_real": after,
                   "psd_change": after["psd"] - before["psd"], "histogram_change": after["histogram"] - before["histogram"]}
    return {"path": str(out_path), "n": n, **settings,
            "labels": visibility_summary(np.concatenate(cnr_before), np.concatenate(cnr_after), threshold),
            "realism": realism, "seconds": seconds, "seconds_per_image": seconds / max(n, 1)}


def _class_map(mask: np.ndarray | None, boxes, name: str) -> np.ndarray:
    """Per-pixel class map of one sample from its instance mask and boxes (``condition="mask"``)."""
    if mask is None:
        raise DataError(f"sample {name} has no instance mask to condition on; use --condition none")
    return class_map_from_instances(mask, instance_classes_from_boxes(mask, boxes))
