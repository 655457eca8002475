"""Siamese change detectors (MultiTaskDeltaNet and the per-scale fusion variant), the U-Net baselines on
stacked frames and on single frames: :mod:`.config`, :mod:`.model`, :mod:`.data`, :mod:`.trainer`,
:mod:`.segment` (single-frame U-Net), :mod:`.predict`, :mod:`.recover` (scores on whole sequences)."""
