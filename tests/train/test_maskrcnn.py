"""Mask R-CNN trainer: model factory, targets from instance masks, training, resume, prediction, CLI."""

import socket

import numpy as np
import pandas as pd
import pytest
import torch
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.imageio import write_image
from simgen.errors import DataError, ParameterError
from simgen.train.maskrcnn.config import PRESETS, MaskRCNNConfig, get_config
from simgen.train.maskrcnn.data import instance_target, open_instances
from simgen.train.maskrcnn.model import build_maskrcnn
from simgen.train.maskrcnn.predict import load_maskrcnn, predict_maskrcnn
from simgen.train.maskrcnn.trainer import train_maskrcnn


def blobs(path, n, seed, size=64, n_classes=1, empty=0, instance_column=True):
    """``n`` images with 1-3 dark discs (radius 4-8 px) on a noisy grey background, + ``empty`` blank ones."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] + 0.5
    names = ["loop"] if n_classes == 1 else [f"c{k}" for k in range(n_classes)]
    with DatasetWriter(path, kind="tem", class_names=names, seed=seed) as w:
        for i in range(n + empty):
            lab = np.zeros((size, size), np.uint16)
            img = np.full((size, size), 0.7, np.float32)
            rows = []
            for k in range(1, (int(rng.integers(1, 4)) if i < n else 0) + 1):
                for _ in range(100):
                    r = rng.uniform(4, 8)
                    y, x = rng.uniform(r + 2, size - r - 2, 2)
                    disc = (yy - y) ** 2 + (xx - x) ** 2 < (r + 2) ** 2
                    if not (lab[disc] > 0).any():
                        break
                disc = (yy - y) ** 2 + (xx - x) ** 2 < r * r
                cls = int(rng.integers(n_classes))
                lab[disc] = k
                img[disc] = 0.25 if cls == 0 else 0.45
                ys, xs = np.nonzero(disc)
                row = {"x0": xs.min(), "y0": ys.min(), "x1": xs.max() + 1, "y1": ys.max() + 1, "class": cls}
                if instance_column:
                    row["instance"] = k
                rows.append(row)
            img += rng.normal(0, 0.04, img.shape).astype(np.float32)
            cols = ["x0", "y0", "x1", "y1", "class"] + (["instance"] if instance_column else [])
            w.append(np.clip(img, 0, 1), mask=lab, boxes=pd.DataFrame(rows, columns=cols))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("mrcnn")
    return {"train": blobs(d / "train.h5", 4, 0), "val": blobs(d / "val.h5", 2, 1), "dir": d}


@pytest.fixture(scope="module")
def overfit(data, tmp_path_factory):
    """Tiny model trained on the 4 training images (no augmentation) — shared by several tests."""
    out = tmp_path_factory.mktemp("mrcnn_run") / "run"
    cfg = get_config("tiny", augment=False, batch_size=2)
    with pytest.MonkeyPatch.context() as mp:  # training from scratch never touches the network
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        res = train_maskrcnn(data["train"], out, config=cfg, epochs=30)
    return res, out


def _refuse(*args, **kwargs):
    raise AssertionError("network access attempted")


def test_presets_and_validation():
    for name, cfg in PRESETS.items():
        assert cfg.validate().preset == name
        assert MaskRCNNConfig.from_dict(cfg.to_dict()) == cfg
    assert PRESETS["light"].backbone == "resnet18" and PRESETS["full"].backbone == "resnet50"
    bad = [dict(backbone="vgg"), dict(norm="layer"), dict(optimizer="adam"), dict(anchor_sizes=(8, 16)),
           dict(batch_size=0), dict(lr=0.0), dict(score_threshold=1.5), dict(monitor="map"), dict(seed=-1),
           dict(normalize="zscore"), dict(fpn_channels=30)]
    for kwargs in bad:
        with pytest.raises(ParameterError):
            get_config("tiny", **kwargs)
    with pytest.raises(ParameterError):
        get_config("huge")
    with pytest.raises(ParameterError):
        get_config("tiny", colour=True)


def test_instance_target():
    lab = np.zeros((10, 12), np.uint16)
    lab[1:4, 2:6] = 3
    lab[6:9, 8:11] = 7
    lab[0, 11] = 9  # a one-pixel instance
    t = instance_target(lab, classes=np.array([0, 1, 0]), min_area=2)
    assert t["ids"].tolist() == [3, 7]
    assert t["masks"].shape == (2, 10, 12) and t["masks"].dtype == np.uint8
    assert t["masks"][0].sum() == 12 and t["masks"][1].sum() == 9
    np.testing.assert_array_equal(t["boxes"], [[2, 1, 6, 4], [8, 6, 11, 9]])  # pixel-edge frame
    assert t["labels"].tolist() == [1, 2]  # class + 1 (0 = background)
    empty = instance_target(np.zeros((5, 5), np.uint8))
    assert empty["masks"].shape == (0, 5, 5) and empty["boxes"].shape == (0, 4)
    with pytest.raises(DataError):
        instance_target(np.zeros((2, 3, 4)))


def test_models_build_offline_and_shapes(monkeypatch):
    """Every preset builds from scratch without touching the network; 1-channel input; outputs in input pixels."""

    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    torch.manual_seed(0)
    for name in ("tiny", "light", "full"):
        model = build_maskrcnn(name, num_classes=2)
        first = model.backbone.body.conv1
        assert first.in_channels == 1
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # GroupNorm from scratch
    model = build_maskrcnn(get_config("tiny", backbone="mobilenet_v3_small", anchor_sizes=(8, 16, 32)), 1)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(1, 48, 80)])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    assert out["masks"].shape[1:] == (1, 48, 80)  # native size: no rescaling
    with pytest.raises(ParameterError):
        build_maskrcnn("tiny", num_classes=0)


def test_overfits_tiny_images(data, overfit):
    res, out = overfit
    hist = res["history"]
    assert len(hist) == 30 and res["monitor"] == "loss"
    first, last = hist[0]["loss"], min(h["loss"] for h in hist[-5:])
    assert last < 0.45 * first, (first, last)
    assert hist[-1]["loss_mask"] < hist[0]["loss_mask"]
    pred = data["dir"] / "pred_train.h5"
    predict_maskrcnn(out / "last.pt", data["train"], pred)
    with open_dataset(pred) as p, open_dataset(data["train"]) as g:
        assert p.kind == "predictions" and p.n == g.n and p.images is None
        assert p.attrs["model_type"] == "maskrcnn"
        boxes = p.table("boxes")
        assert {"x0", "y0", "x1", "y1", "class", "score", "instance"} <= set(boxes.columns)
        ious = []
        for i in range(g.n):
            pm, gm = p.mask(i), g.mask(i)
            ious.append(((pm > 0) & (gm > 0)).sum() / ((pm > 0) | (gm > 0)).sum())
            rows = p.rows("boxes", i)
            painted = sorted(rows.loc[rows["instance"] > 0, "instance"].tolist())
            assert painted == sorted(np.unique(pm[pm > 0]).tolist())  # box ↔ mask id link
        assert np.mean(ious) > 0.5, ious
        assert boxes["score"].max() > 0.7


def test_resume_after_kill_matches_uninterrupted(data, tmp_path):
    cfg = get_config("tiny", batch_size=2)
    full = train_maskrcnn(data["train"], tmp_path / "a", val=data["val"], config=cfg, epochs=2)
    part = train_maskrcnn(data["train"], tmp_path / "b", val=data["val"], config=cfg, epochs=2, stop_after=1)
    assert part["epochs_run"] == 1
    with pytest.raises(ParameterError):  # a run folder is never silently reused
        train_maskrcnn(data["train"], tmp_path / "b", config=cfg, epochs=2)
    resumed = train_maskrcnn(data["train"], tmp_path / "b", val=data["val"], config=cfg, epochs=2, resume=True)
    assert resumed["epochs_run"] == 1
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["model_type"] == b["model_type"] == "maskrcnn" and a["config"] == b["config"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert full["history"] == resumed["history"]
    assert {"val_loss", "val_f1"} <= set(full["history"][-1])
    assert (tmp_path / "b" / "best.pt").exists() and (tmp_path / "b" / "metrics.jsonl").exists()


def test_early_stopping_state(data, tmp_path):
    # lr so small nothing improves by min_delta: stops after `patience` epochs past the first
    cfg = get_config("tiny", lr=1e-9, patience=1, min_delta=10.0)
    res = train_maskrcnn(data["train"], tmp_path / "r", config=cfg, epochs=10)
    assert res["stopped_early"] and res["epochs_run"] == 2 and res["best"]["epoch"] == 0


def test_empty_images_and_classes(tmp_path):
    path = blobs(tmp_path / "mixed.h5", 3, 5, n_classes=2, empty=4, instance_column=False)
    cfg = get_config("tiny", max_empty_fraction=0.34)
    res = train_maskrcnn(path, tmp_path / "r", config=cfg, epochs=1)
    assert res["n_train"] == 4  # 3 with instances + 1 empty negative (0.34 * 3)
    with open_instances(path) as src:
        assert src.n == 7 and src.class_names == ["c0", "c1"]
    model, _, names = load_maskrcnn(tmp_path / "r" / "best.pt")
    assert names == ["c0", "c1"] and model.roi_heads.box_predictor.cls_score.out_features == 3
    only_empty = blobs(tmp_path / "empty.h5", 0, 0, empty=2)
    with pytest.raises(DataError, match="no image with an instance"):
        train_maskrcnn(only_empty, tmp_path / "e", config="tiny", epochs=1)
    assert not (tmp_path / "e").exists()


def test_resume_reads_the_data_as_the_run_did(tmp_path):
    """A resumed run keeps its stored settings, also those that select the training samples."""
    path = blobs(tmp_path / "mixed.h5", 3, 5, empty=4)
    first = train_maskrcnn(path, tmp_path / "r", config=get_config("tiny", max_empty_fraction=0.34), epochs=2,
                           stop_after=1)
    assert first["n_train"] == 4
    resumed = train_maskrcnn(path, tmp_path / "r", config=get_config("tiny", max_empty_fraction=0.0), epochs=2,
                             resume=True)
    assert resumed["n_train"] == 4 and resumed["epochs_run"] == 1 and len(resumed["history"]) == 2


def test_predict_image_folder_and_errors(data, overfit, tmp_path):
    _, out = overfit
    folder = tmp_path / "imgs"
    with open_dataset(data["val"]) as ds:
        for i in range(ds.n):
            write_image(folder / f"im{i}.png", ds.image(i))
    pred = tmp_path / "pred.h5"
    predict_maskrcnn(out / "best.pt", folder, pred)
    with open_dataset(pred) as p:
        assert p.n == 2 and p.name(0) == "im0.png" and p.mask(0).shape == (64, 64)
        assert p.attrs["masks_padded"] == 0
    # mixed sizes: one padded mask stack on disk, true sizes in /shapes, the reader crops back
    write_image(folder / "wide.png", np.full((40, 80), 0.7, np.float32))
    predict_maskrcnn(out / "best.pt", folder, tmp_path / "mixed.h5")
    with open_dataset(tmp_path / "mixed.h5") as p:
        assert p.attrs["masks_padded"] == 1 and p.file["labels/masks"].shape[1:] == (64, 80)
        assert [p.shape(i) for i in range(3)] == [(64, 64), (64, 64), (40, 80)]
        assert [p.mask(i).shape for i in range(3)] == [(64, 64), (64, 64), (40, 80)]
        assert not p.file["labels/masks"][0][:, 64:].any()
    (folder / "wide.png").unlink()
    before = pred.read_bytes()
    with pytest.raises(ParameterError, match="exists"):
        predict_maskrcnn(out / "best.pt", folder, pred)
    assert pred.read_bytes() == before
    with pytest.raises(DataError):
        predict_maskrcnn(out / "best.pt", tmp_path / "missing.h5", tmp_path / "p2.h5")
    with pytest.raises(DataError):
        predict_maskrcnn(tmp_path / "nothing.pt", folder, tmp_path / "p3.h5")
    torch.save({"model_type": "deltanet", "config": {}}, tmp_path / "other.pt")
    with pytest.raises(ParameterError, match="not 'maskrcnn'"):
        predict_maskrcnn(tmp_path / "other.pt", folder, tmp_path / "p4.h5")
    with pytest.raises(ParameterError):
        predict_maskrcnn(out / "best.pt", folder, tmp_path / "p5.h5", mask_conf=2.0)
    assert not any((tmp_path / f"p{k}.h5").exists() for k in range(2, 6))


def test_training_on_crops(data, tmp_path):
    from simgen.train.maskrcnn.data import _augment

    img = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    lab = (img > 1000).astype(np.uint16)
    a, m = _augment(img, lab, np.random.default_rng(0), crop=32, flips=False)
    assert a.shape == m.shape == (32, 32) and np.array_equal(m, (a > 1000).astype(np.uint16))
    res = train_maskrcnn(data["val"], tmp_path / "c", config=get_config("tiny", crop=32), epochs=1)
    assert res["epochs_run"] == 1 and np.isfinite(res["history"][0]["loss"])
    with pytest.raises(ParameterError):
        get_config("tiny", crop=16)


def test_no_masks_is_a_data_error(tmp_path):
    path = tmp_path / "boxes_only.h5"
    with DatasetWriter(path, kind="film") as w:
        w.append(np.zeros((32, 32), np.float32), boxes=pd.DataFrame({"x0": [1.0], "y0": [1.0], "x1": [5.0],
                                                                      "y1": [5.0], "class": [0]}))
    with pytest.raises(DataError, match="masks"):
        open_instances(path)




class _FileSampler:
    """Replays the samples of a dataset file (to write the same samples as a shard set)."""

    kind, seed = "tem", 0

    def __init__(self, path):
        self.path = str(path)
        with open_dataset(path) as ds:
            self.class_names = list(ds.class_names)

    def describe(self):
        return {"replay": self.path}

    def __call__(self, i):
        with open_dataset(self.path) as ds:
            return {"image": ds.image(i), "mask": ds.mask(i), "boxes": ds.rows("boxes", i).drop(columns="sample")}


def test_instances_from_shards_yolo_folders_and_open_sources(data, tmp_path):
    from simgen.datasets.shards.write import generate_sharded
    from simgen.datasets.sources import open_source

    shards = tmp_path / "shards"
    generate_sharded(shards, _FileSampler(data["train"]), 4, 3, serial=True)
    with open_instances(shards) as src, open_instances(data["train"]) as ref:
        assert src.kind == "shards" and src.n == ref.n == 4 and src.class_names == ref.class_names == ["loop"]
        for i in range(4):
            np.testing.assert_array_equal(src.mask(i), ref.mask(i))
            np.testing.assert_array_equal(src.image(i), ref.image(i))
    res = train_maskrcnn(shards / "virtual.h5", tmp_path / "r", config="tiny", epochs=1)
    assert res["epochs_run"] == 1
    with open_source(data["train"]) as src:
        with open_instances(src) as same:
            assert same.n == 4
        assert src.mask(0) is not None  # the caller's source stays open
    folder = tmp_path / "yolo"
    (folder / "images").mkdir(parents=True)
    write_image(folder / "images" / "a.png", np.zeros((8, 8), np.float32))
    with pytest.raises(DataError, match="masks"):
        open_instances(folder)
    with open_instances(folder, require_masks=False) as src:
        assert src.n == 1 and src.mask(0) is None


def test_cli_train_and_predict(data, tmp_path):
    out = tmp_path / "run"
    res = run("train", "maskrcnn", "--data", data["train"], "--val", data["val"], "--config", "tiny", "--epochs", 1,
              "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    assert "best val_loss" in res.output and (out / "best.pt").exists()
    res = run("predict", out / "best.pt", data["val"], "-o", tmp_path / "p.h5", "--no-progress")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "p.h5") as p:
        assert p.attrs["model_type"] == "maskrcnn" and p.has("labels/masks")


@pytest.mark.parametrize(
    "args",
    [
        ["--data", "missing.h5"],
        ["--anchors", "8,16"],
        ["--anchors", "a,b"],
        ["--backbone", "vgg16"],
        ["--lr", "-1"],
        ["--device", "tpu"],
    ],
)
def test_cli_bad_input(data, tmp_path, args):
    base = {"--data": str(data["train"])}
    argv = ["train", "maskrcnn", "--config", "tiny", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "r")]
    if "--data" not in args:
        argv += ["--data", base["--data"]]
    res = run(*argv, *args)
    assert_one_line_error(res)
    assert not (tmp_path / "r" / "last.pt").exists()


@pytest.mark.realdata
def test_real_yolo_folder_masks(realdata_dir):
    with open_instances(realdata_dir / "creme_316L") as src:
        assert src.n >= 1 and src.class_names == ["loop"]
        m = src.mask(0)
        t = instance_target(m, min_area=4)
        boxes = src.boxes(0)
        assert abs(len(t["ids"]) - len(boxes)) <= 2
        assert t["masks"].shape[1:] == src.image(0).shape
