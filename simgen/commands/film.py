"""``simgen simulate film``: smectic-C film datasets."""

from __future__ import annotations

import math

import click

from simgen.atomic import check_output
from simgen.augment.spec import parse_spec
from simgen.commands._options import (
    dtype_option,
    noise_profile_option,
    output_option,
    overwrite_option,
    parse_range,
    progress_option,
    seed_option,
)
from simgen.commands._sizes import FLOAT32_COPIES, guard_size
from simgen.commands.scale import run_sharded, shard_options
from simgen.datasets.generate import write_dataset
from simgen.simulate.film import FilmConfig, FilmSampler


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
@dtype_option
@output_option(help="Output HDF5 file (a directory with --shard-size).")
@shard_options
@overwrite_option
@progress_option
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
    if shard is not None:  # -o is a directory of shards + manifest.json (simgen.datasets.shards)
        run_sharded(output, sampler, n, shard, image_dtype=image_dtype, overwrite=overwrite, progress=progress)
        return
    check_output(output, overwrite)
    path = write_dataset(output, sampler, n, overwrite=overwrite, image_dtype=image_dtype, progress=progress)
    if {"LG", "LR"} & set(parse_spec(spec).codes):  # the spec selects the thermal model
        model = "thermal"
    click.echo(f"wrote {n} {model}-model film images ({size}x{size}) to {path}")


def register(groups):
    groups["simulate"].add_command(film_command)
