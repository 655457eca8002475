"""`simgen export yolo`: counts, no silent validation on training images, a movable folder, 16-bit data."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from clitools import assert_one_line_error, run
from PIL import Image

from simgen.datasets.formats.yolo import export_yolo
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.normalize import normalize_image, to_uint8
from simgen.errors import ParameterError


def _boxes(*rows):
    return pd.DataFrame(rows, columns=["x0", "y0", "x1", "y1", "class"]).astype({"class": np.int16})


@pytest.fixture
def labelled(tmp_path):
    """5 samples of 12-bit camera counts in a uint16 file; sample 0 has a tiny box and one outside the image."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cam.h5"
    w = DatasetWriter(path, kind="tem", image_dtype="uint16", class_names=["loop"])
    for k in range(5):
        counts = rng.integers(800, 4096, (24, 32)).astype(np.uint16)  # 12-bit levels: <= 6 % of the range
        boxes = [(2, 2, 10, 10, 0), (12, 3, 20, 9, 0)]
        if k == 0:
            boxes += [(5, 5, 5.5, 9, 0), (40, 2, 48, 8, 0)]  # 0.5 px wide; right of the 32 px wide image
        w.append(counts, boxes=_boxes(*boxes))
    w.close()
    return path


def _ultralytics_check(data_yaml, **kwargs):
    from simgen.train.yolo.offline import import_ultralytics

    import_ultralytics()  # offline, project-owned settings (no font download)
    from ultralytics.data.utils import check_det_dataset

    return check_det_dataset(str(data_yaml), autodownload=False, **kwargs)


def test_cli_prints_images_boxes_and_why_boxes_were_dropped(labelled, tmp_path):
    res = run("export", "yolo", labelled, "-o", tmp_path / "y", "--val-fraction", 0.2)
    assert res.exit_code == 0, res.output
    assert "images: 5 (4 train, 1 val)" in res.output
    assert "boxes: 10 written, 2 dropped; 1 outside the image; 1 smaller than --drop-below (1 px)" in res.output
    assert "percentile contrast normalisation" in res.output
    summary = json.loads((tmp_path / "y" / "source.json").read_text())
    assert summary["boxes"] == {"written": 10, "dropped": {"outside the image": 1, "smaller than min-box": 1}}
    n_lines = sum(len(p.read_text().splitlines()) for p in (tmp_path / "y" / "labels").rglob("*.txt"))
    assert n_lines == 10
    res = run("export", "yolo", labelled, "-o", tmp_path / "z", "--min-box", "nan")
    assert_one_line_error(res)
    assert not (tmp_path / "z").exists()


def test_min_box_must_be_a_finite_size(labelled, tmp_path):
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ParameterError, match="min_box"):
            export_yolo(labelled, tmp_path / "y", min_box=bad)


def test_val_fraction_zero_writes_no_val_split_and_ultralytics_will_not_train_on_it(labelled, tmp_path):
    res = run("export", "yolo", labelled, "-o", tmp_path / "y", "--val-fraction", 0)
    assert res.exit_code == 0, res.output
    assert "no validation split" in res.output
    text = (tmp_path / "y" / "data.yaml").read_text()
    assert text.startswith("# no validation split")
    assert yaml.safe_load(text)["val"] is None  # not images/train: no silent validation on training images
    assert not (tmp_path / "y" / "images" / "val").exists()
    assert len(list((tmp_path / "y" / "images" / "train").glob("*.png"))) == 5
    data = _ultralytics_check(tmp_path / "y" / "data.yaml")  # a valid dataset file ...
    assert not data["val"] and data["nc"] == 1 and data["channels"] == 1
    with pytest.raises(FileNotFoundError, match="val"):  # ... that training (split="val") refuses
        _ultralytics_check(tmp_path / "y" / "data.yaml", split="val")


def test_small_val_fraction_still_holds_out_one_image(labelled, tmp_path):
    export_yolo(labelled, tmp_path / "y", val_fraction=0.01)
    assert len(list((tmp_path / "y" / "images" / "val").glob("*.png"))) == 1
    assert len(list((tmp_path / "y" / "images" / "train").glob("*.png"))) == 4


def test_folder_can_move_and_ultralytics_still_finds_the_images(labelled, tmp_path, monkeypatch):
    export_yolo(labelled, tmp_path / "y", val_fraction=0.4)
    assert "path" not in yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "y", moved)
    monkeypatch.chdir(tmp_path / "elsewhere")  # neither the old nor the new folder
    data = _ultralytics_check(moved / "data.yaml", split="val")
    assert data["train"] == str((moved / "images" / "train").resolve())
    assert data["val"] == str((moved / "images" / "val").resolve())
    assert len(list(moved.joinpath("images", "val").glob("*.png"))) == 2


def test_16_bit_data_is_normalized_like_train_yolo(labelled, tmp_path):
    from simgen.train.yolo.config import YoloConfig

    export_yolo(labelled, tmp_path / "y", val_fraction=0)
    raw = tmp_path / "raw"
    export_yolo(labelled, raw, val_fraction=0, normalize="none")
    with open_dataset(labelled) as ds:
        for k in range(ds.n):
            png = np.asarray(Image.open(tmp_path / "y" / "images" / "train" / f"{k:06d}.png"))
            want = to_uint8(normalize_image(ds.image(k), YoloConfig().normalize))  # what train yolo feeds the model
            assert np.array_equal(png, want)
            assert png.max() == 255 and png.min() == 0 and png.std() > 50  # the full 8-bit range
            dark = np.asarray(Image.open(raw / "images" / "train" / f"{k:06d}.png"))
            assert dark.max() <= 16  # the old export: 12-bit counts / 65535 * 255, near-black
    summary = json.loads((tmp_path / "y" / "source.json").read_text())
    assert summary["normalize"] == "percentile" == YoloConfig().normalize
