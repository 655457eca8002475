"""Loading predictions / ground truth from every supported source and pairing frames."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError
from simgen.evaluate.io import align, detect_format, load_annotations


def _write_h5(path, n=3, names=None, points=False, tracks=True, score=False, shape=(40, 50)):
    with DatasetWriter(path, kind="video", class_names=["loop", "dot"]) as w:
        for i in range(n):
            x = np.array([10.0, 30.0]) + i
            y = np.array([10.0, 20.0])
            rec = {"x0": x - 3, "y0": y - 3, "x1": x + 3, "y1": y + 3, "class": [0, 1]}
            if score:
                rec["score"] = [0.9, 0.4]
            kwargs = {"points": {"x": x, "y": y, "charge": [1, -1]}} if points else {"boxes": rec}
            if tracks:
                kwargs["tracks"] = {"track_id": [0, 1], "x": x, "y": y}
            w.append(np.zeros(shape, np.float32), name=None if names is None else names[i], **kwargs)
    return path


def _yolo_folder(root, stems, boxes_per_stem, shape=(40, 50), images=True, conf=False):
    h, w = shape
    (root / "labels").mkdir(parents=True)
    if images:
        (root / "images").mkdir()
    for stem in stems:
        if images:
            Image.fromarray(np.zeros(shape, np.uint8)).save(root / "images" / f"{stem}.png")
        lines = []
        for (x0, y0, x1, y1, c, s) in boxes_per_stem.get(stem, []):
            row = f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
            lines.append(row + (f" {s}" if conf else ""))
        if stem in boxes_per_stem:
            (root / "labels" / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return root


def test_detect_format(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "seq" / "gt").mkdir(parents=True)
    (tmp_path / "seq" / "gt" / "gt.txt").write_text("")
    assert detect_format(tmp_path / "a.json") == "coco"
    assert detect_format(tmp_path / "seq") == "mot"
    (tmp_path / "x.npy").write_text("")
    with pytest.raises(DataError, match="unknown file type"):
        detect_format(tmp_path / "x.npy")
    with pytest.raises(DataError, match="does not exist"):
        detect_format(tmp_path / "nope.h5")


def test_hdf5_boxes_tracks_and_points(tmp_path):
    with load_annotations(_write_h5(tmp_path / "a.h5", names=["f0.png", "f1.png", "f2.png"])) as a:
        assert a.fmt == "hdf5" and a.named and a.names == ["f0", "f1", "f2"] and a.has_boxes
        assert len(a.table) == 6 and a.tracks is not None and len(a.tracks) == 6
        assert a.shapes == [(40, 50)] * 3 and a.class_names == ["loop", "dot"]
        np.testing.assert_allclose(a.table["x"].iloc[:2], [10.0, 30.0])  # box centres
        assert a.image(0).shape == (40, 50)
    with load_annotations(_write_h5(tmp_path / "p.h5", points=True, tracks=False)) as a:
        assert not a.has_boxes and not a.named and a.tracks is None
        assert a.table["class"].tolist() == [0] * 6


def test_yolo_label_only_predictions_pair_by_stem_with_confidence(tmp_path):
    gt_boxes = {"img_a": [(5, 5, 15, 15, 0, None)], "img_b": [(20, 10, 30, 22, 0, None)]}
    gt = load_annotations(_yolo_folder(tmp_path / "gt", ["img_a", "img_b"], gt_boxes))
    # predictions: only labels, 6th column = confidence, no file for img_a (nothing detected)
    pred_dir = _yolo_folder(tmp_path / "pred", ["img_b"], {"img_b": [(20, 10, 30, 22, 0, 0.8)]},
                            images=False, conf=True)
    pred = align(load_annotations(pred_dir, like=gt), gt)
    assert pred.table["sample"].tolist() == [1]
    assert pred.table["score"].tolist() == pytest.approx([0.8])
    np.testing.assert_allclose(pred.table[["x0", "y0", "x1", "y1"]].iloc[0], [20, 10, 30, 22], atol=1e-3)


def test_unknown_prediction_frames_are_an_error(tmp_path):
    gt = load_annotations(_yolo_folder(tmp_path / "gt", ["a"], {"a": []}))
    pred_dir = _yolo_folder(tmp_path / "pred", ["zzz"], {"zzz": [(1, 1, 5, 5, 0, 0.5)]}, images=False, conf=True)
    with pytest.raises(DataError, match="no ground-truth image"):
        load_annotations(pred_dir, like=gt)
    with_images = _yolo_folder(tmp_path / "pred2", ["zzz"], {"zzz": [(1, 1, 5, 5, 0, 0.5)]}, conf=True)
    with pytest.raises(DataError, match="not in ground truth"):
        align(load_annotations(with_images), gt)


def test_frames_paired_by_index_must_exist_in_ground_truth(tmp_path):
    gt = load_annotations(_write_h5(tmp_path / "gt.h5", n=2))
    pd.DataFrame({"sample": [0, 5], "x": [1.0, 2.0], "y": [1.0, 2.0]}).to_csv(tmp_path / "p.csv", index=False)
    pred = load_annotations(tmp_path / "p.csv", like=gt)
    with pytest.raises(DataError, match="frame id 5"):
        align(pred, gt)
    gt.close()


def test_coco_dataset_and_results_list(tmp_path):
    data = {"images": [{"id": 10, "file_name": "x.png", "width": 50, "height": 40},
                       {"id": 20, "file_name": "y.png", "width": 50, "height": 40}],
            "categories": [{"id": 3, "name": "loop"}],
            "annotations": [{"id": 1, "image_id": 20, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12,
                             "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 20, "category_id": 3, "bbox": [1, 2, 3, 4],
                                                    "score": 0.7}]))
    gt = load_annotations(tmp_path / "gt.json")
    assert gt.names == ["x", "y"] and gt.class_names == ["loop"] and gt.table["sample"].tolist() == [1]
    np.testing.assert_allclose(gt.table[["x0", "y0", "x1", "y1"]].iloc[0], [1, 2, 4, 6])
    pred = align(load_annotations(tmp_path / "res.json", like=gt), gt)
    assert pred.table["sample"].tolist() == [1] and pred.table["score"].tolist() == [0.7]


def test_mot_file_and_folder(tmp_path):
    (tmp_path / "seq" / "gt").mkdir(parents=True)
    (tmp_path / "seq" / "gt" / "gt.txt").write_text("1,1,10,10,4,4,1,1,1\n3,1,12,10,4,4,1,1,1\n")
    (tmp_path / "seq" / "seqinfo.ini").write_text("[Sequence]\nname=seq\nseqLength=4\nimWidth=64\nimHeight=48\n")
    (tmp_path / "trk.txt").write_text("1,5,10,10,4,4,0.9,-1,-1,-1\n")
    gt = load_annotations(tmp_path / "seq")
    assert gt.n == 4 and gt.shapes[0] == (48, 64) and gt.tracks["track_id"].tolist() == [0, 0]
    assert gt.table["sample"].tolist() == [0, 2]
    pred = align(load_annotations(tmp_path / "trk.txt", like=gt), gt)
    assert pred.tracks["track_id"].tolist() == [4] and pred.table["score"].tolist() == [0.9]


def test_label_only_yolo_predictions_against_unnamed_hdf5(tmp_path):
    gt = load_annotations(_write_h5(tmp_path / "gt.h5", n=3))  # frames named 000000, 000001, 000002
    assert not gt.named and gt.names == ["000000", "000001", "000002"]
    pred_dir = _yolo_folder(tmp_path / "pred", ["000002"], {"000002": [(7, 7, 13, 13, 0, 0.9)]}, images=False,
                            conf=True, shape=(40, 50))
    pred = align(load_annotations(pred_dir, like=gt), gt)
    assert pred.table["sample"].tolist() == [2]
    np.testing.assert_allclose(pred.table[["x0", "x1"]].iloc[0], [7, 13], atol=1e-3)
    gt.close()


def test_shard_sets_and_virtual_files_are_hdf5_sources(tmp_path):
    """A sharded set (directory, manifest.json, virtual.h5) evaluates like the same samples in one file."""
    from simgen.datasets.shards.write import generate_sharded

    class Replay:
        kind, seed, class_names = "video", 0, ["loop", "dot"]

        def __init__(self, path):
            self.path = str(path)

        def describe(self):
            return {"replay": self.path}

        def __call__(self, i):
            from simgen.datasets.h5io import open_dataset

            with open_dataset(self.path) as ds:
                return {"image": ds.image(i), "name": ds.name(i),
                        **{t: ds.rows(t, i).drop(columns="sample") for t in ("boxes", "tracks")}}

    single = _write_h5(tmp_path / "one.h5", n=5, names=[f"im{i}.png" for i in range(5)])
    shards = tmp_path / "set"
    generate_sharded(shards, Replay(single), 5, 2, serial=True)
    assert detect_format(shards) == detect_format(shards / "manifest.json") == "hdf5"
    with load_annotations(single) as ref:
        for path in (shards, shards / "manifest.json", shards / "virtual.h5"):
            with load_annotations(path) as ann:
                assert ann.fmt == "hdf5" and ann.named and ann.names == ref.names == [f"im{i}" for i in range(5)]
                pd.testing.assert_frame_equal(ann.table, ref.table)
                pd.testing.assert_frame_equal(ann.tracks, ref.tracks)
                assert ann.shapes == ref.shapes and ann.class_names == ["loop", "dot"]
                np.testing.assert_array_equal(ann.image(3), ref.image(3))
