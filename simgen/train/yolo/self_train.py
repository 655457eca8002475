"""Lever 3 of unsupervised adaptation (see ``docs/adapt.md``): self-training with drift guards.

:func:`self_train` runs rounds of pseudo-labelling (:func:`~simgen.train.yolo.pseudo_label.pseudo_label`)
and fine-tuning on synthetic + pseudo-labelled real images; the student becomes the next teacher.
Drift guards (:func:`box_limits`, :func:`count_change`) cap the pseudo boxes per image and stop
when the box count jumps.  No real label is ever read: the pseudo-label threshold, the student's
best epoch and early stopping are chosen on synthetic data, and the final student's confidence
threshold there too (default) or by matching its detection count on the unlabeled images to the
synthetic teacher's at its threshold (``student_conf="teacher_count"``, :mod:`.count_threshold`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text, json_default_lenient
from simgen.datasets.h5io import DatasetWriter
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.progress import ProgressLog, Timer
from simgen.rng import check_seed
from simgen.runtime import setup_threads
from simgen.train.yolo.adaptation_record import _now, _plain, _stamp
from simgen.train.yolo.config import PRESETS, YoloConfig
from simgen.train.yolo.count_threshold import check_student_conf, teacher_count_threshold
from simgen.train.yolo.detector_input import _n_tiles
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.pseudo_label import BOX_COLUMNS, FLIPS, _check_flips, _label_stream, _threshold
from simgen.train.yolo.trainer import train_yolo
from simgen.train.yolo.unlabeled import UnlabeledImages, _Opened

__all__ = ["SelfTrainResult", "self_train", "box_limits", "count_change"]

#: Seed-stream tags (``SeedSequence(seed, spawn_key=(tag, ...))``), one per random choice; the
#: series 0xAD0... is shared with :mod:`.adapt_batchnorm` (0xAD0, 0xAD1): keep the values distinct.
_TAG_VAL, _TAG_RATIO = 0xAD2, 0xAD3


@dataclass
class SelfTrainResult:
    """Outcome of :func:`self_train`.

    Attributes
    ----------
    weights : Path
        ``<output>/best.pt``: the last accepted student (the input model when no round was
        accepted), with the adaptation record in ``simgen["adaptation"]``.
    output : Path
        The run folder.
    rounds : list of dict
        Per round: ``round``, ``status`` (``trained`` or ``stopped``), ``reason``, ``teacher``,
        ``conf`` and ``conf_source`` (threshold used for the pseudo-labels), ``n_images``,
        ``n_images_used``, ``n_boxes_raw`` (flip-consistent, before the cap), ``n_boxes`` (after
        the cap), ``n_capped``, ``mean_score``, ``change`` (relative change of ``n_boxes_raw``
        against the previous round), ``label_seconds``, ``train_seconds``, ``student``,
        ``student_conf_f1`` and ``student_val_f1`` (on synthetic validation), ``pseudo_files``,
        ``pseudo_repeats``, ``pseudo_images_trained``.
    stopped : str or None
        Why self-training stopped before ``rounds`` rounds, else ``None``.
    """

    weights: Path
    output: Path
    rounds: list[dict] = field(default_factory=list)
    stopped: str | None = None

    def to_dict(self) -> dict:
        return {"weights": str(self.weights), "output": str(self.output), "rounds": self.rounds,
                "stopped": self.stopped}


def _as_list(x) -> list[Path]:
    return [Path(x)] if isinstance(x, (str, Path)) else [Path(p) for p in x]


def _cap(df: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The ``limit`` highest-scoring boxes (all when ``limit`` is None)."""
    if limit is None or len(df) <= limit:
        return df
    return df.sort_values("score", ascending=False, kind="stable").iloc[: max(int(limit), 0)].reset_index(drop=True)


def box_limits(first_counts: Sequence[int], max_box_growth: float | None) -> list[int | None]:
    """Per-image pseudo-box caps: ``ceil(max_box_growth * first-round count)`` (``None``: no cap)."""
    if max_box_growth is None:
        return [None] * len(first_counts)
    return [int(math.ceil(max_box_growth * int(n) - 1e-9)) for n in first_counts]


def count_change(previous: int, current: int) -> float:
    """Relative change of the pseudo-box count between two rounds: ``|current - previous| / max(previous, 1)``."""
    return abs(int(current) - int(previous)) / max(int(previous), 1)


def _is_8bit(image: np.ndarray) -> bool:
    v = np.asarray(image, np.float64) * 255.0
    return bool(np.all(np.abs(v - np.rint(v)) < 1e-3))


def _write_pseudo(src: UnlabeledImages, stream, rdir: Path, class_names: list[str], limits: list[int | None] | None,
                  skip_empty: bool, generator: dict) -> dict:
    """Write images + capped pseudo boxes as simgen HDF5 (one file per image shape); returns the statistics."""
    writers: dict[tuple[int, int], DatasetWriter] = {}
    raw, kept, used, scores, files = [], [], [], [], []
    dtype = None
    try:
        for k, img, df in stream:
            raw.append(len(df))
            df = _cap(df, limits[k] if limits is not None else None)
            kept.append(len(df))
            if skip_empty and len(df) == 0:
                continue
            if dtype is None:
                dtype = "uint8" if _is_8bit(img) else "uint16"
            shape = tuple(img.shape)
            if shape not in writers:
                name = "pseudo.h5" if not writers else f"pseudo_{shape[0]}x{shape[1]}.h5"
                writers[shape] = DatasetWriter(rdir / name, kind="pseudo_labels", image_dtype=dtype,
                                               class_names=class_names, generator=generator, overwrite=True,
                                               attrs={"source": src.origin, "labels": "pseudo (no real labels)"})
            writers[shape].append(img, boxes=df[BOX_COLUMNS], name=src.name(k))
            used.append(src.name(k))
            scores.append(df["score"].to_numpy(np.float64))
        for w in writers.values():
            files.append(str(w.close()))
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    return {"per_image_raw": raw, "per_image": kept, "names": src.names, "used": used, "files": files,
            "n_images": len(raw), "n_images_used": len(used), "n_boxes_raw": int(sum(raw)),
            "n_boxes": int(sum(kept)), "n_capped": int(sum(raw) - sum(kept)),
            "mean_score": float(all_scores.mean()) if len(all_scores) else None}


def _student_config(teacher_meta: dict, config: YoloConfig | None, epochs: int, seed: int, device: str) -> YoloConfig:
    if config is None:
        known = {f.name for f in dataclasses.fields(YoloConfig)}
        stored = {k: v for k, v in (teacher_meta.get("config") or {}).items() if k in known}
        config = YoloConfig(**stored) if stored else PRESETS["full"]
    return config.replace(epochs=int(epochs), seed=seed, device=device).validate()


def _synthetic_split(synthetic: list[Path], synthetic_val: list[Path] | None, config: YoloConfig, seed: int):
    """Training sources/names and a synthetic-only validation set (held out by name when none is given)."""
    if synthetic_val:
        return list(synthetic), [None] * len(synthetic), list(synthetic_val), [None] * len(synthetic_val)
    if config.val_fraction <= 0:  # validate on the synthetic training images (still synthetic only)
        return list(synthetic), [None] * len(synthetic), list(synthetic), [None] * len(synthetic)
    tr_names, va_names = [], []
    for s, path in enumerate(synthetic):
        with open_source(path) as src:
            names = [src.name(k) for k in range(len(src))]
        if len(names) < 2:
            raise ParameterError(f"{path} has {len(names)} sample(s); give synthetic_val to validate on")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_VAL, s)))
        n_hold = min(max(int(round(config.val_fraction * len(names))), 1), len(names) - 1)
        held = set(rng.choice(len(names), n_hold, replace=False).tolist())
        tr_names.append([n for i, n in enumerate(names) if i not in held])
        va_names.append([n for i, n in enumerate(names) if i in held])
    return list(synthetic), tr_names, list(synthetic), va_names


def _synthetic_tiles(paths: list[Path], names: list, config: YoloConfig) -> int:
    total = 0
    for path, sel in zip(paths, names):
        with open_source(path, sel) as src:
            total += sum(_n_tiles(src.shape(k), config.tile, config.overlap, config.scale) for k in range(len(src)))
    return total


def _mix(stats: dict, shapes: dict[str, tuple[int, int]], syn_tiles: int, ratio: float | None, config: YoloConfig,
         seed: int, rnd: int) -> tuple[list[Path], list, int, int]:
    """Pseudo-labelled training sources so that pseudo tiles ≈ ``ratio`` × synthetic tiles.

    Too many pseudo tiles: a seeded subset of the pseudo images; too few: the pseudo files are
    listed several times (at most 20).  ``ratio=None``: every pseudo image once.
    """
    files = [Path(f) for f in stats["files"]]
    if ratio is None:
        return files, [None] * len(files), 1, stats["n_images_used"]
    tiles = {n: _n_tiles(shapes[n], config.tile, config.overlap, config.scale) for n in stats["used"]}
    have = sum(tiles.values())
    target = ratio * syn_tiles
    if have <= target:
        repeats = int(min(max(round(target / max(have, 1)), 1), 20))
        return files * repeats, [None] * (len(files) * repeats), repeats, stats["n_images_used"]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_RATIO, rnd)))
    chosen, acc = set(), 0
    for i in rng.permutation(len(stats["used"])):
        if acc >= target and chosen:
            break
        chosen.add(stats["used"][i])
        acc += tiles[stats["used"][i]]
    paths, names = [], []
    for f in files:
        with open_source(f) as src:
            sel = [src.name(k) for k in range(len(src)) if src.name(k) in chosen]
        if sel:
            paths.append(f)
            names.append(sel)
    return paths, names, 1, len(chosen)


def _student_done(run: Path) -> bool:
    return (run / "best.pt").is_file() and (run / "simgen.json").is_file()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default_lenient) + "\n", overwrite=True)


def self_train(weights, synthetic, unlabeled, output, *, rounds: int = 2, epochs: int = 10,
               config: YoloConfig | None = None, synthetic_val=None, conf: float | None = None,
               iou: float = 0.5, flip_consistency: bool = True, flips: Sequence[str] = FLIPS,
               pseudo_ratio: float | None = 1.0, skip_empty: bool = True, max_box_growth: float | None = 1.5,
               max_count_change: float | None = 0.5, exclude: Sequence[str] = (),
               student_conf: str = "synthetic", count_images: int = 24, seed: int = 0, device: str = "auto",
               resume: bool = False, overwrite: bool = False, progress: bool = True,
               cache_dir=None, threads: int | None = None) -> SelfTrainResult:
    """Self-training on unlabeled real images: pseudo-label, fine-tune on synthetic + pseudo, repeat.

    Each round: (1) the current teacher pseudo-labels the unlabeled images (:func:`pseudo_label`;
    threshold = the teacher's synthetic-validation ``conf_f1`` unless ``conf`` is given); (2) the
    images and their pseudo boxes are written as simgen HDF5 in ``<output>/roundN/``; (3) a student
    starts from the teacher's weights and trains ``epochs`` epochs with :func:`train_yolo` on the
    synthetic data *and* the pseudo-labelled images in one training set (synthetic tiles are in
    every batch's pool); its validation set — which picks the best epoch, early stopping and the
    student's ``conf_f1`` — is synthetic only; (4) the student becomes the teacher.

    Drift guards: an image never gets more than ``ceil(max_box_growth × its first-round count)``
    pseudo boxes (highest scores kept), and self-training stops before training a round whose
    flip-consistent box count changed by more than ``max_count_change`` (relative) against the
    previous round, or that found no box at all; the last accepted student is the result.

    Parameters
    ----------
    weights : path
        The synthetic-trained teacher (``best.pt``; may be a :func:`adapt_batchnorm` output).
    synthetic : path or list of paths
        Synthetic training data with boxes (HDF5 datasets / YOLO folders of *synthetic* data).
    unlabeled : path, sequence or UnlabeledImages
        Unlabeled real images (labels are never read; see :class:`UnlabeledImages`).
    output : path
        Run folder: ``adapt.json`` (settings and per-round records), ``roundN/pseudo*.h5``,
        ``roundN/pseudo.json``, ``roundN/student/`` (a :func:`train_yolo` run), ``roundN/round.json``,
        and ``best.pt`` (the result).
    rounds : int
        Maximum number of rounds.
    epochs : int
        Training epochs per round (replaces ``config.epochs``).
    config : YoloConfig, optional
        Student settings; default: the teacher's stored training config.
    synthetic_val : path or list of paths, optional
        Synthetic validation data.  Default: ``config.val_fraction`` of the synthetic samples is
        held out by name (seeded) — never pseudo-labelled images.
    conf, iou, flip_consistency, flips
        Pseudo-labelling (see :func:`pseudo_label`).
    pseudo_ratio : float or None
        Target ratio of pseudo-labelled to synthetic training *tiles* per round (1.0: as many
        real as synthetic tiles; the pseudo images are subsampled or listed repeatedly).
        ``None``: every pseudo-labelled image once, whatever the synthetic set's size.
    skip_empty : bool
        Leave images without any pseudo box out of training (an empty pseudo label more
        often means a miss than an empty image).
    max_box_growth : float or None
        Per-image cap relative to the first round (``>= 1``; ``None``: no cap).
    max_count_change : float or None
        Stop when the pseudo-box count changes by more than this fraction between rounds
        (``None``: never).
    exclude : sequence of str
        Unlabeled image names to leave out (e.g. frames that will be scored).
    student_conf : {"teacher_count", "synthetic"}
        The final student's confidence threshold (``simgen.conf_f1`` of ``best.pt``):
        ``teacher_count`` — the score at which the student finds as many defects on
        ``count_images`` of the unlabeled images as the input model (``weights``) finds there at
        its threshold (:func:`~simgen.train.yolo.count_threshold.teacher_count_threshold`;
        label-free, keeps the synthetic model's operating point); ``synthetic`` (default) — the one
        that maximised F1 on the synthetic validation set.  Measured on the three real dev sets
        (README): ``teacher_count`` lifts F1 where the synthetic model over-counts and its student
        over-detects (dsva_fecral, 0.736 → 0.802) and lowers it where it does not (ti_anneal,
        creme_316L), so it is an option, not the default.  The synthetic one is kept as
        ``simgen.conf_f1_synthetic`` either way.  The same rule gives each later round's teacher
        (the previous round's student) its pseudo-label threshold, so every round's pseudo-labels
        keep the operating point (``conf``, when given, overrides it for every round).  Chosen
        after training, so it may change on ``resume`` — except that a finished round 2 or later
        was pseudo-labelled with it, and resuming such a run with another rule is refused.
    count_images : int
        Unlabeled images (spread evenly) the ``teacher_count`` threshold is counted on.
    seed : int
        Seeds training, the validation hold-out and the ratio subsampling.
    device : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda:N``.
    resume : bool
        Continue a run: finished rounds (``round.json``) are skipped, written pseudo-labels are
        reused and an interrupted student resumes from its last checkpoint.
    overwrite : bool
        Start afresh in a folder that holds a run (its rounds are deleted).
    progress : bool
        Progress lines on stderr.
    cache_dir : path, optional
        YOLO export cache (see :func:`prepare_yolo_data`).

    Returns
    -------
    SelfTrainResult
    """
    # -- validate everything before any output exists
    seed = check_seed(seed)
    if int(rounds) < 1 or int(epochs) < 1:
        raise ParameterError("rounds and epochs must be >= 1")
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    flips = _check_flips(flip_consistency, flips)
    if pseudo_ratio is not None and not float(pseudo_ratio) > 0:
        raise ParameterError(f"pseudo_ratio must be > 0 (or None), got {pseudo_ratio}")
    if max_box_growth is not None and not float(max_box_growth) >= 1:
        raise ParameterError(f"max_box_growth must be >= 1 (or None), got {max_box_growth}")
    if max_count_change is not None and not float(max_count_change) > 0:
        raise ParameterError(f"max_count_change must be > 0 (or None), got {max_count_change}")
    check_student_conf(student_conf)
    if int(count_images) < 1:
        raise ParameterError(f"count_images must be >= 1, got {count_images}")
    weights, out = Path(weights), Path(output)
    if not weights.is_file():
        raise ParameterError(f"weights {weights} do not exist")
    synthetic = _as_list(synthetic)
    synthetic_val = _as_list(synthetic_val) if synthetic_val is not None else None
    for p in synthetic + (synthetic_val or []):
        if not p.exists():
            raise ParameterError(f"synthetic data {p} does not exist")
        with open_source(p) as s:
            if not s.has_labels:
                raise DataError(f"{p} has no box labels to train on")
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a run folder")
    inputs = [weights, *synthetic, *(synthetic_val or [])]
    if isinstance(unlabeled, (str, Path)):
        inputs.append(Path(unlabeled))
    for p in inputs:
        if p.exists() and out.exists() and (p.resolve() == out.resolve() or out.resolve() in p.resolve().parents):
            raise ParameterError(f"output {out} holds the input {p}; choose another run folder")
    if isinstance(unlabeled, (str, Path)) and Path(unlabeled).is_dir() and (
            Path(unlabeled).resolve() in out.resolve().parents):
        raise ParameterError(f"output {out} is inside the unlabeled images {unlabeled}; choose another run folder")
    teacher_det = YoloDetector(weights, device=device, threads=threads)  # validates the checkpoint
    t_conf, t_source = _threshold(teacher_det, conf)
    cfg = _student_config(teacher_det.meta, config, epochs, seed, device)
    with _Opened(unlabeled, exclude) as probe:
        image_names = probe.names
    settings = _plain({
        "weights": str(weights.resolve()), "synthetic": [str(p.resolve()) for p in synthetic],
        "synthetic_val": [str(p.resolve()) for p in synthetic_val] if synthetic_val else None,
        "unlabeled": str(Path(unlabeled).resolve()) if isinstance(unlabeled, (str, Path)) else "<given>",
        "exclude": sorted(map(str, exclude)), "image_names": image_names, "epochs": int(epochs),
        "config": cfg.to_dict(), "conf": conf, "iou": iou, "flips": list(flips), "pseudo_ratio": pseudo_ratio, "skip_empty": skip_empty,
        "max_box_growth": max_box_growth, "max_count_change": max_count_change, "seed": seed,
        "student_conf": student_conf, "count_images": int(count_images),
    })
    #: chosen after training: a resumed run may change them (the threshold is recomputed)
    after_training = {"student_conf", "count_images"}
    state_file = out / "adapt.json"
    has_run = state_file.exists() or any(out.glob("round*")) if out.is_dir() else False
    if has_run and not (resume or overwrite):
        raise ParameterError(f"run folder {out} holds a self-training run; pass --resume to continue it or --overwrite")
    if resume and state_file.exists():
        before = _read_json(state_file).get("settings", {})
        diff = sorted(k for k in settings
                      if k != "config" and k not in after_training and before.get(k) != settings[k])
        diff += [f"config.{k}" for k in settings["config"]
                 if k != "device" and (before.get("config") or {}).get(k) != settings["config"][k]]
        if diff:
            raise ParameterError(f"cannot resume {out}: settings differ ({', '.join(diff[:5])}); use --overwrite")
    # the rule that picks the final threshold also picks each later round's pseudo-label threshold, so a
    # resumed run whose round 2+ was labelled under another rule would mix two rules
    rule = "given" if conf is not None else student_conf
    for r in range(2, int(rounds) + 1):
        stats_file = out / f"round{r}" / "pseudo.json"
        was = _read_json(stats_file).get("threshold_rule", "synthetic") if resume and stats_file.exists() else rule
        if was != rule:
            raise ParameterError(f"cannot resume {out}: round {r} was pseudo-labelled with the {was} threshold, "
                                 f"not {rule}; use --overwrite or another run folder")
    with _Opened(unlabeled, exclude) as src:
        shapes = {src.name(k): src.shape(k) for k in range(len(src))}
        # -- from here on, outputs are written
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for d in out.glob("round*"):
                if d.is_dir():
                    shutil.rmtree(d)
            for name in ("adapt.json", "best.pt"):
                (out / name).unlink(missing_ok=True)
        log = ProgressLog(None, enabled=progress, prefix="[self-train] ")
        threads = setup_threads(threads)
        tr_paths, tr_names, va_paths, va_names = _synthetic_split(synthetic, synthetic_val, cfg, seed)
        syn_tiles = _synthetic_tiles(tr_paths, tr_names, cfg)
        state = {"settings": settings, "images": src.describe(), "rounds": [], "result": None}
        _write_json(state_file, state)

        teacher, records, stopped = weights, [], None
        first_counts: list[int] | None = None
        count_cache: dict = {}
        thresholds: dict[str, dict] = {}

        def counted(model: YoloDetector, path: Path) -> dict:
            """The ``teacher_count`` threshold of the student at ``path`` (computed once)."""
            if str(path) not in thresholds:
                thresholds[str(path)] = teacher_count_threshold(model, teacher_det, t_conf, src, n_images=count_images,
                                                                progress=progress, cache=count_cache)
            return thresholds[str(path)]

        def operating(model: YoloDetector, path: Path) -> tuple[float, str]:
            """A student's operating threshold under ``student_conf`` (or ``conf`` when given)."""
            if conf is not None or student_conf == "synthetic":
                return _threshold(model, conf)
            found = counted(model, path)
            return float(found["conf"]), f"teacher_count: {found['source']}"
        for r in range(1, int(rounds) + 1):
            rdir = out / f"round{r}"
            done, stats_file = rdir / "round.json", rdir / "pseudo.json"
            if resume and done.exists():
                record = _read_json(done)
                records.append(record)
                if first_counts is None:
                    first_counts = _read_json(rdir / "pseudo.json")["per_image_raw"]
                log.message(f"round {r}: {record['status']} (resumed: already done)")
                if record["status"] != "trained":
                    stopped = record["reason"]
                    break
                teacher = Path(record["student"])
                continue
            rdir.mkdir(parents=True, exist_ok=True)
            det = teacher_det if teacher == weights else YoloDetector(teacher, device=device, threads=threads)
            # 1-2. pseudo-label and write
            if resume and stats_file.exists():
                stats = _read_json(stats_file)
            else:
                if teacher == weights:
                    r_conf, r_source = t_conf, t_source
                else:
                    r_conf, r_source = operating(det, teacher)
                limits = box_limits(first_counts, max_box_growth) if first_counts is not None else None
                generator = {"function": "simgen.train.yolo.self_train.self_train", "round": r,
                             "teacher": str(teacher), "conf": r_conf, "conf_source": r_source, "iou": iou,
                             "flips": list(flips), "max_box_growth": max_box_growth, "detector": det.describe()}
                with Timer() as t:
                    stats = _write_pseudo(src, _label_stream(det, src, r_conf, flips, iou, progress), rdir,
                                          list(det.class_names), limits, skip_empty, generator)
                stats.update(conf=r_conf, conf_source=r_source, teacher=str(teacher), label_seconds=round(t.seconds, 2),
                             threshold_rule=rule)
                _write_json(stats_file, stats)
            r_conf = float(stats["conf"])
            if first_counts is None:
                first_counts = stats["per_image_raw"]
            prev = records[-1]["n_boxes_raw"] if records else None
            change = count_change(prev, stats["n_boxes_raw"]) if prev is not None else None
            record = {k: stats[k] for k in ("n_images", "n_images_used", "n_boxes_raw", "n_boxes", "n_capped",
                                            "mean_score", "conf", "conf_source", "teacher", "label_seconds")}
            record.update(round=r, change=change, pseudo_files=stats["files"])
            log.message(f"round {r}: {stats['n_boxes']} pseudo boxes on {stats['n_images_used']}/{stats['n_images']} "
                        f"images (raw {stats['n_boxes_raw']}, conf >= {r_conf:.3f}, mean score "
                        f"{stats['mean_score'] if stats['mean_score'] is not None else float('nan'):.3f})")
            reason = None
            if stats["n_boxes"] == 0:
                reason = f"round {r}: no pseudo box passed the threshold and the flip check"
            elif change is not None and max_count_change is not None and change > max_count_change:
                reason = (f"round {r}: pseudo-box count changed by {100 * change:.0f}% "
                          f"(> {100 * max_count_change:.0f}%) against round {r - 1}")
            if reason:
                record.update(status="stopped", reason=reason, train_seconds=0.0, student=None)
                _write_json(done, record)
                records.append(record)
                stopped = reason
                log.message(f"stopping: {reason}")
                break
            # 3. train the student on synthetic + pseudo, validate on synthetic only
            ps_paths, ps_names, repeats, n_used = _mix(stats, shapes, syn_tiles, pseudo_ratio, cfg, seed, r)
            run = rdir / "student"
            with Timer() as t:
                trained_now = not _student_done(run)
                if not trained_now:
                    best = run / "best.pt"
                else:
                    again = (run / "ultralytics" / "weights" / "last.pt").exists() and resume
                    best = train_yolo(tr_paths + ps_paths, run, val=va_paths, config=cfg, weights=teacher,
                                      resume=again, overwrite=not again, progress=progress, cache_dir=cache_dir,
                                      threads=threads, train_names=tr_names + ps_names, val_names=va_names)
            student_meta = _read_json(run / "simgen.json")
            seconds = t.seconds if trained_now else float(student_meta.get("train_seconds") or 0.0)
            record.update(status="trained", reason=None, train_seconds=round(seconds, 2), student=str(best),
                          student_conf_f1=student_meta.get("conf_f1"), student_val_f1=student_meta.get("val_f1"),
                          pseudo_repeats=repeats, pseudo_images_trained=n_used,
                          validation=[str(p) for p in va_paths])
            _write_json(done, record)
            records.append(record)
            state["rounds"] = records
            _write_json(state_file, state)
            log.message(f"round {r}: student trained in {seconds:.0f}s; synthetic-validation threshold "
                        f"{record['student_conf_f1']:.3f}")
            teacher = Path(best)

        trained = [rec for rec in records if rec["status"] == "trained"]
        updates, threshold = None, {"source": "conf_f1 of the final model's synthetic validation"}
        if trained:
            synthetic_conf = float(trained[-1]["student_conf_f1"])
            threshold = {"conf": synthetic_conf, "source": "synthetic validation (student conf_f1)"}
            if student_conf == "teacher_count":
                threshold = counted(YoloDetector(teacher, device=device, threads=threads), teacher)
                log.message(f"student threshold {threshold['conf']:.3f} ({threshold['found']} detections for the "
                            f"teacher's {threshold['target']} on {len(threshold['images'])} images; "
                            f"synthetic validation: {synthetic_conf:.3f})")
            updates = {"conf_f1": threshold["conf"], "conf_f1_synthetic": synthetic_conf}
        final = {"method": "self_train", "date": _now(), "source_weights": str(weights.resolve()),
                 "images": src.describe(), "rounds_trained": len(trained), "stopped": stopped,
                 "rounds": [{k: v for k, v in rec.items() if k != "pseudo_files"} for rec in records],
                 "threshold": threshold}
        best_out = _stamp(teacher, out / "best.pt", final, updates)
        result = SelfTrainResult(weights=best_out, output=out, rounds=records, stopped=stopped)
        state["rounds"], state["result"], state["threshold"] = records, result.to_dict(), threshold
        _write_json(state_file, state)
        log.message(f"done: {best_out} ({final['rounds_trained']} round(s) trained)")
    return result
