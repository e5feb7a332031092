"""Resampling with anti-aliasing and the three 6000-sample window modes."""

import numpy as np
import pytest

from timesnet_gen.io.windowing import (
    arias_bounds,
    cut,
    resample,
    resample_factors,
    sta_lta_pick,
    window_start,
)


def _sine(freq, rate, seconds, amp=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize(("rate", "factors"), [(200.0, (1, 2)), (50.0, (2, 1)),
                                               (250.0, (2, 5)), (100.0, (1, 1))])
def test_resample_factors(rate, factors):
    assert resample_factors(rate) == factors


def test_resample_factors_refuses_irrational_rates():
    assert resample_factors(97.3) is None


@pytest.mark.parametrize("rate", [200.0, 50.0])
def test_resample_keeps_duration_and_in_band_amplitude(rate):
    data = np.stack([_sine(5.0, rate, 70.0)] * 3)  # (3, N)
    out = resample(data, rate)
    assert out.shape == (3, 7000)  # 70 s at 100 Hz, not a fixed FFT length
    middle = out[:, 500:-500]
    assert np.abs(middle).max() == pytest.approx(1.0, abs=0.01)
    expected = np.stack([_sine(5.0, 100.0, 70.0)] * 3)[:, 500:-500]
    assert np.abs(middle - expected).max() < 0.01


def test_resample_filters_instead_of_aliasing():
    # 70 Hz at 200 Hz would alias to 30 Hz without the low-pass; it must be removed
    data = np.stack([_sine(70.0, 200.0, 30.0)] * 3)
    out = resample(data, 200.0)
    assert np.abs(out[:, 200:-200]).max() < 0.01


def test_resample_leaves_100_hz_untouched():
    data = np.random.default_rng(0).normal(size=(3, 1234))
    np.testing.assert_array_equal(resample(data, 100.0), data)


def test_cut_pads_zeros_at_the_end_and_truncates():
    data = np.ones((3, 4500))
    out = cut(data, 0)
    assert out.shape == (3, 6000)
    assert out[:, :4500].min() == 1.0 and out[:, 4500:].max() == 0.0
    long = np.arange(3 * 8000, dtype=float).reshape(3, 8000)
    np.testing.assert_array_equal(cut(long, 1000), long[:, 1000:7000])


def _event(rate=100.0, seconds=120.0, onset_s=12.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    data = rng.normal(0, 0.01, size=(3, n))
    t = np.arange(n) / rate
    envelope = np.where(t >= onset_s, np.exp(-(t - onset_s) / 8.0), 0.0)
    return data + envelope * rng.normal(0, 5.0, size=(3, n))


def test_sta_lta_picks_the_onset():
    data = _event(onset_s=12.0)
    pick = sta_lta_pick(data[2], 100.0)
    assert pick is not None and abs(pick / 100.0 - 12.0) < 0.3


def test_p_aligned_uses_header_pick_then_sta_lta_then_first():
    data = _event(onset_s=12.0)
    start, how, pick = window_start(data, "p_aligned", p_pick_s=20.0, lead_s=5.0)
    assert (start, how, pick) == (1500, "p_aligned(header)", 20.0)
    start, how, pick = window_start(data, "p_aligned", lead_s=5.0)
    assert how == "p_aligned(sta_lta)" and abs(start - 700) < 30
    quiet = np.random.default_rng(1).normal(0, 0.01, size=(3, 9000))
    assert window_start(quiet, "p_aligned")[:2] == (0, "first(no P pick)")


def test_energy_window_centres_the_arias_interval():
    data = _event(seconds=200.0, onset_s=100.0)
    i5, i95 = arias_bounds(data)
    start, how, _ = window_start(data, "energy")
    assert how == "energy"
    assert start + 3000 == pytest.approx((i5 + i95) // 2, abs=1)
    assert 100 * 100 <= i5 < i95 < 200 * 100
    # a record shorter than the window starts at 0 (zero-padded at the end)
    assert window_start(data[:, :5000], "energy")[0] == 0


def test_unknown_window_mode_is_refused():
    with pytest.raises(ValueError, match="unknown window mode 'middle'"):
        window_start(np.zeros((3, 10)), "middle")
