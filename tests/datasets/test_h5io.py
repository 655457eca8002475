import h5py
import numpy as np
import pandas as pd
import pytest

from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import DatasetWriter, open_dataset, records_to_columns
from simgen.errors import ParameterError, SchemaError
from simgen.simulate.film import FilmConfig, FilmSampler


def _write(path, n=3, **kw):
    with DatasetWriter(path, kind="test", class_names=["a", "b"], generator={"g": 1}, seed=7, **kw) as w:
        for i in range(n):
            img = np.full((8, 10), i / 10, np.float32)
            pts = {"x": np.arange(i, dtype=float), "y": np.arange(i, dtype=float) + 1, "charge": np.ones(i, int)}
            boxes = pd.DataFrame({"x0": [1.0] * i, "y0": [2.0] * i, "x1": [3.0] * i, "y1": [4.0] * i, "class": [i % 2] * i})
            w.append(img, points=pts, boxes=boxes, provenance={"i": i})
    return path


def test_roundtrip(tmp_path):
    path = _write(tmp_path / "a.h5")
    with open_dataset(path) as ds:
        assert ds.n == 3 and ds.image_shape == (8, 10)
        assert ds.attrs["schema_version"] == 1 and ds.attrs["seed"] == 7
        assert ds.attrs["generator"] == {"g": 1}
        assert ds.class_names == ["a", "b"]
        assert ds.images.dtype == np.uint8 and ds.images.chunks == (1, 8, 10)
        np.testing.assert_allclose(ds.image(2), np.rint(0.2 * 255) / 255, atol=1e-7)
        assert len(ds.rows("points", 0)) == 0 and len(ds.rows("points", 2)) == 2
        assert list(ds.rows("points", 2)["sample"]) == [2, 2]
        assert list(ds.table("boxes").columns) == ["sample", "x0", "y0", "x1", "y1", "class"]
        assert len(ds.table("boxes")) == 3
        assert ds.provenance(1) == {"i": 1}
        assert ds.mask(0) is None


def test_lazy_mask_backfills_zero(tmp_path):
    with DatasetWriter(tmp_path / "m.h5", kind="t") as w:
        w.append(np.zeros((4, 4)))
        w.append(np.zeros((4, 4)), mask=np.ones((4, 4), int))
    with open_dataset(tmp_path / "m.h5") as ds:
        assert ds.mask(0).sum() == 0 and ds.mask(1).sum() == 16


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError), DatasetWriter(path, kind="t") as w:
        w.append(np.zeros((4, 4)))
        raise RuntimeError("killed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path):
    path = _write(tmp_path / "a.h5")
    before = path.read_bytes()
    with pytest.raises(ParameterError, match="exists"):
        DatasetWriter(path, kind="t")
    assert path.read_bytes() == before
    _write(path, n=1, overwrite=True)
    with open_dataset(path) as ds:
        assert ds.n == 1


def test_shape_mismatch_rejected(tmp_path):
    with pytest.raises(ParameterError, match="shape"), DatasetWriter(tmp_path / "s.h5", kind="t") as w:
        w.append(np.zeros((4, 4)))
        w.append(np.zeros((5, 4)))
    assert not (tmp_path / "s.h5").exists()


def test_inconsistent_columns_rejected(tmp_path):
    with pytest.raises(ParameterError, match="columns"), DatasetWriter(tmp_path / "c.h5", kind="t") as w:
        w.append(np.zeros((4, 4)), points={"x": [1.0], "y": [1.0], "charge": [1]})
        w.append(np.zeros((4, 4)), points={"x": [1.0], "y": [1.0], "charge": [1], "extra": [2.0]})


def test_missing_required_column():
    with pytest.raises(ParameterError, match="missing column 'charge'"):
        records_to_columns({"x": [1.0], "y": [2.0]}, "points")


def test_newer_schema_version_rejected(tmp_path):
    path = _write(tmp_path / "v.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema version 99.*upgrade simgen"):
        open_dataset(path)


def test_foreign_and_garbage_files_rejected(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(SchemaError, match="not a simgen dataset"):
        open_dataset(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(SchemaError, match="cannot read"):
        open_dataset(garbage)
    with pytest.raises(SchemaError, match="does not exist"):
        open_dataset(tmp_path / "missing.h5")


def test_corrupt_table_index_rejected(tmp_path):
    path = _write(tmp_path / "t.h5")
    with h5py.File(path, "a") as f:
        del f["labels/points/offsets"]
        f["labels/points/offsets"] = np.array([0, 1])
    with pytest.raises(SchemaError, match="table 'points'"):
        open_dataset(path)


def test_label_only_dataset(tmp_path):
    with DatasetWriter(tmp_path / "p.h5", kind="predictions") as w:
        w.append(boxes={"x0": [1.0], "y0": [1.0], "x1": [2.0], "y1": [3.0], "class": [0], "score": [0.9]},
                 name="img_a.png", shape=(100, 200))
    with open_dataset(tmp_path / "p.h5") as ds:
        assert ds.images is None and ds.shape(0) == (100, 200) and ds.name(0) == "img_a.png"
        assert ds.rows("boxes", 0)["score"].iloc[0] == pytest.approx(0.9)


def test_generated_film_is_deterministic(tmp_path):
    s = FilmSampler(FilmConfig(size=32, n_defects=(1, 3), min_separation=4, margin=2, box_size=4), seed=3, store_phase=True)
    a = write_dataset(tmp_path / "a.h5", s, 5)
    b = write_dataset(tmp_path / "b.h5", s, 3, start=2)
    with open_dataset(a) as da, open_dataset(b) as db:
        np.testing.assert_array_equal(da.images[2:], db.images[:])
        pd.testing.assert_frame_equal(
            da.table("points").query("sample >= 2").assign(sample=lambda d: d["sample"] - 2).reset_index(drop=True),
            db.table("points"),
        )
        assert da.phase(0).dtype == np.float32 and np.isfinite(da.phase(4)).all()
        assert db.attrs["first_index"] == 2


def test_empty_record_list_and_padded_masks(tmp_path):
    with DatasetWriter(tmp_path / "e.h5", kind="predictions", attrs={"masks_padded": 1}) as w:
        w.append(boxes=[], mask=np.ones((6, 8), np.uint16), shape=(4, 5), name="a")
        w.append(boxes={"x0": [1.0], "y0": [1.0], "x1": [2.0], "y1": [2.0], "class": [0]},
                 mask=np.full((6, 8), 2, np.uint16), shape=(6, 8), name="b")
    with open_dataset(tmp_path / "e.h5") as ds:
        assert len(ds.rows("boxes", 0)) == 0 and len(ds.rows("boxes", 1)) == 1
        assert ds.mask(0).shape == (4, 5) and ds.mask(1).shape == (6, 8)


@pytest.mark.parametrize("damage", ["huge", "decreasing", "short", "sample_column"])
def test_a_damaged_table_index_is_refused_not_misread(tmp_path, damage):
    """offsets[2] = 1e9 once exported boxes onto the wrong images without a word."""
    path = tmp_path / "d.h5"
    with DatasetWriter(path, kind="test") as w:
        for i in range(3):
            w.append(np.zeros((8, 8), np.float32),
                     boxes={"x0": [1.0 + i], "y0": [1.0], "x1": [3.0], "y1": [3.0], "class": [0]})
    with h5py.File(path, "r+") as f:
        g = f["labels/boxes"]
        off = g["offsets"][()]
        if damage == "huge":
            off[2] = 10 ** 9
        elif damage == "decreasing":
            off[1], off[2] = 2, 1
        elif damage == "short":
            del g["offsets"]
            g.create_dataset("offsets", data=off[:-1])
            off = None
        else:
            s = g["sample"][()]
            s[0], s[1] = 1, 0
            g["sample"][...] = s
            off = None
        if off is not None:
            g["offsets"][...] = off
    with pytest.raises(SchemaError, match="damaged|offsets|index"), open_dataset(path) as ds:
        ds.rows("boxes", 1)


@pytest.mark.parametrize("cut", ["labels/boxes/offsets", "labels/boxes/x0", "images"])
def test_preview_of_a_damaged_file_is_one_line(tmp_path, cut):
    from clitools import assert_one_line_error, run

    path = tmp_path / "d.h5"
    with DatasetWriter(path, kind="test") as w:
        for _ in range(2):
            w.append(np.zeros((8, 8), np.float32), boxes={"x0": [1.0], "y0": [1.0], "x1": [3.0], "y1": [3.0], "class": [0]})
    with h5py.File(path, "r+") as f:
        del f[cut]
    res = run("preview", path, "-o", tmp_path / "p.png")
    assert_one_line_error(res)
    assert not (tmp_path / "p.png").exists()
