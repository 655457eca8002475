"""The ``simgen`` command line (click).

This module is deliberately thin: it defines the root group, the command
groups shared by several stages (``simulate``, ``export``, ...) and the error
policy.  Commands themselves live in :mod:`simgen.commands` — one module per
topic, each exposing ``register(groups)`` — and every command calls one
documented library function.  Heavy libraries (torch, ultralytics, jax) are
imported inside command bodies so that ``simgen --help`` stays fast.

Error policy: a :class:`~simgen.errors.SimgenError` (bad parameter, unreadable
or foreign file, malformed spec) or an ``OSError`` becomes one line on stderr,
``Error: <message>``, and exit code 2, with no traceback.  Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
import os
import pkgutil
import sys

import click

from simgen import __version__, commands
from simgen.commands._options import CONTEXT, DefaultGroup  # noqa: F401 - DefaultGroup kept importable from cli
from simgen.errors import SimgenError

__all__ = ["main", "DefaultGroup", "CliError"]


class CliError(click.ClickException):
    """A user error reported as one line with exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def _one_line_text(text: str) -> str:
    return " ".join(str(text).split())


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return _one_line_text(text)


class SimgenGroup(click.Group):
    """Root group: every user error becomes one line on stderr and exit code 2.

    Click's own usage errors normally print the usage line and a hint as well;
    we print ``Error: <message> (see '<command> --help')`` on a single line instead.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the reader went away (`simgen ... | head`): not a user error, handled in main()
        except (SimgenError, OSError) as exc:
            raise CliError(_one_line(exc)) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # Python's documented recipe: point stdout at devnull so the interpreter's final
            # flush does not raise again, and exit quietly like other Unix tools.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except click.ClickException as exc:
            message = _one_line_text(exc.format_message())
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            click.echo(f"Error: {message}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)




@click.group(cls=SimgenGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="simgen")
def main():
    """simgen: simulation-first synthetic data and detectors for microscopy defects.

    \b
    Typical flow:
      simgen simulate film --n 1000 --size 512 --seed 0 -o film.h5
      simgen preview film.h5 -o film.png
      simgen export yolo film.h5 -o yolo_dir/
    Run `simgen COMMAND --help` for each command's options and examples.
    """


@main.group(context_settings=CONTEXT)
def simulate():
    """Generate annotated synthetic datasets (film, tem, video, filament)."""


@main.group(context_settings=CONTEXT)
def export():
    """Export an HDF5 dataset to an interchange format (yolo, coco, mot)."""


GROUPS = {"main": main, "simulate": simulate, "export": export}


def _register_commands() -> None:

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(GROUPS)
    _finite_floats(main)
    _guard_outputs(main)


def _finite_floats(command: click.Command) -> None:
    """Every float option of every command rejects NaN and ±inf with one line: one rule, applied once
    to the whole tree (``--decross nan`` once wrote all-zero images and invalid JSON, ``--min-box nan``
    dropped every label).  Each float type is copied (``type=float`` shares click's one FLOAT) and its
    ``convert`` wrapped, so ranges and help text stay as declared."""
    for param in command.params:
        if isinstance(param.type, click.types.FloatParamType) and not getattr(param.type, "_finite", False):
            param.type = copy.copy(param.type)
            param.type.convert = functools.partial(_finite_convert, param.type, type(param.type).convert)
            param.type._finite = True
    for sub in getattr(command, "commands", {}).values():
        _finite_floats(sub)


#: Parameter names that hold what a command writes.
OUTPUT_PARAMS = ("output", "out_dir")


def _guard_outputs(command: click.Command) -> None:
    """No command may write over one of its own inputs, ``--overwrite`` or not (``preview``, ``track``
    and ``predict`` once replaced their input dataset).  Applied once to the whole tree: every command
    with an output parameter checks it against every other path it was given before it runs."""
    names = {p.name for p in command.params}
    if command.callback is not None and names & set(OUTPUT_PARAMS):
        command.callback = functools.partial(_refuse_output_over_input, command.callback)
    for sub in getattr(command, "commands", {}).values():
        _guard_outputs(sub)


def _refuse_output_over_input(callback, *args, **kwargs):
    outputs = [kwargs[n] for n in OUTPUT_PARAMS if kwargs.get(n)]
    inputs = []
    for name, value in kwargs.items():
        if name in OUTPUT_PARAMS or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and str(v) and os.path.exists(v):
                inputs.append((name, v))
    for out in outputs:
        target = os.path.realpath(out)
        for name, v in inputs:
            if os.path.realpath(v) == target:
                raise CliError(f"the output {out} is also an input ({name.replace('_', '-')}); "
                               "write the result elsewhere (never over an input, even with --overwrite)")
    return callback(*args, **kwargs)


def _finite_convert(ptype, convert, value, param, ctx):
    value = convert(ptype, value, param, ctx)
    if isinstance(value, float) and not math.isfinite(value):
        ptype.fail(f"{value} is not a finite number", param, ctx)
    return value


_register_commands()
