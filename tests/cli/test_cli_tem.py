import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset
from simgen.datasets.imageio import write_image


@pytest.fixture(scope="module")
def tem(tmp_path_factory):
    out = tmp_path_factory.mktemp("tem") / "tem.h5"
    res = run("simulate", "tem", "--n", 3, "--size", 128, "--seed", 2, "--density", "1500-2500", "--box-margin", 1,
              "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_simulate_tem_dataset(tem, tmp_path):
    with open_dataset(tem) as ds:
        assert ds.kind == "tem" and ds.n == 3 and ds.image_shape == (128, 128)
        assert ds.class_names == ["black_dot", "loop111", "loop100"]
        b = ds.rows("boxes", 0)
        m = ds.mask(0)
        assert {"x0", "tx0", "instance", "size", "class"} <= set(b.columns)
        assert set(np.unique(m)) - {0} == set(b["instance"])
        assert ds.attrs["generator"]["config"]["box_margin"] == 1.0
    res = run("preview", tem, "-o", tmp_path / "p.png", "--n", 2)
    assert res.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000
    for fmt in ("yolo", "coco"):
        res = run("export", fmt, tem, "-o", tmp_path / fmt)
        assert res.exit_code == 0, res.output


def test_same_seed_same_file_content(tem, tmp_path):
    again = tmp_path / "again.h5"
    run("simulate", "tem", "--n", 3, "--size", 128, "--seed", 2, "--density", "1500-2500", "--box-margin", 1,
        "--no-progress", "-o", again)
    with open_dataset(tem) as a, open_dataset(again) as b:
        assert np.array_equal(a.images[()], b.images[()])
        assert a.table("boxes").equals(b.table("boxes"))


def test_presets_match_and_spec(tmp_path):
    res = run("simulate", "tem", "--preset", "ti", "--single-class", "loop", "--n", 2, "--size", 96, "--no-progress",
              "-o", tmp_path / "ti.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "ti.h5") as ds:
        assert ds.class_names == ["loop"] and ds.attrs["generator"]["config"]["preset"] == "ti"
    rng = np.random.default_rng(0)
    real = np.clip(0.5 + 0.05 * rng.standard_normal((160, 160)), 0, 1)
    write_image(tmp_path / "real.png", real)
    res = run("simulate", "tem", "--match", tmp_path / "real.png", "--n", 1, "--size", 96, "--no-progress",
              "-o", tmp_path / "m.h5")
    assert res.exit_code == 0, res.output
    assert "matched:" in res.output
    with open_dataset(tmp_path / "m.h5") as ds:
        assert ds.attrs["generator"]["match"]["image"].endswith("real.png")
    res = run("simulate", "tem", "--spec", "GB", "--n", 1, "--size", 96, "--no-progress", "-o", tmp_path / "s.h5")
    assert res.exit_code == 0, res.output

    # --relabel: the dsva preset's label rule once more after heavy blur + noise drops faint defects' labels
    common = ("simulate", "tem", "--preset", "dsva", "--contrast", "0.15-0.3", "--density", 3000, "--spec",
              "H-GB+H-GN", "--n", 3, "--size", 128, "--seed", 1, "--no-progress")
    assert run(*common, "-o", tmp_path / "plain.h5").exit_code == 0
    res = run(*common, "--relabel", "-o", tmp_path / "relabelled.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "plain.h5") as a, open_dataset(tmp_path / "relabelled.h5") as b:
        assert b.attrs["generator"]["augment"]["relabel"] is True
        assert 0 < len(b.table("boxes")) < len(a.table("boxes"))
        for i in range(3):
            assert set(np.unique(b.mask(i))) - {0} == set(b.rows("boxes", i)["instance"])


@pytest.mark.parametrize(
    "args",
    [
        ["--density", "-5"],
        ["--classes", "black_dot,void"],
        ["--size", "64", "--size-nm", "40"],
        ["--size", "banana"],
        ["--class-names", "a"],
        ["--contrast", "0.9-0.1"],
        ["--preset", "steel"],
        ["--match", "/nonexistent/real.png"],
        ["--spec", "DC"],
        ["--relabel"],
    ],
)
def test_bad_tem_input(tmp_path, args):
    out = tmp_path / "bad.h5"
    res = run("simulate", "tem", "--n", 2, "--size", 96, "--no-progress", "-o", out, *args)
    assert_one_line_error(res)
    assert not out.exists()


def test_existing_output_is_kept(tem):
    before = tem.read_bytes()
    assert_one_line_error(run("simulate", "tem", "--n", 1, "--size", 64, "--no-progress", "-o", tem))
    assert tem.read_bytes() == before


def test_video_and_mot_export(tmp_path):
    out = tmp_path / "v.h5"
    res = run("simulate", "video", "--frames", 6, "--size", 96, "--seed", 1, "--n-initial", 8, "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.kind == "video" and ds.n == 6
        tracks = ds.table("tracks")
        assert {"sample", "track_id", "x", "y", "x0", "y1", "class", "size"} <= set(tracks.columns)
        life = ds.array("video/lifetimes/track_id")
        assert set(tracks["track_id"]) == set(life.tolist())
    res = run("export", "mot", out, "-o", tmp_path / "mot")
    assert res.exit_code == 0, res.output
    from simgen.datasets.formats.mot import read_mot

    gt = read_mot(tmp_path / "mot" / "gt" / "gt.txt")
    assert len(gt) == len(tracks) and (tmp_path / "mot" / "seqinfo.ini").exists()
    assert len(list((tmp_path / "mot" / "img1").glob("*.jpg"))) == 6
    res = run("preview", out, "-o", tmp_path / "v.png", "--n", 3)
    assert res.exit_code == 0
    assert_one_line_error(run("simulate", "video", "--frames", 5, "--diffusion", "-1", "-o", tmp_path / "bad.h5"))
    assert not (tmp_path / "bad.h5").exists()


def test_video_single_class_keeps_the_tracks(tmp_path):
    """--single-class relabels every box of a video as one class; tracks and kinds are the same video."""
    args = ("simulate", "video", "--frames", 4, "--size", 96, "--seed", 2, "--n-initial", 8, "--no-progress")
    assert run(*args, "-o", tmp_path / "three.h5").exit_code == 0
    res = run(*args, "--single-class", "loop", "-o", tmp_path / "one.h5")
    assert res.exit_code == 0, res.output
    with open_dataset(tmp_path / "three.h5") as a, open_dataset(tmp_path / "one.h5") as b:
        assert b.class_names == ["loop"] and len(a.class_names) == 3
        ta, tb = a.table("tracks"), b.table("tracks")
        assert len(tb) == len(ta) > 0 and set(tb["class"]) == {0} and len(set(ta["class"])) > 1
        assert np.array_equal(ta["track_id"], tb["track_id"]) and np.allclose(ta["x"], tb["x"])
        assert np.array_equal(a.image(0), b.image(0))


def test_filament_pairs(tmp_path):
    out = tmp_path / "f.h5"
    res = run("simulate", "filament", "--n", 2, "--frames", 4, "--size", 64, "--gaps", "1,2",
              "--pairing", "forward,backward", "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.kind == "filament" and ds.n == 8
        idx = ds.array("pairs/index")
        assert idx.shape == (2 * 10, 2) and ds.file["pairs/change_a1"].shape == (20, 64, 64)
        assert set(np.unique(ds.file["pairs/change_a2"][()])) <= {0, 1, 2, 3}
    res = run("preview", out, "-o", tmp_path / "f.png", "--n", 2)
    assert res.exit_code == 0 and (tmp_path / "f.png").exists()
    assert_one_line_error(run("simulate", "filament", "--gaps", "9", "--frames", 4, "-o", tmp_path / "bad.h5"))
    assert_one_line_error(run("simulate", "filament", "--pairing", "sideways", "-o", tmp_path / "bad.h5"))
    assert not (tmp_path / "bad.h5").exists()


def test_help_pages():
    for cmd in ("tem", "video", "filament"):
        res = run("simulate", cmd, "--help")
        assert res.exit_code == 0 and "Examples" in res.output
