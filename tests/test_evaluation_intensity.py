"""Intensity measures against closed-form cases and an independent ODE solution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from timesnet_gen.config import EvaluateParams
from timesnet_gen.evaluation import (
    arias_intensity,
    fourier_amplitude,
    intensity_measures,
    pga,
    pgv,
    psa,
    sdof_displacement,
    significant_duration,
    smoothed_fas,
)
from timesnet_gen.evaluation.intensity import G_CM_S2

FS = 100.0
T = np.arange(6000) / FS


def _on_east(signal: np.ndarray) -> np.ndarray:
    rec = np.zeros((1, 3, len(signal)))
    rec[0, 0] = signal
    rec[0, 1] = 0.5 * signal
    return rec


def test_sine_pga_pgv_arias():
    amp, f = 50.0, 2.5  # cm/s^2, Hz; 150 whole cycles in 60 s, a sample on every peak
    rec = _on_east(amp * np.sin(2 * np.pi * f * T))
    assert pga(rec)[0, 0] == pytest.approx(amp, rel=1e-3)
    assert pga(rec)[0, 1] == pytest.approx(amp / 2, rel=1e-3) and pga(rec)[0, 2] == 0
    # v = -A / (2 pi f) cos(2 pi f t) + const; baseline correction removes the constant. The
    # trapezoid rule shrinks a sine's integral by (w dt)^2 / 12 = 0.2 % at 16 samples per radian.
    assert pgv(rec, FS)[0, 0] == pytest.approx(amp / (2 * np.pi * f), rel=3e-3)
    # Ia = pi / (2 g) * A^2 * T / 2, in m/s.
    duration = (len(T) - 1) / FS
    expected = np.pi / (2 * G_CM_S2 / 100) * (amp / 100) ** 2 * duration / 2
    assert arias_intensity(rec, FS)[0, 0] == pytest.approx(expected, rel=1e-3)
    assert arias_intensity(rec, FS)[0, 1] == pytest.approx(expected / 4, rel=1e-3)


def test_significant_duration_of_constant_power_burst():
    signal = np.zeros(6000)
    signal[1000:3000] = 20.0 * np.where(np.arange(2000) % 2, 1.0, -1.0)  # a^2 constant, 20 s
    d = significant_duration(_on_east(signal), FS)
    assert d[0, 0] == pytest.approx(0.9 * 20.0, abs=0.02)
    assert np.isnan(d[0, 2])  # zero vertical: undefined, not a number
    with pytest.raises(ValueError, match="fractions"):
        significant_duration(_on_east(signal), FS, 0.9, 0.1)


def test_sdof_at_resonance():
    # Harmonic ground motion at the oscillator's period: steady state PSA = A / (2 zeta).
    amp = 10.0
    rec = _on_east(amp * np.sin(2 * np.pi * 1.0 * T))
    value = psa(rec, FS, [1.0], damping=0.05)[0, 0, 0]
    assert value == pytest.approx(amp / (2 * 0.05), rel=2e-3)


def test_short_period_psa_equals_pga():
    rng = np.random.default_rng(0)
    b = np.ones(50) / 50  # low-pass: energy well below 1/0.01 s, so the oscillator is rigid
    rec = _on_east(np.convolve(rng.standard_normal(6000), b, mode="same") * 100)
    values = psa(rec, FS, [0.01, 10.0])
    assert values[0, 0, 0] == pytest.approx(pga(rec)[0, 0], rel=0.01)
    assert values[0, 2, 0] == 0.0  # zero vertical, zero response


def test_piecewise_linear_solution_is_exact():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200) * 10
    x[0] = 0.0  # the ODE below starts at rest with zero ground acceleration
    t = np.arange(200) / FS
    for period in (0.05, 0.7):
        w = 2 * np.pi / period
        u = sdof_displacement(_on_east(x), FS, period, 0.05)[0, 0]

        def rhs(tau, y, w=w):
            return [y[1], -np.interp(tau, t, x) - 2 * 0.05 * w * y[1] - w * w * y[0]]

        ref = solve_ivp(rhs, [0, t[-1]], [0, 0], t_eval=t, method="DOP853", rtol=1e-11,
                        atol=1e-14, max_step=0.0025).y[0]
        assert np.abs(u - ref).max() < 1e-7 * np.abs(ref).max()


def test_fourier_amplitude_and_smoothed_fas():
    amp, f = 30.0, 5.0
    rec = _on_east(amp * np.sin(2 * np.pi * f * np.arange(6000) / FS))
    freqs, a = fourier_amplitude(rec, FS)
    k = np.argmin(np.abs(freqs - f))
    assert a[0, 0, k] == pytest.approx(amp * 60.0 / 2, rel=1e-3)  # |X(f0)| dt = A T / 2
    centers, s = smoothed_fas(rec, FS)
    assert s.shape == (1, 3, 100) and np.isclose(centers[0], 0.1) and np.isclose(centers[-1], 25)
    assert abs(centers[np.argmax(s[0, 0])] / f - 1) < 0.05
    # A flat spectrum stays flat under a normalised window.
    white = np.zeros((1, 3, 6000))
    white[0, :, 3000] = 1.0  # an impulse: |FFT| dt = 0.01 at every frequency
    _, flat = smoothed_fas(white, FS, centers=np.geomspace(0.5, 20, 10))
    assert np.allclose(flat, 0.01, rtol=1e-6)


def test_intensity_measures_shapes_and_bad_input():
    rng = np.random.default_rng(2)
    rec = rng.standard_normal((2, 3, 3000))
    params = EvaluateParams(psa_periods=[0.1, 1.0])
    ims = intensity_measures(rec, FS, params)
    assert ims["pga"].shape == (2, 3) and ims["psa"].shape == (2, 3, 2)
    assert np.all(np.isfinite(ims["d5_95"])) and np.all(ims["arias"] > 0)
    bad = rec.copy()
    bad[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="record 1: contains NaN"):
        pga(bad)
    with pytest.raises(ValueError, match="3 components"):
        pgv(rec[:, :2], FS)
    with pytest.raises(ValueError, match="periods"):
        psa(rec, FS, [0.0])
