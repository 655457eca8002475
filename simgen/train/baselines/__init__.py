"""Classical detectors that need no training data: the Laplacian-of-Gaussian blob detector (:mod:`.log`)."""
