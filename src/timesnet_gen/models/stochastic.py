"""A per-station fitted stochastic ground-motion sampler: the standard record-free baseline.

Fitted from records only (waveforms, station, magnitude, distance); nothing of a simulator's
true parameters is used. On the default corpus, which is simulated by this same family of
methods (Boore 2003 point source + site columns), it is an ORACLE-FAMILY reference, not a fair
competitor of the deep sampler; on real records it is the standard baseline.

Fitting (`fit_stochastic`), every step a pure function over arrays:
1. Arrivals picked from the data (works on real records): P = recursive STA/LTA trigger on the
   vertical (obspy), refined by the Maeda AIC minimum in [trigger - 3 s, trigger + 1 s];
   S = AIC minimum of the two horizontals between P and the peak of the horizontal envelope.
2. Spectrum. Per record and component the Fourier amplitude |FFT| dt (cm/s) of the whole window
   is reduced to ln rms amplitude in log-spaced bands (`n_bands` in fmin-fmax Hz, merged until
   each holds >= `min_bins` FFT bins). Per band and component, ridge least squares over ALL
   stations with >= `min_records` records (pooled slopes are much better determined):
       y = a_s(f) + sum_k b_k(f) (M - M_ref)^k + c(f) ln(R / R_ref) + e(f) (R - R_ref) / R_ref
   (k = 1..magnitude_degree; slope columns standardised, ridge on them only). The station
   terms a_s(f), one per component, carry the site signature (H/V per station).
3. Envelope. Saragoni-Hart windows (Boore 2003: eps, eta, tn): S from t_S with duration d,
   P from t_P with duration p_window_fraction * (t_S - t_P), plus a stationary noise floor:
       env_c(t) = sqrt(noise_c^2 + alpha_c^2 w_P(t)^2 + w_S(t)^2)
   d per record = noise-corrected D5-95 of the horizontals from t_S / (D5-95 of the window per
   unit d); regressed as d = u 10^(0.5 (M - M_ref)) + v R + w (non-negative least squares: the
   Boore source duration 1/fc ~ M0^(1/3) plus a path term). S-P time regressed on R (robust,
   soft-L1). alpha_c (P/S) and noise_c (pre-event/S) are pooled medians of window rms ratios.
4. Variability: each synthetic record draws ONE training record of its station and inherits its
   spectral residual vector (all bands and components, leverage-corrected r / sqrt(1 - h)), its
   ln-duration and S-P residuals and its P time: the correlations across bands, components and
   duration are those of the data (a residual bootstrap; no Gaussian assumption).
5. Calibration (`calibration_rounds`): the training scenarios are re-synthesised with their own
   residuals, measured by exactly the same code, and the median duration ratio and the mean
   ln band-amplitude difference (per band and component, pooled) are folded back into the
   duration law and the station terms. This removes the bias of ln-of-noisy-spectrum estimates
   and of the envelope mixture, whatever the data.

Synthesis (Boore 2003, vectorised over records): Gaussian noise x envelope -> rFFT -> scaled
to unit mean-square spectrum -> times the target amplitude (bands interpolated linearly in ln f,
slope +2 in ln-ln below the first band (omega-squared), flat above the last) -> irFFT. P and S
share each component's spectral shape (the whole-record FAS), which is exact for the corpus
family and a simplification on real records (real P is richer in high frequencies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special
import torch

from timesnet_gen.atomic import staged_file
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
    envelope_eps: float = 0.2  # Saragoni-Hart shape (Boore 2003)
    envelope_eta: float = 0.05
    envelope_tn: float = 2.0  # window length / duration
    p_window_fraction: float = 0.5  # P duration / (S - P time); a fixed shape choice, not fitted
    calibration_rounds: int = 1
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


def component_envelopes(t: np.ndarray, t_p: np.ndarray, t_s: np.ndarray, d: np.ndarray,
                        alpha: np.ndarray, noise: np.ndarray, p: StochasticParams) -> np.ndarray:
    """env_c(t) = sqrt(noise_c^2 + alpha_c^2 w_P^2 + w_S^2) -> (n, 3, T)."""
    shape = (p.envelope_eps, p.envelope_eta, p.envelope_tn)
    w_s = saragoni_hart(t, t_s, d, *shape)
    w_p = saragoni_hart(t, t_p, np.maximum(p.p_window_fraction * (t_s - t_p), 0.05), *shape)
    return np.sqrt(noise[None, :, None] ** 2 + (alpha[None, :, None] * w_p[:, None]) ** 2
                   + w_s[:, None] ** 2)


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
    above = ratio > p.trigger_ratio
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
    centres = np.array([np.exp(np.log(freqs[band == b]).mean()) for b in range(band.max() + 1)])
    return band, centres


def band_amplitudes(waveforms: np.ndarray, band: np.ndarray, fs: float) -> np.ndarray:
    """ln rms Fourier amplitude (ln cm/s) per band -> (n, 3, B)."""
    n_bands = band.max() + 1
    onehot = (band[:, None] == np.arange(n_bands)[None, :]).astype(np.float64)
    onehot /= onehot.sum(axis=0, keepdims=True)
    out = []
    for i in range(0, len(waveforms), CHUNK):
        _, amp = fourier_amplitude(np.asarray(waveforms[i:i + CHUNK], np.float64), fs)
        out.append(0.5 * np.log(np.maximum(amp**2 @ onehot, 1e-300)))
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
        ts = t[after]
        out[i] = np.interp(0.95, frac, ts) - np.interp(0.05, frac, ts)
    return out


def window_ratios(waveforms: np.ndarray, arrivals: np.ndarray, d: np.ndarray, fs: float,
                  p: StochasticParams) -> tuple[np.ndarray, np.ndarray]:
    """Per record and component: P amplitude alpha and noise floor relative to the S window's
    model envelope (both (n, 3)), from the mean square in the pre-P, P and S windows."""
    t = np.arange(waveforms.shape[-1]) / fs
    t_p, t_s = arrivals[:, 0], arrivals[:, 1]
    x2 = np.asarray(waveforms, np.float64) ** 2
    ms_pre = window_ms(x2, t, np.zeros_like(t_p), t_p - 0.2)
    ms_p = window_ms(x2, t, t_p, t_s)
    ms_s = window_ms(x2, t, t_s, t_s + p.envelope_tn * d)
    shape = (p.envelope_eps, p.envelope_eta, p.envelope_tn)
    w_s2 = saragoni_hart(t, t_s, d, *shape)[:, None] ** 2
    w_p2 = saragoni_hart(t, t_p, np.maximum(p.p_window_fraction * (t_s - t_p), 0.05),
                         *shape)[:, None] ** 2
    g2 = ms_s / window_ms(w_s2, t, t_s, t_s + p.envelope_tn * d)
    noise2 = ms_pre / g2
    alpha2 = np.maximum(ms_p - np.nan_to_num(ms_pre), 0.0) / (g2 * window_ms(w_p2, t, t_p, t_s))
    return np.sqrt(alpha2), np.sqrt(noise2)


# ---------------------------------------------------------------------------------------------
# regressions


def amplitude_features(magnitude: np.ndarray, distance_km: np.ndarray, degree: int,
                       m_ref: float, r_ref: float) -> np.ndarray:
    """(n, degree + 2): (M - M_ref)^k for k = 1..degree, ln(R / R_ref), (R - R_ref) / R_ref."""
    dm = np.asarray(magnitude, np.float64) - m_ref
    r = np.asarray(distance_km, np.float64)
    cols = [dm**k for k in range(1, degree + 1)] + [np.log(r / r_ref), (r - r_ref) / r_ref]
    return np.stack(cols, axis=1)


def ridge_fit(station_index: np.ndarray, n_stations: int, features: np.ndarray,
              y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Station terms + pooled slopes by ridge least squares (ridge on slopes only).

    features (n, K) already standardised, y (n, Q). Returns station terms (S, Q), slopes (K, Q)
    and the leverages h_ii (n,) of the fit.
    """
    x = np.concatenate([np.eye(n_stations)[station_index], features], axis=1)
    penalty = np.r_[np.zeros(n_stations), np.full(features.shape[1], ridge * len(x))]
    gram_inv = np.linalg.inv(x.T @ x + np.diag(penalty))
    beta = gram_inv @ x.T @ y
    leverage = np.einsum("ij,jk,ik->i", x, gram_inv, x)
    return beta[:n_stations], beta[n_stations:], leverage


def duration_basis(magnitude: np.ndarray, distance_km: np.ndarray, m_ref: float) -> np.ndarray:
    """(n, 3): source term 10^(0.5 (M - M_ref)) (1/fc ~ M0^(1/3)), distance (km), constant."""
    m = np.asarray(magnitude, np.float64)
    return np.stack([10.0 ** (0.5 * (m - m_ref)), np.asarray(distance_km, np.float64),
                     np.ones_like(m)], axis=1)


def fit_duration(magnitude, distance_km, d_obs, m_ref) -> np.ndarray:
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


def interpolation_matrix(centres: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ln A on FFT bins = ln A on bands @ W + offset: linear in ln f between centres, slope +2
    below the first (omega-squared), flat above the last; DC gets -inf (zeroed)."""
    f = np.maximum(freqs, 1e-12)
    lf, lc = np.log(f), np.log(centres)
    w = np.zeros((len(centres), len(freqs)))
    pos = np.clip(np.searchsorted(lc, lf) - 1, 0, len(lc) - 2)
    frac = np.clip((lf - lc[pos]) / (lc[pos + 1] - lc[pos]), 0.0, 1.0)
    cols = np.arange(len(freqs))
    w[pos, cols] = 1.0 - frac
    w[pos + 1, cols] += frac
    offset = np.where(f < centres[0], 2.0 * (lf - lc[0]), 0.0)
    offset[freqs <= 0] = -np.inf
    return w, offset


def shaped_noise(noise: np.ndarray, env: np.ndarray, ln_amp: np.ndarray, fs: float) -> np.ndarray:
    """Boore (2003): noise (n, 3, T) x envelope -> rFFT scaled to unit mean-square spectrum ->
    times the target amplitude exp(ln_amp) (n, 3, F) in cm/s -> irFFT (cm/s^2)."""
    spec = np.fft.rfft(noise * env, axis=-1)
    rms = np.sqrt(np.mean(np.abs(spec) ** 2, axis=-1, keepdims=True))
    spec = spec / np.maximum(rms, 1e-300) * np.exp(ln_amp) * fs
    acc = np.fft.irfft(spec, n=noise.shape[-1], axis=-1)
    return acc - acc.mean(axis=-1, keepdims=True)


@dataclass
class StochasticSampler:
    """Fitted model: per-station spectra and envelopes from M and R, plus residual pools."""

    kind: ClassVar[str] = "stochastic"

    stations: list[str]
    params: StochasticParams
    band_centres: np.ndarray  # (B,) Hz
    station_terms: np.ndarray  # (S, 3, B) ln cm/s
    slopes: np.ndarray  # (K, 3, B) per standardised feature
    feature_mean: np.ndarray  # (K,)
    feature_std: np.ndarray  # (K,)
    duration_coef: np.ndarray  # (3,) s: d = basis @ coef
    sp_coef: np.ndarray  # (2,): S-P = k R + c (s, km)
    alpha: np.ndarray  # (3,) P / S amplitude per component
    noise: np.ndarray  # (3,) pre-event noise / S amplitude per component
    pool_station: np.ndarray  # (N,) int: station of each training record kept for resampling
    pool_scenario: np.ndarray  # (N, 2) magnitude, distance_km
    pool_residual: np.ndarray  # (N, 3, B) ln cm/s
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
        """(n, 3, n_samples) float32 cm/s^2 (E, N, U) at the given scenarios; deterministic:
        record i depends only on (seed, i, its scenario), not on the batch size."""
        row = self._station_row(station)
        m, r = check_scenarios(magnitude, distance_km)
        rng_draws = [np.random.default_rng([int(seed), i]) for i in range(len(m))]
        pool = np.flatnonzero(self.pool_station == row)
        draws = np.array([pool[g.integers(len(pool))] for g in rng_draws], dtype=int)
        noise = [g.standard_normal((3, self.n_samples)) for g in rng_draws]
        return self.synthesize(np.full(len(m), row), m, r, draws, noise)

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
        known = {f.name for f in fields(StochasticParams)}
        unknown = sorted(set(state["params"]) - known)
        if unknown:
            raise StochasticError(f"stochastic checkpoint params: unknown key(s) {unknown}")
        arrays = {k: np.asarray(state[k].numpy() if torch.is_tensor(state[k]) else state[k])
                  for k in ARRAY_FIELDS}
        return cls(stations=[str(s) for s in state["stations"]],
                   params=StochasticParams(**state["params"]), fs=float(state["fs"]),
                   n_samples=int(state["n_samples"]), **arrays)

    # -- model -----------------------------------------------------------------------------

    def _station_row(self, station: str) -> int:
        if station not in self.stations:
            raise StochasticError(f"station {station!r} is not in this stochastic sampler "
                                  f"(stations: {', '.join(self.stations)})")
        return self.stations.index(station)

    def median_ln_amplitude(self, rows: np.ndarray, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Median ln band amplitude (ln cm/s) at scenarios -> (n, 3, B)."""
        p = self.params
        z = (amplitude_features(m, r, p.magnitude_degree, p.magnitude_ref, p.distance_ref_km)
             - self.feature_mean) / self.feature_std
        return self.station_terms[rows] + np.einsum("nk,kcb->ncb", z, self.slopes)

    def median_duration(self, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Median S-window duration parameter d (s) -> (n,)."""
        d = duration_basis(m, r, self.params.magnitude_ref) @ self.duration_coef
        return np.maximum(d, 0.1)

    def synthesize(self, rows: np.ndarray, m: np.ndarray, r: np.ndarray, draws: np.ndarray,
                   noise: list[np.ndarray]) -> np.ndarray:
        """Records at scenarios, each with the residuals of training record draws[i] and the
        white noise noise[i] (3, T) -> (n, 3, T) float32 cm/s^2."""
        t = np.arange(self.n_samples) / self.fs
        weights, offset = interpolation_matrix(self.band_centres,
                                               np.fft.rfftfreq(self.n_samples, 1.0 / self.fs))
        out = np.empty((len(m), 3, self.n_samples), np.float32)
        for lo in range(0, len(m), CHUNK):
            sl = slice(lo, lo + CHUNK)
            ln_band = self.median_ln_amplitude(rows[sl], m[sl], r[sl]) + self.pool_residual[
                draws[sl]]
            ln_amp = ln_band @ weights + offset
            t_p = self.pool_t_p[draws[sl]]
            t_s = t_p + np.maximum(self.sp_coef[0] * r[sl] + self.sp_coef[1]
                                   + self.pool_sp[draws[sl]], 0.1)
            d = self.median_duration(m[sl], r[sl]) * np.exp(self.pool_ln_duration[draws[sl]])
            env = component_envelopes(t, t_p, t_s, d, self.alpha, self.noise, self.params)
            out[sl] = shaped_noise(np.stack(noise[sl]), env, ln_amp, self.fs)
        return out


ARRAY_FIELDS = ("band_centres", "station_terms", "slopes", "feature_mean", "feature_std",
                "duration_coef", "sp_coef", "alpha", "noise", "pool_station", "pool_scenario",
                "pool_residual", "pool_ln_duration", "pool_sp", "pool_t_p")


# ---------------------------------------------------------------------------------------------
# input checks


def check_scenarios(magnitude, distance_km) -> tuple[np.ndarray, np.ndarray]:
    """1-D float arrays of equal length, finite, distance > 0 -> (m, r)."""
    m = np.atleast_1d(np.asarray(magnitude, dtype=np.float64))
    r = np.atleast_1d(np.asarray(distance_km, dtype=np.float64))
    if m.ndim != 1 or r.ndim != 1 or len(m) != len(r):
        raise StochasticError(f"magnitude and distance_km must be 1-D of equal length, got "
                              f"shapes {m.shape} and {r.shape}")
    for name, v in (("magnitude", m), ("distance_km", r)):
        if not np.isfinite(v).all():
            raise StochasticError(f"{name}: value {v[~np.isfinite(v)][0]} at index "
                                  f"{int(np.flatnonzero(~np.isfinite(v))[0])} is not finite")
    if (r <= 0).any():
        raise StochasticError(f"distance_km must be > 0, got {r[r <= 0][0]} at index "
                              f"{int(np.flatnonzero(r <= 0)[0])}")
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
        raise StochasticError(f"record {records['station'].iloc[int(np.argmin(finite))]}"
                              f"[{int(np.argmin(finite))}]: waveform contains NaN or inf")
    counts = records["station"].astype(str).value_counts()
    if not stations:
        raise StochasticError("no stations given to fit")
    for s in stations:
        if counts.get(s, 0) < p.min_records:
            raise StochasticError(f"station {s!r} has {counts.get(s, 0)} record(s); the "
                                  f"stochastic fit needs >= {p.min_records}")
    return records["station"].astype(str).map(counts).to_numpy() >= p.min_records


# ---------------------------------------------------------------------------------------------
# fit


@dataclass
class Measurements:
    """What the fit reads from records (and the calibration from synthetic ones)."""

    arrivals: np.ndarray  # (n, 2) s
    d_obs: np.ndarray  # (n,) s, S-window duration parameter
    ln_band: np.ndarray  # (n, 3, B)


def measure(waveforms: np.ndarray, band: np.ndarray, fs: float, p: StochasticParams,
            arrivals: np.ndarray | None = None) -> Measurements:
    arrivals = pick_arrivals(waveforms, fs, p) if arrivals is None else arrivals
    unit = window_d5_95(p.envelope_eps, p.envelope_eta, p.envelope_tn)
    return Measurements(arrivals, s_duration(waveforms, arrivals, fs) / unit,
                        band_amplitudes(waveforms, band, fs))


def fit_stochastic(waveforms: np.ndarray, records: pd.DataFrame, stations: list[str],
                   params: StochasticParams | None = None,
                   fs: float = SAMPLING_RATE) -> StochasticSampler:
    """Fit on records (n, 3, T) cm/s^2 with columns station, magnitude, distance_km.

    Slopes are pooled over every station of `records` with >= min_records records; the sampler
    generates `stations` (each must have >= min_records records).
    """
    p = params or StochasticParams()
    waveforms = np.asarray(waveforms)
    stations = [str(s) for s in stations]
    keep = check_training(waveforms, records, stations, p)
    waveforms, records = waveforms[keep], records.loc[keep].reset_index(drop=True)
    fit_stations = sorted(set(records["station"].astype(str)) - set(stations))
    order = stations + fit_stations
    s_idx = records["station"].astype(str).map({s: i for i, s in enumerate(order)}).to_numpy()
    m, r = records["magnitude"].to_numpy(float), records["distance_km"].to_numpy(float)
    band, centres = make_bands(np.fft.rfftfreq(waveforms.shape[-1], 1.0 / fs), p)
    obs = measure(waveforms, band, fs, p)

    feats = amplitude_features(m, r, p.magnitude_degree, p.magnitude_ref, p.distance_ref_km)
    mean, std = feats.mean(axis=0), np.maximum(feats.std(axis=0), 1e-9)
    y = obs.ln_band.reshape(len(m), -1)
    terms, slopes, lev = ridge_fit(s_idx, len(order), (feats - mean) / std, y, p.ridge)
    resid = (y - terms[s_idx] - ((feats - mean) / std) @ slopes) / np.sqrt(
        np.maximum(1.0 - lev, 1e-3))[:, None]
    shape3 = (3, len(centres))
    d_coef = fit_duration(m, r, obs.d_obs, p.magnitude_ref)
    d_model = np.maximum(duration_basis(m, r, p.magnitude_ref) @ d_coef, 0.1)
    ln_d = np.where(np.isfinite(obs.d_obs) & (obs.d_obs > 0),
                    np.log(np.maximum(obs.d_obs, 1e-3) / d_model), 0.0)
    sp = obs.arrivals[:, 1] - obs.arrivals[:, 0]
    sp_coef = fit_s_minus_p(r, sp)
    alpha, noise = window_ratios(waveforms, obs.arrivals, np.where(
        np.isfinite(obs.d_obs), obs.d_obs, d_model), fs, p)
    pool = s_idx < len(stations)
    sampler = StochasticSampler(
        stations=stations, params=p, band_centres=centres,
        station_terms=terms[: len(stations)].reshape(len(stations), *shape3),
        slopes=slopes.reshape(-1, *shape3), feature_mean=mean, feature_std=std,
        duration_coef=d_coef, sp_coef=sp_coef,
        alpha=np.nan_to_num(np.nanmedian(alpha, axis=0)),
        noise=np.nan_to_num(np.nanmedian(noise, axis=0)),
        pool_station=s_idx[pool], pool_scenario=np.stack([m, r], axis=1)[pool],
        pool_residual=resid[pool].reshape(-1, *shape3), pool_ln_duration=ln_d[pool],
        pool_sp=(sp - sp_coef[0] * r - sp_coef[1])[pool], pool_t_p=obs.arrivals[pool, 0],
        fs=fs, n_samples=waveforms.shape[-1])
    for round_ in range(p.calibration_rounds):
        calibrate(sampler, obs, pool, band, round_)
    return sampler


def calibrate(sampler: StochasticSampler, obs: Measurements, pool: np.ndarray,
              band: np.ndarray, round_: int) -> None:
    """Re-synthesise the pooled training records with their own residuals, measure them like
    the data, fold the median duration ratio and the mean ln-amplitude bias back (in place)."""
    p = sampler.params
    n = len(sampler.pool_station)
    rng = np.random.default_rng([p.seed, round_])
    noise = [rng.standard_normal((3, sampler.n_samples)) for _ in range(n)]
    m, r = sampler.pool_scenario[:, 0], sampler.pool_scenario[:, 1]
    synth = sampler.synthesize(sampler.pool_station, m, r, np.arange(n), noise)
    got = measure(synth, band, sampler.fs, p)
    ratio = obs.d_obs[pool] / got.d_obs
    ok = np.isfinite(ratio) & (ratio > 0)
    if ok.any():
        sampler.duration_coef = sampler.duration_coef * float(np.median(ratio[ok]))
    sampler.station_terms = sampler.station_terms + (obs.ln_band[pool] - got.ln_band).mean(axis=0)


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
    table = index.merge(meta[["record_id", *cols]], on="record_id", how="left")
    rows = np.flatnonzero((table["split"] == split).to_numpy())
    waveforms = np.load(prepared / "waveforms.npy", mmap_mode="r")
    return np.asarray(waveforms[rows]), table.iloc[rows].reset_index(drop=True)
