"""Ground-motion intensity measures of records (n, 3, T) in cm/s^2, per component.

PGA (cm/s^2), PGV (cm/s), Arias intensity (m/s), significant duration D5-95 (s), 5 %-damped
pseudo-spectral acceleration PSA (cm/s^2) and the Konno-Ohmachi smoothed Fourier amplitude
spectrum (cm/s). Every function returns arrays with the component axis kept: (n, 3, ...).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.linalg
import scipy.signal

from timesnet_gen.config import EvaluateParams
from timesnet_gen.evaluation.smoothing import get_operator
from timesnet_gen.evaluation.spectra import check_shape, detrend

G_CM_S2 = 980.665  # standard gravity, cm/s^2


def _checked(records: np.ndarray) -> np.ndarray:
    records = check_shape(records)
    bad = ~np.isfinite(records).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"record {int(np.argmax(bad))}: contains NaN or inf samples")
    return records


def pga(records: np.ndarray) -> np.ndarray:
    """Peak ground acceleration (cm/s^2) -> (n, 3)."""
    return np.abs(_checked(records)).max(axis=-1)


def velocity(records: np.ndarray, fs: float) -> np.ndarray:
    """Baseline-corrected velocity (cm/s) -> (n, 3, T).

    The acceleration mean is removed, the trapezoid rule integrates, and the least-squares line
    of the velocity is removed (the drift a small acceleration offset leaves behind).
    """
    acc = _checked(records)
    acc = acc - acc.mean(axis=-1, keepdims=True)
    dt = 1.0 / fs
    vel = np.zeros_like(acc)
    vel[..., 1:] = np.cumsum(0.5 * (acc[..., 1:] + acc[..., :-1]) * dt, axis=-1)
    return detrend(vel)


def pgv(records: np.ndarray, fs: float) -> np.ndarray:
    """Peak ground velocity (cm/s) of the baseline-corrected velocity -> (n, 3)."""
    return np.abs(velocity(records, fs)).max(axis=-1)


def husid(records: np.ndarray, fs: float) -> np.ndarray:
    """Cumulative Arias intensity (m/s) over time -> (n, 3, T), trapezoid rule, starts at 0."""
    a2 = (_checked(records) / 100.0) ** 2  # (m/s^2)^2
    cum = np.zeros_like(a2)
    cum[..., 1:] = np.cumsum(0.5 * (a2[..., 1:] + a2[..., :-1]) / fs, axis=-1)
    return np.pi / (2 * G_CM_S2 / 100.0) * cum


def arias_intensity(records: np.ndarray, fs: float) -> np.ndarray:
    """Arias intensity Ia = pi / (2 g) * integral a^2 dt (m/s) -> (n, 3)."""
    return husid(records, fs)[..., -1]


def significant_duration(
    records: np.ndarray, fs: float, lo: float = 0.05, hi: float = 0.95
) -> np.ndarray:
    """Time (s) between lo and hi fractions of the Arias intensity (D5-95) -> (n, 3).

    Crossing times are linearly interpolated between samples; a zero record gives NaN.
    """
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"duration fractions must satisfy 0 <= lo < hi <= 1, got {lo}, {hi}")
    cum = husid(records, fs)
    total = cum[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = cum / total  # (n, 3, T), non-decreasing
    flat = frac.reshape(-1, frac.shape[-1])
    t = np.arange(frac.shape[-1]) / fs
    out = np.full(len(flat), np.nan)
    for i, h in enumerate(flat):
        if np.isfinite(h[-1]):
            out[i] = np.interp(hi, h, t) - np.interp(lo, h, t)
    return out.reshape(frac.shape[:-1])


@lru_cache(maxsize=64)
def sdof_filter(period: float, damping: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """IIR coefficients (b, a) mapping ground acceleration to the relative displacement of a
    damped oscillator, exact for acceleration linear between samples (the piecewise-linear
    solution of Nigam & Jennings 1969, obtained here from the matrix exponential).

    u'' + 2 zeta w u' + w^2 u = -a_g; state x = (u, u'); over one step with a_g linear,
    x[k+1] = Phi x[k] + B0 a[k] + B1 a[k+1].
    """
    w = 2 * np.pi / period
    dt = 1.0 / fs
    m = np.zeros((4, 4))
    m[0, 1] = 1.0
    m[1, 0], m[1, 1], m[1, 2] = -(w**2), -2 * damping * w, -1.0
    m[2, 3] = 1.0  # d a_g / dt = slope (constant over the step)
    e = scipy.linalg.expm(m * dt)
    phi, gamma_a, gamma_s = e[:2, :2], e[:2, 2], e[:2, 3]
    b1 = gamma_s / dt
    b0 = gamma_a - b1
    # y[k] = x[k] - B1 a[k] is a plain state-space system driven by a[k]; u = y0 + B1[0] a.
    b, a = scipy.signal.ss2tf(phi, (phi @ b1 + b0)[:, None], np.array([[1.0, 0.0]]), b1[:1, None])
    return b[0], a


def sdof_displacement(records: np.ndarray, fs: float, period: float, damping: float = 0.05):
    """Relative displacement (cm) of the oscillator (period s) starting at rest -> (n, 3, T)."""
    acc = _checked(records)
    b, a = sdof_filter(float(period), float(damping), float(fs))
    # A leading zero sample: the ground is at rest before the record (acceleration ramps from
    # 0 to the first sample over one step), so a zero filter state is exact.
    padded = np.concatenate([np.zeros(acc.shape[:-1] + (1,)), acc], axis=-1)
    return scipy.signal.lfilter(b, a, padded, axis=-1)[..., 1:]


def psa(
    records: np.ndarray, fs: float, periods: list[float] | np.ndarray, damping: float = 0.05
) -> np.ndarray:
    """Pseudo-spectral acceleration w^2 max|u| (cm/s^2) -> (n, 3, len(periods))."""
    periods = np.asarray(periods, dtype=np.float64)
    if np.any(periods <= 0):
        raise ValueError("periods must be > 0 s")
    if not 0 <= damping < 1:
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    out = [
        (2 * np.pi / p) ** 2 * np.abs(sdof_displacement(records, fs, p, damping)).max(axis=-1)
        for p in periods
    ]
    return np.stack(out, axis=-1)


def fourier_amplitude(records: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """|FFT| * dt (cm/s) of the detrended records -> (freqs (F,), amplitudes (n, 3, F))."""
    acc = detrend(_checked(records))
    n = acc.shape[-1]
    return np.fft.rfftfreq(n, 1.0 / fs), np.abs(np.fft.rfft(acc, axis=-1)) / fs


def smoothed_fas(
    records: np.ndarray,
    fs: float,
    centers: np.ndarray | None = None,
    bandwidth: float = 40.0,
    params: EvaluateParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Konno-Ohmachi (b = bandwidth) smoothed FAS, window normalised to sum 1 (cm/s).

    centers default: params.fas_n_points log-spaced in fas_fmin-fas_fmax Hz.
    Returns (centers (C,), smoothed (n, 3, C)).
    """
    params = params or EvaluateParams()
    freqs, amp = fourier_amplitude(records, fs)
    if centers is None:
        centers = np.geomspace(params.fas_fmin, params.fas_fmax, params.fas_n_points)
    op = get_operator(freqs, centers, "konno-ohmachi", bandwidth, True, params.smoothing_tol)
    return np.asarray(centers), op.apply(amp)


def intensity_measures(
    records: np.ndarray, fs: float, params: EvaluateParams | None = None
) -> dict[str, np.ndarray]:
    """All scalar measures per record and component: pga, pgv, arias, d5_95 (n, 3) and
    psa (n, 3, P) at params.psa_periods."""
    params = params or EvaluateParams()
    lo, hi = params.duration_range
    return {
        "pga": pga(records),
        "pgv": pgv(records, fs),
        "arias": arias_intensity(records, fs),
        "d5_95": significant_duration(records, fs, lo, hi),
        "psa": psa(records, fs, params.psa_periods, params.damping),
    }
