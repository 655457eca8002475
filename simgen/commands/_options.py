"""Option helpers shared by command modules (not a command module itself)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import click

from simgen.errors import ParameterError

#: Context settings of every command: ``-h`` as well as ``--help``, wider help text.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class DefaultGroup(click.Group):
    """A group that runs ``default_command`` when the first argument is not a subcommand.

    Lets ``simgen augment in.h5 --spec ...`` and ``simgen augment extract-noise ...``
    coexist.
    """

    def __init__(self, *args, default_command: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx, args):
        if (
            self.default_command
            and args
            and args[0] not in self.commands
            and args[0] not in ("--help", "-h")
        ):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def output_option(**kwargs):
    return click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=True), **kwargs)


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output (only once the new one is complete).")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
noise_profile_option = click.option("--noise-profile", default="default", show_default=True,
                                    help="Read-noise profile for FN (.npz or 'default').")
dtype_option = click.option("--dtype", "image_dtype", type=click.Choice(["uint8", "uint16", "float32"]), default="uint8",
                            show_default=True, help="Stored image dtype.")
#: ``--device`` of the commands that run a model (torch device name or ``auto``).
device_option = click.option("--device", default="auto", show_default=True)
single_class_option = click.option(
    "--single-class", is_flag=False, flag_value="defect", default=None, metavar="[NAME]",
    help="Label every defect as one class named NAME (default 'defect'), e.g. loop: what a one-class "
         "detector (as in simulate film) trains on.")
#: ``--runtime`` of the commands that run a YOLO detector (the names of ``simgen.train.yolo.exported.RUNTIMES``).
runtime_option = click.option(
    "--runtime", type=click.Choice(["torch", "onnx", "openvino", "openvino-int8"]), default="torch", show_default=True,
    help="YOLO inference: torch, or on the CPU through ONNX Runtime (simgen[onnx]), OpenVINO (simgen[openvino]) or "
         "OpenVINO INT8 calibrated on synthetic images (simgen[int8]); exported once per checkpoint and cached.")
seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Master seed; sample i uses SeedSequence(seed, spawn_key=(i,)).")


# -- the outputs of a command writing a dataset -----------------------------------------------
@dataclass(frozen=True)
class ShardOptions:
    """Parsed sharding options of a simulate command."""

    shard_size: int
    workers: int | None = None
    scheduler: str | None = None
    serial: bool = False


_SHARD_OPTIONS = (
    click.option("--shard-size", type=click.IntRange(min=1), default=None,
                 help="Write shards of this many images plus manifest.json into the -o DIRECTORY "
                      "(resumable; runs on Dask).  Without it, -o is one HDF5 file."),
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="With --shard-size: worker processes of the local Dask cluster (1 thread each; default: CPU count)."),
    click.option("--scheduler", default=None, metavar="ADDRESS",
                 help="With --shard-size: use an existing Dask cluster, e.g. tcp://host:8786 (see docs/scale.md)."),
    click.option("--serial", is_flag=True, help="With --shard-size: write shards one by one in this process (debugging, no Dask)."),
)


def shard_options(f):
    """Add the four sharding options to a click command; the command gets ``shard: ShardOptions | None``."""

    @functools.wraps(f)
    def wrapper(*args, shard_size=None, workers=None, scheduler=None, serial=False, **kwargs):
        if shard_size is None:
            if workers is not None or scheduler is not None or serial:
                raise ParameterError("--workers, --scheduler and --serial need --shard-size (sharded output)")
            shard = None
        else:
            if serial and (workers is not None or scheduler is not None):
                raise ParameterError("--serial runs in this process; drop --workers/--scheduler")
            if workers is not None and scheduler is not None:
                raise ParameterError("give either --workers (local cluster) or --scheduler (existing cluster), not both")
            shard = ShardOptions(shard_size, workers, scheduler, serial)
        return f(*args, shard=shard, **kwargs)

    for option in reversed(_SHARD_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def dataset_output_options(help: str, *, sharded: bool = False):
    """``--dtype``, ``-o/--output`` (``help``), with ``sharded`` the four options of
    :func:`shard_options`, ``--overwrite`` and ``--progress``: the outputs of a command writing a
    dataset (it gets ``image_dtype``, ``output``, [``shard``,] ``overwrite``, ``progress``)."""
    options = [dtype_option, output_option(help=help), *([shard_options] if sharded else []), overwrite_option,
               progress_option]

    def deco(f):
        for option in reversed(options):
            f = option(f)
        return f

    return deco


def parse_range(text: str, name: str, cast=int) -> tuple:
    """Parse ``"5"`` or ``"2-12"`` / ``"2:12"`` into an inclusive ``(lo, hi)`` tuple."""
    text = str(text).strip()
    for sep in (":", "-", ","):
        if sep in text.lstrip("-"):
            lo, _, hi = text.partition(sep) if not text.startswith("-") else ("-" + text[1:].partition(sep)[0], sep, text[1:].partition(sep)[2])
            break
    else:
        lo = hi = text
    try:
        lo, hi = cast(lo), cast(hi)
    except ValueError:
        raise ParameterError(f"{name} must be a number or a range like 2-12, got {text!r}") from None
    if hi < lo:
        raise ParameterError(f"{name} range {text!r} is empty (high < low)")
    return lo, hi


# -- one option vocabulary: old spellings keep working for one release ----------------------------
def _deprecated(old: str, new: str) -> None:
    click.echo(f"Warning: {old} is deprecated and will be removed in the next release; use {new}", err=True)


def renamed_option(old: str, new: str, dest: str, **kwargs):
    """Accept the old spelling ``old`` of option ``new`` (parameter ``dest``) with a deprecation line.

    Put it below ``@click.command`` with the other options; ``kwargs`` (e.g. ``type``) apply to
    the hidden old option.  Giving both spellings is a usage error.
    """
    hidden = f"renamed_{dest}"

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kw):
            value = kw.pop(hidden, None)
            if value is not None:
                ctx = click.get_current_context()
                if ctx.get_parameter_source(dest) == click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"give {new} only (not also the old spelling {old})")
                _deprecated(old, new)
                kw[dest] = value
            return f(*args, **kw)

        return click.option(old, hidden, default=None, hidden=True, **kwargs)(wrapper)

    return deco


def output_dir_option(help: str = "Output folder."):
    """``-o/--output`` for a folder, also accepting the old positional ``OUT_DIR`` (deprecated).

    The command receives it as ``out_dir``.
    """
    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kw):
            legacy = kw.pop("legacy_out_dir", None)
            if legacy is not None:
                if kw.get("out_dir") is not None:
                    raise click.UsageError("give the output folder once, with -o (the positional OUT_DIR is deprecated)")
                _deprecated("the positional OUT_DIR", "-o/--output OUT_DIR")
                kw["out_dir"] = legacy
            if kw.get("out_dir") is None:
                raise click.UsageError("Missing option '-o' / '--output'.")
            return f(*args, **kw)

        with_arg = click.argument("legacy_out_dir", required=False, type=click.Path(file_okay=False),
                                  metavar="[OUT_DIR]")(wrapper)
        return click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
                            help=help)(with_arg)

    return deco


#: Option names of :func:`tracking_options` (fields of ``simgen.experiments.track_video.TrackingOptions``).
TRACKING_FIELDS = ("tracker", "search_range", "memory", "min_length", "drift", "drift_smoothing", "track_high_thresh",
                   "track_low_thresh", "new_track_thresh", "track_buffer", "match_thresh", "fuse_score")


def tracking_options(f):
    """Options choosing the tracker and its settings (``track-video``, ``analyze``)."""
    opts = [
        click.option("--tracker", type=click.Choice(["trackpy", "bytetrack", "botsort"]), default="trackpy",
                     show_default=True, help="trackpy: nearest-neighbour linking; bytetrack/botsort: Ultralytics' "
                     "IoU + Kalman trackers (low-score detections continue tracks)."),
        click.option("--search-range", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
                     help="trackpy (and drift estimate): largest step of a defect between frames (px)."),
        click.option("--memory", type=click.IntRange(min=0), default=2, show_default=True,
                     help="trackpy: frames a defect may vanish and keep its id."),
        click.option("--min-length", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Drop tracks detected in fewer frames."),
        click.option("--drift/--no-drift", default=False, show_default=True,
                     help="Subtract the stage drift (trackpy.compute_drift) before linking."),
        click.option("--drift-smoothing", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Rolling mean of the drift over this many frames."),
        click.option("--track-high", "track_high_thresh", type=click.FloatRange(0, 1), default=None,
                     help="bytetrack/botsort: first-association score threshold (default: the linking --conf)."),
        click.option("--track-low", "track_low_thresh", type=click.FloatRange(0, 1), default=0.1, show_default=True,
                     help="bytetrack/botsort: lower scores never continue a track."),
        click.option("--new-track", "new_track_thresh", type=click.FloatRange(0, 1), default=None,
                     help="bytetrack/botsort: score to start a track (default: --track-high)."),
        click.option("--track-buffer", type=click.IntRange(min=0), default=30, show_default=True,
                     help="bytetrack/botsort: frames a lost track is kept and may be re-found."),
        click.option("--match-thresh", type=click.FloatRange(0, 1), default=0.8, show_default=True,
                     help="bytetrack/botsort: largest association cost (1 - IoU)."),
        click.option("--fuse-score/--no-fuse-score", default=True, show_default=True,
                     help="bytetrack/botsort: weigh the IoU by the detection score."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: ``--box-scale`` of ``predict``, ``track-video``, ``track-video-cv``.
box_scale_option = click.option(
    "--box-scale", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
    help="YOLO: rescale boxes by the factors stored by `simgen train box-scale` (auto; none stored: no change) "
         "or keep the raw boxes (off).")


def parse_nested(value: str) -> str | float | None:
    """``--nested``: ``auto``, ``off`` or an IoMin in (0, 1]."""
    if value in ("auto", "off"):
        return None if value == "off" else "auto"
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not 0 < x <= 1:
        raise ParameterError(f"--nested must be auto, off or a number in (0, 1], got {value!r}")
    return x


#: ``--tta`` choice → ``YoloDetector`` / ``calibrate_postprocessing`` ``tta`` argument.
TTA_CHOICES = {"auto": "auto", "on": True, "off": False}
