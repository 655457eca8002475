"""Metrics, tracks and geometry of predicted vs ground-truth defects.

Submodules (import what you need; nothing heavy is imported here):

* :mod:`~simgen.evaluate.matching`     IoU / distance matrices, greedy one-to-one matching
* :mod:`~simgen.evaluate.detection`    TP/FP/FN, precision/recall/F1, PR curves, AP (pycocotools-exact)
* :mod:`~simgen.evaluate.segmentation` Dice / IoU per class, change-map confusion
* :mod:`~simgen.evaluate.tracking`     trackpy linking, MOT metrics (TrackEval definitions), RMSE
* :mod:`~simgen.evaluate.lifetimes`    track lifetimes, chi-square (Doane bins) and KS comparison
* :mod:`~simgen.evaluate.sizes`        Otsu + opening + watershed + regionprops ellipse sizes, per-frame quartiles
* :mod:`~simgen.evaluate.density`      areal / volumetric density (7/4 visibility), frame time and dose
* :mod:`~simgen.evaluate.diffusion`    diffusivity per track, pooled and by size (trackpy imsd / emsd)
* :mod:`~simgen.evaluate.io`           predictions / ground truth from HDF5, YOLO, COCO, MOT, CSV
* :mod:`~simgen.evaluate.plots`        PR curve, per-frame curves, lifetime histograms
* :mod:`~simgen.evaluate.report`       ``simgen evaluate`` and ``simgen track`` as functions

This package never imports :mod:`simgen.train`.  See ``docs/evaluate.md``.
"""
