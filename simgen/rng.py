"""Seeded, order-independent random streams.

Every random sample in simgen draws from its own generator derived from
``(master_seed, sample_index)``.  We build it with
``SeedSequence(master_seed, spawn_key=(index,))``, which is exactly the
``index``-th child of ``SeedSequence(master_seed).spawn(...)`` but can be made
without spawning the preceding children.  Output therefore never depends on
worker count, sharding or the order in which samples are produced.  Global
NumPy random state is never touched.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["check_seed", "sample_seedseq", "sample_rng", "child_rng"]


def check_seed(seed) -> int:
    """Validate a master seed (non-negative integer) and return it as ``int``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    value = int(seed)
    return value


def sample_seedseq(seed: int, index: int, *path: int) -> np.random.SeedSequence:
    """SeedSequence of sample ``index`` (optionally a sub-stream ``path``) under ``seed``.

    Parameters
    ----------
    seed : int
        Master seed (>= 0).
    index : int
        Sample index (>= 0).
    *path : int
        Optional further keys, e.g. ``(shard, ...)`` or a purpose tag, so one sample can
        own several independent streams.
    """
    if index < 0:
        raise ParameterError(f"sample index must be >= 0, got {index}")
    return np.random.SeedSequence(check_seed(seed), spawn_key=(int(index), *map(int, path)))


def sample_rng(seed: int, index: int, *path: int) -> np.random.Generator:
    """``numpy.random.Generator`` (PCG64) for sample ``index`` under master ``seed``."""
    return np.random.Generator(np.random.PCG64(sample_seedseq(seed, index, *path)))


def child_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else a Generator seeded with it.

    ``None`` is rejected: silent unseeded randomness would break reproducibility.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ParameterError("a seed or numpy Generator is required (got None)")
    return np.random.default_rng(check_seed(rng))
