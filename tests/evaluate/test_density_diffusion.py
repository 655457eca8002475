"""Areal/volumetric density arithmetic, frame time and dose, diffusivity (pooled, per track, by size) from
trackpy, and the diffusivity ``simgen evaluate`` reports."""

import numpy as np
import pandas as pd
import pytest

from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError
from simgen.evaluate.density import VISIBILITY, areal_density, density_per_frame, frame_clock, volumetric_density
from simgen.evaluate.diffusion import diffusivity_by_size, ensemble_diffusivity, size_bins, track_diffusivity
from simgen.evaluate.report import evaluate


def test_areal_density_with_visibility_factor():
    assert VISIBILITY == 7 / 4
    assert areal_density(100, 1000.0 * 1000.0) == pytest.approx(100 * 7 / 4 / 1e6)
    assert areal_density(100, 512 * 512, visibility=1.0, pixel_size=0.5) == pytest.approx(100 / (512 * 512 * 0.25))
    np.testing.assert_allclose(areal_density(np.array([1, 2]), 4.0, visibility=2.0), [0.5, 1.0])
    np.testing.assert_allclose(areal_density([3, 3], [4.0, 6.0], visibility=1.0), [0.75, 0.5])  # per-frame areas
    with pytest.raises(ParameterError, match="visibility"):
        areal_density(1, 10, visibility=0)
    with pytest.raises(ParameterError, match="area"):
        areal_density([1, 1], [10.0, 0.0])
    with pytest.raises(ParameterError, match="pixel size"):
        areal_density(1, 10, pixel_size=-1.0)


def test_density_of_the_fecral_field_by_hand():
    """The loop study's imaged volume: 1120 x 710 px at 2.6884 px/nm, 75 nm foil (416.6 x 264 x 75 nm^3)."""
    px = 1 / 2.6884
    out = density_per_frame([100, 0], [(710, 1120), (710, 1120)], pixel_size=px, thickness=75.0)
    area_nm2 = 1120 * 710 * px**2
    assert out["area_nm2"].iloc[0] == pytest.approx(416.6 * 264.1, rel=1e-3)
    assert out["areal_density_m2"].iloc[0] == pytest.approx(100 * 7 / 4 / (area_nm2 * 1e-18))
    assert out["volumetric_density_m3"].iloc[0] == pytest.approx(100 * 7 / 4 / (area_nm2 * 75 * 1e-27))
    assert out["volumetric_density_m3"].iloc[0] == pytest.approx(2.12e22, rel=0.01)
    assert out["volumetric_density_m3"].iloc[1] == 0 and out["count"].tolist() == [100, 0]
    assert volumetric_density(4, 100.0, 10.0, pixel_size=1.0, visibility=1.0) == pytest.approx(4e24)
    no_t = density_per_frame([3], [(10, 10)], pixel_size=1.0)
    assert "volumetric_density_m3" not in no_t.columns


def test_density_rejects_bad_input():
    with pytest.raises(ParameterError, match="thickness"):
        density_per_frame([1], [(10, 10)], pixel_size=1.0, thickness=0)
    with pytest.raises(ParameterError, match="pixel size"):
        density_per_frame([1], [(10, 10)], pixel_size=-1)
    with pytest.raises(ParameterError, match="counts"):
        density_per_frame([1, 2], [(10, 10)], pixel_size=1.0)


def test_frame_clock_maps_frames_to_time_and_dose():
    # the FeCrAl segment: 8.3e-4 dpa/s, 0.0014014 dpa per frame -> 0.5923 frames/s
    clock = frame_clock(3, frame_rate=8.3e-4 / (1.6466 / 1175), dose_rate=8.3e-4, dose_start=1.4139)
    np.testing.assert_allclose(clock["dose"], 1.4139 + np.arange(3) * 1.6466 / 1175)
    assert clock["time_s"].iloc[1] == pytest.approx(1.6884, rel=1e-3)
    assert list(frame_clock(2).columns) == ["sample"]
    with pytest.raises(ParameterError, match="frame rate"):
        frame_clock(2, dose_rate=1.0)
    with pytest.raises(ParameterError, match="frame rate"):
        frame_clock(2, frame_rate=0.0)


def _walks(rng, n_tracks, n_frames, d, size):
    """Brownian tracks with diffusivity d (px^2/frame): steps N(0, 2 d) per axis."""
    steps = rng.normal(0, np.sqrt(2 * d), (n_tracks, n_frames, 2))
    xy = np.cumsum(steps, axis=1) + rng.uniform(0, 500, (n_tracks, 1, 2))
    t, f = np.meshgrid(np.arange(n_tracks), np.arange(n_frames), indexing="ij")
    return pd.DataFrame({"sample": f.ravel(), "track_id": t.ravel(), "x": xy[..., 0].ravel(),
                         "y": xy[..., 1].ravel(), "size": size})


def test_diffusivity_by_size_recovers_two_populations():
    rng = np.random.default_rng(0)
    small = _walks(rng, 40, 30, 2.0, 4.0)
    large = _walks(rng, 40, 30, 0.25, 12.0).assign(track_id=lambda t: t["track_id"] + 100)
    tracks = pd.concat([small, large], ignore_index=True)
    tracks["size"] += rng.normal(0, 0.3, len(tracks))
    by = diffusivity_by_size(tracks, bins=2, pixel_size=0.5, frame_interval=2.0)
    assert by["n_tracks"].tolist() == [40, 40] and by["n_pairs"].tolist() == [40 * 29] * 2
    # D = <dr^2> / 4 tau in (0.5 px)^2 / (2 s): scale 0.25 / 2 = 0.125
    assert by["D"].iloc[0] == pytest.approx(2.0 * 0.125, rel=0.1)
    assert by["D"].iloc[1] == pytest.approx(0.25 * 0.125, rel=0.1)
    assert by["D_median"].iloc[0] == pytest.approx(2.0 * 0.125, rel=0.2)
    fixed = diffusivity_by_size(tracks, bins=[0, 8, 20])
    assert fixed["size_hi"].tolist() == [8.0, 20.0] and fixed["D"].iloc[0] == pytest.approx(2.0, rel=0.1)


def test_ensemble_diffusivity_of_a_random_walk(rng):
    n_tracks, n_steps, sigma = 60, 40, 0.8
    pos = np.cumsum(rng.normal(0, sigma, (n_tracks, n_steps, 2)), axis=1)
    t = np.tile(np.arange(n_steps), n_tracks)
    tid = np.repeat(np.arange(n_tracks), n_steps)
    tracks = pd.DataFrame({"sample": t, "track_id": tid, "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})
    # 2-D walk with per-axis step variance s^2: D = 2 s^2 / 4
    assert ensemble_diffusivity(tracks) == pytest.approx(sigma**2 / 2, rel=0.05)
    assert ensemble_diffusivity(tracks, lag=3, pixel_size=2.0, frame_interval=0.5) == pytest.approx(
        sigma**2 / 2 * 4 / 0.5, rel=0.08)
    # a gap is not bridged: drop frame 1 of every track
    gapped = tracks[tracks["sample"] != 1]
    assert track_diffusivity(gapped)["n_pairs"].sum() == n_tracks * (n_steps - 3)
    assert ensemble_diffusivity(gapped) == pytest.approx(sigma**2 / 2, rel=0.06)
    lonely = tracks[tracks["sample"] == 0]  # one position per track: no pair
    assert np.isnan(ensemble_diffusivity(lonely)) and np.isnan(ensemble_diffusivity(tracks.iloc[:0]))
    with pytest.raises(DataError, match="columns"):
        ensemble_diffusivity(tracks.drop(columns="x"))


def test_evaluate_reports_the_trackpy_diffusivity(tmp_path):
    """Track 0 moves 1 px a frame with a gap at frame 3; track 1 jumps 2 px once.  Pooling the three lag-1
    pairs by hand gives (1 + 1 + 4) / 3 / 4 = 0.5 px^2/frame; trackpy.emsd weights each track by its
    effective number of independent measurements (12/7 / 4 = 0.4286)."""
    tracks = pd.DataFrame({"sample": [0, 1, 2, 4, 0, 1], "track_id": [0, 0, 0, 0, 1, 1],
                           "x": [10, 11, 12, 13, 30, 30.0], "y": [10, 10, 10, 10, 30, 32.0]})
    with DatasetWriter(tmp_path / "v.h5", kind="video", class_names=["loop"]) as w:
        for f in range(5):
            t = tracks[tracks["sample"] == f]
            w.append(np.full((48, 48), 0.8, np.float32), tracks={"track_id": t["track_id"], "x": t["x"], "y": t["y"]},
                     boxes={"x0": t["x"] - 3, "y0": t["y"] - 3, "x1": t["x"] + 3, "y1": t["y"] + 3,
                            "class": np.zeros(len(t), int)})
    m = evaluate(tmp_path / "v.h5", tmp_path / "v.h5", plots=False, pixel_size=0.5, frame_interval=2.0)
    d = m["tracking"]["diffusivity"]
    expected = 12 / 7 / 4 * 0.25 / 2.0
    assert d["gt"] == pytest.approx(expected) and d["pred"] == pytest.approx(expected)
    assert d["gt"] == pytest.approx(ensemble_diffusivity(tracks, pixel_size=0.5, frame_interval=2.0))
    assert d["lag_frames"] == 1 and d["unit"] == "unit^2/time"


def test_track_diffusivity_matches_a_hand_msd_and_skips_gaps():
    t = pd.DataFrame({"sample": [0, 1, 2, 4, 0, 1], "track_id": [0, 0, 0, 0, 1, 1], "x": [0, 1, 2, 3, 5, 5.0],
                      "y": [0, 0, 0, 0, 0, 2.0]})
    d = track_diffusivity(t)
    assert d.loc[0, "n_pairs"] == 2 and d.loc[0, "msd"] == pytest.approx(1.0)  # frames 2 -> 4 is no lag-1 pair
    assert d.loc[1, "D"] == pytest.approx(4.0 / 4)
    lag2 = track_diffusivity(t, lag=2)
    assert lag2.loc[0, "msd"] == pytest.approx((4 + 1) / 2) and np.isnan(lag2.loc[1, "D"])
    with pytest.raises(ParameterError):
        track_diffusivity(t, lag=0)
    with pytest.raises(DataError):
        track_diffusivity(pd.concat([t, t.iloc[:1]]))
    with pytest.raises(ParameterError):
        size_bins(np.ones(3), [3, 2])
