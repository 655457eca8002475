"""`simgen track-video-cv`: detection + tracking scored over several simulated videos (LoG detector)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.errors import ParameterError
from simgen.experiments.track_video_cv import CV_METRICS, VideoCVConfig, track_video_cv
from simgen.train.baselines.log import LogParams, save_params

TINY = dict(folds=2, presets=("dsva", "creme"), frames=5, size=64, n_initial=6)


def _log(tmp_path):
    return save_params(tmp_path / "log.json", LogParams(min_sigma=1.5, max_sigma=4, threshold=0.05))


def test_cv_over_two_tiny_videos(tmp_path):
    res = track_video_cv(_log(tmp_path), tmp_path / "cv", VideoCVConfig(**TINY), progress=False)
    out = tmp_path / "cv"
    report = json.loads((out / "report.json").read_text())
    assert [f["preset"] for f in report["folds"]] == ["dsva", "creme"]
    assert [f["seed"] for f in report["folds"]] == [0, 1]
    assert set(report["summary"]) == {"0.15", "0.5"}
    for iou in ("0.15", "0.5"):
        for m in CV_METRICS:
            entry = report["summary"][iou][m]
            values = [f["tracking"][iou][m] for f in report["folds"]]
            assert entry["values"] == values and entry["mean"] == pytest.approx(np.mean(values))
            assert entry["std"] == pytest.approx(np.std(values, ddof=1))
    # a stricter IoU never matches more: MOTA at 0.5 <= at 0.15 in every video
    assert all(f["tracking"]["0.5"]["MOTA"] <= f["tracking"]["0.15"]["MOTA"] + 1e-12 for f in report["folds"])
    lt = report["lifetimes"]
    assert lt["n_gt"] == sum(f["n_true_tracks"] for f in report["folds"])  # pooled over both videos
    assert lt["n_pred"] == sum(f["n_tracks"] for f in report["folds"])
    assert sum(lt["counts_gt"]) == lt["n_gt"] and len(lt["bins"]) == len(lt["counts_gt"]) + 1
    assert "chi2_p" in lt and "ks_p" in lt
    for name in ("report.md", "lifetimes.png", "mot.png", "fold_0/report/metrics.json",
                 "fold_1/report_iou0.5/metrics.json", "videos/video_1.h5"):
        assert (out / name).exists(), name
    assert "± " in (out / "report.md").read_text()
    assert res.summary["0.15"]["MOTA"]["values"] == report["summary"]["0.15"]["MOTA"]["values"]


def test_cv_bad_input(tmp_path):
    log = _log(tmp_path)
    for bad, match in (({"folds": 1}, "folds"), ({"presets": ("nope",)}, "preset"), ({"mot_ious": (0.0,)}, "IoU"),
                       ({"mot_ious": (0.5, 0.5)}, "distinct")):
        with pytest.raises(ParameterError, match=match):
            track_video_cv(log, tmp_path / "cv", VideoCVConfig(**{**TINY, **bad}), progress=False)
    assert not (tmp_path / "cv").exists()  # refused before any work
    runner = CliRunner()
    for args in (["--folds", "1"], ["--presets", "dsva,nope"], ["--mot-iou", "0.15,x"], ["--size", "big"]):
        res = runner.invoke(main, ["track-video-cv", str(log), "-o", str(tmp_path / "cli"), *args])
        assert res.exit_code == 2 and res.output.startswith("Error:"), res.output
        assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(main, ["track-video-cv", str(tmp_path / "missing.json"), "-o", str(tmp_path / "cli")])
    assert res.exit_code == 2 and res.output.startswith("Error:")
    assert not (tmp_path / "cli").exists()
    res = runner.invoke(main, ["track-video", str(log), str(tmp_path / "v.h5"), "--box-scale", "maybe", "-o",
                               str(tmp_path / "tv")])
    assert res.exit_code == 2 and not (tmp_path / "tv").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    res = runner.invoke(main, ["track-video-cv", str(log), "-o", str(tmp_path / "full")])
    assert res.exit_code == 2 and "exists" in res.output and (tmp_path / "full" / "keep.txt").exists()
