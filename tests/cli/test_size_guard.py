"""`--size` is checked before anything is allocated: a per-side limit and a memory estimate.

`simulate film --size 30000` allocated 3.7 GB before failing and `--size 10000000` ended in a
traceback; now both are one `Error:` line (exit 2) and no output file.
"""

from __future__ import annotations

import pytest
from clitools import assert_one_line_error, run

from simgen import runtime
from simgen.errors import ParameterError
from simgen.runtime import MAX_IMAGE_SIDE, available_memory, check_image_memory, image_memory

GIB = 2**30

# each simulate command with options small enough that only --size matters
COMMANDS = {
    "film": ["simulate", "film", "--n", 2, "--n-defects", "1", "--no-progress"],
    "thermal": ["simulate", "film", "--model", "thermal", "--n", 2, "--steps", 1, "--n-defects", "1", "--no-progress"],
    "tem": ["simulate", "tem", "--n", 2, "--density", "1", "--no-progress"],
    "video": ["simulate", "video", "--frames", 2, "--n-initial", 1, "--nucleation", 0, "--no-progress"],
    "filament": ["simulate", "filament", "--n", 1, "--frames", 5, "--filaments", 2, "--no-progress"],
}


@pytest.fixture
def little_memory(monkeypatch):
    """This machine has 300 MiB available (whatever it really has)."""
    monkeypatch.setattr(runtime, "available_memory", lambda: 300 * 2**20)


@pytest.fixture
def no_simulation(monkeypatch):
    """Building any sampler fails the test: refusals must come before any work."""

    def fail(*args, **kwargs):
        raise AssertionError("a sampler was built before the size was checked")

    for target in ("film.FilmSampler", "tem.TemSampler", "tem.VideoSampler", "tem.FilamentSampler"):
        monkeypatch.setattr(f"simgen.commands.{target}", fail)


@pytest.mark.parametrize("name", COMMANDS)
def test_absurd_size_is_one_line(tmp_path, no_simulation, name):
    out = tmp_path / "out.h5"
    # tem: a low density and 64 px rows keep the defect checks happy, so the size itself is what fails
    size = "10000000x64" if name == "tem" else "10000000"
    res = run(*COMMANDS[name], "--size", size, "-o", out)
    line = assert_one_line_error(res)
    if name != "video":  # video has no --density: the TEM density check refuses it first, also in one line
        assert f"at most {MAX_IMAGE_SIDE} px per side" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_size_beyond_memory_is_refused_before_work(tmp_path, little_memory, no_simulation, name):
    out = tmp_path / "out.h5"
    size = 4000 if name == "video" else 30000  # video: the TEM density check refuses 30000 already
    res = run(*COMMANDS[name], "--size", size, "-o", out)
    line = assert_one_line_error(res, f"--size {size}x{size}", "GiB of memory", "but 300 MiB is available")
    assert f"simulate {'film' if name == 'thermal' else name}" in line
    assert not out.exists()


def test_sizes_that_fit_still_run(tmp_path, little_memory):
    out = tmp_path / "ok.h5"
    res = run(*COMMANDS["film"], "--size", 48, "--margin", 4, "--box-size", 8, "-o", out)
    assert res.exit_code == 0, res.output
    res = run(*COMMANDS["tem"], "--size", "96x64", "-o", tmp_path / "wxh.h5")
    assert res.exit_code == 0, res.output


def test_local_workers_multiply_the_estimate(tmp_path, little_memory, no_simulation):
    # 2000² px x 24 B = 92 MiB per sample: fits in one process (300 MiB), not in four local Dask workers
    out = tmp_path / "shards"
    res = run(*COMMANDS["film"], "--n", 8, "--size", 2000, "--shard-size", 1, "--workers", 4, "-o", out)
    assert_one_line_error(res, "needs about 366 MiB of memory (4 processes)")
    assert not out.exists()


def test_estimate_and_available_memory(monkeypatch):
    assert image_memory((10_000_000, 10_000_000)) == 4 * 10**14  # exact, no overflow
    assert image_memory((100, 200), n_images=3, dtype="uint8", working_copies=2, extra_bytes=5) == 5 * 20000 + 5
    assert image_memory(10, dtype="float64", working_copies=1) == 2 * 800
    monkeypatch.setattr(runtime, "available_memory", lambda: GIB)
    assert check_image_memory((1000, 1000), working_copies=3) == 16 * 10**6
    with pytest.raises(ParameterError, match=r"needs about 1\.5 GiB of memory, but 1\.0 GiB"):
        check_image_memory((20000, 20000), what="x")
    assert check_image_memory((20000, 20000), processes=0) == 1_600_000_000  # remote workers: not checked here
    with pytest.raises(ParameterError, match="at most 65536 px per side"):
        check_image_memory((16, 65537), processes=0)
    with pytest.raises(ParameterError, match="at least 1 px"):
        check_image_memory((0, 5))
    monkeypatch.setattr(runtime, "available_memory", lambda: None)  # unknown: only the side limit applies
    assert check_image_memory((60000, 60000)) == 60000**2 * 4


def test_available_memory_without_psutil(monkeypatch):
    real = available_memory()
    assert real is not None and real > 0
    monkeypatch.setitem(__import__("sys").modules, "psutil", None)  # `import psutil` fails
    fallback = available_memory()
    assert fallback is not None and 0.5 * real < fallback < 2 * real  # /proc/meminfo MemAvailable


def test_augment_preview_size_is_checked_before_work(tmp_path, little_memory, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the sheet was built before the size was checked")

    monkeypatch.setattr("simgen.commands.augment.transform_sheet", fail)
    out = tmp_path / "sheet.png"
    assert_one_line_error(run("augment", "preview", "--spec", "GB", "--size", 10000000, "-o", out),
                          f"at most {MAX_IMAGE_SIDE} px per side")
    assert_one_line_error(run("augment", "preview", "--spec", "GB", "--size", 8000, "-o", out),
                          "but 300 MiB is available")
    assert not out.exists()
