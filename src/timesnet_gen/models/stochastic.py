"""A per-station fitted stochastic ground-motion sampler: the standard record-free baseline.

Fitted from records only (waveforms, station, magnitude, distance); nothing of a simulator's
true parameters is used. On the default corpus, which is simulated by this same family of
methods (Boore 2003 point source + site columns), it is an ORACLE-FAMILY reference, not a fair
competitor of the deep sampler; on real records it is the standard baseline.

Fitting (`fit_stochastic`), every step a pure function over arrays:
1. Arrivals picked from the data (so it works on real records): P = first recursive STA/LTA
   trigger on the vertical (obspy) where the STA is >= trigger_level of its peak (pre-event
   glitches of real records are ignored), refined by the Maeda AIC minimum in
   [trigger - 3 s, trigger + 1 s]; S = AIC minimum of the two horizontals between P and the
   peak of the horizontal envelope.
2. Spectra. Per record and component, band powers of |FFT| dt (cm/s) in log-spaced bands
   (`n_bands` in fmin-fmax Hz, merged until each holds >= `min_bins` FFT bins) of the whole
   window (total) and of the Hann-tapered pre-event segment (before t_P - 0.2 s, rescaled to
   the window as stationary noise). Event power = total - noise (floored at signal_floor x
   total). Per band and component, ridge least squares over ALL stations with >= min_records
   records (pooled slopes are much better determined):
       ln A = a_s(f) + sum_k b_k(f) (M - M_ref)^k + c(f) ln(R / R_ref) + e(f) (R - R_ref) / R_ref
   (k = 1..magnitude_degree; slope columns standardised, ridge on them only). The station terms
   a_s(f), one per component, carry the site signature (H/V per station). The ambient noise
   gets the same regression (on the records with >= noise_min_s of pre-event data): on the
   corpus noise scales with the event, on real records its slopes come out near 0. Without a
   separate noise spectrum, the stationary noise that carries much of the 1 Hz energy of small
   events would be squeezed into the event window (ln PSA(1 s) +0.3 too high).
3. Envelope. Saragoni-Hart windows (Boore 2003: eps, eta, tn): S from t_S with duration d,
   P from t_P with duration p_window_fraction * (t_S - t_P) (a fixed shape choice):
       env_c(t) = sqrt(alpha_c^2 w_P(t)^2 + w_S(t)^2)
   d per record = noise-corrected D5-95 of the horizontals from t_S / (D5-95 of the window per
   unit d); regressed as d = u 10^(0.5 (M - M_ref)) + v R + w (non-negative least squares: the
   Boore source duration 1/fc ~ M0^(1/3) plus a path term). S-P time regressed on R (robust,
   soft-L1). alpha_c (P / S amplitude) is the pooled median of window rms ratios.
4. Variability: each synthetic record draws ONE training record of its station and inherits its
   event residual vector (all bands and components, leverage-corrected r / sqrt(1 - h); 0 in
   bands where event / noise amplitude < snr_min: there the residual is noise, not event), one
   broadband offset of its noise spectrum, its ln-duration and S-P residuals and its P time.
   Correlations across bands, components and duration are those of the data (a residual
   bootstrap; no Gaussian assumption).
5. Calibration (`calibration_rounds`, each three re-syntheses of the generated stations'
   training scenarios with their own residuals, measured by exactly the same code): fold back
   the median duration ratio (pooled), then the mean ln differences of the noise spectra, then
   of the event spectra (per station, band and component). This removes the biases of
   ln-of-noisy-spectrum estimates, of band averaging over sharp site peaks, of the noise
   subtraction and of the envelope mixture, whatever the data.

Synthesis (Boore 2003, vectorised over records): event = Gaussian noise x envelope -> rFFT ->
scaled to unit mean-square spectrum -> times the target amplitude (bands interpolated linearly
in ln f, slope +2 in ln-ln below the first band (omega-squared), flat above the last) -> irFFT;
plus stationary ambient noise shaped the same way by the noise spectrum. P and S share each
component's event spectrum, which is exact for the corpus family and a simplification on real
records (real P is richer in high frequencies).

Known limitation (measured on the corpus): per-station f0 medians match, but the low tail of
the per-record f0 distribution is wider than the real one (the bootstrapped residuals carry the
realisation scatter of their own record on top of the new realisation's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.optimize
import torch

from timesnet_gen.atomic import staged_file
from timesnet_gen.config import Params, ParamsError, section
from timesnet_gen.errors import UserError
from timesnet_gen.evaluation.intensity import fourier_amplitude
from timesnet_gen.records import N_SAMPLES, SAMPLING_RATE

FORMAT = 1
CHUNK = 128  # records per synthesis chunk: bounds memory at about 60 MB


class StochasticError(UserError):
    """Bad input to the stochastic sampler (records, scenarios, station or checkpoint)."""


@dataclass(frozen=True)
class StochasticParams:
    """Fit settings (flat, plain types; the `stochastic` section of params.yaml)."""

    fmin_hz: float = 0.1  # spectral bands: log-spaced in fmin-fmax
    fmax_hz: float = 50.0
    n_bands: int = 100
    min_bins: int = 4  # FFT bins per band at least (low bands are merged)
    magnitude_ref: float = 5.0
    distance_ref_km: float = 50.0
    magnitude_degree: int = 2  # polynomial degree of ln FAS in M
    ridge: float = 1e-3  # on the standardised slope columns, times the record count
    min_records: int = 3  # per station
    sta_s: float = 0.2  # P trigger: recursive STA/LTA windows (s) and threshold
    lta_s: float = 3.0
    trigger_ratio: float = 3.0
    trigger_level: float = 0.01  # a trigger needs STA rms >= this fraction of the peak STA
    envelope_eps: float = 0.2  # Saragoni-Hart shape (Boore 2003)
    envelope_eta: float = 0.05
    envelope_tn: float = 2.0  # window length / duration
    p_window_fraction: float = 0.5  # P duration / (S - P time); a fixed shape choice, not fitted
    noise_min_s: float = 2.0  # pre-event noise is measured on records with this much (s)
    signal_floor: float = 0.1  # event band power kept >= this fraction of the total
    snr_min: float = 2.0  # event / noise band amplitude below which no residual is kept
    calibration_rounds: int = 2
    seed: int = 0  # calibration synthesis


# ---------------------------------------------------------------------------------------------
# envelopes


def saragoni_hart(t: np.ndarray, start: np.ndarray, duration: np.ndarray, eps: float = 0.2,
                  eta: float = 0.05, tn: float = 2.0) -> np.ndarray:
    """Saragoni-Hart window (peak 1 at start + eps tn duration) -> (n, T); t in s, (T,)."""
    b = -eps * np.log(eta) / (1 + eps * (np.log(eps) - 1))
    c = b / eps
    a = (np.e / eps) ** b
    x = (t[None, :] - np.asarray(start)[:, None]) / (tn * np.asarray(duration)[:, None])
    xp = np.maximum(x, 1e-12)
    return np.where(x > 0, a * xp**b * np.exp(-c * xp), 0.0)


def window_d5_95(eps: float, eta: float, tn: float) -> float:
    """D5-95 of a Saragoni-Hart window's energy per unit duration parameter (dimensionless)."""
    t = np.linspace(0.0, 20.0 * tn, 200001)
    w2 = saragoni_hart(t, np.zeros(1), np.ones(1), eps, eta, tn)[0] ** 2
    cum = np.cumsum(w2) / w2.sum()
    return float(np.interp(0.95, cum, t) - np.interp(0.05, cum, t))


def p_window(t: np.ndarray, t_p: np.ndarray, t_s: np.ndarray, p: StochasticParams):
    """P window: Saragoni-Hart from t_P, duration p_window_fraction * (S - P) -> (n, T)."""
    return saragoni_hart(t, t_p, np.maximum(p.p_window_fraction * (t_s - t_p), 0.05),
                         p.envelope_eps, p.envelope_eta, p.envelope_tn)


def event_envelopes(t: np.ndarray, t_p: np.ndarray, t_s: np.ndarray, d: np.ndarray,
                    alpha: np.ndarray, p: StochasticParams) -> np.ndarray:
    """env_c(t) = sqrt(alpha_c^2 w_P(t)^2 + w_S(t)^2) -> (n, 3, T)."""
    w_s = saragoni_hart(t, t_s, d, p.envelope_eps, p.envelope_eta, p.envelope_tn)
    w_p = p_window(t, t_p, t_s, p)
    return np.sqrt((alpha[None, :, None] * w_p[:, None]) ** 2 + w_s[:, None] ** 2)


# ---------------------------------------------------------------------------------------------
# arrival picking


def aic_onset(x: np.ndarray) -> int:
    """Maeda (1985) AIC onset of a segment (c, n), AIC summed over channels -> sample index."""
    n = x.shape[-1]
    if n < 4:
        return n // 2
    k = np.arange(1, n - 1)
    c1, c0 = np.cumsum(x**2, -1), np.cumsum(x, -1)
    v1 = c1[..., k - 1] / k - (c0[..., k - 1] / k) ** 2
    v2 = ((c1[..., -1:] - c1[..., k - 1]) / (n - k)
          - ((c0[..., -1:] - c0[..., k - 1]) / (n - k)) ** 2)
    aic = k * np.log(np.maximum(v1, 1e-30)) + (n - k - 1) * np.log(np.maximum(v2, 1e-30))
    return int(k[np.argmin(aic.sum(axis=0))])


def pick_record(x: np.ndarray, fs: float, p: StochasticParams) -> tuple[float, float]:
    """P and S arrival times (s) of one record (3, T) E, N, U (obspy STA/LTA + AIC)."""
    from obspy.signal.trigger import recursive_sta_lta  # lazy: sampling needs no obspy

    x = x - x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    ratio = recursive_sta_lta(np.ascontiguousarray(x[2]), int(p.sta_s * fs), int(p.lta_s * fs))
    ratio[: int(p.lta_s * fs)] = 0.0  # the recursive LTA starts from zero: a start-up transient
    sta = np.sqrt(np.convolve(x[2] ** 2, np.ones(int(p.sta_s * fs)) / (p.sta_s * fs), "same"))
    # a trigger counts only where the vertical is a visible part of its peak (not a glitch)
    above = (ratio > p.trigger_ratio) & (sta > p.trigger_level * sta.max())
    trigger = int(np.argmax(above)) if above.any() else int(np.argmax(ratio))
    lo, hi = max(trigger - int(3 * fs), 0), min(trigger + int(fs), n)
    i_p = lo + aic_onset(x[2:3, lo:hi])
    energy = np.convolve(x[0] ** 2 + x[1] ** 2, np.ones(int(0.5 * fs)) / (0.5 * fs), "same")
    start = min(i_p + int(0.1 * fs), n - 2)
    peak = start + int(np.argmax(energy[start:]))
    i_s = start + aic_onset(x[:2, start:min(peak + int(0.5 * fs), n)])
    return i_p / fs, max(i_s, i_p + 1) / fs


def pick_arrivals(waveforms: np.ndarray, fs: float, p: StochasticParams) -> np.ndarray:
    """(n, 3, T) -> (n, 2) P and S arrival times in s."""
    return np.array([pick_record(np.asarray(w, np.float64), fs, p) for w in waveforms])


# ---------------------------------------------------------------------------------------------
# measurements shared by the fit and the calibration


def make_bands(freqs: np.ndarray, p: StochasticParams) -> tuple[np.ndarray, np.ndarray]:
    """Band of every FFT bin (-1 = outside) and band centres (Hz, geometric mean of its bins).

    Log-spaced edges in fmin-fmax; a band with fewer than min_bins bins is merged into the next.
    """
    edges = np.geomspace(p.fmin_hz, p.fmax_hz, p.n_bands + 1)
    raw = np.digitize(freqs, edges) - 1
    raw[(freqs < edges[0]) | (freqs > edges[-1])] = -1
    band = np.full(freqs.shape, -1)
    current, count = 0, 0
    for i in np.flatnonzero(raw >= 0):
        if count >= p.min_bins and raw[i] != raw[i - 1]:
            current, count = current + 1, 0
        band[i], count = current, count + 1
    if count < p.min_bins and current > 0:  # short last band: into the one before
        band[band == current] = current - 1
    if band.max() < 1:
        raise StochasticError(f"fewer than 2 spectral bands in {p.fmin_hz}-{p.fmax_hz} Hz with "
                              f">= {p.min_bins} FFT bins each; widen the band or lower min_bins")
    centres = np.array([np.exp(np.log(freqs[band == b]).mean()) for b in range(band.max() + 1)])
    return band, centres


def band_power(spectra: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Mean |A|^2 over the FFT bins of each band: (..., F) -> (..., B)."""
    onehot = (band[:, None] == np.arange(band.max() + 1)[None, :]).astype(np.float64)
    power = np.abs(spectra.reshape(-1, spectra.shape[-1])) ** 2  # 2-D: BLAS
    return (power @ (onehot / onehot.sum(axis=0, keepdims=True))).reshape(
        *spectra.shape[:-1], -1)


def total_power(waveforms: np.ndarray, band: np.ndarray, fs: float) -> np.ndarray:
    """Band power of the whole window's FAS |FFT| dt ((cm/s)^2) -> (n, 3, B)."""
    out = [band_power(fourier_amplitude(np.asarray(waveforms[i:i + CHUNK], np.float64), fs)[1],
                      band) for i in range(0, len(waveforms), CHUNK)]
    return np.concatenate(out)


def noise_power(waveforms: np.ndarray, t_p: np.ndarray, band: np.ndarray, fs: float,
                min_s: float) -> np.ndarray:
    """Band power of the pre-event noise (before t_P - 0.2 s, Hann-tapered, mean removed),
    scaled to the whole window as stationary noise ((cm/s)^2) -> (n, 3, B); NaN where the
    pre-event segment is shorter than min_s."""
    n_t = waveforms.shape[-1]
    t = np.arange(n_t) / fs
    out = []
    for i in range(0, len(waveforms), CHUNK):
        x = np.asarray(waveforms[i:i + CHUNK], np.float64)
        length = np.maximum(t_p[i:i + CHUNK] - 0.2, 0.0)  # s
        inside = t[None, :] < length[:, None]
        count = np.maximum(inside.sum(axis=1), 1)
        mean = np.einsum("nct,nt->nc", x, inside) / count[:, None]
        taper = np.where(inside, np.sin(np.pi * t[None, :] / np.maximum(length, 1e-9)[:, None])
                         ** 2, 0.0)
        seg = (x - mean[..., None]) * taper[:, None]
        spec = np.fft.rfft(seg, axis=-1) / fs
        # E|FFT|^2 of stationary noise is proportional to sum(taper^2); rescale to n_t samples
        gain = n_t / np.maximum((taper**2).sum(axis=1), 1e-9)
        power = band_power(spec, band) * gain[:, None, None]
        power[length < min_s] = np.nan
        out.append(power)
    return np.concatenate(out)


def window_ms(x2: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of x2 (n, c, T) over lo <= t < hi per record -> (n, c); NaN for an empty window."""
    inside = (t[None, :] >= lo[:, None]) & (t[None, :] < hi[:, None])
    count = inside.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("nct,nt->nc", x2, inside) / np.where(count > 0, count, np.nan)[:, None]


def s_duration(waveforms: np.ndarray, arrivals: np.ndarray, fs: float) -> np.ndarray:
    """Noise-corrected D5-95 (s) of the horizontal energy from t_S on -> (n,); NaN if none.

    The pre-event energy rate (before t_P - 0.2 s) is subtracted from the Husid curve.
    """
    t = np.arange(waveforms.shape[-1]) / fs
    out = np.full(len(waveforms), np.nan)
    for i, (w, (t_p, t_s)) in enumerate(zip(waveforms, arrivals)):
        e = np.asarray(w[0], np.float64) ** 2 + np.asarray(w[1], np.float64) ** 2
        pre = t < t_p - 0.2
        rate = e[pre].mean() if pre.sum() >= fs else 0.0
        after = t >= t_s
        cum = np.maximum.accumulate(np.cumsum(e[after] - rate))
        if cum.size < 2 or cum[-1] <= 0:
            continue
        frac = cum / cum[-1]
        out[i] = np.interp(0.95, frac, t[after]) - np.interp(0.05, frac, t[after])
    return out


def p_amplitude(waveforms: np.ndarray, arrivals: np.ndarray, d: np.ndarray, fs: float,
                p: StochasticParams) -> np.ndarray:
    """Per record and component, the P window's amplitude relative to the S window's (n, 3):
    mean squares in [t_P, t_S) (less the pre-event one) and the S window, each divided by
    the mean square of its model envelope there."""
    t = np.arange(waveforms.shape[-1]) / fs
    t_p, t_s = arrivals[:, 0], arrivals[:, 1]
    x2 = np.asarray(waveforms, np.float64) ** 2
    s_end = t_s + p.envelope_tn * d
    ms_pre = np.nan_to_num(window_ms(x2, t, np.zeros_like(t_p), t_p - 0.2))
    w_s2 = saragoni_hart(t, t_s, d, p.envelope_eps, p.envelope_eta, p.envelope_tn)[:, None] ** 2
    g2 = window_ms(x2, t, t_s, s_end) / window_ms(w_s2, t, t_s, s_end)
    w_p2 = p_window(t, t_p, t_s, p)[:, None] ** 2
    ms_p = np.maximum(window_ms(x2, t, t_p, t_s) - ms_pre, 0.0)
    return np.sqrt(ms_p / (g2 * window_ms(w_p2, t, t_p, t_s)))


@dataclass
class Measurements:
    """What the fit reads from records (and the calibration from synthetic ones)."""

    arrivals: np.ndarray  # (n, 2) s, P and S
    d_obs: np.ndarray  # (n,) s, S-window duration parameter; NaN = not measurable
    ln_noise: np.ndarray  # (n, 3, B) ln cm/s, stationary pre-event noise; NaN rows = none
    ln_signal: np.ndarray  # (n, 3, B) ln cm/s, event FAS (total less noise power)
    usable: np.ndarray  # (n, 3, B) bool: event / noise amplitude >= snr_min (or no noise)


def measure(waveforms: np.ndarray, band: np.ndarray, fs: float, p: StochasticParams
            ) -> Measurements:
    """Picks, S duration, noise and event band spectra of records (n, 3, T)."""
    arrivals = pick_arrivals(waveforms, fs, p)
    unit = window_d5_95(p.envelope_eps, p.envelope_eta, p.envelope_tn)
    d_obs = s_duration(waveforms, arrivals, fs) / unit
    total = total_power(waveforms, band, fs)
    noise = noise_power(waveforms, arrivals[:, 0], band, fs, p.noise_min_s)
    event = total - np.nan_to_num(noise)
    usable = np.isnan(noise) | (event >= p.snr_min**2 * np.nan_to_num(noise))
    signal = np.maximum(event, p.signal_floor * total)
    return Measurements(arrivals, d_obs, 0.5 * np.log(np.maximum(noise, 1e-300)),
                        0.5 * np.log(np.maximum(signal, 1e-300)), usable)


# ---------------------------------------------------------------------------------------------
# regressions


def amplitude_features(magnitude: np.ndarray, distance_km: np.ndarray, degree: int,
                       m_ref: float, r_ref: float) -> np.ndarray:
    """(n, degree + 2): (M - M_ref)^k for k = 1..degree, ln(R / R_ref), (R - R_ref) / R_ref."""
    dm = np.asarray(magnitude, np.float64) - m_ref
    r = np.asarray(distance_km, np.float64)
    cols = [dm**k for k in range(1, degree + 1)] + [np.log(r / r_ref), (r - r_ref) / r_ref]
    return np.stack(cols, axis=1)


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std (std floored) of x (n, K) -> (2, K)."""
    return np.stack([x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)])


def ridge_fit(station_index: np.ndarray, n_stations: int, z: np.ndarray, y: np.ndarray,
              ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Station terms + pooled slopes by ridge least squares (ridge on slopes only).

    z (n, K) standardised features, y (n, Q). A station without rows gets the mean of the
    others' terms. Returns station terms (S, Q), slopes (K, Q) and the leverage-corrected
    residuals (y - fit) / sqrt(1 - h_ii) (n, Q).
    """
    present = np.isin(np.arange(n_stations), station_index)
    n_present = int(present.sum())
    x = np.concatenate([np.eye(n_present)[(np.cumsum(present) - 1)[station_index]], z], axis=1)
    penalty = np.r_[np.zeros(n_present), np.full(z.shape[1], ridge * len(x))]
    gram_inv = np.linalg.pinv(x.T @ x + np.diag(penalty))
    beta = gram_inv @ x.T @ y
    leverage = np.einsum("ij,jk,ik->i", x, gram_inv, x)
    resid = (y - x @ beta) / np.sqrt(np.maximum(1.0 - leverage, 1e-3))[:, None]
    terms = np.tile(beta[:n_present].mean(axis=0), (n_stations, 1))
    terms[present] = beta[:n_present]
    return terms, beta[n_present:], resid


def duration_basis(magnitude: np.ndarray, distance_km: np.ndarray, m_ref: float) -> np.ndarray:
    """(n, 3): source term 10^(0.5 (M - M_ref)) (1/fc ~ M0^(1/3)), distance (km), constant."""
    m = np.asarray(magnitude, np.float64)
    return np.stack([10.0 ** (0.5 * (m - m_ref)), np.asarray(distance_km, np.float64),
                     np.ones_like(m)], axis=1)


def fit_duration(magnitude: np.ndarray, distance_km: np.ndarray, d_obs: np.ndarray,
                 m_ref: float) -> np.ndarray:
    """Non-negative least squares of d (s) on `duration_basis` -> 3 coefficients."""
    ok = np.isfinite(d_obs) & (d_obs > 0)
    if ok.sum() < 3:
        raise StochasticError(f"only {int(ok.sum())} record(s) with a measurable S duration; "
                              "need >= 3")
    coef, _ = scipy.optimize.nnls(duration_basis(magnitude[ok], distance_km[ok], m_ref),
                                  d_obs[ok])
    return coef


def fit_s_minus_p(distance_km: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Robust (soft-L1, 0.5 s scale) line S-P (s) = k R + c -> (k, c)."""
    def resid(theta):
        return theta[0] * distance_km + theta[1] - sp

    return scipy.optimize.least_squares(resid, np.array([0.1, 0.0]), loss="soft_l1",
                                        f_scale=0.5).x


# ---------------------------------------------------------------------------------------------
# synthesis


class GridInterpolator:
    """ln A on bands (..., B) -> ln A on the rFFT bins (..., F): linear in ln f between band
    centres, slope +2 in ln-ln below the first (omega-squared), flat above the last, and
    -inf (zero amplitude) at DC."""

    def __init__(self, centres: np.ndarray, n_samples: int, fs: float):
        freqs = np.fft.rfftfreq(n_samples, 1.0 / fs)
        lf, lc = np.log(np.maximum(freqs, 1e-12)), np.log(centres)
        pos = np.clip(np.searchsorted(lc, lf) - 1, 0, len(lc) - 2)
        frac = np.clip((lf - lc[pos]) / (lc[pos + 1] - lc[pos]), 0.0, 1.0)
        self.weights = np.zeros((len(centres), len(freqs)))
        self.weights[pos, np.arange(len(freqs))] = 1.0 - frac
        self.weights[pos + 1, np.arange(len(freqs))] += frac
        self.offset = np.where(lf < lc[0], 2.0 * (lf - lc[0]), 0.0)
        self.offset[0] = -np.inf

    def __call__(self, ln_band: np.ndarray) -> np.ndarray:
        flat = ln_band.reshape(-1, ln_band.shape[-1]) @ self.weights  # 2-D: BLAS
        return flat.reshape(*ln_band.shape[:-1], -1) + self.offset


def shaped_noise(white: np.ndarray, env: np.ndarray, ln_amp: np.ndarray, fs: float) -> np.ndarray:
    """Boore (2003): white (n, 3, T) x envelope -> rFFT scaled to unit mean-square spectrum ->
    times the target amplitude exp(ln_amp) (n, 3, F) in cm/s -> irFFT (cm/s^2)."""
    spec = np.fft.rfft(white * env, axis=-1)
    rms = np.sqrt(np.mean(np.abs(spec) ** 2, axis=-1, keepdims=True))
    spec = spec / np.maximum(rms, 1e-300) * np.exp(ln_amp) * fs
    acc = np.fft.irfft(spec, n=white.shape[-1], axis=-1)
    return acc - acc.mean(axis=-1, keepdims=True)


@dataclass
class StochasticSampler:
    """Fitted model: per-station event and noise spectra, envelopes from M and R, and the
    residual pools of the training records (see the module docstring)."""

    kind: ClassVar[str] = "stochastic"

    stations: list[str]
    params: StochasticParams
    band_centres: np.ndarray  # (B,) Hz
    station_terms: np.ndarray  # (S, 3, B) ln cm/s, event FAS at the mean features
    slopes: np.ndarray  # (K, 3, B) per standardised feature
    feature_norm: np.ndarray  # (2, K) mean, std of amplitude_features
    noise_terms: np.ndarray  # (S, 3, B) ln cm/s, ambient noise FAS at the mean features
    noise_slopes: np.ndarray  # (K, 3, B) per standardised feature
    duration_coef: np.ndarray  # (3,) s: d = duration_basis @ coef
    sp_coef: np.ndarray  # (2,): S-P (s) = k R (km) + c
    alpha: np.ndarray  # (3,) P / S amplitude per component
    pool_station: np.ndarray  # (N,) int: row in `stations` of each pooled training record
    pool_scenario: np.ndarray  # (N, 2) magnitude, distance_km
    pool_residual: np.ndarray  # (N, 3, B) ln cm/s, event FAS
    pool_noise_residual: np.ndarray  # (N, 3, B) ln cm/s, ambient noise FAS (0 = unmeasured)
    pool_ln_duration: np.ndarray  # (N,) ln(d_obs / d_model)
    pool_sp: np.ndarray  # (N,) s, S-P residual
    pool_t_p: np.ndarray  # (N,) s, picked P time
    fs: float = SAMPLING_RATE
    n_samples: int = N_SAMPLES

    # -- contract ------------------------------------------------------------------------

    def scenarios(self, station: str) -> np.ndarray:
        """(n_train, 2) training [magnitude, distance_km] of the station."""
        return self.pool_scenario[self.pool_station == self._station_row(station)].copy()

    def sample(self, station: str, magnitude: np.ndarray, distance_km: np.ndarray,
               seed: int) -> np.ndarray:
        """(n, 3, n_samples) float32 cm/s^2 (E, N, U) at the scenarios; deterministic, and
        record i depends only on (seed, i, its scenario), not on the batch size."""
        row = self._station_row(station)
        m, r = check_scenarios(magnitude, distance_km)
        rngs = [np.random.default_rng([int(seed), i]) for i in range(len(m))]
        pool = np.flatnonzero(self.pool_station == row)
        draws = np.array([pool[g.integers(len(pool))] for g in rngs], dtype=int)
        return self.synthesize(np.full(len(m), row), m, r, draws, rngs)

    def state(self) -> dict:
        """Plain tensors, numbers, strings and lists (torch.load(weights_only=True) safe)."""
        out = {"stations": list(self.stations), "params": asdict(self.params),
               "fs": float(self.fs), "n_samples": int(self.n_samples)}
        for name in ARRAY_FIELDS:
            out[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        return out

    @classmethod
    def from_state(cls, state: dict) -> StochasticSampler:
        missing = [k for k in ("stations", "params", "fs", "n_samples", *ARRAY_FIELDS)
                   if k not in state]
        if missing:
            raise StochasticError(f"stochastic checkpoint state lacks {', '.join(missing)}")
        try:  # each value checked against its annotation, as params.yaml's are
            params = section(Params(generators={"stochastic": state["params"]}), "stochastic",
                             StochasticParams)
        except ParamsError as exc:
            raise StochasticError(f"stochastic checkpoint params: {exc}") from None
        arrays = {k: state[k].numpy() if torch.is_tensor(state[k]) else np.asarray(state[k])
                  for k in ARRAY_FIELDS}
        return cls(stations=[str(s) for s in state["stations"]],
                   params=params, fs=float(state["fs"]),
                   n_samples=int(state["n_samples"]), **arrays)

    # -- model -----------------------------------------------------------------------------

    def _station_row(self, station: str) -> int:
        if station not in self.stations:
            raise StochasticError(f"station {station!r} is not in this stochastic sampler "
                                  f"(stations: {', '.join(self.stations)})")
        return self.stations.index(station)

    def median_ln_amplitude(self, rows: np.ndarray, m: np.ndarray, r: np.ndarray,
                            ambient: bool = False) -> np.ndarray:
        """Median ln band amplitude (ln cm/s) of the event (or the ambient noise) at scenarios
        -> (n, 3, B)."""
        p = self.params
        feats = amplitude_features(m, r, p.magnitude_degree, p.magnitude_ref, p.distance_ref_km)
        z = (feats - self.feature_norm[0]) / self.feature_norm[1]
        terms, slopes = ((self.noise_terms, self.noise_slopes) if ambient
                         else (self.station_terms, self.slopes))
        return terms[rows] + np.einsum("nk,kcb->ncb", z, slopes)

    def median_duration(self, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Median S-window duration parameter d (s) -> (n,)."""
        return np.maximum(duration_basis(m, r, self.params.magnitude_ref) @ self.duration_coef,
                          0.1)

    def synthesize(self, rows: np.ndarray, m: np.ndarray, r: np.ndarray, draws: np.ndarray,
                   rngs: list[np.random.Generator]) -> np.ndarray:
        """Records at scenarios, each with the residuals of pooled training record draws[i]
        and white noise (event, ambient) from rngs[i] -> (n, 3, T) float32 cm/s^2."""
        t = np.arange(self.n_samples) / self.fs
        on_grid = GridInterpolator(self.band_centres, self.n_samples, self.fs)
        out = np.empty((len(m), 3, self.n_samples), np.float32)
        w = np.empty((min(CHUNK, len(m)), 2, 3, self.n_samples))
        for lo in range(0, len(m), CHUNK):
            sl, j = slice(lo, lo + CHUNK), draws[lo:lo + CHUNK]
            w = w[: len(j)]
            for k, g in enumerate(rngs[sl]):
                g.standard_normal(out=w[k])
            t_p = self.pool_t_p[j]
            t_s = t_p + np.maximum(self.sp_coef[0] * r[sl] + self.sp_coef[1] + self.pool_sp[j],
                                   0.1)
            d = self.median_duration(m[sl], r[sl]) * np.exp(self.pool_ln_duration[j])
            ln_event = self.median_ln_amplitude(rows[sl], m[sl], r[sl]) + self.pool_residual[j]
            env = event_envelopes(t, t_p, t_s, d, self.alpha, self.params)
            event = shaped_noise(w[:, 0], env, on_grid(ln_event), self.fs)
            ln_noise = (self.median_ln_amplitude(rows[sl], m[sl], r[sl], ambient=True)
                        + self.pool_noise_residual[j])
            ambient = shaped_noise(w[:, 1], np.ones((1, 1, 1)), on_grid(ln_noise), self.fs)
            out[sl] = event + ambient
        return out


ARRAY_FIELDS = ("band_centres", "station_terms", "slopes", "feature_norm", "noise_terms",
                "noise_slopes", "duration_coef", "sp_coef", "alpha",
                "pool_station", "pool_scenario", "pool_residual", "pool_noise_residual",
                "pool_ln_duration", "pool_sp", "pool_t_p")


# ---------------------------------------------------------------------------------------------
# input checks


def check_scenarios(magnitude, distance_km) -> tuple[np.ndarray, np.ndarray]:
    """1-D float arrays of equal length, finite, distance > 0 -> (m, r)."""
    try:
        m = np.atleast_1d(np.asarray(magnitude, dtype=np.float64))
        r = np.atleast_1d(np.asarray(distance_km, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise StochasticError(f"magnitude and distance_km must be numbers: {exc}") from None
    if m.ndim != 1 or r.ndim != 1 or len(m) != len(r):
        raise StochasticError(f"magnitude and distance_km must be 1-D of equal length, got "
                              f"shapes {m.shape} and {r.shape}")
    for name, v in (("magnitude", m), ("distance_km", r)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise StochasticError(f"{name}: value {v[bad[0]]} at index {bad[0]} is not finite")
    if (r <= 0).any():
        i = int(np.flatnonzero(r <= 0)[0])
        raise StochasticError(f"distance_km must be > 0, got {r[i]} at index {i}")
    return m, r


def check_training(waveforms: np.ndarray, records: pd.DataFrame, stations: list[str],
                   p: StochasticParams) -> np.ndarray:
    """Validate the fit inputs; returns the mask of records at stations with enough records."""
    if waveforms.ndim != 3 or waveforms.shape[1] != 3:
        raise StochasticError(f"waveforms must have shape (n, 3, T), got {waveforms.shape}")
    if len(waveforms) != len(records):
        raise StochasticError(f"{len(waveforms)} waveforms but {len(records)} records rows")
    missing = [c for c in ("station", "magnitude", "distance_km") if c not in records.columns]
    if missing:
        raise StochasticError(f"records table lacks column(s) {', '.join(missing)}")
    check_scenarios(records["magnitude"].to_numpy(), records["distance_km"].to_numpy())
    finite = np.isfinite(waveforms).all(axis=(1, 2))
    if not finite.all():
        i = int(np.argmin(finite))
        raise StochasticError(f"record {i} (station {records['station'].iloc[i]}): waveform "
                              "contains NaN or inf")
    if not stations:
        raise StochasticError("no stations given to fit")
    counts = records["station"].astype(str).value_counts()
    for s in stations:
        if counts.get(s, 0) < p.min_records:
            raise StochasticError(f"station {s!r} has {counts.get(s, 0)} record(s); the "
                                  f"stochastic fit needs >= {p.min_records}")
    return (records["station"].astype(str).map(counts) >= p.min_records).to_numpy()


# ---------------------------------------------------------------------------------------------
# fit


def fit_stochastic(waveforms: np.ndarray, records: pd.DataFrame, stations: list[str],
                   params: StochasticParams | None = None,
                   fs: float = SAMPLING_RATE) -> StochasticSampler:
    """Fit on records (n, 3, T) cm/s^2 with columns station, magnitude, distance_km.

    Slopes are pooled over every station of `records` with >= min_records records (others are
    left out); the sampler generates `stations` (each must have >= min_records records).
    """
    p = params or StochasticParams()
    waveforms = np.asarray(waveforms)
    stations = [str(s) for s in stations]
    keep = check_training(waveforms, records, stations, p)
    waveforms, records = waveforms[keep], records.loc[keep].reset_index(drop=True)
    order = stations + sorted(set(records["station"].astype(str)) - set(stations))
    s_idx = records["station"].astype(str).map({s: i for i, s in enumerate(order)}).to_numpy()
    m, r = records["magnitude"].to_numpy(float), records["distance_km"].to_numpy(float)
    band, centres = make_bands(np.fft.rfftfreq(waveforms.shape[-1], 1.0 / fs), p)
    obs = measure(waveforms, band, fs, p)
    n, shape3, n_exp = len(m), (3, len(centres)), len(stations)

    feats = amplitude_features(m, r, p.magnitude_degree, p.magnitude_ref, p.distance_ref_km)
    f_norm = standardise(feats)
    z = (feats - f_norm[0]) / f_norm[1]
    terms, slopes, resid = ridge_fit(s_idx, len(order), z, obs.ln_signal.reshape(n, -1),
                                     p.ridge)
    resid[~obs.usable.reshape(n, -1)] = 0.0  # noise-dominated: no event residual to keep
    d_coef = fit_duration(m, r, obs.d_obs, p.magnitude_ref)
    d_model = np.maximum(duration_basis(m, r, p.magnitude_ref) @ d_coef, 0.1)
    measured = np.isfinite(obs.d_obs) & (obs.d_obs > 0)
    ln_d = np.where(measured, np.log(np.where(measured, obs.d_obs, 1.0) / d_model), 0.0)
    d_used = np.where(measured, obs.d_obs, d_model)
    sp = obs.arrivals[:, 1] - obs.arrivals[:, 0]
    sp_coef = fit_s_minus_p(r, sp)
    alpha = np.nan_to_num(np.nanmedian(p_amplitude(waveforms, obs.arrivals, d_used, fs, p),
                                       axis=0))
    noise_terms, noise_slopes, noise_resid = fit_noise(obs.ln_noise, s_idx, len(order), z,
                                                       p.ridge)

    pool = s_idx < n_exp
    sampler = StochasticSampler(
        stations=stations, params=p, band_centres=centres,
        station_terms=terms[:n_exp].reshape(n_exp, *shape3), slopes=slopes.reshape(-1, *shape3),
        feature_norm=f_norm, noise_terms=noise_terms[:n_exp].reshape(n_exp, *shape3),
        noise_slopes=noise_slopes.reshape(-1, *shape3),
        duration_coef=d_coef, sp_coef=sp_coef, alpha=alpha,
        pool_station=s_idx[pool], pool_scenario=np.stack([m, r], axis=1)[pool],
        pool_residual=np.nan_to_num(resid[pool]).reshape(-1, *shape3),
        pool_noise_residual=noise_resid[pool].reshape(-1, *shape3),
        pool_ln_duration=ln_d[pool], pool_sp=(sp - sp_coef[0] * r - sp_coef[1])[pool],
        pool_t_p=obs.arrivals[pool, 0], fs=fs, n_samples=waveforms.shape[-1])
    for round_ in range(p.calibration_rounds):
        calibrate(sampler, obs, pool, band, round_)
    return sampler


def fit_noise(ln_noise: np.ndarray, s_idx: np.ndarray, n_stations: int, z: np.ndarray,
              ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ambient noise ln band amplitude (n, 3, B) = station term + slopes x the standardised
    scenario features z, fitted on the records whose pre-event noise was measurable (on real
    records the slopes come out near 0; on the corpus noise scales with the event). Returns
    terms (S, 3B), slopes (K, 3B) and residuals (n, 3B): per record ONE broadband offset (the
    mean over bands and components; 0 where unmeasured). The band-by-band scatter of a few
    seconds of pre-event noise is mostly estimation noise, independent on E, N and U, and
    kept whole it would add spurious H/V peaks wherever noise dominates."""
    y = ln_noise.reshape(len(s_idx), -1)
    ok = np.isfinite(y).all(axis=1)
    if ok.sum() < 3:
        raise StochasticError(f"only {int(ok.sum())} record(s) have >= noise_min_s of "
                              "pre-event noise before the P pick; need >= 3")
    terms, slopes, resid_ok = ridge_fit(s_idx[ok], n_stations, z[ok], y[ok], ridge)
    resid = np.zeros_like(y)
    resid[ok] = resid_ok.mean(axis=1, keepdims=True)
    return terms, slopes, resid


def calibrate(sampler: StochasticSampler, obs: Measurements, pool: np.ndarray,
              band: np.ndarray, round_: int) -> None:
    """Re-synthesise the pooled training records with their own residuals and measure them like
    the data, then fold back in turn (one re-synthesis each): the median duration ratio
    (pooled), the mean ln-amplitude differences of the noise and of the event spectra (per
    station, band and component). In place."""
    got = remeasure(sampler, band, [round_, 0])
    ratio = obs.d_obs[pool] / got.d_obs
    ok = np.isfinite(ratio) & (ratio > 0)
    if ok.any():
        sampler.duration_coef = sampler.duration_coef * float(np.median(ratio[ok]))
    got = remeasure(sampler, band, [round_, 1])
    sampler.noise_terms = sampler.noise_terms + station_means(
        obs.ln_noise[pool] - got.ln_noise, sampler.pool_station, len(sampler.stations))
    got = remeasure(sampler, band, [round_, 2])
    sampler.station_terms = sampler.station_terms + station_means(
        obs.ln_signal[pool] - got.ln_signal, sampler.pool_station, len(sampler.stations))


def remeasure(sampler: StochasticSampler, band: np.ndarray, key: list[int]) -> Measurements:
    """Measurements of the pooled training scenarios re-synthesised with their own residuals."""
    n = len(sampler.pool_station)
    rngs = [np.random.default_rng([sampler.params.seed, *key, i]) for i in range(n)]
    m, r = sampler.pool_scenario[:, 0], sampler.pool_scenario[:, 1]
    synth = sampler.synthesize(sampler.pool_station, m, r, np.arange(n), rngs)
    return measure(synth, band, sampler.fs, sampler.params)


def station_means(x: np.ndarray, station: np.ndarray, n_stations: int) -> np.ndarray:
    """Mean of the finite entries of x (n, ...) per station and entry -> (S, ...); 0 where
    a station has none."""
    out = np.zeros((n_stations, *x.shape[1:]))
    for s in range(n_stations):
        rows = x[station == s]
        count = np.isfinite(rows).sum(axis=0)
        out[s] = np.where(count > 0, np.nansum(rows, axis=0) / np.maximum(count, 1), 0.0)
    return out


def save_checkpoint(sampler: StochasticSampler, path: str | Path) -> Path:
    """torch.save({"kind", "format", "state"}) through an atomic staged file."""
    with staged_file(path) as tmp:
        torch.save({"kind": sampler.kind, "format": FORMAT, "state": sampler.state()}, tmp)
    return Path(path)


def training_set(prepared: str | Path, raw: str | Path, split: str = "train"
                 ) -> tuple[np.ndarray, pd.DataFrame]:
    """Waveforms and records (joined with raw records.csv for magnitude and distance) of one
    split of a prepared folder (index.csv + waveforms.npy)."""
    prepared, raw = Path(prepared), Path(raw)
    for f in (prepared / "index.csv", prepared / "waveforms.npy", raw / "records.csv"):
        if not f.is_file():
            raise StochasticError(f"{f}: missing")
    index = pd.read_csv(prepared / "index.csv", dtype={"station": str, "record_id": str})
    meta = pd.read_csv(raw / "records.csv", dtype={"station": str, "record_id": str})
    cols = [c for c in ("magnitude", "distance_km") if c not in index.columns]
    missing = [c for c in cols if c not in meta.columns]
    if missing:
        raise StochasticError(f"{raw / 'records.csv'}: lacks column(s) {', '.join(missing)}")
    table = index.merge(meta[["record_id", *cols]], on="record_id", how="left")
    rows = np.flatnonzero((table["split"] == split).to_numpy())
    waveforms = np.load(prepared / "waveforms.npy", mmap_mode="r")
    return np.asarray(waveforms[rows]), table.iloc[rows].reset_index(drop=True)


def main(argv: list[str], verb: str = "fit-stochastic") -> int:
    """`timesnet-gen fit-stochastic`: fit on the prepared train split (every station; the
    held-out records are never read), write <out>/model.pt (a `sample` checkpoint)."""
    from timesnet_gen.config import load_params
    from timesnet_gen.stage import stage_parser

    parser = stage_parser(verb, main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--raw", default="data/raw", type=Path,
                        help="raw corpus: records.csv gives magnitude and distance_km")
    parser.add_argument("--out", default="models/stochastic", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    fit = section(params, "stochastic", StochasticParams)
    waveforms, records = training_set(args.data, args.raw, "train")
    sampler = fit_stochastic(waveforms, records, list(params.data.target_stations), fit)
    path = save_checkpoint(sampler, args.out / "model.pt")
    print(f"{verb}: fitted on {len(records)} training records of "
          f"{records['station'].nunique()} stations -> {path}")
    return 0
