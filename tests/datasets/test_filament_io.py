"""Filament sequences of any length as pair files; importing real labelled frames (images + two mask folders)."""

import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.filament_io import find_sequences, import_filament_folder, natural_key, write_sequences
from simgen.datasets.h5io import open_dataset
from simgen.datasets.imageio import write_image
from simgen.errors import DataError, ParameterError
from simgen.simulate.filament import change_map
from simgen.train.changedet.data import open_pairs


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def make_folder(root, n_frames=(4, 3), size=(40, 48), mask_max=255, suffix=".png"):
    """Sequences of a shrinking disc (A1) with a smaller core (A2); frame names f1, f2, ..., f10 style."""
    truth = {}
    for s, n in enumerate(n_frames):
        seq = root / f"run{s + 1}"
        for sub in ("images", "area1", "area2"):
            (seq / sub).mkdir(parents=True)
        truth[seq.name] = []
        for t in range(n):
            name = f"f{[1, 2, 10, 11][t]}"  # natural order differs from the alphabetical one
            a1 = _disc(size, 20, 24, 12 - 2 * t)
            a2 = _disc(size, 20, 24, 6 - t)
            img = np.where(a1, 0.3, 0.7).astype(np.float32)
            img[a2] = 0.6
            write_image(seq / "images" / f"{name}.png", img)
            write_image(seq / "area1" / f"{name}{suffix}", (a1 * mask_max).astype(np.uint8) if mask_max > 1
                        else a1.astype(np.float32))
            write_image(seq / "area2" / f"{name}{suffix}", (a2 * mask_max).astype(np.uint8) if mask_max > 1
                        else a2.astype(np.float32))
            truth[seq.name].append((a1, a2))
    return truth


def test_natural_order():
    assert sorted(["f10.png", "f2.png", "f1.png"], key=natural_key) == ["f1.png", "f2.png", "f10.png"]


def test_import_all_pairs_and_masks(tmp_path):
    truth = make_folder(tmp_path / "runs")
    info = import_filament_folder(tmp_path / "runs", tmp_path / "pairs.h5", a1="area1", a2="area2",
                                  diameters={"run2": 11.5})
    assert info["sequences"] == ["run1", "run2"] and info["frames"] == [4, 3]
    assert info["pairs"] == 4 * 3 // 2 + 3 * 2 // 2  # every i < j per sequence
    with open_dataset(info["path"]) as ds:
        assert ds.kind == "filament" and ds.n == 7 and ds.name(2) == "run1/f10.png"
        np.testing.assert_array_equal(ds.array("filament/sequence"), [0, 0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(ds.array("filament/frame"), [0, 1, 2, 3, 0, 1, 2])
        d = ds.array("filament/diameter")
        assert np.isnan(d[:4]).all() and np.all(d[4:] == 11.5)
        a1 = ds.array("filament/a1").astype(bool)
        frames = [f for seq in truth.values() for f in seq]
        for k, (m1, m2) in enumerate(frames):
            np.testing.assert_array_equal(a1[k], m1)
            np.testing.assert_array_equal(ds.array("filament/a2")[k].astype(bool), m2)
    with open_pairs(info["path"]) as src:
        assert src.targets == ("a1", "a2")
        for p, (i, j) in enumerate(src.index):
            assert i < j and src.sequence[i] == src.sequence[j]
            np.testing.assert_array_equal(src.maps(p)["a1"], change_map(a1[i], a1[j]))
        # a shrinking filament only disappears forward in time
        assert all((src.maps(p)["a1"] != 1).all() for p in range(src.n))


def test_import_single_sequence_crop_and_binary_masks(tmp_path):
    make_folder(tmp_path / "one", n_frames=(3,), mask_max=1)  # masks stored as 0/1
    seq = tmp_path / "one" / "run1"
    info = import_filament_folder(seq, tmp_path / "p.h5", a1="area1", a2="area2", crop=32, pairing=("all", "self"))
    assert info["pairs"] == 6
    with open_dataset(info["path"]) as ds:
        assert ds.image_shape == (32, 32)
        a1 = ds.array("filament/a1").astype(bool)
        np.testing.assert_array_equal(a1[0], _disc((40, 48), 20, 24, 12)[4:36, 8:40])


def test_import_errors_leave_no_output(tmp_path):
    make_folder(tmp_path / "runs")
    out = tmp_path / "x.h5"
    with pytest.raises(DataError, match="no mask folder"):
        import_filament_folder(tmp_path / "runs", out)  # default folder names a1/a2 do not exist
    with pytest.raises(ParameterError):
        import_filament_folder(tmp_path / "runs", out, a1="area1", a2="area2", pairing=("sideways",))
    with pytest.raises(ParameterError, match="unknown sequence"):
        import_filament_folder(tmp_path / "runs", out, a1="area1", a2="area2", diameters={"run9": 3.0})
    with pytest.raises(DataError, match="smaller than"):
        import_filament_folder(tmp_path / "runs" / "run1", out, a1="area1", a2="area2", crop=64)
    with pytest.raises(DataError, match="no images/"):
        find_sequences(tmp_path / "runs" / "run1" / "area1")
    (tmp_path / "runs" / "run2" / "area2" / "f10.png").unlink()
    with pytest.raises(DataError, match="no mask for 1 frame"):
        import_filament_folder(tmp_path / "runs", out, a1="area1", a2="area2")
    assert not out.exists()


def test_write_sequences_mixed_sizes_refused(tmp_path):
    def get(s):
        n = 16 if s == 0 else 24
        z = np.zeros((2, n, n))
        return {"images": z + 0.5, "a1": z, "a2": z}

    with pytest.raises(DataError, match="crop them"):
        write_sequences(tmp_path / "m.h5", [2, 2], get)
    assert not (tmp_path / "m.h5").exists()


def test_cli_import(tmp_path):
    make_folder(tmp_path / "runs")
    res = run("changedet", "import", tmp_path / "runs", "--a1", "area1", "--a2", "area2", "--diameter", "run1=9",
              "--no-progress", "-o", tmp_path / "p.h5")
    assert res.exit_code == 0, res.output
    assert "2 sequence(s), 7 frames, 9 pairs" in res.output
    before = (tmp_path / "p.h5").read_bytes()
    res = run("changedet", "import", tmp_path / "runs", "--a1", "area1", "--a2", "area2", "-o", tmp_path / "p.h5")
    assert_one_line_error(res, "exists")
    res = run("changedet", "import", tmp_path / "runs", "--a1", "area1", "--a2", "nope", "-o", tmp_path / "q.h5")
    assert_one_line_error(res, "nope")
    res = run("changedet", "import", tmp_path / "runs", "--diameter", "run1", "-o", tmp_path / "q.h5")
    assert_one_line_error(res, "SEQUENCE=PX")
    assert (tmp_path / "p.h5").read_bytes() == before and not (tmp_path / "q.h5").exists()
