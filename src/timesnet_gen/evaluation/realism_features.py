"""Per-record features of the realism metrics, computed for many records at once.

`record_features(waveforms (n, 3, T) cm/s^2 E, N, U, fs, params)` -> `Features`: RotD50 PSA,
Konno-Ohmachi smoothed ln FAS per component (the grid of `EvaluateParams.fas_*`), PGA, PGV,
Arias intensity, D5-95, the horizontal envelope, burst count, P / S picks, log-spectrogram
features of the two-sample classifier and, when the scenario is given, ln residuals against
the GMMs (realism_gmm.py). Records with NaN samples or a flat channel are left out with the
reason (their rows are NaN); horizontal scalars are the geometric mean of E and N, as in the
evaluation's record table.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from timesnet_gen.config import REALISM_PERIODS_S as PERIODS_S  # noqa: F401
from timesnet_gen.config import EvaluateParams, RealismParams
from timesnet_gen.evaluation.intensity import (
    arias_intensity,
    fourier_amplitude,
    pga,
    pgv,
    significant_duration,
)
from timesnet_gen.evaluation.realism_gmm import gmm_columns, gmm_residuals
from timesnet_gen.evaluation.realism_phases import count_bursts, horizontal_envelope, pick_p_s
from timesnet_gen.evaluation.realism_rotd import rotd50
from timesnet_gen.evaluation.smoothing import get_operator
from timesnet_gen.evaluation.spectra import RecordError, check_shape
from timesnet_gen.records import COMPONENTS

@dataclass
class Features:
    """Per-record realism features; rows aligned with the input records.

    psa: RotD50 PSA (cm/s^2) at `periods`; ln_fas: ln smoothed FAS (cm/s) per component at
    `fas_freqs`; pga (cm/s^2), pgv (cm/s), arias (m/s), d5_95 (s): geometric mean of E, N;
    envelope (cm/s^2) at env_times (s); n_bursts; p_pick_s, s_pick_s, sp_time_s (NaN when not
    found); spec: classifier features; gmm: ln residuals (columns gmm_columns), NaN without a
    scenario; magnitude, distance_km: the scenario (NaN unknown); record_id: identity (draws
    with replacement repeat it); valid / reason: records left out and why.
    """

    periods: np.ndarray
    fas_freqs: np.ndarray
    env_times: np.ndarray
    psa: np.ndarray
    ln_fas: np.ndarray
    pga: np.ndarray
    pgv: np.ndarray
    arias: np.ndarray
    d5_95: np.ndarray
    envelope: np.ndarray
    n_bursts: np.ndarray
    p_pick_s: np.ndarray
    s_pick_s: np.ndarray
    sp_time_s: np.ndarray
    spec: np.ndarray
    gmm: np.ndarray
    gmm_columns: tuple[str, ...]
    magnitude: np.ndarray
    distance_km: np.ndarray
    record_id: np.ndarray
    valid: np.ndarray
    reason: list[str]

    GRID = ("periods", "fas_freqs", "env_times", "gmm_columns")  # shared, not per record

    def __len__(self) -> int:
        return len(self.valid)

    def take(self, index: np.ndarray) -> Features:
        """The records at `index` (bool mask or integer indices, repeats allowed)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        parts = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.GRID:
                parts[f.name] = value
            elif f.name == "reason":
                parts[f.name] = [value[i] for i in index]
            else:
                parts[f.name] = value[index]
        return Features(**parts)

    def valid_only(self) -> Features:
        return self.take(self.valid)

    @property
    def n_invalid(self) -> int:
        return int((~self.valid).sum())


def concat_features(parts: list[Features]) -> Features:
    """Records of several Features (same grids) one after the other."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    out = {}
    for f in fields(first):
        values = [getattr(p, f.name) for p in parts]
        if f.name in Features.GRID:
            out[f.name] = values[0]
        elif f.name == "reason":
            out[f.name] = [r for v in values for r in v]
        else:
            out[f.name] = np.concatenate(values)
    return Features(**out)


def record_problems(records: np.ndarray) -> list[str]:
    """Per record: '' when usable, else why it is left out (NaN samples, flat channel)."""
    finite = np.isfinite(records).all(axis=-1)  # (n, 3)
    safe = np.where(np.isfinite(records), records, 0.0)
    flat = np.ptp(safe, axis=-1) == 0  # (n, 3)
    out = []
    for ok, fl in zip(finite, flat):
        if not ok.all():
            bad = ", ".join(c for c, good in zip(COMPONENTS, ok) if not good)
            out.append(f"NaN or inf samples on {bad}")
        elif fl.any():
            out.append(f"flat channel {', '.join(c for c, f in zip(COMPONENTS, fl) if f)}")
        else:
            out.append("")
    return out


def band_matrix(n_window: int, fs: float, fmin: float, fmax: float, n_bands: int) -> np.ndarray:
    """(n_bands, n_window // 2 + 1) averaging weights of rFFT bins in log-spaced bands."""
    freqs = np.fft.rfftfreq(n_window, 1.0 / fs)
    edges = np.geomspace(fmin, fmax, n_bands + 1)
    m = ((freqs[None, :] >= edges[:-1, None]) & (freqs[None, :] < edges[1:, None])).astype(float)
    if (m.sum(axis=1) == 0).any():
        raise ValueError(f"spec bands {fmin}-{fmax} Hz x {n_bands}: a band holds no FFT bin "
                         f"of a {n_window / fs:g} s window")
    return m / m.sum(axis=1, keepdims=True)


def spectrogram_features(records: np.ndarray, fs: float, params: RealismParams) -> np.ndarray:
    """ln mean power per (component, time window, band) -> (n, 3 * windows * bands)."""
    win = int(round(params.spec_window_s * fs))
    n_win = records.shape[-1] // win
    if n_win < 1:
        raise ValueError(f"spec_window_s = {params.spec_window_s} s is longer than the record")
    x = records[..., : n_win * win].reshape(records.shape[0], 3, n_win, win)
    x = x - x.mean(axis=-1, keepdims=True)
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2 / win  # (n, 3, W, F)
    bands = power @ band_matrix(win, fs, params.spec_fmin, params.spec_fmax,
                                params.spec_n_bands).T
    return np.log(bands + 1e-12).reshape(len(records), -1)


_FAS_MATRICES: dict[tuple, np.ndarray] = {}


def ko_fas(records: np.ndarray, fs: float, evaluate: EvaluateParams) -> tuple[np.ndarray, ...]:
    """intensity.smoothed_fas (Konno-Ohmachi b = 40 on the fas_* grid) as one matrix product.

    The same operator (smoothing.get_operator), applied as its dense matrix: the Konno-Ohmachi
    tails keep every FFT bin in every block, so one GEMM is ~50x faster than the block loop.
    """
    freqs, amp = fourier_amplitude(records, fs)
    centers = np.geomspace(evaluate.fas_fmin, evaluate.fas_fmax, evaluate.fas_n_points)
    key = (len(freqs), float(fs), evaluate.fas_fmin, evaluate.fas_fmax, evaluate.fas_n_points,
           evaluate.smoothing_tol)
    if key not in _FAS_MATRICES:
        _FAS_MATRICES[key] = np.ascontiguousarray(get_operator(
            freqs, centers, "konno-ohmachi", 40.0, True, evaluate.smoothing_tol).dense().T)
    # A 2-D GEMM with a contiguous right factor (a 3-D @ transposed view misses BLAS).
    flat = amp.reshape(-1, amp.shape[-1]) @ _FAS_MATRICES[key]
    return centers, flat.reshape(amp.shape[:-1] + (len(centers),))


def _geo(x: np.ndarray) -> np.ndarray:
    return np.sqrt(x[:, 0] * x[:, 1])


def _valid_features(x: np.ndarray, fs: float, params: RealismParams,
                    evaluate: EvaluateParams) -> dict[str, np.ndarray]:
    """Every per-record array of records that passed record_problems, one chunk."""
    lo, hi = evaluate.duration_range
    env_times, env = horizontal_envelope(x, fs, params.envelope_window_s, params.envelope_step_s)
    freqs, fas = ko_fas(x, fs, evaluate)
    p, s = pick_p_s(x, fs, env_times, env, params.s_min_delay_s, params.pick_snr,
                    params.pick_window_s)
    return {
        "psa": rotd50(x[:, :2], fs, params.periods, params.damping,
                      params.rotd_samples_per_cycle, params.rotd_pad_s, params.chunk),
        "ln_fas": np.log(np.maximum(fas, 1e-30)),
        "pga": _geo(pga(x)),
        "pgv": _geo(pgv(x, fs)),
        "arias": _geo(arias_intensity(x, fs)),
        "d5_95": _geo(significant_duration(x, fs, lo, hi)),
        "envelope": env,
        "n_bursts": count_bursts(env, params.envelope_step_s, params.burst_on, params.burst_off,
                                 params.burst_min_gap_s),
        "p_pick_s": p,
        "s_pick_s": s,
        "sp_time_s": s - p,
        "spec": spectrogram_features(x, fs, params),
        "_grids": (freqs, env_times),
    }


def record_features(
    waveforms: np.ndarray,
    fs: float,
    params: RealismParams | None = None,
    evaluate: EvaluateParams | None = None,
    magnitude: np.ndarray | None = None,
    distance_km: np.ndarray | None = None,
    vs30: float | None = None,
    record_id: np.ndarray | None = None,
) -> Features:
    """Realism features of records (n, 3, T) in cm/s^2 (E, N, U) sampled at fs Hz.

    magnitude, distance_km (n,) and vs30 (m/s) give the scenario for the GMM residuals
    (realism_gmm.gmm_residuals; distance: hypocentral, see there); without them gmm is NaN.
    Raises RecordError for a wrong shape; bad records are left out (valid False, reason).
    """
    params = params or RealismParams()
    evaluate = evaluate or EvaluateParams()
    x_all = check_shape(waveforms)
    n = len(x_all)
    reason = record_problems(x_all)
    valid = np.array([r == "" for r in reason], dtype=bool)
    ok = np.flatnonzero(valid)
    chunks = [_valid_features(x_all[ok[i:i + params.chunk]], fs, params, evaluate)
              for i in range(0, len(ok), params.chunk)]
    if chunks:
        fas_freqs, env_times = chunks[0].pop("_grids")
        for c in chunks[1:]:
            c.pop("_grids")
    else:
        fas_freqs = np.geomspace(evaluate.fas_fmin, evaluate.fas_fmax, evaluate.fas_n_points)
        env_times, _ = horizontal_envelope(np.zeros((1, 3, x_all.shape[-1])), fs,
                                           params.envelope_window_s, params.envelope_step_s)
    shapes = {"psa": (len(params.periods),), "ln_fas": (3, len(fas_freqs)),
              "envelope": (len(env_times),),
              "spec": (3 * (x_all.shape[-1] // int(round(params.spec_window_s * fs)))
                       * params.spec_n_bands,)}
    arrays = {}
    for key in ("psa", "ln_fas", "pga", "pgv", "arias", "d5_95", "envelope", "n_bursts",
                "p_pick_s", "s_pick_s", "sp_time_s", "spec"):
        full = np.full((n,) + shapes.get(key, ()), np.nan)
        if chunks:
            full[ok] = np.concatenate([c[key] for c in chunks])
        arrays[key] = full
    arrays["n_bursts"] = np.where(valid, np.nan_to_num(arrays["n_bursts"]), -1).astype(np.int64)
    mag = _per_record(magnitude, n, "magnitude")
    dist = _per_record(distance_km, n, "distance_km")
    columns = gmm_columns(params.periods)
    feats = Features(
        periods=np.asarray(params.periods, dtype=np.float64), fas_freqs=fas_freqs,
        env_times=env_times, **arrays, gmm=np.full((n, len(columns)), np.nan),
        gmm_columns=columns, magnitude=mag, distance_km=dist,
        record_id=np.arange(n) if record_id is None else np.asarray(record_id),
        valid=valid, reason=reason)
    if vs30 is not None and np.isfinite(mag).any():
        table = gmm_residuals(feats, mag, dist, vs30, params.gmm_mechanism)
        feats.gmm = table[list(columns)].to_numpy(np.float64)
    return feats


def _per_record(values: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise RecordError(f"{name} must have one value per record ({n}), got shape "
                          f"{values.shape}")
    return values
