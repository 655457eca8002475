"""Mask R-CNN (torchvision) trained from scratch: :mod:`.config`, :mod:`.model`, :mod:`.data`, :mod:`.trainer`, :mod:`.predict`."""
