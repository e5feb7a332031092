"""GMM yardstick: residuals against pygmm's ASB14 / AS16 medians, Vs30 rules, comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pygmm
import pytest

from timesnet_gen.evaluation.intensity import G_CM_S2
from timesnet_gen.evaluation.realism import RealismParams, record_features
from timesnet_gen.evaluation.realism_gmm import (
    column_vs30,
    gmm_columns,
    gmm_compare,
    gmm_residuals,
    station_vs30,
)

FS = 100.0
PARAMS = RealismParams(periods=[0.2, 1.0, 5.0])


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    t = np.arange(6000) / FS
    env = np.exp(-(((t - 20.0) / 4.0) ** 2))
    records = rng.standard_normal((4, 3, 6000)) * env * 30.0
    return record_features(records, FS, PARAMS)


def test_residual_is_ln_observed_minus_ln_pygmm_median(features):
    mag, dist, vs30 = np.array([5.0, 6.2, np.nan, 4.5]), np.array([30.0, 80.0, 20.0, 12.0]), 400
    table = gmm_residuals(features, mag, dist, vs30)
    asb = pygmm.AkkarSandikkayaBommer2014(pygmm.Scenario(mag=6.2, dist_hyp=80.0, v_s30=400.0,
                                                         mechanism="SS"))
    ast = pygmm.AfshariStewart2016(pygmm.Scenario(mag=6.2, dist_rup=80.0, v_s30=400.0,
                                                  mechanism="SS"))
    row = table.iloc[1]
    assert row["pga"] == pytest.approx(np.log(features.pga[1] / G_CM_S2) - np.log(asb.pga))
    assert row["pgv"] == pytest.approx(np.log(features.pgv[1]) - np.log(asb.pgv))
    assert row["d5_95"] == pytest.approx(np.log(features.d5_95[1])
                                         - np.log(ast.duration["D_5t95"]))
    expected = np.log(features.psa[1, 1] / G_CM_S2) - asb.interp_ln_spec_accels([1.0])[0]
    assert row["psa_1s"] == pytest.approx(expected)
    assert np.isnan(row["psa_5s"])  # beyond ASB14's 4 s
    assert table.iloc[2][list(gmm_columns(PARAMS.periods))].isna().all()  # no magnitude
    assert table["asb14_in_range"].tolist() == [True, True, False, True]
    assert table["vs30_m_s"].eq(400.0).all()


def test_record_features_attach_residuals_only_with_a_scenario(features):
    records = np.random.default_rng(1).standard_normal((2, 3, 6000))
    plain = record_features(records, FS, PARAMS)
    assert np.isnan(plain.gmm).all()
    with_scenario = record_features(records, FS, PARAMS, magnitude=np.array([5.0, 5.5]),
                                    distance_km=np.array([20.0, 40.0]), vs30=300.0)
    assert np.isfinite(with_scenario.gmm[:, :3]).all()
    assert with_scenario.gmm_columns == gmm_columns(PARAMS.periods)


def test_gmm_compare_differences_of_mean_and_std():
    cols = gmm_columns([1.0, 2.0])
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, len(cols)))
    src = ref * 2.0 + 0.5
    out = gmm_compare(src, ref, cols)
    assert out["gmm_pga_mean_diff"] == pytest.approx(0.5 + ref[:, 0].mean())
    assert out["gmm_pga_std_diff"] == pytest.approx(ref[:, 0].std(ddof=1))
    psa_mean = np.mean([0.5 + ref[:, j].mean() for j in (3, 4)])
    assert out["gmm_psa_mean_diff"] == pytest.approx(psa_mean)
    no_scenario = gmm_compare(np.full((5, len(cols)), np.nan), ref, cols)
    assert all(np.isnan(v) for v in no_scenario.values())


def test_station_vs30_rules():
    stations = pd.DataFrame({
        "station": ["M", "C", "R", "D"],
        "vs30": [350.0, np.nan, np.nan, np.nan],
        "vs_soil_m_s": [200.0, 200.0, np.nan, 180.0],
        "thickness_m": [10.0, 26.21, np.nan, 40.0],
        "impedance": [3.0, 12.0, 1.0, 5.0],
    })
    out = station_vs30(stations, default=760.0)
    assert out["M"] == 350.0  # measured wins
    assert out["C"] == pytest.approx(30.0 / (26.21 / 200.0 + 3.79 / 2400.0))  # 4628-like
    assert out["R"] == 760.0  # rock, no column
    assert out["D"] == 180.0  # layer thicker than 30 m
    assert column_vs30(100.0, 0.0, 5.0) == pytest.approx(500.0)


def test_gmm_residuals_bad_vs30(features):
    with pytest.raises(ValueError, match="vs30 must be a positive number"):
        gmm_residuals(features, np.ones(4) * 5, np.ones(4) * 10, float("nan"))
