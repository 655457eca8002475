"""The realism judge (C2ST): honest on look-alike sets, sharp on obvious fakes, clean CLI errors."""

import json

import numpy as np
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.imageio import write_image
from simgen.errors import DataError, ParameterError
from simgen.evaluate.realism_judge import JudgeSettings, _load_images, judge_realism, rank_auc, standardize_patches
from simgen.rng import sample_rng
from simgen.simulate.film import FilmConfig, simulate_film

TINY = JudgeSettings(patch=64, n_patches=96, folds=3, steps=60, batch=32, seed=0)


def _film(n, size=128):
    return [simulate_film(sample_rng(0, i), FilmConfig(size=size, n_defects=(4, 8))).image for i in range(n)]


def test_rank_auc_handles_ties_and_order():
    assert rank_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert rank_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert rank_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5  # all tied: no information
    assert rank_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(7 / 8)  # one tied pair counts 1/2
    assert np.isnan(rank_auc([0.1, 0.2], [1, 1]))


def test_standardization_removes_offset_and_gain():
    p = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(standardize_patches(0.2 + 0.5 * p), standardize_patches(p), atol=1e-4)
    assert np.all(standardize_patches(np.full((1, 8, 8), 0.3)) == 0)  # constant patch: zeros, not NaN


def test_offset_and_gain_are_no_cue():
    """Images of one process, one side brighter and lower-contrast: AUC ~ 0.5.  (Disjoint images on
    the two sides: the same image on both would let the judge recognise it, AUC far below 0.5.)"""
    images = _film(12)
    r = judge_realism([0.3 + 0.5 * im for im in images[6:]], images[:6], TINY)
    assert abs(r.auc - 0.5) < 0.15, r.auc_folds


def test_two_halves_of_one_real_set_look_alike(realdata_dir):
    images = _load_images(realdata_dir / "dsva_fecral")
    r = judge_realism(images[0::2], images[1::2], TINY)
    assert r.auc <= 0.65, r.auc_folds


def test_film_against_real_tem_is_told_apart(realdata_dir):
    r = judge_realism(_film(6), realdata_dir / "dsva_fecral", TINY)
    assert r.auc >= 0.9, r.auc_folds
    assert r.n_patches == {"real": 96, "synthetic": 96} and r.n_images == {"real": 6, "synthetic": 6}
    # every patch is scored exactly once, by the judge of the fold that held its image out
    assert np.isfinite(r.scores).all() and r.scores.shape == (192,) and r.is_synthetic.sum() == 96
    assert r.distance["psd"] > 0.3
    # the blob census sees both sides (pixels only) and reports their distance
    assert set(r.census) == {"real", "synthetic"} and r.census["real"]["n_images"] == 6
    assert r.distance["blobs"] > 0 and r.to_dict()["census"]["synthetic"]["n_images"] == 6


def test_folds_split_by_source_image_and_seed_is_reproducible():
    a = judge_realism(_film(4, 96), _film(8, 96)[4:], JudgeSettings(patch=32, n_patches=24, folds=2, steps=3, batch=8))
    for side in (True, False):  # every image of a side belongs to exactly one fold
        sel = a.is_synthetic == side
        for img in np.unique(a.image[sel]):
            assert len(np.unique(a.fold[sel][a.image[sel] == img])) == 1
    b = judge_realism(_film(4, 96), _film(8, 96)[4:], JudgeSettings(patch=32, n_patches=24, folds=2, steps=3, batch=8))
    np.testing.assert_array_equal(a.scores, b.scores)


def test_bad_inputs_raise_library_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        judge_realism(tmp_path / "missing", _film(3), TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        judge_realism(tmp_path / "empty", _film(3), TINY)
    with pytest.raises(ParameterError, match="smaller than the 64 px patch"):
        judge_realism(_film(3, 48), _film(3), TINY)
    with pytest.raises(ParameterError, match="fewer than the 3 folds"):
        judge_realism(_film(2), _film(3), TINY)
    bad = _film(3)
    bad[1][5, 5] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        judge_realism(bad, _film(3), TINY)
    with pytest.raises(ParameterError, match="scale"):
        JudgeSettings(scale=0.0).validate()


def test_cli_writes_report_and_refuses_to_overwrite(tmp_path):
    for side, images in (("syn", _film(3, 96)), ("real", [np.clip(0.5 + 0.05 * g, 0, 1) for g in
                                                        np.random.default_rng(1).standard_normal((3, 96, 96))])):
        (tmp_path / side / "images").mkdir(parents=True)
        for i, im in enumerate(images):
            write_image(tmp_path / side / "images" / f"{i}.png", im)
    out = tmp_path / "report"
    args = ("realism", tmp_path / "syn", "--real", tmp_path / "real", "-o", out, "--patch", 32, "--patches", 12,
            "--folds", 3, "--steps", 5, "--batch-size", 8, "--no-progress")
    res = run(*args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "realism.json").read_text())
    assert len(report["auc_folds"]) == 3 and report["settings"]["seed"] == 0 and "psd" in report["distance"]
    assert (out / "sheet.png").read_bytes()[:4] == b"\x89PNG" and "AUC" in (out / "realism.md").read_text()
    assert "dark blobs per Mpx" in (out / "realism.md").read_text() and "blobs" in report["distance"]
    assert "census distance" in res.output
    before = (out / "realism.json").read_bytes()
    assert_one_line_error(run(*args), "exists", "--overwrite")
    assert (out / "realism.json").read_bytes() == before
    assert run(*args, "--overwrite").exit_code == 0


@pytest.mark.parametrize("extra, fragment", [(("--patch", 128), "smaller than the 128 px patch"),
                                              (("--scale", "nan"), "scale")])
def test_cli_bad_input_is_one_line_error(tmp_path, extra, fragment):
    (tmp_path / "real").mkdir()
    for i, im in enumerate(_film(3, 96)):
        write_image(tmp_path / "real" / f"{i}.png", im)
    res = run("realism", tmp_path / "real", "--real", tmp_path / "real", "-o", tmp_path / "out", "--folds", 3, *extra)
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "out").exists()
    assert_one_line_error(run("realism", tmp_path / "nope.h5", "--real", tmp_path / "real", "-o", tmp_path / "out"),
                          "nope.h5 does not exist")
