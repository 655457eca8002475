"""Export command ``simgen export yolo`` (``export coco`` and ``export mot`` live in evaluate.py)."""

from __future__ import annotations

import click

from simgen.commands._options import output_dir_option, overwrite_option, progress_option, renamed_option, seed_option
from simgen.datasets.formats.yolo import export_yolo, read_export_summary
from simgen.datasets.normalize import NORMALIZE


def _report(summary: dict) -> list[str]:
    """Lines telling what an export wrote and dropped, from its ``source.json``."""
    boxes, dropped = summary["boxes"], summary["boxes"]["dropped"]
    # source.json keeps the reason's stored name; the option is --drop-below (--min-box: deprecated)
    text = {"smaller than min-box": f"smaller than --drop-below ({summary['min_box']:g} px)"}
    lines = [f"images: {summary['n']} ({summary['train']} train, {summary['val']} val)",
             f"boxes: {boxes['written']} written, {sum(dropped.values())} dropped"
             + "".join(f"; {c} {text.get(reason, reason)}" for reason, c in dropped.items())]
    if summary["normalize"] == "none":
        lines.append("pixels: stored levels clipped to [0, 1], 8-bit PNG (--normalize none)")
    else:
        lines.append(f"pixels: {summary['normalize']} contrast normalisation per image (as simgen train yolo), "
                     "8-bit PNG; 12/16-bit data keeps its contrast")
    if not summary["val"]:
        lines.append("no validation split: data.yaml says 'val: null' (Ultralytics needs a val set to train; "
                     "re-export with --val-fraction > 0)")
    if summary["renamed"]:
        lines.append(f"{len(summary['renamed'])} sample name(s) made unique or safe (listed in source.json)")
    return lines


@click.command("yolo")
@click.argument("path", type=click.Path())
@output_dir_option("Output folder (the old positional OUT_DIR still works, deprecated).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Fraction of images held out as the validation split (seeded; 0 = no val split).")
@click.option("--drop-below", "min_box", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="PX",
              help="Drop boxes narrower or lower than this (px, after clipping to the image). The old name "
                   "--min-box still works for one release (train yolo's --min-box grows boxes instead).")
@renamed_option("--min-box", "--drop-below", "min_box", type=click.FloatRange(min=0))
@click.option("--normalize", type=click.Choice(NORMALIZE), default="percentile", show_default=True,
              help="Per-image contrast normalisation before 8-bit PNG, as simgen train yolo (none = stored levels).")
@seed_option
@overwrite_option
@progress_option
def export_yolo_command(path, out_dir, val_fraction, min_box, normalize, seed, overwrite, progress):
    """Export a dataset to a YOLO folder (images/, labels/, data.yaml) Ultralytics trains from.

    PATH is an HDF5 dataset, a sharded set (its directory, manifest.json or virtual.h5) or a
    YOLO folder with a boxes table. data.yaml has no 'path:' key, so the folder can be moved
    (Ultralytics resolves train/val next to data.yaml). Sample names are made safe and unique
    (a/x.png and b/x.png get a short hash each). Boxes narrower or lower than --drop-below
    pixels are dropped. Prints image and box counts, and why boxes were dropped.

    \b
    Example:
      simgen export yolo film.h5 -o film_yolo/ --val-fraction 0.2
      simgen export yolo film_shards/ -o film_yolo/
      simgen export yolo tem.h5 -o tem_yolo/ --drop-below 3
    """

    data_yaml = export_yolo(path, out_dir, val_fraction=val_fraction, min_box=min_box, normalize=normalize,
                            seed=seed, overwrite=overwrite, progress=progress)
    for line in _report(read_export_summary(data_yaml.parent)):
        click.echo(line)
    click.echo(f"wrote {data_yaml}")


def register(groups):
    groups["export"].add_command(export_yolo_command)
