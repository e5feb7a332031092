"""Resampling to 100 Hz and cutting the 6000-sample (60 s) window; pure functions over arrays.

Resampling uses a polyphase FIR with an anti-aliasing low-pass (scipy.signal.resample_poly,
Kaiser window), so a 200 Hz record keeps its duration and loses only content above 50 Hz. The
ratio must be rational with a small denominator (200 -> 100, 50 -> 100, 250 -> 100 ...); the
record is never FFT-resampled to a fixed length.

Window modes (all return (3, 6000), zero-padded at the end when the record is shorter):
    first      the paper: the first 6000 samples
    p_aligned  start `lead_s` before the P arrival (header pick, else an STA/LTA trigger on the
               vertical component); falls back to `first` when there is no pick
    energy     centred on the Arias-intensity 5-95 % window (significant duration) of the
               three components together
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

TARGET_RATE = 100.0  # Hz
N_WINDOW = 6000  # samples, 60 s at 100 Hz
WINDOW_MODES = ("first", "p_aligned", "energy")
RATE_RTOL = 1e-4  # a header dt of 0.0100001 s is 100 Hz
MAX_DENOMINATOR = 100  # up/down factors of the polyphase filter stay small
# STA/LTA on the vertical: short-term 0.5 s, long-term 5 s (AFAD records keep only a few
# seconds before the trigger, so a long LTA would never fill), trigger at ratio 3.
STA_S, LTA_S, STA_LTA_ON = 0.5, 5.0, 3.0


def resample_factors(rate_in: float, rate_out: float = TARGET_RATE) -> tuple[int, int] | None:
    """(up, down) with rate_out / rate_in = up / down (to 1e-6), or None when none is small."""
    ratio = Fraction(rate_out / rate_in).limit_denominator(MAX_DENOMINATOR)
    if abs(float(ratio) * rate_in - rate_out) > 1e-6 * rate_out:
        return None
    return ratio.numerator, ratio.denominator


def resample(data: np.ndarray, rate_in: float, rate_out: float = TARGET_RATE) -> np.ndarray:
    """(3, N) at rate_in Hz -> (3, M) at rate_out Hz, M ~= N * rate_out / rate_in."""
    if abs(rate_in - rate_out) <= RATE_RTOL * rate_out:
        return np.asarray(data, dtype=np.float64)
    factors = resample_factors(rate_in, rate_out)
    if factors is None:
        raise ValueError(f"cannot resample {rate_in:g} Hz to {rate_out:g} Hz by a small ratio")
    from scipy.signal import resample_poly  # imported here: scipy.signal costs ~1 s to load

    up, down = factors
    # padtype='line' extends the record linearly instead of with zeros: no edge ringing
    # from a non-zero baseline at the first or last sample
    return resample_poly(np.asarray(data, dtype=np.float64), up, down, axis=-1, padtype="line")


def cut(data: np.ndarray, start: int, n: int = N_WINDOW) -> np.ndarray:
    """data[:, start:start+n], zero-padded at the end to n samples. (3, N) -> (3, n)."""
    start = max(int(start), 0)
    out = np.zeros((data.shape[0], n), dtype=np.float64)
    piece = data[:, start : start + n]
    out[:, : piece.shape[1]] = piece
    return out


def sta_lta_pick(vertical: np.ndarray, rate: float) -> int | None:
    """Index of the first STA/LTA trigger on the vertical component, or None."""
    from obspy.signal.trigger import classic_sta_lta

    nsta, nlta = int(STA_S * rate), int(LTA_S * rate)
    if len(vertical) <= nlta + 1:
        return None
    cft = classic_sta_lta(np.asarray(vertical, np.float64) - np.mean(vertical), nsta, nlta)
    above = np.flatnonzero(cft > STA_LTA_ON)
    return int(above[0]) if above.size else None


def arias_bounds(data: np.ndarray, low: float = 0.05, high: float = 0.95) -> tuple[int, int]:
    """Sample indices where the cumulative Arias intensity of all components reaches 5 % / 95 %."""
    energy = np.cumsum(np.sum(np.asarray(data, np.float64) ** 2, axis=0))
    total = energy[-1]
    if total <= 0:
        return 0, data.shape[1] - 1
    return int(np.searchsorted(energy, low * total)), int(np.searchsorted(energy, high * total))


def window_start(
    data: np.ndarray,
    mode: str,
    rate: float = TARGET_RATE,
    p_pick_s: float | None = None,
    lead_s: float = 5.0,
    n: int = N_WINDOW,
) -> tuple[int, str, float | None]:
    """Where the window starts: (start index, mode actually used, P pick in s or None).

    data: (3, N) at `rate` Hz, components E, N, U. p_pick_s: header P arrival in s after the
    first sample (None: use STA/LTA).
    """
    if mode not in WINDOW_MODES:
        raise ValueError(f"unknown window mode {mode!r}; choose from {', '.join(WINDOW_MODES)}")
    if mode == "first":
        return 0, "first", p_pick_s
    if mode == "p_aligned":
        pick = None if p_pick_s is None else int(round(p_pick_s * rate))
        how = "p_aligned(header)"
        if pick is None:
            pick = sta_lta_pick(data[2], rate)
            how = "p_aligned(sta_lta)"
        if pick is None:
            return 0, "first(no P pick)", None
        return max(pick - int(round(lead_s * rate)), 0), how, pick / rate
    i5, i95 = arias_bounds(data)
    centre = (i5 + i95) // 2
    latest = max(data.shape[1] - n, 0)
    return int(np.clip(centre - n // 2, 0, latest)), "energy", p_pick_s
