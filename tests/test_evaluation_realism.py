"""Realism metrics: closed forms (PSA of sinusoids, zero self-residual), pyrotd as reference,
burst counts of synthetic envelopes, pick accuracy on simulated records, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from timesnet_gen.config import SynthParams
from timesnet_gen.corpus.synth import Site, draw_event, simulate_record
from timesnet_gen.evaluation.intensity import psa
from timesnet_gen.evaluation.realism import (
    RealismParams,
    classifier_auc,
    compare,
    perfect_generator_band,
    pyrotd_rotd50,
    realism_tables,
    record_features,
    rotd50,
)
from timesnet_gen.evaluation.realism_compare import logistic_fit
from timesnet_gen.evaluation.realism_phases import count_bursts, horizontal_envelope
from timesnet_gen.evaluation.realism_rotd import ANGLES_DEG, rotd50_of_response
from timesnet_gen.evaluation.spectra import RecordError

FS = 100.0
T = np.arange(6000) / FS
FAST = RealismParams(periods=[0.1, 0.5, 2.0], n_draws=5, classifier_folds=3)


def _simulated(n: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """n simulated records of one soft site (the synthetic corpus' physics) and arrivals."""
    p = SynthParams()
    rng = np.random.default_rng(seed)
    site = Site(f0=3.0, impedance=4.0, damping=0.05)
    out, arrivals = [], []
    for _ in range(n):
        event = draw_event(rng, p)
        acc, arr = simulate_record(rng, event, site, p)
        out.append(acc)
        arrivals.append({**arr, **event})
    return np.stack(out), arrivals


@pytest.fixture(scope="module")
def simulated():
    return _simulated(48, 3)


@pytest.fixture(scope="module")
def features(simulated):
    records, arrivals = simulated
    mag = np.array([a["magnitude"] for a in arrivals])
    dist = np.array([a["distance_km"] for a in arrivals])
    return record_features(records, FS, FAST, magnitude=mag, distance_km=dist, vs30=300.0)


# ------------------------------------------------------------------------------------------
# RotD50


def _ramped(signal: np.ndarray) -> np.ndarray:
    # 20 s cosine ramps in and out: no step or kink in the ground motion, so the transients
    # stay below 0.2 % of the steady state.
    return signal * scipy.signal.windows.tukey(len(T), 0.66)


@pytest.mark.parametrize("period", [0.2, 0.5, 1.0, 2.0])
def test_rotd50_of_circular_sinusoid_is_the_steady_state_amplitude(period):
    # E = A sin, N = A cos: every rotation has the same amplitude, RotD50 = the steady state
    # A w0^2 / sqrt((w0^2 - w^2)^2 + (2 zeta w0 w)^2) (10 A at resonance, zeta = 5 %).
    amp, f = 100.0, 1.0
    rec = np.stack([_ramped(amp * np.sin(2 * np.pi * f * T)),
                    _ramped(amp * np.cos(2 * np.pi * f * T))])[None]
    w, w0, zeta = 2 * np.pi * f, 2 * np.pi / period, 0.05
    expected = amp * w0**2 / np.sqrt((w0**2 - w**2) ** 2 + (2 * zeta * w0 * w) ** 2)
    assert rotd50(rec, FS, [period])[0, 0] == pytest.approx(expected, rel=2.5e-3)


def test_rotd50_of_one_component_is_psa_times_median_cosine():
    # Motion on E only: the rotated peaks are |cos(theta)| PSA_E, whose median over 0-179 deg
    # is cos(45 deg) up to the 1-deg grid; PSA_E from the project's SDOF (intensity.psa).
    rng = np.random.default_rng(0)
    east = np.convolve(rng.standard_normal(6000), np.hanning(50), "same") * np.hanning(6000)
    rec3 = np.stack([east, 0 * east, 0 * east])[None]
    periods = [0.3, 1.0, 3.0]
    cosines = np.sort(np.abs(np.cos(np.radians(ANGLES_DEG))))
    median_cos = 0.5 * (cosines[89] + cosines[90])
    expected = psa(rec3, FS, periods)[0, 0] * median_cos
    np.testing.assert_allclose(rotd50(rec3[:, :2], FS, periods)[0], expected, rtol=5e-3)


def test_rotd50_matches_pyrotd(simulated):
    records = simulated[0][:2, :2]
    periods = [0.05, 0.1, 0.3, 1.0, 3.0, 5.0]
    ours = rotd50(records, FS, periods)
    ref = pyrotd_rotd50(records, FS, periods)
    np.testing.assert_allclose(ours, ref, rtol=1e-2)


def test_rotd50_peak_search_is_exact():
    # The block search must give what rotating every sample gives.
    rng = np.random.default_rng(1)
    t = np.arange(4096)
    resp = np.stack([np.sin(2 * np.pi * t / 200 + rng.uniform(0, 6, (2, 1))) * np.exp(
        -((t - rng.uniform(500, 3500)) / rng.uniform(100, 800)) ** 2) for _ in range(20)])
    coef = np.stack([np.cos(np.radians(ANGLES_DEG)), np.sin(np.radians(ANGLES_DEG))], 1)
    brute = np.median(np.abs(np.einsum("ad,cdt->cat", coef, resp)).max(-1), axis=1)
    np.testing.assert_allclose(rotd50_of_response(resp, 200.0), brute, rtol=1e-12)


def test_rotd50_bad_input():
    with pytest.raises(ValueError, match=r"shape \(n, 2, T\)"):
        rotd50(np.zeros((2, 3, 100)), FS, [1.0])
    with pytest.raises(ValueError, match="periods must be > 0"):
        rotd50(np.zeros((1, 2, 100)), FS, [0.0])


# ------------------------------------------------------------------------------------------
# envelopes, bursts, picks


def _envelope_of(bursts: list[tuple[float, float]]) -> np.ndarray:
    """A horizontal record whose envelope has Gaussian bursts (centre s, amplitude)."""
    env = sum(a * np.exp(-(((T - c) / 2.0) ** 2)) for c, a in bursts)
    rng = np.random.default_rng(0)
    return (env * rng.standard_normal((2, len(T))))[None]


@pytest.mark.parametrize("bursts, expected", [
    ([(20.0, 1.0)], 1),
    ([(15.0, 1.0), (40.0, 0.8)], 2),
    ([(15.0, 1.0), (40.0, 0.3)], 1),  # second one below the on threshold (0.5 of the peak)
    ([(15.0, 1.0), (17.0, 0.9)], 1),  # overlapping: the envelope never drops below off
])
def test_burst_counter_on_synthetic_envelopes(bursts, expected):
    rec = np.concatenate([_envelope_of(bursts), np.zeros((1, 1, len(T)))], axis=1)
    times, env = horizontal_envelope(rec, FS, 1.0, 0.25)
    assert count_bursts(env, 0.25)[0] == expected


def test_burst_counter_zero_envelope_and_gap():
    assert count_bursts(np.zeros((1, 50)), 0.25)[0] == 0
    env = np.zeros((1, 100))
    env[0, 10:20] = 1.0
    env[0, 24:30] = 1.0  # 1 s gap (4 samples of 0.25 s) < min_gap_s = 2 s: one burst
    assert count_bursts(env, 0.25, min_gap_s=2.0)[0] == 1
    assert count_bursts(env, 0.25, min_gap_s=0.5)[0] == 2
    with pytest.raises(ValueError, match="0 < off <= on <= 1"):
        count_bursts(env, 0.25, on=0.2, off=0.5)


def test_picks_find_p_and_s_of_simulated_records(simulated, features):
    _, arrivals = simulated
    p_true = np.array([a["p_arrival_s"] for a in arrivals])
    s_true = np.array([a["s_arrival_s"] for a in arrivals])
    found = np.isfinite(features.sp_time_s)
    assert found.mean() >= 0.9
    p_err = np.abs(features.p_pick_s[found] - p_true[found])
    s_err = np.abs(features.s_pick_s[found] - s_true[found])
    assert np.median(p_err) < 0.5 and np.median(s_err) < 0.5
    assert np.mean(np.abs(features.sp_time_s[found] - (s_true - p_true)[found]) < 1.0) >= 0.85


# ------------------------------------------------------------------------------------------
# features and edge cases


def test_bad_records_are_left_out_with_reason(simulated):
    records = simulated[0][:5].copy()
    records[1, 0, 100] = np.nan
    records[3, 2] = 7.0  # flat vertical
    feats = record_features(records, FS, FAST)
    assert feats.valid.tolist() == [True, False, True, False, True]
    assert feats.reason[1] == "NaN or inf samples on E"
    assert feats.reason[3] == "flat channel U"
    assert feats.n_invalid == 2
    assert np.isnan(feats.psa[1]).all() and feats.n_bursts[3] == -1
    good = record_features(records[[0, 2, 4]], FS, FAST)
    np.testing.assert_allclose(feats.psa[[0, 2, 4]], good.psa)
    np.testing.assert_allclose(feats.d5_95[[0, 2, 4]], good.d5_95)


def test_record_features_bad_input():
    with pytest.raises(RecordError, match="3 components"):
        record_features(np.zeros((2, 2, 6000)), FS, FAST)
    with pytest.raises(RecordError, match="magnitude must have one value per record"):
        record_features(np.ones((2, 3, 6000)), FS, FAST, magnitude=np.ones(3))


def test_source_against_itself_has_zero_residuals(features):
    m = compare(features, features, 0, FAST)
    np.testing.assert_allclose(m["psa_ln_resid"], 0.0, atol=1e-12)
    np.testing.assert_allclose(m["psa_ln_std_ratio"], 1.0, rtol=1e-12)
    for key in ("fas_frechet_E", "fas_frechet_N", "fas_frechet_U", "pga_w1_ln", "d5_95_w1_ln",
                "sp_w1_s", "gmm_pga_mean_diff", "gmm_d5_95_std_diff", "gmm_psa_mean_diff"):
        assert m[key] == pytest.approx(0.0, abs=1e-12), key
    for key in ("pga_median_ratio", "pgv_median_ratio", "arias_median_ratio",
                "d5_95_median_ratio"):
        assert m[key] == pytest.approx(1.0, rel=1e-12), key
    assert m["multi_burst_rate"] == 0.0 and m["n_bursts_mean"] == 1.0


def test_compare_sees_averaged_records(simulated, features):
    # The decoder's failure mode: the average of 5 normalised records (arrivals spread).
    records = simulated[0]
    rng = np.random.default_rng(0)
    z = records / records.std(-1, keepdims=True)
    avg = np.stack([z[i].mean(0) * records[i].std(-1, keepdims=True).mean(0)
                    for i in (rng.choice(len(z), 5, replace=False) for _ in range(30))])
    m = compare(record_features(avg, FS, FAST), features, 0, FAST)
    assert m["d5_95_median_ratio"] > 1.5
    assert m["multi_burst_rate"] > 0.15
    assert m["classifier_auc"] > 0.8
    assert np.isnan(m["gmm_pga_mean_diff"])  # no scenario for the averages


def test_two_halves_of_real_records_are_indistinguishable(features):
    # 24 vs 24 simulated records of the same site: the AUC's sampling spread at this size is
    # ~0.08, so the mean over 5 seeds of the fold assignment must be near 0.5.
    a, b = features.take(np.arange(0, 48, 2)), features.take(np.arange(1, 48, 2))
    aucs = [classifier_auc(a.spec, b.spec, 3, 1.0, seed) for seed in range(5)]
    assert abs(np.mean(aucs) - 0.5) < 0.15


def test_classifier_auc_on_gaussian_features():
    rng = np.random.default_rng(0)
    same = classifier_auc(rng.standard_normal((40, 30)), rng.standard_normal((40, 30)))
    shifted = rng.standard_normal((40, 30))
    shifted[:, :5] += 2.0
    apart = classifier_auc(shifted, rng.standard_normal((40, 30)))
    assert abs(same - 0.5) < 0.2 and apart > 0.9
    assert np.isnan(classifier_auc(np.zeros((1, 3)), np.zeros((5, 3))))


def test_repeated_records_stay_in_one_fold():
    # Copies of one record on the source side only: with the copies split over folds the
    # classifier would recognise them; grouped, it cannot.
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((30, 20))
    src_rows = rng.integers(0, 10, 30)
    src = rng.standard_normal((10, 20))[src_rows]
    grouped = classifier_auc(src, ref, 5, 1.0, 0, groups_src=src_rows)
    assert grouped < 0.8


def test_logistic_fit_is_the_penalised_optimum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 80))
    y = (x[:, 0] + 0.5 * rng.standard_normal(30) > 0).astype(float)
    wb = logistic_fit(x, y, 1.0)
    p = 1 / (1 + np.exp(-(x @ wb[:-1] + wb[-1])))
    grad_w = x.T @ (p - y) + wb[:-1]
    assert np.max(np.abs(grad_w)) < 1e-6
    # The bias is the weight of a constant feature 10: its penalty is l2 (bias / 10)^2 / 2.
    assert abs(10 * np.sum(p - y) + wb[-1] / 10) < 1e-6


def test_perfect_generator_band_is_ordered_and_seeded(features):
    train, ref = features.take(np.arange(0, 30)), features.take(np.arange(30, 48))
    band = perfect_generator_band(train, ref, 20, n_draws=5, seed=1, params=FAST)
    again = perfect_generator_band(train, ref, 20, n_draws=5, seed=1, params=FAST)
    for key, (lo, mid, hi) in band.items():
        assert np.all(np.asarray(lo) <= np.asarray(mid)) and np.all(
            np.asarray(mid) <= np.asarray(hi)), key
        np.testing.assert_array_equal(lo, again[key][0])


# ------------------------------------------------------------------------------------------
# tables


def test_tables_report_small_and_missing_stations(features):
    train = {"A": features.take(np.arange(0, 20)), "B": features.take(np.arange(20, 40))}
    ref = {"A": features.take(np.arange(40, 48)), "B": features.take(np.arange(40, 48))}
    sources = {
        "gen": {"A": features.take(np.arange(0, 12))},  # B missing
        "tiny": {"A": features.take([0, 1]), "B": features.take(np.arange(20, 32))},
    }
    flat, per_station, curves = realism_tables(train, ref, sources, FAST)
    reasons = per_station.groupby(["source", "station"])["reason"].first()
    assert reasons[("gen", "B")] == "station missing in source"
    assert reasons[("tiny", "A")] == "fewer than 3 valid records (source 2)"
    assert reasons[("gen", "A")] == ""
    assert flat["realism/gen/n_stations_scored"] == 1.0
    assert flat["realism/tiny/n_stations_scored"] == 1.0
    lo = flat["realism/gen/pga_median_ratio_band_lo"]
    hi = flat["realism/gen/pga_median_ratio_band_hi"]
    assert flat["realism/gen/pga_median_ratio_met"] == (
        lo <= flat["realism/gen/pga_median_ratio"] <= hi)
    assert "realism/gen/psa_ln_resid_0.5s" in flat
    assert "realism/gen/gmm_pga_mean_diff" in flat  # these records carry their scenario
    skipped = per_station[(per_station.source == "gen") & (per_station.station == "B")]
    assert skipped["value"].isna().all()
    assert set(curves["station"]) == {"A", "B", "pooled"}
    assert len(curves[(curves.source == "gen") & (curves.station == "pooled")]) == 3


def test_tables_say_when_a_source_has_no_scenario(simulated, features):
    train = {"A": features.take(np.arange(0, 30))}
    ref = {"A": features.take(np.arange(30, 48))}
    plain = record_features(simulated[0][:12], FS, FAST)  # no magnitude / distance
    flat, per_station, _ = realism_tables(train, ref, {"gen": {"A": plain}}, FAST)
    assert not any(k.startswith("realism/gen/gmm_") for k in flat)
    row = per_station[(per_station.station == "A") & (per_station.metric == "gmm_pga_mean_diff")]
    assert row["reason"].iloc[0] == "source has no scenario (magnitude, distance)"


def test_fas_is_the_evaluations_smoothed_fas(simulated):
    from timesnet_gen.config import EvaluateParams
    from timesnet_gen.evaluation.intensity import smoothed_fas
    from timesnet_gen.evaluation.realism_features import ko_fas

    records = simulated[0][:3]
    freqs, ours = ko_fas(records, FS, EvaluateParams())
    ref_freqs, ref = smoothed_fas(records, FS)
    np.testing.assert_allclose(freqs, ref_freqs)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_logistic_fit_same_optimum_with_more_records_than_features():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 10))
    y = (x[:, 0] - x[:, 1] + rng.standard_normal(200) > 0).astype(float)
    wb = logistic_fit(x, y, 1.0)
    p = 1 / (1 + np.exp(-(x @ wb[:-1] + wb[-1])))
    assert np.max(np.abs(x.T @ (p - y) + wb[:-1])) < 1e-6
    assert wb[0] > 0.5 and wb[1] < -0.5


def test_realism_figure_is_written_small(tmp_path, features):
    from timesnet_gen.plotting_realism import plot_realism

    train = {"A": features.take(np.arange(0, 30))}
    ref = {"A": features.take(np.arange(30, 48))}
    sources = {"gen": {"A": features.take(np.arange(0, 12))}, "real-train": train}
    _, _, curves = realism_tables(train, ref, sources, FAST)
    path = plot_realism(curves, {"real-holdout": ref["A"], "gen": sources["gen"]["A"]},
                        tmp_path / "figures" / "realism.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 400_000
    assert not list(path.parent.glob(".realism.png.tmp-*"))  # staged, then renamed


def test_realism_figure_colours_are_distinct_and_real_is_black() -> None:
    import matplotlib.colors

    from timesnet_gen import registry
    from timesnet_gen.plotting_realism import _colours

    names = ["Real (held out)", "Real (training)", *registry.source_labels()[1:]]
    colours = _colours(names)
    assert colours["Real (held out)"] == registry.REAL_COLOUR
    hexes = [matplotlib.colors.to_hex(c) for c in colours.values()]
    assert len(set(hexes)) == len(names)  # Real (training) no longer shares TimesNet-Recon's
