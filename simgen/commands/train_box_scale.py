"""``simgen train box-scale``: fit the box tightness of a YOLO checkpoint on synthetic validation data."""

from __future__ import annotations

import click

from simgen.commands._options import device_option, progress_option
from simgen.train.yolo.box_scale_calibrate import calibrate_box_scale


@click.command("box-scale")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--val", "val", required=True, type=click.Path(),
              help="Synthetic validation data with boxes (simgen HDF5 / shards from a simulator; real data refused).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The calibrated checkpoint (a copy of WEIGHTS with the factors in its metadata).")
@click.option("--match-iou", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True,
              help="IoU cut-off pairing predictions with true boxes (low: oversized boxes must still pair).")
@click.option("--truth", type=click.Choice(["auto", "masks", "boxes"]), default="auto", show_default=True,
              help="True extent: tight boxes of the instance masks (auto: when present) or the box table "
                   "(may include a labelling margin).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use the first N validation images.")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT (also needed when OUTPUT is WEIGHTS).")
@progress_option
def box_scale_command(weights, val, output, match_iou, truth, max_images, device, threads, overwrite, progress):
    """Fit one width and one height factor that make predicted boxes as tight as the true ones.

    Predicts on the synthetic validation set (raw boxes, at the checkpoint's confidence
    threshold), pairs predictions with the true extents (tight boxes of the instance
    masks when the data has them, else its box table) (IoU >= --match-iou, border boxes left
    out) and takes the median of w_true / w_pred and h_true / h_pred. The factors go
    into the metadata of a new checkpoint; `simgen predict` applies them (rescaling each
    box about its centre), `track-video` after linking the raw boxes, unless --box-scale off.

    \b
    Example:
      simgen train box-scale runs/yolo/best.pt --val tem_val.h5 -o runs/yolo/best_calibrated.pt
    """
    s = calibrate_box_scale(weights, val, output, match_iou=match_iou, truth=truth, max_images=max_images, device=device,
                            threads=threads, overwrite=overwrite, progress=progress)
    click.echo(f"box scale: width x{s.x:.3f}, height x{s.y:.3f} from {s.n_pairs} pairs; mean IoU "
               f"{s.mean_iou_before:.3f} -> {s.mean_iou_after:.3f}")
    click.echo(f"wrote {output}")


def register(groups):
    groups["train"].add_command(box_scale_command)
