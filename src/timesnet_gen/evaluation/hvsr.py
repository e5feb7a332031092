"""Protocol steps 4-7: smoothed H/V spectral ratio, f0 and the median curve of a station."""

from __future__ import annotations

import numpy as np

from timesnet_gen.config import EvaluateParams
from timesnet_gen.evaluation.smoothing import SmoothingOperator, get_operator
from timesnet_gen.evaluation.spectra import (
    RecordError,
    amplitude_spectra,
    check_shape,
    combine_horizontal,
    fft_freqs,
    fft_length,
    record_problems,
)


def hvsr_centers(fft_grid: np.ndarray, params: EvaluateParams) -> np.ndarray:
    """Frequencies (Hz) where the HVSR is reported: FFT bins in [fmin, fmax] or a log grid."""
    if params.grid == "fft":
        centers = fft_grid[(fft_grid >= params.fmin) & (fft_grid <= params.fmax)]
    else:
        centers = np.geomspace(params.fmin, params.fmax, params.n_grid_points)
    if len(centers) < 2:
        raise RecordError(
            f"fewer than 2 frequencies in {params.fmin}-{params.fmax} Hz on this grid "
            f"(record too short for the band)"
        )
    return centers


def hvsr_operator(n_samples: int, fs: float, params: EvaluateParams) -> SmoothingOperator:
    """The cached smoothing operator of records of n_samples at fs Hz (FFT grid -> centres)."""
    grid = fft_freqs(fft_length(n_samples, fs, params), fs)
    return get_operator(
        grid, hvsr_centers(grid, params), params.smoothing, params.bandwidth,
        normalize=True, tol=params.smoothing_tol,
    )


def hvsr_details(
    records: np.ndarray,
    fs: float = 100.0,
    params: EvaluateParams | None = None,
    chunk: int = 32,
    workers: int | None = -1,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """HVSR of every record -> (freqs (F,), curves (n, F), problems).

    problems[i] is None or the reason record i has a NaN curve (NaN samples, zero vertical
    spectrum, too short ...). Records are processed `chunk` at a time to bound memory; the
    FFTs use `workers` threads (scipy.fft; -1 = every core, None = one).
    """
    params = params or EvaluateParams()
    records = check_shape(records)
    problems = record_problems(records, fs, params)
    op = hvsr_operator(records.shape[-1], fs, params)
    curves = np.full((len(records), len(op.centers)), np.nan)
    good = np.flatnonzero([p is None for p in problems])
    starts = range(0, len(good), chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="hvsr", unit="chunk")
    for start in starts:
        idx = good[start : start + chunk]
        spectra = amplitude_spectra(records[idx], fs, params, workers=workers)  # (c, 3, F)
        h = combine_horizontal(spectra[:, 0], spectra[:, 1], params.horizontal)
        smoothed = op.apply(np.stack([h, spectra[:, 2]]))  # (2, c, F_out)
        h_s, v_s = smoothed[0], smoothed[1]
        low_v = v_s.min(axis=1) < params.v_floor
        curves[idx] = h_s / np.maximum(v_s, params.v_floor)
        for i in idx[low_v]:
            problems[i] = f"vertical spectrum below v_floor = {params.v_floor:g} in the band"
            curves[i] = np.nan
    return op.centers.copy(), curves, problems


def hvsr(
    records: np.ndarray,
    fs: float = 100.0,
    params: EvaluateParams | None = None,
    on_bad: str = "raise",
    chunk: int = 32,
    workers: int | None = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed HVSR curves of records (n, 3, T) in E, N, U order -> (freqs (F,), curves (n, F)).

    Paper protocol (PAPER.md steps 1-5): detrend, zero padding, zero-phase Butterworth
    high-pass, |rFFT|, geometric-mean horizontal, H and V smoothed separately, H / V on
    fmin-fmax. on_bad='raise' stops at the first bad record naming it; 'nan' gives it a NaN
    curve (use `hvsr_details` to get the reasons).
    """
    if on_bad not in ("raise", "nan"):
        raise ValueError(f"on_bad must be 'raise' or 'nan', got {on_bad!r}")
    freqs, curves, problems = hvsr_details(records, fs, params, chunk, workers)
    if on_bad == "raise":
        for i, reason in enumerate(problems):
            if reason is not None:
                raise RecordError(f"record {i}: {reason}")
    return freqs, curves


def f0(freqs: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Frequency (Hz) of the global maximum of each curve (n,); NaN for a NaN curve."""
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    if curves.shape[-1] != len(freqs):
        raise ValueError(f"curves have {curves.shape[-1]} points, freqs has {len(freqs)}")
    bad = ~np.isfinite(curves).all(axis=1)
    idx = np.argmax(np.where(bad[:, None], 0.0, curves), axis=1)
    return np.where(bad, np.nan, np.asarray(freqs)[idx])


def interpolate_curves(freqs: np.ndarray, curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of every curve (n, F) onto grid (G,) -> (n, G) (np.interp per row)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    grid = np.clip(np.asarray(grid, dtype=np.float64), freqs[0], freqs[-1])
    hi = np.clip(np.searchsorted(freqs, grid, side="right"), 1, len(freqs) - 1)
    lo = hi - 1
    t = (grid - freqs[lo]) / (freqs[hi] - freqs[lo])
    curves = np.atleast_2d(curves)
    return curves[:, lo] * (1.0 - t) + curves[:, hi] * t


def median_hvsr(
    freqs: np.ndarray,
    curves: np.ndarray,
    n_points: int = 400,
    fmin: float | None = None,
    fmax: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 7: curves interpolated onto n_points linearly spaced in fmin-fmax, median per point.

    NaN curves (bad records) are left out; with none left the median is all NaN.
    """
    fmin = float(freqs[0]) if fmin is None else fmin
    fmax = float(freqs[-1]) if fmax is None else fmax
    grid = np.linspace(fmin, fmax, n_points)
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    curves = curves[np.isfinite(curves).all(axis=1)]
    if len(curves) == 0:
        return grid, np.full(n_points, np.nan)
    return grid, np.median(interpolate_curves(freqs, curves, grid), axis=0)
