import json

import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "film.h5"
    res = run("simulate", "film", "--n", 3, "--size", 64, "--seed", 3, "--box-size", 8, "--n-defects", "1-3",
              "--min-separation", 6, "--margin", 4, "--store-phase", "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_augment_default_command_and_provenance(film, tmp_path):
    out = tmp_path / "aug.h5"
    res = run("augment", film, "--spec", "L-FN+L-GB+islands", "--seed", 1, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.attrs["augment_spec"] == "islands+L-GB+L-FN"
        assert json.loads(ds.attrs["augment"])["seed"] == 1
    res = run("augment", "apply", film, "--spec", "DC", "-o", tmp_path / "dc.h5", "--no-progress")
    assert res.exit_code == 0, res.output


def test_augment_errors_are_one_line_and_touch_nothing(film, tmp_path):
    out = tmp_path / "x.h5"
    res = run("augment", film, "--spec", "FN+XY", "-o", out)
    assert_one_line_error(res, "unknown augmentation code 'XY'", "valid codes: LG, LR, RD, DC, islands, RB, GB")
    res = run("augment", film, "--spec", "GB+RD+LR", "-o", out)
    assert_one_line_error(res, "LR, RD act at simulation time", "image-level part: 'GB'")
    assert not out.exists()
    out.write_bytes(b"keep")
    res = run("augment", film, "--spec", "GB", "-o", out)
    assert_one_line_error(res, "--overwrite")
    assert out.read_bytes() == b"keep"
    res = run("augment", tmp_path / "missing.h5", "--spec", "GB", "-o", tmp_path / "y.h5")
    assert_one_line_error(res)


def test_simulate_film_with_spec(tmp_path):
    out = tmp_path / "f.h5"
    res = run("simulate", "film", "--n", 2, "--size", 64, "--n-defects", "1-2", "--min-separation", 6, "--margin", 4,
              "--spec", "L-FN+GB+RB+islands+RD+DC", "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.attrs["generator"]["augment"]["canonical"] == "RD+DC+islands+RB+GB+L-FN"
        assert "RD" in ds.provenance(0)["augment"]
    res = run("simulate", "film", "--n", 2, "--size", 64, "--spec", "GB+bogus", "--no-progress", "-o", tmp_path / "g.h5")
    assert_one_line_error(res, "unknown augmentation code 'bogus'")
    assert not (tmp_path / "g.h5").exists()


def test_extract_noise_preview_codes_realism(film, tmp_path):
    y, x = np.mgrid[:128, :128]
    from simgen.datasets.imageio import write_image

    rng = np.random.default_rng(0)
    img = 0.5 + 0.1 * np.cos(2 * np.pi * 0.25 * y) + 0.02 * rng.standard_normal((128, 128))
    write_image(tmp_path / "real.png", np.clip(img, 0, 1), bits=16)
    res = run("augment", "extract-noise", tmp_path / "real.png", "-o", tmp_path / "n.npz", "--tile", 64)
    assert res.exit_code == 0 and "components" in res.output, res.output
    res = run("augment", film, "--spec", "FN", "--noise-profile", tmp_path / "n.npz", "-o", tmp_path / "fn.h5",
              "--no-progress")
    assert res.exit_code == 0, res.output
    flat = tmp_path / "flat.png"
    write_image(flat, np.full((64, 64), 0.5))
    res = run("augment", "extract-noise", flat, "-o", tmp_path / "m.npz")
    assert_one_line_error(res)
    res = run("augment", "preview", film, "--spec", "L-FN+GB+islands", "-o", tmp_path / "s.png")
    assert res.exit_code == 0 and (tmp_path / "s.png").stat().st_size > 5000, res.output
    res = run("augment", "codes")
    assert res.exit_code == 0 and "islands" in res.output and "L-" in res.output
    res = run("augment", "codes", "--json")
    assert {r["code"] for r in json.loads(res.output)["codes"]} >= {"FN", "RB", "ST"}
    res = run("augment", "realism", film, film, "--spec", "GB@2")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["raw"]["psd"] == 0 and rep["psd"] > 0
    res = run("augment", "--help")
    assert res.exit_code == 0 and "extract-noise" in res.output


@pytest.mark.parametrize("kind, args", [
    ("tem", ["--n", 2, "--size", 64, "--preset", "dsva"]),
    ("video", ["--frames", 3, "--size", 64]),
    ("filament", ["--n", 2, "--size", 64, "--frames", 3, "--gaps", "1"]),
])
def test_augment_apply_and_preview_every_dataset_kind(kind, args, tmp_path):
    """TEM, video and filament generators store configs whose names overlap the film's (a TEM
    `anisotropy` is a [lo, hi] range): augmenting them must work, not crash on the film's optics."""
    src = tmp_path / f"{kind}.h5"
    res = run("simulate", kind, *args, "--seed", 1, "--no-progress", "-o", src)
    assert res.exit_code == 0, res.output
    out = tmp_path / f"{kind}_aug.h5"
    res = run("augment", src, "--spec", "L-FN+GB+PN", "--seed", 2, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    with open_dataset(src) as a, open_dataset(out) as b:
        assert b.n == a.n and b.kind == a.kind
        assert not np.array_equal(a.image(0), b.image(0))  # the augmentation really ran
    res = run("augment", "preview", src, "--spec", "GB+PN", "-o", tmp_path / f"{kind}.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"{kind}.png").stat().st_size > 0
