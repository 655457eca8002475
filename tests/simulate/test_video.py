import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from simgen.errors import ParameterError
from simgen.simulate.tem import TemConfig
from simgen.simulate.video import END_CAUSES, VideoConfig, VideoSampler, msd

TEM = TemConfig(size=192, density=(300.0, 300.0), size_nm=(3.0, 4.0), arrangement="uniform", lines=(0, 0),
                specks=(0.0, 0.0))


def _fit_d(lags, m, dim=2):
    """Least-squares slope through the origin of MSD(τ) = 2·dim·D·τ."""
    return float(np.sum(lags * m) / np.sum(lags * lags)) / (2 * dim)


def test_msd_recovers_the_diffusion_coefficient():
    """Physics check: D_eff = <|r(t+τ) - r(t)|²>/(4τ) gives back D within 10 % for long tracks."""
    tem = TEM.replace(size=1024)
    for d in (0.25, 2.0):
        cfg = VideoConfig(tem=tem, frames=400, n_initial=40, nucleation=0.0, diffusion=d, glide_fraction=0.0,
                          dissolution=0.0, coalescence=False)
        v = VideoSampler(cfg, seed=3)
        pts = v.track_points()
        long = pts.groupby("track_id")["sample"].transform("size") >= 200
        lags, m = msd(pts[long], max_lag=10)
        assert abs(_fit_d(lags, m) / d - 1) < 0.10
        assert np.allclose(m / (4 * lags * d), 1, atol=0.15)


def test_glide_is_one_dimensional_along_its_direction():
    cfg = VideoConfig(tem=TEM.replace(size=1024), frames=300, n_initial=30, nucleation=0.0, diffusion=0.1,
                      glide_fraction=1.0, glide_diffusion=1.5, glide_angle=0.5, dissolution=0.0, coalescence=False)
    pts = VideoSampler(cfg, seed=1).track_points()
    lags, m = msd(pts, max_lag=8)
    assert abs(_fit_d(lags, m, dim=1) / 1.5 - 1) < 0.1
    # displacements are parallel to the glide direction
    g = pts.sort_values(["track_id", "sample"]).groupby("track_id")
    dx, dy = g["x"].diff().dropna(), g["y"].diff().dropna()
    perp = -dx * np.sin(0.5) + dy * np.cos(0.5)
    assert np.abs(perp).max() < 1e-3


def test_lifetimes_are_exact_and_causes_consistent():
    cfg = VideoConfig(tem=TEM, frames=80, n_initial=25, nucleation=40.0, diffusion=1.0, dissolution=0.02,
                      shrink=0.2, growth=0.1)
    v = VideoSampler(cfg, seed=4)
    pts = v.track_points()
    life = pd.DataFrame(v.lifetimes).set_index("track_id")
    g = pts.groupby("track_id")["sample"].agg(["min", "max", "size"])
    assert (g.index == life.index).all()
    assert (g["min"] == life["birth"]).all() and (g["max"] == life["death"]).all()
    assert (g["size"] == life["death"] - life["birth"] + 1).all()  # contiguous: present every frame
    causes = set(life["cause"])
    assert {END_CAUSES.index("alive"), END_CAUSES.index("dissolved"), END_CAUSES.index("coalesced")} <= causes
    # an absorbed defect's partner exists in the frame after the merge
    merged = life[life["cause"] == END_CAUSES.index("coalesced")]
    present = set(zip(pts["sample"], pts["track_id"]))
    for _tid, row in merged.iterrows():
        assert (row["death"] + 1, row["merged_into"]) in present
    assert (life.loc[life["cause"] == 0, "death"] == cfg.frames - 1).all()
    assert (life.loc[life["cause"] != 0, "death"] < cfg.frames - 1).all()


def test_frames_masks_boxes_and_tracks_agree():
    v = VideoSampler(VideoConfig(tem=TEM, frames=12, n_initial=15, nucleation=30.0), seed=2)
    for t in (0, 5, 11):
        out = v(t)
        rows = out["tracks"]
        ids = set(np.unique(out["mask"])) - {0}
        assert ids <= set(rows["track_id"].tolist())
        slices = ndi.find_objects(out["mask"].astype(np.int64))
        for r in rows:
            sl = slices[r["track_id"] - 1] if r["track_id"] - 1 < len(slices) else None
            if sl is not None:
                assert (r["x0"], r["y0"], r["x1"], r["y1"]) == (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        assert np.array_equal(out["boxes"]["instance"], rows["track_id"])


def test_same_seed_same_video_in_any_order():
    cfg = VideoConfig(tem=TEM, frames=6, n_initial=10)
    a, b = VideoSampler(cfg, seed=9), VideoSampler(cfg, seed=9)
    later = b(4)
    assert np.array_equal(a(4)["image"], later["image"]) and np.array_equal(a(0)["mask"], b(0)["mask"])
    assert not np.array_equal(a(0)["image"], VideoSampler(cfg, seed=10)(0)["image"])


@pytest.mark.parametrize("changes", [dict(frames=1), dict(diffusion=-1.0), dict(glide_fraction=2.0),
                                     dict(dissolution=1.5), dict(n_initial=-3)])
def test_bad_video_parameters(changes):
    with pytest.raises(ParameterError):
        VideoConfig(tem=TEM, **changes).validate()
