"""``simgen analyze``: counts, sizes, densities, tracks and diffusivity of an in-situ video."""

from __future__ import annotations

import click

from simgen.commands._options import (
    device_option,
    overwrite_option,
    progress_option,
    runtime_option,
    tracking_options,
)
from simgen.commands.track import tracking_from_options
from simgen.errors import ParameterError
from simgen.experiments.analyze import analyze


def _bins(text: str):
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ParameterError(f"--size-bins must be a number of bins or comma-separated edges in nm, got {text!r}") from None
    if len(values) == 1:
        if values[0] != int(values[0]) or values[0] < 1:
            raise ParameterError(f"--size-bins: a number of bins must be a positive integer, got {text!r}")
        return int(values[0])
    return values


@click.command("analyze")
@click.argument("frames", type=click.Path())
@click.option("--weights", required=True, type=click.Path(dir_okay=False),
              help="Detector: YOLO best.pt, a LoG parameter .json or a fused fusion.json (sim2real --fuse-log).")
@click.option("--pixel-size", required=True, type=float, help="nm per pixel (e.g. 0.372 for 2.6884 px/nm).")
@click.option("--thickness", type=float, default=None, help="Foil thickness in nm (for the volumetric density).")
@click.option("--frame-rate", type=float, default=None,
              help="Frames per second of the given frames (time axis, dose, D per second).")
@click.option("--dose-rate", type=float, default=None, help="Dose per second, e.g. dpa/s (needs --frame-rate).")
@click.option("--dose-start", type=float, default=0.0, show_default=True, help="Dose of the first frame.")
@click.option("--visibility", type=float, default=7 / 4, show_default="7/4",
              help="Count correction for defects out of contrast.")
@click.option("--conf", type=click.FloatRange(0, 1), default=None,
              help="Confidence of a counted defect (default: the threshold stored in WEIGHTS).")
@tracking_options
@click.option("--polarity", type=click.Choice(["dark", "bright"]), default="dark", show_default=True,
              help="Defect contrast for the size measurement.")
@click.option("--opening", type=click.IntRange(min=0), default=3, show_default=True,
              help="Side of the square opening before the watershed (px).")
@click.option("--size-bins", default="4", show_default=True,
              help="Diffusivity size bins: a number of quantile bins or edges in nm (e.g. 2,4,8,16).")
@click.option("--lag", type=click.IntRange(min=1), default=1, show_default=True, help="MSD lag in frames.")
@click.option("--plots/--no-plots", default=True, show_default=True)
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@runtime_option
@click.option("--human/--no-human", default=None,
              help="Compare with the frames' labels (YOLO folder or dataset): counts, densities and size "
                   "quartiles of the human boxes measured the same way, differences in %  [default: when "
                   "the frames have labels].")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@overwrite_option
@progress_option
def analyze_command(frames, weights, pixel_size, thickness, frame_rate, dose_rate, dose_start, visibility, conf,
                    polarity, opening, size_bins, lag, plots, device, threads, runtime, human, output, overwrite,
                    progress, **tracking):
    """Count, size and track defects in every frame of a video; densities against dose; D by size.

    FRAMES is a folder of frames (sorted by name) or an HDF5 video. Sizes: Otsu +
    3x3 opening + distance-transform watershed + ellipse fit (major axis) inside each
    detection box. Density: count x 7/4 / (imaged area x thickness). Diffusivity:
    D = <|dr|^2> / 4 tau per track (trackpy.imsd) and per size bin (trackpy.emsd).
    Writes per_frame.csv/.json, defects.csv, tracks.csv, track_summary.csv,
    diffusivity.csv, summary.json and plots.

    \b
    Example (the FeCrAl video: 2.6884 px/nm, 75 nm foil, 8.3e-4 dpa/s, 0.0014 dpa per frame):
      simgen analyze dsva_fecral_video/frames --weights best.pt --pixel-size 0.37197 \\
        --thickness 75 --frame-rate 0.5923 --dose-rate 8.3e-4 --dose-start 1.4139 \\
        --tracker bytetrack -o report/
    """

    options = tracking_from_options(tracking)
    res = analyze(frames, weights, output, pixel_size=pixel_size, thickness=thickness, frame_rate=frame_rate,
                  dose_rate=dose_rate, dose_start=dose_start, conf=conf, options=options, polarity=polarity,
                  opening=opening, visibility=visibility, diffusivity_bins=_bins(size_bins), lag=lag, plots=plots,
                  device=device, threads=threads, runtime=runtime, human=human, overwrite=overwrite,
                  progress=progress)
    s = res.summary
    click.echo(f"{res.n_frames} frames, {res.n_defects} defects (conf {res.conf:.3g}), {res.n_tracks} tracks "
               f"({options.tracker})")
    click.echo(f"size (major axis): median {s['size_nm']['median']:.2f} nm, Q1 {s['size_nm']['q1']:.2f}, "
               f"Q3 {s['size_nm']['q3']:.2f}")
    key = next(k for k in s if k.endswith("_mean") and "density" in k)
    click.echo(f"{key.removesuffix('_mean').replace('_', ' ')}: mean {s[key]:.3g}")
    if "machine_vs_human" in s:
        a = s["machine_vs_human"]
        click.echo(f"machine vs human: density {a['density_diff_pct']:+.1f} %, median size "
                   f"{a['size_median_diff_pct']:+.1f} % ({a['count_machine']} vs {a['count_human']} defects)")
    click.echo(f"wrote {output}")


def register(groups):
    groups["main"].add_command(analyze_command)
