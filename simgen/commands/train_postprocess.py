"""``simgen train postprocess``: pick threshold, nested-box suppression and flip TTA on synthetic validation data."""

from __future__ import annotations

import click

from simgen.commands._options import TTA_CHOICES, device_option, parse_nested, progress_option


@click.command("postprocess")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--val", "val", required=True, type=click.Path(),
              help="Synthetic validation data with boxes (simgen HDF5 / shards from a simulator; real data refused).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The checkpoint copy with the choice in its metadata.")
@click.option("--nested", default="auto", show_default=True, metavar="auto|off|IOMIN",
              help="Nested-box suppression: picked among 0.9 ... 0.6 (auto), off, or a fixed IoMin.")
@click.option("--tta", type=click.Choice(list(TTA_CHOICES)), default="auto", show_default=True,
              help="Flip test-time augmentation: picked (auto), always, never.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use the first N validation images.")
@device_option
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT (also needed when OUTPUT is WEIGHTS).")
@progress_option
def postprocess_command(weights, val, output, nested, tta, max_images, device, threads, overwrite, progress):
    """Choose the confidence threshold, nested-box suppression and flip test-time augmentation of a
    YOLO checkpoint by the best peak F1 on synthetic validation data, and write a copy.

    Training makes this choice on its own validation tiles; use this for a checkpoint trained
    before those options existed, or to choose on another synthetic set. Each option is kept
    only if it raises the validation peak F1. `simgen predict`, `track-video` and the
    experiments apply the stored choice.

    \b
    Example:
      simgen train postprocess runs/s2r/yolo/best.pt --val runs/s2r/synthetic_val.h5 -o runs/s2r/yolo/best_pp.pt
    """
    from simgen.train.yolo.postprocess_calibrate import calibrate_postprocessing

    r = calibrate_postprocessing(weights, val, output, nested=parse_nested(nested),
                                 tta=TTA_CHOICES[tta], max_images=max_images,
                                 device=device, threads=threads, overwrite=overwrite, progress=progress)
    without = "n/a" if r["val_f1_without"] is None else f"{r['val_f1_without']:.3f}"
    click.echo(f"validation peak F1 {without} -> {r['val_f1']:.3f} at confidence {r['conf']:.3f}: nested "
               f"{'off' if r['nested'] is None else r['nested']}, flip TTA {'on' if r['tta'] else 'off'} "
               f"({r['n_images']} images)")
    click.echo(f"wrote {output}")


def register(groups):
    groups["train"].add_command(postprocess_command)
