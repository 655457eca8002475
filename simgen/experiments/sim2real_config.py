"""Settings of the synthetic-only → real experiment (:func:`simgen.experiments.sim2real_tem.run_sim2real`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from simgen.augment.spec import parse_spec
from simgen.errors import ParameterError
from simgen.evaluate.realism_judge import JudgeSettings
from simgen.train.yolo.config import YoloConfig
from simgen.train.yolo.count_threshold import check_student_conf

__all__ = ["Sim2RealConfig"]

#: The :class:`~simgen.evaluate.realism_judge.JudgeSettings` that ``Sim2RealConfig.judge_settings`` may set.
JUDGE_KEYS = frozenset({"patch", "n_patches", "folds", "steps", "batch", "lr"})


@dataclass(frozen=True)
class Sim2RealConfig:
    """Settings of :func:`run_sim2real` (see :meth:`preset`).

    Attributes
    ----------
    n_train, n_val : int
        Synthetic training / validation images.
    size : int
        Side of the synthetic images (px at the real scale).  The YOLO tile and input size is
        ``size × detector_scale`` (rounded up to a multiple of 32): one synthetic sample is one
        network tile.
    epochs : int
        YOLO epochs on the synthetic images.  A fixed number, so that two runs of the same
        command train the same model whatever the machine load (a 55-minute wall-clock
        budget used to decide, and ran 16 to 25 epochs depending on the load).  30: the
        README's dsva_fecral runs took 2.3-2.45 min per epoch on the 2-core CPU with one
        thread (49 min for 20 epochs while sharing the CPU; 16 epochs in about 37 min), so
        30 epochs are about 70-75 min of training plus about 2 min for the other steps:
        the default run stays under 90 min with some 15 % to spare for a busier machine.
        Early stopping (``patience``) may end training sooner, the same way on every run.
    time_budget_minutes : float, optional
        Wall-clock cap of the whole run (off by default).  When set, training gets what the
        other steps leave and LoG tuning and the robustness study are trimmed to fit — the
        number of epochs then depends on the machine's speed and load.
    match : bool
        Fit the TEM look to the real images (pixels only).
    match_images : int
        How many real images (evenly spread) the statistics are estimated from.
    tem_preset : str, optional
        TEM preset used as the base configuration (``--match`` then adjusts its look).
    scale : {"broad", "match", "preset"}
        Defect sizes of the synthetic set.  ``broad`` (default): the per-image pixel size is
        drawn log-uniformly so that median defect diameters span ``diameter_px`` and the
        areal density scales with it (``density_per_mpx`` at the middle size) — one model for
        all magnifications, no size estimate needed.  ``match``: size and density estimated
        from the real pixels (:func:`simgen.simulate.match.estimate`; unreliable when
        mottle is darker than the defects).  ``preset``: the TEM preset's sizes.
    diameter_px, density_per_mpx : (float, float), float
        ``broad`` scale settings: the 5th and 95th percentiles of the synthetic box sides
        (√area, px; calibrated on a few dozen renders, :func:`~.sim2real_tem.calibrate_box_sides`)
        and the defects per Mpx at the middle size.
    count_exponent : float
        ``broad``: defects per image ∝ pixel size ** ``count_exponent``
        (:class:`~simgen.simulate.tem.TemConfig`).  1 (default): images of large defects hold more
        of them than a constant areal density (2) would give — with 2, 90 % of the boxes came
        from the small-defect images and the 95th percentile of the box sides stayed at 23 px
        however far the pixel-size range was stretched.
    box_margin : float
        Pixels added around the tight synthetic boxes (annotators draw loose boxes).
    labels : {None, "annotator", "annotator-final", "all"}
        Which rendered defects carry a label.  ``"annotator"``: the rule of the TEM presets
        (:func:`simgen.simulate.tem.annotate_visible`: outline at 35 % of the defect's own peak
        deficit, a label only where the defect's SNR on the image is >= 2.5, unlabelled
        defect-like background blobs flattened); ``"all"``: every rendered defect, geometric
        outline, look-alikes kept; ``None``: whatever the base config does (a ``tem_preset``'s
        rule, else ``"all"``).  These labels are made before the augmentation ``spec``, so they
        cannot know its noise; ``"annotator-final"`` applies the annotator rule once more to the
        augmented image (:func:`simgen.simulate.tem.relabel_final`): labels of defects the noise
        hid are dropped, look-alike blobs the texture made are flattened.
    spec : str
        Augmentation spec applied to every synthetic image (``simgen.augment``).  The default
        adds GN+SP (robustness to noise, measured in the README) and L-JP (JPEG storage at
        quality 75-95): two of the three real dev sets are JPEG frames, and the realism judge
        found JPEG storage the largest single step toward the real look of ti_anneal (AUC
        0.996 -> 0.86; docs/realism.md).
    model, batch, overlap, min_box, patience : YOLO settings.
    detector_scale : float
        Images are enlarged by this factor before the detector sees them — synthetic training
        and validation tiles and the real images alike (``YoloConfig.scale``, stored in the
        checkpoint).  1 (default).  2 brings 4–8 px defects to 8–16 px, where YOLOv8's
        stride-8 head resolves them (creme_316L: a third of the loops are under 8 px and the
        1× model found none of them).  The network tile grows with it (``size × detector_scale``),
        so one sample stays one tile: 4× the training compute per epoch at scale 2, or the
        default's compute with ``size`` halved (a quarter of the field of view per sample).
    baseline, baseline_grid : bool, {"quick", "default"}
        Tune and score the LoG baseline (leave-one-image-out).
    robustness : bool
    robust_mpx : float
        The noise study uses evenly spread real images totalling at most this many megapixels.
    kfold, kfold_epochs : int
        Real-trained k-fold YOLO (0 = skip) and its epochs (60: a real-only model trained
        for 15 epochs learned nothing on dsva_fecral).
    few_real, few_real_epochs : int
        Synthetic model fine-tuned on ``few_real`` real images of each training fold.
    synthetic_log : bool
        Also score the LoG detector tuned on synthetic validation images only (a zero-label
        classical baseline).
    fuse_log : bool
        Also score the synthetic-only YOLO fused with that synthetic-tuned LoG
        (:func:`simgen.train.fusion.fit_fusion`: each detector's score calibrated on the synthetic
        validation images, equal weights, weighted boxes fusion; ``fusion.json`` in the run folder
        is the fused detector for ``simgen predict``).  Needs ``synthetic_log``.
    judge : bool
        Run the realism judge (:func:`simgen.evaluate.realism_judge.judge_realism`) on the
        synthetic training images against the real pixels (labels never read) after the
        ``generate`` step; its held-out AUC goes into the report (``realism/`` holds its own
        report).  With the judge's default settings it took 100-230 s per dev set (1 thread,
        docs/realism.md), a few percent of the default run.
    judge_images : int
        At most this many synthetic training images (evenly spaced) and as many real images
        are read by the judge.
    judge_settings : dict
        Overrides of :class:`~simgen.evaluate.realism_judge.JudgeSettings` among ``patch``,
        ``n_patches``, ``folds``, ``steps``, ``batch``, ``lr`` (empty: the judge's defaults, the
        settings of docs/realism.md).  ``folds`` and ``patch`` are upper bounds: the step lowers
        them to the number of images per side and to the smallest image side.  ``max_images``,
        ``seed``, ``device`` and ``threads`` come from ``judge_images``, ``seed``, ``device`` and
        ``threads``.
    adapt : tuple of {"bn", "self_train", "all", "backgrounds"}
        Unsupervised adaptation levers with the unlabeled real pixels (:mod:`.sim2real_adapt`),
        each scored on held-out folds (``backgrounds``: the model fine-tuned with new renders on the
        other folds' images, ``self_train_epochs`` epochs).  Off by default: measured on dsva_fecral (README), BatchNorm
        re-estimation *lowered* F1 from 0.73 to 0.57 and AP from 0.76 to 0.60, so it is not a
        default until it helps somewhere; self-training costs ``adapt_folds * self_train_rounds *
        self_train_epochs`` extra epochs (~2.4 min each on one thread; 45-48 min in the README's
        runs) — it helped on dsva_fecral (AP 0.767 -> 0.825) and ti_anneal (F1 0.381 -> 0.423) but
        does not fit the 90-min default budget, so it is opt-in.
    adapt_folds : int
        Folds over the real images: each fold is scored by models adapted on the other folds.
    adapt_to : str, optional
        A folder of further unlabeled real images (``frames/``, ``images/`` or plain files) added
        to every fold's adaptation pool (frames named like a scored image, or near copies of one,
        are left out: see ``near_copy_corr``).
    backgrounds : str, optional
        A folder of unlabeled real images (``frames/``, ``images/`` or plain files) whose
        defect-like blobs are painted over (:func:`simgen.simulate.tem_backgrounds.clear_blobs`)
        and on which ``background_fraction`` of the synthetic images are rendered
        (:class:`~simgen.simulate.tem_backgrounds.BackgroundTemSampler`): real instrument
        backgrounds, exact synthetic labels.  Images named like a scored real image, or nearly
        identical to one (correlation ≥ ``near_copy_corr`` at quarter resolution), are left
        out, so scored images never serve as backgrounds.  Off by default (README: measured on
        dsva_fecral).
    background_fraction : float
        Share of the synthetic images drawn on a real background (0.5: the full renders keep
        the size and look range the renderer covers).
    background_images : int
        At most this many backgrounds (evenly spread over the sorted files: video frames are
        correlated).
    near_copy_corr : float
        An unlabeled image (adaptation pool or background) that has a scored image's shape and
        correlates with it at ≥ this (quarter resolution) is a near copy of it and is left out
        for that image's fold (:func:`simgen.experiments.sim2real_disjoint.exclude_scored`):
        consecutive video frames are near copies of each other.
    self_train_rounds, self_train_epochs : int
        Pseudo-label rounds and student epochs per round.
    student_conf : {"teacher_count", "synthetic"}
        Threshold of a self-trained student: the synthetic-validation one (default), or as many
        detections on the unlabeled images it adapted to as the synthetic model finds there at its
        threshold (``teacher_count``; label-free; helps where the synthetic model over-counts,
        README).  See :func:`simgen.train.yolo.self_train.self_train`.
    threads : int, optional
        CPU threads (default ``$SIMGEN_THREADS``, else 1: on a shared 2-core machine two
        torch threads collapse as soon as anything else runs; use 2 on an idle machine).
    device : str
    seed : int
    """

    n_train: int = 2000
    n_val: int = 200
    size: int = 256
    epochs: int = 30
    time_budget_minutes: float | None = None
    match: bool = True
    match_images: int = 3
    tem_preset: str | None = None
    scale: str = "broad"
    diameter_px: tuple[float, float] = (5.0, 45.0)
    density_per_mpx: float = 150.0
    count_exponent: float = 1.0
    box_margin: float = 1.0
    labels: str | None = None
    # GN + SP (white and impulse noise over both levels) made the detector robust to noise at no
    # cost on clean real images (README: dsva F1 0.69 -> 0.72, noise drop 35-49 % -> none).
    spec: str = "L-FN+RV+GB+GN+SP+L-JP"
    model: str = "yolov8n"
    batch: int = 16
    overlap: int = 64
    min_box: float = 5.0
    patience: int = 10
    detector_scale: float = 1.0
    baseline: bool = True
    baseline_grid: str = "quick"
    robustness: bool = True
    robust_mpx: float = 9.0
    kfold: int = 0
    kfold_epochs: int = 60
    few_real: int = 0
    few_real_epochs: int = 15
    synthetic_log: bool = True
    fuse_log: bool = False
    judge: bool = True
    judge_images: int = 96
    judge_settings: dict = field(default_factory=dict)
    adapt: tuple = ()
    adapt_folds: int = 2
    adapt_to: str | None = None
    backgrounds: str | None = None
    background_fraction: float = 0.5
    background_images: int = 48
    near_copy_corr: float = 0.95
    self_train_rounds: int = 1
    self_train_epochs: int = 5
    student_conf: str = "synthetic"
    threads: int | None = None
    device: str = "auto"
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "Sim2RealConfig":
        """``full`` (the default experiment, about 75 min on 2 CPU cores) or ``small`` (a one-minute smoke run).

        ``small`` keeps the realism judge on, so that a smoke run exercises the step and its report,
        with a token budget (32 px patches, 32 per side, 10 steps of 32 per fold): 3-4.5 s on the smoke
        test's tiny data (2 folds, report and sheet included) on a 2-core CPU at load 6 (1 thread),
        once torch and matplotlib are imported (training imports them anyway), against about 55 s
        for the judge alone with the default patches and 20 steps.  Its AUC says nothing about realism.
        """
        if name == "full":
            return cls()
        if name == "small":
            return cls(n_train=24, n_val=8, size=64, epochs=1, match_images=1, batch=4, overlap=16, patience=0,
                       baseline_grid="quick", kfold_epochs=1, few_real_epochs=1, spec="L-GB",
                       judge_settings={"patch": 32, "n_patches": 32, "steps": 10, "batch": 32})
        raise ParameterError(f"unknown sim2real preset {name!r}; choose small or full")

    def replace(self, **changes) -> "Sim2RealConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(f"unknown sim2real setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Sim2RealConfig":
        if self.n_train < 8 or self.n_val < 1:
            raise ParameterError("need n_train >= 8 and n_val >= 1")
        if self.size < 32 or self.size % 32:
            raise ParameterError(f"size must be a multiple of 32 (>= 32), got {self.size}")
        if self.epochs < 1 or self.kfold_epochs < 1 or self.few_real_epochs < 1:
            raise ParameterError("epochs, kfold_epochs and few_real_epochs must be >= 1")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ParameterError(f"time_budget_minutes must be > 0 (or None: off), got {self.time_budget_minutes}")
        if self.baseline_grid not in ("quick", "default"):
            raise ParameterError(f"baseline_grid must be quick or default, got {self.baseline_grid!r}")
        if self.kfold == 1 or self.kfold < 0 or self.few_real < 0:
            raise ParameterError("kfold must be 0 or >= 2 and few_real >= 0")
        if self.few_real and not self.kfold:
            raise ParameterError("few_real needs kfold >= 2 (the held-out folds are what is scored)")
        if self.fuse_log and not self.synthetic_log:
            raise ParameterError("fuse_log fuses with the synthetic-tuned LoG: it needs synthetic_log")
        if not set(self.adapt) <= {"bn", "self_train", "all", "backgrounds"}:
            raise ParameterError(f"adapt levers must be among bn, self_train, all, backgrounds; got "
                                 f"{', '.join(self.adapt)}")
        check_student_conf(self.student_conf)
        if self.adapt_folds < 2 or self.self_train_rounds < 1 or self.self_train_epochs < 1:
            raise ParameterError("need adapt_folds >= 2, self_train_rounds >= 1 and self_train_epochs >= 1")
        if self.adapt_to is not None and not Path(self.adapt_to).is_dir():
            raise ParameterError(f"--adapt-to {self.adapt_to} is not a folder")
        if self.backgrounds is not None and not Path(self.backgrounds).is_dir():
            raise ParameterError(f"--backgrounds {self.backgrounds} is not a folder")
        if not 0 <= self.background_fraction <= 1 or self.background_images < 1 or not 0 < self.near_copy_corr <= 1:
            raise ParameterError("need 0 <= background_fraction <= 1, background_images >= 1 and "
                                 "0 < near_copy_corr <= 1")
        if self.scale not in ("broad", "match", "preset"):
            raise ParameterError(f"scale must be broad, match or preset, got {self.scale!r}")
        if self.scale == "preset" and not self.tem_preset:
            raise ParameterError("scale='preset' needs tem_preset")
        if not 1 <= self.diameter_px[0] <= self.diameter_px[1] or self.density_per_mpx <= 0:
            raise ParameterError("need 1 <= diameter_px[0] <= diameter_px[1] and density_per_mpx > 0")
        if self.labels not in (None, "annotator", "annotator-final", "all"):
            raise ParameterError(f"labels must be annotator, annotator-final or all, got {self.labels!r}")
        if self.box_margin < 0 or self.match_images < 1:
            raise ParameterError("box_margin must be >= 0 and match_images >= 1")
        if not 0.25 <= self.detector_scale <= 8:
            raise ParameterError(f"detector_scale must be in [0.25, 8], got {self.detector_scale}")
        if self.judge_images < 1:
            raise ParameterError(f"judge_images must be >= 1, got {self.judge_images}")
        parse_spec(self.spec)
        self.yolo_config()
        self.judge_config()
        return self

    @property
    def network_tile(self) -> int:
        """YOLO tile and input side (px): ``size × detector_scale``, rounded up to a multiple of 32."""
        return max(32, 32 * math.ceil(self.size * self.detector_scale / 32 - 1e-9))

    def yolo_config(self, **changes) -> YoloConfig:
        """The YOLO settings of the synthetic model (``changes`` on top)."""
        # The tile is in network pixels: a sample enlarged by detector_scale stays one tile (tiling
        # it at `size` would cut each sample into 9 overlapping tiles at scale 2), and the overlap,
        # which must hold the largest defect, grows with the image.
        tile = self.network_tile
        return YoloConfig(model=self.model, epochs=self.epochs, batch=self.batch, imgsz=tile, tile=tile,
                          overlap=min(int(round(self.overlap * self.detector_scale)), tile // 2),
                          min_box=self.min_box, patience=self.patience,
                          scale=self.detector_scale,
                          device=self.device, seed=self.seed, val_fraction=0.0,
                          close_mosaic=min(5, max(0, self.epochs // 4)),
                          mosaic=1.0 if tile >= 128 else 0.0).replace(**changes).validate()

    def judge_config(self, **changes) -> JudgeSettings:
        """The realism judge's settings: ``judge_settings`` and ``judge_images``, ``seed``, ``device``,
        ``threads`` of this config (``changes`` on top)."""
        unknown = set(self.judge_settings) - JUDGE_KEYS
        if unknown:
            raise ParameterError(f"unknown judge setting(s) {', '.join(sorted(unknown))}; "
                                 f"choose among {', '.join(sorted(JUDGE_KEYS))}")
        return JudgeSettings(**{**self.judge_settings, "max_images": self.judge_images, "seed": self.seed,
                                "device": self.device, "threads": self.threads, **changes}).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
