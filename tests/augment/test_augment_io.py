import json

import h5py
import numpy as np
import pytest

from simgen.augment.pipeline import AugmentedSampler
from simgen.augment.readnoise import synthetic_profile
from simgen.datasets.augment_io import (
    augment_dataset,
    default_profile_path,
    extract_noise_profile,
    iter_images,
    load_noise_profile,
    realism_report,
    save_noise_profile,
    transform_sheet,
)
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.imageio import write_image
from simgen.errors import DataError, ParameterError, SpecError
from simgen.simulate.film import FilmConfig, FilmSampler

CFG = FilmConfig(size=64, n_defects=(1, 4), min_separation=6, margin=4, box_size=8)


@pytest.fixture(scope="module")
def film_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("film") / "film.h5"
    write_dataset(path, FilmSampler(CFG, seed=2, store_phase=True), 4, image_dtype="float32")
    with h5py.File(path, "a") as f:  # an extra array must survive augmentation
        f.create_dataset("pairs/index", data=np.array([[0, 1], [2, 3]]))
    return path


def test_shipped_default_profile_is_the_synthetic_one():
    shipped = load_noise_profile("default")
    ref = synthetic_profile()
    assert default_profile_path().exists() and default_profile_path().stat().st_size < 50_000
    np.testing.assert_allclose(shipped.freqs, ref.freqs, atol=1e-7)
    np.testing.assert_allclose(shipped.power, ref.power, rtol=1e-5)
    assert shipped.meta["file"] == "default" and len(shipped.meta["sha256"]) == 16


def test_profile_save_load_atomic(tmp_path):
    prof = synthetic_profile(64)
    out = save_noise_profile(prof, tmp_path / "noise.prof")  # any suffix: no '.npz' appended
    assert out.exists() and not (tmp_path / "noise.prof.npz").exists()
    back = load_noise_profile(out)
    np.testing.assert_allclose(back.power, prof.power, rtol=1e-6)
    before = out.read_bytes()
    with pytest.raises(ParameterError, match="exists"):
        save_noise_profile(prof, out)
    assert out.read_bytes() == before
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_noise_profile(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="not a simgen"):
        load_noise_profile(tmp_path / "other.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_noise_profile(tmp_path / "missing.npz")


def test_extract_from_files(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:128, :128]
    for k in range(2):
        img = 0.5 + 0.1 * np.cos(2 * np.pi * (0.25 * y + 0.125 * x) + k) + 0.02 * rng.standard_normal((128, 128))
        write_image(tmp_path / "imgs" / f"{k}.png", np.clip(img, 0, 1), bits=16)
    prof = extract_noise_profile(tmp_path / "imgs", tmp_path / "p.npz", tile=64)
    assert (tmp_path / "p.npz").exists() and prof.meta["n_images"] == 2
    assert np.all(np.abs(np.abs(prof.freqs[np.argmax(prof.power)]) - [0.25, 0.125]) < 1 / 64)
    with pytest.raises(DataError):
        extract_noise_profile([tmp_path / "nothing.png"])


def test_augment_dataset_copies_everything(film_h5, tmp_path):
    out = augment_dataset(film_h5, tmp_path / "aug.h5", "L-FN+GB+RB+islands+DC", seed=7)
    with open_dataset(film_h5) as a, open_dataset(out) as b:
        assert b.n == a.n and b.kind == "film" and b.class_names == a.class_names
        assert b.images.dtype == a.images.dtype
        assert b.attrs["augment_spec"] == "DC+islands+RB+GB+L-FN"
        rec = json.loads(b.attrs["augment"])
        assert rec["seed"] == 7 and rec["spec"] == "L-FN+GB+RB+islands+DC" and rec["noise_profile"]["name"] == "default"
        assert b.attrs["generator"] == a.attrs["generator"]
        for t in ("points", "boxes"):
            ta, tb = a.table(t), b.table(t)
            for c in ta.columns:
                assert ta[c].to_numpy().tobytes() == tb[c].to_numpy().tobytes()
        for i in range(a.n):
            np.testing.assert_array_equal(a.phase(i), b.phase(i))
            assert not np.array_equal(a.image(i), b.image(i))
            assert set(b.provenance(i)["augment"]) == {"DC", "islands", "RB", "GB", "FN"}
            assert b.provenance(i)["n_defects"] == a.provenance(i)["n_defects"]
        np.testing.assert_array_equal(b.array("pairs/index"), [[0, 1], [2, 3]])


def test_simulate_then_augment_equals_augmented_simulation(film_h5, tmp_path):
    """Same seed → the same draws whether artifacts are added at simulation time or later."""
    spec = "L-FN+GB+RB+islands+ST"
    out = augment_dataset(film_h5, tmp_path / "later.h5", spec, seed=2)
    direct = AugmentedSampler(FilmSampler(CFG, seed=2, store_phase=True), spec)
    with open_dataset(out) as ds:
        for i in range(ds.n):
            np.testing.assert_allclose(ds.image(i), direct(i)["image"], atol=2e-6)


def test_simulation_codes_are_refused(film_h5, tmp_path):
    with pytest.raises(SpecError, match="RD act at simulation time") as err:
        augment_dataset(film_h5, tmp_path / "x.h5", "GB+RD", seed=0)
    assert "image-level part: 'GB'" in str(err.value)
    assert not (tmp_path / "x.h5").exists()
    nophase = tmp_path / "nophase.h5"
    write_dataset(nophase, FilmSampler(CFG, seed=1), 2)
    with pytest.raises(SpecError, match="phase field"):
        augment_dataset(nophase, tmp_path / "y.h5", "all", seed=0)
    out = augment_dataset(nophase, tmp_path / "y.h5", "image", seed=0)
    with open_dataset(out) as ds:
        assert ds.images.dtype == np.uint8 and not ds.has("phase")
    with pytest.raises(ParameterError, match="same file"):
        augment_dataset(nophase, nophase, "GB", overwrite=True)


def test_transform_sheet_and_realism(film_h5, tmp_path):
    png = transform_sheet(film_h5, tmp_path / "sheet.png", "L-FN+GB+RB+islands+DC", index=1)
    assert png.stat().st_size > 5000
    png2 = transform_sheet(None, tmp_path / "sim.png", "RD+GB", size=48)
    assert png2.exists()
    with pytest.raises(SpecError):
        transform_sheet(film_h5, tmp_path / "s3.png", "LR")
    assert len(list(iter_images(film_h5, max_images=3))) == 3
    rep = realism_report(film_h5, film_h5, spec="GB@2")
    assert rep["raw"]["psd"] == pytest.approx(0.0, abs=1e-9) and rep["psd"] > 0.01
