"""YOLO through ONNX Runtime (`--runtime onnx`): same detections as torch, exported once, offline."""

import socket

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.errors import ParameterError
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
