"""Dataset commands: ``simgen info``, ``simgen preview`` (``simgen export yolo`` is in export.py)."""

from __future__ import annotations

import json

import click

from simgen.commands._options import output_option, overwrite_option, progress_option
from simgen.commands._readable import readable_lines, readable_value
from simgen.datasets.preview import preview_sheet
from simgen.datasets.shards.read import open_any, summarize_manifest
from simgen.datasets.shards.write import is_manifest_path


def _print_summary(summary: dict) -> None:
    gen = summary.pop("generator", None)
    tables = summary.pop("tables", {})
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        click.echo(f"{key:<{width}}  {value}")
    for name, entry in tables.items():
        click.echo(f"{'table ' + name:<{width}}  " + ", ".join(f"{k}={v}" for k, v in entry.items()))
    if isinstance(gen, dict) and gen:  # the settings that made the data, one per line
        click.echo("generator:")
        for line in readable_lines(gen, indent=2):
            click.echo(line)
    elif gen:
        click.echo(f"{'generator':<{width}}  {readable_value(gen)}")


def _print_detector(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        for line in readable_lines(summary, indent=0):
            click.echo(line)


@click.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_command(path, as_json):
    """Summarize a dataset (schema, counts, classes, generator parameters) or a YOLO checkpoint.

    PATH is an HDF5 dataset, or a sharded set's manifest.json (or its directory, or its virtual.h5),
    or a YOLO best.pt (classes, and the preprocessing simgen applies before the network),
    or a fused detector's fusion.json (members, weights, calibration, threshold).
    The generator settings are printed as an indented 'key: value' block (long lists shortened
    to their first items and a count); --json prints everything, in full, for machines.

    \b
    Example:
      simgen info film.h5
      simgen info film_shards/manifest.json
    """

    if str(path).endswith(".pt"):  # a YOLO checkpoint: what it is and the preprocessing it expects
        from simgen.train.yolo.checkpoint import checkpoint_summary

        _print_detector(checkpoint_summary(path), as_json)
        return
    if str(path).endswith(".json"):
        from simgen.train.fusion import fusion_summary, is_fusion_file

        if is_fusion_file(path):  # a fused detector: members, weights, calibration, the synthetic choice
            _print_detector(fusion_summary(path), as_json)
            return
    if is_manifest_path(path):  # sharded dataset: the manifest alone (also while it is incomplete)
        summary = summarize_manifest(path)
    else:
        with open_any(path) as ds:  # an HDF5 file, or a shard set's virtual.h5
            summary = ds.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(summary)


@click.command("preview")
@click.argument("path", type=click.Path())
@output_option(help="Output PNG.")
@click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Number of samples.")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First sample.")
@click.option("--cols", type=click.IntRange(min=1), default=None, help="Grid columns.")
@click.option("--no-boxes", is_flag=True, help="Do not draw boxes.")
@overwrite_option
@progress_option
def preview_command(path, output, n, start, cols, no_boxes, overwrite, progress):
    """Contact sheet PNG with annotations drawn (+1 red '+', -1 blue 'o', boxes by class).

    PATH is an HDF5 dataset, a sharded set (its directory, manifest.json or virtual.h5),
    a YOLO folder (images/ + labels/) or a folder of images.

    \b
    Example:
      simgen preview film.h5 -o sheet.png --n 9
      simgen preview film_shards/ -o sheet.png
    """

    out = preview_sheet(path, output, n=n, start=start, cols=cols, boxes=not no_boxes, overwrite=overwrite,
                        progress=progress)
    click.echo(f"wrote {out}")


def register(groups):
    groups["main"].add_command(info_command)
    groups["main"].add_command(preview_command)
