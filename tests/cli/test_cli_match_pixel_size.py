"""``simulate tem --match`` on an MRC file takes the pixel size the file records."""

import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset

mrcfile = pytest.importorskip("mrcfile")


@pytest.fixture(scope="module")
def real_mrc(tmp_path_factory):
    path = tmp_path_factory.mktemp("mrc") / "real.mrc"
    rng = np.random.default_rng(0)
    frame = np.clip(2000 + 150 * rng.standard_normal((160, 160)), 0, 4095).astype(np.uint16)
    with mrcfile.new(path) as mrc:
        mrc.set_data(frame)
        mrc.voxel_size = 6.0  # Å: 0.6 nm per pixel
    return path


@pytest.mark.parametrize(("extra", "expected", "source"), [([], 0.6, "the image file"),
                                                           (["--pixel-size", "0.3"], 0.3, "--pixel-size")])
def test_match_uses_the_pixel_size_of_the_file(tmp_path, real_mrc, extra, expected, source):
    out = tmp_path / "m.h5"
    res = run("simulate", "tem", "--match", real_mrc, "--n", 1, "--size", 96, "--no-progress", "-o", out, *extra)
    assert res.exit_code == 0, res.output
    assert f"pixel size {expected:g} nm (from {source})" in res.output
    with open_dataset(out) as ds:
        gen = ds.attrs["generator"]
        assert gen["config"]["pixel_nm"] == pytest.approx([expected, expected])
        assert gen["match"]["pixel_nm"] == pytest.approx(expected) and gen["match"]["pixel_nm_from"] == source
        assert ds.provenance(0)["pixel_nm"] == pytest.approx(expected)


def test_match_on_a_damaged_mrc_is_one_line(tmp_path):
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "m.h5"
    res = run("simulate", "tem", "--match", bad, "--n", 1, "--size", 96, "--no-progress", "-o", out)
    assert_one_line_error(res)
    assert "cannot read MRC file" in res.output and not out.exists()
