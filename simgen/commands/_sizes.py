"""Size and memory guard of the ``simulate`` commands (not a command module itself).

Each simulator's peak working set per image, measured as peak RSS growth of one sample at
1024² and 2048² px (``ru_maxrss``, one thread) and given here in float32 image copies with
about a third of headroom:

============================  ===============  ===================
simulator                     measured (B/px)  budget (B/px)
============================  ===============  ===================
film, random model (numba)    16               24  (6 copies)
film, thermal model           72               96  (24 copies)
film-holdout (relax + Jones)  102              128 (32 copies)
tem                           36               48  (12 copies)
video (per frame + background) 32              48  (12 copies)
filament (6 frames, 22 pairs) 196              258 (frames x 12 + 120 + pairs x 3)
``--spec`` artifact chain     --               +16 (4 copies)
============================  ===============  ===================

Sharded runs on a local Dask cluster hold one sample per worker process.
"""

from __future__ import annotations

import os

from simgen.runtime import check_image_memory

__all__ = ["FLOAT32_COPIES", "SPEC_COPIES", "guard_size", "local_processes"]

#: Peak float32 image copies per sample, by simulator (see the module docstring).
FLOAT32_COPIES = {"film-random": 6, "film-thermal": 24, "film-holdout": 32, "tem": 12, "video": 12, "filament": 30}
#: Extra copies the ``--spec`` artifact chain makes.
SPEC_COPIES = 4


def local_processes(shard, n: int) -> int:
    """Processes on this machine that each hold a sample: 1, the local Dask workers, or 0 for a
    remote ``--scheduler`` (this machine's memory says nothing about its workers)."""
    if shard is None or shard.serial:
        return 1
    if shard.scheduler:
        return 0
    workers = shard.workers
    if workers is None:  # the local cluster's default: one worker per CPU
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(int(workers), -(-int(n) // int(shard.shard_size))))


def guard_size(shape, *, what: str, copies: float, spec: str = "none", n_images: float = 0,
               extra_bytes: int = 0, shard=None, n: int = 1) -> int:
    """Refuse ``--size`` before any work: over the per-side limit, or more memory than is available.

    ``copies`` float32 image-sized arrays per sample (plus :data:`SPEC_COPIES` with an artifact
    spec), ``n_images`` more held at once, ``extra_bytes`` besides; times the local processes.
    Returns the estimate in bytes; raises :class:`~simgen.errors.ParameterError`.
    """
    copies = copies + (SPEC_COPIES if spec not in (None, "", "none") else 0)
    return check_image_memory(shape, n_images=n_images, dtype="float32", working_copies=copies,
                              extra_bytes=extra_bytes, processes=local_processes(shard, n), what=what)
