"""Class-agnostic NMS (issue 16): a two-class film model's +1 and -1 boxes on one defect become one box."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import open_dataset
from simgen.train.tiling import Window, merge_tiles


def _boxes(rows):
    df = pd.DataFrame(rows, columns=["x0", "y0", "x1", "y1", "class", "score"])
    return df.astype({"class": np.int16, "score": np.float32})


def test_merge_tiles_agnostic_merges_a_plus_minus_duplicate():
    tiles = [_boxes([(10, 10, 26, 26, 0, 0.9), (11, 10, 27, 26, 1, 0.6), (40, 40, 56, 56, 1, 0.8)]),
             _boxes([(1, 11, 17, 27, 1, 0.7)])]  # the same defect seen from the right-hand tile
    windows = [Window(0, 0, 64, 64, (0.0, 0.0, 64.0, 64.0)), Window(0, 10, 64, 74, (0.0, 0.0, 74.0, 64.0))]
    per_class = merge_tiles(tiles, windows, iou=0.5)
    assert len(per_class) == 3 and sorted(per_class["class"]) == [0, 1, 1]  # plus and minus box on one defect
    merged = merge_tiles(tiles, windows, iou=0.5, agnostic=True)
    assert len(merged) == 2  # one box per defect, the best-scoring class kept
    assert merged.iloc[0][["x0", "class"]].tolist() == [10, 0] and merged.iloc[1]["class"] == 1
    single = merge_tiles(tiles[:1], windows[:1], iou=0.5, agnostic=True)  # inside one tile too
    assert len(single) == 2 and len(merge_tiles(tiles[:1], windows[:1], iou=0.5)) == 3


@pytest.fixture(scope="module")
def two_class_weights(tmp_path_factory):
    """A YOLOv8n whose head puts class-0 boxes (P3) and overlapping, lower-scoring class-1 boxes (P4) everywhere."""
    import torch

    from simgen.train.yolo.checkpoint import save_yolo_checkpoint
    from simgen.train.yolo.offline import import_ultralytics

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    head = model.model[-1]
    for level, (cls_bias, dist) in enumerate([((4.0, -10.0), 2), ((-10.0, 3.0), 1), ((-10.0, -10.0), 1)]):
        cls, box = head.cv3[level][-1], head.cv2[level][-1]
        torch.nn.init.zeros_(cls.weight)
        cls.bias.data = torch.tensor(cls_bias)
        torch.nn.init.zeros_(box.weight)  # every side of every box `dist` strides from its anchor: 32-px squares
        bias = torch.zeros(4 * head.reg_max)
        bias[torch.arange(4) * head.reg_max + dist] = 20.0
        box.bias.data = bias
    model.names = {0: "plus", 1: "minus"}
    path = tmp_path_factory.mktemp("agnostic") / "two.pt"
    save_yolo_checkpoint(path, {"model": model, "train_args": {"imgsz": 64}, "simgen": {"imgsz": 64, "tile": 0}})
    return path


def _cross_class_iou(df):
    import torch
    from torchvision.ops import box_iou

    xy = torch.tensor(df[["x0", "y0", "x1", "y1"]].to_numpy(np.float32))
    cls = df["class"].to_numpy()
    iou = box_iou(xy, xy).numpy()[np.ix_(cls == 0, cls == 1)]
    return float(iou.max()) if iou.size else 0.0


def test_detector_and_predict_cli_with_agnostic_nms(two_class_weights, tmp_path):
    from simgen.train.yolo.predict import YoloDetector

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    kw = {"device": "cpu", "threads": 1, "conf": 0.5, "iou": 0.5, "max_det": 300}
    plain = YoloDetector(two_class_weights, **kw).detect(image)
    assert set(plain["class"]) == {0, 1} and _cross_class_iou(plain) > 0.5  # duplicates across classes
    det = YoloDetector(two_class_weights, agnostic_nms=True, **kw)
    merged = det.detect(image)
    assert 0 < len(merged) < len(plain) and set(merged["class"]) == {0} and det.describe()["agnostic_nms"]
    data = tmp_path / "img.h5"
    from simgen.datasets.h5io import DatasetWriter

    with DatasetWriter(data, kind="film", class_names=["plus", "minus"]) as w:
        w.append(image, name="a")
    out = {}
    for flag in ("--agnostic-nms", "--no-agnostic-nms"):
        out[flag] = tmp_path / f"{flag}.h5"
        res = CliRunner().invoke(main, ["predict", str(two_class_weights), str(data), "-o", str(out[flag]),
                                        "--device", "cpu", "--conf", "0.5", "--no-progress", flag])
        assert res.exit_code == 0, res.output
    with open_dataset(out["--agnostic-nms"]) as a, open_dataset(out["--no-agnostic-nms"]) as b:
        assert len(a.table("boxes")) == len(merged) and len(b.table("boxes")) > len(merged)
        assert a.attrs["generator"]["agnostic_nms"] is True
