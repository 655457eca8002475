"""``simgen simulate film-video`` (a coarsening film with true tracks) and ``simgen film-coarsening`` (its report)."""

from __future__ import annotations

import math

import click

from simgen.atomic import check_output
from simgen.commands._options import (
    dataset_output_options,
    device_option,
    overwrite_option,
    progress_option,
    runtime_option,
    seed_option,
)
from simgen.commands._sizes import FLOAT32_COPIES, guard_size
from simgen.datasets.video_io import write_video
from simgen.experiments.film_coarsening import film_coarsening
from simgen.simulate.film import FilmConfig
from simgen.simulate.film_video import FilmVideoConfig, FilmVideoSampler


@click.command("film-video")
@click.option("--frames", type=click.IntRange(min=2), default=64, show_default=True, help="Number of frames.")
@click.option("--t-min", type=click.IntRange(min=1), default=20, show_default=True,
              help="Update steps after the quench of the first frame.")
@click.option("--t-max", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Update steps after the quench of the last frame (frames are log-spaced in between).")
@click.option("--size", type=int, default=256, show_default=True, help="Frame side in pixels.")
@seed_option
@click.option("--backend", default="numba", show_default=True, help="XY dynamics: numba (default), numpy or jax.")
@click.option("--dt", type=float, default=0.1, show_default=True, help="Time step.")
@click.option("--kappa", type=float, default=1.0, show_default=True, help="Coupling.")
@click.option("--temperature", type=float, default=0.05, show_default=True, help="Temperature T.")
@click.option("--upsample", type=click.IntRange(min=1), default=1, show_default=True, help="Pixels per lattice site.")
@click.option("--quench-length", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Correlation length of the quench's start in lattice sites (0: fully random).")
@click.option("--link-every", type=click.IntRange(min=1), default=2, show_default=True,
              help="Ground truth: steps between the snapshots the defects are linked on.")
@click.option("--search-range", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Ground truth: largest move of a defect between linking snapshots (px).")
@click.option("--decross", type=float, default=0.0, show_default=True, help="Decross angle in degrees.")
@click.option("--regime", type=click.Choice(["decrossed", "crossed", "analyzer"]), default="decrossed",
              show_default=True, help="Schlieren optics (as `simulate film`).")
@click.option("--anisotropy", type=float, default=0.2, show_default=True, help="Analyzer regime: film amplitude.")
@click.option("--box-size", type=float, default=16.0, show_default=True, help="Side of the box around each defect (px).")
@dataset_output_options("Output HDF5 video (one sample per frame; tracks in /tracks, times in /video/time).")
def film_video_command(frames, t_min, t_max, size, seed, backend, dt, kappa, temperature, upsample, quench_length,
                       link_every, search_range, decross, regime, anisotropy, box_size, image_dtype, output, overwrite,
                       progress):
    """Simulate a coarsening smectic-C film (one thermal XY quench) with true defect tracks.

    Frames at log-spaced times between --t-min and --t-max steps, rendered as Schlieren
    images like `simulate film --model thermal`; defects from winding numbers. Tracks:
    defects linked with trackpy every --link-every steps, each charge sign separately
    (annihilating pairs end their tracks). Same HDF5 video format as `simulate video`,
    so `track-video` and `film-coarsening` read it.

    \b
    Examples:
      simgen simulate film-video --size 256 --frames 64 --t-max 2000 --seed 0 -o film_video.h5
      simgen film-coarsening film_video.h5 --weights log.json -o coarsening/
    """
    film = FilmConfig(model="thermal", size=size, dt=dt, kappa=kappa, temperature=temperature, backend=backend,
                      upsample=upsample, quench_length=quench_length, decross=math.radians(decross), regime=regime,
                      anisotropy=anisotropy, box_size=box_size)
    config = FilmVideoConfig(film=film, frames=frames, t_min=t_min, t_max=t_max, link_every=link_every,
                             search_range=search_range).validate()
    guard_size(size, what="simulate film-video", copies=FLOAT32_COPIES["film-thermal"], n_images=frames)
    check_output(output, overwrite)
    sampler = FilmVideoSampler(config, seed=seed)
    path = write_video(output, sampler, overwrite=overwrite, image_dtype=image_dtype, progress=progress)
    counts = [int((sampler.tracks["sample"] == k).sum()) for k in (0, frames - 1)]
    click.echo(f"wrote {frames} frames ({size}x{size}, steps {t_min}..{t_max}), defects {counts[0]} -> {counts[1]}, "
               f"{sampler.n_tracks} tracks to {path}")


@click.command("film-coarsening")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False),
              help="Detector: YOLO best.pt, LoG parameters .json (simgen baseline log tune) or a fusion.json.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Report folder: per_frame.csv, count.png, spacing.png, report.json, report.md, tracks.csv.")
@click.option("--conf", type=click.FloatRange(0, 1), default=None,
              help="Detections below this confidence are dropped (default: the threshold stored in WEIGHTS).")
@click.option("--search-range", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="trackpy: largest step of a detected defect between frames (px).")
@click.option("--memory", type=click.IntRange(min=0), default=0, show_default=True,
              help="trackpy: frames a defect may vanish and keep its id.")
@click.option("--match-radius", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="Largest distance (px) of a detected track point matched to a true one.")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@runtime_option
@overwrite_option
@progress_option
def film_coarsening_command(video, weights, output, conf, search_range, memory, match_radius, device, threads, runtime,
                            overwrite, progress):
    """Defect count, spacing and track positions vs time: detected against the true tracks.

    Runs the detector on every frame of VIDEO (from `simulate film-video`), links the
    detections with trackpy, and reports per frame the count and mean nearest-neighbour
    distance against the truth (relative errors), the coarsening power laws (log-log
    fits), and the RMS position error of matched track points.

    \b
    Examples:
      simgen film-coarsening film_video.h5 --weights runs/yolo/best.pt -o coarsening/
      simgen film-coarsening film_video.h5 --weights log.json --search-range 4 -o coarsening_log/
    """
    res = film_coarsening(weights, video, output, conf=conf, search_range=search_range, memory=memory,
                          match_radius=match_radius, device=device, threads=threads, runtime=runtime,
                          overwrite=overwrite, progress=progress)
    a = res.fits["count"]
    exps = " / ".join("n/a" if a[k] is None else f"{-a[k]['exponent']:.2f}" for k in ("true", "detected"))
    click.echo(f"{res.n_frames} frames: count exponent (true / detected) {exps}; mean |count error| "
               f"{res.count_rel_error:.3f}, |spacing error| {res.nn_rel_error:.3f}; RMS position "
               f"{res.rmse_px:.2f} px over {res.n_matched} matches")
    click.echo(f"wrote {output}")


def register(groups):
    groups["simulate"].add_command(film_video_command)
    groups["main"].add_command(film_coarsening_command)
