"""YOLO through exported models (`--runtime onnx / openvino / openvino-int8`): same detections as torch, exported
once per checkpoint, offline."""

import importlib.util
import socket
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.errors import ParameterError
from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint
from simgen.train.yolo.predict import YoloDetector, read_predictions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from simgen.datasets.generate import write_dataset
    from simgen.simulate.film import FilmConfig, FilmSampler
    from simgen.train.yolo.config import PRESETS
    from simgen.train.yolo.trainer import train_yolo

    tmp = tmp_path_factory.mktemp("onnx")
    cfg = FilmConfig(size=64, n_defects=(2, 5), box_size=12, min_separation=12, single_class=True).validate()
    data = write_dataset(tmp / "film.h5", FilmSampler(cfg, seed=1), 6)
    best = train_yolo(data, tmp / "run", config=PRESETS["small"].replace(epochs=1), progress=False,
                      cache_dir=tmp / "cache")
    return {"best": best, "data": data, "tmp": tmp}


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and len(a) > 0
    cols = ["x0", "y0", "x1", "y1", "score"]
    a = a.sort_values(cols).reset_index(drop=True)
    b = b.sort_values(cols).reset_index(drop=True)
    np.testing.assert_allclose(a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64), atol=1e-3)
    assert (a["class"].to_numpy() == b["class"].to_numpy()).all()


def test_onnx_runtime_gives_the_same_detections(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = tiny["best"].read_bytes()
    torch_det = YoloDetector(tiny["best"], conf=0.001, threads=1)
    onnx_det = YoloDetector(tiny["best"], conf=0.001, threads=1, runtime="onnx")
    assert onnx_det.describe()["runtime"] == "onnx"
    session = onnx_det.model.predictor.model.backend.session
    assert session.get_session_options().intra_op_num_threads == 1 and "onnx" in type(session).__module__
    rng = np.random.default_rng(0)
    for shape in ((64, 64), (130, 200)):  # one tile; tiled with seams
        img = rng.uniform(size=shape).astype(np.float32)
        _same(torch_det.detect(img), onnx_det.detect(img))
    exported = list((tmp_path / "cache" / "yolo-onnx").glob("*/model.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    YoloDetector(tiny["best"], runtime="onnx")  # cached: not exported again
    assert exported[0].stat().st_mtime_ns == stamp
    assert tiny["best"].read_bytes() == before and not list(tiny["best"].parent.glob("*.onnx"))


def test_predict_cli_runtime_onnx_and_errors(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    for runtime in ("torch", "onnx"):
        res = runner.invoke(main, ["predict", str(tiny["best"]), str(tiny["data"]), "--conf", "0.001", "--runtime",
                                   runtime, "-o", str(tmp_path / f"{runtime}.h5"), "--no-progress"])
        assert res.exit_code == 0, res.output
    _same(read_predictions(tmp_path / "torch.h5"), read_predictions(tmp_path / "onnx.h5"))
    with pytest.raises(ParameterError, match="runtime"):
        YoloDetector(tiny["best"], runtime="tensorrt")

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    res = runner.invoke(main, ["track-video", str(tiny["best"]), str(tiny["data"]), "--runtime", "onnx", "-o",
                               str(tmp_path / "tv"), "--no-progress"])
    assert res.exit_code == 2 and "onnxruntime" in res.output and not (tmp_path / "tv").exists()


# -- OpenVINO ---------------------------------------------------------------------------------------
def _offline(monkeypatch, tmp_path, cache):
    """No network, the OpenVINO tests' cache and a fresh home (OpenVINO / NNCF telemetry would write ``~/intel``)."""
    from simgen.train.yolo.offline import ENV_DIR, config_dir

    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(cache))
    monkeypatch.setenv(ENV_DIR, str(config_dir()))  # Ultralytics keeps its config folder
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_openvino_runtime_gives_the_same_detections_one_thread_cached(tiny, tmp_path, monkeypatch):
    from simgen.train.yolo.exported import exported_model, openvino_offline

    with openvino_offline():  # importing openvino sets up its telemetry: not here
        pytest.importorskip("openvino")

    cache = tiny["tmp"] / "ov-cache"  # shared with the INT8 test (which quantizes this fp32 export)
    _offline(monkeypatch, tmp_path, cache)
    before = tiny["best"].read_bytes()
    torch_det = YoloDetector(tiny["best"], conf=0.001, threads=1)
    ov_det = YoloDetector(tiny["best"], conf=0.001, threads=1, runtime="openvino")
    assert ov_det.describe()["runtime"] == "openvino"
    compiled = ov_det.model.predictor.model.backend.ov_compiled_model
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1 and compiled.get_property("NUM_STREAMS") == 1
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert "f32" in str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("float32", "f32")
    rng = np.random.default_rng(0)
    for shape in ((64, 64), (130, 200)):  # one tile; tiled with seams (all tiles in one forward call)
        img = rng.uniform(size=shape).astype(np.float32)
        _same(torch_det.detect(img), ov_det.detect(img))
    exported = list((cache / "yolo-openvino").glob("*/model_openvino_model/model.xml"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    assert exported_model(tiny["best"], 64, "openvino") == exported[0].parent  # cached: not exported again
    assert exported[0].stat().st_mtime_ns == stamp
    assert tiny["best"].read_bytes() == before and not list(tiny["best"].parent.glob("*openvino*"))
    ckpt = load_yolo_checkpoint(tiny["best"])  # the checkpoint changed (here: its metadata) is exported anew
    ckpt["simgen"] = {**ckpt["simgen"], "note": "changed"}
    changed = save_yolo_checkpoint(tmp_path / "changed.pt", ckpt)
    assert exported_model(changed, 64, "openvino") != exported[0].parent
    assert len(list((cache / "yolo-openvino").glob("*/model_openvino_model"))) == 2
    assert not (tmp_path / "home" / "intel").exists()  # no telemetry client id written


def test_openvino_int8_is_quantized_on_synthetic_tiles_and_close_to_fp32(tiny, tmp_path, monkeypatch):
    from simgen.train.yolo.exported import openvino_offline
    from simgen.train.yolo.quantize import calibration_tiles

    with openvino_offline():
        openvino = pytest.importorskip("openvino")
    if importlib.util.find_spec("nncf") is None:  # never import nncf here: it breaks torch.save in-process
        pytest.skip("nncf is not installed")

    tiles = calibration_tiles(64, n_images=1, max_tiles=8)
    assert len(tiles) == 8 and all(t.shape == (1, 1, 64, 64) and t.dtype == np.float32 for t in tiles)
    assert all(np.array_equal(a, b) for a, b in zip(tiles, calibration_tiles(64, n_images=1, max_tiles=8)))
    cache = tiny["tmp"] / "ov-cache"
    _offline(monkeypatch, tmp_path, cache)
    fp32 = YoloDetector(tiny["best"], conf=0.001, threads=1, runtime="openvino")
    int8 = YoloDetector(tiny["best"], conf=0.001, threads=1, runtime="openvino-int8")
    compiled = int8.model.predictor.model.backend.ov_compiled_model
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    xml = next((cache / "yolo-openvino-int8").glob("*/model_int8_openvino_model/model.xml"))
    ops = {op.get_type_name() for op in openvino.Core().read_model(str(xml)).get_ops()}
    assert "FakeQuantize" in ops  # really quantized
    img = np.random.default_rng(1).uniform(size=(130, 200)).astype(np.float32)
    a, b = fp32.detect(img), int8.detect(img)
    assert len(b) > 0 and b["score"].max() == pytest.approx(a["score"].max(), abs=0.05)
    # the quantization ran in its own process: nncf never entered this one, checkpoints still save
    import torch

    assert "nncf" not in sys.modules
    torch.save({"w": torch.arange(300_000.0)}, tmp_path / "after.pt")
    assert torch.load(tmp_path / "after.pt", weights_only=True)["w"][-1] == 299_999.0
    assert not (tmp_path / "home" / "intel").exists()


def test_runtime_option_and_missing_openvino_errors(tiny, tmp_path, monkeypatch):
    import importlib.util

    from simgen.commands._options import runtime_option
    from simgen.train.tiling import merge_tiles, tile_windows
    from simgen.train.yolo.exported import RUNTIMES

    @runtime_option
    def command(runtime):  # the one --runtime option every command shares
        pass

    assert tuple(command.__click_params__[0].type.choices) == RUNTIMES
    real = importlib.util.find_spec
    for runtime, missing, extra in (("openvino", "openvino", "openvino"), ("openvino-int8", "nncf", "int8")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, m=missing: None if name == m else real(name, *a))
        res = CliRunner().invoke(main, ["predict", str(tiny["best"]), str(tiny["data"]), "--runtime", runtime, "-o",
                                        str(tmp_path / "p.h5"), "--no-progress"])
        assert res.exit_code == 2 and f"needs {missing}: pip install 'simgen[{extra}]'" in res.output
        assert not (tmp_path / "p.h5").exists()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    # merge_tiles takes per-tile columns as DataFrames or as dicts of arrays (the detector's fast path)
    rng = np.random.default_rng(0)
    windows = tile_windows((100, 160), 64, 16)
    tiles = [{"x0": rng.uniform(0, 50, 9).astype(np.float32), "y0": rng.uniform(0, 50, 9).astype(np.float32),
              "x1": rng.uniform(50, 64, 9).astype(np.float32), "y1": rng.uniform(50, 64, 9).astype(np.float32),
              "class": rng.integers(0, 2, 9).astype(np.int16), "score": rng.uniform(size=9).astype(np.float32)}
             for _ in windows]
    pd.testing.assert_frame_equal(merge_tiles(tiles, windows), merge_tiles([pd.DataFrame(t) for t in tiles], windows))
