"""One data-source layer: every input kind behind ``open_source``, and every reader built on it."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from simgen.cli import main
from simgen.datasets import imageio, normalize
from simgen.datasets.formats.coco import export_coco, read_coco
from simgen.datasets.formats.mot import export_mot, read_mot
from simgen.datasets.formats.yolo import export_yolo
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.preview import preview_sheet
from simgen.datasets.shards.read import ShardedDataset, open_any
from simgen.datasets.shards.write import generate_sharded
from simgen.datasets.sources import SOURCE_KINDS, Source, open_source
from simgen.errors import DataError, SchemaError
from simgen.rng import sample_rng

N, K, SIZE = 7, 3, 32  # 3 shards: 3, 3, 1


class DotSampler:
    """A tiny video-like sampler: dots with boxes, instance masks and tracks (picklable, seeded by index)."""

    kind = "video"
    class_names = ["dot", "ring"]
    seed = 5

    def describe(self) -> dict:
        return {"sampler": "DotSampler", "size": SIZE, "seed": self.seed}

    def __call__(self, i: int) -> dict:
        rng = sample_rng(self.seed, i)
        img = np.full((SIZE, SIZE), 0.7, np.float32) + rng.normal(0, 0.02, (SIZE, SIZE)).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.uint16)
        xs = np.array([8.0, 22.0]) + (i % 3)
        ys = np.array([10.0, 20.0])
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
        for n, (x, y) in enumerate(zip(xs, ys), 1):
            disc = (xx - x) ** 2 + (yy - y) ** 2 < 9
            img[disc] = 0.2
            mask[disc] = n
        boxes = {"x0": xs - 3, "y0": ys - 3, "x1": xs + 3, "y1": ys + 3, "class": np.array([0, 1], np.int16),
                 "instance": np.array([1, 2], np.int32)}
        tracks = {"track_id": np.array([0, 1]), "x": xs, "y": ys, "x0": xs - 3, "y0": ys - 3, "x1": xs + 3,
                  "y1": ys + 3}
        points = {"x": xs, "y": ys, "charge": np.array([1, -1])}
        return {"image": np.clip(img, 0, 1), "boxes": boxes, "tracks": tracks, "points": points, "mask": mask,
                "name": f"frame{i:03d}"}


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "set"
    generate_sharded(out, DotSampler(), N, K, serial=True)
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("single") / "one.h5", DotSampler(), N)


@pytest.fixture
def yolo_folder(tmp_path):
    root = tmp_path / "yolo"
    for d in ("images", "labels", "masks"):
        (root / d).mkdir(parents=True)
    (root / "classes.txt").write_text("loop\n")
    for i, (h, w) in enumerate(((40, 50), (30, 30))):
        img = np.full((h, w), 180, np.uint8)
        img[5:11, 5:11] = 40
        mask = np.zeros((h, w), np.uint8)
        mask[5:11, 5:11] = 1
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        (root / "labels" / f"im{i}.txt").write_text(f"0 {8 / w:.6f} {8 / h:.6f} {6 / w:.6f} {6 / h:.6f}\n")
    return root


def _image_folder(root, stems=("b", "a"), shape=(20, 24)):
    root.mkdir(parents=True)
    for k, stem in enumerate(stems):
        Image.fromarray(np.full(shape, 50 * (k + 1), np.uint8)).save(root / f"{stem}.png")
    return root


def _shard_inputs(shard_set):
    return {"directory": shard_set, "manifest": shard_set / "manifest.json", "virtual": shard_set / "virtual.h5"}


# -- one interface for every kind ----------------------------------------------------------------
@pytest.mark.parametrize("which", ["directory", "manifest", "virtual"])
def test_shard_set_reads_like_the_single_file(shard_set, single, which):
    path = _shard_inputs(shard_set)[which]
    with open_source(path) as src, open_source(single) as ref:
        assert isinstance(src, Source) and src.kind == "shards" and ref.kind == "hdf5"
        assert isinstance(src.dataset, ShardedDataset) and src.path == path
        assert len(src) == len(ref) == src.n == N and src.names == ref.names == [f"frame{i:03d}" for i in range(N)]
        assert src.class_names == ref.class_names == ["dot", "ring"] and src.sample_kind == "video"
        assert src.has_labels and src.has_masks and src.has_images and src.named
        assert src.tables == ref.tables == ["boxes", "points", "tracks"]
        for k in range(N):
            img = src.image(k)
            assert img.dtype == np.float32 and img.shape == src.shape(k) == (SIZE, SIZE)
            assert img.min() >= 0 and img.max() <= 1
            np.testing.assert_array_equal(img, ref.image(k))
            pd.testing.assert_frame_equal(src.boxes(k), ref.boxes(k))  # `sample` = index in the set
            np.testing.assert_array_equal(src.mask(k), ref.mask(k))
            assert src.name(k) == ref.name(k)
        pd.testing.assert_frame_equal(src.read_table("tracks"), ref.read_table("tracks"))
        with open_source(shard_set) as again:
            assert src.checksum() == again.checksum() != ref.checksum()


def test_virtual_file_opens_its_shard_set(shard_set):
    with open_any(shard_set / "virtual.h5") as ds:
        assert isinstance(ds, ShardedDataset) and ds.n == N
    with pytest.raises(SchemaError, match="not a simgen dataset"):  # any other foreign file stays foreign
        with h5py.File(shard_set.parent / "foreign.h5", "w") as f:
            f["x"] = np.zeros(2)
        open_any(shard_set.parent / "foreign.h5")


def test_yolo_folder_and_image_folder(yolo_folder, tmp_path):
    with open_source(yolo_folder) as src:
        assert src.kind == "yolo" and src.dataset is None and src.names == ["im0", "im1"]
        assert src.has_labels and src.has_masks and src.class_names == ["loop"] and src.tables == ["boxes"]
        assert src.shape(0) == (40, 50) and src.image(0).shape == (40, 50) and src.image(0).dtype == np.float32
        b = src.boxes(0)
        np.testing.assert_allclose(b[["x0", "y0", "x1", "y1"]].to_numpy()[0], [5, 5, 11, 11], atol=1e-3)
        assert src.mask(1).shape == (30, 30) and src.mask(1).max() == 1
        table = src.read_table()
        assert table["sample"].tolist() == [0, 1] and list(table.columns[:5]) == ["sample", "x0", "y0", "x1", "y1"]
        assert src.with_table("points").boxes(0) is None and not src.with_table("points").has_labels
    folder = _image_folder(tmp_path / "plain")
    with open_source(folder) as src:
        assert src.kind == "images" and src.names == ["a", "b"] and len(src) == 2
        assert not src.has_labels and not src.has_masks and src.boxes(0) is None and src.mask(0) is None
        assert src.shape(1) == (20, 24) and src.image(0).max() == pytest.approx(100 / 255)
        assert src.read_table() is None and src.sample_kind == "images"
    assert set(SOURCE_KINDS) == {"hdf5", "shards", "yolo", "images"}


def test_subset_is_a_view_in_the_given_order(shard_set):
    with open_source(shard_set) as src:
        fold = src.subset(["frame005", "frame001"])
        assert fold.dataset is src.dataset  # nothing reopened
        assert fold.names == ["frame005", "frame001"] and fold.indices.tolist() == [5, 1] and len(fold) == 2
        np.testing.assert_array_equal(fold.image(0), src.image(5))
        tracks = fold.read_table("tracks")
        assert tracks["sample"].tolist() == [0, 0, 1, 1]  # renumbered to the view's samples, in order
        assert fold.checksum() != src.checksum()
        fold.close()  # a view never closes its parent's files
        np.testing.assert_array_equal(src.image(6), src.subset(["frame006"]).image(0))
        with pytest.raises(DataError, match="no sample"):
            src.subset(["frame999"])
        with pytest.raises(DataError, match="not in this subset"):
            fold.subset(["frame002"])
        with pytest.raises(IndexError):
            fold.image(2)
    with open_source(shard_set, names=["frame002"]) as one:
        assert len(one) == 1 and one.name(0) == "frame002" and one.name(-1) == "frame002"


def test_open_source_of_an_open_source_or_dataset_leaves_it_open(single):
    with open_source(single) as src:
        with open_source(src, names=["frame003"], table="tracks") as view:
            assert view.name(0) == "frame003" and "track_id" in view.boxes(0)
        assert src.table == "boxes" and len(src.image(0))  # still open, still reads boxes
    with open_dataset(single) as ds:
        with open_source(ds) as src:
            assert src.kind == "hdf5" and len(src) == N
        assert ds.image(0).shape == (SIZE, SIZE)  # the caller's dataset is still open


def test_errors_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        open_source(tmp_path / "missing")
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        open_source(tmp_path / "empty")
    (tmp_path / "yolo_empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_source(tmp_path / "yolo_empty")
    labels = tmp_path / "labels.h5"
    with DatasetWriter(labels, kind="predictions") as w:
        w.append(None, boxes={"x0": [1.0], "y0": [1.0], "x1": [3.0], "y1": [3.0], "class": [0]}, shape=(8, 9))
    with pytest.raises(DataError, match="label-only"):
        open_source(labels)
    with open_source(labels, require_images=False) as src:  # evaluation and exports read label-only files
        assert not src.has_images and src.shape(0) == (8, 9) and len(src.boxes(0)) == 1
        with pytest.raises(DataError, match="label-only"):
            src.image(0)
        with pytest.raises(DataError, match="label-only"):
            open_source(src)
    empty = tmp_path / "empty.h5"
    DatasetWriter(empty, kind="film").close()
    with pytest.raises(DataError, match="no samples"):
        open_source(empty)
    twins = _image_folder(tmp_path / "twins", stems=("a",))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(twins / "a.tif")
    with pytest.raises(DataError, match="two images named 'a'"):
        open_source(twins)


def test_one_to_uint8():
    assert imageio.to_uint8 is normalize.to_uint8
    assert normalize.to_uint8(np.array([[-1.0, 0.5, 2.0]])).tolist() == [[0, 128, 255]]
    img = np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60)
    assert normalize.resize_image(img, 0.5).shape == (20, 30) and normalize.resize_image(img, 1.0) is img


# -- preview and export accept shard sets ------------------------------------------------------------
@pytest.mark.parametrize("which", ["directory", "virtual"])
def test_preview_of_shards_and_folders(shard_set, yolo_folder, tmp_path, which):
    out = preview_sheet(_shard_inputs(shard_set)[which], tmp_path / "s.png", n=4)
    assert out.stat().st_size > 1000
    assert preview_sheet(yolo_folder, tmp_path / "y.png").stat().st_size > 1000


@pytest.mark.parametrize("which", ["directory", "manifest", "virtual"])
def test_exports_from_shards_match_the_single_file(shard_set, single, tmp_path, which):
    path = _shard_inputs(shard_set)[which]
    data_yaml = export_yolo(path, tmp_path / "y", val_fraction=0.3, normalize="none")  # stored levels
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "dot", 1: "ring"}
    with open_source(tmp_path / "y") as exported, open_source(single) as ref:
        assert exported.names == ref.names
        for k in range(N):
            np.testing.assert_allclose(exported.image(k), ref.image(k), atol=0.6 / 255)
            np.testing.assert_allclose(exported.boxes(k)[["x0", "y0", "x1", "y1"]].to_numpy(),
                                       ref.boxes(k)[["x0", "y0", "x1", "y1"]].to_numpy(), atol=1e-3)
    ann = export_coco(path, tmp_path / "c")
    ref = export_coco(single, tmp_path / "c_ref")
    a, b = json.loads(ann.read_text()), json.loads(ref.read_text())
    assert a["annotations"] == b["annotations"] and a["images"] == b["images"] and a["info"]["kind"] == "video"
    assert all("segmentation" in x for x in a["annotations"])  # masks of the instance column
    assert len(read_coco(ann).boxes) == 2 * N
    gt = export_mot(path, tmp_path / "m", box_size=6)
    pd.testing.assert_frame_equal(read_mot(gt), read_mot(export_mot(single, tmp_path / "m_ref", box_size=6)))
    assert len(list((tmp_path / "m" / "img1").glob("*.jpg"))) == N


def test_export_of_a_subset_and_label_only_coco(single, tmp_path):
    with open_source(single) as src:
        fold = src.subset(["frame004", "frame006"])
        export_mot(fold, tmp_path / "m", images=False)
        tracks = read_mot(tmp_path / "m" / "gt" / "gt.txt")
        assert sorted(tracks["sample"].unique().tolist()) == [0, 1]
    labels = tmp_path / "pred.h5"
    with DatasetWriter(labels, kind="predictions") as w:
        w.append(None, boxes={"x0": [1.0], "y0": [1.0], "x1": [3.0], "y1": [3.0], "class": [0]}, shape=(8, 9),
                 name="x.png")
    assert read_coco(export_coco(labels, tmp_path / "c", images=False)).shapes == [(8, 9)]
    with pytest.raises(DataError, match="no-images"):
        export_coco(labels, tmp_path / "c2")


def test_cli_preview_and_export_take_shard_sets(shard_set, tmp_path):
    from click.testing import CliRunner

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    for k, path in enumerate((shard_set, shard_set / "virtual.h5")):
        res = run("preview", path, "-o", tmp_path / f"p{k}.png", "--n", 3)
        assert res.exit_code == 0, res.output
        res = run("export", "yolo", path, "-o", tmp_path / f"y{k}")
        assert res.exit_code == 0 and (tmp_path / f"y{k}" / "data.yaml").exists(), res.output
    for fmt, extra in (("coco", []), ("mot", ["--box-size", 6])):
        for k, path in enumerate((shard_set / "manifest.json", shard_set / "virtual.h5")):
            res = run("export", fmt, path, "-o", tmp_path / f"{fmt}{k}", *extra)
            assert res.exit_code == 0, res.output
    res = run("info", shard_set / "virtual.h5", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["n_samples"] == N
    res = run("preview", tmp_path / "missing", "-o", tmp_path / "x.png")
    assert res.exit_code == 2 and res.output.startswith("Error:") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
