"""``simgen track-video``: detect, link (trackpy, ByteTrack or BoT-SORT) and score a video."""

from __future__ import annotations

import click

from simgen.commands._options import (
    TRACKING_FIELDS,
    box_scale_option,
    device_option,
    overwrite_option,
    progress_option,
    runtime_option,
    tracking_options,
)
from simgen.commands.tem import _size
from simgen.errors import ParameterError
from simgen.experiments.track_video import TrackingOptions, track_video
from simgen.experiments.track_video_cv import VideoCVConfig, track_video_cv


def tracking_from_options(kwargs: dict) -> TrackingOptions:
    """Pop the :func:`~simgen.commands._options.tracking_options` values out of ``kwargs``."""
    return TrackingOptions(**{k: kwargs.pop(k) for k in TRACKING_FIELDS}).validate()


def _detect_link_score_options(f):
    """Detector, linking and scoring options shared by ``track-video`` and ``track-video-cv``."""
    for option in reversed([
        click.option("--conf", type=click.FloatRange(0, 1), default=None,
                     help="Detections below this confidence are not linked (default: the threshold stored in "
                          "WEIGHTS)."),
        tracking_options,
        click.option("--class-agnostic/--per-class", default=None,
                     help="Ignore classes when scoring (default: only if the detector's classes differ from the "
                          "video's)."),
        device_option,
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads."),
        runtime_option,
        box_scale_option,
    ]):
        f = option(f)
    return f


@click.command("track-video")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("video", type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Folder: detections.h5, tracks.csv, tracks.h5, report/ (when VIDEO has true tracks).")
@click.option("--mot-iou", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="IoU threshold of the MOT metrics (0.15 = the detection cut-off, for small defects).")
@_detect_link_score_options
@overwrite_option
@progress_option
def track_video_command(weights, video, output, conf, class_agnostic, mot_iou, device, threads, runtime, box_scale,
                        overwrite, progress, **tracking):
    """Detect defects in every frame of a video with a trained detector, link them, score.

    WEIGHTS is a YOLO best.pt, a LoG parameter JSON or a fusion.json. VIDEO is an HDF5
    video (e.g. simulated, with a tracks table) or a folder of frames (sorted by name). Linking: trackpy (default), or Ultralytics' ByteTrack / BoT-SORT
    (--tracker; gap closing by --track-buffer, low-score detections continue tracks).
    On a video with ground-truth tracks the evaluation suite reports MOTA, IDF1, MT,
    ID switches and the lifetime distributions (chi², KS). Prints the detector's
    frames/s. (`simgen track` links detections you already have.)

    \b
    Examples:
      simgen track-video runs/yolo/best.pt video.h5 -o runs/track
      simgen track-video best.pt video.h5 --tracker bytetrack --track-buffer 10 --min-length 3 -o runs/bt
    """

    options = tracking_from_options(tracking)
    res = track_video(weights, video, output, conf=conf, options=options, class_agnostic=class_agnostic,
                      mot_iou=mot_iou, device=device, threads=threads, runtime=runtime, box_scale=box_scale,
                      overwrite=overwrite, progress=progress)
    click.echo(f"{res.n_frames} frames at {res.fps:.1f} frames/s; {res.n_tracks} tracks ({options.tracker})")
    t = res.tracking
    if t:
        d = res.detection
        click.echo(f"detection: P {d['precision']:.3f} R {d['recall']:.3f} F1 {d['f1']:.3f}"
                   + (" (class-agnostic)" if res.class_agnostic else ""))
        click.echo(f"tracking (MOT IoU {res.mot_iou:g}): MOTA {t['MOTA']:.3f} IDF1 {t['IDF1']:.3f} MT {t['MT']} "
                   f"IDSW {t['IDSW']}")
    click.echo(f"wrote {output}")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ParameterError(f"{what} must be comma-separated numbers, got {text!r}") from None


@click.command("track-video-cv")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Folder: videos/, fold_<i>/, report.json, report.md, lifetimes.png, mot.png.")
@click.option("--folds", type=int, default=3, show_default=True, help="Number of simulated videos (>= 2).")
@click.option("--presets", default="dsva", show_default=True,
              help="TEM presets of the videos, comma-separated, used in turn (creme, dsva, ti).")
@click.option("--frames", type=click.IntRange(min=2), default=100, show_default=True, help="Frames per video.")
@click.option("--size", "size", default="512", show_default=True, help="Frame side N or WIDTHxHEIGHT (px).")
@click.option("--n-initial", type=click.IntRange(min=0), default=None, help="Defects in frame 0 (default 30).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Video i is simulated with seed SEED + i.")
@click.option("--mot-iou", "mot_ious", default="0.15,0.5", show_default=True,
              help="MOT IoU thresholds scored, comma-separated.")
@_detect_link_score_options
@overwrite_option
@progress_option
def track_video_cv_command(weights, output, folds, presets, frames, size, n_initial, seed, mot_ious, conf,
                           class_agnostic, device, threads, runtime, box_scale, overwrite, progress, **tracking):
    """Cross-validate detection + tracking over several simulated videos: mean ± std.

    Simulates --folds in-situ TEM videos (seeds SEED, SEED+1, ...; --presets in turn),
    runs `track-video` on each and reports mean ± standard deviation over the videos of
    MOTA, IDF1, MT, ML, ID switches and fragmentations at every --mot-iou, and the
    lifetimes pooled over the videos (bars on Doane bins, chi² and KS p-values).
    WEIGHTS is a YOLO best.pt, a LoG parameter JSON (`simgen baseline log tune`) or a
    fusion.json (`simgen sim2real --fuse-log`).

    \b
    Examples:
      simgen track-video-cv runs/yolo/best.pt --folds 5 --tracker bytetrack -o runs/track_cv
      simgen track-video-cv log.json --folds 3 --presets dsva,creme --frames 50 --size 256 -o runs/cv_log
    """
    options = tracking_from_options(tracking)
    config = VideoCVConfig(folds=folds, presets=tuple(p.strip() for p in presets.split(",") if p.strip()),
                           frames=frames, size=_size(size), seed=seed, n_initial=n_initial,
                           mot_ious=_floats(mot_ious, "--mot-iou"))
    res = track_video_cv(weights, output, config, conf=conf, options=options, class_agnostic=class_agnostic,
                         device=device, threads=threads, runtime=runtime, box_scale=box_scale, overwrite=overwrite,
                         progress=progress)
    for iou, row in res.summary.items():
        click.echo(f"MOT IoU {iou}: " + "  ".join(f"{m} {row[m]['mean']:.3f}±{row[m]['std']:.3f}"
                                                   for m in ("MOTA", "IDF1", "MT", "ML", "IDSW", "Frag")))
    lt = res.lifetimes
    click.echo(f"lifetimes pooled ({lt['n_pred']} predicted / {lt['n_gt']} true tracks): chi² p {lt['chi2_p']:.3g}, "
               f"KS p {lt['ks_p']:.3g}")
    click.echo(f"wrote {res.output / 'report.md'}")


def register(groups):
    groups["main"].add_command(track_video_command)
    groups["main"].add_command(track_video_cv_command)
