"""Scale-out generation: ``--shard-size/--workers/--scheduler/--serial`` and ``simgen verify``.

Any ``simgen simulate <kind>`` command gains sharded, Dask-distributed output by
decorating itself with :func:`shard_options` (it then receives one ``shard``
argument, ``None`` unless ``--shard-size`` was given) and calling
:func:`run_sharded` with its sampler::

    @shard_options
    def tem_command(..., output, shard, overwrite, progress):
        sampler = TemSampler(...)
        if shard is not None:
            run_sharded(output, sampler, n, shard, image_dtype=..., overwrite=overwrite, progress=progress)
            return
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import click

from simgen.datasets.shards.write import generate_sharded, is_manifest_path, verify_manifest
from simgen.errors import DataError, ParameterError, SchemaError

__all__ = ["ShardOptions", "shard_options", "run_sharded", "verify_command", "register"]


@dataclass(frozen=True)
class ShardOptions:
    """Parsed sharding options of a simulate command."""

    shard_size: int
    workers: int | None = None
    scheduler: str | None = None
    serial: bool = False


_OPTIONS = (
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

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def run_sharded(output, sampler, n: int, shard: ShardOptions, *, image_dtype: str = "uint8",
                overwrite: bool = False, progress: bool = False):
    """Generate (or resume) a sharded dataset for a simulate command and report it on stdout."""

    run = generate_sharded(
        output, sampler, n, shard.shard_size, workers=shard.workers, scheduler=shard.scheduler,
        serial=shard.serial, image_dtype=image_dtype, overwrite=overwrite, progress=progress,
        log=lambda message: click.echo(message, err=True),
    )
    written = f"{len(run.generated)} written" + (f" ({len(run.corrupt)} replacing corrupt ones)" if run.corrupt else "")
    parts = [written, f"{len(run.kept)} kept"]
    rate = f", {run.images_per_second:.1f} images/s ({run.mode})" if run.samples_generated else ""
    click.echo(f"{run.n_samples} {sampler.kind} samples in {run.n_shards} shards ({', '.join(parts)}{rate}); "
               f"manifest {run.manifest}")
    return run


@click.command("verify")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(path, as_json):
    """Recompute the SHA-256 of every shard of a sharded dataset.

    Lists missing, corrupt and unfinished shards; exit code 2 if there are any
    (re-run the generating command to regenerate exactly those).

    \b
    Example:
      simgen verify film_shards/manifest.json
    """

    if not is_manifest_path(path):
        raise SchemaError(f"{path} is not a shard manifest; give manifest.json or the directory holding it")
    report = verify_manifest(path)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for label, names in (("missing", report.missing), ("corrupt", report.corrupt), ("unfinished", report.pending)):
            for name in names:
                click.echo(f"{label:<10}  {name}")
        click.echo(f"{len(report.ok)} of {report.n_shards} shards ok ({report.manifest})")
    if not report.passed:
        counts = [f"{len(v)} {k}" for k, v in (("missing", report.missing), ("corrupt", report.corrupt),
                                                ("unfinished", report.pending)) if v]
        raise DataError(f"{report.manifest}: {', '.join(counts)} of {report.n_shards} shards; "
                        "re-run the generating command to regenerate them")


def register(groups):
    groups["main"].add_command(verify_command)
