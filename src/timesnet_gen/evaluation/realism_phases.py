"""Envelope, strong-motion bursts and P / S picks of records (n, 3, T) in cm/s^2, E, N, U.

- Envelope: RMS of the horizontal vector sqrt(E^2 + N^2) over a moving window (cm/s^2),
  sampled every `step_s`.
- Bursts: obspy's `trigger_onset` (hysteresis: on above `on`, off below `off`) on the envelope
  divided by its peak; triggers closer than `min_gap_s` are one burst. A real record has one.
- Picks: the AIC onset picker (Maeda 1985), vectorised over records with cumulative sums.
  P on the vertical in [0, where its moving RMS first reaches half its maximum]; S on the two horizontals
  (AIC of E and N summed) in [P + s_min_delay_s, time of the envelope's peak]. A pick counts as
  found when the RMS in the `snr_window_s` after it is at least `snr` times the RMS in the same
  window before it; otherwise NaN.
"""

from __future__ import annotations

import numpy as np


def _cumsum0(x: np.ndarray) -> np.ndarray:
    """Cumulative sum along the last axis with a leading 0 (window sums as differences)."""
    out = np.zeros(x.shape[:-1] + (x.shape[-1] + 1,))
    np.cumsum(x, axis=-1, out=out[..., 1:])
    return out


def horizontal_envelope(
    records: np.ndarray, fs: float, window_s: float = 1.0, step_s: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Moving RMS of the horizontal vector -> (times s (M,) at window centres, env (n, M))."""
    win, step = int(round(window_s * fs)), int(round(step_s * fs))
    if win < 1 or step < 1 or win > records.shape[-1]:
        raise ValueError(f"envelope window {window_s} s / step {step_s} s do not fit the record")
    power = _cumsum0(records[:, 0] ** 2 + records[:, 1] ** 2)  # (n, T + 1)
    starts = np.arange(0, records.shape[-1] - win + 1, step)
    env = np.sqrt(np.maximum(power[:, starts + win] - power[:, starts], 0.0) / win)
    return (starts + win / 2) / fs, env


def count_bursts(
    env: np.ndarray, step_s: float, on: float = 0.5, off: float = 0.25, min_gap_s: float = 2.0
) -> np.ndarray:
    """Separate strong-motion bursts per envelope (n, M) -> (n,) int (0 for a zero envelope)."""
    from obspy.signal.trigger import trigger_onset  # obspy only where bursts are counted

    if not 0 < off <= on <= 1:
        raise ValueError(f"burst thresholds must satisfy 0 < off <= on <= 1, got {on}, {off}")
    env = np.atleast_2d(env)
    peak = env.max(axis=1)
    out = np.zeros(len(env), dtype=np.int64)
    gap = min_gap_s / step_s  # envelope samples
    for i in np.flatnonzero(peak > 0):
        triggers = trigger_onset(env[i] / peak[i], on, off)
        if len(triggers) == 0:
            continue
        starts = np.asarray(triggers)[:, 0]
        ends = np.asarray(triggers)[:, 1]
        out[i] = 1 + int(np.sum(starts[1:] - ends[:-1] > gap))
    return out


def aic_curve(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Maeda's AIC(k) = (k - lo) ln var(x[lo:k]) + (hi - k) ln var(x[k:hi]) per row (n, T).

    Rows of x are traces; lo, hi (n,) bound each row's window; outside it (and within 2
    samples of its ends) the AIC is +inf. Variances come from cumulative sums.
    """
    n, length = x.shape
    s1, s2 = _cumsum0(x), _cumsum0(x * x)
    rows = np.arange(n)
    k = np.arange(length)[None, :]
    lo2, hi2 = lo[:, None], hi[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        m_left = np.maximum(k - lo2, 1)
        m_right = np.maximum(hi2 - k, 1)
        a1, a2 = s1[rows, lo][:, None], s2[rows, lo][:, None]
        b1, b2 = s1[rows, hi][:, None], s2[rows, hi][:, None]
        left1, left2 = s1[:, :length] - a1, s2[:, :length] - a2
        var_left = left2 / m_left - (left1 / m_left) ** 2
        var_right = (b2 - s2[:, :length]) / m_right - ((b1 - s1[:, :length]) / m_right) ** 2
        aic = m_left * np.log(np.maximum(var_left, 1e-30))
        aic += m_right * np.log(np.maximum(var_right, 1e-30))
    inside = (k >= lo2 + 2) & (k <= hi2 - 2)
    return np.where(inside, aic, np.inf)


def _rms_ratio(energy_cum: np.ndarray, idx: np.ndarray, win: int) -> np.ndarray:
    """RMS after / RMS before sample idx over win samples, from cumulative energy (n, T + 1)."""
    length = energy_cum.shape[1] - 1
    rows = np.arange(len(idx))
    a = np.clip(idx - win, 0, length)
    b = np.clip(idx + win, 0, length)
    before = (energy_cum[rows, idx] - energy_cum[rows, a]) / np.maximum(idx - a, 1)
    after = (energy_cum[rows, b] - energy_cum[rows, idx]) / np.maximum(b - idx, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(after / before)


def p_onset_index(vertical: np.ndarray, fs: float, window_s: float = 1.0) -> np.ndarray:
    """Sample index of the P onset of demeaned vertical traces (n, T): the minimum of Maeda's
    AIC over the P window, which ends window_s after the vertical's moving RMS (over window_s)
    first reaches half its maximum: past the P onset, before most of the S energy (which would
    otherwise win the AIC). The onset is returned whether or not it passes an SNR test."""
    n, length = vertical.shape
    win = max(int(round(window_s * fs)), 1)
    _, env_v = horizontal_envelope(np.stack([vertical, 0 * vertical], axis=1), fs, window_s,
                                   1.0 / fs)
    p_end = np.argmax(env_v >= 0.5 * env_v.max(axis=1, keepdims=True), axis=1) + win
    p_end = np.clip(p_end, 8, length)
    return np.argmin(aic_curve(vertical, np.zeros(n, dtype=np.int64), p_end), axis=1)


def pick_p_s(
    records: np.ndarray,
    fs: float,
    env_times: np.ndarray,
    env: np.ndarray,
    s_min_delay_s: float = 0.5,
    snr: float = 2.0,
    snr_window_s: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """P and S onset times (s) per record -> (p (n,), s (n,)), NaN where not found."""
    x = records - records.mean(axis=-1, keepdims=True)
    n, _, length = x.shape
    win = max(int(round(snr_window_s * fs)), 1)
    p_idx = p_onset_index(x[:, 2], fs, snr_window_s)
    p_ok = _rms_ratio(_cumsum0(x[:, 2] ** 2), p_idx, win) >= snr
    s_lo = np.minimum(p_idx + int(round(s_min_delay_s * fs)), length - 8)
    s_hi = np.clip(np.round(env_times[np.argmax(env, axis=1)] * fs).astype(np.int64),
                   s_lo + 8, length)
    aic_s = aic_curve(x[:, 0], s_lo, s_hi) + aic_curve(x[:, 1], s_lo, s_hi)
    s_idx = np.argmin(aic_s, axis=1)
    s_ok = np.isfinite(aic_s[np.arange(n), s_idx])
    s_ok &= _rms_ratio(_cumsum0(x[:, 0] ** 2 + x[:, 1] ** 2), s_idx, win) >= snr
    p = np.where(p_ok, p_idx / fs, np.nan)
    s = np.where(p_ok & s_ok, s_idx / fs, np.nan)
    return p, s
