"""`simgen analyze` (detect + track + size + density + diffusivity report) and `simgen track-video --tracker`."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.errors import ParameterError
from simgen.experiments.analyze import analyze
from simgen.experiments.track_video import TrackingOptions, track_video
from simgen.train.baselines.log import LogParams, save_params

RADII = (3.0, 3.0, 5.0)


def _frames(root, n=8, size=64, drift=(0.0, 0.0), seed=2):
    """A folder of PNG frames: three dark discs (radii 3, 3, 5 px) random-walking, the field drifting."""
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    pos = np.array([[16.0, 18.0], [44.0, 20.0], [30.0, 44.0]])
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    truth = []
    for t in range(n):
        img = np.full((size, size), 0.7) + rng.normal(0, 0.01, (size, size))
        p = pos + np.asarray(drift) * t
        for (x, y), r in zip(p, RADII):
            img[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = 0.2
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / f"frame{t:04d}.png")
        truth.append(p.copy())
        pos += rng.normal(0, 0.5, pos.shape)
    return root, np.array(truth)


def _log(tmp_path):
    return save_params(tmp_path / "log.json", LogParams(min_sigma=1.5, max_sigma=4.5, threshold=0.2))


def test_analyze_counts_sizes_densities_and_tracks(tmp_path):
    frames, truth = _frames(tmp_path / "frames")
    px = 0.5  # nm per pixel
    res = analyze(frames, _log(tmp_path), tmp_path / "report", pixel_size=px, thickness=50.0, frame_rate=2.0,
                  dose_rate=1e-3, dose_start=0.1, options=TrackingOptions(tracker="trackpy", search_range=4),
                  diffusivity_bins=2, progress=False)
    out = tmp_path / "report"
    per = pd.read_csv(out / "per_frame.csv")
    assert per["count"].tolist() == [3] * 8 and per["name"].iloc[0] == "frame0000"
    np.testing.assert_allclose(per["dose"], 0.1 + 1e-3 * np.arange(8) / 2.0)
    # density: 3 visible x 7/4 / (64 x 64 px x 0.25 nm^2 x 50 nm)
    np.testing.assert_allclose(per["volumetric_density_m3"], 3 * 1.75 / (64 * 64 * 0.25 * 50) * 1e27)
    np.testing.assert_allclose(per["areal_density_m2"], 3 * 1.75 / (64 * 64 * 0.25) * 1e18)
    # sizes: the discs' diameters 6, 6, 10 px -> median 6 px = 3 nm, Q3 between 6 and 10 px
    assert per["size_median_nm"].to_numpy() == pytest.approx(3.0, rel=0.1)
    assert (per["size_q3_nm"] > 3.2).all()
    defects = pd.read_csv(out / "defects.csv")
    assert len(defects) == 24 and np.allclose(defects["size_nm"], defects["size"] * px)
    tracks = pd.read_csv(out / "tracks.csv")
    assert tracks["track_id"].nunique() == 3 and len(tracks) == 24
    summary_tracks = pd.read_csv(out / "track_summary.csv")
    big = summary_tracks.loc[summary_tracks["size_nm"].idxmax()]
    assert big["size_nm"] == pytest.approx(5.0, rel=0.1) and big["lifetime"] == pytest.approx(4.0)  # 8 frames at 2/s
    diff = pd.read_csv(out / "diffusivity.csv")
    assert diff["n_tracks"].sum() == 3 and (diff["D"] > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tracks"] == 3 and summary["units"]["D"] == "nm^2/s" and summary["units"]["against"] == "dose"
    assert summary["count_per_frame"]["mean"] == 3 and res.n_defects == 24
    for name in ("density.png", "sizes.png", "diffusivity.png", "lifetimes.png", "per_frame.json", "detections.h5"):
        assert (out / name).stat().st_size > 0, name
    with pytest.raises(ParameterError, match="exists"):
        analyze(frames, _log(tmp_path), out, pixel_size=px, progress=False)


def test_analyze_with_drift_correction_and_bytetrack(tmp_path):
    """The field drifts 3 px per frame: ByteTrack links it and the MSD is taken without the drift."""
    frames, _ = _frames(tmp_path / "frames", drift=(3.0, 0.0))
    opts = TrackingOptions(tracker="bytetrack", drift=True, search_range=6, track_buffer=2, min_length=3)
    res = analyze(frames, _log(tmp_path), tmp_path / "rep", pixel_size=1.0, options=opts, plots=False,
                  progress=False)
    drift = pd.read_csv(tmp_path / "rep" / "drift.csv")
    assert drift["x"].iloc[-1] == pytest.approx(21.0, abs=1.5)
    assert res.n_tracks == 3
    per_track = pd.read_csv(tmp_path / "rep" / "track_summary.csv")
    # random steps of 0.5 px per axis: D = 2 * 0.25 / 4 ~ 0.125 px^2/frame, far below the drift's 9 / 4
    assert per_track["D"].max() < 1.0
    assert res.summary["tracking"]["tracker"] == "bytetrack" and res.summary["units"]["D"] == "nm^2/frame"
    assert not (tmp_path / "rep" / "density.png").exists()


def test_analyze_cli_with_a_tiny_yolo_on_a_simulated_video(tmp_path, monkeypatch):
    """End to end: `simgen simulate video` (tiny) -> YOLO trained one epoch -> `simgen analyze --tracker bytetrack`."""
    from simgen.datasets.generate import write_dataset
    from simgen.simulate.film import FilmConfig, FilmSampler
    from simgen.train.yolo.config import PRESETS
    from simgen.train.yolo.trainer import train_yolo

    monkeypatch.setenv("SIMGEN_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    video = tmp_path / "video.h5"
    res = runner.invoke(main, ["simulate", "video", "--frames", "5", "--size", "64", "--preset", "dsva",
                               "-o", str(video), "--no-progress"])
    assert res.exit_code == 0, res.output
    film = write_dataset(tmp_path / "film.h5", FilmSampler(FilmConfig(size=64, n_defects=(2, 5), box_size=12,
                                                                      min_separation=12, single_class=True).validate(),
                                                           seed=1), 6)
    best = train_yolo(film, tmp_path / "run", config=PRESETS["small"].replace(epochs=1), progress=False,
                      cache_dir=tmp_path / "cache")
    out = tmp_path / "report"
    args = ["analyze", str(video), "--weights", str(best), "--pixel-size", "0.372", "--thickness", "75",
            "--frame-rate", "0.59", "--dose-rate", "8.3e-4", "--dose-start", "1.41", "--conf", "0.001",
            "--tracker", "bytetrack", "--track-low", "0.0005", "--size-bins", "2", "-o", str(out), "--no-progress"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "frames" in res.output and "tracks" in res.output
    per = pd.read_csv(out / "per_frame.csv")
    assert len(per) == 5 and {"dose", "count", "size_median_nm", "volumetric_density_m3"} <= set(per.columns)
    from simgen.train.yolo.predict import read_predictions

    dets = read_predictions(out / "detections.h5")
    assert per["count"].tolist() == np.bincount(dets["sample"][dets["score"] >= 0.001], minlength=5).tolist()
    assert json.loads((out / "summary.json").read_text())["tracking"]["track_low_thresh"] == 0.0005

    # bad input: one line, exit 2, nothing written or replaced
    stamp = (out / "summary.json").stat().st_mtime_ns
    for bad, message in ((["--dose-rate", "1e-3"], "frame rate"), (["--pixel-size", "-1"], "pixel size"),
                         (["--size-bins", "3,2"], "edges"), ([], "exists")):
        argv = ["analyze", str(video), "--weights", str(best), "--pixel-size", "0.372", "-o", str(out),
                "--no-progress", *bad]
        if bad and bad[0] == "--dose-rate":
            argv[argv.index("-o") + 1] = str(tmp_path / "new")
        res = runner.invoke(main, argv)
        assert res.exit_code == 2 and res.output.startswith("Error:") and message in res.output, (bad, res.output)
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists() and (out / "summary.json").stat().st_mtime_ns == stamp


def _disc_video(path):
    from simgen.datasets.h5io import DatasetWriter

    rng = np.random.default_rng(2)
    h = w = 64
    starts = rng.uniform(12, 52, (3, 2))
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    with DatasetWriter(path, kind="video", class_names=["loop"]) as wr:
        for t in range(8):
            img = np.full((h, w), 0.7, np.float32) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
            pos = starts + [0.7 * t, 0.3 * t]
            for x, y in pos:
                img[(xx - x) ** 2 + (yy - y) ** 2 < 9] = 0.2
            box = {"x0": pos[:, 0] - 3, "y0": pos[:, 1] - 3, "x1": pos[:, 0] + 3, "y1": pos[:, 1] + 3}
            wr.append(img, boxes={**box, "class": np.zeros(3, np.int16)},
                      tracks={"track_id": np.arange(3), "x": pos[:, 0], "y": pos[:, 1], **box})
    return path


@pytest.mark.parametrize("tracker", ["bytetrack", "botsort"])
def test_track_video_cli_with_ultralytics_trackers(tmp_path, tracker):
    video = _disc_video(tmp_path / "video.h5")
    params = _log(tmp_path)
    out = tmp_path / tracker
    res = CliRunner().invoke(main, ["track-video", str(params), str(video), "--tracker", tracker, "--track-buffer",
                                    "5", "--min-length", "2", "--mot-iou", "0.15", "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracker"] == tracker and summary["track_buffer"] == 5 and summary["min_length"] == 2
    assert summary["n_tracks"] == 3 and summary["tracking"]["MOTA"] > 0.9 and summary["tracking"]["IDSW"] == 0
    assert summary["tracking"]["lifetimes"]["median_pred"] == 8  # first frames kept: lifetimes are whole
    assert (out / "tracks.h5").exists()


def test_track_video_min_length_and_bad_options(tmp_path):
    video = _disc_video(tmp_path / "video.h5")
    params = _log(tmp_path)
    res = track_video(params, video, tmp_path / "t", options=TrackingOptions(min_length=9), progress=False)
    assert res.n_tracks == 0  # every track is 8 frames long
    with pytest.raises(ParameterError, match="tracker"):
        track_video(params, video, tmp_path / "u", tracker="sort", progress=False)
    with pytest.raises(ParameterError, match="match_thresh"):
        TrackingOptions(tracker="bytetrack").replace(match_thresh=2.0)
    with pytest.raises(ParameterError, match="minimum track length"):
        TrackingOptions(min_length=0).validate()
    assert TrackingOptions(track_low_thresh=0.1).settings(0.05).track_low_thresh == 0.05  # capped at the high one
    assert not (tmp_path / "u").exists()


def test_analyze_machine_vs_human_on_a_labelled_folder(tmp_path):
    """A YOLO folder's labels are sized and counted like the detections: exact human boxes give
    0 % density difference and a small size difference; a human who missed one disc per frame
    gives +50 %."""
    from PIL import Image

    frames, truth = _frames(tmp_path / "raw", n=4)
    log = _log(tmp_path)
    for name, drop in (("exact", False), ("missed", True)):
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        for t, f in enumerate(sorted(frames.iterdir())):
            Image.open(f).save(root / "images" / f.name)
            lines = [f"0 {x / 64:.5f} {y / 64:.5f} {2 * (r + 1) / 64:.5f} {2 * (r + 1) / 64:.5f}"
                     for (x, y), r in zip(truth[t], RADII)]
            (root / "labels" / f"{f.stem}.txt").write_text("\n".join(lines[1:] if drop else lines) + "\n")
        res = analyze(root, log, tmp_path / f"report_{name}", pixel_size=0.5, diffusivity_bins=2,
                      options=TrackingOptions(tracker="trackpy", search_range=4), progress=False)
        agree = res.summary["machine_vs_human"]
        table = pd.read_csv(tmp_path / f"report_{name}" / "machine_vs_human.csv")
        assert len(table) == 4 and (tmp_path / f"report_{name}" / "machine_vs_human.png").stat().st_size > 0
        if drop:
            assert agree["density_diff_pct"] == pytest.approx(50.0) and agree["count_human"] == 8
        else:
            assert agree["density_diff_pct"] == 0.0 and (table["count_diff_pct"] == 0).all()
            assert abs(agree["size_median_diff_pct"]) < 15 and agree["size_median_human_nm"] == pytest.approx(3.0, rel=0.15)
    with pytest.raises(Exception, match="no labels"):
        analyze(frames, log, tmp_path / "r3", pixel_size=0.5, human=True, progress=False)
