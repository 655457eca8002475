"""YOLO detectors (Ultralytics) trained on simgen data, fully offline.

One module per step, as Ultralytics splits its tasks: :mod:`.config` (run settings),
:mod:`.data` (export to the Ultralytics layout, cached), :mod:`.trainer` (train, pick the
threshold), :mod:`.predict` (tiled prediction on large images), :mod:`.offline` (keep
Ultralytics off the network and inside the project).
"""
