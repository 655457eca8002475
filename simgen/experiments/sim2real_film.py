"""Film experiment (``simgen sim2real-film``): train on random-defect films, test on thermal (XY-model) films.

:func:`run_film_experiment` runs three steps, each a plain function that can be run alone:

1. **generate** (:func:`generate_film_data`) — random-defect training and validation films
   with the ``train_spec`` artifacts, and thermal-model test films, clean and with the unseen
   ``test_spec`` artifacts → :class:`FilmData`;
2. **train** (:func:`train_film_detector`) — YOLO on the random-defect films only → ``best.pt``;
3. **score** (:func:`score_film_tests`) — P/R/F1 at IoU 0.15, AP and peak F1 per test set,
   per class and class-agnostic;

then writes ``report.json`` / ``report.md`` and returns a :class:`FilmResult`.

Classes: one class, ``defect``, by default (the charge stays in each film's ``points``
table).  ``two_class=True`` trains ``plus``/``minus`` instead — with the caveat that the
sign is not identifiable from the texture around a defect (an isolated +1 and −1 defect
render alike for some global phase and are mirror images, see :mod:`simgen.simulate.film`),
so a two-class model splits its confidence between the classes.  Image flips swap the
sign of every defect, so two-class training turns YOLO's flip augmentation off, and scoring
predicts with class-agnostic NMS (``YoloDetector(agnostic_nms=True)``): the ``plus`` and
``minus`` boxes such a model puts on one defect are merged into the better-scoring one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from simgen.atomic import atomic_write_text
from simgen.augment.pipeline import AugmentedSampler
from simgen.augment.spec import parse_spec
from simgen.datasets.generate import write_dataset
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate.report import to_jsonable
from simgen.experiments.common import ExperimentResult, StepClock, check_experiment_dir
from simgen.experiments.scoring import IOU, public, score_predictions
from simgen.experiments.sim2real_report import fmt, score_line
from simgen.progress import ProgressLog, format_duration
from simgen.runtime import default_threads, setup_threads
from simgen.simulate.film import FilmConfig, FilmSampler
from simgen.train.yolo.config import YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = [
    "FilmData",
    "FilmExperimentConfig",
    "FilmResult",
    "generate_film_data",
    "run_film_experiment",
    "score_film_tests",
    "train_film_detector",
]

#: The test sets: thermal-model films, clean and with the unseen ``test_spec`` artifacts.
TEST_SETS = ("thermal_clean", "thermal_artifacts")


@dataclass(frozen=True)
class FilmExperimentConfig:
    """Settings of :func:`run_film_experiment`.

    Training data: the random-defect film model with the ``train_spec`` artifacts (low
    levels); test data: *thermal-model* films (quenched XY dynamics, coarsened for
    ``test_steps`` steps, ``upsample`` px per lattice site) — a different physics model —
    rendered clean and with ``test_spec`` (high-level artifacts never seen in training)
    at a fixed decross angle ``test_decross`` (degrees).  Training runs a fixed ``epochs``
    (30: about 35 min of one CPU thread for 800 images of 256², as in the README's run), so two
    runs of the same command train the same model whatever the machine load;
    ``time_budget_minutes`` caps the whole run by wall-clock time (off by default — with it
    the number of epochs depends on the machine's speed and load).
    ``two_class``: classes ``plus``/``minus`` by sign instead of one class ``defect``
    (flip augmentation off, see the module docstring).
    """

    n_train: int = 800
    n_val: int = 80
    n_test: int = 40
    size: int = 256
    box_size: float = 16.0
    train_spec: str = "L-all"
    test_spec: str = "H-GB+H-FN+H-RV"
    test_decross: float = 20.0
    test_steps: int = 3000
    upsample: int = 4
    epochs: int = 30
    time_budget_minutes: float | None = None
    model: str = "yolov8n"
    batch: int = 16
    threads: int | None = None
    device: str = "auto"
    seed: int = 0
    two_class: bool = False

    @classmethod
    def preset(cls, name: str) -> "FilmExperimentConfig":
        if name == "full":
            return cls()
        if name == "small":
            return cls(n_train=16, n_val=4, n_test=2, size=64, box_size=10, test_steps=100, upsample=2, epochs=1,
                       time_budget_minutes=None, batch=4)
        raise ParameterError(f"unknown film experiment preset {name!r}; choose small or full")

    def replace(self, **changes) -> "FilmExperimentConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown film experiment setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "FilmExperimentConfig":
        parse_spec(self.train_spec)
        parse_spec(self.test_spec)
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ParameterError(f"time_budget_minutes must be > 0 (or None: off), got {self.time_budget_minutes}")
        self.yolo_config()
        return self

    def yolo_config(self, hours: float = 0.0) -> YoloConfig:
        # a mirror flip turns every +1 defect into a -1 (and back): with sign classes, flips would contradict the labels
        flip = 0.0 if self.two_class else 0.5
        return YoloConfig(model=self.model, epochs=self.epochs, batch=self.batch, imgsz=self.size, tile=self.size,
                          overlap=self.size // 4, min_box=5.0, device=self.device, seed=self.seed, val_fraction=0.0,
                          patience=10 if self.epochs > 10 else 0, mosaic=1.0 if self.size >= 128 else 0.0,
                          close_mosaic=min(5, self.epochs // 4), fliplr=flip, flipud=flip, hours=hours).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FilmData:
    """The generated films: ``train``, ``val`` and one file per test set (``tests[name]``)."""

    train: Path
    val: Path
    tests: dict[str, Path]
    class_names: list[str]


@dataclass
class FilmResult(ExperimentResult):
    """What :func:`run_film_experiment` measured; :meth:`to_dict` is ``report.json`` plus ``summary_text``."""

    output: Path
    config: FilmExperimentConfig
    data: FilmData
    weights: Path
    results: dict[str, dict]  # per test set: P/R/F1, AP, peak F1 and per_class (class-agnostic row included)
    timing: dict[str, float]
    threads: int

    @property
    def summary_text(self) -> str:
        return "\n".join(score_line(k, v) for k, v in self.results.items())

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "results": self.results, "timing": self.timing,
                "threads": self.threads, "weights": str(self.weights), "classes": list(self.data.class_names),
                "summary_text": self.summary_text}


# -- steps ------------------------------------------------------------------------------------------
def generate_film_data(out, cfg: FilmExperimentConfig, *, progress: bool = True) -> FilmData:
    """``train.h5``, ``val.h5`` (random-defect model + ``train_spec``) and ``test_<set>.h5`` (thermal model)."""
    out = Path(out)
    margin = min(8.0, cfg.size / 8)
    train_cfg = FilmConfig(model="random", size=cfg.size, box_size=cfg.box_size, margin=margin,
                           min_separation=min(12.0, cfg.size / 6), single_class=not cfg.two_class).validate()
    sampler = AugmentedSampler(FilmSampler(train_cfg, seed=cfg.seed), cfg.train_spec, seed=cfg.seed)
    write_dataset(out / "train.h5", sampler, cfg.n_train, overwrite=True, progress=progress)
    write_dataset(out / "val.h5", sampler, cfg.n_val, start=cfg.n_train, overwrite=True, progress=progress)
    thermal = FilmConfig(model="thermal", size=cfg.size, box_size=cfg.box_size, steps=cfg.test_steps,
                         upsample=cfg.upsample, backend="numba", decross=math.radians(cfg.test_decross),
                         single_class=not cfg.two_class).validate()
    test_seed = cfg.seed + 1000
    tests = {"thermal_clean": FilmSampler(thermal, seed=test_seed),
             "thermal_artifacts": AugmentedSampler(FilmSampler(thermal, seed=test_seed), cfg.test_spec,
                                                   seed=test_seed)}
    data = FilmData(out / "train.h5", out / "val.h5", {name: out / f"test_{name}.h5" for name in TEST_SETS},
                    list(tests["thermal_clean"].class_names))
    for name, s in tests.items():
        write_dataset(data.tests[name], s, cfg.n_test, overwrite=True, progress=progress)
    return data


def train_film_detector(data: FilmData, out, cfg: FilmExperimentConfig, *, hours: float = 0.0,
                        threads: int | None = None, progress: bool = True) -> Path:
    """YOLO on the random-defect films (``out/yolo/best.pt``), capped at ``hours`` when > 0."""
    return train_yolo(data.train, Path(out) / "yolo", val=data.val, config=cfg.yolo_config(hours), overwrite=True,
                      progress=progress, threads=threads)


def score_film_tests(weights, data: FilmData, cfg: FilmExperimentConfig, *, threads: int | None = None,
                     log: ProgressLog | None = None) -> dict[str, dict]:
    """Scores on every test set at the threshold picked on the synthetic validation films: overall,
    per class (by name) and class-agnostic (finding a defect and telling +1 from -1 are separate skills)."""
    # a two-class model puts a plus and a minus box on one defect: merge them across classes
    det = YoloDetector(weights, device=cfg.device, threads=threads, agnostic_nms=cfg.two_class)
    results = {}
    for name, path in data.tests.items():
        with open_source(path) as src:
            class_names, n = src.class_names, len(src)
            pred = det.predict(src)
            gt = src.read_table()[["sample", "x0", "y0", "x1", "y1", "class"]]
        s = score_predictions(pred, gt, det.conf_f1, n)
        s["per_class"] = {class_names[int(c)] if int(c) < len(class_names) else c: v
                          for c, v in s["per_class"].items()}
        agnostic = score_predictions(pred.assign(**{"class": 0}), gt.assign(**{"class": 0}), det.conf_f1, n)
        s["per_class"]["any (class-agnostic)"] = {k: agnostic[k] for k in ("precision", "recall", "f1", "ap",
                                                                            "peak_f1")}
        results[name] = public(s)
        if log is not None:
            log.message(score_line(name, results[name]))
    return results


def film_markdown(result: FilmResult) -> str:
    cfg = result.config
    lines = ["# Film: synthetic random-defect model → thermal-model films", "",
             f"Trained on {cfg.n_train} random-defect images ({cfg.train_spec}); tested on {cfg.n_test} thermal-model "
             f"films (XY dynamics, {cfg.test_steps} steps, decross {cfg.test_decross:g}°), clean and with "
             f"{cfg.test_spec}. IoU {IOU}; threshold from synthetic validation.", "",
             "| test set | class | P | R | F1 | AP | peak F1 |", "|---|---|---|---|---|---|---|"]
    for name, s in result.results.items():
        lines.append(f"| {name} | all | {fmt(s['precision'])} | {fmt(s['recall'])} | {fmt(s['f1'])} | "
                     f"{fmt(s['ap'])} | {fmt(s['peak_f1'])} |")
        for c, v in s["per_class"].items():
            lines.append(f"| {name} | {c} | {fmt(v.get('precision'))} | {fmt(v.get('recall'))} | "
                         f"{fmt(v.get('f1'))} | {fmt(v.get('ap'))} | {fmt(v.get('peak_f1'))} |")
    lines += ["", ", ".join(f"{k} {format_duration(v)}" for k, v in result.timing.items())
              + f"; {result.threads} thread(s)", ""]
    return "\n".join(lines)


# -- the experiment ---------------------------------------------------------------------------------
def run_film_experiment(output, config: FilmExperimentConfig | None = None, *, overwrite: bool = False,
                        progress: bool = True) -> FilmResult:
    """Synthetic-only YOLO on films: train on random-defect images, test on thermal-model films.

    Returns the :class:`FilmResult` (also ``report.json`` / ``report.md`` in ``output``): per
    test set (``thermal_clean``, ``thermal_artifacts``) P/R/F1 at IoU 0.15, AP and peak F1,
    overall and per class (``defect``, or ``plus``/``minus`` with ``two_class``, and class-agnostic).
    """
    cfg = (config or FilmExperimentConfig()).validate()
    out = check_experiment_dir(output, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    threads = setup_threads(cfg.threads or default_threads())
    log = ProgressLog(None, enabled=progress, prefix="[film] ")
    clock = StepClock(log)
    with clock.step("generate"):
        data = generate_film_data(out, cfg, progress=progress)
    hours = 0.0
    if cfg.time_budget_minutes is not None and cfg.size > 64:  # 2 min kept for scoring and the report
        hours = max(cfg.time_budget_minutes - clock.elapsed() / 60 - 2, 1) / 60
    with clock.step("train"):
        weights = train_film_detector(data, out, cfg, hours=hours, threads=threads, progress=progress)
    results = score_film_tests(weights, data, cfg, threads=threads, log=log)
    result = FilmResult(out, cfg, data, weights, results, clock.finish(), threads)
    report = result.to_dict()
    report.pop("summary_text")
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(report), indent=2) + "\n", overwrite=True)
    atomic_write_text(out / "report.md", film_markdown(result), overwrite=True)
    return result
