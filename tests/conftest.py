"""Test-wide settings: one thread per library, offline, headless, real data located."""

import os

# Must happen before numba/torch/jax are imported anywhere.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "SIMGEN_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI must not go red by chance: property tests replay the same examples on every
# run. HYPOTHESIS_PROFILE=explore draws fresh examples when hunting for bugs.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "dev"


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """``../shared/realdata/dev``; tests using it are skipped cleanly when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    """Tests that load OpenVINO run last.

    OpenVINO's runtime keeps its own thread pool in the process; in the full suite the pytest
    process crashed (segfault) in a later test that trains torch models in-process, while every
    file alone and ``tests/train`` on its own passed.  The CLI runs each command in its own
    process, so users do not mix the two; the suite now does not either.
    """
    items.sort(key=lambda item: "openvino" in item.nodeid)
