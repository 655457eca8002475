"""Sharded dataset generation: plan, run (serially or on Dask), manifest, resume, verify.

A *sharded dataset* is a directory::

    DIR/manifest.json     index of the whole set (schema "simgen-shards", version 1)
    DIR/shard-00000.h5    samples first_index .. first_index + n - 1: an ordinary simgen
    DIR/shard-00001.h5    dataset file (``/images``, tables, ...) with root attribute first_index
    ...
    DIR/virtual.h5        optional: /images (and /labels/masks, /phase) of all shards as one
                          HDF5 virtual dataset (relative source paths; see ShardedDataset)

Each shard is one task.  Tasks run on a ``dask.distributed`` cluster (a
:class:`~distributed.LocalCluster` with ``workers`` single-threaded worker
processes, or an existing scheduler) or serially in-process.  A task calls
:func:`simgen.datasets.generate.write_dataset` for a contiguous index range, so
the shard is written to a temporary name and renamed only when complete, and
sample ``i`` draws only from ``SeedSequence(seed, spawn_key=(i,))``: shard
content never depends on worker count, scheduling or order.

Manifest (JSON, rewritten atomically as shards finish)::

    schema, schema_version, simgen_version, created, updated
    kind, sampler (sampler.describe()), class_names, seed, seeding (the rule, in words)
    n_samples, shard_size, n_shards, image_dtype, image_shape, complete
    checksums   what the two per-shard checksums mean
    totals      shards_done, samples_done, bytes, rows {table: count}
    shards      [{index, file, first_index, n, seed {entropy, spawn_key_start, spawn_key_stop},
                  status ("done" | "pending"), sha256, images_sha256, bytes, rows, image_shape}]

``sha256`` is the SHA-256 of the whole shard file, used for integrity (resume and
``simgen verify``).  Two runs never give byte-identical *files* because every file
records its creation time; ``images_sha256`` (SHA-256 of the ``/images`` array
bytes, C order, little-endian on-disk dtype) is identical for identical pixels and
is what to compare across runs, worker counts and machines.

A run stopped by ``SIGTERM`` records the shards that finished before it exits (status 143);
temp files of shards that were being written are removed then or by the next run.

Resume: re-running the same call keeps every shard whose file checksum matches the
manifest (or, if the run was killed before the manifest recorded it, whose file is a
complete shard of exactly this generator, seed and index range) and regenerates
missing or corrupt ones.  Different parameters for an existing directory raise
:class:`~simgen.errors.ParameterError` instead of mixing two datasets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simgen import __version__
from simgen.atomic import atomic_path, json_default, sigterm_raises
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.schema import IMAGE_DTYPES, table_path
from simgen.errors import DataError, ParameterError, SchemaError, SimgenError
from simgen.progress import track

if TYPE_CHECKING:
    from distributed import Client

    from simgen.datasets.schema import Sampler

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "MANIFEST_VERSION",
    "VIRTUAL_NAME",
    "Shard",
    "ShardRun",
    "VerifyReport",
    "plan_shards",
    "shard_seed_info",
    "write_shard",
    "generate_sharded",
    "dask_client",
    "manifest_path",
    "is_manifest_path",
    "load_manifest",
    "verify_manifest",
    "write_virtual",
    "file_sha256",
    "images_sha256",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "simgen-shards"
MANIFEST_VERSION = 1
SUPPORTED_MANIFEST_VERSIONS = (1,)
VIRTUAL_NAME = "virtual.h5"
SEEDING_RULE = (
    "sample i (global index) draws from numpy SeedSequence(entropy=seed, spawn_key=(i,)); "
    "a shard holds samples spawn_key_start <= i < spawn_key_stop"
)
CHECKSUMS = {
    "sha256": "SHA-256 of the whole shard file (integrity; differs between runs because files record their creation time)",
    "images_sha256": "SHA-256 of the /images array bytes in C order, on-disk dtype, little-endian "
    "(identical for identical pixels; compare this across runs and worker counts)",
}
#: Parameters that must agree between a command and an existing manifest.
IDENTITY_KEYS = ("kind", "sampler", "seed", "n_samples", "shard_size", "image_dtype")
_MANIFEST_EVERY_S = 1.0


# ---------------------------------------------------------------------------
# planning
@dataclass(frozen=True)
class Shard:
    """One planned shard: samples ``first_index .. first_index + n - 1`` in ``file``."""

    index: int
    first_index: int
    n: int
    file: str

    @property
    def stop(self) -> int:
        return self.first_index + self.n


def plan_shards(n: int, shard_size: int) -> list[Shard]:
    """Split ``n`` samples into contiguous shards of ``shard_size`` (the last may be smaller)."""
    _check_positive_int(n, "number of samples")
    _check_positive_int(shard_size, "shard size")
    count = -(-int(n) // int(shard_size))
    width = max(5, len(str(count - 1)))
    return [
        Shard(k, k * shard_size, min(shard_size, n - k * shard_size), f"shard-{k:0{width}d}.h5")
        for k in range(count)
    ]


def shard_seed_info(seed: int | None, shard: Shard) -> dict:
    """Seed record of a shard: master entropy and the range of SeedSequence spawn keys it uses."""
    return {"entropy": seed, "spawn_key_start": shard.first_index, "spawn_key_stop": shard.stop}


# ---------------------------------------------------------------------------
# checksums and one shard
def file_sha256(path: str | PathLike, block: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def images_sha256(path: str | PathLike, block: int = 32) -> str | None:
    """SHA-256 (hex) of the ``/images`` array of a dataset file (C order, little-endian), or ``None``."""
    import h5py

    with h5py.File(path, "r") as f:
        if "images" not in f:
            return None
        ds = f["images"]
        h = hashlib.sha256()  # equals hashlib.sha256(f["images"][()].tobytes()) on little-endian machines
        for a in range(0, ds.shape[0], block):
            arr = ds[a : a + block]
            h.update(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
        return h.hexdigest()


def _shard_facts(path) -> dict:
    """Checksums, size, table row counts and image shape of a finished shard file."""

    with open_dataset(path) as ds:
        rows = {name: int(ds.file[table_path(name)]["offsets"][-1]) for name in ds.tables}
        shape = list(ds.image_shape) if ds.image_shape else None
        n = ds.n
    return {
        "status": "done",
        "n_written": n,
        "sha256": file_sha256(path),
        "images_sha256": images_sha256(path),
        "bytes": Path(path).stat().st_size,
        "rows": rows,
        "image_shape": shape,
    }


def write_shard(out_dir: str | PathLike, shard: Shard, sampler: Sampler, image_dtype: str = "uint8",
                overwrite: bool = False, attrs: dict | None = None) -> dict:
    """Generate one shard file in ``out_dir`` and return its manifest facts.

    This is the unit of work sent to Dask workers (it must stay importable and
    picklable).  The file is written atomically by :func:`write_dataset`.
    """

    path = Path(out_dir) / shard.file
    write_dataset(path, sampler, shard.n, start=shard.first_index, overwrite=overwrite,
                  image_dtype=image_dtype, attrs={"shard_index": shard.index, **(attrs or {})})
    facts = _shard_facts(path)
    facts["host"] = os.uname().nodename
    facts["pid"] = os.getpid()
    return {"index": shard.index, **facts}


def _normalise(obj):
    """JSON round trip (tuples → lists, numpy scalars → Python) so descriptions compare equal."""

    return json.loads(json.dumps(obj, default=json_default, sort_keys=True))


def _adopt_shard(path: Path, shard: Shard, identity: dict) -> dict | None:
    """Facts of an unrecorded shard file if it is a complete shard of this very dataset, else None."""

    try:
        with open_dataset(path) as ds:
            a = ds.attrs
            ok = (
                ds.n == shard.n
                and int(a.get("first_index", -1)) == shard.first_index
                and a.get("kind") == identity["kind"]
                and _normalise(a.get("generator")) == identity["sampler"]
                and a.get("seed") == identity["seed"]
                and (ds.images is None or ds.images.dtype.name == identity["image_dtype"])
            )
        return _shard_facts(path) if ok else None
    except (SimgenError, OSError, KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------
# manifest
def manifest_path(path: str | PathLike) -> Path:
    """``path`` itself if it is a file, else ``path/manifest.json``."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() or not path.suffix else path


def is_manifest_path(path: str | PathLike) -> bool:
    """True for a ``*.json`` path or a directory holding a ``manifest.json``."""
    path = Path(path)
    return path.suffix.lower() == ".json" or (path.is_dir() and (path / MANIFEST_NAME).is_file())


def load_manifest(path: str | PathLike) -> dict:
    """Read and validate a shard manifest (``manifest.json`` or its directory).

    Raises
    ------
    SchemaError
        Missing, unreadable, foreign or unsupported-version manifest.
    """
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise SchemaError(f"{mpath} does not exist")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{mpath} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise SchemaError(f"{mpath} is not a simgen shard manifest (no schema='{MANIFEST_SCHEMA}')")
    version = manifest.get("schema_version")
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise SchemaError(
            f"{mpath} has manifest version {version}; this simgen reads version(s) "
            f"{', '.join(map(str, SUPPORTED_MANIFEST_VERSIONS))}"
        )
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise SchemaError(f"{mpath} has no valid shard list")
    expect = 0
    for k, s in enumerate(shards):
        try:
            ok = int(s["index"]) == k and int(s["first_index"]) == expect and int(s["n"]) >= 1 and isinstance(s["file"], str)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or "/" in s["file"] or s["file"].startswith("."):
            raise SchemaError(f"{mpath}: shard entry {k} is malformed")
        expect += int(s["n"])
    if expect != manifest.get("n_samples"):
        raise SchemaError(f"{mpath}: shards hold {expect} samples, n_samples says {manifest.get('n_samples')}")
    return manifest


def _totals(shards: list[dict]) -> dict:
    done = [s for s in shards if s.get("status") == "done"]
    rows: dict[str, int] = {}
    for s in done:
        for name, r in (s.get("rows") or {}).items():
            rows[name] = rows.get(name, 0) + int(r)
    return {
        "shards_done": len(done),
        "samples_done": int(sum(s["n"] for s in done)),
        "bytes": int(sum(s.get("bytes", 0) for s in done)),
        "rows": rows,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_manifest(path: Path, manifest: dict) -> None:
    shards = manifest["shards"]
    manifest["totals"] = _totals(shards)
    manifest["complete"] = manifest["totals"]["shards_done"] == len(shards)
    shapes = {tuple(s["image_shape"]) for s in shards if s.get("image_shape")}
    manifest["image_shape"] = list(next(iter(shapes))) if len(shapes) == 1 else None
    manifest["updated"] = _now()
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------
# execution
@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A ``distributed.Client``: connected to ``scheduler`` or to a new LocalCluster.

    The local cluster has ``workers`` worker processes with one thread each (no
    dashboard, random ports) and is shut down on exit.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ParameterError(f"cannot connect to the Dask scheduler at {scheduler} ({_short(exc)})") from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    n = int(workers or _cpu_count())
    single = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "SIMGEN_THREADS")}
    # Dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers (and into this process's
    # environment).  Setting it disables glibc's adaptive mmap threshold, so every large numpy
    # temporary is mmapped and page-faulted afresh: ~2x the CPU time per 512x512 image.
    # Keep glibc's default unless the user set the variable themselves.
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **single}
    if not _USER_TRIM:
        spawn_env["MALLOC_TRIM_THRESHOLD_"] = None
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",  # random free port (None would still try 8787)
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


#: Whether the user set MALLOC_TRIM_THRESHOLD_ (read at import, before any nanny could export it).
_USER_TRIM = "MALLOC_TRIM_THRESHOLD_" in os.environ


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _run_serial(tasks, out_dir, sampler, image_dtype):
    for shard, overwrite in tasks:
        yield write_shard(out_dir, shard, sampler, image_dtype, overwrite)


def _run_dask(client, tasks, out_dir, sampler, image_dtype):
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    [remote_sampler] = client.scatter([sampler], broadcast=False, hash=False)
    futures = [
        client.submit(write_shard, str(out_dir), shard, remote_sampler, image_dtype, overwrite,
                      key=f"simgen-shard-{token}-{shard.index}")
        for shard, overwrite in tasks
    ]
    try:
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


@dataclass
class ShardRun:
    """What :func:`generate_sharded` did."""

    manifest: Path
    n_samples: int
    n_shards: int
    kept: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    samples_generated: int = 0
    seconds: float = 0.0
    mode: str = "serial"

    @property
    def images_per_second(self) -> float:
        """Samples generated per second of wall time (0 if nothing was generated)."""
        return self.samples_generated / self.seconds if self.samples_generated and self.seconds > 0 else 0.0


def generate_sharded(
    out_dir: str | PathLike,
    sampler: Sampler,
    n: int,
    shard_size: int = 1000,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    serial: bool = False,
    image_dtype: str = "uint8",
    overwrite: bool = False,
    progress: bool = False,
    virtual: bool = True,
    log: Callable[[str], object] | None = None,
) -> ShardRun:
    """Generate ``n`` samples of ``sampler`` as shards in ``out_dir`` with a manifest; resume if present.

    Parameters
    ----------
    out_dir : path-like
        Output directory (created).  Shards, ``manifest.json`` and ``virtual.h5`` go here.
    sampler : picklable callable
        Per-index sampler (see :class:`simgen.simulate.film.FilmSampler`); with Dask it is
        pickled to the workers, which need simgen installed and ``out_dir`` on a shared filesystem.
    n, shard_size : int
        Number of samples and samples per shard (the last shard may be smaller).
    workers : int, optional
        Worker processes of the local Dask cluster (default: the usable CPU count, capped by
        the number of shards to write).  Each worker runs one thread.
    scheduler : str, optional
        Address of an existing Dask scheduler, e.g. ``tcp://host:8786`` (instead of a local cluster).
    client : distributed.Client, optional
        Use this client (not closed here); overrides ``workers`` and ``scheduler``.
    serial : bool
        Run every shard in this process, no Dask (debugging).
    image_dtype : {"uint8", "uint16", "float32"}
    overwrite : bool
        Regenerate every shard even if a valid one exists (and start a new manifest even if the
        existing one describes other parameters).
    progress : bool
        Progress bar over shards on stderr.
    virtual : bool
        When complete, (re)write ``virtual.h5`` mapping all shards' images as one virtual dataset.
    log : callable, optional
        ``log(message)`` for one-line status messages (resume decisions).

    Returns
    -------
    ShardRun

    Raises
    ------
    ParameterError
        Bad parameters, or ``out_dir`` holds a dataset made with other parameters (without
        ``overwrite``), or another run holds the directory lock.
    """

    say = log or (lambda message: None)
    # -- validate everything before touching the disk ----------------------
    _check_positive_int(n, "number of samples")
    _check_positive_int(shard_size, "shard size")
    if workers is not None:
        _check_positive_int(workers, "number of workers")
    if image_dtype not in IMAGE_DTYPES:
        raise ParameterError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
    if serial and (workers is not None or scheduler or client is not None):
        raise ParameterError("serial mode runs in this process; do not combine it with workers, a scheduler or a client")
    if scheduler is not None and workers is not None:
        raise ParameterError("give either --workers (local cluster) or --scheduler (existing cluster), not both")
    if scheduler is not None and not str(scheduler).strip():
        raise ParameterError("scheduler address is empty; use e.g. tcp://host:8786")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ParameterError(f"output {out_dir} is a file; sharded output needs a directory")
    if out_dir.suffix.lower() in (".h5", ".hdf5", ".json"):
        raise ParameterError(f"sharded output is a directory, got {out_dir} (drop the {out_dir.suffix} suffix)")
    for attr in ("kind", "class_names", "describe"):
        if not hasattr(sampler, attr):
            raise ParameterError(f"sampler {type(sampler).__name__} lacks the {attr!r} attribute of the sampler protocol")
    plan = plan_shards(int(n), int(shard_size))
    identity = _normalise({
        "kind": sampler.kind,
        "sampler": sampler.describe(),
        "seed": getattr(sampler, "seed", None),
        "n_samples": int(n),
        "shard_size": int(shard_size),
        "image_dtype": image_dtype,
    })
    mpath = out_dir / MANIFEST_NAME

    lock = _DirLock(out_dir) if out_dir.is_dir() else None
    try:
        old = _existing_manifest(mpath, identity, overwrite)
        old_records = {s["file"]: s for s in (old or {}).get("shards", []) if s.get("status") == "done"}
        entries: list[dict] = []
        tasks: list[tuple[Shard, bool]] = []
        run = ShardRun(manifest=mpath, n_samples=int(n), n_shards=len(plan))
        # -- check what is already there (reads only) --------------------------
        for shard in plan:
            entry = {"index": shard.index, "file": shard.file, "first_index": shard.first_index, "n": shard.n,
                     "seed": shard_seed_info(identity["seed"], shard), "status": "pending"}
            path = out_dir / shard.file
            if path.exists() and not overwrite:
                facts = None
                rec = old_records.get(shard.file)
                if rec and _same_range(rec, shard):
                    if rec.get("sha256") == file_sha256(path):
                        facts = {k: v for k, v in rec.items() if k not in entry or k == "status"}
                else:
                    facts = _adopt_shard(path, shard, identity)
                if facts is None and old is None:
                    raise ParameterError(
                        f"{path} exists but is not a shard of this dataset (and {out_dir} has no manifest); "
                        "use a new directory or pass --overwrite to replace it"
                    )
                if facts is not None:
                    facts.pop("n_written", None)
                    entry.update(facts)
                    entry["status"] = "done"
                    run.kept.append(shard.file)
                else:
                    run.corrupt.append(shard.file)
                    tasks.append((shard, True))
            else:
                tasks.append((shard, path.exists()))
            entries.append(entry)
        if run.kept or run.corrupt:
            say(f"resuming {out_dir}: {len(run.kept)} of {len(plan)} shards present and verified"
                + (f", {len(run.corrupt)} corrupt ({', '.join(run.corrupt[:5])}{'...' if len(run.corrupt) > 5 else ''}) will be regenerated" if run.corrupt else ""))
        created = (old or {}).get("created") if not overwrite else None
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "schema_version": MANIFEST_VERSION,
            "simgen_version": __version__,
            "created": created or _now(),
            "updated": None,
            "kind": identity["kind"],
            "sampler": identity["sampler"],
            "class_names": list(sampler.class_names),
            "seed": identity["seed"],
            "seeding": SEEDING_RULE,
            "n_samples": int(n),
            "shard_size": int(shard_size),
            "n_shards": len(plan),
            "image_dtype": image_dtype,
            "image_shape": None,
            "complete": False,
            "checksums": CHECKSUMS,
            "virtual": None,
            "totals": {},
            "shards": entries,
        }
        # -- run ---------------------------------------------------------------
        runner: contextlib.AbstractContextManager[Client | None]
        if serial or not tasks:
            runner = contextlib.nullcontext(None)
            run.mode = "serial" if tasks else "none"
        elif client is not None:
            runner = contextlib.nullcontext(client)
            run.mode = "dask"
        else:
            runner = dask_client(min(int(workers or _cpu_count()), len(tasks)) if not scheduler else None, scheduler)
            run.mode = "dask"
        # SIGTERM (timeout, batch schedulers) unwinds like an exception: Dask tasks are cancelled,
        # finished shards recorded in the manifest and the local cluster shut down.
        with sigterm_raises(), runner as dclient:
            if lock is None:
                try:
                    out_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise ParameterError(f"cannot create directory {out_dir}: {exc.strerror}") from None
                lock = _DirLock(out_dir)
            _remove_stale(out_dir, old, plan)
            _write_manifest(mpath, manifest)
            t0 = time.perf_counter()
            if tasks:
                if dclient is None:
                    results = _run_serial(tasks, out_dir, sampler, image_dtype)
                else:
                    results = _run_dask(dclient, tasks, out_dir.resolve(), sampler, image_dtype)
                try:
                    _collect(results, entries, out_dir, run, progress, identity["kind"], len(tasks), mpath, manifest)
                except BaseException:
                    results.close()  # cancels Dask tasks that have not finished
                    with contextlib.suppress(Exception):  # record what finished, then re-raise
                        _write_manifest(mpath, manifest)
                    raise
            run.seconds = time.perf_counter() - t0
            if virtual and all(e["status"] == "done" for e in entries):
                manifest["virtual"] = write_virtual_from(out_dir, manifest)
            _write_manifest(mpath, manifest)
        return run
    finally:
        if lock is not None:
            lock.release()


def _collect(results, entries, out_dir, run, progress, kind, total, mpath, manifest) -> None:
    """Record each finished shard in ``entries``; rewrite the manifest at most every second."""

    last = time.monotonic()
    for facts in track(results, total=total, description=f"{kind} shards", enabled=progress):
        k = int(facts.pop("index"))
        path = out_dir / entries[k]["file"]
        if not path.is_file():
            raise DataError(
                f"a worker wrote {entries[k]['file']} but it is not visible at {path}; the output "
                "directory must be on a filesystem shared by this machine and all Dask workers"
            )
        if facts.pop("n_written") != entries[k]["n"]:
            raise DataError(f"{path} holds the wrong number of samples")
        entries[k].update(facts)
        run.generated.append(entries[k]["file"])
        run.samples_generated += entries[k]["n"]
        if time.monotonic() - last >= _MANIFEST_EVERY_S:
            _write_manifest(mpath, manifest)
            last = time.monotonic()


def _same_range(rec: dict, shard: Shard) -> bool:
    return int(rec.get("first_index", -1)) == shard.first_index and int(rec.get("n", -1)) == shard.n


def _existing_manifest(mpath: Path, identity: dict, overwrite: bool) -> dict | None:
    if not mpath.exists():
        return None
    try:
        old = load_manifest(mpath)
    except SchemaError as exc:
        if overwrite:
            return None
        raise ParameterError(f"{exc}; pass --overwrite to start a new dataset in {mpath.parent}") from None
    diff = [k for k in IDENTITY_KEYS if _normalise(old.get(k)) != identity[k]]
    if diff and not overwrite:
        details = []
        for k in diff:
            if k == "sampler" and isinstance(old.get(k), dict):
                sub = _dict_diff(old[k], identity[k])
                details.append("sampler " + ", ".join(sub[:4]) + ("..." if len(sub) > 4 else ""))
            else:
                details.append(f"{k} {old.get(k)!r} -> {identity[k]!r}")
        raise ParameterError(
            f"{mpath.parent} already holds a dataset made with other parameters ({'; '.join(details)}); "
            "use a new directory or pass --overwrite to replace it"
        )
    return old


def _dict_diff(a, b, prefix: str = "") -> list[str]:
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            out += _dict_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')} {a!r} -> {b!r}"]


def _remove_stale(out_dir: Path, old: dict | None, plan: list[Shard]) -> None:
    """Delete temp files of killed runs and shards of a replaced manifest that the new plan lacks."""
    for pattern in (".shard-*.tmp", f".{MANIFEST_NAME}.*", f".{VIRTUAL_NAME}.*"):
        for p in out_dir.glob(pattern):
            with contextlib.suppress(OSError):
                p.unlink()
    keep = {s.file for s in plan}
    for s in (old or {}).get("shards", []):
        if s["file"] not in keep:
            with contextlib.suppress(OSError):
                (out_dir / s["file"]).unlink()
    with contextlib.suppress(OSError):
        (out_dir / VIRTUAL_NAME).unlink()


class _DirLock:
    """Exclusive, non-blocking ``flock`` on a directory (released automatically if the process dies)."""

    def __init__(self, directory: Path) -> None:
        self.fd: int | None = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise ParameterError(f"another simgen run is writing {directory}; wait for it or stop it first") from None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------
# virtual dataset
def write_virtual_from(out_dir: Path, manifest: dict) -> str | None:
    """Write ``out_dir/virtual.h5`` for a complete manifest dict; returns its name (None if no images)."""
    import h5py

    shards = manifest["shards"]
    first = out_dir / shards[0]["file"]
    arrays = []
    with h5py.File(first, "r") as f:
        for name in ("images", "labels/masks", "phase"):
            if name in f:
                arrays.append((name, f[name].shape[1:], f[name].dtype, f[name].fillvalue))
    if not any(a[0] == "images" for a in arrays):
        return None
    n = int(manifest["n_samples"])
    with atomic_path(out_dir / VIRTUAL_NAME, overwrite=True) as tmp:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
            f.attrs["schema"] = "simgen-virtual"
            f.attrs["manifest"] = MANIFEST_NAME
            f.attrs["n_samples"] = n
            f.attrs["note"] = "virtual view of the shards' arrays; tables live in the shards (use ShardedDataset)"
            for name, shape, dtype, fill in arrays:
                layout = h5py.VirtualLayout(shape=(n, *shape), dtype=dtype)
                for s in shards:
                    a = int(s["first_index"])
                    layout[a : a + int(s["n"])] = h5py.VirtualSource(s["file"], name, shape=(int(s["n"]), *shape), dtype=dtype)
                f.create_virtual_dataset(name, layout, fillvalue=fill)
    return VIRTUAL_NAME


def write_virtual(path: str | PathLike) -> Path:
    """(Re)write ``virtual.h5`` next to a complete manifest; returns its path."""
    mpath = manifest_path(path)
    manifest = load_manifest(mpath)
    if not manifest.get("complete"):
        raise DataError(f"{mpath} is incomplete; finish the run before building the virtual dataset")
    name = write_virtual_from(mpath.parent, manifest)
    if name is None:
        raise DataError(f"{mpath.parent} stores no images")
    return mpath.parent / name


# ---------------------------------------------------------------------------
# verification
@dataclass
class VerifyReport:
    """Result of :func:`verify_manifest`."""

    manifest: Path
    n_shards: int
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.missing or self.corrupt or self.pending)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["manifest"] = str(self.manifest)
        d["passed"] = self.passed
        return d


def verify_manifest(path: str | PathLike) -> VerifyReport:
    """Recompute every shard's file SHA-256 and compare it with the manifest.

    ``missing``: recorded as done but absent; ``corrupt``: checksum (or size) differs;
    ``pending``: never finished (interrupted run; re-run the command to complete it).
    """
    mpath = manifest_path(path)
    manifest = load_manifest(mpath)
    report = VerifyReport(manifest=mpath, n_shards=len(manifest["shards"]))
    for s in manifest["shards"]:
        p = mpath.parent / s["file"]
        if s.get("status") != "done":
            report.pending.append(s["file"])
        elif not p.is_file():
            report.missing.append(s["file"])
        elif p.stat().st_size != s.get("bytes", p.stat().st_size) or file_sha256(p) != s.get("sha256"):
            report.corrupt.append(s["file"])
        else:
            report.ok.append(s["file"])
    return report


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
