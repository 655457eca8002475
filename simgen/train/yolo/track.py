"""Ultralytics' ByteTrack and BoT-SORT on a table of per-frame detections.

``model.track(..., persist=True)`` runs a tracker on the boxes of Ultralytics' own
``predict``; simgen predicts with tiling and seam merging (:class:`~simgen.train.yolo.predict.YoloDetector`)
and also links LoG or any other detections, so :func:`track_boxes` drives the same tracker classes
(``ultralytics.trackers.BYTETracker`` / ``BOTSORT``) directly, one frame at a time, from a detection
table ``sample, x0, y0, x1, y1, class, score``::

    tracks = track_boxes(detections, tracker="bytetrack", settings=TrackerSettings(track_buffer=10))

ByteTrack associates tracks with high-score detections first (``track_high_thresh``), then
re-uses low-score ones (``track_low_thresh`` … ``track_high_thresh``) for tracks left unmatched,
which keeps a faint, flickering defect on its track; a lost track is kept ``track_buffer``
frames and re-found with its old id (gap closing: Ultralytics keeps a dropped track one frame
longer, so a defect missing for up to ``track_buffer + 1`` frames, at least 2, keeps its id).  BoT-SORT adds a different Kalman state and,
optionally, camera-motion compensation and appearance re-identification: both are off here (GMC
``none``, no ReID) since nothing may be downloaded and the stage does not pan.

Each row of the result is an input detection with its box unchanged (not the Kalman-smoothed one)
and a ``track_id``.  A track's first detection is kept even though Ultralytics reports a track
only from its second frame on (a new track is "unconfirmed" for one frame); detections of tracks
never confirmed are dropped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import BOX_COLUMNS, box_centres, check_detections
from simgen.train.yolo.offline import import_ultralytics

__all__ = ["TRACKERS", "TrackerSettings", "track_boxes"]

#: Trackers of Ultralytics that :func:`track_boxes` drives.
TRACKERS = ("bytetrack", "botsort")


@dataclass(frozen=True)
class TrackerSettings:
    """Settings of ByteTrack / BoT-SORT (Ultralytics' ``bytetrack.yaml`` / ``botsort.yaml`` keys).

    Attributes
    ----------
    track_high_thresh : float
        Detections scoring at least this take part in the first association.
    track_low_thresh : float
        Detections scoring above this (and below ``track_high_thresh``) may continue a track
        in the second association; lower ones are ignored.
    new_track_thresh : float
        An unmatched detection starts a track only when it scores at least this.
    track_buffer : int
        Frames a lost track is kept (and may be re-found with its id): a defect missing for up to
        ``max(track_buffer, 1) + 1`` frames keeps its id.
    match_thresh : float
        Largest association cost (1 - IoU, fused with the score when ``fuse_score``) of a match.
    fuse_score : bool
        Multiply IoU by the detection score in the first association.
    proximity_thresh, appearance_thresh : float
        BoT-SORT's re-identification gates (used only with ``with_reid``).
    gmc_method : str
        BoT-SORT's camera-motion compensation (``none``, ``sparseOptFlow``, ``orb``, ``sift``,
        ``ecc``); needs the frames, which :func:`track_boxes` does not pass, so keep ``none``.
    with_reid : bool
        BoT-SORT appearance re-identification (needs a ReID model: off).
    """

    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True
    proximity_thresh: float = 0.5
    appearance_thresh: float = 0.8
    gmc_method: str = "none"
    with_reid: bool = False

    def replace(self, **changes) -> TrackerSettings:
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise ParameterError(f"unknown tracker setting(s) {', '.join(unknown)}")
        return replace(self, **changes).validate()

    def validate(self) -> TrackerSettings:
        """Check every value; raise :class:`ParameterError` with the first problem."""
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh",
                     "proximity_thresh", "appearance_thresh"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ParameterError(f"{name} must be in [0, 1], got {v}")
        if self.track_low_thresh > self.track_high_thresh:
            raise ParameterError(f"track_low_thresh ({self.track_low_thresh}) must not exceed track_high_thresh "
                                 f"({self.track_high_thresh})")
        if int(self.track_buffer) != self.track_buffer or self.track_buffer < 0:
            raise ParameterError(f"track_buffer must be a non-negative integer, got {self.track_buffer}")
        if self.gmc_method != "none":
            raise ParameterError("gmc_method must be 'none': camera-motion compensation needs the frames "
                                 "(correct stage drift with the drift option instead)")
        if self.with_reid:
            raise ParameterError("with_reid is not supported (it needs a re-identification model)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _require_lap() -> None:
    # Ultralytics' matching imports `lap` and, if missing, calls check_requirements (a pip install).
    if importlib.util.find_spec("lap") is None:
        raise ParameterError("ByteTrack/BoT-SORT need the 'lap' package: pip install 'simgen[train]' (or pip install lap)")


def _make_tracker(name: str, settings: TrackerSettings):
    _require_lap()
    import_ultralytics()
    from ultralytics.trackers import BOTSORT, BYTETracker
    from ultralytics.utils import ROOT, YAML, IterableSimpleNamespace

    args = dict(YAML.load(ROOT / "cfg" / "trackers" / f"{name}.yaml"))  # every key the class reads
    args.update(settings.to_dict())
    args["tracker_type"] = name
    return (BYTETracker if name == "bytetrack" else BOTSORT)(IterableSimpleNamespace(**args))


def track_boxes(detections: pd.DataFrame, *, tracker: str = "bytetrack", settings: TrackerSettings | None = None,
                n_frames: int | None = None) -> pd.DataFrame:
    """Link per-frame box detections into tracks with Ultralytics' ByteTrack or BoT-SORT.

    Parameters
    ----------
    detections : DataFrame
        ``sample`` (frame), ``x0, y0, x1, y1`` (pixels), ``score`` in [0, 1] and optionally
        ``class``; other columns are carried along.  Give every candidate (low scores too):
        the tracker applies its own thresholds.
    tracker : {"bytetrack", "botsort"}
    settings : TrackerSettings, optional
        Default :class:`TrackerSettings()`.
    n_frames : int, optional
        Frames to run (default: highest frame + 1); frames without detections still age lost tracks.

    Returns
    -------
    DataFrame
        The detections that belong to a confirmed track, sorted by ``sample``, with an int64
        ``track_id`` (numbered from 0 in order of appearance) and box centres ``x, y`` added.

    Raises
    ------
    ParameterError
        Unknown tracker, bad settings, ``lap`` not installed.
    DataError
        Detections without boxes or scores, or with non-finite values.
    """
    if tracker not in TRACKERS:
        raise ParameterError(f"tracker must be one of {', '.join(TRACKERS)}, got {tracker!r}")
    settings = (settings or TrackerSettings()).validate()
    check_detections(detections, "detections", boxes=True, require_score=True)
    df = detections.drop(columns=[c for c in ("track_id", "particle") if c in detections.columns])
    df = df.assign(sample=df["sample"].to_numpy(np.int64)).sort_values("sample", kind="stable").reset_index(drop=True)
    n = int(df["sample"].max()) + 1 if len(df) else 0
    if n_frames is not None:
        if int(n_frames) != n_frames or n_frames < n:
            raise ParameterError(f"n_frames must be an integer >= {n} (the highest frame + 1), got {n_frames}")
        n = int(n_frames)
    if len(df) == 0:
        return df.assign(x=np.zeros(0), y=np.zeros(0), track_id=np.zeros(0, np.int64))
    trk = _make_tracker(tracker, settings)  # sets Ultralytics up offline before its first import
    from ultralytics.engine.results import Boxes

    s = df["sample"].to_numpy(np.int64)
    boxes = df[BOX_COLUMNS].to_numpy(np.float32)
    score = df["score"].to_numpy(np.float32)
    if not np.all((score >= 0) & (score <= 1)):
        raise DataError("detections: scores must be in [0, 1]")
    cls = df["class"].to_numpy(np.float32) if "class" in df.columns else np.zeros(len(df), np.float32)
    table = np.column_stack([boxes, score, cls]).astype(np.float32)
    lo = np.searchsorted(s, np.arange(n), "left")
    hi = np.searchsorted(s, np.arange(n), "right")
    rows, ids, confirmed = [], [], set()
    for t in range(n):
        trk.update(Boxes(table[lo[t]:hi[t]], (1, 1)))
        for st in trk.tracked_stracks:
            if st.frame_id != trk.frame_id:  # pragma: no cover - tracked tracks are updated this frame
                continue
            rows.append(lo[t] + int(st.idx))
            ids.append(int(st.track_id))
            if st.is_activated:
                confirmed.add(int(st.track_id))
    rows_a = np.asarray(rows, np.int64)
    ids_a = np.asarray(ids, np.int64)
    keep = np.isin(ids_a, np.fromiter(confirmed, np.int64, len(confirmed)))
    rows_a, ids_a = rows_a[keep], ids_a[keep]
    order = np.argsort(rows_a, kind="stable")
    rows_a, ids_a = rows_a[order], ids_a[order]
    _, new_ids = np.unique(ids_a, return_inverse=True)  # Ultralytics counts from 1, with gaps: renumber
    first_seen = np.unique(new_ids, return_index=True)[1]
    rank = np.empty(len(first_seen), np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(len(first_seen))
    out = df.iloc[rows_a].reset_index(drop=True)
    c = box_centres(out[BOX_COLUMNS].to_numpy(np.float64)) if len(out) else np.zeros((0, 2))
    return out.assign(x=c[:, 0], y=c[:, 1], track_id=rank[new_ids].astype(np.int64))
