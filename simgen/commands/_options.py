"""Option helpers shared by command modules (not a command module itself)."""

from __future__ import annotations

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
seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Master seed; sample i uses SeedSequence(seed, spawn_key=(i,)).")


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
