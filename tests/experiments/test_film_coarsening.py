"""`simgen film-coarsening`: count, spacing and track positions vs time against the true tracks."""

import json

import numpy as np
import pandas as pd
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.video_io import write_video
from simgen.errors import ParameterError
from simgen.evaluate.coarsening import coarsening_table, power_law_fit
from simgen.experiments.film_coarsening import coarsening_report, film_coarsening
from simgen.simulate.film import FilmConfig
from simgen.simulate.film_video import FilmVideoConfig, FilmVideoSampler
from simgen.train.baselines.log import LogParams, save_params

TINY = FilmVideoConfig(film=FilmConfig(model="thermal", size=40, backend="numpy", box_size=6.0), frames=6, t_min=10,
                       t_max=120, link_every=2, search_range=2.5)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    sampler = FilmVideoSampler(TINY, seed=5)
    path = write_video(tmp_path_factory.mktemp("film") / "v.h5", sampler)
    return sampler, path


def test_power_law_fit_recovers_the_exponent():
    t = np.geomspace(1, 100, 12)
    fit = power_law_fit(t, 500 * t ** -0.8)
    assert fit["exponent"] == pytest.approx(-0.8) and fit["prefactor"] == pytest.approx(500)
    assert fit["r2"] == pytest.approx(1.0) and fit["n_points"] == 12
    assert power_law_fit(t[:2], t[:2]) is None
    assert power_law_fit(t, np.zeros_like(t)) is None  # no usable (positive) points


def test_report_on_the_truth_has_zero_error(video, tmp_path):
    sampler, _ = video
    gt = pd.DataFrame(sampler.tracks)
    res = coarsening_report(gt, gt, sampler.times, tmp_path / "rep")
    assert res.count_rel_error == 0 and res.nn_rel_error == 0
    assert res.rmse_px == 0 and res.n_matched == len(gt) and res.mota == 1 and res.idf1 == 1
    per = pd.read_csv(tmp_path / "rep" / "per_frame.csv")
    counts = np.bincount(sampler.tracks["sample"], minlength=TINY.frames)
    assert per["count_gt"].tolist() == counts.tolist() == per["count_pred"].tolist()
    assert (per["nn_gt"] > 0).all() and per["nn_gt"].iloc[-1] > per["nn_gt"].iloc[0]  # spacing grows
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    a = rep["fits"]["count"]["true"]["exponent"]
    assert -1.4 < a < -0.5 and rep["fits"]["count"]["detected"]["exponent"] == pytest.approx(a)
    assert rep["fits"]["spacing"]["true"]["exponent"] > 0.2
    for name in ("count.png", "spacing.png", "report.md"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    assert "1.03 px" in (tmp_path / "rep" / "report.md").read_text()
    with pytest.raises(ParameterError, match="exists"):
        coarsening_report(gt, gt, sampler.times, tmp_path / "rep")


def test_report_on_shifted_and_thinned_detections(video, tmp_path):
    """Every other defect dropped, the rest shifted by (0.06, 0.08) px: count error 1/2, RMS 0.1 px.

    (Defects sit on plaquette centres >= 1 px apart, so the shifted one stays the nearest.)
    """
    sampler, _ = video
    gt = pd.DataFrame(sampler.tracks)
    pred = gt.iloc[::2].assign(x=lambda d: d["x"] + 0.06, y=lambda d: d["y"] + 0.08)
    res = coarsening_report(pred, gt, sampler.times, tmp_path / "rep")
    table = coarsening_table(pred, gt, sampler.times)
    np.testing.assert_allclose(table["count_pred"], np.bincount(pred["sample"], minlength=TINY.frames))
    assert res.count_rel_error == pytest.approx(0.5, abs=0.05)
    assert res.rmse_px == pytest.approx(0.1, abs=1e-5) and res.n_matched == len(pred)
    assert res.nn_rel_error > 0.1  # fewer defects: larger spacing


def test_film_coarsening_with_log_on_a_tiny_video_and_cli(video, tmp_path):
    _, path = video
    weights = save_params(tmp_path / "log.json", LogParams(min_sigma=1.0, max_sigma=3.0, threshold=0.2))
    res = film_coarsening(weights, path, tmp_path / "rep", search_range=2.0, progress=False)
    assert res.n_frames == TINY.frames and np.isfinite(res.count_rel_error) and res.count_rel_error >= 0
    assert res.settings["linking"]["search_range"] == 2.0 and res.time_unit == "steps·dt"
    for name in ("detections.h5", "tracks.csv", "per_frame.csv", "count.png", "spacing.png", "report.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    out = run("film-coarsening", path, "--weights", weights, "--search-range", 2, "--no-progress", "-o",
              tmp_path / "cli")
    assert out.exit_code == 0, out.output
    assert "count exponent" in out.output and (tmp_path / "cli" / "report.md").exists()
    # bad arguments: one line, exit 2, nothing created
    assert_one_line_error(run("film-coarsening", path, "--weights", weights, "-o", tmp_path / "rep"), "exists")
    assert_one_line_error(run("film-coarsening", tmp_path / "none.h5", "--weights", weights, "-o",
                              tmp_path / "x1"))
    assert_one_line_error(run("film-coarsening", path, "--weights", tmp_path / "none.json", "-o", tmp_path / "x2"),
                          "weights", "exist")
    assert not (tmp_path / "x1").exists() and not (tmp_path / "x2").exists()
    with pytest.raises(ParameterError, match="match radius"):
        film_coarsening(weights, path, tmp_path / "x3", match_radius=0, progress=False)
