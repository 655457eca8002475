"""YOLO bridge: tiling and seam merging, cached export, training/resume, prediction, CLI, video tracking."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fakedata import disc_folder

from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.normalize import normalize_image
from simgen.errors import ParameterError
from simgen.train.tiling import (
    Window,
    crop_boxes,
    merge_tiles,
    nms,
    pad_to,
    suppress_nested,
    suppress_nested_boxes,
    tile_windows,
)
from simgen.train.yolo.config import PRESETS, YoloConfig
from simgen.train.yolo.data import prepare_yolo_data
from simgen.train.yolo.predict import YoloDetector, predict_yolo, read_predictions
from simgen.train.yolo.trainer import train_yolo

ROOT = Path(__file__).resolve().parents[2]


# -- tiling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,tile,overlap", [((100, 250), 64, 16), ((64, 64), 64, 8), ((30, 200), 64, 10),
                                                ((700, 1120), 320, 64)])
def test_tile_windows_cover_with_overlap_and_cores_partition(shape, tile, overlap):
    wins = tile_windows(shape, tile, overlap)
    h, w = shape
    cover = np.zeros(shape, int)
    core = np.zeros(shape, int)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    for win in wins:
        assert win.y1 - win.y0 == min(tile, h) and win.x1 - win.x0 == min(tile, w)
        cover[win.y0:win.y1, win.x0:win.x1] += 1
        c0x, c0y, c1x, c1y = win.core
        core += (xx >= c0x) & (xx < c1x) & (yy >= c0y) & (yy < c1y)
    assert cover.min() >= 1 and np.all(core == 1)
    xs = sorted({wn.x0 for wn in wins})
    if len(xs) > 1:
        assert min(b - a for a, b in zip(xs, xs[1:])) <= tile - overlap  # neighbours overlap enough


def test_tile_windows_rejects_bad_parameters():
    with pytest.raises(ParameterError):
        tile_windows((10, 10), 0)
    with pytest.raises(ParameterError):
        tile_windows((10, 10), 8, 8)


def test_crop_boxes_clips_and_keeps_mostly_visible():
    boxes = pd.DataFrame({"x0": [10.0, 60.0, 62.0], "y0": [10.0, 10.0, 10.0], "x1": [20.0, 70.0, 80.0],
                          "y1": [20.0, 20.0, 20.0], "class": np.array([0, 0, 1], np.int16)})
    win = Window(0, 0, 64, 66, (0, 0, 66, 64))
    out = crop_boxes(boxes, win, min_visible=0.5)
    assert len(out) == 2  # the box with 4/18 inside is dropped, 6/10 inside is kept and clipped
    assert out["x1"].max() == 66 and list(out.columns) == list(boxes.columns)


def test_merge_tiles_removes_seam_duplicates():
    wins = tile_windows((64, 112), 64, 16)  # two tiles, x0 = 0 and 48, seam core boundary at x = 56
    assert len(wins) == 2
    # one object at x 50..62: seen whole by both tiles (+ a truncated copy in the left one)
    left = pd.DataFrame({"x0": [50.0, 50.0, 5.0], "y0": [10.0, 10.0, 5.0], "x1": [62.0, 64.0, 15.0],
                         "y1": [22.0, 22.0, 15.0], "class": np.int16(0), "score": [0.9, 0.6, 0.8]})
    right = pd.DataFrame({"x0": [2.0, 40.0], "y0": [10.0, 40.0], "x1": [14.0, 50.0], "y1": [22.0, 50.0],
                          "class": np.int16(0), "score": [0.95, 0.7]})
    merged = merge_tiles([left, right], wins, iou=0.5)
    assert len(merged) == 3
    assert merged["score"].tolist() == sorted(merged["score"].tolist(), reverse=True)
    seam = merged[(merged["x0"] > 40) & (merged["x0"] < 60)]
    assert len(seam) == 1 and seam["score"].iloc[0] == pytest.approx(0.95)
    assert len(merge_tiles([left.iloc[:0], right.iloc[:0]], wins)) == 0


def test_suppress_nested_drops_boxes_inside_a_better_one():
    """A loose box around a detected defect (IoU 0.16 with it, so NMS keeps it) is dropped; a box
    that merely touches another, and boxes of other images, stay."""
    boxes = np.array([[10, 10, 22, 22],      # the defect, best score
                      [2, 2, 32, 32],        # a looser box around it: IoU 0.16, IoMin 1
                      [21, 21, 33, 33],      # a neighbour overlapping a corner: IoMin 1/144
                      [40, 40, 50, 50]], float)
    scores = np.array([0.9, 0.5, 0.8, 0.3])
    assert sorted(nms(boxes, scores, 0.5).tolist()) == [0, 1, 2, 3]  # IoU NMS keeps the loose box
    assert suppress_nested(boxes, scores, 0.7).tolist() == [0, 2, 3]
    # when the loose box scores higher it wins, and takes the neighbour 84 % inside it along: the
    # reason the threshold is picked on validation data and stays off unless it helps there
    assert suppress_nested(boxes, np.array([0.5, 0.9, 0.8, 0.3]), 0.7).tolist() == [1, 3]
    assert suppress_nested(boxes, np.array([0.5, 0.9, 0.8, 0.3]), 0.9).tolist() == [1, 2, 3]
    assert suppress_nested(boxes[:0], scores[:0], 0.7).tolist() == []
    df = pd.DataFrame(boxes, columns=["x0", "y0", "x1", "y1"]).assign(score=scores, **{"class": np.int16(0)})
    two = pd.concat([df.assign(sample=0), df.assign(sample=1)], ignore_index=True)
    kept = suppress_nested_boxes(two, 0.7)
    assert len(kept) == 6 and kept.index.tolist() == [0, 2, 3, 4, 6, 7]  # per image, row order kept
    assert suppress_nested_boxes(two, None) is two
    other_class = two.assign(**{"class": np.int16([0, 1, 0, 0] * 2)})
    assert len(suppress_nested_boxes(other_class, 0.7, agnostic=False)) == 8
    with pytest.raises(ParameterError, match="nested"):
        suppress_nested(boxes, scores, 0.0)


def test_nms_matches_numpy_fallback(monkeypatch):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (40, 2))
    boxes = np.column_stack([xy, xy + rng.uniform(3, 10, (40, 2))])
    scores = rng.uniform(size=40)
    fast = nms(boxes, scores, 0.3)
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *a, **k):
        if name.startswith("torchvision"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    slow = nms(boxes, scores, 0.3)
    assert sorted(fast.tolist()) == sorted(slow.tolist())


def test_pad_and_normalize():
    assert pad_to(np.ones((2, 3)), (4, 4), 0.0).sum() == 6
    low = np.linspace(0.10, 0.12, 100, dtype=np.float32).reshape(10, 10)  # a dim 16-bit-like image
    out = normalize_image(low)
    assert out.min() == 0 and out.max() == 1
    assert np.all(normalize_image(np.full((4, 4), 0.3)) == 0.5)
    assert normalize_image(np.array([[2.0, -1.0]]), "none").tolist() == [[1.0, 0.0]]


def test_config_validation():
    with pytest.raises(ParameterError, match="multiple of 32"):
        YoloConfig(imgsz=100).validate()
    with pytest.raises(ParameterError, match="overlap"):
        YoloConfig(tile=64, overlap=64).validate()
    with pytest.raises(ParameterError, match="unknown YOLO setting"):
        YoloConfig().replace(colour=1)
    with pytest.raises(ParameterError, match="weights file"):
        YoloConfig(model="yolo11n.pt").validate()


# -- data ---------------------------------------------------------------------------------------
def _film(path, n=8, size=64, seed=1):
    from simgen.datasets.generate import write_dataset
    from simgen.simulate.film import FilmConfig, FilmSampler

    cfg = FilmConfig(size=size, n_defects=(2, 5), box_size=12, min_separation=12, single_class=True).validate()
    return write_dataset(path, FilmSampler(cfg, seed=seed), n)


def _yolo_folder(root, sizes=((96, 150), (64, 64))):
    return disc_folder(root, sizes)


def test_prepare_yolo_data_tiles_caches_and_keys(tmp_path):
    import yaml

    data = _film(tmp_path / "f.h5", n=4, size=128)
    cfg = YoloConfig(tile=64, overlap=16, imgsz=64, val_fraction=0.25, min_box=14)
    y1 = prepare_yolo_data(data, config=cfg, cache_dir=tmp_path / "cache")
    spec = yaml.safe_load(y1.read_text())
    assert spec["channels"] == 1 and spec["names"] == {0: "defect"} and spec["val"] == "images/val"
    root = y1.parent
    tiles = sorted((root / "images" / "train").glob("*.png"))
    assert len(tiles) == 3 * 9 and len(list((root / "images" / "val").glob("*.png"))) == 9  # 3x3 tiles per image
    from PIL import Image

    assert Image.open(tiles[0]).size == (64, 64) and Image.open(tiles[0]).mode == "L"
    widths = [float(line.split()[3]) * 64 for f in (root / "labels" / "train").glob("*.txt")
              for line in f.read_text().splitlines()]
    assert widths and min(widths) >= 6  # grown to min_box, then clipped at tile edges (>= half visible)
    stamp = (root / "source.json").stat().st_mtime_ns
    assert prepare_yolo_data(data, config=cfg, cache_dir=tmp_path / "cache") == y1  # cache hit
    assert (root / "source.json").stat().st_mtime_ns == stamp
    y2 = prepare_yolo_data(data, config=cfg.replace(min_box=4), cache_dir=tmp_path / "cache")
    assert y2 != y1  # export settings are part of the key
    real = _yolo_folder(tmp_path / "real")
    y3 = prepare_yolo_data(real, config=cfg.replace(val_fraction=0.0), cache_dir=tmp_path / "cache",
                           train_names=[["im0"]])
    assert yaml.safe_load(y3.read_text())["names"] == {0: "loop"}
    assert len(list((y3.parent / "images" / "train").glob("*.png"))) == 6  # 96x150 → 2 rows x 3 columns


def test_prepare_yolo_data_scale_enlarges_images_and_boxes(tmp_path):
    """``YoloConfig.scale`` resizes every image before tiling and its boxes with it (``sim2real
    --detector-scale``): a 64² sample at scale 2 is one 128² tile with boxes twice as large."""
    from PIL import Image

    data = _film(tmp_path / "f.h5", n=2, size=64)
    cfg = YoloConfig(tile=64, overlap=16, imgsz=64, val_fraction=0.0, min_box=1)

    def export(c):
        root = prepare_yolo_data(data, config=c, cache_dir=tmp_path / "cache").parent
        tiles = sorted((root / "images" / "train").glob("*.png"))
        rows = sorted(tuple(float(v) for v in line.split()[1:])
                      for f in sorted((root / "labels" / "train").glob("*.txt")) for line in f.read_text().splitlines())
        return tiles, np.array(rows)

    t1, b1 = export(cfg)
    t2, b2 = export(cfg.replace(scale=2.0, tile=128, imgsz=128, overlap=32))
    assert len(t1) == len(t2) == 2 and Image.open(t2[0]).size == (128, 128)
    # normalized YOLO coordinates are scale-free: same centres and relative sizes, twice the pixels
    assert b1.shape == b2.shape and np.allclose(b1, b2, atol=1.5 / 128)


def _film_shards(path, n=8, size=64, seed=1, shard_size=3):
    from simgen.datasets.shards.write import generate_sharded
    from simgen.simulate.film import FilmConfig, FilmSampler

    cfg = FilmConfig(size=size, n_defects=(2, 5), box_size=12, min_separation=12, single_class=True).validate()
    generate_sharded(path, FilmSampler(cfg, seed=seed), n, shard_size, serial=True)
    return path


def test_prepare_yolo_data_from_shards_and_open_sources(tmp_path):
    """A sharded set exports exactly like the same samples in one file; open sources are used, not closed."""
    from simgen.datasets.sources import open_source

    shards = _film_shards(tmp_path / "shards", n=4, size=128)
    single = _film(tmp_path / "f.h5", n=4, size=128)
    cfg = YoloConfig(tile=64, overlap=16, imgsz=64, val_fraction=0.25, min_box=14)
    exports = {}
    for name, data in (("shards", shards), ("virtual", shards / "virtual.h5"), ("single", single)):
        root = prepare_yolo_data(data, config=cfg, cache_dir=tmp_path / f"cache_{name}").parent
        exports[name] = {p.relative_to(root).as_posix(): p.read_bytes()
                         for p in sorted(root.rglob("*")) if p.suffix in (".png", ".txt")}
    assert len(exports["single"]) == 2 * 4 * 9 and exports["shards"] == exports["single"] == exports["virtual"]
    with open_source(shards) as src:
        y1 = prepare_yolo_data(src, config=cfg, cache_dir=tmp_path / "cache_shards")
        assert [y1.parent] == list((tmp_path / "cache_shards").iterdir())  # same content, same cache entry
        y2 = prepare_yolo_data([src], config=cfg.replace(val_fraction=0.0), cache_dir=tmp_path / "c",
                               train_names=[["000001"]])
        assert len(list((y2.parent / "images" / "train").glob("*.png"))) == 9  # one image, 3 x 3 tiles
        assert src.image(3).shape == (128, 128)  # still open
        y3 = prepare_yolo_data(src, single, config=cfg, cache_dir=tmp_path / "c")  # separate validation data
    with open_source(y3.parent) as export:  # tile names are unique across splits: one readable YOLO folder
        assert len(export) == 2 * 4 * 9 and export.has_labels and export.class_names == ["defect"]


# -- training, resume, prediction --------------------------------------------------------------------
TRAIN_SCRIPT = """
import sys
from simgen.train.yolo.config import PRESETS
from simgen.train.yolo.trainer import train_yolo
train_yolo(sys.argv[1], sys.argv[2], config=PRESETS["small"].replace(epochs=int(sys.argv[3])), progress=False,
           cache_dir=sys.argv[4])
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run killed after its first epoch, then resumed to the end (module-wide)."""
    tmp = tmp_path_factory.mktemp("yolo")
    data = _film(tmp / "film.h5", n=8)
    run = tmp / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(data), str(run), "3", str(tmp / "cache")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    last = run / "ultralytics" / "weights" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # killed right after the first checkpoint
    proc.wait()
    assert last.exists(), proc.stderr.read().decode()[-2000:]
    assert not (run / "best.pt").exists()
    best = train_yolo(data, run, config=PRESETS["small"].replace(epochs=3), resume=True, progress=False,
                      cache_dir=tmp / "cache")
    return {"data": data, "run": run, "best": best, "tmp": tmp}


def test_resume_after_kill_finishes_the_run(trained):
    run = trained["run"]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1] == 2 and 0 not in epochs[1:]  # the resumed run continued, it did not restart
    meta = json.loads((run / "simgen.json").read_text())
    assert meta["tile"] == 64 and 0 < meta["conf_f1"] < 1
    assert "nested" in meta and meta["nested"] in (None, 0.9, 0.8, 0.7, 0.6)  # picked on validation tiles
    assert meta["tta"] in (True, False)
    import ultralytics

    from simgen.train.yolo.checkpoint import load_yolo_checkpoint as load_checkpoint

    assert load_checkpoint(trained["best"])["simgen"]["tile"] == 64
    model = ultralytics.YOLO(str(trained["best"]))  # a standard Ultralytics checkpoint
    res = model.predict(np.zeros((64, 64, 3), np.uint8), verbose=False)
    assert len(res) == 1
    # a finished run is not silently overwritten
    with pytest.raises(ParameterError, match="--resume"):
        train_yolo(trained["data"], run, config=PRESETS["small"], progress=False)


def test_save_period_keeps_every_epoch_and_is_validated(trained, tmp_path):
    run = tmp_path / "run"
    train_yolo(trained["data"], run, config=PRESETS["small"].replace(epochs=2, save_period=1), progress=False,
               cache_dir=trained["tmp"] / "cache")
    kept = sorted(p.name for p in (run / "ultralytics" / "weights").glob("epoch*.pt"))
    assert kept == ["epoch0.pt", "epoch1.pt"], kept  # Ultralytics counts epochs from 0 in these names
    from simgen.train.yolo.predict import YoloDetector

    det = YoloDetector(run / "ultralytics" / "weights" / "epoch1.pt")  # an epoch checkpoint predicts
    assert len(det.detect(np.zeros((64, 64), np.float32)).columns) >= 5
    with pytest.raises(ParameterError, match="save_period"):
        PRESETS["small"].replace(save_period=-1).validate()


def test_predict_tiles_large_images_and_writes_schema(trained, tmp_path):
    real = _yolo_folder(tmp_path / "real", sizes=((130, 200), (40, 50)))
    det = YoloDetector(trained["best"], conf=0.001)
    assert det.tile == 64 and det.overlap == 16
    boxes = det.detect(np.random.default_rng(0).uniform(size=(130, 200)).astype(np.float32))
    assert list(boxes.columns) == ["x0", "y0", "x1", "y1", "class", "score"]
    if len(boxes):
        assert boxes["x1"].max() <= 200 and boxes["y1"].max() <= 130 and boxes["x0"].min() >= 0
    out = predict_yolo(trained["best"], real, tmp_path / "pred.h5", progress=False, detector=det)
    with open_dataset(out) as ds:
        assert ds.kind == "predictions" and ds.n == 2 and ds.images is None
        assert [ds.name(i) for i in range(2)] == ["im0", "im1"]
        assert ds.shape(0) == (130, 200) and ds.shape(1) == (40, 50)
        assert ds.attrs["fps"] > 0 and 0 < ds.attrs["conf_f1"] < 1
    pred = read_predictions(out)
    assert {"sample", "score"} <= set(pred.columns)
    with pytest.raises(ParameterError, match="exists"):
        predict_yolo(trained["best"], real, out, progress=False)


def test_predict_at_a_scale_returns_boxes_in_image_pixels(trained):
    """``YoloDetector(scale=s)`` runs the network on the image enlarged s times and maps its boxes
    back: the same detections as running it at scale 1 on the enlarged image, divided by s."""
    from simgen.datasets.normalize import resize_image

    with open_dataset(trained["data"]) as ds:
        img = np.asarray(ds.image(0), np.float32)
    big = resize_image(normalize_image(img, "percentile"), 2.0)
    at2 = YoloDetector(trained["best"], conf=0.001, scale=2.0, normalize="percentile").detect(img)
    on_big = YoloDetector(trained["best"], conf=0.001, scale=1.0, normalize="none").detect(big)
    assert len(at2) == len(on_big) > 0
    cols = ["x0", "y0", "x1", "y1"]
    a = at2.sort_values("score").reset_index(drop=True)
    b = on_big.sort_values("score").reset_index(drop=True)
    assert np.allclose(a[cols].to_numpy() * 2, b[cols].to_numpy(), atol=0.5)
    assert np.allclose(a["score"], b["score"], atol=1e-4)
    assert a["x1"].max() <= img.shape[1] and a["y1"].max() <= img.shape[0]


def test_nested_suppression_in_prediction_and_on_validation(trained, monkeypatch):
    """``YoloDetector(nested=...)`` removes exactly the nested pairs of its raw output; training's
    validation step keeps suppression only when it raises the validation peak F1."""
    from simgen.train.yolo import trainer as trainer_module

    with open_dataset(trained["data"]) as ds:
        img = np.asarray(ds.image(0), np.float32)
    raw = YoloDetector(trained["best"], conf=0.001, nested=None).detect(img)
    cut = YoloDetector(trained["best"], conf=0.001, nested=0.6).detect(img)
    expected = suppress_nested_boxes(raw.reset_index(drop=True), 0.6)
    assert len(cut) == len(expected) <= len(raw)
    np.testing.assert_allclose(np.sort(cut["score"].to_numpy()), np.sort(expected["score"].to_numpy()))
    assert YoloDetector(trained["best"], nested=0.6).describe()["nested"] == 0.6
    with pytest.raises(ParameterError, match="nested"):
        YoloDetector(trained["best"], nested=1.5)
    with pytest.raises(ParameterError, match="nested"):
        YoloConfig(nested=0.0).validate()
    from simgen.errors import DataError
    from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint

    ckpt = load_yolo_checkpoint(trained["best"])
    ckpt["simgen"] = {**ckpt["simgen"], "tta": "yes"}  # an edited or foreign checkpoint
    bad = save_yolo_checkpoint(trained["tmp"] / "bad_meta.pt", ckpt)
    with pytest.raises(DataError, match="malformed"):
        YoloDetector(bad)

    calls = []
    real_eval = trainer_module.evaluate_detections

    def spy(pred, gt, **kw):  # every candidate is scored on the same predictions
        calls.append(len(pred))
        return real_eval(pred, gt, **kw)

    monkeypatch.setattr(trainer_module, "evaluate_detections", spy)
    import yaml

    data_yaml = next((trained["tmp"] / "cache").rglob("data.yaml"))
    assert yaml.safe_load(data_yaml.read_text())["val"]
    conf, f1, nested, tta = trainer_module._select_conf(trained["best"], data_yaml, PRESETS["small"])
    # without and with test-time augmentation, each: off first, then 0.9 ... 0.6
    assert len(calls) == 10 and calls[0] >= max(calls[1:5])
    assert nested in (None, 0.9, 0.8, 0.7, 0.6) and 0 < conf < 1 and tta in (True, False)
    calls.clear()
    fixed = PRESETS["small"].replace(nested=None, tta=False)
    assert trainer_module._select_conf(trained["best"], data_yaml, fixed)[2:] == (None, False)
    assert len(calls) == 1


def test_tta_detection_is_flip_equivariant(trained):
    """With flip test-time augmentation the detector sees the same four views of an image and of its
    mirror, so the mirror's boxes are the image's boxes mirrored."""
    with open_dataset(trained["data"]) as ds:
        img = np.asarray(ds.image(1), np.float32)
    det = YoloDetector(trained["best"], conf=0.01, tta=True, nested=None)
    assert det.describe()["tta"] is True
    a = det.detect(img)
    b = det.detect(np.ascontiguousarray(img[:, ::-1]))
    w = img.shape[1]
    b = b.assign(x0=w - b["x1"], x1=w - b["x0"])
    assert len(a) == len(b) > 0
    cols = ["x0", "y0", "x1", "y1", "score"]
    a, b = (d.sort_values(["score", "x0"]).reset_index(drop=True)[cols].to_numpy() for d in (a, b))
    np.testing.assert_allclose(a, b, atol=1e-3)
    plain = YoloDetector(trained["best"], conf=0.01, tta=False, nested=None).detect(img)
    assert a[:, 4].max() <= plain["score"].max() + 1e-6  # fused scores are averages over views
    with pytest.raises(ParameterError, match="tta"):
        YoloDetector(trained["best"], tta="yes")
    with pytest.raises(ParameterError, match="tta"):
        YoloConfig(tta="yes").validate()


def test_train_postprocess_picks_on_synthetic_validation_and_refuses_real(trained, tmp_path):
    from simgen.train.yolo.checkpoint import load_yolo_checkpoint

    runner = CliRunner()
    out = tmp_path / "pp.pt"
    res = runner.invoke(main, ["train", "postprocess", str(trained["best"]), "--val", str(trained["data"]),
                               "-o", str(out), "--max-images", "4", "--no-progress"])
    assert res.exit_code == 0, res.output
    meta = load_yolo_checkpoint(out)["simgen"]
    record = meta["postprocess"]
    assert record["n_images"] == 4 and meta["nested"] == record["nested"] and meta["tta"] == record["tta"]
    assert record["val_f1"] >= record["val_f1_without"]  # kept only when it helps on validation
    assert 0 < meta["conf_f1"] < 1 and "validation peak F1" in res.output
    det = YoloDetector(out)
    assert (det.nested, det.tta) == (meta["nested"], meta["tta"])  # prediction applies the stored choice
    res = runner.invoke(main, ["train", "postprocess", str(trained["best"]), "--val", str(trained["data"]),
                               "-o", str(tmp_path / "fixed.pt"), "--nested", "off", "--tta", "off", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert load_yolo_checkpoint(tmp_path / "fixed.pt")["simgen"]["nested"] is None
    real = _yolo_folder(tmp_path / "real")
    res = runner.invoke(main, ["train", "postprocess", str(trained["best"]), "--val", str(real), "-o",
                               str(tmp_path / "r.pt")])
    assert res.exit_code == 2 and "never on real labels" in res.output and not (tmp_path / "r.pt").exists()


def test_cli_train_predict_and_errors(trained, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["predict", str(trained["best"]), str(trained["data"]), "-o", str(tmp_path / "p.h5"),
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(read_predictions(tmp_path / "p.h5")) >= 0
    res = runner.invoke(main, ["predict", str(tmp_path / "nope.pt"), str(trained["data"]), "-o",
                               str(tmp_path / "q.h5")])
    assert res.exit_code == 2 and res.output.startswith("Error:") and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main, ["predict", str(trained["best"]), str(trained["data"]), "-o", str(tmp_path / "n.h5"),
                               "--nested", "0.6", "--tta", "on", "--no-progress"])
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "n.h5") as ds:
        assert ds.attrs["generator"]["nested"] == 0.6 and ds.attrs["generator"]["tta"] is True  # recorded
    for bad in ("1.5", "yes"):
        res = runner.invoke(main, ["predict", str(trained["best"]), str(trained["data"]), "-o",
                                   str(tmp_path / "m.h5"), "--nested", bad])
        assert res.exit_code == 2 and res.output.startswith("Error: --nested") and not (tmp_path / "m.h5").exists()
    res = runner.invoke(main, ["train", "yolo", "--data", str(trained["data"]), "--model", "yolov8n.pt", "-o",
                               str(tmp_path / "r")])
    assert res.exit_code == 2 and "weights file" in res.output and not (tmp_path / "r").exists()
    stamp = (trained["run"] / "best.pt").stat().st_mtime_ns
    res = runner.invoke(main, ["train", "yolo", "--data", str(trained["data"]), "--config", "small", "-o",
                               str(trained["run"]), "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2 and "--resume" in res.output
    assert (trained["run"] / "best.pt").stat().st_mtime_ns == stamp  # untouched


def test_info_shows_the_preprocessing_stored_in_a_checkpoint(trained, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(trained["best"]), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["preprocessing"]["tile"] == 64 and info["preprocessing"]["normalize"] == "percentile"
    assert 0 < info["preprocessing"]["conf_f1"] < 1 and info["classes"] and info["epochs"] == 3
    res = runner.invoke(main, ["info", str(trained["best"])])
    assert res.exit_code == 0 and "normalize:" in res.output and "preprocessing:" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(main, ["info", str(bad)])
    assert res.exit_code == 2 and res.output.startswith("Error:")


def test_predict_in_a_fresh_process(trained, tmp_path):
    """`simgen predict best.pt` as a new process: reading the checkpoint must not import
    Ultralytics before simgen has made it offline (it did once: 'imported before setup')."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "SIMGEN_ULTRALYTICS_DIR": str(tmp_path / "ucfg")}
    proc = subprocess.run([sys.executable, "-m", "simgen", "predict", str(trained["best"]), str(trained["data"]),
                           "-o", str(tmp_path / "p.h5"), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ucfg" / "Ultralytics" / "settings.json").exists()  # project-owned config, not ~/.config
    with open_dataset(tmp_path / "p.h5") as ds:
        assert ds.kind == "predictions" and ds.n == 8


def _moving_discs_video(path, class_names=("loop",), label=0):
    rng = np.random.default_rng(2)
    h = w = 64
    starts = rng.uniform(12, 52, (3, 2))
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    with DatasetWriter(path, kind="video", class_names=list(class_names)) as wr:
        for t in range(6):
            img = np.full((h, w), 0.7, np.float32) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
            pos = starts + [0.7 * t, 0.3 * t]
            for x, y in pos:
                img[(xx - x) ** 2 + (yy - y) ** 2 < 9] = 0.2
            tracks = {"track_id": np.arange(3), "x": pos[:, 0], "y": pos[:, 1],
                      "x0": pos[:, 0] - 3, "y0": pos[:, 1] - 3, "x1": pos[:, 0] + 3, "y1": pos[:, 1] + 3}
            boxes = {"x0": pos[:, 0] - 3, "y0": pos[:, 1] - 3, "x1": pos[:, 0] + 3, "y1": pos[:, 1] + 3,
                     "class": np.full(3, label, np.int16)}
            wr.append(img, boxes=boxes, tracks=tracks)
    return path


def test_track_video_with_truth(tmp_path):
    """Detector on every frame → trackpy links → MOT metrics (LoG detector: fast and exact here)."""
    from simgen.experiments.track_video import track_video
    from simgen.train.baselines.log import LogParams, save_params

    video = _moving_discs_video(tmp_path / "video.h5")
    params = save_params(tmp_path / "log.json", LogParams(min_sigma=1.5, max_sigma=4, threshold=0.2))
    res = track_video(params, video, tmp_path / "track", progress=False)
    assert res["n_frames"] == 6 and res["fps"] > 0 and res["n_tracks"] == 3
    assert res["tracking"]["MOTA"] > 0.9 and res["tracking"]["IDSW"] == 0
    assert (tmp_path / "track" / "tracks.csv").exists() and (tmp_path / "track" / "summary.json").exists()
    with pytest.raises(ParameterError, match="exists"):
        track_video(params, video, tmp_path / "track", progress=False)


def test_track_video_scores_class_agnostic_when_classes_differ(tmp_path):
    """A one-class detector on a video labelled with other classes: per-class scoring finds
    nothing, so by default the classes are ignored (and the report says so)."""
    from simgen.experiments.track_video import track_video
    from simgen.train.baselines.log import LogParams, save_params

    video = _moving_discs_video(tmp_path / "video.h5", class_names=("black_dot", "loop111"), label=1)
    params = save_params(tmp_path / "log.json", LogParams(min_sigma=1.5, max_sigma=4, threshold=0.2))
    auto = track_video(params, video, tmp_path / "auto", progress=False)
    assert auto["class_agnostic"] and auto["detection"]["f1"] > 0.9
    strict = track_video(params, video, tmp_path / "strict", class_agnostic=False, progress=False)
    assert not strict["class_agnostic"] and strict["detection"]["recall"] == 0


def test_sim2real_smoke(tmp_path, monkeypatch):
    """The whole experiment end to end on a tiny fake real folder (small preset, no matching)."""
    from simgen.experiments.sim2real_tem import Sim2RealConfig, run_sim2real

    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    real = _yolo_folder(tmp_path / "real", sizes=((96, 96), (64, 80)))
    cfg = Sim2RealConfig.preset("small").replace(n_train=8, n_val=4, match=False, adapt=("bn",), fuse_log=True)
    rep = run_sim2real(real, tmp_path / "s2r", cfg, progress=False)
    out = tmp_path / "s2r"
    for name in ("report.md", "report.json", "pr_curves.png", "examples.png", "synthetic_examples.png",
                 "log_params.json", "pred_synthetic_yolo.h5", "yolo/best.pt", "realism/realism.json", "fusion.json"):
        assert (out / name).exists(), name
    assert set(rep["methods"]) == {"synthetic_yolo", "synthetic_yolo_loo_threshold", "log_baseline",
                                   "log_baseline_insample", "log_synthetic", "synthetic_yolo_bn", "fused_log"}
    # the fused detector of --fuse-log predicts again from its fusion.json (the YOLO member found beside it)
    res = CliRunner().invoke(main, ["predict", str(out / "fusion.json"), str(real), "-o", str(tmp_path / "f.h5"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "| YOLO + synthetic-tuned LoG, fused" in (out / "report.md").read_text()
    bn = rep["methods"]["synthetic_yolo_bn"]
    assert bn["folds"] == 2 and 0 <= bn["f1"] <= 1
    # every fold was adapted on images it does not score
    for fold in bn["adaptation"]:
        assert fold["images"] >= 1 and fold["adapted_on"] and fold["scored"]
        assert not set(fold["adapted_on"]) & set(fold["scored"])
    every = sorted(r["image"] for r in rep["methods"]["synthetic_yolo"]["per_image"])
    assert sorted(n for f in bn["adaptation"] for n in f["scored"]) == every  # each image scored once
    assert set(rep["robustness"]) == {"poisson", "salt_pepper", "gaussian"}
    assert rep["methods"]["log_baseline"]["f1"] > 0.5  # the discs are easy for LoG
    assert "| YOLO, synthetic only (threshold from synthetic validation) |" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    # the post-processing the model picked on synthetic validation is stated, whatever it was
    meta = json.loads((out / "yolo" / "simgen.json").read_text())
    note = next(n for n in report["notes"] if n.startswith("Post-processing of the synthetic-only YOLO"))
    assert ("IoMin" in note) == (meta["nested"] is not None) and ("flip" in note) == meta["tta"]
    with pytest.raises(ParameterError, match="--resume"):
        run_sim2real(real, out, cfg, progress=False)
    runner = CliRunner()
    res = runner.invoke(main, ["sim2real", "--real", str(tmp_path / "missing"), "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and not (tmp_path / "x").exists()


def test_film_experiment_smoke(tmp_path, monkeypatch):
    """Random-defect films → thermal-model films: data, training, scores per class and class-agnostic."""
    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    res = CliRunner().invoke(main, ["sim2real-film", "--config", "small", "-o", str(tmp_path / "film"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "film"
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["results"]) == {"thermal_clean", "thermal_artifacts"}
    for scores in rep["results"].values():
        assert {"defect", "any (class-agnostic)"} <= set(scores["per_class"])  # one class by default
        assert all(0 <= scores[k] <= 1 for k in ("precision", "recall", "f1") if scores[k] is not None)
    with open_dataset(out / "test_thermal_clean.h5") as ds:
        assert ds.attrs["generator"]["config"]["model"] == "thermal"  # a different physics model than training
    assert (out / "yolo" / "best.pt").exists() and "| thermal_clean | all |" in (out / "report.md").read_text()
    res = CliRunner().invoke(main, ["sim2real-film", "--config", "small", "-o", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_finetune_starts_from_the_given_weights(trained, tmp_path, monkeypatch):
    import socket

    import torch

    from simgen.train.yolo.checkpoint import load_yolo_checkpoint as load_checkpoint

    def refuse(*a, **k):
        raise OSError("network disabled by test")

    for obj, name in ((socket.socket, "connect"), (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(obj, name, refuse)

    def first_conv(path):
        ck = load_checkpoint(path)
        model = ck["ema"] or ck["model"]
        return next(p for n, p in model.named_parameters() if p.ndim == 4)

    # source weights far from any seeded initialisation: first conv replaced by random values
    ck = load_checkpoint(trained["best"])
    model = ck["ema"] or ck["model"]
    with torch.no_grad():
        w = next(p for n, p in model.named_parameters() if p.ndim == 4)
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(7)).to(w.dtype))
    from simgen.train.yolo.checkpoint import save_yolo_checkpoint

    source = save_yolo_checkpoint(tmp_path / "source.pt", ck)
    tuned = train_yolo(trained["data"], tmp_path / "ft", config=PRESETS["small"].replace(epochs=1, lr0=1e-5),
                       weights=source, progress=False, cache_dir=trained["tmp"] / "cache")
    before = first_conv(source).detach().float().flatten()
    after = first_conv(tuned).detach().float().flatten()
    corr = torch.corrcoef(torch.stack([before, after]))[0, 1]
    assert corr > 0.9  # fine-tuned from the given weights, not re-initialised


def test_train_on_an_open_shard_set_and_predict_from_sources(tmp_path):
    """Training on a sharded folder works (it once failed with 'holds no images'); one open source
    feeds training, prediction and ``predict_yolo`` without being reopened or closed."""
    from simgen.datasets.sources import open_source

    shards = _film_shards(tmp_path / "shards", n=6)
    with open_source(shards) as src:
        best = train_yolo(src, tmp_path / "run", config=PRESETS["small"].replace(epochs=1), progress=False,
                          cache_dir=tmp_path / "cache")
        meta = json.loads((tmp_path / "run" / "simgen.json").read_text())
        assert meta["train"] == [str(shards)]
        det = YoloDetector(best, conf=0.001)
        table = det.predict(src)
        assert list(table.columns) == ["sample", "x0", "y0", "x1", "y1", "class", "score"]
        assert table["sample"].between(0, 5).all()
        some = det.predict(src, names=["000004", "000001"])
        pd.testing.assert_frame_equal(some[some["sample"] == 0].drop(columns="sample").reset_index(drop=True),
                                      table[table["sample"] == 4].drop(columns="sample").reset_index(drop=True))
        out = predict_yolo(best, src, tmp_path / "pred.h5", progress=False, detector=det)
        assert src.image(5).shape == (64, 64)  # the caller's source is still open
    with open_dataset(out) as ds:
        assert ds.n == 6 and ds.shape(0) == (64, 64) and ds.name(2) == "000002"
    pred = read_predictions(out)
    pd.testing.assert_frame_equal(pred.drop(columns="sample").reset_index(drop=True),
                                  table.drop(columns="sample").reset_index(drop=True), check_dtype=False)
    assert predict_yolo(best, shards / "virtual.h5", tmp_path / "pred2.h5", progress=False, detector=det).exists()
