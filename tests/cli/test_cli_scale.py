import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.shards.read import ShardedDataset
from simgen.datasets.shards.write import load_manifest, verify_manifest
from simgen.simulate.film import FilmConfig, FilmSampler

TINY = ["--size", 32, "--n-defects", "1-3", "--min-separation", 6, "--margin", 4, "--box-size", 8, "--no-progress"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and "Traceback" not in res.output, res.output
    return lines


def tiny_sampler(seed=0):
    return FilmSampler(FilmConfig(size=32, n_defects=(1, 3), min_separation=6, margin=4, box_size=8), seed=seed)


def test_sharded_serial_info_verify(tmp_path):
    out = tmp_path / "set"
    res = run("simulate", "film", "--n", 20, "--seed", 4, *TINY, "--shard-size", 6, "--serial", "-o", out)
    assert res.exit_code == 0, res.output
    assert "20 film samples in 4 shards (4 written, 0 kept" in res.output
    with ShardedDataset(out) as ds:
        assert ds.n == 20 and ds.attrs["seed"] == 4 and ds.image_shape == (32, 32)
    for target in (out, out / "manifest.json"):
        res = run("info", target, "--json")
        assert res.exit_code == 0, res.output
        info = json.loads(res.output)
        assert info["n_samples"] == 20 and info["n_shards"] == 4 and info["complete"] and info["tables"]["boxes"]["rows"] > 0
    res = run("info", out)
    assert "table points" in res.output and "shard_size" in res.output
    res = run("verify", out / "manifest.json")
    assert res.exit_code == 0 and "4 of 4 shards ok" in res.output
    # damage one shard, delete another: verify names both and exits 2
    with open(out / "shard-00001.h5", "r+b") as fh:
        fh.seek(3000)
        fh.write(b"\x00garbage\x00")
    (out / "shard-00003.h5").unlink()
    lines = _one_line_error(run("verify", out))
    assert any(ln.startswith("corrupt") and "shard-00001.h5" in ln for ln in lines)
    assert any(ln.startswith("missing") and "shard-00003.h5" in ln for ln in lines)
    res = run("verify", out, "--json")
    assert res.exit_code == 2 and '"corrupt": [' in res.output
    # the same command repairs exactly those two
    res = run("simulate", "film", "--n", 20, "--seed", 4, *TINY, "--shard-size", 6, "--serial", "-o", out)
    assert res.exit_code == 0 and "2 written (1 replacing corrupt ones), 2 kept" in res.output, res.output
    assert run("verify", out).exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", 2], "need --shard-size"),
        (["--serial"], "need --shard-size"),
        (["--shard-size", 5, "--serial", "--workers", 2], "--serial"),
        (["--shard-size", 5, "--workers", 2, "--scheduler", "tcp://127.0.0.1:1"], "not both"),
        (["--shard-size", 0], "shard-size"),
        (["--shard-size", 5, "--workers", 0], "workers"),
    ],
)
def test_bad_shard_options(tmp_path, args, message):
    out = tmp_path / "set"
    lines = _one_line_error(run("simulate", "film", "--n", 10, *TINY, "-o", out, *args))
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_sharded_output_rules(tmp_path):
    lines = _one_line_error(run("simulate", "film", "--n", 4, *TINY, "--shard-size", 2, "--serial", "-o", tmp_path / "x.h5"))
    assert "directory" in lines[0] and not (tmp_path / "x.h5").exists()
    out = tmp_path / "set"
    assert run("simulate", "film", "--n", 4, *TINY, "--shard-size", 2, "--serial", "-o", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    lines = _one_line_error(run("simulate", "film", "--n", 4, *TINY, "--seed", 9, "--shard-size", 2, "--serial", "-o", out))
    assert len(lines) == 1 and "other parameters" in lines[0] and "seed 0 -> 9" in lines[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = run("simulate", "film", "--n", 4, *TINY, "--seed", 9, "--shard-size", 2, "--serial", "--overwrite", "-o", out)
    assert res.exit_code == 0 and load_manifest(out)["seed"] == 9
    lines = _one_line_error(run("verify", tmp_path / "nothing.h5"))
    assert "not a shard manifest" in lines[0]


def _wait_for(predicate, timeout, what):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _group_alive(pgid):
    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def test_kill_9_then_resume(tmp_path):
    """kill -9 a real `python -m simgen` Dask run mid-shard; the same command completes only the rest."""
    n, k = 600, 50  # 12 shards of 32x32 images: ~0.1 s each with one worker
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "simgen", "simulate", "film", "--n", str(n), "--seed", "3",
           *map(str, TINY), "--shard-size", str(k), "--workers", "1", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        finals = lambda: sorted(out.glob("shard-*.h5")) if out.is_dir() else []  # noqa: E731
        temps = lambda: list(out.glob(".shard-*.tmp")) if out.is_dir() else []  # noqa: E731
        _wait_for(lambda: finals() and temps() or proc.poll() is not None, 60, "the first finished shard")
        assert proc.poll() is None, proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI process, the local scheduler and the worker
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
    _wait_for(lambda: not _group_alive(proc.pid), 10, "the killed process group to exit")
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finals()}
    assert 1 <= len(done) < n // k, "the kill should land mid-run"
    for name in done:  # nothing partial under a final name
        with open_dataset(out / name) as ds:
            assert ds.n == k
    load_manifest(out)  # the manifest is always a complete JSON document

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} of {n // k} shards present and verified" in res.stderr
    assert f"{n // k - len(done)} written, {len(done)} kept" in res.stdout
    for name, stat in done.items():  # completed shards were not rewritten
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat
    assert not list(out.glob(".shard-*")) and verify_manifest(out).passed

    # identical to an uninterrupted run (one file, in this process)
    ref = write_dataset(tmp_path / "ref.h5", tiny_sampler(seed=3), n)
    with ShardedDataset(out) as a, open_dataset(ref) as b:
        np.testing.assert_array_equal(a.images[()], b.images[()])
        assert a.table("boxes").equals(b.table("boxes")) and a.table("points").equals(b.table("points"))
