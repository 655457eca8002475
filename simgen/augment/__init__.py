"""simgen.augment — make simulated images look like a real instrument.

Numpy in, numpy out (no file I/O): seeded transforms with short codes
(:mod:`.transforms`; their float32 blur and Poisson kernels in :mod:`.fast`), Fourier read noise (:mod:`.readnoise`), the spec-string grammar
and level table (:mod:`.spec`), pipelines and augmented samplers (:mod:`.pipeline`)
and realism distances between image sets (:mod:`.realism`).  Files (noise profiles,
augmented HDF5 datasets, ablation grids) are handled by
:mod:`simgen.datasets.augment_io` and :mod:`simgen.datasets.ablate`.
"""

from simgen.augment.pipeline import AugmentedSampler, Pipeline, register_simulation_hook
from simgen.augment.readnoise import NoiseProfile, extract_profile, synthetic_profile
from simgen.augment.realism import ImageSetStats, RealismDistance, realism_distance
from simgen.augment.spec import CODES, Spec, code_ranges, levels_table, parse_spec
from simgen.augment.transforms import standardize

__all__ = [
    "AugmentedSampler",
    "Pipeline",
    "register_simulation_hook",
    "NoiseProfile",
    "extract_profile",
    "synthetic_profile",
    "ImageSetStats",
    "RealismDistance",
    "realism_distance",
    "CODES",
    "Spec",
    "code_ranges",
    "levels_table",
    "parse_spec",
    "standardize",
]
