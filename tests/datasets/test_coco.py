"""COCO JSON reader/writer: round trips, pycocotools compatibility, malformed files."""

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from simgen.datasets.formats.coco import coco_dict, coco_results, export_coco, read_coco, write_coco_json
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.errors import DataError, ParameterError


@pytest.fixture
def tem(tmp_path):
    """Three 48x64 images with instance masks and boxes carrying the instance id."""
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "tem.h5", kind="tem", class_names=["loop", "dot"]) as w:
        for i in range(3):
            mask = np.zeros((48, 64), np.uint16)
            rows = []
            for k in range(1, 4):
                r, c = int(rng.integers(4, 40)), int(rng.integers(4, 54))
                mask[r:r + 5, c:c + 7] = k
            for k in range(1, 4):
                rr, cc = np.nonzero(mask == k)
                if len(rr):
                    rows.append((cc.min(), rr.min(), cc.max() + 1, rr.max() + 1, k % 2, k))
            b = np.array(rows, float)
            w.append(rng.random((48, 64)).astype(np.float32), mask=mask, name=f"img{i}.png",
                     boxes={"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3], "class": b[:, 4].astype(int),
                            "instance": b[:, 5].astype(int)})
    return tmp_path / "tem.h5"


def test_export_and_read_back(tem, tmp_path):
    out = export_coco(tem, tmp_path / "coco")
    assert out == tmp_path / "coco" / "annotations.json"
    data = read_coco(out)
    with open_dataset(tem) as ds:
        ref = ds.table("boxes")
        assert data.names == ["img0.png", "img1.png", "img2.png"]
        assert data.class_names == ["loop", "dot"] and data.shapes == [(48, 64)] * 3
        for col in ("sample", "x0", "y0", "x1", "y1", "class"):
            np.testing.assert_allclose(data.boxes[col].to_numpy(float), ref[col].to_numpy(float), atol=1e-4)
        # RLE segmentation decodes to exactly the instance masks
        from pycocotools import mask as mask_utils

        raw = json.loads(out.read_text())
        for ann, row in zip(raw["annotations"], ref.itertuples()):
            m = mask_utils.decode(ann["segmentation"])
            np.testing.assert_array_equal(m.astype(bool), ds.mask(row.sample) == row.instance)
            assert ann["area"] == int(m.sum())
    assert sorted(p.name for p in (tmp_path / "coco" / "images").iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_pycocotools_loads_the_export_and_scores_it_perfectly(tem, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = export_coco(tem, tmp_path / "coco", images=False)
    assert not (tmp_path / "coco" / "images").exists()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        res = coco_results(read_coco(path).boxes.assign(score=0.9))
        with_masks = [dict(r, segmentation=g["segmentation"]) for r, g in zip(res, gt.dataset["annotations"])]
        for iou_type, results in (("bbox", res), ("segm", with_masks)):
            e = COCOeval(gt, gt.loadRes(results), iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
            assert e.stats[1] == pytest.approx(1.0)  # AP@0.5


def test_results_list_round_trip_with_custom_ids(tmp_path):
    boxes = pd.DataFrame({"sample": [0, 2], "x0": [1.0, 5.0], "y0": [2.0, 6.0], "x1": [4.0, 9.0], "y1": [6.0, 7.0],
                          "class": [1, 0], "score": [0.5, 0.25]})
    res = coco_results(boxes, image_ids=[7, 8, 9], category_ids=[11, 12])
    assert res[1]["image_id"] == 9 and res[0]["category_id"] == 12 and res[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]
    write_coco_json(res, tmp_path / "res.json")
    back = read_coco(tmp_path / "res.json", image_ids=[7, 8, 9], category_ids=[11, 12])
    assert back.is_results
    pd.testing.assert_frame_equal(back.boxes[boxes.columns], boxes.astype({"class": np.int16}), check_dtype=False)
    with pytest.raises(ParameterError, match="exists"):
        write_coco_json(res, tmp_path / "res.json")


def test_coco_dict_without_masks_and_empty():
    d = coco_dict(pd.DataFrame({"sample": [], "x0": [], "y0": [], "x1": [], "y1": [], "class": []}), ["a"], [(4, 5)],
                  ["loop"])
    assert d["annotations"] == [] and d["images"][0] == {"id": 1, "file_name": "a", "height": 4, "width": 5}


@pytest.mark.parametrize("content, match", [
    ("{bad", "not valid JSON"),
    ('{"foo": 1}', "not a COCO file"),
    ('{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": '
     '[{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}', "unknown image_id"),
    ('{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": '
     '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1]}]}', "negative box size"),
    ('{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": '
     '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]}', "4 finite numbers"),
])
def test_malformed_files(tmp_path, content, match):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(DataError, match=match):
        read_coco(tmp_path / "x.json")


def test_export_refuses_existing_output_and_missing_table(tem, tmp_path):
    (tmp_path / "coco").mkdir()
    with pytest.raises(ParameterError, match="exists"):
        export_coco(tem, tmp_path / "coco")
    with pytest.raises(DataError, match="no 'tracks' table"):
        export_coco(tem, tmp_path / "c2", table="tracks")
    assert not (tmp_path / "c2").exists()


def test_results_lists_with_absurd_ids_are_refused_not_allocated():
    from simgen.datasets.formats.coco import read_coco
    from simgen.errors import DataError

    with pytest.raises(DataError, match="outside 0..10000000"):
        read_coco([{"image_id": 2_000_000_000, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
    with pytest.raises(DataError, match="must be an integer"):
        read_coco([{"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}])
    with pytest.raises(DataError, match="is not an object"):
        read_coco(["not", "objects"])
    with pytest.raises(DataError, match="not a COCO file"):
        read_coco(42)


def test_mask_less_boxes_get_an_empty_segmentation_so_segm_eval_runs():
    import contextlib
    import io

    import pandas as pd
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from simgen.datasets.formats.coco import coco_dict

    boxes = pd.DataFrame({"sample": [0, 0], "x0": [1.0, 5.0], "y0": [1.0, 5.0], "x1": [4.0, 9.0],
                          "y1": [4.0, 9.0], "class": [0, 0]})
    d = coco_dict(boxes, ["a.png"], [(12, 16)], ["loop"])
    assert all("segmentation" in a and a["segmentation"]["size"] == [12, 16] for a in d["annotations"])
    gt = COCO()
    gt.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "score": 0.9,
                          "segmentation": d["annotations"][0]["segmentation"]}])
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
