"""``simgen changedet``: import real labelled filament sequences, run the MultiTaskDeltaNet study.

``import`` turns a folder of frames with A1/A2 mask folders into a pair file
(:func:`simgen.datasets.filament_io.import_filament_folder`); ``study`` runs the
leave-one-diameter-out comparison of MultiTaskDeltaNet and the single-frame U-Net
(:func:`simgen.experiments.changedet_study.run_changedet_study`).
"""

from __future__ import annotations

import click

from simgen.commands._options import CONTEXT, device_option, output_option, overwrite_option, progress_option
from simgen.datasets.filament_io import import_filament_folder
from simgen.errors import ParameterError


@click.group("changedet", context_settings=CONTEXT)
def changedet_group():
    """Filament change detection as in MultiTaskDeltaNet: data import and the study.

    \b
    Typical flow:
      simgen simulate filament --n 20 --frames 12 --pairing all -o fil_all_pairs.h5
      simgen changedet import my_sequences/ --crop 256 -o real_pairs.h5
      simgen train deltanet --data real_pairs.h5 -o runs/delta
      simgen changedet study --scale light -o runs/mtdn_study
    """


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


def _diameters(items) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ParameterError(f"--diameter expects SEQUENCE=PX, got {item!r}") from None
        if not sep or not name.strip():
            raise ParameterError(f"--diameter expects SEQUENCE=PX, got {item!r}")
    return out


@changedet_group.command("import")
@click.argument("root", type=click.Path())
@output_option(help="Output HDF5 pair file.")
@click.option("--images", default="images", show_default=True, help="Folder of the frames (in ROOT or each sequence).")
@click.option("--a1", "a1", default="a1", show_default=True, help="Folder of the A1 (filament) masks.")
@click.option("--a2", "a2", default="a2", show_default=True, help="Folder of the A2 (hollow core) masks.")
@click.option("--pairing", default="all", show_default=True,
              help="Pairs per sequence: all (every i < j, as the study), self, consecutive; comma list.")
@click.option("--crop", type=click.IntRange(min=8), default=None, help="Centre-crop frames and masks to CROP² px.")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Mask foreground: above this fraction of the mask's maximum.")
@click.option("--diameter", "diameters", multiple=True, metavar="SEQUENCE=PX",
              help="Filament diameter of a sequence (repeatable), stored for leave-one-diameter-out studies.")
@overwrite_option
@progress_option
def import_command(root, output, images, a1, a2, pairing, crop, threshold, diameters, overwrite, progress):
    """Import real labelled filament frames (ROOT/images + two mask folders) as a pair file.

    ROOT holds images/, a1/ and a2/ (one sequence) or one sub-folder per sequence with
    them. Frames are ordered by file name (naturally: f2 before f10); a mask has its
    frame's file name (any image suffix). The file has the layout of `simgen simulate
    filament` (frames, /filament/a1|a2, all pairs with their change maps), so `simgen
    train deltanet` and `simgen predict` read it.

    \b
    Example:
      simgen changedet import carbon_runs/ --a1 area1 --a2 area2 --crop 256 -o real_pairs.h5
    """
    info = import_filament_folder(root, output, images=images, a1=a1, a2=a2, pairing=_names(pairing), crop=crop,
                                  threshold=threshold, diameters=_diameters(diameters), overwrite=overwrite,
                                  progress=progress)
    click.echo(f"wrote {len(info['sequences'])} sequence(s), {sum(info['frames'])} frames, {info['pairs']} pairs "
               f"to {info['path']}")


@changedet_group.command("study")
@output_option(help="Study folder (data, runs, results.csv, report.md).")
@click.option("--scale", type=click.Choice(["tiny", "light", "full"]), default="light", show_default=True,
              help="tiny: tests (seconds); light: 128² frames, 16-channel U-Nets (CPU); full: 256², 32 channels, "
                   "batch 16 (the study's network; GPU).")
@click.option("--diameters", default=None, help="Target filament diameters in px, comma list (one fold each).")
@click.option("--sequences", type=click.IntRange(min=1), default=None, help="Training sequences per diameter.")
@click.option("--test-sequences", type=click.IntRange(min=1), default=None, help="Test sequences per diameter.")
@click.option("--frames", type=click.IntRange(min=2), default=None, help="Frames per sequence.")
@click.option("--size", type=click.IntRange(min=32), default=None, help="Frame side (px).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs of every model.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None, help="Optimiser steps per epoch.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Pairs (MTDN) or frames (U-Net) per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Peak learning rate (9.5e-4).")
@click.option("--variants", default=None,
              help="Models, comma list: unet, mtdn, mtdn-pre, mtdn-a1, mtdn-a2, mtdn-a1-pre, ...; -x2 (-xN) trains "
                   "N times the epochs: unet-x2 has as many steps as mtdn-pre in all, its equal-budget baseline "
                   "(default unet,mtdn,mtdn-pre,mtdn-a1,mtdn-a2).")
@click.option("--methods", default=None, help="Recovery methods: forward,backward,consecutive,ensemble (default all).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option
@click.option("--resume", is_flag=True,
              help="Keep finished runs of the folder, continue unfinished ones; --variants may add or leave out models.")
@overwrite_option
@progress_option
def study_command(output, scale, diameters, sequences, test_sequences, frames, size, epochs, steps_per_epoch,
                  batch_size, lr, variants, methods, seed, device, resume, overwrite, progress):
    """MultiTaskDeltaNet vs the single-frame U-Net on simulated filaments, leave-one-diameter-out.

    Simulates all-pairs sequences per diameter, trains per fold the U-Net and the MTDN
    variants (single/multi-task, from scratch/from the fold's U-Net) with one budget,
    scores change maps and the per-frame A1/A2 masks recovered by forward, backward,
    consecutive and ensemble fusion, and writes report.md with the study's tables.

    \b
    Examples:
      simgen changedet study --scale tiny -o /tmp/study_tiny
      simgen changedet study --scale light -o runs/mtdn_light --resume
      simgen changedet study --scale full --device cuda -o runs/mtdn_full
    """
    from simgen.experiments.changedet_study import StudyConfig, run_changedet_study

    kw = {"scale": scale, "sequences": sequences, "test_sequences": test_sequences, "frames": frames, "size": size,
          "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": lr, "seed": seed,
          "device": device}
    if diameters:
        try:
            kw["diameters"] = tuple(float(d) for d in _names(diameters))
        except ValueError:
            raise ParameterError(f"--diameters must be numbers, got {diameters!r}") from None
    if variants:
        kw["variants"] = _names(variants)
    if methods:
        kw["methods"] = _names(methods)
    cfg = StudyConfig(**{k: v for k, v in kw.items() if v is not None}).resolved()
    res = run_changedet_study(output, cfg, overwrite=overwrite, resume=resume, progress=progress)
    click.echo(res.summary_text)
    click.echo(f"wrote {res.output / 'report.md'} ({res.to_dict()['cpu_seconds']:.0f} s CPU)")


def register(groups):
    groups["main"].add_command(changedet_group)
    groups["changedet"] = changedet_group
