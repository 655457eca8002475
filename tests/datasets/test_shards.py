import json
import os
import pickle

import h5py
import numpy as np
import pytest

from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.shards.read import ShardedDataset, open_any, summarize_manifest
from simgen.datasets.shards.write import (
    MANIFEST_SCHEMA,
    dask_client,
    file_sha256,
    generate_sharded,
    images_sha256,
    load_manifest,
    plan_shards,
    verify_manifest,
    write_virtual,
)
from simgen.errors import DataError, ParameterError, SchemaError
from simgen.simulate.film import FilmConfig, FilmSampler

N, K = 26, 8  # 4 shards: 8, 8, 8, 2


def sampler(seed=7, **kw):
    cfg = dict(size=32, n_defects=(1, 3), min_separation=6, margin=4, box_size=8)
    cfg.update(kw)
    return FilmSampler(FilmConfig(**cfg), seed=seed)


@pytest.fixture(scope="module")
def client():
    """One 2-worker local Dask cluster for the whole module (cluster start costs ~1-2 s)."""
    with dask_client(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def serial_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "set"
    generate_sharded(out, sampler(), N, K, serial=True)
    return out


def _arrays(path):
    with ShardedDataset(path) as ds:
        images = np.stack([ds.image(i, as_float=False) for i in range(ds.n)])
        return images, ds.table("points"), ds.table("boxes")


def _stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_plan_shards():
    plan = plan_shards(N, K)
    assert [(s.first_index, s.n) for s in plan] == [(0, 8), (8, 8), (16, 8), (24, 2)]
    assert [s.file for s in plan] == [f"shard-0000{k}.h5" for k in range(4)]
    assert len(plan_shards(5, 100)) == 1 and plan_shards(5, 100)[0].n == 5
    assert plan_shards(200_001, 1)[-1].file == "shard-200000.h5"
    for bad in ((0, 5), (5, 0), (5, 1.5), (True, 2)):
        with pytest.raises(ParameterError):
            plan_shards(*bad)


def test_manifest_and_shards(serial_set):
    m = load_manifest(serial_set)
    assert m["schema"] == MANIFEST_SCHEMA and m["schema_version"] == 1 and m["complete"]
    assert m["seed"] == 7 and m["n_samples"] == N and m["shard_size"] == K and m["n_shards"] == 4
    assert m["sampler"] == json.loads(json.dumps(sampler().describe()))
    assert m["class_names"] == ["defect"] and m["image_shape"] == [32, 32]  # films: one class by default
    total_rows = 0
    for s in m["shards"]:
        path = serial_set / s["file"]
        assert s["status"] == "done" and s["sha256"] == file_sha256(path) and s["bytes"] == path.stat().st_size
        assert s["images_sha256"] == images_sha256(path)
        assert s["seed"] == {"entropy": 7, "spawn_key_start": s["first_index"], "spawn_key_stop": s["first_index"] + s["n"]}
        with open_dataset(path) as ds:
            assert ds.n == s["n"] and ds.attrs["first_index"] == s["first_index"] and ds.attrs["seed"] == 7
        total_rows += s["rows"]["points"]
    assert m["totals"]["rows"]["points"] == total_rows and m["totals"]["samples_done"] == N
    assert not list(serial_set.glob(".*.tmp*"))


def test_sharded_equals_single_file(serial_set, tmp_path):
    single = write_dataset(tmp_path / "one.h5", sampler(), N)
    images, points, boxes = _arrays(serial_set)
    with open_dataset(single) as ds:
        np.testing.assert_array_equal(images, ds.images[()])
        assert points.equals(ds.table("points")) and boxes.equals(ds.table("boxes"))
        with ShardedDataset(serial_set / "manifest.json") as sd:
            for i in (0, 7, 8, 25, -1):  # across shard boundaries, negative index
                np.testing.assert_array_equal(sd.image(i), ds.image(i))
                assert sd.rows("boxes", i).equals(ds.rows("boxes", i))
                assert sd.provenance(i) == ds.provenance(i)
            np.testing.assert_array_equal(sd.images[()], images)  # virtual.h5
            assert sd.locate(17) == (2, 1) and sd.name(17) == "000017"
            with pytest.raises(IndexError):
                sd.image(N)
            clone = pickle.loads(pickle.dumps(sd))
            np.testing.assert_array_equal(clone.image(9), sd.image(9))
            clone.close()


def test_worker_count_independent(serial_set, client, tmp_path):
    """Serial, 1 local worker and 2 workers give identical image arrays and tables."""
    one = generate_sharded(tmp_path / "w1", sampler(), N, K, workers=1)
    two = generate_sharded(tmp_path / "w2", sampler(), N, K, client=client)
    assert one.mode == two.mode == "dask" and sorted(two.generated) == sorted(one.generated)
    ref = _arrays(serial_set)
    for out in (tmp_path / "w1", tmp_path / "w2"):
        got = _arrays(out)
        np.testing.assert_array_equal(got[0], ref[0])
        assert got[1].equals(ref[1]) and got[2].equals(ref[2])
        digests = [s["images_sha256"] for s in load_manifest(out)["shards"]]
        assert digests == [s["images_sha256"] for s in load_manifest(serial_set)["shards"]]
    # an existing cluster by address (the --scheduler path)
    three = generate_sharded(tmp_path / "w3", sampler(), N, K, scheduler=client.scheduler.address)
    assert three.mode == "dask" and len(three.generated) == 4
    np.testing.assert_array_equal(_arrays(tmp_path / "w3")[0], ref[0])


def test_worker_error_propagates(client, tmp_path):
    crowded = sampler(n_defects=(30, 30), min_separation=10)  # cannot be placed: fails inside the worker
    with pytest.raises(ParameterError, match="cannot place"):
        generate_sharded(tmp_path / "bad", crowded, 6, 3, client=client)
    m = load_manifest(tmp_path / "bad")
    assert not m["complete"] and not list((tmp_path / "bad").glob("shard-*.h5"))


def test_resume_keeps_good_and_regenerates_corrupt_and_missing(serial_set, tmp_path):
    out = tmp_path / "r"
    generate_sharded(out, sampler(), N, K, serial=True)
    before = {p.name: _stat(p) for p in out.glob("shard-*.h5")}
    with open(out / "shard-00001.h5", "r+b") as fh:  # flip one byte
        fh.seek(4000)
        byte = fh.read(1)
        fh.seek(4000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    (out / "shard-00002.h5").unlink()
    (out / ".shard-00003.h5.999.abc.tmp").write_bytes(b"partial")  # left by a killed run
    report = verify_manifest(out)
    assert report.missing == ["shard-00002.h5"] and report.corrupt == ["shard-00001.h5"] and not report.passed
    logs = []
    run = generate_sharded(out, sampler(), N, K, serial=True, log=logs.append)
    assert sorted(run.generated) == ["shard-00001.h5", "shard-00002.h5"] and run.corrupt == ["shard-00001.h5"]
    assert sorted(run.kept) == ["shard-00000.h5", "shard-00003.h5"] and "2 of 4" in logs[0]
    for name in run.kept:
        assert _stat(out / name) == before[name]
    assert verify_manifest(out).passed and not list(out.glob(".shard-*"))
    np.testing.assert_array_equal(_arrays(out)[0], _arrays(serial_set)[0])
    # nothing left to do: nothing is rewritten
    again = generate_sharded(out, sampler(), N, K, serial=True)
    assert again.generated == [] and again.mode == "none"


def test_unrecorded_shard_is_adopted(tmp_path):
    """A shard renamed into place just before a kill (manifest not yet updated) is verified and kept."""
    out = tmp_path / "a"
    generate_sharded(out, sampler(), N, K, serial=True)
    m = json.loads((out / "manifest.json").read_text())
    for s in m["shards"][1:]:
        for key in ("sha256", "images_sha256", "bytes", "rows"):
            s.pop(key)
        s["status"] = "pending"
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "shard-00003.h5").unlink()
    kept = _stat(out / "shard-00002.h5")
    run = generate_sharded(out, sampler(), N, K, serial=True)
    assert run.generated == ["shard-00003.h5"] and _stat(out / "shard-00002.h5") == kept
    assert verify_manifest(out).passed


def test_parameter_mismatch(serial_set, tmp_path):
    out = tmp_path / "p"
    generate_sharded(out, sampler(), N, K, serial=True)
    before = (out / "manifest.json").read_bytes()
    for s, n, k, kw in ((sampler(seed=8), N, K, {}), (sampler(size=40), N, K, {}), (sampler(), N + 1, K, {}),
                        (sampler(), N, K + 1, {}), (sampler(), N, K, {"image_dtype": "uint16"})):
        with pytest.raises(ParameterError, match="other parameters"):
            generate_sharded(out, s, n, k, serial=True, **kw)
    assert (out / "manifest.json").read_bytes() == before
    run = generate_sharded(out, sampler(seed=8), N, 13, serial=True, overwrite=True)
    assert len(run.generated) == 2 and sorted(p.name for p in out.glob("shard-*.h5")) == ["shard-00000.h5", "shard-00001.h5"]
    assert load_manifest(out)["seed"] == 8 and verify_manifest(out).passed


def test_bad_parameters_create_nothing(tmp_path):
    out = tmp_path / "nothing"
    for kw in ({"n": 0}, {"shard_size": 0}, {"workers": 0}, {"serial": True, "workers": 2},
               {"workers": 2, "scheduler": "tcp://x:1"}, {"image_dtype": "int8"}):
        args = {"n": N, "shard_size": K, **kw}
        with pytest.raises(ParameterError):
            generate_sharded(out, sampler(), args.pop("n"), args.pop("shard_size"), **args)
    with pytest.raises(ParameterError, match="directory"):
        generate_sharded(tmp_path / "x.h5", sampler(), N, K, serial=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ParameterError, match="is a file"):
        generate_sharded(tmp_path / "file", sampler(), N, K, serial=True)
    assert not out.exists() and not (tmp_path / "x.h5").exists()
    # a foreign shard-named file in a directory without a manifest is not replaced
    out.mkdir()
    (out / "shard-00000.h5").write_bytes(b"mine")
    with pytest.raises(ParameterError, match="not a shard"):
        generate_sharded(out, sampler(), N, K, serial=True)
    assert (out / "shard-00000.h5").read_bytes() == b"mine"


def test_reader_errors(serial_set, tmp_path):
    with pytest.raises(SchemaError):
        load_manifest(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(SchemaError, match="not a simgen shard manifest"):
        ShardedDataset(tmp_path / "bad.json")
    m = json.loads((serial_set / "manifest.json").read_text())
    d = tmp_path / "copy"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="missing shard"):
        ShardedDataset(d)
    m["shards"][2]["status"] = "pending"
    m["complete"] = False
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="incomplete"):
        ShardedDataset(d)
    assert verify_manifest(d).pending == ["shard-00002.h5"]
    s = summarize_manifest(d)
    assert s["n_samples"] == N and not s["complete"]
    with open_any(serial_set) as ds:
        assert isinstance(ds, ShardedDataset) and ds.summary()["complete"]


def test_virtual_file_is_relative(serial_set, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(serial_set, moved)
    with h5py.File(moved / "virtual.h5", "r") as f:
        assert f["images"].is_virtual
        np.testing.assert_array_equal(f["images"][()], _arrays(serial_set)[0])
    (moved / "virtual.h5").unlink()
    assert write_virtual(moved) == moved / "virtual.h5"
    with ShardedDataset(moved) as ds:
        np.testing.assert_array_equal(ds.images[3:9], _arrays(serial_set)[0][3:9])


def test_concurrent_run_is_refused(tmp_path):
    from simgen.datasets.shards.write import _DirLock

    out = tmp_path / "locked"
    out.mkdir()
    lock = _DirLock(out)  # another run holds the directory
    try:
        with pytest.raises(ParameterError, match="another simgen run"):
            generate_sharded(out, sampler(), N, K, serial=True)
        assert not any(out.iterdir())
    finally:
        lock.release()
    assert len(generate_sharded(out, sampler(), N, K, serial=True).generated) == 4
