"""Reflected-light polarised microscopy of a thin smectic-C film with Jones matrices.

Light polarised along ``x`` (the polariser) is reflected by the film and passes an analyser
set at ``90° + δ`` (crossed, decrossed by δ).  The film reflects like a thin birefringent,
weakly diattenuating plate whose axes are the c-director azimuth φ (the projection of the
tilted director on the film plane, the *fast* axis) and the direction normal to it::

    M(φ) = R(φ) · diag(r_f e^{−iΓ/2}, r_s e^{+iΓ/2}) · R(−φ),   R(φ) = [[cos φ, −sin φ], [sin φ, cos φ]]

with ``Γ`` the retardance of the reflection and ``r_f, r_s = r (1 ± D)`` the reflection
amplitudes along and across the fast axis (``D`` the diattenuation, from the tilt).  The
field behind the analyser is ``E = a · M(φ) · p`` with ``p = (1, 0)``, ``a = (−sin δ, cos δ)``,
and the camera sees ``I = |E|²``:

    E = −sin δ [r_f c² e^{−iΓ/2} + r_s s² e^{iΓ/2}] + cos δ · s c (r_f e^{−iΓ/2} − r_s e^{iΓ/2}),

``c = cos φ, s = sin φ``.  At δ = 0 a director parallel to the polariser (φ = 0) or the
analyser extinguishes the light; the leak ``sin δ`` of the decrossed analyser interferes with
the film's cross-polarised amplitude, so a ±1 defect shows two bright and two dark brushes of
unequal width whose look changes with Γ (film thickness) — unlike the training renderer's
closed-form ``cos² 2φ``-type Schlieren intensities (:mod:`simgen.simulate.schlieren`).
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["film_jones", "reflected_intensity"]


def film_jones(phi, retardance, diattenuation: float = 0.0, amplitude=1.0) -> np.ndarray:
    """Jones matrix of the film's reflection at every pixel.

    Parameters
    ----------
    phi : (H, W) array
        c-director azimuth (fast axis) in radians.
    retardance : float or (H, W) array
        Γ in radians (may vary with the local thickness).
    diattenuation : float
        ``D`` in [0, 1): ``r_f = r (1 + D)``, ``r_s = r (1 − D)``.
    amplitude : float or (H, W) array
        Mean reflection amplitude ``r`` (>= 0).

    Returns
    -------
    (H, W, 2, 2) complex64 array
    """
    if not 0 <= diattenuation < 1:
        raise ParameterError(f"diattenuation must be in [0, 1), got {diattenuation}")
    phi = np.asarray(phi, np.float32)
    half = 0.5 * np.asarray(retardance, np.float32)
    amp = np.asarray(amplitude, np.float32)
    if np.any(amp < 0):
        raise ParameterError("reflection amplitude must be >= 0")
    rf = (amp * (1 + diattenuation)) * np.exp(-1j * half)
    rs = (amp * (1 - diattenuation)) * np.exp(1j * half)
    c, s = np.cos(phi), np.sin(phi)
    m = np.empty(phi.shape + (2, 2), np.complex64)
    m[..., 0, 0] = rf * c * c + rs * s * s
    m[..., 1, 1] = rf * s * s + rs * c * c
    m[..., 0, 1] = m[..., 1, 0] = (rf - rs) * s * c
    return m


def reflected_intensity(phi, retardance, decross: float, diattenuation: float = 0.0, amplitude=1.0) -> np.ndarray:
    """Intensity ``|a · M(φ) · p|²`` behind a polariser along x and an analyser at 90° + δ.

    Parameters
    ----------
    phi, retardance, diattenuation, amplitude
        As in :func:`film_jones`.
    decross : float
        Analyser decrossing δ in radians (0: crossed).

    Returns
    -------
    (H, W) float32 array, in units of the incident intensity (not normalised).
    """
    m = film_jones(phi, retardance, diattenuation, amplitude)
    polarizer = np.array([1.0, 0.0], np.complex64)
    analyzer = np.array([-np.sin(decross), np.cos(decross)], np.complex64)
    field = np.einsum("i,...ij,j->...", analyzer, m, polarizer)
    return (field.real ** 2 + field.imag ** 2).astype(np.float32)
