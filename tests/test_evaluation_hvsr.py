"""HVSR protocol: smoothing kernels against references, known transfer functions, bad input."""

from __future__ import annotations


import numpy as np
import pytest

from timesnet_gen.config import EvaluateParams
from timesnet_gen.evaluation import (
    RecordError,
    f0,
    fft_freqs,
    get_operator,
    hvsr,
    hvsr_details,
    median_hvsr,
    smooth,
)
from timesnet_gen.evaluation.spectra import combine_horizontal, detrend

FS = 100.0


def _spectra(freqs: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Positive, rough spectra with an acceleration-like shape (rise, plateau, fall-off)."""
    rng = np.random.default_rng(seed)
    shape = (freqs / (1.0 + freqs)) ** 2 * np.exp(-freqs / 25.0)
    return np.abs(rng.standard_normal((n, len(freqs)))) * shape + 1e-3


def _paper_reference(spectrum: np.ndarray, freqs: np.ndarray, centers: np.ndarray, b: float):
    """Direct per-bin loop of the authors' kernel (f = 0 replaced by 1e-12 as they do)."""
    f = np.where(freqs == 0.0, 1e-12, freqs)
    out = np.empty(len(centers))
    for i, fc in enumerate(centers):
        w = np.exp(-b * np.log(f / fc) ** 2)
        out[i] = np.sum(w * spectrum) / np.sum(w)
    return out


def test_paper_kernel_matches_direct_loop_on_paper_grid():
    freqs = fft_freqs(18000, FS)
    centers = freqs[(freqs >= 1.0) & (freqs <= 20.0)]
    spectra = _spectra(freqs, 2)
    fast = smooth(spectra, freqs, centers, kind="paper", bandwidth=40.0)
    some = np.r_[0:len(centers):37, len(centers) - 1]  # every 37th centre keeps the loop short
    for k in range(2):
        ref = _paper_reference(spectra[k], freqs, centers[some], 40.0)
        assert np.max(np.abs(fast[k, some] - ref) / np.abs(ref)) < 1e-9


def test_paper_kernel_on_log_grid_and_other_bandwidth():
    freqs = fft_freqs(4000, FS)
    centers = np.geomspace(0.5, 30.0, 200)
    spectra = _spectra(freqs, 1, seed=3)
    fast = smooth(spectra, freqs, centers, kind="paper", bandwidth=15.0)
    ref = _paper_reference(spectra[0], freqs, centers, 15.0)
    assert np.max(np.abs(fast[0] - ref) / ref) < 1e-9


def test_konno_ohmachi_matches_obspy():
    obspy_ko = pytest.importorskip("obspy.signal.konnoohmachismoothing")
    freqs = fft_freqs(2000, FS)  # includes f = 0, like a plain rFFT grid
    spectra = _spectra(freqs, 3, seed=1)
    ref = obspy_ko.konno_ohmachi_smoothing(spectra, freqs, bandwidth=40, normalize=False)
    ours = smooth(spectra, freqs, kind="konno-ohmachi", bandwidth=40.0, normalize=False)
    assert np.max(np.abs(ours - ref) / np.abs(ref)) < 1e-6


def test_operator_is_cached_and_dense_matches_kernel():
    freqs = fft_freqs(18000, FS)  # the paper grid (operator cached by the test above)
    centers = freqs[(freqs >= 1) & (freqs <= 20)]
    a = get_operator(freqs, centers, "paper", 40.0)
    assert get_operator(freqs, centers, "paper", 40.0) is a
    dense = a.dense()
    assert np.allclose(dense.sum(axis=1), 1.0, atol=1e-12)  # normalised to sum 1
    assert a.cost < dense.size / 10  # compressed, not a dense matrix


def _record_with_resonance(f_true: float, n: int, seed: int, damping: float = 0.05):
    """E, N = vertical noise times |T(f)| of a damped oscillator peaking at f_true (Hz)."""
    rng = np.random.default_rng(seed)
    t_len = 6000
    f = np.fft.rfftfreq(t_len, 1 / FS)
    r = f / f_true
    transfer = 1.0 / np.sqrt((1 - r**2) ** 2 + (2 * damping * r) ** 2)
    v = rng.standard_normal((n, t_len))
    out = np.empty((n, 3, t_len))
    out[:, 2] = v
    for c in range(2):
        out[:, c] = np.fft.irfft(np.fft.rfft(v) * transfer, n=t_len)
    return out


@pytest.mark.parametrize("f_true", [1.8, 5.0, 11.7])
def test_hvsr_peaks_at_known_transfer_function(f_true):
    freqs, curves = hvsr(_record_with_resonance(f_true, 4, seed=int(f_true * 10)), FS)
    assert freqs[0] == 1.0 and freqs[-1] == 20.0 and len(freqs) == 3421
    # H / V equals |T| smoothed by the same kernel, up to the noise of 4 records; smoothing in
    # ln f moves the peak of an asymmetric resonance slightly down (-3 % at 11.7 Hz).
    grid = fft_freqs(18000, FS)
    r = grid / f_true
    transfer = 1.0 / np.sqrt((1 - r**2) ** 2 + (2 * 0.05 * r) ** 2)
    expected = smooth(transfer, grid, freqs)
    peaks = f0(freqs, curves)
    assert np.all(np.abs(peaks / freqs[np.argmax(expected)] - 1) < 0.01), peaks
    assert np.all(np.abs(peaks / f_true - 1) < 0.04), peaks
    near = (freqs > 0.6 * f_true) & (freqs < 1.6 * f_true)  # leakage dominates far above
    assert np.allclose(np.median(curves, axis=0)[near], expected[near], rtol=0.2)
    assert np.isclose(np.median(curves.max(axis=1)), expected.max(), rtol=0.15)


def test_filtfilt_and_spectral_highpass_agree():
    records = _record_with_resonance(4.0, 2, seed=5)
    p_spec = EvaluateParams(highpass_method="spectral")
    p_filt = EvaluateParams(highpass_method="filtfilt")
    _, a = hvsr(records, FS, p_spec)
    _, b = hvsr(records, FS, p_filt)
    assert np.max(np.abs(a / b - 1)) < 1e-6


def test_options_change_the_result_as_documented():
    records = _record_with_resonance(4.0, 1, seed=6)
    base_f, base = hvsr(records, FS)
    log_f, log_c = hvsr(records, FS, EvaluateParams(grid="log", n_grid_points=200))
    assert len(log_f) == 200 and np.isclose(log_f[0], 1.0) and np.isclose(log_f[-1], 20.0)
    # The log-grid curve samples the same smoothed ratio at other centres.
    assert np.allclose(np.interp(log_f, base_f, base[0]), log_c[0], rtol=1e-3)
    f_long, _ = hvsr(records, FS, EvaluateParams(nfft=36000, fmax=3.0))
    assert np.isclose(f_long[1] - f_long[0], 1 / 360) and f_long[-1] == 3.0
    _, tapered = hvsr(records, FS, EvaluateParams(taper=0.1))
    assert not np.allclose(tapered, base) and np.allclose(tapered, base, rtol=0.2)
    with pytest.raises(RecordError, match="nfft"):
        hvsr(records, FS, EvaluateParams(nfft=1000))


def test_horizontal_combinations():
    e, n = np.array([1.0, 4.0]), np.array([4.0, 1.0])
    assert np.allclose(combine_horizontal(e, n, "geometric"), [2.0, 2.0])
    assert np.allclose(combine_horizontal(e, n, "arithmetic"), [2.5, 2.5])
    assert np.allclose(combine_horizontal(e, n, "quadratic"), np.sqrt(8.5))
    assert np.allclose(combine_horizontal(e, n, "total"), np.sqrt(17.0))
    with pytest.raises(ValueError, match="unknown horizontal"):
        combine_horizontal(e, n, "max")


def test_detrend_removes_line_exactly():
    t = np.arange(500.0)
    x = 3.0 + 0.2 * t + np.sin(t / 7.0)
    y = detrend(x[None])[0]
    assert abs(y.mean()) < 1e-9 and abs(np.polyfit(t, y, 1)[0]) < 1e-12


def test_f0_and_median_on_hand_built_curves():
    freqs = np.linspace(1.0, 20.0, 20)
    curves = np.ones((3, 20))
    curves[0, 4] = 5.0  # peak at 5 Hz
    curves[1, 10] = 3.0  # 11 Hz
    curves[2] = np.nan
    assert np.allclose(f0(freqs, curves)[:2], [5.0, 11.0]) and np.isnan(f0(freqs, curves)[2])
    grid, med = median_hvsr(freqs, curves[:2], n_points=39)
    assert np.isclose(grid[1] - grid[0], 0.5)
    assert np.allclose(med[grid == 5.0], 3.0)  # median of (5, 1)
    grid, med = median_hvsr(freqs, curves, n_points=400)
    assert np.all(np.isfinite(med))  # NaN curve left out
    assert np.all(np.isnan(median_hvsr(freqs, curves[2:])[1]))


def test_bad_records_raise_or_give_nan_with_reason():
    good = _record_with_resonance(5.0, 1, seed=7)[0]
    nan_rec = good.copy()
    nan_rec[1, 100] = np.nan
    flat_v = good.copy()
    flat_v[2] = 0.5
    tiny_v = good.copy()
    tiny_v[2] *= 1e-16
    batch = np.stack([good, nan_rec, flat_v, tiny_v])
    with pytest.raises(RecordError, match="record 1: .*NaN"):
        hvsr(batch, FS)
    freqs, curves, problems = hvsr_details(batch, FS)
    assert problems[0] is None and np.all(np.isfinite(curves[0]))
    assert "NaN" in problems[1] and "zero vertical" in problems[2] and "v_floor" in problems[3]
    assert np.isnan(f0(freqs, curves)[1:]).all() and np.isfinite(f0(freqs, curves)[0])
    _, curves_nan = hvsr(batch, FS, on_bad="nan")
    assert np.array_equal(np.isnan(curves_nan).all(axis=1), [False, True, True, True])


def test_bad_shapes_and_short_records():
    with pytest.raises(RecordError, match="3 components"):
        hvsr(np.zeros((2, 2, 6000)), FS)
    with pytest.raises(RecordError, match=r"shape \(n, 3, T\)"):
        hvsr(np.zeros(6000), FS)
    with pytest.raises(RecordError, match="too short"):
        hvsr(np.random.default_rng(0).standard_normal((1, 3, 500)), FS)
    with pytest.raises(RecordError, match="Nyquist"):
        hvsr(np.random.default_rng(0).standard_normal((1, 3, 6000)), 30.0)


def test_params_default_is_paper_protocol():
    p = EvaluateParams()
    assert (p.fmin, p.fmax, p.smoothing, p.bandwidth, p.horizontal) == (
        1.0, 20.0, "paper", 40.0, "geometric")
    assert (p.highpass_hz, p.highpass_order, p.taper, p.nfft) == (0.05, 2, 0.0, 0)
