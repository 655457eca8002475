"""``simgen simulate film`` and ``simgen simulate film-holdout``: smectic-C film datasets.

The held-out renderer is its own command, not a ``--holdout`` flag of ``simulate film``: it
shares none of that command's physics, optics or artifact options (``--model``, ``--regime``,
``--spec``, ``--backend`` ...), so a flag would leave most of ``film``'s options meaningless
in one mode and add options meaningless in the other.  Both write the same ``film`` datasets.
"""

from __future__ import annotations

import math

import click

from simgen.atomic import check_output
from simgen.augment.spec import parse_spec
from simgen.commands._options import dataset_output_options, noise_profile_option, parse_range, seed_option
from simgen.commands._sizes import FLOAT32_COPIES, guard_size
from simgen.commands.scale import write_samples
from simgen.datasets.generate import write_dataset
from simgen.simulate.film import FilmConfig, FilmSampler
from simgen.simulate.film_holdout import HoldoutFilmConfig, HoldoutFilmSampler


@click.command("film")
@click.option("--model", type=click.Choice(["random", "thermal"]), default="random", show_default=True,
              help="random: superposed point defects; thermal: quenched XY dynamics.")
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of images.")
@click.option("--size", type=int, default=512, show_default=True,
              help="Image side in pixels (refused up front above 65536 or beyond the memory available).")
@seed_option
@click.option("--backend", default="numba", show_default=True,
              help="Compute backend: numba (default), numpy (reference) or jax (GPU when present).")
@click.option("--n-defects", default="2-12", show_default=True, help="Random model: defect count or inclusive range (RD).")
@click.option("--min-separation", type=float, default=12.0, show_default=True, help="Random model: minimum defect distance (px).")
@click.option("--margin", type=float, default=8.0, show_default=True, help="Random model: minimum distance from the border (px).")
@click.option("--neutral", is_flag=True, help="Random model: equal numbers of +1 and -1 defects.")
@click.option("--decross", type=float, default=0.0, show_default=True, help="Decross angle in degrees (DC).")
@click.option("--regime", type=click.Choice(["decrossed", "crossed", "analyzer"]), default="decrossed", show_default=True,
              help="Schlieren optics: pure decrossed (cos 2phi) or crossed limits, or the general analyzer model.")
@click.option("--anisotropy", type=float, default=0.2, show_default=True,
              help="Analyzer regime: film cross-polarised amplitude relative to the analyzer leak.")
@click.option("--box-size", type=float, default=16.0, show_default=True, help="Side of the box around each defect (px).")
@click.option("--single-class/--two-class", default=True, show_default=True,
              help="Boxes of one class 'defect' (the charge stays in the points table), or classes plus/minus by "
                   "sign (not identifiable from one frame: an isolated +1 and -1 render alike, see docs/film.md).")
@click.option("--steps", type=click.IntRange(min=0), default=200, show_default=True,
              help="Thermal model: steps after the quench (LR multiplies it by a log-uniform factor).")
@click.option("--quench-length", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Thermal model: correlation length of the quench's start in lattice sites (0: fully random; "
                   "RD draws it per image).")
@click.option("--dt", type=float, default=0.1, show_default=True, help="Thermal model: time step.")
@click.option("--kappa", type=float, default=1.0, show_default=True, help="Thermal model: coupling.")
@click.option("--temperature", type=float, default=0.05, show_default=True, help="Thermal model: temperature T.")
@click.option("--upsample", type=click.IntRange(min=1), default=1, show_default=True, help="Thermal model: pixels per lattice site.")
@click.option("--store-phase", is_flag=True, help="Also store the phase field (allows DC re-rendering later).")
@click.option("--spec", default="none", show_default=True,
              help="Artifact codes, e.g. 'LG+L-FN+L-GB+RD+LR': LG (thermal model), RD (random defect number), "
                   "LR (long thermal runs) and DC act at simulation time, the rest on the image.")
@noise_profile_option
@dataset_output_options("Output HDF5 file (a directory with --shard-size).", sharded=True)
def film_command(model, n, size, seed, backend, n_defects, min_separation, margin, neutral, decross, regime, anisotropy, box_size,
                 single_class, steps, quench_length, dt, kappa, temperature, upsample, store_phase, spec, noise_profile,
                 image_dtype, output, shard, overwrite, progress):
    """Simulate annotated Schlieren images of smectic-C films.

    \b
    Examples:
      simgen simulate film --n 1000 --size 512 --seed 0 -o film.h5
      simgen simulate film --model thermal --backend numba --steps 2000 --n 50 --size 256 -o thermal.h5
      simgen simulate film --model thermal --upsample 2 --steps 500 --spec "DC+RD+LR+FN+GB" --n 100 -o lg.h5
      simgen simulate film --n 100000 --shard-size 1000 --workers 2 -o film_shards/
    """

    config = FilmConfig(
        model=model, size=size, n_defects=parse_range(n_defects, "--n-defects"), min_separation=min_separation,
        margin=margin, neutral=neutral, decross=math.radians(decross), regime=regime, anisotropy=anisotropy, box_size=box_size,
        single_class=single_class, steps=steps, dt=dt, kappa=kappa, temperature=temperature, backend=backend,
        upsample=upsample, quench_length=quench_length,
    ).validate()
    guard_size(size, what=f"simulate film ({model} model)", copies=FLOAT32_COPIES[f"film-{model}"], spec=spec,
               shard=shard, n=n)
    sampler = FilmSampler(config, seed=seed, store_phase=store_phase)
    if spec != "none":  # artifacts (simgen.augment): simulation-time codes adjust the config per sample
        from simgen.datasets.augment_io import augmented_sampler

        sampler = augmented_sampler(sampler, spec, noise_profile=noise_profile)
    path = write_samples(output, sampler, n, shard, image_dtype=image_dtype, overwrite=overwrite, progress=progress)
    if path is None:  # sharded, reported already
        return
    if {"LG", "LR"} & set(parse_spec(spec).codes):  # the spec selects the thermal model
        model = "thermal"
    click.echo(f"wrote {n} {model}-model film images ({size}x{size}) to {path}")


@click.command("film-holdout")
@click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Number of images.")
@click.option("--size", type=int, default=256, show_default=True, help="Image side in pixels.")
@seed_option
@click.option("--n-defects", default="2-12", show_default=True, help="Defects placed before relaxation (count or range).")
@click.option("--min-separation", type=float, default=16.0, show_default=True, help="Minimum defect distance at placement (px).")
@click.option("--margin", type=float, default=8.0, show_default=True, help="Minimum distance from the border at placement (px).")
@click.option("--splay-bend", default="0.3-3", show_default=True,
              help="Range of the splay/bend Frank constant ratio K1/K3, drawn log-uniformly per image (1 = one constant).")
@click.option("--relax-steps", type=click.IntRange(min=0), default=300, show_default=True,
              help="Gradient-descent steps of the anisotropic relaxation.")
@click.option("--retardance", default="0.3-1.5", show_default=True, help="Film retardance range (radians, thinnest terrace).")
@click.option("--decross", default="1-6", show_default=True, help="Analyzer decrossing range |delta| in degrees (random sign).")
@click.option("--terraces", default="0-3", show_default=True, help="Number of thickness steps (terraces) per image.")
@click.option("--dust", default="0-12", show_default=True, help="Number of dust specks per image.")
@click.option("--jpeg-quality", default="35-90", show_default=True, help="JPEG quality range; 0 = no compression.")
@click.option("--box-size", type=float, default=16.0, show_default=True, help="Side of the box around each defect (px).")
@click.option("--single-class/--two-class", default=True, show_default=True,
              help="Boxes of one class 'defect' (charge kept in the points table), or plus/minus by sign.")
@click.option("--store-phase", is_flag=True, help="Also store the relaxed phase field (radians).")
@dataset_output_options("Output HDF5 file.")
def film_holdout_command(n, size, seed, n_defects, min_separation, margin, splay_bend, relax_steps, retardance, decross,
                         terraces, dust, jpeg_quality, box_size, single_class, store_phase, image_dtype, output, overwrite,
                         progress):
    """Simulate a held-out film test set no training path uses (other physics, optics and seeds).

    Defects relaxed under splay != bend elasticity, imaged in reflected light through a
    slightly decrossed analyzer (Jones matrices) with terraces, dust, vignetting, camera noise
    and JPEG; sample i draws from its own seed stream, never a training one (docs/film.md).

    \b
    Examples:
      simgen simulate film-holdout --n 200 --size 256 --seed 0 -o holdout.h5
      simgen simulate film-holdout --n 50 --splay-bend 0.3 --jpeg-quality 0 --store-phase -o splay.h5
    """

    config = HoldoutFilmConfig(
        size=size, n_defects=parse_range(n_defects, "--n-defects"), min_separation=min_separation, margin=margin,
        splay_bend=parse_range(splay_bend, "--splay-bend", float), relax_steps=relax_steps,
        retardance=parse_range(retardance, "--retardance", float), decross=parse_range(decross, "--decross", float),
        terraces=parse_range(terraces, "--terraces"), dust=parse_range(dust, "--dust"),
        jpeg_quality=parse_range(jpeg_quality, "--jpeg-quality"), box_size=box_size, single_class=single_class,
    ).validate()
    guard_size(size, what="simulate film-holdout", copies=FLOAT32_COPIES["film-holdout"], n=n)
    check_output(output, overwrite)
    sampler = HoldoutFilmSampler(config, seed=seed, store_phase=store_phase)
    path = write_dataset(output, sampler, n, overwrite=overwrite, image_dtype=image_dtype, progress=progress)
    click.echo(f"wrote {n} held-out film images ({size}x{size}) to {path}")


def register(groups):
    groups["simulate"].add_command(film_command)
    groups["simulate"].add_command(film_holdout_command)
