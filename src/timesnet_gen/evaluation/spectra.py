"""Protocol steps 1-3: preprocessing, amplitude spectra and the horizontal combination.

Records are arrays (n, 3, T) in E, N, U order, cm/s^2, sampled at `fs` Hz.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal

from timesnet_gen.config import EvaluateParams
from timesnet_gen.errors import UserError


class RecordError(UserError):
    """A record cannot be evaluated (NaN samples, wrong shape, too short, zero vertical...)."""


def check_shape(records: np.ndarray) -> np.ndarray:
    """(n, 3, T) or (3, T) -> (n, 3, T) float64; raises RecordError naming the problem."""
    records = np.asarray(records)
    if records.ndim == 2:
        records = records[None]
    if records.ndim != 3:
        raise RecordError(f"records must have shape (n, 3, T), got {records.shape}")
    if records.shape[1] != 3:
        raise RecordError(
            f"records must have 3 components (E, N, U), got {records.shape[1]} "
            f"(shape {records.shape})"
        )
    if not np.issubdtype(records.dtype, np.number):
        raise RecordError(f"records must be numeric, got dtype {records.dtype}")
    return records.astype(np.float64, copy=False)


def pad_samples(fs: float, params: EvaluateParams) -> int:
    """Zero padding on each side: 1.5 * order / fc seconds (Boore 2005; 6000 samples at 100 Hz)."""
    if params.highpass_hz <= 0:
        return 0
    return int(round(1.5 * params.highpass_order / params.highpass_hz * fs))


def fft_length(n_samples: int, fs: float, params: EvaluateParams) -> int:
    """FFT length: the padded length (paper) or params.nfft when that is set (and not shorter)."""
    padded = n_samples + 2 * pad_samples(fs, params)
    if params.nfft == 0:
        return padded
    if params.nfft < padded:
        raise RecordError(
            f"evaluate.nfft = {params.nfft} is shorter than the padded record ({padded} samples)"
        )
    return params.nfft


def fft_freqs(nfft: int, fs: float) -> np.ndarray:
    """rFFT bin frequencies (Hz), computed as k * (fs / nfft) like the authors' code."""
    return np.arange(nfft // 2 + 1, dtype=np.float64) * (fs / nfft)


def record_problems(records: np.ndarray, fs: float, params: EvaluateParams) -> list[str | None]:
    """Per record: None when it can be evaluated, else the reason (checked before any FFT)."""
    records = check_shape(records)
    min_seconds = params.min_cycles / params.fmin
    if records.shape[-1] / fs < min_seconds:
        reason = (
            f"record too short for the band: {records.shape[-1] / fs:g} s < "
            f"min_cycles / fmin = {min_seconds:g} s"
        )
        return [reason] * len(records)
    if params.fmax > fs / 2:
        raise RecordError(f"evaluate.fmax = {params.fmax} Hz is above Nyquist ({fs / 2} Hz)")
    finite = np.isfinite(records).all(axis=(1, 2))
    # A constant (or linear) vertical has nothing left after detrending.
    flat_v = np.ptp(detrend(np.where(np.isfinite(records[:, 2]), records[:, 2], 0.0)), axis=-1) == 0
    out: list[str | None] = []
    for ok, flat in zip(finite, flat_v):
        if not ok:
            out.append("record contains NaN or inf samples")
        elif flat:
            out.append("zero vertical spectrum (vertical component is constant or linear)")
        else:
            out.append(None)
    return out


def detrend(x: np.ndarray) -> np.ndarray:
    """Remove the least-squares line along the last axis (closed form, fast)."""
    n = x.shape[-1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0  # centred, so mean and slope decouple
    slope = (x @ t) / np.dot(t, t) if n > 1 else np.zeros(x.shape[:-1])
    return x - x.mean(axis=-1, keepdims=True) - slope[..., None] * t


@lru_cache(maxsize=16)
def _tukey(n: int, alpha: float) -> np.ndarray:
    return scipy.signal.windows.tukey(n, alpha)


def _sos(fs: float, params: EvaluateParams) -> np.ndarray:
    return scipy.signal.butter(
        params.highpass_order, params.highpass_hz, btype="high", fs=fs, output="sos"
    )


@lru_cache(maxsize=16)
def _highpass_gain(nfft: int, fs: float, order: int, fc: float) -> np.ndarray:
    """|H(f)|^2 of the digital Butterworth high-pass at the rFFT bins: filtfilt's gain."""
    sos = scipy.signal.butter(order, fc, btype="high", fs=fs, output="sos")
    _, h = scipy.signal.sosfreqz(sos, worN=fft_freqs(nfft, fs), fs=fs)
    return np.abs(h) ** 2


def amplitude_spectra(
    records: np.ndarray, fs: float, params: EvaluateParams, workers: int | None = None
) -> np.ndarray:
    """Steps 1-2: detrend, (taper), pad, zero-phase high-pass, |rFFT| -> (n, 3, nfft // 2 + 1).

    highpass_method 'filtfilt' runs scipy's sosfiltfilt on the padded record (the authors'
    recipe). 'spectral' multiplies |rFFT| by the same filter's |H|^2: with 60 s of zeros on each
    side the filter tails fit inside the padding, so both agree to ~1e-6 relative in 1-20 Hz
    and 'spectral' is ~20x cheaper. Spectra are in cm/s^2 * samples (no dt scaling: only ratios
    of spectra are used).
    """
    records = check_shape(records)
    n_samples = records.shape[-1]
    nfft = fft_length(n_samples, fs, params)
    x = detrend(records)
    if params.taper > 0:
        x = x * _tukey(n_samples, params.taper)
    if params.highpass_hz > 0 and params.highpass_method == "filtfilt":
        pad = pad_samples(fs, params)
        padded = np.zeros(x.shape[:-1] + (nfft,))
        padded[..., pad : pad + n_samples] = x
        padded = scipy.signal.sosfiltfilt(_sos(fs, params), padded, axis=-1)
        return np.abs(scipy.fft.rfft(padded, axis=-1, workers=workers))
    # |rFFT| does not depend on where the zeros sit (a circular shift only changes the phase),
    # so padding on both sides equals padding at the end: let rfft pad.
    spectra = np.abs(scipy.fft.rfft(x, n=nfft, axis=-1, workers=workers))
    if params.highpass_hz > 0:
        spectra *= _highpass_gain(nfft, float(fs), params.highpass_order, params.highpass_hz)
    return spectra


def combine_horizontal(east: np.ndarray, north: np.ndarray, how: str = "geometric") -> np.ndarray:
    """Step 3: one horizontal spectrum from |E| and |N| (geometric mean in the paper)."""
    if how == "geometric":
        return np.sqrt(east * north)
    if how == "quadratic":
        return np.sqrt(0.5 * (east**2 + north**2))
    if how == "arithmetic":
        return 0.5 * (east + north)
    if how == "total":
        return np.sqrt(east**2 + north**2)
    raise ValueError(
        f"unknown horizontal combination {how!r} (geometric, quadratic, arithmetic, total)"
    )
