"""napari reader, headless: layer data checked without a display (napari itself is optional)."""

import numpy as np
import pytest
from clitools import run

from simgen.datasets.h5io import open_dataset
from simgen.datasets.napari import HALF_PIXEL, get_reader, read_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("napari")
    out = {}
    for kind, args in {"film": ["--n", 2, "--size", 64, "--box-size", 8, "--n-defects", "2-3",
                                "--min-separation", 6, "--margin", 4],
                       "tem": ["--n", 2, "--size", 64, "--preset", "dsva"],
                       "video": ["--frames", 3, "--size", 64]}.items():
        out[kind] = tmp / f"{kind}.h5"
        res = run("simulate", kind, *args, "--seed", 4, "--no-progress", "-o", out[kind])
        assert res.exit_code == 0, res.output
    return out


def _layers(path):
    return {t: (d, k) for d, k, t in read_dataset(path)}


def test_reader_is_offered_for_simgen_files_only(data, tmp_path):
    assert get_reader(str(data["film"])) is read_dataset
    (tmp_path / "x.png").write_bytes(b"")
    assert get_reader(str(tmp_path / "x.png")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without manifest.json


def test_film_points_carry_charge_and_boxes_sit_on_their_pixels(data):
    layers = _layers(data["film"])
    image, _ = layers["image"]
    assert image.shape == (2, 64, 64) and image.dtype == np.float32
    pts, kw = layers["points"]
    with open_dataset(data["film"]) as ds:
        rows = ds.rows("points", 1)
        boxes = ds.rows("boxes", 1)
    sel = pts[:, 0] == 1
    np.testing.assert_allclose(np.sort(pts[sel, 2]), np.sort(rows["x"].to_numpy() - HALF_PIXEL), atol=1e-5)
    assert set(np.unique(kw["properties"]["charge"])) <= {-1, 1}
    rects, kw = layers["shapes"]
    frame1 = [r for r in rects if r[0, 0] == 1]
    assert len(frame1) == len(boxes)
    # a box (x0, y0, x1, y1) covering pixel columns x0..x1-1 has napari corners at x0-0.5 and x1-0.5
    r = frame1[0]
    b = boxes.iloc[0]
    assert r[0, 1] == pytest.approx(b["y0"] - 0.5) and r[2, 2] == pytest.approx(b["x1"] - 0.5)


def test_tem_masks_and_video_tracks(data):
    layers = _layers(data["tem"])
    masks, _ = layers["labels"]
    assert masks.shape == (2, 64, 64) and masks.max() > 0
    tracks, _ = _layers(data["video"])["tracks"]
    assert tracks.shape[1] == 4 and set(np.unique(tracks[:, 1])) <= {0, 1, 2}


def test_manifest_is_a_valid_npe2_plugin():
    npe2 = pytest.importorskip("npe2")
    from importlib.resources import files

    manifest = npe2.PluginManifest.from_file(str(files("simgen.datasets") / "napari.yaml"))
    assert manifest.contributions.readers[0].command == "simgen.get_reader"
