"""Schlieren (polarised reflected-light) rendering of a smectic-C c-director field.

The c-director of a smectic-C film makes the in-plane angle φ.  Between
polariser and analyser the reflected intensity depends on φ relative to the
polariser axis.  Two regimes are rendered:

* ``"decrossed"`` (default, the regime of the film experiments): with the
  analyser rotated away from the crossed position the intensity is dominated by
  the term linear in the decrossing, ``I ∝ cos 2(φ − δ)``; a ±1 defect shows
  two dark and two bright brushes.  ``δ`` (the *decross angle*) rotates the
  extinction direction — the DC artifact of the augment pipeline.
* ``"crossed"``: ``I ∝ sin² 2(φ − δ)``; a ±1 defect shows four dark brushes.
* ``"analyzer"``: the general case both limits come from.  Polariser fixed, analyser
  decrossed by δ; the film adds a cross-polarised amplitude ``ρ sin 2φ`` in phase with
  the leak ``sin δ`` through the decrossed analyser, so ``I ∝ (sin δ + ρ sin 2φ)²``.
  For ``|sin δ| ≫ ρ`` this is the decrossed regime (linear in ``sin 2φ``, two brushes);
  at ``δ = 0`` it is the crossed regime (four brushes); in between the four brushes
  have unequal darkness.  Here δ changes the *look* of the texture, not just its
  orientation — which is what the DC artifact needs (in the two limits δ only rotates
  the extinction direction, which a uniform random global phase already does).

Mapped to [0, 1]: ``(1 + cos 2(φ − δ)) / 2``, ``sin² 2(φ − δ)`` and
``(sin δ + ρ sin 2φ)² / (|sin δ| + ρ)²``.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["schlieren", "REGIMES"]

REGIMES = ("decrossed", "crossed", "analyzer")


def schlieren(
    phi: np.ndarray, decross: float = 0.0, regime: str = "decrossed", anisotropy: float = 0.2
) -> np.ndarray:
    """Render the Schlieren intensity of a phase field.

    Parameters
    ----------
    phi : (..., H, W) array
        c-director angle in radians.
    decross : float
        Decross angle δ in radians (rotation of the extinction direction).
    regime : {"decrossed", "crossed", "analyzer"}
        Optical regime, see module docstring.
    anisotropy : float
        ``"analyzer"`` regime only: amplitude ρ > 0 of the film's cross-polarised
        reflection relative to the analyser leak per unit ``sin δ``.

    Returns
    -------
    (..., H, W) float32 array in [0, 1]
    """
    if regime not in REGIMES:
        raise ParameterError(f"unknown Schlieren regime {regime!r}; choose one of {', '.join(REGIMES)}")
    if regime == "analyzer":
        if not anisotropy > 0:
            raise ParameterError(f"anisotropy must be > 0, got {anisotropy}")
        leak = np.float32(np.sin(decross))
        rho = np.float32(anisotropy)
        amp = leak + rho * np.sin(2.0 * np.asarray(phi, dtype=np.float32))
        return (amp * amp / (abs(leak) + rho) ** 2).astype(np.float32, copy=False)
    arg = 2.0 * (np.asarray(phi, dtype=np.float32) - np.float32(decross))
    if regime == "decrossed":
        out = 0.5 * (1.0 + np.cos(arg))
    else:
        out = np.sin(arg) ** 2
    return out.astype(np.float32, copy=False)
