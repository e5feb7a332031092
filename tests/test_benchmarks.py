"""The measures of the benchmark scripts that the README quotes (benchmarks/ is not a package:
its folder goes on sys.path here)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from diagnose_flow import (  # noqa: E402
    AMPLITUDE_PERIODS,
    amplitude_bias,
    canvas_frame,
    sp_summary,
    vertical_steps,
)
from draw_scatter import band_rows, summary  # noqa: E402
from extrapolation import MEASURES, gmm_medians, inside, medians, scenario_records  # noqa: E402
from extrapolation import main as extrapolation_main  # noqa: E402
from oracle_realism import (LARGE, duration_ratio, duration_rows,  # noqa: E402
                            large_sample_aucs)
from residual_spread import detrended_spread  # noqa: E402
from round_trip import main as round_trip_main  # noqa: E402
from round_trip import round_trip_error, settings, summary_row  # noqa: E402

from conftest import samos_records  # noqa: E402

from timesnet_gen.config import RealismParams, SynthParams  # noqa: E402
from timesnet_gen.corpus.format import write_corpus  # noqa: E402
from timesnet_gen.errors import UserError  # noqa: E402
from timesnet_gen.evaluation.realism_features import record_features  # noqa: E402
from timesnet_gen.models import flow_sampler as fs  # noqa: E402


def test_vertical_steps_reads_the_p_step_the_s_peak_and_their_coupling():
    """Features whose vertical bands jump by a factor 10 in magnitude at the P knot (a 20 dB
    power step) and hold one frame 10 x above the rest after the onset (a 20 dB S peak); the
    horizontals, which vary wildly, are not read; the levels after the P knot move with the
    levels before it record by record (correlation 1), then against them (-1)."""
    p = fs.FlowSamplerParams()
    frame = lambda s: canvas_frame(s, p)  # noqa: E731
    n, t, b = 6, 94, 20
    rng = np.random.default_rng(0)
    coarse = rng.normal(0.0, 3.0, (n, t, 3, b))  # horizontals: noise
    base = np.linspace(-2.0, 2.0, n)[:, None]  # a per-record level
    coarse[:, :, 2] = base[:, :, None]
    coarse[:, frame(p.p_align_s):, 2] += np.log(10.0)
    coarse[:, frame(p.align_s) + 3, 2] += np.log(10.0)
    out = vertical_steps(coarse.reshape(n, t, 3 * b), p)
    np.testing.assert_allclose([out["P step dB"], out["S peak dB"]], [20.0, 20.0], atol=1e-9)
    np.testing.assert_allclose(out["corr before/after P"], 1.0, atol=1e-9)
    coarse[:, frame(p.p_align_s):, 2] -= 2 * base[:, :, None]  # after = -before + const
    out = vertical_steps(coarse.reshape(n, t, 3 * b), p)
    np.testing.assert_allclose(out["corr before/after P"], -1.0, atol=1e-9)
    np.testing.assert_allclose(out["S peak dB"], 20.0, atol=1e-9)


def test_sp_summary_counts_the_picked_records_and_takes_the_median_of_their_s_p_times():
    assert sp_summary(np.array([1.0, np.nan, 3.0, 5.0])) == {"S-P found %": 75.0,
                                                            "S-P median s": 3.0}
    none = sp_summary(np.full(3, np.nan))
    assert none["S-P found %"] == 0.0 and np.isnan(none["S-P median s"])


def test_amplitude_bias_reads_a_scaling_as_its_ln_at_every_period():
    """Records twice the real ones (the same records) differ by ln 2 in ln PSA and ln FAS at
    every period; a record compared with itself by zero."""
    rng = np.random.default_rng(0)
    real = rng.standard_normal((3, 3, 6000)) * np.hanning(6000)
    p = fs.FlowSamplerParams()
    doubled = amplitude_bias(2.0 * real, real, p)
    same = amplitude_bias(real, real, p)
    for name in ("ln PSA", "ln FAS"):
        assert doubled[name].shape == (len(AMPLITUDE_PERIODS),)
        np.testing.assert_allclose(doubled[name], np.log(2.0), atol=1e-6)
        np.testing.assert_allclose(same[name], 0.0, atol=1e-12)


def test_large_sample_aucs_tell_a_mean_offset_and_the_quarter_that_holds_it():
    """Generated features = other draws of the oracle's distribution plus an offset in the
    first quarter's windows only: the AUC is high, at chance once the mean is moved onto other
    oracle records', high in the first quarter and at chance in the other three. With as many
    features as records the cross-validated AUC of two samples of one distribution scatters
    over 0.41-0.56 (measured, three seeds), hence the tolerance."""
    rp = RealismParams()
    windows = 12
    rng = np.random.default_rng(0)
    oracle = rng.standard_normal((2 * LARGE, 3 * windows * rp.spec_n_bands))
    gen = rng.standard_normal((LARGE, 3, windows, rp.spec_n_bands))
    gen[:, :, :3] += 0.3
    out = large_sample_aucs(gen.reshape(LARGE, -1), oracle, rp, quarters=True)
    assert out["sampler vs oracle (300)"] > 0.9
    assert abs(out["sampler, mean moved to other oracle records'"] - 0.5) < 0.12
    assert out["sampler, windows 0-15 s only"] > 0.9
    for span in ("15-30", "30-45", "45-60"):
        assert abs(out[f"sampler, windows {span} s only"] - 0.5) < 0.12
    assert len(large_sample_aucs(gen.reshape(LARGE, -1), oracle, rp, quarters=False)) == 2


def test_draw_scatter_reads_each_metric_with_its_band_and_counts_the_seeds_inside():
    """band_rows takes value, band and verdict of each metric from realism's flat output and
    names a metric it lacks with the known ones; summary stacks the seeds, adds the band's
    ends and counts the seeds inside it."""
    def flat(auc: float, met: bool) -> dict:
        return {"realism/flow/classifier_auc": auc, "realism/flow/classifier_auc_band_lo": 0.39,
                "realism/flow/classifier_auc_band_hi": 0.49,
                "realism/flow/classifier_auc_met": met, "realism/flow/n_stations_scored": 5}

    rows = {0: band_rows(flat(0.51, False), ["classifier_auc"], "flow"),
            3: band_rows(flat(0.48, True), ["classifier_auc"], "flow")}
    assert rows[0].to_dict("records") == [{"metric": "classifier_auc", "value": 0.51,
                                           "band_lo": 0.39, "band_hi": 0.49, "met": False}]
    table, inside = summary(rows)
    assert table.index.tolist() == ["seed 0", "seed 3", "band from", "band to"]
    np.testing.assert_allclose(table["classifier_auc"], [0.51, 0.48, 0.39, 0.49])
    assert inside.to_dict() == {"classifier_auc": 1}
    with pytest.raises(UserError, match=r"no realism metric\(s\) \['d595'\] for flow "
                                        r"\(known: classifier_auc, n_stations_scored\)"):
        band_rows(flat(0.5, False), ["d595"], "flow")


def test_round_trip_of_real_records_the_real_records_profile_keeps_the_pre_event_quiet():
    """The 26 real Samos 2020 records, their first 60 s (the P 6-34 s in, median 24 s: the
    pre-event noise first): the decoder as the simulated corpus sets it (wrap, the long-period
    steps on) decodes the first 5 s of every record with more than 10 times their power (measured:
    11.0 ln power on average);
    the real-records settings (flow_sampler.REAL_RECORDS) keep them within 1 (0.28) and halve
    the error over all cells (5.86 -> 1.30)."""
    waves, _ = samos_records()
    rp = RealismParams()
    table = settings(fs.FlowSamplerParams())
    rows = {name: summary_row(round_trip_error(waves.astype(np.float32), table[name], rp, 1),
                              rp.spec_window_s)
            for name in ("the params' own", "the real-records settings")}
    default, real = rows.values()
    assert default["0-5 s"] > 5.0 and default["first window > 10x power, %"] == 100.0
    assert abs(real["0-5 s"]) < 1.0 and real["first window > 10x power, %"] == 0.0
    assert real["rms, all cells"] < 0.5 * default["rms, all cells"]


def test_round_trip_prints_every_setting_and_refuses_bad_input(tmp_path, capsys):
    """Two records written as a corpus: one line per setting (the params' own, the
    real-records settings and the 8 combinations); a folder that is no corpus, no records of
    the stations asked for and --seeds 0 are refused with the cause."""
    t = np.arange(6000) / 100.0
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((2, 3, 6000)) * np.exp(-np.abs(t - 20.0) / 5.0)).astype(
        np.float32)
    write_corpus(tmp_path / "c", waves, pd.DataFrame({"record_id": ["a", "b"],
                                                      "station": ["S1", "S1"]}),
                 pd.DataFrame({"station": ["S1"]}))
    params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    assert round_trip_main([str(tmp_path / "c"), "--seeds", "1", "--params", params]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("round trip (encode, decode) of 2 records")
    assert [line.split("  ")[0] for line in lines[2:]] == list(settings(fs.FlowSamplerParams()))
    with pytest.raises(UserError, match="not a corpus folder"):
        round_trip_main([str(tmp_path), "--params", params])
    with pytest.raises(UserError, match=r"no records of stations \['S9'\]"):
        round_trip_main([str(tmp_path / "c"), "--stations", "S9", "--params", params])
    with pytest.raises(UserError, match="--seeds must be at least 1, got 0"):
        round_trip_main([str(tmp_path / "c"), "--seeds", "0", "--params", params])


def test_duration_ratio_reads_the_horizontals_d5_95():
    """Steady noise for 10 s against 20 s: D5-95 0.9 x the burst on each horizontal, so the
    ratio is 0.5; the vertical (45 s of noise) is not read."""
    rng = np.random.default_rng(0)
    fs_hz, n = 100, 6000

    def bursts(seconds: float, count: int = 20) -> np.ndarray:
        x = rng.normal(size=(count, 3, n))
        x[:, :2, int(seconds * fs_hz) + 500:] = 0.0
        x[:, :2, :500] = 0.0
        x[:, 2, 4500:] = 0.0
        return x

    assert duration_ratio(bursts(10.0), bursts(20.0)) == pytest.approx(0.5, rel=0.03)
    assert duration_ratio(bursts(20.0), bursts(20.0)) == pytest.approx(1.0, rel=0.03)


def test_duration_rows_separate_a_noise_tail_from_the_strong_motion():
    """A 5 s burst, then 50 s of noise at 0.1 of its amplitude (9 % of the energy) on the
    near records of one source: their D5-95 reaches into the noise (about 27 s against the
    clean bursts' 4.5 s) and is counted as ending in the noise; their D5-75 stays within the
    burst, so the D5-75 ratio hardly moves. The far records are alike."""
    rng = np.random.default_rng(1)
    n = 6000  # 60 s at 100 Hz: the burst is samples 500-1000

    def records(floor: float) -> np.ndarray:
        x = rng.normal(size=(10, 3, n))
        x[:, :, 1000:] *= floor
        x[:, :, :500] = 0.0
        return x

    distance = np.r_[np.full(10, 10.0), np.full(10, 50.0)]
    clean = np.concatenate([records(0.0), records(0.0)])
    tailed = np.concatenate([records(0.1), records(0.0)])
    rows = duration_rows(clean, tailed, distance)
    assert rows["D5-95 ratio, R < 30 km"] < 0.25
    assert rows["D5-95 ratio, R >= 30 km"] == pytest.approx(1.0, rel=0.05)
    assert 0.8 < rows["D5-75 ratio, R < 30 km"] < 1.0
    assert rows["D5-75 ratio, R >= 30 km"] == pytest.approx(1.0, rel=0.05)
    assert rows["oracle: share of D5-95 > 3 x D5-75"] == 0.5
    assert rows["oracle: the same, R < 30 km"] == 1.0
    assert rows["sampler: share of D5-95 > 3 x D5-75"] == 0.0


def test_detrended_spread_reads_the_scatter_about_a_scenario_fit():
    """Residuals with a known scenario trend and scatter: the sd about the fit in M and ln R is
    the scatter (not the raw sd, which holds the trend), the slope on M is the trend's, the mean
    is the residuals'; a record with a NaN is left out, and fewer than 4 left is refused."""
    rng = np.random.default_rng(0)
    n = 4000
    m, r = rng.uniform(3.5, 5.5, n), rng.uniform(10.0, 150.0, n)
    scatter = np.array([0.3, 0.5])
    resid = (np.column_stack([0.2 + 1.5 * m - 1.0 * np.log(r), np.full(n, -0.3)])
             + rng.standard_normal((n, 2)) * scatter)
    fit = detrended_spread(resid, m, r)
    np.testing.assert_allclose(fit["sd"], scatter, rtol=0.05)
    np.testing.assert_allclose(fit["slope_m"], [1.5, 0.0], atol=0.05)
    np.testing.assert_allclose(fit["mean"], resid.mean(axis=0))
    assert resid[:, 0].std() > 2 * scatter[0]  # the raw spread holds the trend
    resid[:n // 2, 1] = np.nan
    np.testing.assert_allclose(detrended_spread(resid, m, r)["sd"], scatter, rtol=0.07)
    with pytest.raises(UserError, match="3 records with every residual finite"):
        detrended_spread(resid[n // 2:n // 2 + 3], m[n // 2:n // 2 + 3], r[n // 2:n // 2 + 3])


def test_extrapolation_reads_fixed_scenarios_and_medians_of_the_realism_measures():
    """The simulator's records at one scenario: every event at exactly that M and R, seeded (the
    same seed, the same records); ten times the moment at the same distance gives larger
    motions. Records twice as strong differ by ln 2 in the median ln PGA and ln PSA and by
    nothing in the median ln D5-95. ASB14's median PGA falls with distance and grows with M."""
    station = pd.Series({"f0_sh_hz": 3.0, "f0_sigma_ln": 0.05, "outlier_fraction": 0.0,
                         "outlier_sigma_ln": 0.0, "impedance": 4.0, "damping": 0.05,
                         "second_f0_hz": 0.0, "second_impedance": 1.0})
    synth = SynthParams()
    small = scenario_records(station, 4.0, 30.0, 6, synth, [1, 2])
    np.testing.assert_array_equal(small, scenario_records(station, 4.0, 30.0, 6, synth, [1, 2]))
    large = scenario_records(station, 5.0, 30.0, 6, synth, [1, 2])
    assert small.shape == (6, 3, 6000) and small.dtype == np.float32
    feats = lambda x: record_features(x, 100.0, RealismParams())  # noqa: E731
    a, b = medians(feats(small)), medians(feats(large))
    assert len(a) == len(MEASURES) and np.all(b[:3] > a[:3] + 0.5)
    np.testing.assert_allclose(medians(feats(2.0 * small)) - a, [np.log(2.0)] * 3 + [0.0],
                               atol=1e-6)
    near, far, big = gmm_medians(5.0, 20.0, 400.0), gmm_medians(5.0, 100.0, 400.0), \
        gmm_medians(6.0, 20.0, 400.0)
    assert far[0] < near[0] < big[0] and np.all(np.isfinite(near))
    training = np.array([[3.5, 11.0], [5.1, 180.0], [4.0, 50.0]])
    assert inside(training, 4.0, 30.0) and not inside(training, 6.0, 30.0)
    assert not inside(training, 4.0, 5.0)
    with pytest.raises(UserError, match="--n must be at least 3, got 2"):
        extrapolation_main(["model.pt", "--n", "2"])
