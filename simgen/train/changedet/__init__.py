"""Siamese change detector (MultiTaskDeltaNet-style) and its U-Net baseline: :mod:`.config`, :mod:`.model`,
:mod:`.data`, :mod:`.trainer`, :mod:`.predict`."""
