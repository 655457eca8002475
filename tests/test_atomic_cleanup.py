"""Clean failures on write: no temp file survives a failed write, SIGTERM, or a killed run.

A full disk used to crash the interpreter (exit 139, HDF5 flushing a broken file at exit) and left
its temp file; SIGTERM left its temp file and the next run did not remove it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen import atomic
from simgen.atomic import Terminated, atomic_path, make_temp, sigterm_raises, sweep_stale_temps
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.shards.write import generate_sharded, load_manifest, verify_manifest

REPO = Path(__file__).resolve().parents[1]
#: A film run that starts fast (no numba compile) with tiny images.
FILM = ["simulate", "film", "--backend", "numpy", "--size", "32", "--n-defects", "1", "--margin", "4",
        "--box-size", "4", "--no-progress"]


class Sampler:
    """Tiny sampler: sample i is a 16x16 ramp; raises at ``fail_at``."""

    kind = "test"
    class_names = ["a"]
    seed = 0

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at

    def describe(self):
        return {"sampler": "ramp"}

    def __call__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"sampler broke at {i}")
        image = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16) * (i % 7) / 7
        return {"image": image, "boxes": {"x0": [1.0], "y0": [1.0], "x1": [5.0], "y1": [5.0], "class": [0]}}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- failed writes -------------------------------------------------------------------
def test_full_file_system_is_one_line_and_leaves_nothing(tmp_path):
    """A real HDF5 write failure (file size limit: EFBIG, the same path as ENOSPC) in a real CLI run:
    one `Error:` line, exit 2, no temp file, no output, no crash at exit."""
    out = tmp_path / "full.h5"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000)); "
            "from simgen.cli import main; main(sys.argv[1:])")
    res = subprocess.run([sys.executable, "-c", code, *FILM, "--n", "3000", "-o", str(out)], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])  # was -11 / 139 (segfault)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: File too large"), res.stderr[-2000:]
    assert str(out) in lines[0] and "partial file was removed" in lines[0]
    assert not out.exists() and leftovers(tmp_path) == []


def test_enospc_from_h5py_is_reported_and_cleaned(tmp_path, monkeypatch):
    """ENOSPC raised by h5py mid-write: an OSError with errno ENOSPC naming the output, temp file gone."""
    real = h5py.Dataset.__setitem__
    calls = []

    def full_disk(self, key, value):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28)")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_disk)
    out = tmp_path / "out.h5"
    with pytest.raises(OSError) as info:
        write_dataset(out, Sampler(), 20)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    assert "No space left on device" in str(info.value)
    assert not out.exists() and leftovers(tmp_path) == []

    res = run(*FILM, "--n", 20, "-o", out)  # the CLI says it in one line
    assert_one_line_error(res, "No space left on device", str(out))
    assert not out.exists() and leftovers(tmp_path) == []


def test_sampler_error_propagates_and_removes_temp(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="sampler broke at 3"):
        write_dataset(out, Sampler(fail_at=3), 10)
    assert not out.exists() and leftovers(tmp_path) == []


# -- SIGTERM ---------------------------------------------------------------------------
def test_sigterm_mid_write_removes_temp_file(tmp_path):
    """`timeout`/batch schedulers send SIGTERM: the run exits 143 and leaves no temp file."""
    out = tmp_path / "big.h5"
    proc = subprocess.Popen([sys.executable, "-m", "simgen", *FILM, "--n", "1000000", "-o", str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None and leftovers(tmp_path), "the writer never opened its temp file"
        time.sleep(0.3)  # mid-write
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert rc == 143, (rc, err[-2000:])  # was -15 with the temp file left behind
    assert "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_sigterm_guard_raises_and_restores_the_handler():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(Terminated) as info:
        with sigterm_raises(), sigterm_raises():  # nested uses share one installation
            assert signal.getsignal(signal.SIGTERM) is atomic._raise_terminated
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
    assert info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def own(signum, frame):  # an application's own handler is left alone
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with sigterm_raises():
            assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_swallowed_sigterm_is_raised_again(tmp_path):
    """A SIGTERM whose exception was lost (it landed in a finalizer) stops the writer at its next sample."""
    out = tmp_path / "out.h5"
    with pytest.raises(Terminated):
        with DatasetWriter(out, kind="test") as w:
            w.append(np.zeros((4, 4), np.float32))
            with contextlib.suppress(Terminated):  # a finalizer swallows what the handler raised
                atomic._raise_terminated(signal.SIGTERM, None)
            w.append(np.zeros((4, 4), np.float32))
    assert not out.exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


class SigtermAt(Sampler):
    """Sends this process SIGTERM while drawing sample ``at`` (as `timeout` would)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def __call__(self, i):
        if i == self.at:
            assert signal.getsignal(signal.SIGTERM) is atomic._raise_terminated, "no SIGTERM guard: would kill pytest"
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        return super().__call__(i)


def test_sigterm_during_a_sharded_run_records_finished_shards(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(Terminated):
        generate_sharded(out, SigtermAt(7), 12, 3, serial=True)
    manifest = load_manifest(out)
    assert [s["status"] for s in manifest["shards"]] == ["done", "done", "pending", "pending"]
    assert not list(out.glob(".*")) and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    run_ = generate_sharded(out, Sampler(), 12, 3, serial=True)  # the same command resumes
    assert len(run_.kept) == 2 and len(run_.generated) == 2 and verify_manifest(out).passed


# -- stale temp files of killed runs ---------------------------------------------------
def test_stale_temp_files_of_the_same_output_are_swept(tmp_path):
    out = tmp_path / "out.h5"
    mine = make_temp(out)  # .out.h5.<host>-<pid>.<random>.tmp: a live writer (this process)
    host = atomic._host()
    assert mine.name.startswith(f".out.h5.{host}-{os.getpid()}.") and mine.name.endswith(".tmp")
    dead = _dead_pid()
    old = time.time() - 2 * 86400

    def temp(name, age=None):
        p = tmp_path / name
        p.write_bytes(b"partial")
        if age is not None:
            os.utime(p, (age, age))
        return p

    stale = [
        temp(f".out.h5.{host}-{dead}.k3j4h5g6.tmp"),  # this host, process gone
        temp(f".out.h5.{dead}.7f3a2b.tmp"),  # an earlier simgen's name, process gone
        temp(f".out.h5.otherhost-{dead}.ab12cd34.tmp", age=old),  # another host, untouched for two days
        temp(".out.h5.q1w2e3r4.tmp.h5", age=old),  # an older atomic write without a PID, two days old
    ]
    keep = [
        mine,
        temp(f".out.h5.otherhost-{dead}.zz99yy88.tmp"),  # another host, recent: its owner may be alive
        temp(".out.h5.a1s2d3f4.tmp.h5"),  # no PID, recent
        temp(f".other.h5.{host}-{dead}.k3j4h5g6.tmp"),  # another output's
        temp(f".out.h5.x.h5.{host}-{dead}.k3j4h5g6.tmp"),  # the output "out.h5.x.h5"'s
        temp(f"out.h5.{host}-{dead}.k3j4h5g6.tmp"),  # not hidden: not a temp name
    ]
    write_dataset(out, Sampler(), 2)
    assert out.exists()
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


def test_atomic_path_and_dir_sweep_too(tmp_path):
    dead, host = _dead_pid(), atomic._host()
    stale_file = tmp_path / f".m.json.{host}-{dead}.abcdefgh.tmp.json"
    stale_file.write_text("{")
    stale_dir = tmp_path / f".folder.{host}-{dead}.abcdefgh.tmp"
    (stale_dir / "images").mkdir(parents=True)
    (stale_dir / "images" / "x.png").write_bytes(b"x")
    with atomic_path(tmp_path / "m.json") as tmp:
        tmp.write_text("{}")
    assert not stale_file.exists() and (tmp_path / "m.json").read_text() == "{}"
    assert sweep_stale_temps(tmp_path / "folder") == [stale_dir] and not stale_dir.exists()
    assert leftovers(tmp_path) == []


def test_writers_in_a_loop_list_the_folder_once(tmp_path, monkeypatch):
    listed = []
    real = os.scandir
    monkeypatch.setattr(atomic.os, "scandir", lambda p: listed.append(Path(p)) or real(p))
    for _ in range(3):  # e.g. a manifest rewritten every second
        with atomic_path(tmp_path / "manifest.json", overwrite=True) as tmp:
            tmp.write_text("{}")
    assert listed == [tmp_path]
    with atomic.atomic_dir(tmp_path / "export") as folder:  # files written inside a fresh temp folder
        for i in range(3):
            with atomic_path(folder / f"{i}.txt") as tmp:
                tmp.write_text("x")
    assert listed == [tmp_path, tmp_path] and sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "0.txt", "1.txt", "2.txt"]
