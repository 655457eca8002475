"""Few-shot augmentation study: does adding LDM-generated (or simulated) pairs help Mask R-CNN?

Protocol (see ``docs/ldm.md``)
------------------------------
1. The real YOLO folder (with ``masks/``) is imported once into equal tiles
   (:func:`simgen.datasets.ldm_io.import_real`, ``tile`` px after rescaling by ``scale``);
   each tile remembers its source image.
2. For every random split ``r`` (``n_splits`` of them) ``test_images`` *source images*
   are held out: all their tiles form the test set and nothing from them is ever used
   for training — neither by Mask R-CNN nor by the LDM.  (Tiles of one image are
   never split between train and test.)  The remaining tiles are the training pool,
   shuffled once per split; the ``k``-shot training set is its first ``k`` tiles
   (nested: the 10 tiles are among the 50), or the whole pool if it is smaller.
3. Conditions, each a Mask R-CNN trained from scratch with the same budget of
   ``train_iterations`` image-iterations (epochs = ⌈budget / training images⌉):

   * ``real`` — the ``k`` real tiles only;
   * ``real+ldm`` — plus ``n_extra`` pairs from an LDM trained on **those k tiles only**
     (masks from the learned layout statistics), generated at the tile size;
   * ``real+sim`` — plus ``n_extra`` TEM-simulator pairs (preset ``sim_preset``, pixel
     size adapted to ``scale``, one class);
   * ``sim`` — the ``n_extra`` simulator pairs alone (no real image; trained once,
     evaluated on every split's test set).

4. Metrics on the held-out tiles: detection F1 (class-agnostic greedy matching at
   IoU >= ``iou``, predictions with score >= ``conf``), classification F1 (macro F1 of
   the classes of matched pairs; trivially 1 for single-class data whenever anything
   matches), their harmonic mean, and AP at the same IoU.  Reported as mean ± std
   over the splits.

Everything is resumable: each finished (split, k, condition) row is appended to
``results.jsonl`` and skipped on ``resume``; intermediate files live in the study
folder; Mask R-CNN checkpoints are deleted after evaluation unless ``keep_checkpoints``.

Steps of :func:`run_fewshot` (plain functions, each can be run alone):
:func:`check_real_folder`, :func:`open_study`, :func:`import_real_tiles` (1),
:func:`simulate_pool` (the simulator pairs), :func:`plan_split` (2), :func:`run_split`
(3: per shots and condition — :func:`ldm_pairs` and :func:`train_and_score`),
:func:`run_sim_only` (the ``sim`` condition) and :func:`write_summary` (4) → :class:`FewShotResult`.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_path, atomic_write_text
from simgen.augment.ldm.config import LDMConfig
from simgen.augment.ldm.masks import tem_config_for_scale
from simgen.augment.ldm.sampling import load_ldm
from simgen.datasets.formats.yolo import open_yolo_folder
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.datasets.ldm_io import copy_samples, import_real, read_pairs, write_generated
from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import detection_counts, evaluate_detections
from simgen.evaluate.matching import match_detections
from simgen.experiments.common import ExperimentResult, StepClock
from simgen.rng import check_seed, sample_rng
from simgen.runtime import setup_threads
from simgen.simulate.tem import TemSampler
from simgen.train.ldm import train_ldm
from simgen.train.maskrcnn.config import get_config
from simgen.train.maskrcnn.predict import load_maskrcnn, predict_images
from simgen.train.maskrcnn.trainer import train_maskrcnn

__all__ = [
    "CONDITIONS",
    "FewShotConfig",
    "FewShotResult",
    "RealTiles",
    "SplitPlan",
    "check_real_folder",
    "classification_f1",
    "evaluate_maskrcnn",
    "format_table",
    "import_real_tiles",
    "ldm_pairs",
    "open_study",
    "plan_split",
    "plot_fewshot",
    "run_fewshot",
    "run_sim_only",
    "run_split",
    "simulate_pool",
    "summarize",
    "train_and_score",
    "write_summary",
]

CONDITIONS = ("real", "real+ldm", "real+sim", "sim")

#: Mask R-CNN overrides of the study (128² tiles hold up to ~60 defects).
MASKRCNN_OVERRIDES = {"detections_per_image": 150, "rpn_pre_nms_train": 600, "rpn_post_nms_train": 300,
                      "rpn_pre_nms_test": 600, "rpn_post_nms_test": 300, "box_batch_per_image": 64}


@dataclass(frozen=True)
class FewShotConfig:
    """Parameters of the study (see the module docstring)."""

    tile: int = 128
    scale: float = 0.25
    shots: tuple = (10, 50, 100)
    n_splits: int = 3
    test_images: int = 3
    conditions: tuple = CONDITIONS
    n_extra: int = 100
    ldm_config: str = "tiny"
    ldm_max_steps: int | None = None
    ldm_overrides: dict = field(default_factory=dict)
    ldm_sample_steps: int | None = None
    ldm_guidance: float | None = None
    maskrcnn_config: str = "tiny"
    maskrcnn_overrides: dict = field(default_factory=lambda: dict(MASKRCNN_OVERRIDES))
    train_iterations: int = 800
    sim_preset: str | None = "ti"
    iou: float = 0.5
    conf: float = 0.5
    seed: int = 0

    def validate(self) -> FewShotConfig:
        if not self.shots or any(int(k) != k or k < 1 for k in self.shots):
            raise ParameterError(f"shots must be positive integers, got {self.shots}")
        if list(self.shots) != sorted(set(self.shots)):
            raise ParameterError(f"shots must be increasing and distinct, got {self.shots}")
        unknown = set(self.conditions) - set(CONDITIONS)
        if unknown or not self.conditions:
            raise ParameterError(f"conditions must be among {', '.join(CONDITIONS)}, got {', '.join(self.conditions)}")
        for name in ("n_splits", "test_images", "n_extra", "train_iterations"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value}")
        if not 0 < self.iou <= 1 or not 0 <= self.conf <= 1:
            raise ParameterError("iou must be in (0, 1] and conf in [0, 1]")
        if any(c in self.conditions for c in ("real+sim", "sim")) and not self.sim_preset:
            raise ParameterError("the sim conditions need a TEM preset (sim_preset)")
        check_seed(self.seed)

        LDMConfig.preset(self.ldm_config, **self.ldm_overrides).with_max_steps(self.ldm_max_steps).validate()
        get_config(self.maskrcnn_config, **self.maskrcnn_overrides)
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shots"] = list(self.shots)
        d["conditions"] = list(self.conditions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FewShotConfig:
        d = dict(d)
        for key in ("shots", "conditions"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


# -- metrics -------------------------------------------------------------------------
def classification_f1(pred_classes, gt_classes) -> float:
    """Macro F1 of class labels over matched pairs (classes present in either list); 0 if empty."""
    p = np.asarray(pred_classes, np.int64)
    g = np.asarray(gt_classes, np.int64)
    if not len(g):
        return 0.0
    scores = []
    for c in np.union1d(p, g):
        tp = int(((p == c) & (g == c)).sum())
        fp = int(((p == c) & (g != c)).sum())
        fn = int(((p != c) & (g == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def _hmean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def evaluate_maskrcnn(checkpoint, test_path, *, iou: float = 0.5, conf: float = 0.5, device: str = "auto") -> dict:
    """Detection F1, classification F1, their harmonic mean and AP of a Mask R-CNN on a test file."""
    import pandas as pd


    model, cfg, _ = load_maskrcnn(checkpoint, device)
    with open_dataset(test_path) as ds:
        images = [ds.image(i) for i in range(ds.n)]
        gt = ds.table("boxes")
    gt = gt[["sample", "x0", "y0", "x1", "y1", "class"]].reset_index(drop=True)
    preds = []
    for i, (boxes, _) in enumerate(predict_images(model, images, mask_threshold=cfg.mask_threshold, mask_conf=conf,
                                                  normalize=cfg.normalize)):
        preds.append(boxes.assign(sample=i))
    pred = pd.concat(preds, ignore_index=True)[["sample", "x0", "y0", "x1", "y1", "class", "score"]]
    pred = pred.astype({"sample": np.int64, "class": np.int64})
    det = detection_counts(pred, gt, conf=conf, threshold=iou, by_class=False)
    kept = pred[pred["score"] >= conf].reset_index(drop=True)
    m = match_detections(kept, gt, threshold=iou, by_class=False)
    hit = m.pred_to_gt >= 0
    cls_f1 = classification_f1(kept["class"].to_numpy()[hit], gt["class"].to_numpy()[m.pred_to_gt[hit]])
    ap = evaluate_detections(pred, gt, threshold=iou, conf=conf, by_class=False).summary["mAP"]
    return {"det_f1": float(det["f1"]), "precision": float(det["precision"]), "recall": float(det["recall"]),
            "cls_f1": cls_f1, "hmean": _hmean(float(det["f1"]), cls_f1), "ap": float(ap),
            "n_test_images": len(images), "n_gt": len(gt), "n_pred": len(kept)}


# -- steps ------------------------------------------------------------------------------------------
@dataclass
class RealTiles:
    """The real images cut into equal tiles (``real_tiles.h5``); ``sources[i]`` is tile i's source image."""

    path: Path
    sources: list[str]
    class_names: list[str]


@dataclass
class SplitPlan:
    """Split ``split``: its test file (all tiles of the ``held_out`` images) and shuffled training pool."""

    split: int
    folder: Path
    test: Path
    pool: list[int]
    held_out: list[str]


@dataclass
class FewShotResult(ExperimentResult):
    """The study's rows (one per split × shots × condition) and their summary table (mean ± std over
    splits); :meth:`to_dict` is ``summary.json``."""

    output: Path
    config: FewShotConfig
    rows: list[dict]
    table: list[dict]
    seconds_this_run: float

    def to_dict(self) -> dict:
        return {"table": self.table, "n_rows": len(self.rows), "config": self.config.to_dict(),
                "seconds_this_run": self.seconds_this_run}


def check_real_folder(real, config: FewShotConfig) -> None:
    """The real folder must have images and instance masks, and enough masked images to hold some out."""
    folder = open_yolo_folder(real)
    if not folder.has_images or folder.masks_dir is None:
        raise DataError(f"{real} needs images/ and masks/ (instance masks) for the study")
    n_masked = sum((folder.masks_dir / f"{n}.png").exists() for n in folder.names)
    if config.test_images >= n_masked:
        raise DataError(f"{real} has {n_masked} images with masks; holding out {config.test_images} per split "
                        "leaves none for training")


def open_study(out_dir, real, config: FewShotConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or, with ``resume``, reopen) the study folder and record ``study.json``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"study folder {out} is a file")
    study_json = out / "study.json"
    if out.exists() and any(out.iterdir()):
        if overwrite and not resume:
            shutil.rmtree(out)
        elif not resume:
            raise ParameterError(f"study folder {out} is not empty; pass --resume to continue it or --overwrite")
        elif study_json.exists():
            old = json.loads(study_json.read_text())
            if old.get("config") != json.loads(json.dumps(config.to_dict())):
                raise ParameterError(f"{out} holds a study with a different configuration; use a new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_json, json.dumps({"config": config.to_dict(), "real": str(Path(real).resolve())},
                                             indent=2) + "\n", overwrite=True)
    return out


def import_real_tiles(real, out, config: FewShotConfig, *, say=None) -> RealTiles:
    """Cut the real images into ``config.tile``² tiles after scaling by ``config.scale`` (once per study)."""
    path = Path(out) / "real_tiles.h5"
    if not path.exists():
        res = import_real(real, path, tile=config.tile, scale=config.scale)
        if say:
            say(f"imported {res['n_tiles']} tiles of {config.tile}² from {res['n_images']} images")
    with open_dataset(path) as ds:
        sources = [ds.provenance(i)["source_image"] for i in range(ds.n)]
        class_names = list(ds.class_names)
    n_sources = len(set(sources))
    if config.test_images >= n_sources:
        raise DataError(f"{real} has {n_sources} images with masks; holding out {config.test_images} leaves none "
                        "for training")
    return RealTiles(path, sources, class_names)


def simulate_pool(out, config: FewShotConfig, class_names: list[str], *, say=None) -> Path | None:
    """``sim.h5``: ``n_extra`` TEM-simulator pairs shared by all splits (never sees real data);
    ``None`` when no condition uses the simulator."""
    if not any(c in config.conditions for c in ("real+sim", "sim")):
        return None
    path = Path(out) / "sim.h5"
    if not path.exists():
        extra = {"single_class": class_names[0]} if len(class_names) == 1 else {}
        tem = tem_config_for_scale(config.sim_preset, config.scale, len(class_names), size=config.tile, **extra)
        write_dataset(path, TemSampler(tem, seed=sample_rng(config.seed, 0, 0x51).integers(2**31)), config.n_extra)
        if say:
            say(f"simulated {config.n_extra} TEM pairs ({config.sim_preset} preset)")
    return path


def plan_split(tiles: RealTiles, out, config: FewShotConfig, r: int) -> SplitPlan:
    """Hold out ``config.test_images`` source images for split ``r``; writes ``split<r>/test.h5``."""
    images = sorted(set(tiles.sources))
    rng = sample_rng(config.seed, r, 0xF5)
    held = sorted(images[i] for i in rng.permutation(len(images))[: config.test_images])
    test_idx = [i for i, s in enumerate(tiles.sources) if s in held]
    pool = np.array([i for i, s in enumerate(tiles.sources) if s not in held])
    folder = Path(out) / f"split{r}"
    folder.mkdir(exist_ok=True)
    test = folder / "test.h5"
    if not test.exists():
        copy_samples(test, [(tiles.path, test_idx, "real")], kind="tem-real",
                     generator={"study": "fewshot", "split": r, "held_out_images": held})
    return SplitPlan(r, folder, test, pool[rng.permutation(len(pool))].tolist(), held)


def ldm_pairs(tiles: RealTiles, train_idx: list[int], folder: Path, config: FewShotConfig, split: int, *,
              device: str = "auto", progress: bool = False, say=None) -> tuple[Path, dict]:
    """``n_extra`` pairs from an LDM trained on the ``train_idx`` tiles only (``folder/ldm_pairs.h5``);
    returns the file and the LDM's timing / VAE figures (empty when the file already existed)."""
    path = folder / "ldm_pairs.h5"
    extra: dict = {}
    if path.exists():
        return path, extra
    ldm_cfg = LDMConfig.preset(config.ldm_config, **config.ldm_overrides).with_max_steps(config.ldm_max_steps)
    clock = StepClock()
    summ = train_ldm(read_pairs(tiles.path, train_idx), ldm_cfg, folder / "ldm", seed=config.seed + split,
                     overwrite=True, device=device, progress=progress)
    model = load_ldm(folder / "ldm", device=device)
    samples = model.sample(config.n_extra, seed=config.seed + split, size=config.tile, steps=config.ldm_sample_steps,
                           guidance=config.ldm_guidance)
    write_generated(path, samples, class_names=model.class_names, generator=model.describe(), seed=config.seed + split)
    extra["ldm_seconds"] = round(clock.elapsed(), 1)
    extra["ldm_vae"] = summ.get("vae")
    if say:
        say(f"split {split} k={len(train_idx)}: LDM trained and sampled in {extra['ldm_seconds']} s")
    return path, extra


def train_and_score(train_path, run_dir, test_paths, config: FewShotConfig, *, device: str = "auto",
                    progress: bool = False, keep_checkpoints: bool = False) -> list[dict]:
    """Mask R-CNN from scratch on ``train_path`` (``train_iterations`` image-iterations), scored on each test file."""
    with open_dataset(train_path) as ds:
        n_train = ds.n
    epochs = max(1, math.ceil(config.train_iterations / n_train))
    cfg = replace(get_config(config.maskrcnn_config, **config.maskrcnn_overrides), seed=config.seed).validate()
    clock = StepClock()
    res = train_maskrcnn(train_path, run_dir, config=cfg, epochs=epochs, overwrite=True, device=device,
                         progress=progress)
    seconds = clock.elapsed()
    scores = [evaluate_maskrcnn(Path(res["last"]), tp, iou=config.iou, conf=config.conf, device=device)
              for tp in test_paths]
    if not keep_checkpoints:
        for name in ("last.pt", "best.pt"):
            (Path(run_dir) / name).unlink(missing_ok=True)
    return [{**s, "n_train": n_train, "epochs": epochs, "train_seconds": round(seconds, 1)} for s in scores]


def run_split(tiles: RealTiles, plan: SplitPlan, sim_h5: Path | None, config: FewShotConfig, *, done=frozenset(),
              device: str = "auto", progress: bool = False, keep_checkpoints: bool = False, say=None):
    """Yield one result row per (shots, condition) of split ``plan`` not in ``done`` (the ``sim`` condition
    is :func:`run_sim_only`'s)."""
    r = plan.split
    seen_k = set()
    for k in config.shots:
        k_eff = min(int(k), len(plan.pool))
        if k_eff in seen_k:
            continue
        seen_k.add(k_eff)
        train_idx = plan.pool[:k_eff]
        kdir = plan.folder / f"k{k_eff}"
        kdir.mkdir(exist_ok=True)
        for cond in [c for c in config.conditions if c != "sim"]:
            if (r, int(k), cond) in done:
                continue
            sets = [(tiles.path, train_idx, "real")]
            extra = {}
            if cond == "real+ldm":
                gen_h5, extra = ldm_pairs(tiles, train_idx, kdir, config, r, device=device, progress=progress,
                                          say=say)
                sets.append((gen_h5, None, "ldm"))
            elif cond == "real+sim":
                sets.append((sim_h5, None, "sim"))
            tag = cond.replace("+", "_")
            train_h5 = kdir / f"train_{tag}.h5"
            copy_samples(train_h5, sets, kind="fewshot-train", overwrite=True,
                         generator={"study": "fewshot", "split": r, "k": k_eff, "condition": cond})
            (score,) = train_and_score(train_h5, kdir / f"mrcnn_{tag}", [plan.test], config, device=device,
                                       progress=progress, keep_checkpoints=keep_checkpoints)
            row = {"split": r, "shots": int(k), "k": k_eff, "held_out": plan.held_out, "condition": cond, **score,
                   **extra}
            if say:
                say(f"split {r} k={k_eff} {cond}: det F1 {row['det_f1']:.3f}, AP {row['ap']:.3f} "
                    f"({row['n_train']} images, {row['epochs']} epochs, {row['train_seconds']} s)")
            yield row


def run_sim_only(sim_h5: Path, plans: list[SplitPlan], out, config: FewShotConfig, *, done=frozenset(),
                 device: str = "auto", progress: bool = False, keep_checkpoints: bool = False, say=None) -> list[dict]:
    """The ``sim`` condition: one Mask R-CNN on the simulator pairs alone, scored on every split's test set."""
    if all((p.split, 0, "sim") in done for p in plans):
        return []
    scores = train_and_score(sim_h5, Path(out) / "mrcnn_sim", [p.test for p in plans], config, device=device,
                             progress=progress, keep_checkpoints=keep_checkpoints)
    if say:
        say("sim-only: det F1 " + ", ".join(f"{s['det_f1']:.3f}" for s in scores))
    return [{"split": p.split, "shots": 0, "k": 0, "held_out": p.held_out, "condition": "sim", **s}
            for p, s in zip(plans, scores) if (p.split, 0, "sim") not in done]


def write_summary(out, rows: list[dict], config: FewShotConfig, seconds: float, *, say=None) -> FewShotResult:
    """``summary.json``, ``results.md`` and ``fewshot.png`` from the study's rows."""
    out = Path(out)
    result = FewShotResult(out, config, rows, summarize(rows)["table"], round(seconds, 1))
    summary = result.to_dict()
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n", overwrite=True)
    atomic_write_text(out / "results.md", format_table(summary) + "\n", overwrite=True)
    try:
        plot_fewshot(summary, out / "fewshot.png")
    except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the results
        if say:
            say(f"figure not written: {exc}")
    return result


def _done_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the study --------------------------------------------------------------------------------------
def run_fewshot(
    real,
    out_dir,
    config: FewShotConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    keep_checkpoints: bool = False,
    progress: bool = False,
    log=None,
) -> FewShotResult:
    """Run (or resume) the few-shot study; returns the :class:`FewShotResult` (its summary also in ``summary.json``).

    Parameters
    ----------
    real : path-like
        Real YOLO folder with ``masks/`` (e.g. ``../shared/realdata/dev/ti_anneal``).
    out_dir : path-like
        Study folder: ``study.json``, ``real_tiles.h5``, ``sim.h5``, ``split<r>/...``,
        ``results.jsonl`` (one row per split × shots × condition), ``summary.json``,
        ``results.md`` and ``fewshot.png``.
    config : FewShotConfig
    resume : bool
        Continue a study in ``out_dir`` (finished rows are kept; the config must match).
    overwrite : bool
        Delete an existing study folder first.
    log : callable, optional
        ``log(message)`` for one line per step.
    """
    config = (config or FewShotConfig()).validate()
    check_real_folder(real, config)  # before anything is written
    out = open_study(out_dir, real, config, resume=resume, overwrite=overwrite)
    clock = StepClock()
    tiles = import_real_tiles(real, out, config, say=log)
    sim_h5 = simulate_pool(out, config, tiles.class_names, say=log)
    results_path = out / "results.jsonl"
    rows = _done_rows(results_path)
    done = {(r["split"], r["shots"], r["condition"]) for r in rows}

    def append(new_rows):
        for row in new_rows:
            rows.append(row)
            with open(results_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    kw = dict(done=done, device=device, progress=progress, keep_checkpoints=keep_checkpoints, say=log)
    plans = []
    for r in range(config.n_splits):
        plans.append(plan_split(tiles, out, config, r))
        append(run_split(tiles, plans[-1], sim_h5, config, **kw))
    if "sim" in config.conditions:
        append(run_sim_only(sim_h5, plans, out, config, **kw))
    result = write_summary(out, rows, config, clock.elapsed(), say=log)
    setup_threads()  # trainers may have changed the thread count
    return result


def summarize(rows: list[dict]) -> dict:
    """Mean ± std over splits of every metric, per (condition, shots)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["condition"], int(row["shots"])), []).append(row)
    table = []
    for (cond, shots), rs in sorted(groups.items(), key=lambda kv: (CONDITIONS.index(kv[0][0]), kv[0][1])):
        entry = {"condition": cond, "shots": shots, "k": sorted({int(r["k"]) for r in rs}), "n_splits": len(rs)}
        for key in ("det_f1", "cls_f1", "hmean", "ap", "precision", "recall"):
            vals = np.array([r[key] for r in rs], np.float64)
            entry[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
        table.append(entry)
    return {"table": table, "n_rows": len(rows)}


def format_table(summary: dict) -> str:
    """Markdown table of :func:`summarize` output (mean ± std over splits)."""
    lines = ["| condition | real tiles | splits | detection F1 | classification F1 | harmonic mean | AP |",
             "|---|---|---|---|---|---|---|"]
    for e in summary["table"]:
        k = "/".join(map(str, e["k"]))

        ms = {key: f"{e[key]['mean']:.3f} ± {e[key]['std']:.3f}" for key in ("det_f1", "cls_f1", "hmean", "ap")}
        lines.append(f"| {e['condition']} | {k} | {e['n_splits']} | {ms['det_f1']} | {ms['cls_f1']} | {ms['hmean']} "
                     f"| {ms['ap']} |")
    return "\n".join(lines)


def plot_fewshot(summary: dict, path) -> Path:
    """Detection F1 vs number of real tiles per condition (error bars: std over splits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for cond in CONDITIONS:
        es = [e for e in summary["table"] if e["condition"] == cond]
        if not es:
            continue
        if cond == "sim":
            m, s = es[0]["det_f1"]["mean"], es[0]["det_f1"]["std"]
            ax.axhline(m, ls="--", color="grey", label="sim only")
            ax.axhspan(m - s, m + s, color="grey", alpha=0.15)
            continue
        x = [max(e["k"]) for e in es]
        ax.errorbar(x, [e["det_f1"]["mean"] for e in es], yerr=[e["det_f1"]["std"] for e in es], marker="o",
                    capsize=3, label=cond)
    ax.set_xscale("log")
    ax.set_xlabel("real training tiles")
    ax.set_ylabel("detection F1 (held-out images)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, overwrite=True, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
