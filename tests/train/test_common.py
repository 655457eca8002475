"""simgen.runtime, simgen.progress and simgen.train.engine: seeds, devices, threads, atomic checkpoints, run folders, early stopping, progress."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from simgen.errors import DataError, ParameterError
from simgen.progress import ProgressLog, format_duration
from simgen.runtime import (
    RunDir,
    default_threads,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    select_device,
    setup_threads,
)
from simgen.train.engine import EarlyStopping


def test_seed_everything_repeats_torch_numpy_and_random():
    import random

    seed_everything(3)
    a = (torch.rand(3), np.random.rand(2), random.random())
    seed_everything(3)
    b = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(ParameterError):
        seed_everything(-1)


def test_select_device_auto_and_errors(monkeypatch):
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert select_device(None) == select_device("")
    assert select_device("CPU").type == "cpu"
    with pytest.raises(ParameterError, match="unknown device"):
        select_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with pytest.raises(ParameterError, match="no CUDA"):
        select_device("cuda:0")
    with pytest.raises(ParameterError, match="no CUDA"):
        select_device("0")


def test_select_device_prefers_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto").type == "cuda"
    assert select_device("1") == torch.device("cuda:1")
    with pytest.raises(ParameterError, match="2 CUDA"):
        select_device("cuda:5")


def test_setup_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SIMGEN_THREADS", "1")
        assert default_threads() == 1
        assert setup_threads() == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
        with pytest.raises(ParameterError):
            setup_threads(0)
    finally:
        torch.set_num_threads(before)


def test_checkpoint_roundtrip_and_atomic_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(2)})
    assert load_checkpoint(path)["epoch"] == 1

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint survived intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_checkpoint(tmp_path / "bad.pt")


def test_run_dir_resume_and_overwrite(tmp_path):
    run = RunDir(tmp_path / "run", config={"lr": 0.1})
    assert json.loads((run.path / "config.json").read_text()) == {"lr": 0.1}
    assert run.resume_state() is None
    run.save({"epoch": 0}, best=True)
    run.save({"epoch": 1})
    assert load_checkpoint(run.best)["epoch"] == 0
    with pytest.raises(ParameterError, match="--resume"):
        RunDir(tmp_path / "run")
    resumed = RunDir(tmp_path / "run", resume=True)
    assert resumed.resume_state()["epoch"] == 1
    fresh = RunDir(tmp_path / "run", overwrite=True)
    assert not fresh.last.exists() and not fresh.best.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        RunDir(tmp_path / "file")


def test_early_stopping_max_min_and_state():
    s = EarlyStopping(patience=2, mode="max")
    assert s.step(0.5) and not s.should_stop
    assert s.step(0.6)
    assert not s.step(0.6) and not s.should_stop
    assert not s.step(0.55) and s.should_stop
    assert (s.best, s.best_epoch) == (0.6, 1)
    t = EarlyStopping(patience=2, mode="max")
    t.load_state_dict(s.state_dict())
    assert t.should_stop and t.best == 0.6
    m = EarlyStopping(patience=1, mode="min", min_delta=0.1)
    assert m.step(1.0) and not m.step(0.95) and m.should_stop  # 0.05 better is not enough
    assert not EarlyStopping(patience=0).should_stop
    assert not EarlyStopping().step(float("nan"))
    with pytest.raises(ParameterError):
        EarlyStopping(mode="up")


def test_progress_log_writes_jsonl_and_lines(tmp_path):
    buf = io.StringIO()
    log = ProgressLog(tmp_path / "m.jsonl", total_epochs=3, stream=buf, prefix="[t] ")
    log.epoch(0, loss=np.float32(1.5), f1=0.25)
    log.epoch(1, loss=1.0, f1=0.5)
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["loss"] == 1.5
    text = buf.getvalue()
    assert "[t] epoch 1/3" in text and "f1 0.5" in text and "eta" in text
    quiet = io.StringIO()
    ProgressLog(None, enabled=False, stream=quiet).epoch(0, x=1)
    assert quiet.getvalue() == ""


def test_format_duration():
    assert format_duration(4.25) == "4.2s"
    assert format_duration(65) == "1m05s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(float("inf")) == "?"


class _Payload:
    """What a crafted checkpoint smuggles in: unpickling it runs ``os.system``-like code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("loader", ["runtime", "yolo"])
def test_a_crafted_checkpoint_is_refused_before_any_code_runs(tmp_path, loader):
    import torch

    from simgen.train.yolo.checkpoint import load_yolo_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "epoch": 1}, path)
    load = load_checkpoint if loader == "runtime" else load_yolo_checkpoint
    with pytest.raises(DataError, match="refusing checkpoint"):
        load(path)
    assert not marker.exists()


def test_yolo_policy_accepts_network_classes_only():
    from simgen.train.yolo.checkpoint import allow_yolo_global

    assert allow_yolo_global("torch.nn.modules.activation.SiLU") is not None
    assert allow_yolo_global("ultralytics.nn.tasks.DetectionModel") is not None
    assert allow_yolo_global("os.system") is None
    assert allow_yolo_global("builtins.eval") is None
    assert allow_yolo_global("torch.nn.modules.module.register_module_forward_hook") is None  # a function
