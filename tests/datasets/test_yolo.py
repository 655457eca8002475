import numpy as np
import pytest
import yaml

from simgen.datasets.formats.yolo import export_yolo, format_yolo_labels, open_yolo_folder, read_yolo_labels
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.errors import DataError, ParameterError
from simgen.simulate.film import FilmConfig, FilmSampler


@pytest.fixture
def film(tmp_path):
    s = FilmSampler(FilmConfig(size=64, n_defects=(2, 5), min_separation=8, margin=4, box_size=10, single_class=False),
                    seed=1)
    return write_dataset(tmp_path / "film.h5", s, 6)


def test_export_roundtrip(film, tmp_path):
    data_yaml = export_yolo(film, tmp_path / "yolo", val_fraction=0.34, seed=0)
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["names"] == {0: "plus", 1: "minus"} and meta["val"] == "images/val"
    n_train = len(list((tmp_path / "yolo/images/train").glob("*.png")))
    n_val = len(list((tmp_path / "yolo/images/val").glob("*.png")))
    assert (n_train, n_val) == (4, 2)
    with open_dataset(film) as ds:
        for split in ("train", "val"):
            for lbl in (tmp_path / "yolo/labels" / split).glob("*.txt"):
                i = int(lbl.stem)
                got = read_yolo_labels(lbl, 64, 64)
                want = ds.rows("boxes", i)
                np.testing.assert_allclose(got[["x0", "y0", "x1", "y1"]].to_numpy(), want[["x0", "y0", "x1", "y1"]].to_numpy(), atol=1e-3)
                assert list(got["class"]) == list(want["class"])


def test_split_export_reads_back_as_one_set(film, tmp_path):
    """`simgen export yolo` writes images/{train,val}/; the reader sees one set, in index order."""
    export_yolo(film, tmp_path / "yolo", val_fraction=0.34, seed=0, normalize="none")  # stored levels
    folder = open_yolo_folder(tmp_path / "yolo")
    assert folder.names == [f"{i:06d}" for i in range(6)] and folder.class_names == ["plus", "minus"]
    with open_dataset(film) as ds:
        for i in range(ds.n):
            np.testing.assert_allclose(folder.image(i), ds.image(i), atol=0.6 / 255)
            np.testing.assert_allclose(folder.boxes(i)[["x0", "y0", "x1", "y1"]].to_numpy(),
                                       ds.rows("boxes", i)[["x0", "y0", "x1", "y1"]].to_numpy(), atol=1e-3)
    labels_only = tmp_path / "labels_only"
    (tmp_path / "yolo" / "labels").rename(labels_only)
    assert open_yolo_folder(labels_only).names == folder.names
    (labels_only / "val" / "000000.txt").write_text("")  # the same stem in two splits is ambiguous
    with pytest.raises(DataError, match="more than one split"):
        open_yolo_folder(labels_only)


def test_export_refuses_existing_dir(film, tmp_path):
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "keep.txt").write_text("x")
    with pytest.raises(ParameterError, match="exists"):
        export_yolo(film, tmp_path / "yolo")
    assert (tmp_path / "yolo" / "keep.txt").exists()
    export_yolo(film, tmp_path / "yolo", overwrite=True)
    assert not (tmp_path / "yolo" / "keep.txt").exists()


def test_labels_with_confidence_and_errors(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("0 0.5 0.5 0.2 0.1 0.9\n1 0.1 0.1 0.1 0.1 0.3\n")
    df = read_yolo_labels(p, 100, 50)
    assert list(df.columns) == ["x0", "y0", "x1", "y1", "class", "score"]
    np.testing.assert_allclose(df.iloc[0][["x0", "y0", "x1", "y1"]].to_numpy(float), [40, 22.5, 60, 27.5])
    assert format_yolo_labels(df, 100, 50).splitlines()[0] == "0 0.500000 0.500000 0.200000 0.100000 0.90000"
    p.write_text("0 0.5 0.5 -0.2 0.1\n")
    with pytest.raises(DataError, match="negative"):
        read_yolo_labels(p, 10, 10)
    p.write_text("0 0.5 0.5\n")
    with pytest.raises(DataError, match="5 or 6 columns"):
        read_yolo_labels(p, 10, 10)
    assert len(read_yolo_labels(tmp_path / "missing.txt", 10, 10)) == 0


def test_real_folders_open(realdata_dir):
    for sub in sorted(realdata_dir.iterdir()):
        folder = open_yolo_folder(sub)
        assert len(folder) > 0 and folder.class_names == ["loop"]
        img = folder.image(0)
        assert img.ndim == 2 and img.dtype == np.float32 and 0 <= img.min() < img.max() <= 1
        b = folder.boxes(0)
        assert len(b) > 0
        h, w = img.shape
        assert (b["x1"] <= w + 1).all() and (b["y1"] <= h + 1).all() and (b["x1"] > b["x0"]).all()
        m = folder.mask(0)
        if m is not None:
            assert m.shape == img.shape and m.max() > 0


@pytest.mark.parametrize("content, message", [
    (b"3 0.5 0.5 0.1 0.1\n", "class id 3 but the folder has 1 class"),
    (b"0 1.5 0.5 0.1 0.1\n", "outside the image"),
    (b"0 0.5 0.5 0.1 0.1\n\xff\xfe\x00bad", "not a UTF-8 text label file"),
])
def test_untrusted_label_files_give_one_clear_error(tmp_path, content, message):
    from PIL import Image

    from simgen.datasets.formats.yolo import open_yolo_folder
    from simgen.errors import DataError

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "classes.txt").write_text("loop\n")
    (tmp_path / "labels" / "a.txt").write_bytes(content)
    folder = open_yolo_folder(tmp_path)
    with pytest.raises(DataError, match=message):
        folder.boxes(0)


def test_a_12_bit_frame_in_a_16_bit_tiff_reads_at_its_true_level(tmp_path):
    import tifffile
    from PIL import Image

    from simgen.datasets.imageio import read_image

    rng = np.random.default_rng(1)
    frame12 = rng.integers(1000, 3000, (32, 40)).astype(np.uint16)  # 12-bit camera counts
    tifffile.imwrite(tmp_path / "f.tif", frame12)
    Image.fromarray((frame12 / 4095 * 255).round().astype(np.uint8)).save(tmp_path / "f.png")
    tif, png = read_image(tmp_path / "f.tif"), read_image(tmp_path / "f.png")
    assert abs(tif.mean() - png.mean()) < 0.01 and tif.mean() > 0.2  # not near-black (was 0.03)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([frame12, frame12]))
    with pytest.warns(UserWarning, match="2 pages"):
        read_image(tmp_path / "stack.tif")
