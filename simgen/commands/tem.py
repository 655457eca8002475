"""``simgen simulate tem | video | filament``: TEM defect images, in-situ videos, filament pairs."""

from __future__ import annotations

import math

import click

from simgen.atomic import check_output
from simgen.commands._options import (
    dataset_output_options,
    noise_profile_option,
    parse_range,
    renamed_option,
    seed_option,
    single_class_option,
)
from simgen.commands._sizes import FLOAT32_COPIES, guard_size
from simgen.commands.scale import write_samples
from simgen.datasets.video_io import write_filament, write_video
from simgen.errors import ParameterError
from simgen.simulate.filament import FilamentConfig, FilamentSampler, pair_list
from simgen.simulate.tem import TemConfig, TemSampler, config_from_match
from simgen.simulate.video import VideoConfig, VideoSampler


def _range(text, name):
    """``"0.3"`` or ``"0.2-0.5"`` → (lo, hi) floats; ``None`` passes through."""
    if text is None:
        return None
    return parse_range(text, name, cast=float)


def _size(text) -> int | tuple[int, int]:
    text = str(text).lower().strip()
    try:
        if "x" in text:
            w, h = (int(v) for v in text.split("x", 1))
            return (h, w)
        return int(text)
    except ValueError:
        raise ParameterError(f"--size must be N or WIDTHxHEIGHT in pixels, got {text!r}") from None


def _names(text):
    if text is None:
        return None
    return tuple(s.strip() for s in str(text).split(",") if s.strip())


def _floats(text, name):
    if text is None:
        return None
    try:
        return tuple(float(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise ParameterError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _print_match(est: dict) -> None:
    def f(key, fmt):
        v = est.get(key)
        return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)

    click.echo(
        f"matched: level {f('level', '.3f')}, noise dose {f('dose', '.0f')} e/px, blur {f('blur', '.2f')} px, "
        f"texture std {f('texture_amp', '.3f')} (scale {f('texture_scale', '.0f')} px), defect size "
        f"{f('defect_size_px', '.1f')} px, contrast {f('contrast', '.2f')}, ~{f('density_per_mpx', '.0f')} dark blobs/Mpx"
    )


@click.command("tem")
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of images.")
@click.option("--size", "size", default="512", show_default=True, help="Image side N or WIDTHxHEIGHT (px).")
@seed_option
@click.option("--preset", type=click.Choice(["creme", "dsva", "ti"]), default=None,
              help="Start from the parameters derived from a real data set (see docs/tem.md).")
@click.option("--match", "match", type=click.Path(dir_okay=False), default=None,
              help="Fit background level, texture, noise, contrast, size and density to this real image "
                   "(PNG/TIFF, or MRC/DM3/DM4, whose recorded pixel size is used unless --pixel-size is given).")
@click.option("--density", default=None, help="Defects per µm², number or per-image range LO-HI (default 150-1500).")
@click.option("--pixel-size", "pixel_nm", default=None,
              help="Pixel size in nm (as in evaluate/analyze), number or per-image range (default 0.4).")
@renamed_option("--pixel-nm", "--pixel-size", "pixel_nm")
@click.option("--size-nm", default=None, help="Median <111>-loop diameter in nm, number or range (default 3-8).")
@click.option("--size-sigma", type=float, default=None, help="Log-normal sigma of diameters within an image.")
@click.option("--classes", default=None, help="Defect kinds present: comma list of black_dot, loop111, loop100.")
@click.option("--class-names", default=None, help="Label names for --classes (comma list, same order).")
@click.option("--class-weights", default=None, help="Relative abundances of --classes (comma list).")
@single_class_option
@click.option("--arrangement", type=click.Choice(["uniform", "clustered", "lines", "mixed"]), default=None,
              help="Spatial arrangement of defects (default mixed).")
@click.option("--overlap", type=click.Choice(["avoid", "allow"]), default=None, help="Overlap rule (default avoid).")
@click.option("--edge", type=click.Choice(["partial", "inside"]), default=None,
              help="Allow defects cut by the border (partial, default) or keep them inside.")
@click.option("--box-margin", type=float, default=None, help="Pixels added around each tight box (default 0).")
@click.option("--contrast", default=None, help="Peak defect darkness (fraction of background), number or range.")
@click.option("--dose", default=None, help="Electrons per pixel (shot noise), number or range; 0 = noise-free.")
@click.option("--blur", default=None, help="Detector blur sigma in px, number or range.")
@click.option("--spec", default="none", show_default=True,
              help="Artifact codes applied to every image, e.g. 'FN+GB+RV'; RD sets the defect density.")
@click.option("--relabel", is_flag=True,
              help="Apply the label rule (a --preset's: visible defects only, look-alike blobs flattened) once "
                   "more to the image after --spec, so the labels follow what the artifacts left visible.")
@noise_profile_option
@dataset_output_options("Output HDF5 file (a directory with --shard-size).", sharded=True)
def tem_command(n, size, seed, preset, match, density, pixel_nm, size_nm, size_sigma, classes, class_names,
                class_weights, single_class, arrangement, overlap, edge, box_margin, contrast, dose, blur, spec,
                relabel, noise_profile, image_dtype, output, shard, overwrite, progress):
    """Simulate annotated bright-field TEM images of irradiation defects.

    Each image gets a defect population (black dots, <111> and <100> loops: log-normal
    sizes in nm, areal density, uniform/clustered/line arrangement, projected loop
    shapes) rendered on a specimen background (thickness gradient, bend contours,
    mottle, unlabelled dislocation lines) with shot noise and detector blur.  Labels:
    instance masks, boxes (tight + margin), class and size.

    \b
    Examples:
      simgen simulate tem --n 1000 --size 512 --seed 0 -o tem.h5
      simgen simulate tem --preset ti --single-class loop --n 2000 -o ti_like.h5
      simgen simulate tem --match real.png --single-class loop --n 500 -o matched.h5
      simgen simulate tem --density 300-900 --size-nm 4-10 --classes loop111,loop100 -o loops.h5
      simgen simulate tem --preset creme --spec 'FN+GB' --n 100000 --shard-size 1000 --workers 2 -o creme/
      simgen simulate tem --preset dsva --spec 'L-FN+RV+GN+L-JP' --relabel -o dsva_relabelled.h5
    """
    if relabel and spec == "none":
        raise ParameterError("--relabel re-applies the label rule after --spec; give a --spec")

    overrides = {
        "size": _size(size),
        "density": _range(density, "--density"),
        "pixel_nm": _range(pixel_nm, "--pixel-size"),
        "size_nm": _range(size_nm, "--size-nm"),
        "size_sigma": size_sigma,
        "classes": _names(classes),
        "class_names": _names(class_names),
        "class_weights": _floats(class_weights, "--class-weights"),
        "single_class": single_class,
        "arrangement": arrangement,
        "overlap": overlap,
        "edge": edge,
        "box_margin": box_margin,
        "contrast": _range(contrast, "--contrast"),
        "dose": _range(dose, "--dose"),
        "blur": _range(blur, "--blur"),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "classes" in overrides and "class_weights" not in overrides and preset:
        overrides["class_weights"] = None  # preset weights belong to the preset's classes
    config = TemConfig.from_preset(preset, **overrides) if preset else TemConfig(**overrides)
    config.validate()
    guard_size(config.shape, what="simulate tem", copies=FLOAT32_COPIES["tem"], spec=spec, shard=shard, n=n)
    estimates = None
    file_pixel_nm = None
    if match:
        from simgen.datasets.imageio import read_calibrated
        from simgen.simulate.match import estimate

        image, file_pixel_nm = read_calibrated(match)  # MRC / DM3 / DM4 record their pixel size
        estimates = estimate(image)
        if file_pixel_nm is not None and "pixel_nm" not in overrides:  # an explicit --pixel-size wins
            config = config.replace(pixel_nm=(file_pixel_nm, file_pixel_nm))
        explicit = {k: overrides[k] for k in ("density", "size_nm", "contrast", "dose", "blur") if k in overrides}
        config = config_from_match(estimates, config).replace(**explicit).validate()
    summary = _match_summary(estimates, match)
    if summary is not None:
        summary["pixel_nm"] = config.nominal_pixel_nm
        summary["pixel_nm_from"] = ("--pixel-size" if "pixel_nm" in overrides else
                                    "the image file" if file_pixel_nm is not None else "preset/default")
    sampler = TemSampler(config, seed=seed, match=summary)
    if spec != "none":  # artifacts (simgen.augment): RD adjusts the density per sample, the rest act on the image
        from simgen.datasets.augment_io import augmented_sampler

        sampler = augmented_sampler(sampler, spec, noise_profile=noise_profile, relabel=relabel)
    if estimates is not None:
        _print_match(estimates)
        click.echo(f"pixel size {summary['pixel_nm']:g} nm (from {summary['pixel_nm_from']})")
    path = write_samples(output, sampler, n, shard, image_dtype=image_dtype, overwrite=overwrite, progress=progress)
    if path is None:  # sharded, reported already
        return
    h, w = config.shape
    click.echo(f"wrote {n} TEM images ({w}x{h}, classes {', '.join(sampler.class_names)}) to {path}")


def _match_summary(estimates, path):
    if estimates is None:
        return None
    keep = ("level", "blur", "dose", "read_noise", "noise_std", "texture", "texture_amp", "texture_scale", "anisotropy",
            "defect_size_px", "contrast", "density_per_mpx", "spectrum_residual", "shape")
    return {"image": str(path), **{k: estimates[k] for k in keep if k in estimates}}


@click.command("video")
@click.option("--frames", type=click.IntRange(min=2), default=200, show_default=True, help="Number of frames.")
@click.option("--size", "size", default="512", show_default=True, help="Frame side N or WIDTHxHEIGHT (px).")
@seed_option
@click.option("--preset", type=click.Choice(["creme", "dsva", "ti"]), default=None,
              help="Appearance (background, noise, defect look) from a TEM preset.")
@click.option("--n-initial", type=click.IntRange(min=0), default=None, help="Defects present in frame 0 (default 30).")
@click.option("--nucleation", type=float, default=None, help="New defects per frame per Mpx (default 20).")
@click.option("--diffusion", "diffusion", type=float, default=None, help="Diffusion coefficient D in px²/frame (default 0.5).")
@click.option("--glide", type=float, default=None, help="Fraction of defects that glide in 1-D (default 0.2).")
@click.option("--glide-angle", type=float, default=None, help="Glide direction in degrees (default: random per video).")
@click.option("--growth", type=float, default=None, help="Mean radius growth in px/frame (default 0.02).")
@click.option("--dissolution", type=float, default=None, help="Probability per frame that a defect starts shrinking away (default 0.002).")
@click.option("--no-coalescence", is_flag=True, help="Let defects overlap instead of merging on contact.")
@click.option("--drift", type=float, default=None, help="Per-frame intensity drift (relative random-walk step, default 0.003).")
@click.option("--dose", default=None, help="Electrons per pixel per frame, number or range.")
@single_class_option
@dataset_output_options("Output HDF5 file (one sample per frame; tracks in /tracks).")
def video_command(frames, size, seed, preset, n_initial, nucleation, diffusion, glide, glide_angle, growth,
                  dissolution, no_coalescence, drift, dose, single_class, image_dtype, output, overwrite, progress):
    """Simulate an in-situ TEM video with ground-truth defect tracks.

    Defects nucleate, grow, random-walk with diffusion coefficient D (some glide in 1-D
    along one direction), coalesce on contact and dissolve; every frame is rendered
    like `simulate tem` with per-frame intensity drift and noise.  Tracks keep their
    ids for life; births and deaths are exact (table /video/lifetimes).

    \b
    Examples:
      simgen simulate video --frames 200 --size 512 --seed 0 -o video.h5
      simgen simulate video --preset dsva --diffusion 2 --glide 0.5 --frames 100 -o glide.h5
      simgen export mot video.h5 -o mot_dir/
      simgen simulate video --preset dsva --single-class loop --frames 100 --seed 100 -o train_v100.h5
    """

    tem_over = {"size": _size(size)}
    if dose is not None:
        tem_over["dose"] = _range(dose, "--dose")
    if single_class is not None:
        tem_over["single_class"] = single_class
    tem = TemConfig.from_preset(preset, **tem_over) if preset else TemConfig(**tem_over)
    changes = {
        "frames": frames, "n_initial": n_initial, "nucleation": nucleation, "diffusion": diffusion,
        "glide_fraction": glide, "glide_angle": None if glide_angle is None else math.radians(glide_angle),
        "growth": growth, "dissolution": dissolution, "drift": drift,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if no_coalescence:
        changes["coalescence"] = False
    config = VideoConfig(tem=tem, **changes).validate()
    guard_size(tem.shape, what="simulate video", copies=FLOAT32_COPIES["video"])
    check_output(output, overwrite)
    sampler = VideoSampler(config, seed=seed)
    path = write_video(output, sampler, overwrite=overwrite, image_dtype=image_dtype, progress=progress)
    h, w = tem.shape
    click.echo(f"wrote {frames} frames ({w}x{h}), {sampler.n_tracks} tracks to {path}")


@click.command("filament")
@click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Number of sequences (fields of view).")
@click.option("--frames", type=click.IntRange(min=2), default=6, show_default=True, help="Frames per sequence.")
@click.option("--size", "size", default="256", show_default=True, help="Frame side N or WIDTHxHEIGHT (px).")
@seed_option
@click.option("--gaps", default="1,2,4", show_default=True, help="Frame gaps k of the pairs (t, t+k), comma list.")
@click.option("--pairing", default="forward,backward", show_default=True,
              help="Which pairs: comma list of forward (t, t+k), backward (t+k, t), consecutive (t, t+1), "
                   "all (every i < j: n(n-1)/2 per sequence, as MultiTaskDeltaNet), self (t, t).")
@click.option("--filaments", default="2-5", show_default=True, help="Filaments per field, number or range.")
@click.option("--rate", type=float, default=None, help="Mean gasification speed in px/frame (default 3).")
@click.option("--mask-others", is_flag=True,
              help="One target filament per sequence (through the centre, on top); the others are masked out of "
                   "images and labels.")
@click.option("--diameter", type=float, default=None, help="Outer diameter (px) of the target filament (--mask-others).")
@dataset_output_options("Output HDF5 file (frames as samples, change maps under /pairs).")
def filament_command(n, frames, size, seed, gaps, pairing, filaments, rate, mask_others, diameter, image_dtype, output,
                     overwrite, progress):
    """Simulate frame pairs of hollow carbon filaments gasified by catalyst particles.

    Two targets per pair (t, t+k): A1 filament area and A2 hollow core, each with a
    per-pixel change map: 0 background (absent in both), 1 appearing, 2 disappearing,
    3 unchanged-present.  Frames are samples (instance masks = filaments, boxes =
    catalyst particles and filaments); pairs and change maps live under /pairs.

    \b
    Examples:
      simgen simulate filament --n 100 --size 256 --seed 0 -o filament.h5
      simgen simulate filament --n 20 --frames 10 --gaps 1,3,5 --pairing forward,consecutive -o f.h5
      simgen simulate filament --n 8 --frames 16 --pairing all --mask-others --diameter 18 -o f_all.h5
      simgen preview filament.h5 -o filament.png
    """

    changes = {
        "size": _size(size), "frames": frames,
        "gaps": tuple(int(g) for g in _floats(gaps, "--gaps")),
        "pairing": _names(pairing),
        "n_filaments": parse_range(filaments, "--filaments"),
    }
    if rate is not None:
        changes["rate"] = rate
    if mask_others:
        changes["mask_others"] = True
    if diameter is not None:
        changes["diameter"] = diameter
    config = FilamentConfig(**changes).validate()
    h, w = config.shape  # a whole sequence is held: frames (image, masks, areas) and the pairs' change maps
    guard_size(config.shape, what="simulate filament", copies=FLOAT32_COPIES["filament"], n_images=3 * config.frames,
               extra_bytes=3 * len(pair_list(config.frames, config.gaps, config.pairing)) * h * w)
    check_output(output, overwrite)
    sampler = FilamentSampler(config, seed=seed)
    path, n_pairs = write_filament(output, sampler, n, overwrite=overwrite, image_dtype=image_dtype, progress=progress)
    click.echo(f"wrote {n} filament sequences x {frames} frames, {n_pairs} pairs to {path}")


def register(groups):
    groups["simulate"].add_command(tem_command)
    groups["simulate"].add_command(video_command)
    groups["simulate"].add_command(filament_command)
