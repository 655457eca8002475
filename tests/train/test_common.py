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
    checkpoint_globals,
    default_threads,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    select_device,
    setup_threads,
)
from simgen.train.engine import (
    EarlyStopping,
    GlobalRNG,
    capture_state,
    fit,
    fit_steps,
    load_trained,
    open_run,
    restore_state,
    resumed_config,
)


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


def test_checkpoints_hold_plain_data_only(tmp_path):
    """NumPy values are stored as tensors / Python numbers; anything needing unpickling is refused."""
    path = tmp_path / "ck.pt"
    model = torch.nn.BatchNorm1d(3)
    save_checkpoint(path, {"a": np.arange(4, dtype=np.uint8), "n": np.int64(3), "f": [np.float32(0.5), (np.bool_(True),)],
                           "model": model.state_dict()})
    assert checkpoint_globals(path) == []
    state = load_checkpoint(path)
    assert torch.equal(state["a"], torch.arange(4, dtype=torch.uint8))
    assert state["n"] == 3 and type(state["n"]) is int and state["f"] == [0.5, (True,)]
    assert state["model"]._metadata == model.state_dict()._metadata  # module state dicts are kept as they are
    torch.nn.BatchNorm1d(3).load_state_dict(state["model"])

    with pytest.raises(TypeError, match="refusing to write.*pathlib"):
        save_checkpoint(path, {"train": tmp_path / "train.h5"})  # a Path would need unpickling
    assert load_checkpoint(path)["n"] == 3  # the old checkpoint is untouched, no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


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


# -- the engine -------------------------------------------------------------------------------------
def _toy_problem(seed=0):
    """A linear regression with dropout (draws from the global torch RNG) and a decaying learning rate."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def train_epoch(epoch):
        model.train()
        perm = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(64))
        total = 0.0
        for k in range(0, 64, 16):
            i = perm[k:k + 16]
            loss = torch.nn.functional.mse_loss(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        model.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(model(x), y))
        return {"loss": total / 4, "val_loss": val}

    return model, opt, sched, train_epoch


def _fit(path, epochs, resume=False, **kw):
    run, state = open_run(path, model_type="toy", resume=resume)
    model, opt, sched, train_epoch = _toy_problem()
    res = fit(run, model, opt, sched, train_epoch, state=state, epochs=epochs, monitor="val_loss",
              header={"model_type": "toy"}, **kw)
    return res, model


def test_fit_resumes_exactly_after_a_kill(tmp_path):
    full, model_a = _fit(tmp_path / "a", 5)
    assert full.epochs_run == 5 and not full.stopped_early and len(full.history) == 5
    assert full.history[0]["epoch"] == 0 and {"loss", "val_loss", "lr"} <= set(full.history[0])
    assert full.history[1]["lr"] == pytest.approx(0.05 * 0.8**2)  # the scheduler's rate after epoch 1
    assert full.best_value == min(h["val_loss"] for h in full.history)
    assert full.history[full.best_epoch]["val_loss"] == full.best_value
    part, _ = _fit(tmp_path / "b", 5, stop_after=2)
    assert part.epochs_run == 2 and len(part.history) == 2
    with pytest.raises(ParameterError, match="--resume"):
        _fit(tmp_path / "b", 5)
    resumed, model_b = _fit(tmp_path / "b", 5, resume=True)
    assert resumed.epochs_run == 3 and resumed.history == full.history
    assert (resumed.best_epoch, resumed.best_value) == (full.best_epoch, full.best_value)
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_b.state_dict()[k]), k
    ckpt = load_trained(tmp_path / "b" / "last.pt", "toy")
    assert ckpt["epoch"] == 4 and ckpt["monitor"] == "val_loss" and checkpoint_globals(tmp_path / "b" / "last.pt") == []
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    d = resumed.to_dict()
    assert d["best"] == {"epoch": full.best_epoch, "val_loss": full.best_value}
    assert d["best_checkpoint"] == str(tmp_path / "b" / "best.pt") and d["last"] == str(tmp_path / "b" / "last.pt")
    # a finished run continues when the epoch count grows
    more, _ = _fit(tmp_path / "b", 6, resume=True)
    assert more.epochs_run == 1 and more.history[:5] == full.history


def test_fit_early_stopping_survives_resume(tmp_path):
    run, state = open_run(tmp_path / "r", model_type="toy")
    model, opt, sched, train_epoch = _toy_problem()
    values = iter([3.0, 2.0, 2.5, 2.4, 1.0])
    res = fit(run, model, opt, sched, lambda e: {**train_epoch(e), "score": next(values)}, state=state, epochs=5,
              monitor="score", mode="min", patience=2, header={"model_type": "toy"})
    assert res.stopped_early and res.epochs_run == 4 and (res.best_epoch, res.best_value) == (1, 2.0)
    assert load_checkpoint(run.best)["epoch"] == 1 and load_checkpoint(run.last)["epoch"] == 3
    run, state = open_run(tmp_path / "r", model_type="toy", resume=True)
    again = fit(run, model, opt, sched, train_epoch, state=state, epochs=5, monitor="score", patience=2)
    assert again.epochs_run == 0 and again.stopped_early and len(again.history) == 4


def test_open_run_refuses_other_checkpoints(tmp_path):
    _fit(tmp_path / "r", 1)
    with pytest.raises(ParameterError, match="is a 'toy' checkpoint, not 'other'"):
        open_run(tmp_path / "r", model_type="other", resume=True)
    with pytest.raises(ParameterError, match="not 'other'"):
        load_trained(tmp_path / "r" / "last.pt", "other")

    def refuse(state, path):
        raise DataError(f"{path} is not mine")

    with pytest.raises(DataError, match="not mine"):
        open_run(tmp_path / "r", check=refuse, resume=True)
    run, state = open_run(tmp_path / "fresh", model_type="other", resume=True)  # nothing to resume: fresh run
    assert state is None and run.path.is_dir()


def test_resumed_config_keeps_the_stored_config():
    from simgen.train.maskrcnn.config import get_config

    stored = get_config("tiny", lr=1e-3, epochs=4)
    new = get_config("tiny", lr=5e-3, epochs=9)
    assert resumed_config(None, new, 9) is new
    state = {"config": stored.to_dict()}
    assert resumed_config(state, new) == stored
    assert resumed_config(state, new, 9) == get_config("tiny", lr=1e-3, epochs=9)


def test_capture_and_restore_every_kind_of_part(tmp_path):
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(5)
    stopper = EarlyStopping(patience=3)
    stopper.step(0.5)
    model = torch.nn.Linear(2, 2)
    parts = {"model": model, "early": stopper, "global": GlobalRNG(), "gens": {"numpy": rng, "torch": gen},
             "none": None}
    save_checkpoint(tmp_path / "s.pt", capture_state(parts))
    state = load_checkpoint(tmp_path / "s.pt")
    assert set(state) == {"model", "early", "global", "gens"} and set(state["gens"]) == {"numpy", "torch"}
    expect = (rng.random(), float(torch.rand(1, generator=gen)), float(torch.rand(1)))
    with torch.no_grad():
        model.weight.zero_()
    stopper.step(0.9)
    restore_state(state, parts)
    assert (rng.random(), float(torch.rand(1, generator=gen)), float(torch.rand(1))) == expect
    assert stopper.best == 0.5 and stopper.last_epoch == 0 and torch.count_nonzero(model.weight) > 0
    with pytest.raises(DataError, match="no 'extra'"):
        restore_state(state, {"extra": torch.nn.Linear(1, 1)})


def test_fit_steps_logs_and_checkpoints(tmp_path):
    history, saved, lines = [], [], []
    res = fit_steps(lambda i: float(i), start=0, stop=7, name="ph", history=history, save=saved.append,
                    checkpoint_every=3, log_every=2, log=lines.append)
    assert res.step == 7 and res.steps_run == 7 and res.steps_per_s is not None
    assert history == [["ph", 2, 0.5], ["ph", 4, 2.5], ["ph", 6, 4.5], ["ph", 7, 5.5]]
    assert saved == [3, 6] and lines[0] == "ph step 2/7  loss 0.5000"
    again = fit_steps(lambda i: 1 / 0, start=7, stop=7, name="ph", history=history, save=saved.append,
                      checkpoint_every=3, log_every=2)
    assert (again.step, again.steps_run, again.steps_per_s) == (7, 0, None)


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
