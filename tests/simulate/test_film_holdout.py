"""Held-out films (issue 16): splay != bend relaxation, Jones optics, own seed stream, CLI."""

import numpy as np
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import open_dataset
from simgen.errors import ParameterError
from simgen.rng import sample_rng
from simgen.simulate.film import FilmConfig, FilmSampler, random_defect_phase, sample_defects
from simgen.simulate.film_holdout import HOLDOUT_TAG, HoldoutFilmConfig, HoldoutFilmSampler
from simgen.simulate.frank import frank_constants, frank_energy, frank_gradient, relax_frank
from simgen.simulate.jones import film_jones, reflected_intensity
from simgen.simulate.winding import find_defects

SMALL = HoldoutFilmConfig(size=64, n_defects=(3, 5), min_separation=14, relax_steps=60, box_size=10)


def _sorted(points):
    return np.sort(points, order=["y", "x"])


def test_labels_are_the_winding_numbers_of_the_relaxed_field():
    sampler = HoldoutFilmSampler(SMALL, seed=3, store_phase=True)
    for i in range(3):
        s = sampler(i)
        found = find_defects(s["phase"])
        assert len(found) > 0 and len(found) == len(s["points"]) == len(s["boxes"])
        assert np.array_equal(_sorted(found), _sorted(s["points"]))
        centre_x = (s["boxes"]["x0"] + s["boxes"]["x1"]) / 2
        inside = (s["points"]["x"] > 5) & (s["points"]["x"] < 59)  # boxes clipped only at the border
        np.testing.assert_allclose(centre_x[inside], s["points"]["x"][inside], atol=1e-4)
        assert s["image"].shape == (64, 64) and s["image"].dtype == np.float32
        assert s["image"].min() >= 0 and s["image"].max() <= 1 and s["image"].std() > 0.02
        assert s["provenance"]["model"] == "holdout"


def test_holdout_sample_differs_from_the_training_sample_with_the_same_seed():
    hold = HoldoutFilmSampler(SMALL, seed=7)
    train = FilmSampler(FilmConfig(size=64, n_defects=(3, 5), min_separation=14, box_size=10, backend="numpy"), seed=7)
    for i in range(3):
        h, t = hold(i), train(i)
        assert not np.array_equal(h["image"], t["image"])
        assert len(h["points"]) != len(t["points"]) or not np.allclose(_sorted(h["points"])["x"],
                                                                       _sorted(t["points"])["x"], atol=2)
        np.testing.assert_array_equal(h["image"], hold(i)["image"])  # reproducible
    # the stream itself is another one: same seed and index, extra spawn-key element
    assert sample_rng(7, 0, HOLDOUT_TAG).random() != sample_rng(7, 0).random()
    assert hold.describe()["seed_tag"] == HOLDOUT_TAG


def test_frank_gradient_matches_finite_differences():
    phi = np.random.default_rng(0).uniform(-1, 1, (6, 7))
    k1, k3 = frank_constants(0.4)
    assert k1 / k3 == pytest.approx(0.4) and (k1 + k3) / 2 == pytest.approx(1.0)
    num = np.zeros_like(phi)
    for idx in np.ndindex(phi.shape):
        d = np.zeros_like(phi)
        d[idx] = 1e-6
        num[idx] = (frank_energy(phi + d, k1, k3) - frank_energy(phi - d, k1, k3)) / 2e-6
    np.testing.assert_allclose(frank_gradient(phi, k1, k3), num, atol=1e-7)
    # one constant: exactly the XY bond energy sum (1 - cos dphi) over all nearest-neighbour bonds
    xy = np.sum(1 - np.cos(np.diff(phi, axis=1))) + np.sum(1 - np.cos(np.diff(phi, axis=0)))
    assert frank_energy(phi, 1.0, 1.0) == pytest.approx(xy)
    assert frank_energy(phi, k1, k3) != pytest.approx(xy)


def test_relaxation_with_splay_not_bend_changes_the_field_and_keeps_the_defects():
    rng = np.random.default_rng(5)
    pts = sample_defects(rng, 6, 80, min_separation=18, margin=14)
    start = random_defect_phase(pts, (80, 80), 0.7)
    iso = relax_frank(start, 1.0, 1.0, 150)
    k1, k3 = frank_constants(0.3)
    aniso = relax_frank(start, k1, k3, 150)
    assert frank_energy(aniso, k1, k3) < frank_energy(start, k1, k3)
    change = np.abs(np.angle(np.exp(1j * (aniso - iso))))
    assert change.max() > 0.3 and change.mean() > 0.02  # splay != bend reshapes the texture
    assert np.abs(np.angle(np.exp(1j * (aniso - start))))[[0, -1]].max() < 1e-5  # border ring held fixed
    n0, n1 = len(find_defects(start)), len(find_defects(aniso))
    assert n0 == 6 and abs(n1 - n0) <= 2 and n1 % 2 == n0 % 2  # pairs may annihilate, charge is conserved
    assert find_defects(aniso)["charge"].sum() == pts["charge"].sum()
    with pytest.raises(ParameterError, match="stable"):
        relax_frank(start, k1, k3, 10, dt=1.0)


def test_jones_extinction_with_director_along_polarizer_or_analyzer():
    phi = np.array([[0.0, np.pi / 2, np.pi / 4, np.pi]], np.float32)
    for gamma in (0.3, 1.2, np.pi):
        for d in (0.0, 0.2):
            i = reflected_intensity(phi, gamma, decross=0.0, diattenuation=d)
            assert i[0, 0] == pytest.approx(0, abs=1e-12) and i[0, 1] == pytest.approx(0, abs=1e-12)
            assert i[0, 3] == pytest.approx(0, abs=1e-12)
            # at 45° a pure retarder gives sin²(Γ/2), plus the diattenuation term
            assert i[0, 2] == pytest.approx(np.sin(gamma / 2) ** 2 + d * d * np.cos(gamma / 2) ** 2, rel=1e-5)
    leak = reflected_intensity(phi, 0.5, decross=np.radians(3), diattenuation=0.1)
    assert leak[0, 0] > 1e-4  # decrossing lets the isotropic reflection through
    m = film_jones(np.float32(0.3), 0.0)
    np.testing.assert_allclose(m, np.eye(2), atol=1e-6)  # no retardance, no diattenuation: a mirror


def test_cli_writes_a_dataset_info_reads_and_refuses_bad_arguments(tmp_path):
    runner = CliRunner()
    out = tmp_path / "holdout.h5"
    args = ["simulate", "film-holdout", "--n", "2", "--size", "48", "--n-defects", "2-3", "--min-separation", "12",
            "--relax-steps", "30", "--box-size", "8", "--seed", "4", "--store-phase", "--no-progress"]
    res = runner.invoke(main, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.kind == "film" and ds.class_names == ["defect"] and len(ds) == 2
        assert ds.attrs["generator"]["sampler"] == "film-holdout"
        pts = ds.rows("points", 0)
        assert len(find_defects(ds.phase(0))) == len(pts)
    res = runner.invoke(main, ["info", str(out)])
    assert res.exit_code == 0 and "film-holdout" in res.output, res.output
    before = out.read_bytes()
    for bad, msg in ((["--splay-bend", "3-1"], "empty"), (["--decross", "50"], "decross"),
                     (["--jpeg-quality", "0-99"], "jpeg_quality"), (["--n-defects", "x"], "--n-defects")):
        res = runner.invoke(main, [*args, *bad, "-o", str(tmp_path / "bad.h5")])
        assert res.exit_code == 2 and "Error:" in res.output and msg in res.output, res.output
        assert not (tmp_path / "bad.h5").exists()
    res = runner.invoke(main, [*args, "-o", str(out)])
    assert res.exit_code == 2 and "Error:" in res.output and out.read_bytes() == before
