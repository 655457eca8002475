"""Evaluation commands: ``simgen evaluate``, ``simgen track``, ``simgen export coco|mot``."""

from __future__ import annotations

import click

from simgen.commands._options import output_dir_option, overwrite_option, progress_option
from simgen.datasets.formats.coco import export_coco
from simgen.datasets.formats.mot import export_mot
from simgen.evaluate.report import evaluate, link_tracks_file


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


@click.command("evaluate")
@click.option("--pred", "pred", required=True, type=click.Path(),
              help="Predictions: .h5, YOLO folder (6th column = confidence), COCO .json, MOT .txt/folder or .csv.")
@click.option("--gt", "gt", required=True, type=click.Path(), help="Ground truth, same formats.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--iou", default="0.15", show_default=True,
              help="IoU cut-off for detection matching; a range LO:HI:STEP (e.g. 0.05:0.5:0.05) or a list 0.1,0.3 "
                   "adds F1 against IoU (f1_vs_iou.csv/.png) and computes the rest at the first value.")
@click.option("--match", type=click.Choice(["auto", "iou", "distance"]), default="auto", show_default=True,
              help="Match boxes by IoU or centres by distance (auto: distance when either side has points only).")
@click.option("--max-dist", "max_distance", type=float, default=5.0, show_default=True,
              help="Centre-distance cut-off in pixels (distance matching, point tracks).")
@click.option("--conf", type=float, default=None,
              help="Confidence threshold for counts, P/R/F1 and linking (default: the threshold stored with the "
                   "predictions by the model that made them, else 0.25; the report says which).")
@click.option("--ap", "ap_method", type=click.Choice(["coco", "continuous", "voc11"]), default="coco",
              show_default=True, help="AP interpolation (coco = 101-point, as pycocotools).")
@click.option("--class-agnostic", is_flag=True, help="Ignore classes when matching.")
@click.option("--table", default=None, help="HDF5 table to read (default: boxes, else points).")
@click.option("--tracking/--no-tracking", default=True, show_default=True,
              help="MOT metrics when the ground truth has tracks.")
@click.option("--search-range", type=float, default=5.0, show_default=True,
              help="trackpy search range (px) for predictions without track ids.")
@click.option("--memory", type=int, default=2, show_default=True, help="trackpy memory (frames).")
@click.option("--mot-iou", type=float, default=0.5, show_default=True, help="Similarity threshold of MOT metrics.")
@click.option("--sizes", is_flag=True, help="Measure defect sizes (Otsu + watershed + ellipse) on GT images.")
@click.option("--polarity", type=click.Choice(["dark", "bright"]), default="dark", show_default=True,
              help="Defect contrast for --sizes.")
@click.option("--visibility", type=float, default=7 / 4, show_default=True,
              help="Areal-density visibility correction factor.")
@click.option("--pixel-size", type=float, default=None, help="Pixel length (e.g. nm) for physical units.")
@click.option("--frame-interval", type=float, default=1.0, show_default=True, help="Time between frames.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--overlays", type=click.Path(file_okay=False), default=None,
              help="Folder for one PNG per image: true positives green, false positives red, misses yellow "
                   "(the matching of the counts: --iou, --conf).")
@overwrite_option
@progress_option
def evaluate_command(pred, gt, output, iou, match, max_distance, conf, ap_method, class_agnostic, table, tracking,
                     search_range, memory, mot_iou, sizes, polarity, visibility, pixel_size, frame_interval,
                     no_plots, overlays, overwrite, progress):
    """Score predictions against ground truth; write metrics JSON/CSV and PNG plots.

    Detection (AP per class, mAP, P/R/F1 at --conf, PR curve, peak F1), per-frame
    counts and nearest-neighbour distances, and, when the ground truth has tracks,
    MOT metrics (MOTA, MOTP, IDF1, MT, ML, IDSW, Frag; TrackEval definitions),
    lifetimes and diffusivity. Frames are paired by file name (YOLO, COCO, named
    HDF5) or by index.

    \b
    Examples:
      simgen evaluate --pred runs/predict --gt realdata/dev/ti_anneal --iou 0.15 -o report/
      simgen evaluate --pred tracks.txt --gt video.h5 -o report/ --search-range 5
      simgen evaluate --pred runs/predict --gt realdata/dev/dsva_fecral --iou 0.05:0.5:0.05 -o report/
      simgen evaluate --pred runs/predict --gt realdata/dev/ti_anneal -o report/ --overlays overlays/
    """

    rep = evaluate(pred, gt, output, iou=iou, match=match, max_distance=max_distance, conf=conf,
                   ap_method=ap_method, class_agnostic=class_agnostic, table=table, tracking=tracking,
                   search_range=search_range, memory=memory, mot_iou=mot_iou, sizes=sizes, polarity=polarity,
                   visibility=visibility, pixel_size=pixel_size, frame_interval=frame_interval,
                   plots=not no_plots, overlays=overlays, overwrite=overwrite, progress=progress)
    d = rep["detection"]
    click.echo(f"detection ({d['metric']} {d['threshold']:g}): mAP {_fmt(d['mAP'])}  "
               f"P {_fmt(d['precision'])} R {_fmt(d['recall'])} F1 {_fmt(d['f1'])} @ conf {d['conf']:g}  "
               f"peak F1 {_fmt(d['peak_f1'])} @ {_fmt(d['peak_f1_threshold'], '.3g')}  "
               f"(TP {d['tp']} FP {d['fp']} FN {d['fn']})")
    click.echo(f"confidence threshold {d['conf']:g}: {rep['parameters']['conf_source']}")
    if "f1_vs_iou" in rep:
        click.echo(f"F1 against the IoU cut-off (P/R/F1 at conf {d['conf']:g}):")
        click.echo("    IoU      P      R     F1     AP     TP    FP    FN")
        for r in rep["f1_vs_iou"]:
            click.echo(f"  {r['iou']:5.3g}  {_fmt(r['precision'])}  {_fmt(r['recall'])}  {_fmt(r['f1'])}  "
                       f"{_fmt(r['mAP'])}  {r['tp']:5d} {r['fp']:5d} {r['fn']:5d}")
    if "overlays" in rep:
        o = rep["overlays"]
        click.echo(f"overlays: {o['images']} images in {o['folder']} (green TP, red FP, yellow FN)")
    if "tracking" in rep:
        t = rep["tracking"]
        click.echo(f"tracking: MOTA {_fmt(t['MOTA'])} MOTP {_fmt(t['MOTP'])} IDF1 {_fmt(t['IDF1'])} "
                   f"MT {t['MT']} ML {t['ML']} IDSW {t['IDSW']} Frag {t['Frag']} RMSE {_fmt(t['RMSE_px'], '.2f')} px")
    if "segmentation" in rep:
        s = rep["segmentation"]
        click.echo(f"segmentation: Dice {_fmt(s['dice'])} IoU {_fmt(s['iou'])} ({s['n_images']} images)")
    click.echo(f"wrote {output}")


@click.command("track")
@click.argument("detections", type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Tracks: .csv, .h5 (tracks table) or .txt (MOTChallenge).")
@click.option("--search-range", type=float, default=5.0, show_default=True, help="Largest step between frames (px).")
@click.option("--memory", type=int, default=2, show_default=True, help="Frames a defect may vanish and keep its id.")
@click.option("--conf", type=float, default=None, help="Drop detections below this confidence first.")
@click.option("--table", default=None, help="HDF5 table to read (default: boxes, else points).")
@click.option("--link-strategy", type=click.Choice(["nonrecursive", "numba", "recursive", "hybrid", "auto", "drop"]),
              default="nonrecursive", show_default=True, help="trackpy subnet solver.")
@click.option("--like", type=click.Path(), default=None,
              help="Ground truth giving image sizes for a label-only YOLO folder.")
@overwrite_option
@progress_option
def track_command(detections, output, search_range, memory, conf, table, link_strategy, like, overwrite, progress):
    """Link per-frame detections into tracks (trackpy, adaptive search off).

    \b
    Example:
      simgen track detections.h5 --search-range 5 --memory 2 -o tracks.csv
    """

    tracks = link_tracks_file(detections, output, search_range=search_range, memory=memory, conf=conf, table=table,
                              link_strategy=link_strategy, like=like, overwrite=overwrite, progress=progress)
    n = int(tracks["track_id"].nunique()) if len(tracks) else 0
    click.echo(f"linked {len(tracks)} detections into {n} tracks; wrote {output}")


@click.command("coco")
@click.argument("path", type=click.Path())
@output_dir_option("Output folder (the old positional OUT_DIR still works, deprecated).")
@click.option("--table", default="boxes", show_default=True, help="Table holding the boxes.")
@click.option("--images/--no-images", default=True, show_default=True, help="Also write images/*.png.")
@overwrite_option
@progress_option
def export_coco_command(path, out_dir, table, images, overwrite, progress):
    """Export a dataset to COCO (annotations.json + images/; masks as RLE).

    \b
    Example:
      simgen export coco tem.h5 -o tem_coco/
    """

    out = export_coco(path, out_dir, table=table, images=images, overwrite=overwrite, progress=progress)
    click.echo(f"wrote {out}")


@click.command("mot")
@click.argument("path", type=click.Path())
@output_dir_option("Output folder (the old positional OUT_DIR still works, deprecated).")
@click.option("--table", default="tracks", show_default=True, help="Table holding the tracks.")
@click.option("--name", default=None, help="Sequence name (default: folder name).")
@click.option("--frame-rate", type=float, default=25.0, show_default=True, help="Written to seqinfo.ini.")
@click.option("--box-size", type=float, default=None, help="Box side (px) for point tracks without a size column.")
@click.option("--images/--no-images", default=True, show_default=True, help="Also write img1/*.jpg.")
@click.option("--pixel-origin", type=click.Choice(["0", "1"]), default="0", show_default=True,
              help="Pixel origin of bb_left/bb_top (1 = MATLAB devkit convention).")
@click.option("--keep-classes", is_flag=True,
              help="Write each object's class + 1 (default: all class 1, the class TrackEval scores by default).")
@overwrite_option
@progress_option
def export_mot_command(path, out_dir, table, name, frame_rate, box_size, images, pixel_origin, keep_classes,
                       overwrite, progress):
    """Export a video dataset as a MOTChallenge sequence (seqinfo.ini, gt/gt.txt, img1/).

    \b
    Example:
      simgen export mot video.h5 -o MOT-sim-01/
    """

    out = export_mot(path, out_dir, table=table, name=name, frame_rate=frame_rate, box_size=box_size,
                     images=images, pixel_origin=int(pixel_origin), keep_classes=keep_classes, overwrite=overwrite,
                     progress=progress)
    click.echo(f"wrote {out}")


def register(groups):
    groups["main"].add_command(evaluate_command)
    groups["main"].add_command(track_command)
    groups["export"].add_command(export_coco_command)
    groups["export"].add_command(export_mot_command)
