"""Build simgen/data/readnoise_default.npz, the read-noise profile shipped with simgen.

The default profile is the synthetic stripe pattern of
:func:`simgen.augment.readnoise.synthetic_profile` (row noise, column fixed-pattern
noise, 7.3-px interference stripes with harmonics and three clock-pickup peaks); it is
deterministic, so this script always writes the same numbers.  It is not built from
the real images in ../shared/realdata/dev: `simgen augment extract-noise` finds no
periodic read noise in any of creme_316L, dsva_fecral and ti_anneal (see
docs/augment.md), and those are TEM cameras, not the optical microscope of the film
images.  For a real instrument, extract its own profile:

    simgen augment extract-noise path/to/real/images/ -o my_camera.npz

Usage:  python tools/build_readnoise_default.py [--check]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from simgen.augment.readnoise import synthetic_profile
from simgen.datasets.augment_io import default_profile_path, load_noise_profile, save_noise_profile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only verify the shipped file matches")
    args = ap.parse_args(argv)
    profile = synthetic_profile()
    path = default_profile_path()
    if args.check:
        shipped = load_noise_profile(path)
        same = np.allclose(shipped.freqs, profile.freqs) and np.allclose(shipped.power, profile.power, rtol=1e-6)
        print(f"{path}: {'matches' if same else 'DIFFERS from'} synthetic_profile()")
        return 0 if same else 1
    save_noise_profile(profile, path, overwrite=True)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(profile)} components)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
