"""``simgen realism``: can a classifier tell synthetic images from real ones?"""

from __future__ import annotations

from pathlib import Path

import click

from simgen.commands._options import overwrite_option, progress_option, renamed_option, seed_option
from simgen.errors import ParameterError
from simgen.evaluate.realism_judge import REPORT_FILES, JudgeSettings, judge_realism, write_report


def _check_outputs(out_dir: Path, inputs, overwrite: bool) -> None:
    """Refuse before any work: a report folder that is a file or an input, or report files without --overwrite."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ParameterError(f"output {out_dir} is a file, expected a folder")
    for source in inputs:
        if out_dir.resolve() == Path(source).resolve():
            raise ParameterError(f"output folder {out_dir} is an input; choose another -o")
    existing = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if existing and not overwrite:
        raise ParameterError(f"output {out_dir / existing[0]} exists; pass --overwrite to replace it")


@click.command("realism")
@click.argument("synthetic", type=click.Path())
@click.option("--real", "real", required=True, type=click.Path(),
              help="Real images: image folder (its images/ subfolder if present; labels never read) or HDF5 dataset.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--patch", type=click.IntRange(16, 256), default=64, show_default=True, help="Patch side (px).")
@click.option("--patches", "n_patches", type=click.IntRange(min=2), default=512, show_default=True,
              help="Held-out patches scored per side.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds over source images (each side needs at least this many images).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Training steps per fold.")
@click.option("--batch-size", "batch", type=click.IntRange(min=2), default=64, show_default=True,
              help="Patches per step (half per side).")
@renamed_option("--batch", "--batch-size", "batch", type=click.IntRange(min=2))
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Resample synthetic images by this factor first: synthetic nm/px divided by real nm/px.")
@click.option("--max-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="Read at most this many images per side (evenly spaced).")
@seed_option
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when visible), cpu or cuda[:N].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default $SIMGEN_THREADS or 1).")
@overwrite_option
@progress_option
def realism_command(synthetic, real, output, patch, n_patches, folds, steps, batch, scale, max_images, seed, device,
                    threads, overwrite, progress):
    """Judge how real SYNTHETIC looks: held-out AUC of a CNN telling its patches from real ones.

    SYNTHETIC is a simgen HDF5 dataset or an image folder.  A small CNN is trained from
    scratch to tell real from synthetic patches; folds split by source image; every patch
    is standardized (mean 0, std 1), so brightness and contrast are no cue.  AUC 0.5 =
    cannot tell, 1.0 = tells every patch.  Spectrum and histogram distances, and a census of
    the dark, defect-sized blobs per Mpx by depth on each side (pixels only), are reported
    next to it.  Writes realism.json, realism.md and sheet.png (the patches judged most
    synthetic, the hardest fakes and the most real) into the -o folder.

    \b
    Examples:
      simgen realism tem.h5 --real ../shared/realdata/dev/dsva_fecral -o judge_dsva/
      simgen realism tem.h5 --real real_pngs/ --scale 0.5 --patch 96 -o judge/
    """
    settings = JudgeSettings(patch=patch, n_patches=n_patches, folds=folds, steps=steps, batch=batch, seed=seed,
                             scale=scale, max_images=max_images, device=device, threads=threads).validate()
    out_dir = Path(output)
    _check_outputs(out_dir, (synthetic, real), overwrite)
    log = (lambda line: click.echo(line, err=True)) if progress else None
    result = judge_realism(synthetic, real, settings, log=log)
    write_report(out_dir, result, str(synthetic), str(real), overwrite=overwrite)
    click.echo(f"AUC {result.auc:.3f} ± {result.auc_std:.3f} (0.5 = cannot tell), spectrum distance "
               f"{result.distance['psd']:.3f} dec, histogram distance {result.distance['histogram']:.4f}, "
               f"dark-blob census distance {result.distance['blobs']:.3f} dec; "
               f"wrote {out_dir}/{{{','.join(REPORT_FILES)}}}")


def register(groups):
    groups["main"].add_command(realism_command)
