"""``simgen augment ...`` (apply, extract-noise, preview, realism, codes) and ``simgen ablate``."""

from __future__ import annotations

import json
from functools import partial

import click

from simgen.augment.spec import KEYWORDS, levels_table
from simgen.commands._options import (
    CONTEXT,
    DefaultGroup,
    output_option,
    overwrite_option,
    progress_option,
    seed_option,
)
from simgen.datasets.augment_io import augment_dataset, extract_noise_profile, realism_report, transform_sheet
from simgen.experiments.ablation import grid_rows, load_grid, run_ablation
from simgen.experiments.ablation_yolo import eval_for_ablation, train_for_ablation
from simgen.runtime import check_image_memory
from simgen.train.yolo.config import PRESETS

spec_option = click.option(
    "--spec", required=True,
    help="Artifact codes joined by '+', e.g. 'L-FN+L-GB+RB+islands', 'all', 'image', 'none' (see 'simgen augment codes').",
)
noise_option = click.option(
    "--noise-profile", default="default", show_default=True,
    help="Read-noise profile for FN: 'default' or an .npz from 'simgen augment extract-noise'.",
)


@click.group("augment", cls=DefaultGroup, default_command="apply", context_settings=CONTEXT,
             invoke_without_command=True)
@click.pass_context
def augment_group(ctx):
    """Make simulated images look like a real instrument (default subcommand: apply).

    \b
    Examples:
      simgen augment film.h5 --spec "L-FN+L-GB+RB+islands" --seed 1 -o film_aug.h5
      simgen augment extract-noise real/images/ -o camera.npz
      simgen augment preview film.h5 --spec all -o sheet.png
      simgen augment codes
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@augment_group.command("apply")
@click.argument("path", type=click.Path(dir_okay=False))
@spec_option
@seed_option
@noise_option
@click.option("--dtype", "image_dtype", type=click.Choice(["uint8", "uint16", "float32"]), default=None,
              help="On-disk image dtype (default: that of the input).")
@output_option(help="Output HDF5 file.")
@overwrite_option
@progress_option
def apply_command(path, spec, seed, noise_profile, image_dtype, output, overwrite, progress):
    """Apply the image-level codes of SPEC to every image of a dataset.

    Annotations, masks and the phase field are copied unchanged; the spec, seed and
    every drawn parameter are stored as provenance.  RD and LR act at simulation
    time (use 'simgen simulate film --spec'); DC needs a stored phase field.

    \b
    Example:
      simgen augment film.h5 --spec "L-FN+L-GB+RB+islands" --seed 1 -o film_aug.h5
    """

    out = augment_dataset(path, output, spec, seed=seed, noise_profile=noise_profile, overwrite=overwrite,
                          progress=progress, image_dtype=image_dtype)
    click.echo(f"wrote {out}")


@augment_group.command("extract-noise")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@output_option(help="Output .npz noise profile.")
@click.option("--tile", type=click.IntRange(min=16), default=256, show_default=True, help="Welch tile side (px).")
@click.option("--min-freq", type=click.FloatRange(0, 0.5, max_open=True), default=0.02, show_default=True,
              help="Ignore frequencies below this (cycles/px): specimen content lives there.")
@click.option("--line-ratio", type=click.FloatRange(1, min_open=True), default=1.5, show_default=True,
              help="A spectrum row/column is a line when its median power exceeds the background this much.")
@click.option("--peak-ratio", type=click.FloatRange(1, min_open=True), default=4.0, show_default=True,
              help="A peak must exceed the background this much (and be significant).")
@click.option("--name", default=None, help="Name stored in the profile.")
@overwrite_option
def extract_noise_command(images, output, tile, min_freq, line_ratio, peak_ratio, name, overwrite):
    """Measure the periodic read-noise spectrum of real IMAGES (files or folders) into a profile.

    \b
    Example:
      simgen augment extract-noise ../shared/realdata/dev/dsva_fecral/images -o dsva_noise.npz
    """

    prof = extract_noise_profile(list(images), output, overwrite=overwrite, name=name, tile=tile, min_freq=min_freq,
                                 line_ratio=line_ratio, peak_ratio=peak_ratio)
    m = prof.meta
    click.echo(
        f"wrote {output}: {len(prof)} components from {m['n_images']} image(s) ({m['n_tiles']} tiles of {m['tile']} px); "
        f"lines {m['line_rows']} rows/{m['line_cols']} cols, {m['peak_bins']} peak bins; "
        f"periodic noise RMS = {prof.rms_ratio:.4f} x image std"
    )


@augment_group.command("preview")
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@spec_option
@output_option(help="Output PNG.")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Sample of the dataset.")
@seed_option
@click.option("--size", type=click.IntRange(min=32), default=256, show_default=True,
              help="Without SOURCE: side of the simulated film image.")
@noise_option
@overwrite_option
def preview_command(source, spec, output, index, seed, size, noise_profile, overwrite):
    """Before/after PNG sheet: the original, each code of SPEC alone, and all together.

    SOURCE is an HDF5 dataset or an image file; without it a film image is simulated,
    so the simulation-time codes (RD, LR, DC) can be shown too.

    \b
    Examples:
      simgen augment preview film.h5 --spec "L-FN+GB+RB+islands" -o sheet.png
      simgen augment preview --spec "all+RD" -o sheet.png
    """

    # a tile per code (up to every code with "all") plus the original and the combination
    check_image_memory((size, size), n_images=24, working_copies=4, what="this preview")
    out = transform_sheet(source, output, spec, index=index, seed=seed, size=size, noise_profile=noise_profile,
                          overwrite=overwrite)
    click.echo(f"wrote {out}")


@augment_group.command("realism")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--spec", default="none", show_default=True, help="Image-level codes applied to A first.")
@seed_option
@noise_option
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use at most this many images per set.")
def realism_command(a, b, spec, seed, noise_profile, max_images):
    """Realism distances of image set A (optionally augmented) to set B, as JSON.

    Sets are HDF5 datasets, YOLO folders, image folders (or folders of them) or image
    files.  'psd' is the RMS log10 difference of radially averaged power spectra
    (decades), 'histogram' the Wasserstein-1 distance of standardized intensities.

    \b
    Example:
      simgen augment realism tem.h5 ../shared/realdata/dev/creme_316L --spec "L-FN+GB" --max-images 64
    """

    report = realism_report(a, b, spec=spec, seed=seed, noise_profile=noise_profile, max_images=max_images)
    click.echo(json.dumps(report, indent=2))


@augment_group.command("codes")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def codes_command(as_json):
    """List the artifact codes, their stage and the L-/H- parameter ranges."""

    rows = levels_table()
    if as_json:
        click.echo(json.dumps({"codes": rows, "keywords": KEYWORDS}, indent=2))
        return
    click.echo(f"{'code':<8} {'stage':<11} {'param':<11} {'low (L-)':<24} {'high (H-)':<24} summary")
    for r in rows:
        lo = "" if r["low"] is None else f"{r['low'][0]:g}..{r['low'][1]:g} {r['unit']}"
        hi = "" if r["high"] is None else f"{r['high'][0]:g}..{r['high'][1]:g} {r['unit']}"
        stage = "sim/image" if r["code"] == "DC" else r["stage"]
        click.echo(f"{r['code']:<8} {stage:<11} {r['param']:<11} {lo:<24} {hi:<24} {r['summary']}")
    click.echo("keywords: " + "; ".join(f"{k} = {'+'.join(v)}" for k, v in KEYWORDS.items()) + "; none")
    click.echo("no prefix = the span of L- and H-; CODE@v fixes the first parameter (CODE@a:b draws from [a, b])")


@click.command("ablate")
@click.option("--grid", "grid_path", required=True, type=click.Path(dir_okay=False),
              help="Ablation grid YAML (example: simgen/configs/ablation.yaml), or a shipped grid's name: table1 "
                   "(the smectic-film study's Table 1, 21 rows), ablation.")
@click.option("-o", "--output", "output", type=click.Path(), default=None,
              help="Output folder (datasets/, eval/, runs/, ablation.csv/.md/.json/.png); not needed with --list.")
@click.option("--list", "list_rows", is_flag=True, help="Print the grid's rows (number, name, spec, published "
                                                        "figures) and exit.")
@click.option("--train", is_flag=True,
              help="Train a detector per combination and score it (peak F1, AP) on --eval-on, else on a held-out "
                   "synthetic set (eval/heldout.h5: the grid's sampler with another seed).")
@click.option("--eval-on", "eval_on", type=click.Path(), default=None,
              help="Annotated images (a YOLO folder or an HDF5 dataset): realism distances to them, and what "
                   "--train scores on. Realism alone also takes a folder of YOLO folders.")
@click.option("--hooks", default=None, metavar="MODULE",
              help="Python module providing train_for_ablation(train_h5, run_dir) and eval_for_ablation(weights, "
                   "eval_on) instead of the built-in YOLO hooks (simgen.experiments.ablation_yolo). The module is "
                   "imported, which runs its code: give only modules you trust.")
@click.option("--train-preset", type=click.Choice(["small", "full"]), default="full", show_default=True,
              help="YOLO preset of the built-in hooks (small: 64² tiles, seconds per dataset on a CPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="YOLO epochs of the built-in hooks (default: the preset's).")
@click.option("--only", default=None, help="Comma-separated combination names to run.")
@click.option("--rows", default=None, help="Comma-separated row numbers to run (1-based, as --list shows).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Images per combination (overrides the grid).")
@overwrite_option
@progress_option
def ablate_command(grid_path, output, list_rows, train, eval_on, hooks, train_preset, epochs, only, rows, n, overwrite,
                   progress):
    """One dataset per artifact combination (Table-1 style), optionally a detector each.

    Writes datasets/<name>.h5 per combination (reused when they exist and match) and a
    table ablation.csv/.md (+ bar plot ablation.png when there are metrics).  With
    --eval-on the table holds realism distances to those images; with --train also
    peak F1 and AP of a YOLO trained per combination (runs/<name>/), scored on --eval-on
    or on a held-out synthetic set.

    \b
    Examples:
      simgen ablate --grid simgen/configs/ablation.yaml -o runs/ablation
      simgen ablate --grid ablation.yaml -o runs/ablation --train --train-preset small
      simgen ablate --grid ablation.yaml -o runs/ablation --eval-on ../shared/realdata/dev/creme_316L --train
      simgen ablate --grid table1 --list
      simgen ablate --grid table1 -o runs/table1 --rows 1,2 --train --eval-on films.h5
    """

    if list_rows:
        for r in grid_rows(load_grid(grid_path)):
            pub = ", ".join(f"{k[len('published_'):]} {v:g}" for k, v in r.items() if k.startswith("published_"))
            click.echo(f"{r['row']:>3}  {r['name']}  [{r['spec']}]" + (f"  published: {pub}" if pub else ""))
        return
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output'.")
    names = [s.strip() for s in only.split(",") if s.strip()] if only else None
    try:
        row_numbers = [int(r) for r in rows.split(",") if r.strip()] if rows else None
    except ValueError:
        raise click.BadParameter(f"row numbers must be integers, got {rows!r}", param_hint="--rows") from None
    train_fn = eval_fn = None
    if train and not hooks:
        config = PRESETS[train_preset] if epochs is None else PRESETS[train_preset].replace(epochs=epochs)
        train_fn, eval_fn = partial(train_for_ablation, config=config, progress=progress), eval_for_ablation
    result = run_ablation(grid_path, output, train=train, eval_on=eval_on, train_fn=train_fn, eval_fn=eval_fn,
                          hooks_module=hooks, only=names, rows=row_numbers, n=n, overwrite=overwrite, progress=progress,
                          log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {len(result.rows)} combinations; table {result.table}")


def register(groups):
    groups["main"].add_command(augment_group)
    groups["main"].add_command(ablate_command)
