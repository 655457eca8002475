"""Scale-out generation: sharded output of the simulate commands and ``simgen verify``.

Any ``simgen simulate <kind>`` command gains sharded, Dask-distributed output with the options
``--shard-size/--workers/--scheduler/--serial`` (:func:`simgen.commands._options.shard_options`,
usually through ``dataset_output_options(help, sharded=True)``: the command receives one ``shard``
argument, ``None`` unless ``--shard-size`` was given) and :func:`write_samples`::

    @dataset_output_options("Output HDF5 file (a directory with --shard-size).", sharded=True)
    def tem_command(..., image_dtype, output, shard, overwrite, progress):
        sampler = TemSampler(...)
        path = write_samples(output, sampler, n, shard, image_dtype=image_dtype, overwrite=overwrite,
                             progress=progress)
        if path is None:  # sharded, reported by run_sharded
            return
"""

from __future__ import annotations

import json

import click

from simgen.atomic import check_output
from simgen.commands._options import ShardOptions, shard_options
from simgen.datasets.generate import write_dataset
from simgen.datasets.shards.write import generate_sharded, is_manifest_path, verify_manifest
from simgen.errors import DataError, SchemaError

__all__ = ["ShardOptions", "shard_options", "run_sharded", "write_samples", "verify_command", "register"]


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


def write_samples(output, sampler, n: int, shard: ShardOptions | None, *, image_dtype: str = "uint8",
                  overwrite: bool = False, progress: bool = False):
    """Write ``n`` samples of a simulate command: shards (:func:`run_sharded`, reported on stdout;
    returns ``None``) when ``shard`` is given, else one HDF5 file (returns its path)."""
    if shard is not None:  # -o is a directory of shards + manifest.json (simgen.datasets.shards)
        run_sharded(output, sampler, n, shard, image_dtype=image_dtype, overwrite=overwrite, progress=progress)
        return None
    check_output(output, overwrite)
    return write_dataset(output, sampler, n, overwrite=overwrite, image_dtype=image_dtype, progress=progress)


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
