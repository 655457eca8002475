"""Cross-validation of video tracking over several simulated videos (``simgen track-video-cv``).

One simulated video is one draw: its defects, their motion and its noise.  A tracking figure
from one video says little about the next, so :func:`track_video_cv` simulates ``folds`` videos
(:class:`~simgen.simulate.video.VideoSampler`, seeds ``seed, seed + 1, ...``, the TEM presets
taken in turn), runs :func:`~simgen.experiments.track_video.track_video` on each (detect, link,
score) and reports, per MOT IoU threshold, the mean ± sample standard deviation (``ddof=1``)
over the videos of MOTA, IDF1, MT, ML, ID switches and fragmentations, together with the
lifetime comparison pooled over all videos (predicted against true track lifetimes, Doane bins,
χ² and two-sample KS, :func:`simgen.evaluate.lifetimes.compare_lifetimes`).

Output folder::

    videos/video_<i>.h5          the simulated videos (ground-truth tracks inside)
    fold_<i>/                    track-video output of video i (report/ at the first MOT IoU)
    fold_<i>/report_iou<x>/      metrics.json at the other MOT IoUs
    report.json, report.md       per-fold figures, mean ± std, pooled lifetimes
    lifetimes.png, mot.png       lifetime bars (Doane bins); metric means ± std per IoU
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text
from simgen.datasets.sources import open_source
from simgen.datasets.video_io import write_video
from simgen.errors import ParameterError
from simgen.evaluate.lifetimes import compare_lifetimes, track_lifetimes
from simgen.evaluate.plots import plot_lifetime_bars, plot_metric_bars, save_figure
from simgen.evaluate.report import evaluate, to_jsonable
from simgen.experiments.common import ExperimentResult, check_experiment_dir, empty_dir
from simgen.experiments.track_video import TrackingOptions, check_runtime, track_video
from simgen.simulate.tem import PRESETS as TEM_PRESETS
from simgen.simulate.tem import TemConfig
from simgen.simulate.video import VideoConfig, VideoSampler
from simgen.train.yolo.box_scale import BOX_SCALE_MODES

__all__ = ["CV_METRICS", "VideoCVConfig", "TrackVideoCVResult", "track_video_cv"]

#: Tracking metrics summarised over the videos (TrackEval names).
CV_METRICS = ("MOTA", "IDF1", "MT", "ML", "IDSW", "Frag")


@dataclass(frozen=True)
class VideoCVConfig:
    """The simulated videos and the scoring of :func:`track_video_cv`.

    Attributes
    ----------
    folds : int
        Number of videos (>= 2, for a standard deviation).
    presets : tuple of str
        TEM presets (:data:`simgen.simulate.tem.PRESETS`) of the videos, used in turn.
    frames : int
        Frames per video.
    size : int or (H, W)
        Frame size in pixels.
    seed : int
        Video ``i`` is simulated with seed ``seed + i``.
    n_initial : int, optional
        Defects in frame 0 (default: :class:`~simgen.simulate.video.VideoConfig`'s).
    mot_ious : tuple of float
        MOT IoU thresholds scored (the first is track-video's own report).
    """

    folds: int = 3
    presets: tuple[str, ...] = ("dsva",)
    frames: int = 100
    size: int | tuple[int, int] = 512
    seed: int = 0
    n_initial: int | None = None
    mot_ious: tuple[float, ...] = (0.15, 0.5)

    def validate(self) -> VideoCVConfig:
        if int(self.folds) != self.folds or self.folds < 2:
            raise ParameterError(f"folds must be an integer >= 2 (a standard deviation needs two videos), "
                                 f"got {self.folds}")
        if not self.presets:
            raise ParameterError("give at least one TEM preset")
        for p in self.presets:
            if p not in TEM_PRESETS:
                raise ParameterError(f"unknown TEM preset {p!r}; choose from {', '.join(TEM_PRESETS)}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed}")
        if not self.mot_ious or len(set(self.mot_ious)) != len(self.mot_ious):
            raise ParameterError(f"MOT IoUs must be distinct values, got {self.mot_ious}")
        for iou in self.mot_ious:
            if not (np.isfinite(iou) and 0 < iou <= 1):
                raise ParameterError(f"MOT IoU must be in (0, 1], got {iou}")
        for i in range(int(self.folds)):
            self.video_config(i)  # every video's parameters are checked before any work
        return self

    def video_config(self, i: int) -> VideoConfig:
        """The :class:`VideoConfig` of video ``i`` (its seed is ``seed + i``)."""
        preset = self.presets[i % len(self.presets)]
        changes = {"frames": int(self.frames)}
        if self.n_initial is not None:
            changes["n_initial"] = int(self.n_initial)
        return VideoConfig(tem=TemConfig.from_preset(preset, size=self.size), **changes).validate()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["presets"], d["mot_ious"] = list(self.presets), list(self.mot_ious)
        return d


@dataclass
class TrackVideoCVResult(ExperimentResult):
    """What :func:`track_video_cv` measured; :meth:`to_dict` is ``report.json``.

    ``folds``: one dict per video (seed, preset, detection P/R/F1, the metrics per MOT IoU);
    ``summary[iou][metric]``: ``mean``, ``std`` (sample, ``ddof=1``) and ``values``;
    ``lifetimes``: :func:`~simgen.evaluate.lifetimes.compare_lifetimes` on all videos' tracks.
    """

    output: Path
    config: VideoCVConfig
    options: TrackingOptions
    folds: list[dict]
    summary: dict
    lifetimes: dict
    weights: str = ""

    def to_dict(self) -> dict:
        return {"weights": self.weights, "config": self.config.to_dict(), "tracking_options": self.options.to_dict(),
                "folds": self.folds, "summary": self.summary, "lifetimes": self.lifetimes}


def _iou_key(iou: float) -> str:
    return f"{iou:g}"


def _summarise(folds: list[dict], ious: tuple[float, ...]) -> dict:
    out = {}
    for iou in ious:
        key = _iou_key(iou)
        out[key] = {}
        for m in CV_METRICS:
            v = np.array([np.nan if f["tracking"][key].get(m) is None else f["tracking"][key][m] for f in folds],
                         np.float64)
            ok = v[np.isfinite(v)]
            out[key][m] = {"mean": float(ok.mean()) if len(ok) else float("nan"),
                           "std": float(ok.std(ddof=1)) if len(ok) >= 2 else float("nan"),
                           "values": v.tolist()}
    return out


def _markdown(res: TrackVideoCVResult) -> str:
    cfg = res.config
    ious = [_iou_key(i) for i in cfg.mot_ious]
    lines = [f"# Tracking cross-validated over {cfg.folds} simulated videos", "",
             f"Detector `{res.weights}`; tracker {res.options.tracker}; presets {', '.join(cfg.presets)}; "
             f"{cfg.frames} frames of {cfg.size} px; seeds {cfg.seed}..{cfg.seed + cfg.folds - 1}.", "",
             "## Mean ± standard deviation over the videos", "",
             "| metric | " + " | ".join(f"MOT IoU {k}" for k in ious) + " |",
             "|---|" + "---|" * len(ious)]
    for m in CV_METRICS:
        cells = [f"{res.summary[k][m]['mean']:.3f} ± {res.summary[k][m]['std']:.3f}" for k in ious]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Per video", "",
              "| video | preset | seed | true / predicted tracks | P / R / F1 | "
              + " | ".join(f"MOTA / IDF1 @ {k}" for k in ious) + " |",
              "|---|---|---|---|---|" + "---|" * len(ious)]
    for f in res.folds:
        d = f["detection"]
        prf = " / ".join("n/a" if d.get(k) is None else f"{d[k]:.3f}" for k in ("precision", "recall", "f1"))
        cells = [f"{f['tracking'][k]['MOTA']:.3f} / {f['tracking'][k]['IDF1']:.3f}" for k in ious]
        lines.append(f"| {f['fold']} | {f['preset']} | {f['seed']} | {f['n_true_tracks']} / {f['n_tracks']} | "
                     f"{prf} | " + " | ".join(cells) + " |")
    lt = res.lifetimes
    lines += ["", "## Lifetimes, pooled over the videos", "",
              f"{lt['n_gt']} true and {lt['n_pred']} predicted tracks; median lifetime {lt['median_gt']:.1f} true, "
              f"{lt['median_pred']:.1f} predicted (frames). χ² = {lt['chi2']:.3g} (dof {lt['chi2_dof']}, "
              f"p = {lt['chi2_p']:.3g}) on Doane bins; KS = {lt['ks']:.3g} (p = {lt['ks_p']:.3g}). "
              "Tracks cut by the first or last frame are included (censored), as in `track-video`.", "",
              "![lifetimes](lifetimes.png)", "", "![metrics](mot.png)", ""]
    return "\n".join(lines)


def track_video_cv(weights, output, config: VideoCVConfig | None = None, *, conf: float | None = None,
                   options: TrackingOptions | None = None, class_agnostic: bool | None = None,
                   device: str = "auto", threads: int | None = None, runtime: str = "torch",
                   box_scale: str = "auto", overwrite: bool = False, progress: bool = True) -> TrackVideoCVResult:
    """Simulate ``config.folds`` videos, track each with one detector and report mean ± std.

    Parameters
    ----------
    weights : path
        YOLO ``best.pt`` or a LoG parameter ``.json`` (no training needed).
    output : path
        Experiment folder (see the module docstring); must not exist unless ``overwrite``.
    config : VideoCVConfig, optional
    conf, options, class_agnostic, device, threads, runtime, box_scale
        As :func:`~simgen.experiments.track_video.track_video`.

    Returns
    -------
    TrackVideoCVResult
    """
    config = (config or VideoCVConfig()).validate()
    options = (options or TrackingOptions()).validate()
    if not Path(weights).is_file():
        raise ParameterError(f"weights {weights} do not exist")
    check_runtime(runtime, weights)
    if box_scale not in BOX_SCALE_MODES:
        raise ParameterError(f"box scale must be one of {', '.join(BOX_SCALE_MODES)}, got {box_scale!r}")
    if conf is not None and not 0 <= conf <= 1:
        raise ParameterError(f"confidence must be in [0, 1], got {conf}")
    out = check_experiment_dir(output, overwrite=overwrite)
    if out.exists() and overwrite:
        empty_dir(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    first, *others = config.mot_ious
    folds, lt_pred, lt_gt = [], [], []
    for i in range(config.folds):
        vcfg = config.video_config(i)
        sampler = VideoSampler(vcfg, seed=config.seed + i)
        video = write_video(out / "videos" / f"video_{i}.h5", sampler, progress=progress)
        fold_dir = out / f"fold_{i}"
        res = track_video(weights, video, fold_dir, conf=conf, options=options, class_agnostic=class_agnostic,
                          mot_iou=first, device=device, threads=threads, runtime=runtime, box_scale=box_scale,
                          progress=progress)
        tracking = {_iou_key(first): res.tracking}
        for iou in others:
            rep = evaluate(fold_dir / "tracks.h5", video, fold_dir / f"report_iou{_iou_key(iou)}", conf=res.conf,
                           tracking=True, class_agnostic=bool(res.class_agnostic), mot_iou=iou, plots=False,
                           overwrite=True)
            tracking[_iou_key(iou)] = rep["tracking"]
        pred = pd.read_csv(fold_dir / "tracks.csv")
        with open_source(video) as src:
            gt = src.read_table("tracks")
        if len(pred):
            lt_pred.append(track_lifetimes(pred, n_frames=vcfg.frames)["lifetime"].to_numpy())
        lt_gt.append(track_lifetimes(gt, n_frames=vcfg.frames)["lifetime"].to_numpy())
        keep = ("num_gt_ids", "num_pred_ids", *CV_METRICS, "PT", "MOTP", "IDP", "IDR")
        folds.append({"fold": i, "seed": config.seed + i, "preset": vcfg.tem.preset, "video": str(video),
                      "n_tracks": res.n_tracks, "n_true_tracks": int(sampler.n_tracks), "conf": res.conf,
                      "fps": res.fps, "detection": res.detection,
                      "tracking": {k: {m: v.get(m) for m in keep} for k, v in tracking.items()}})
    pooled_pred = np.concatenate(lt_pred) if lt_pred else np.zeros(0)
    pooled_gt = np.concatenate(lt_gt)
    lifetimes = compare_lifetimes(pooled_pred, pooled_gt)
    result = TrackVideoCVResult(out, config, options, folds, _summarise(folds, config.mot_ious), lifetimes,
                                str(weights))
    save_figure(plot_lifetime_bars(lifetimes["counts_pred"], lifetimes["counts_gt"], lifetimes["bins"], lifetimes),
                out / "lifetimes.png", overwrite=True)
    save_figure(plot_metric_bars({f"IoU {k}": v for k, v in result.summary.items()}, ("MOTA", "IDF1")),
                out / "mot.png", overwrite=True)
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(result.to_dict()), indent=2) + "\n",
                      overwrite=True)
    atomic_write_text(out / "report.md", _markdown(result), overwrite=True)
    return result
