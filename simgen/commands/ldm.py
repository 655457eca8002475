"""``simgen ldm``: the mask-conditioned latent diffusion generator of image + mask pairs.

``import-real`` builds a pairs file from a real YOLO folder with masks (or, with
``--unlabeled``, from unlabelled images), ``train`` trains (or resumes) a model in a
run folder, ``sample`` writes new automatically labelled pairs, ``translate`` moves
labelled renders toward the learned look (SDEdit) keeping their labels, ``quality``
compares generated pairs with real ones and ``fewshot`` runs the few-shot augmentation
study with Mask R-CNN.
"""

from __future__ import annotations

import json
import sys

import click

from simgen.atomic import atomic_write_text, check_output
from simgen.augment.ldm.config import LDMConfig
from simgen.augment.ldm.masks import mask_source_from_spec
from simgen.augment.ldm.quality import quality_report
from simgen.commands._options import (
    CONTEXT,
    device_option,
    dtype_option,
    output_option,
    overwrite_option,
    progress_option,
    renamed_option,
)
from simgen.datasets.ldm_io import import_real, import_unlabeled, read_pairs, read_pairs_sample, write_generated
from simgen.errors import ParameterError
from simgen.runtime import check_image_memory


@click.group("ldm", context_settings=CONTEXT)
def ldm_group():
    """Mask-conditioned latent diffusion: generate labelled image + mask pairs that look real.

    \b
    Typical flow:
      simgen ldm import-real ../shared/realdata/dev/ti_anneal --scale 0.25 -o ti_pairs.h5
      simgen ldm train --data ti_pairs.h5 --config tiny -o runs/ldm
      simgen ldm sample runs/ldm --n 500 -o generated.h5
      simgen ldm quality generated.h5 --real ti_pairs.h5
    """


def _parse_sets(items) -> dict:

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@ldm_group.command("import-real")
@click.argument("folder", type=click.Path())
@output_option(help="Output HDF5 pairs file.")
@click.option("--tile", type=int, default=256, show_default=True,
              help="Cut every (rescaled) image into TILE x TILE tiles covering it; 0 keeps whole images.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Resample images first (e.g. 0.25 turns 2048² frames into 512²; masks nearest-neighbour).")
@click.option("--min-area", type=int, default=4, show_default=True, help="Drop instances smaller than this (px).")
@click.option("--unlabeled", is_flag=True,
              help="FOLDER holds unlabelled images: tiles get all-background masks and no boxes (labels are never "
                   "read); the model then learns the real look without defect conditioning (for `ldm translate`).")
@click.option("--max-images", type=click.IntRange(min=1), default=None,
              help="With --unlabeled: use at most this many images, evenly spaced (video frames are correlated).")
@overwrite_option
@progress_option
def import_real_command(folder, output, tile, scale, min_area, unlabeled, max_images, overwrite, progress):
    """Build an LDM pairs file (images + instance masks + boxes) from a real YOLO folder with masks/.

    Classes come from the YOLO boxes matched to the mask instances; boxes are re-derived
    from the (rescaled, tiled) masks.  Provenance records the source image and offset of
    every tile.  With --unlabeled, FOLDER (or FOLDER/images) is a plain image folder.

    \b
    Examples:
      simgen ldm import-real ../shared/realdata/dev/ti_anneal --scale 0.25 -o ti_pairs.h5
      simgen ldm import-real ../shared/realdata/dev/creme_316L --scale 0.5 --tile 128 -o creme_pairs.h5
      simgen ldm import-real ../shared/realdata/unlabeled/dsva_fecral_video/frames --unlabeled --tile 128 \\
          --max-images 50 -o fecral_unlabeled.h5
    """

    if unlabeled:
        res = import_unlabeled(folder, output, tile=tile, scale=scale, max_images=max_images, overwrite=overwrite,
                               progress=progress)
        click.echo(f"wrote {res['n_tiles']} unlabelled tiles from {res['n_images']} images to {res['path']}")
        return
    if max_images is not None:
        raise ParameterError("--max-images needs --unlabeled")
    res = import_real(folder, output, tile=tile, scale=scale, min_area=min_area, overwrite=overwrite,
                      progress=progress)
    skipped = f" ({len(res['skipped'])} images without masks skipped)" if res["skipped"] else ""
    click.echo(f"wrote {res['n_tiles']} tiles from {res['n_images']} images with {res['n_instances']} instances "
               f"to {res['path']}{skipped}")


@ldm_group.command("train")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="HDF5 with images and /labels/masks (ldm import-real, simulate tem, ...).")
@click.option("--config", "preset", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True,
              help="tiny: 64² crops, minutes on one CPU thread; full: 256² crops, for an accelerator.")
@click.option("--max-steps", type=click.IntRange(min=2), default=None,
              help="Total optimiser steps (VAE + denoiser, split like the config's); default: the config's.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set unet_steps=5000 --set guidance=2 (repeatable).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Master seed.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Run folder (config.json, last.pt).")
@click.option("--resume", is_flag=True, help="Continue the run in the output folder from its last.pt.")
@overwrite_option
@progress_option
def train_command(data, preset, max_steps, sets, seed, device, output, resume, overwrite, progress):
    """Train the mask-conditioned LDM (VAE, then latent denoiser) on image + mask pairs.

    A checkpoint is written atomically every `checkpoint_every` steps; `--resume`
    continues a killed run where it stopped (and may extend it with a larger --max-steps).

    \b
    Examples:
      simgen ldm train --data ti_pairs.h5 --config tiny -o runs/ldm
      simgen ldm train --data ti_pairs.h5 --config tiny --max-steps 200 -o runs/smoke
      simgen ldm train --data ti_pairs.h5 --config full --device cuda -o runs/ldm_full
    """
    from simgen.train.ldm import train_ldm


    config = LDMConfig.preset(preset, **_parse_sets(sets)).with_max_steps(max_steps).validate()
    pairs = read_pairs(data).validate(config.crop_size)

    log = None if (progress and sys.stderr.isatty()) else (lambda text: click.echo(f"ldm {text}", err=True))
    res = train_ldm(pairs, config, output, seed=seed, resume=resume, overwrite=overwrite, device=device,
                    progress=progress, log=log)
    vae = res.get("vae")
    vae_text = f"; VAE reconstruction MAE {vae['recon_mae']:.4f} vs {vae['constant_mae']:.4f} for a constant" if vae else ""
    click.echo(f"trained {res['steps']['vae']} VAE + {res['steps']['unet']} denoiser steps on {len(pairs)} images "
               f"({config.name}, {res['device']}){vae_text}; checkpoint {res['checkpoint']}")


@ldm_group.command("sample")
@click.argument("run", type=click.Path())
@click.option("--n", "n", type=click.IntRange(min=1), default=500, show_default=True, help="Number of pairs.")
@output_option(help="Output HDF5 file (images, instance masks, boxes, provenance).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Master seed; pair i depends only on (seed, i).")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="Index of the first pair.")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Image side (default: the training crop size; any multiple of the model's factor).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampling steps (default: the config's).")
@click.option("--sampler", "scheduler", type=click.Choice(["ddim", "dpm"]), default=None,
              help="Diffusion sampler (default: the config's; --scheduler names the Dask scheduler elsewhere).")
@renamed_option("--scheduler", "--sampler", "scheduler", type=click.Choice(["ddim", "dpm"]))
@click.option("--guidance", type=click.FloatRange(min=0), default=None,
              help="Classifier-free guidance scale (1 = none; default: the config's).")
@click.option("--masks", "mask_source", default="learned", show_default=True,
              help="Mask source: 'learned' (statistics of the training masks) or 'tem[:PRESET[:SCALE]]' "
                   "(the TEM simulator's defect sampler, e.g. tem:ti:0.25).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@device_option
@dtype_option
@overwrite_option
@progress_option
def sample_command(run, n, output, seed, start, size, steps, scheduler, guidance, mask_source, batch_size, device,
                   image_dtype, overwrite, progress):
    """Generate new automatically labelled image + mask pairs from a trained LDM.

    \b
    Examples:
      simgen ldm sample runs/ldm --n 500 -o generated.h5
      simgen ldm sample runs/ldm --n 100 --size 128 --steps 50 --guidance 2 -o gen128.h5
      simgen ldm sample runs/ldm --n 100 --masks tem:ti:0.25 -o gen_sim_masks.h5
    """
    from simgen.augment.ldm.sampling import load_ldm


    check_output(output, overwrite)

    model = load_ldm(run, device=device)
    size = size or model.config.crop_size
    check_image_memory((size, size), n_images=batch_size, working_copies=64, what="sampling one batch")
    model.model.check_size(size, size)
    source = mask_source_from_spec(mask_source, model.mask_statistics, n_classes=len(model.class_names))
    if guidance is not None and guidance != 1 and model.config.cfg_dropout == 0:
        raise ParameterError("this model was trained without mask dropout; use --guidance 1")
    samples = model.sample(n, seed=seed, start=start, size=size, steps=steps, scheduler=scheduler, guidance=guidance,
                           batch_size=batch_size, mask_source=source, progress=progress)
    res = write_generated(output, samples, class_names=model.class_names, generator=model.describe(), seed=seed, n=n,
                          overwrite=overwrite, image_dtype=image_dtype,
                          attrs={"first_index": int(start), "mask_source": mask_source})
    click.echo(f"wrote {res['n']} generated {size}x{size} pairs with {res['n_defects']} defects to {res['path']} "
               f"({res['n'] / max(res['seconds'], 1e-9):.2f} samples/s)")


@ldm_group.command("translate")
@click.argument("run", type=click.Path())
@click.argument("source", type=click.Path())
@output_option(help="Output HDF5 dataset: translated images, the input's labels unchanged, provenance.")
@click.option("--strength", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="How far into the diffusion each image is pushed: 0 = the VAE reconstruction, 1 = pure noise.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps of the full DDIM schedule; round(steps x strength) are run (default: the config's).")
@click.option("--guidance", type=click.FloatRange(min=0), default=None,
              help="Classifier-free guidance of the mask condition (default: the config's).")
@click.option("--condition", type=click.Choice(["auto", "mask", "none"]), default="auto", show_default=True,
              help="mask: each image's own masks; none: unconditional; auto: mask when the input has masks and "
                   "the model was trained on labelled masks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Master seed; image k depends only on (seed, k).")
@click.option("--real", "real", type=click.Path(), default=None,
              help="Real image set (folder or dataset): report the spectrum/histogram distance before vs after.")
@click.option("--max-real", type=click.IntRange(min=1), default=64, show_default=True,
              help="Use at most this many real images.")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="|contrast-to-noise| of a box vs the ring around it at which a label counts as visible.")
@click.option("--report", "report", type=click.Path(dir_okay=False), default=None,
              help="Also write the report (label visibility, realism distances, timing) as JSON.")
@click.option("--no-texture", is_flag=True, help="Do not add the model's residual texture noise.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@device_option
@dtype_option
@overwrite_option
@progress_option
def translate_command(run, source, output, strength, steps, guidance, condition, seed, real, max_real, threshold,
                      report, no_texture, batch_size, device, image_dtype, overwrite, progress):
    """Translate labelled images (e.g. synthetic renders) toward the look the LDM learned, keeping their labels.

    SDEdit: each image is encoded, noised to the timestep given by --strength, denoised
    with DDIM (conditioned on its own masks, or unconditionally) and decoded.  Boxes,
    masks and every other annotation table are copied unchanged.  Prints one line and
    the report: the fraction of labelled boxes still visible (contrast vs a ring around
    each box, before vs after) and, with --real, the realism distances before vs after.

    \b
    Examples:
      simgen ldm translate runs/ldm_real renders.h5 -o renders_sdedit.h5 --strength 0.3
      simgen ldm translate runs/ldm_real renders.h5 -o t.h5 --strength 0.2 --real frames/ --report t.json
    """
    from pathlib import Path

    from simgen.augment.ldm.sampling import load_ldm
    from simgen.datasets.translate_io import translate_file

    if Path(output).resolve() == Path(source).resolve():
        raise ParameterError(f"output {output} is the input; translation never overwrites its input")
    check_output(output, overwrite)
    if report:
        if Path(report).resolve() in (Path(output).resolve(), Path(source).resolve()):
            raise ParameterError("--report must be a separate JSON file")
        check_output(report, overwrite)
    if not Path(source).exists():
        raise ParameterError(f"{source} does not exist")
    model = load_ldm(run, device=device)
    res = translate_file(model, source, output, strength=strength, steps=steps, guidance=guidance, seed=seed,
                         condition=condition, batch_size=batch_size, texture_noise=not no_texture,
                         image_dtype=image_dtype, real=real, max_real=max_real, threshold=threshold,
                         overwrite=overwrite, progress=progress)
    text = json.dumps(res, indent=2, default=float)
    if report:
        atomic_write_text(report, text + "\n", overwrite=overwrite)
    lab = res["labels"]
    kept = "n/a" if lab["kept"] is None else f"{lab['kept']:.3f}"
    click.echo(f"translated {res['n']} images ({res['condition']}, strength {res['strength']}, {res['steps_run']} "
               f"DDIM steps, {res['seconds_per_image']:.3f} s/image) to {res['path']}; labels visible before "
               f"{lab['visible_before']}, kept {kept}")
    click.echo(text)


@ldm_group.command("quality")
@click.argument("generated", type=click.Path(dir_okay=False))
@click.option("--real", "real", required=True, type=click.Path(dir_okay=False),
              help="Reference pairs (e.g. the LDM's training data).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON.")
@click.option("--max-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Compare at most this many images of each file.")
@overwrite_option
def quality_command(generated, real, output, max_images, overwrite):
    """Sample-quality report: mask statistics, image realism distances, conditioning contrast.

    Prints one JSON object (the reference is cut into random crops of the generated size
    when its images are larger): per-class defect count / size distributions of generated vs
    real masks (KS statistics), power-spectrum and histogram distances of generated vs
    real images (and of real vs real halves as a yardstick), and the mean intensity
    inside vs outside the defect masks of both.

    \b
    Example:
      simgen ldm quality generated.h5 --real ti_pairs.h5 -o quality.json
    """

    if output:
        check_output(output, overwrite)

    gen = read_pairs_sample(generated, max_images)
    ref = read_pairs_sample(real, max_images)
    report = quality_report(gen, ref)
    text = json.dumps(report, indent=2, default=float)
    if output:
        atomic_write_text(output, text + "\n", overwrite=overwrite)
    click.echo(text)


@ldm_group.command("fewshot")
@click.option("--real", "real", required=True, type=click.Path(file_okay=False),
              help="Real YOLO folder with masks/ (e.g. ../shared/realdata/dev/ti_anneal).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Study folder (results.jsonl, summary.json, results.md, fewshot.png, intermediate files).")
@click.option("--shots", default="10,50,100", show_default=True, help="Numbers of real training tiles.")
@click.option("--splits", "n_splits", type=click.IntRange(min=1), default=3, show_default=True,
              help="Random splits (held-out images differ per split).")
@click.option("--test-images", type=click.IntRange(min=1), default=3, show_default=True,
              help="Source images held out per split (all their tiles are the test set).")
@click.option("--conditions", default="real,real+ldm,real+sim,sim", show_default=True,
              help="Comma-separated subset of real, real+ldm, real+sim, sim.")
@click.option("--n-extra", type=click.IntRange(min=1), default=100, show_default=True,
              help="Generated / simulated pairs added to the real tiles.")
@click.option("--tile", type=click.IntRange(min=16), default=128, show_default=True, help="Tile side (px).")
@click.option("--scale", type=float, default=0.5, show_default=True, help="Resampling of the real images first.")
@click.option("--iterations", "train_iterations", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Mask R-CNN budget in image-iterations (same for every condition).")
@click.option("--maskrcnn-config", type=click.Choice(["tiny", "light", "full"]), default="tiny", show_default=True)
@click.option("--ldm-config", type=click.Choice(["tiny", "full"]), default="tiny", show_default=True)
@click.option("--ldm-max-steps", type=click.IntRange(min=2), default=None, help="LDM training steps (default: config).")
@click.option("--ldm-set", "ldm_sets", multiple=True, metavar="KEY=VALUE", help="Override an LDM config field.")
@click.option("--sim-preset", default="ti", show_default=True, help="TEM simulator preset of the sim conditions.")
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True)
@click.option("--conf", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option
@click.option("--keep-checkpoints", is_flag=True, help="Keep every Mask R-CNN checkpoint (large).")
@click.option("--resume", is_flag=True, help="Continue the study in the output folder (finished rows are kept).")
@overwrite_option
@progress_option
def fewshot_command(real, output, shots, n_splits, test_images, conditions, n_extra, tile, scale, train_iterations,
                    maskrcnn_config, ldm_config, ldm_max_steps, ldm_sets, sim_preset, iou, conf, seed, device,
                    keep_checkpoints, resume, overwrite, progress):
    """Few-shot augmentation study: Mask R-CNN on k real tiles, with/without LDM or simulator pairs.

    Held-out source images are never used for training (neither by Mask R-CNN nor by
    the LDM, which is retrained on each split's k tiles).  Prints the table of detection
    F1, classification F1, harmonic mean and AP on the held-out tiles (mean ± std over
    splits).  Long: see docs/ldm.md for the cost and the reduced run in the README.

    \b
    Examples:
      simgen ldm fewshot --real ../shared/realdata/dev/ti_anneal -o studies/ti
      simgen ldm fewshot --real ../shared/realdata/dev/ti_anneal --shots 10,100 --iterations 1000 -o studies/ti_small
    """
    from simgen.experiments.fewshot_ldm import FewShotConfig, format_table, run_fewshot  # loads torch: lazy

    try:
        shot_list = tuple(int(k) for k in shots.replace(" ", "").split(","))
    except ValueError:
        raise ParameterError(f"--shots must be comma-separated integers, got {shots!r}") from None
    config = FewShotConfig(
        tile=tile, scale=scale, shots=shot_list, n_splits=n_splits, test_images=test_images,
        conditions=tuple(c.strip() for c in conditions.split(",") if c.strip()), n_extra=n_extra,
        ldm_config=ldm_config, ldm_max_steps=ldm_max_steps, ldm_overrides=_parse_sets(ldm_sets),
        maskrcnn_config=maskrcnn_config, train_iterations=train_iterations, sim_preset=sim_preset or None,
        iou=iou, conf=conf, seed=seed,
    ).validate()
    log = lambda text: click.echo(f"fewshot {text}", err=True)
    result = run_fewshot(real, output, config, resume=resume, overwrite=overwrite, device=device,
                         keep_checkpoints=keep_checkpoints, progress=progress, log=log)
    click.echo(format_table(result.to_dict()))


def register(groups):
    groups["main"].add_command(ldm_group)
    groups["ldm"] = ldm_group
