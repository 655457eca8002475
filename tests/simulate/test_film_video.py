"""`simgen simulate film-video`: a coarsening thermal film filmed at log-spaced times with true tracks."""

import json

import numpy as np
import pandas as pd
import pytest
from clitools import assert_one_line_error, run

from simgen.datasets.h5io import open_dataset
from simgen.datasets.sources import open_source
from simgen.datasets.video_io import read_lifetimes, write_video
from simgen.errors import ParameterError
from simgen.simulate.film import FilmConfig
from simgen.simulate.film_video import FILM_END_CAUSES, FilmVideoConfig, FilmVideoSampler, frame_steps, link_defects
from simgen.simulate.winding import find_defects

TINY = FilmVideoConfig(film=FilmConfig(model="thermal", size=40, backend="numpy", box_size=6.0), frames=8, t_min=10,
                       t_max=150, link_every=2, search_range=2.5)


@pytest.fixture(scope="module")
def video():
    return FilmVideoSampler(TINY, seed=3)


def test_frame_steps_are_log_spaced_and_strictly_increasing():
    t = frame_steps(8, 10, 1000)
    assert t[0] == 10 and t[-1] == 1000 and np.all(np.diff(t) > 0)
    ratios = t[1:] / t[:-1]
    assert np.allclose(ratios, ratios.mean(), rtol=0.05)  # geometric
    crowded = frame_steps(6, 1, 6)  # as many frames as steps: every step once
    assert crowded.tolist() == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ParameterError, match="do not fit"):
        frame_steps(10, 1, 5)
    with pytest.raises(ParameterError, match="t_min < t_max"):
        frame_steps(4, 50, 50)


def test_defect_count_decreases_as_the_film_coarsens(video):
    counts = np.bincount(video.tracks["sample"], minlength=video.n_frames)
    assert counts[0] > 4 * counts[-1] > 0
    assert np.mean(np.diff(counts) <= 0) >= 0.8  # decreasing on average (a thermal pair may appear)
    slope = np.polyfit(np.log(video.times), np.log(counts), 1)[0]
    assert -1.3 < slope < -0.5  # XY coarsening: n ~ (t / ln t)^-1
    assert video.times[0] == pytest.approx(1.0) and video.times[-1] == pytest.approx(15.0)  # steps x dt


def test_frame_labels_are_the_winding_defects_of_the_rendered_field(video):
    for k in (0, video.n_frames - 1):
        truth = find_defects(video.phase(k), periodic=True)
        rows = video.tracks[video.tracks["sample"] == k]
        got = sorted(zip(rows["x"].tolist(), rows["y"].tolist(), rows["charge"].tolist()))
        want = sorted(zip(truth["x"].tolist(), truth["y"].tolist(), truth["charge"].tolist()))
        assert got == want
        s = video(k)
        assert s["image"].shape == (40, 40) and s["image"].dtype == np.float32
        assert s["image"].min() >= 0 and s["image"].max() <= 1 and s["image"].std() > 0.1
        assert np.array_equal(s["boxes"]["instance"], rows["track_id"])


def test_true_tracks_keep_their_charge_and_move_less_than_the_search_range(video):
    fine = video.link_table.sort_values(["track_id", "sample"])
    assert (fine.groupby("track_id")["charge"].nunique() == 1).all()  # never links opposite charges
    same = fine["track_id"].to_numpy()[1:] == fine["track_id"].to_numpy()[:-1]
    steps = np.diff(fine["sample"].to_numpy())[same]
    assert np.all(steps == 1)  # no memory: consecutive snapshots only
    moves = np.hypot(np.diff(fine["x"].to_numpy()), np.diff(fine["y"].to_numpy()))[same]
    assert len(moves) > 100 and moves.max() < TINY.search_range
    stored = pd.DataFrame(video.tracks)
    assert (stored.groupby("track_id")["charge"].nunique() == 1).all()
    # most tracks that end before the last frame end in a +/- annihilation
    lt = video.lifetimes
    ended = lt["cause"] != 0
    assert ended.sum() > 10 and np.mean(lt["cause"][ended] == 1) > 0.8
    assert np.all(lt["birth"] <= lt["death"])


def test_link_defects_links_each_sign_separately():
    """A + and a - crossing paths at 1 px: a sign-blind linker would swap them; this never does."""
    rows = []
    for t in range(6):
        rows.append({"sample": t, "x": 10.0 + t, "y": 10.0, "charge": 1})
        rows.append({"sample": t, "x": 15.0 - t, "y": 10.5, "charge": -1})
    out = link_defects(pd.DataFrame(rows), search_range=2.0)
    assert out["track_id"].nunique() == 2
    assert (out.groupby("track_id")["charge"].nunique() == 1).all()
    assert out["track_id"].min() == 1


def test_video_file_round_trip_and_track_video_reads_it(video, tmp_path):
    from simgen.experiments.track_video import track_video
    from simgen.train.baselines.log import LogParams, save_params

    path = write_video(tmp_path / "v.h5", video)
    with open_source(path) as src:
        assert len(src) == video.n_frames and src.sample_kind == "video" and "tracks" in src.tables
        gt = src.read_table("tracks")
        assert np.array_equal(gt["track_id"].to_numpy(), video.tracks["track_id"])
        np.testing.assert_allclose(gt["x"].to_numpy(), video.tracks["x"])
    with open_dataset(path) as ds:
        np.testing.assert_allclose(ds.array("video/time"), video.times)
        assert json.loads(ds.file["video/lifetimes"].attrs["causes"]) == list(FILM_END_CAUSES)
        assert len(read_lifetimes(ds)) == video.n_tracks
    params = save_params(tmp_path / "log.json", LogParams(min_sigma=1.0, max_sigma=3.0, threshold=0.2))
    res = track_video(params, path, tmp_path / "tv", search_range=2.0, progress=False)
    assert res.n_frames == video.n_frames and res.tracking is not None and "MOTA" in res.tracking


def test_film_video_cli_and_bad_arguments(tmp_path):
    out = tmp_path / "v.h5"
    res = run("simulate", "film-video", "--size", 32, "--frames", 4, "--t-min", 5, "--t-max", 40, "--backend", "numpy",
              "--box-size", 6, "--no-progress", "-o", out)
    assert res.exit_code == 0, res.output
    assert "4 frames" in res.output and out.stat().st_size > 0
    before = out.read_bytes()
    assert_one_line_error(run("simulate", "film-video", "--size", 32, "--frames", 4, "--t-min", 5, "--t-max", 40,
                              "--backend", "numpy", "--no-progress", "-o", out), "exists")
    assert out.read_bytes() == before
    assert_one_line_error(run("simulate", "film-video", "--frames", 50, "--t-min", 5, "--t-max", 20, "-o",
                              tmp_path / "a.h5"), "do not fit")
    assert_one_line_error(run("simulate", "film-video", "--t-min", 30, "--t-max", 20, "-o", tmp_path / "b.h5"),
                          "t_min < t_max")
    assert_one_line_error(run("simulate", "film-video", "--search-range", 40, "--size", 64, "-o", tmp_path / "c.h5"),
                          "search_range")
    assert_one_line_error(run("simulate", "film-video", "--dt", 0.5, "-o", tmp_path / "d.h5"), "unstable")
    assert not any((tmp_path / n).exists() for n in ("a.h5", "b.h5", "c.h5", "d.h5"))
    with pytest.raises(ParameterError, match="thermal"):
        FilmVideoConfig(film=FilmConfig(model="random")).validate()
