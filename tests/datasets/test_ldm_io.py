"""LDM files: boxes from masks, instance classes, real-folder import (tiles, scale), pairs reading, writing."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.ldm_io import (
    boxes_from_mask,
    import_real,
    instance_classes_from_boxes,
    read_pairs,
    read_pairs_sample,
    tile_origins,
    write_generated,
)
from simgen.errors import DataError, ParameterError


def _mask():
    m = np.zeros((20, 30), np.uint16)
    m[2:6, 3:9] = 1
    m[10:18, 20:25] = 2
    m[15:17, 0:2] = 3
    return m


def test_boxes_from_mask_are_tight_pixel_edges():
    b = boxes_from_mask(_mask(), [0, 1, 1])
    assert list(b.columns) == ["x0", "y0", "x1", "y1", "class", "instance", "size"]
    np.testing.assert_array_equal(b[["x0", "y0", "x1", "y1"]].to_numpy(), [[3, 2, 9, 6], [20, 10, 25, 18], [0, 15, 2, 17]])
    assert list(b["class"]) == [0, 1, 1] and list(b["instance"]) == [1, 2, 3]
    np.testing.assert_allclose(b["size"], np.sqrt(4 * np.array([24, 40, 4]) / np.pi), rtol=1e-6)
    assert len(boxes_from_mask(np.zeros((5, 5), np.uint16))) == 0


def test_instance_classes_from_boxes():
    m = _mask()
    by_instance = pd.DataFrame({"x0": [0.0, 0], "y0": [0.0, 0], "x1": [1.0, 1], "y1": [1.0, 1], "class": [2, 1],
                                "instance": [3, 1]})
    np.testing.assert_array_equal(instance_classes_from_boxes(m, by_instance), [1, 0, 2])
    # without an instance column: best-overlapping box wins (loose boxes, as in real labels)
    loose = pd.DataFrame({"x0": [2.0, 19.0], "y0": [1.0, 9.0], "x1": [10.0, 26.0], "y1": [7.0, 19.0], "class": [4, 2]})
    np.testing.assert_array_equal(instance_classes_from_boxes(m, loose), [4, 2, 0])
    np.testing.assert_array_equal(instance_classes_from_boxes(m, None), [0, 0, 0])


def test_tile_origins_cover_the_image():
    assert tile_origins(256, 128) == [0, 128]
    assert tile_origins(300, 128) == [0, 128, 172]
    assert tile_origins(100, 128) == [0]


def _yolo_folder(root, n=2, size=(96, 80), masks=True):
    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("loop\n")
    for k in range(n):
        h, w = size
        img = (rng.uniform(0.5, 0.7, size) * 255).astype(np.uint8)
        m = np.zeros(size, np.uint16)
        m[10:20, 10:22] = 1
        m[60:70, 50:58] = 2
        m[40, 40] = 3  # a 1-px speck: dropped by min_area
        img[m > 0] = 40
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
        if masks:
            Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"im{k}.png")
        lines = [f"0 {(10 + 22) / 2 / w} {(10 + 20) / 2 / h} {12 / w} {10 / h}",
                 f"0 {(50 + 58) / 2 / w} {(60 + 70) / 2 / h} {8 / w} {10 / h}"]
        (root / "labels" / f"im{k}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_import_real_tiles_and_scale(tmp_path):
    folder = _yolo_folder(tmp_path / "real")
    res = import_real(folder, tmp_path / "p.h5", tile=64)
    assert res["n_tiles"] == 2 * 2 * 2 and res["class_names"] == ["loop"]  # 96x80 -> rows [0,32] x cols [0,16]
    with open_dataset(tmp_path / "p.h5") as ds:
        assert ds.image_shape == (64, 64) and ds.kind == "tem-real" and ds.class_names == ["loop"]
        assert ds.name(0) == "im0_y0_x0" and ds.provenance(1) == {"source_image": "im0", "row": 0, "col": 16,
                                                                  "scale": 1.0, "tile": 64}
        b = ds.rows("boxes", 0)
        # speck dropped; the second loop is cut by the tile border
        np.testing.assert_array_equal(b[["x0", "y0", "x1", "y1"]].to_numpy(), [[10, 10, 22, 20], [50, 60, 58, 64]])
        assert ds.mask(0).max() == 2
        np.testing.assert_allclose(ds.image(0)[12, 12], 40 / 255, atol=1e-6)
    pairs = read_pairs(tmp_path / "p.h5")
    assert len(pairs) == 8 and pairs.class_names == ["loop"] and pairs.class_maps[0].max() == 1
    res = import_real(folder, tmp_path / "half.h5", tile=0, scale=0.5)
    with open_dataset(tmp_path / "half.h5") as ds:
        assert ds.n == 2 and ds.image_shape == (48, 40)
        assert len(ds.rows("boxes", 0)) == 2
    with pytest.raises(ParameterError, match="exists"):
        import_real(folder, tmp_path / "p.h5", tile=64)


def test_import_real_errors(tmp_path):
    folder = _yolo_folder(tmp_path / "nomask", masks=False)
    (folder / "masks").rmdir()
    with pytest.raises(DataError, match="masks"):
        import_real(folder, tmp_path / "x.h5")
    folder = _yolo_folder(tmp_path / "real")
    with pytest.raises(DataError, match="smaller than tile"):
        import_real(folder, tmp_path / "x.h5", tile=128)
    with pytest.raises(ParameterError):
        import_real(folder, tmp_path / "x.h5", tile=4)
    with pytest.raises(ParameterError):
        import_real(folder, tmp_path / "x.h5", scale=0)
    assert not (tmp_path / "x.h5").exists()


def test_read_pairs_requires_masks_and_samples(tmp_path):
    with DatasetWriter(tmp_path / "nomask.h5", kind="t") as w:
        w.append(np.zeros((8, 8)))
    with pytest.raises(DataError, match="masks"):
        read_pairs(tmp_path / "nomask.h5")
    with DatasetWriter(tmp_path / "m.h5", kind="t", class_names=["a", "b"]) as w:
        for k in range(5):
            m = _mask()
            w.append(np.full((20, 30), k / 10), mask=m, boxes=boxes_from_mask(m, [1, 0, 1]))
    pairs = read_pairs_sample(tmp_path / "m.h5", 3)
    assert len(pairs) == 3 and pairs.source["indices"] == [0, 2, 4] and pairs.class_names == ["a", "b"]
    assert pairs.class_maps[0][3, 4] == 2 and pairs.class_maps[0][12, 21] == 1


def test_write_generated_derives_boxes(tmp_path):
    m = _mask()
    samples = [{"image": np.full((20, 30), 0.5, np.float32), "mask": m, "classes": np.array([0, 1, 0]),
                "provenance": {"index": i}, "name": f"g{i}"} for i in range(2)]
    res = write_generated(tmp_path / "g.h5", iter(samples), class_names=["a", "b"], generator={"x": 1}, seed=9)
    assert res["n"] == 2 and res["n_defects"] == 6
    with open_dataset(tmp_path / "g.h5") as ds:
        assert ds.kind == "ldm" and ds.attrs["seed"] == 9 and ds.name(1) == "g1"
        assert list(ds.rows("boxes", 1)["class"]) == [0, 1, 0] and ds.provenance(1) == {"index": 1}
    with pytest.raises(ParameterError, match="no samples"):
        write_generated(tmp_path / "e.h5", iter([]), class_names=["a"], generator={})
    assert not (tmp_path / "e.h5").exists()


def test_import_real_creme(realdata_dir, tmp_path):
    res = import_real(realdata_dir / "creme_316L", tmp_path / "creme.h5", tile=128, scale=0.25)
    assert res["n_images"] == 7 and res["skipped"] == []
    pairs = read_pairs(tmp_path / "creme.h5")
    assert len(pairs) == res["n_tiles"] and pairs.class_names == ["loop"]
    fg = np.concatenate([im[c > 0] for im, c in zip(pairs.images, pairs.class_maps)])
    bg = np.concatenate([im[c == 0] for im, c in zip(pairs.images, pairs.class_maps)])
    assert fg.mean() < bg.mean() - 0.1  # loops are dark in bright-field TEM
