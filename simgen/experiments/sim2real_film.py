"""Film experiment: train on random-defect films, test on thermal (Landau-Ginzburg) films."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from simgen.atomic import atomic_write_text
from simgen.augment.pipeline import AugmentedSampler
from simgen.augment.spec import parse_spec
from simgen.datasets.generate import write_dataset
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate.report import to_jsonable
from simgen.experiments.sim2real_report import _fmt, _line
from simgen.experiments.sim2real_tem import _public, score_predictions
from simgen.progress import ProgressLog, format_duration
from simgen.runtime import default_threads, setup_threads
from simgen.simulate.film import FilmConfig, FilmSampler
from simgen.train.yolo.config import YoloConfig
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.trainer import train_yolo

__all__ = [
    "FilmExperimentConfig",
    "run_film_experiment",
]


# -- film: synthetic random-defect model → thermal-model films with unseen artifacts ----------------------
@dataclass(frozen=True)
class FilmExperimentConfig:
    """Settings of :func:`run_film_experiment`.

    Training data: the random-defect film model with the ``train_spec`` artifacts (low
    levels); test data: *thermal-model* films (quenched XY dynamics, coarsened for
    ``test_steps`` steps, ``upsample`` px per lattice site) — a different physics model —
    rendered clean and with ``test_spec`` (high-level artifacts never seen in training)
    at a fixed decross angle ``test_decross`` (degrees).
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
    epochs: int = 40
    budget_minutes: float = 50.0
    model: str = "yolov8n"
    batch: int = 16
    threads: int | None = None
    device: str = "auto"
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "FilmExperimentConfig":
        if name == "full":
            return cls()
        if name == "small":
            return cls(n_train=16, n_val=4, n_test=2, size=64, box_size=10, test_steps=100, upsample=2, epochs=1,
                       budget_minutes=10, batch=4)
        raise ParameterError(f"unknown film experiment preset {name!r}; choose small or full")

    def replace(self, **changes) -> "FilmExperimentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_film_experiment(output, config: FilmExperimentConfig | None = None, *, overwrite: bool = False,
                        progress: bool = True) -> dict:
    """Synthetic-only YOLO on films: train on random-defect images, test on thermal-model films.

    Returns the report (also ``report.json`` / ``report.md`` in ``output``): per test set
    (``thermal_clean``, ``thermal_artifacts``) P/R/F1 at IoU 0.15, AP and peak F1, overall
    and per class (``plus``/``minus``).
    """

    cfg = config or FilmExperimentConfig()

    parse_spec(cfg.train_spec)
    parse_spec(cfg.test_spec)
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(f"output {out} exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    threads = setup_threads(cfg.threads or default_threads())
    log = ProgressLog(None, enabled=progress, prefix="[film] ")
    t0 = time.perf_counter()
    margin = min(8.0, cfg.size / 8)
    train_cfg = FilmConfig(model="random", size=cfg.size, box_size=cfg.box_size, margin=margin,
                           min_separation=min(12.0, cfg.size / 6)).validate()
    sampler = AugmentedSampler(FilmSampler(train_cfg, seed=cfg.seed), cfg.train_spec, seed=cfg.seed)
    write_dataset(out / "train.h5", sampler, cfg.n_train, overwrite=True, progress=progress)
    write_dataset(out / "val.h5", sampler, cfg.n_val, start=cfg.n_train, overwrite=True, progress=progress)
    thermal = FilmConfig(model="thermal", size=cfg.size, box_size=cfg.box_size, steps=cfg.test_steps,
                         upsample=cfg.upsample, backend="numba", decross=math.radians(cfg.test_decross)).validate()
    test_seed = cfg.seed + 1000
    tests = {"thermal_clean": FilmSampler(thermal, seed=test_seed),
             "thermal_artifacts": AugmentedSampler(FilmSampler(thermal, seed=test_seed), cfg.test_spec,
                                                   seed=test_seed)}
    for name, s in tests.items():
        write_dataset(out / f"test_{name}.h5", s, cfg.n_test, overwrite=True, progress=progress)
    timing = {"generate": round(time.perf_counter() - t0, 1)}
    log.message(f"data generated in {format_duration(timing['generate'])}")

    t = time.perf_counter()
    remaining = cfg.budget_minutes - (time.perf_counter() - t0) / 60 - 2
    ycfg = YoloConfig(model=cfg.model, epochs=cfg.epochs, batch=cfg.batch, imgsz=cfg.size, tile=cfg.size,
                      overlap=cfg.size // 4, min_box=5.0, device=cfg.device, seed=cfg.seed, val_fraction=0.0,
                      patience=10 if cfg.epochs > 10 else 0, mosaic=1.0 if cfg.size >= 128 else 0.0,
                      close_mosaic=min(5, cfg.epochs // 4), hours=max(remaining, 1) / 60 if cfg.size > 64 else 0.0,
                      ).validate()
    best = train_yolo(out / "train.h5", out / "yolo", val=out / "val.h5", config=ycfg, overwrite=True,
                      progress=progress, threads=threads)
    timing["train"] = round(time.perf_counter() - t, 1)
    det = YoloDetector(best, device=cfg.device, threads=threads)
    results = {}
    for name in tests:
        parts, gts = [], []
        with open_source(out / f"test_{name}.h5") as src:
            class_names = src.class_names
            for k in range(len(src)):
                p = det.detect(src.image(k))
                p.insert(0, "sample", k)
                parts.append(p)
                g = src.boxes(k)[["x0", "y0", "x1", "y1", "class"]].copy()
                g.insert(0, "sample", k)
                gts.append(g)
        pred, gt = pd.concat(parts, ignore_index=True), pd.concat(gts, ignore_index=True)
        s = score_predictions(pred, gt, det.conf_f1, cfg.n_test)
        s["per_class"] = {class_names[int(c)] if int(c) < len(class_names) else c: v
                          for c, v in s["per_class"].items()}
        # Finding a defect and telling +1 from -1 are separate skills: score detection alone too.
        agnostic = score_predictions(pred.assign(**{"class": 0}), gt.assign(**{"class": 0}), det.conf_f1, cfg.n_test)
        s["per_class"]["any (class-agnostic)"] = {k: agnostic[k] for k in ("precision", "recall", "f1", "ap",
                                                                            "peak_f1")}
        results[name] = _public(s)
        log.message(_line(name, results[name]))
    timing["total"] = round(time.perf_counter() - t0, 1)
    report = {"config": cfg.to_dict(), "results": results, "timing": timing, "threads": threads,
              "weights": str(best), "classes": list(tests["thermal_clean"].class_names)}
    lines = ["# Film: synthetic random-defect model → thermal-model films", "",
             f"Trained on {cfg.n_train} random-defect images ({cfg.train_spec}); tested on {cfg.n_test} thermal-model "
             f"films (XY dynamics, {cfg.test_steps} steps, decross {cfg.test_decross:g}°), clean and with "
             f"{cfg.test_spec}. IoU 0.15; threshold from synthetic validation.", "",
             "| test set | class | P | R | F1 | AP | peak F1 |", "|---|---|---|---|---|---|---|"]
    for name, s in results.items():
        lines.append(f"| {name} | all | {_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['f1'])} | "
                     f"{_fmt(s['ap'])} | {_fmt(s['peak_f1'])} |")
        for c, v in s["per_class"].items():
            lines.append(f"| {name} | {c} | {_fmt(v.get('precision'))} | {_fmt(v.get('recall'))} | "
                         f"{_fmt(v.get('f1'))} | {_fmt(v.get('ap'))} | {_fmt(v.get('peak_f1'))} |")
    lines += ["", ", ".join(f"{k} {format_duration(v)}" for k, v in timing.items()) + f"; {threads} thread(s)", ""]
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(report), indent=2) + "\n", overwrite=True)
    atomic_write_text(out / "report.md", "\n".join(lines), overwrite=True)
    report["summary_text"] = "\n".join(_line(k, v) for k, v in results.items())
    return report

