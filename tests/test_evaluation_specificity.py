"""f0 histograms, JS similarity, matrices, specificity scores, nearest-station accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from timesnet_gen.evaluation import (
    f0_histogram,
    ideal_matrix,
    interleaved_matrix,
    js_similarity,
    log_rmse,
    lognormal_stats,
    median_f0_difference,
    nearest_station_accuracy,
    nearest_station_accuracy_real,
    similarity_matrix,
    specificity_score,
    specificity_scores,
    true_f0_error,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "authors_hvsr"
STATIONS = ["0205", "1716", "2020", "3130", "4628"]


def test_histogram_counts_and_normalisation():
    p = f0_histogram([1.0, 1.5, 2.0, 19.99, 20.0, np.nan])
    assert p.shape == (20,) and np.isclose(p.sum(), 1.0)
    assert np.isclose(p[0], 0.4) and np.isclose(p[1], 0.2) and np.isclose(p[-1], 0.4)
    with pytest.raises(ValueError, match="no finite f0"):
        f0_histogram([np.nan, np.nan])
    with pytest.raises(ValueError, match="no f0 value inside"):
        f0_histogram([25.0, 30.0])


def test_js_similarity_matches_scipy_and_known_values():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random(20), rng.random(20)
        p[rng.random(20) < 0.3] = 0
        pe = (p / p.sum() + 1e-10) / (p / p.sum() + 1e-10).sum()
        qe = (q / q.sum() + 1e-10) / (q / q.sum() + 1e-10).sum()
        assert np.isclose(js_similarity(p, q), 1 - jensenshannon(pe, qe, base=2), atol=1e-12)
    a = np.eye(20)[0]
    assert js_similarity(a, a) == pytest.approx(1.0)
    assert js_similarity(a, np.eye(20)[5]) == pytest.approx(0.0, abs=1e-4)  # disjoint support
    with pytest.raises(ValueError, match="differ in length"):
        js_similarity(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        js_similarity(np.array([1.0, -1.0, 1.0]), np.ones(3))
    with pytest.raises(ValueError, match="non-zero"):
        js_similarity(np.zeros(3), np.ones(3))


def test_ideal_matrices():
    assert np.array_equal(ideal_matrix(5), np.eye(5))
    m = ideal_matrix(2, 3)
    assert m.shape == (6, 6) and m[:3, :3].all() and m[3:, 3:].all() and not m[:3, 3:].any()
    with pytest.raises(ValueError):
        ideal_matrix(0)


def test_scores_on_hand_built_matrices():
    assert specificity_score(np.eye(5), ideal_matrix(5)) == pytest.approx(1.0)
    assert specificity_score(1 - np.eye(5), ideal_matrix(5)) == pytest.approx(-1.0)
    half = 0.5 * np.eye(4) + 0.25  # affine in the ideal -> still perfectly correlated
    assert specificity_score(half, ideal_matrix(4)) == pytest.approx(1.0)
    m = np.eye(3)
    m[0, 1] = 1.0  # one off-diagonal hit: r = (3*9-3*4)/... computed by hand below
    a, b = m.ravel(), np.eye(3).ravel()
    expected = ((a - a.mean()) @ (b - b.mean())) / np.sqrt(((a - a.mean()) ** 2).sum()
                                                           * ((b - b.mean()) ** 2).sum())
    assert specificity_score(m, np.eye(3)) == pytest.approx(expected) == pytest.approx(0.7905694)
    with pytest.raises(ValueError, match="constant"):
        specificity_score(np.ones((3, 3)), np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        specificity_score(np.eye(3), np.eye(4))


def test_matrices_of_distinct_and_identical_stations():
    pdfs = [np.eye(4)[i] for i in range(4)]  # each station in its own bin
    cross = similarity_matrix(pdfs, pdfs)
    assert np.allclose(cross, np.eye(4), atol=1e-4)
    scores = specificity_scores(pdfs, pdfs, recon=pdfs)
    assert scores["cross"]["score"] == pytest.approx(1.0, abs=1e-6)
    assert scores["real_gen"]["matrix"].shape == (8, 8)
    assert scores["real_gen"]["score"] == pytest.approx(1.0, abs=1e-6)
    assert scores["real_recon_gen"]["matrix"].shape == (12, 12)
    assert scores["real_recon_gen"]["score"] == pytest.approx(1.0, abs=1e-6)
    # A generator that ignores the station: all outputs alike -> rows of the cross matrix equal.
    same = [np.full(4, 0.25)] * 4
    assert similarity_matrix(pdfs, same).std(axis=1).max() < 1e-12  # score undefined: raises
    # Interleaving order: row 1 is (station 0, source 1).
    m = interleaved_matrix([pdfs, same])
    assert m[0, 1] == pytest.approx(js_similarity(pdfs[0], same[0]))


def test_lognormal_stats_and_errors():
    x = np.exp(np.array([0.0, 0.1, -0.1, 0.2, -0.2]) + np.log(5.0))
    s = lognormal_stats(x)
    assert s["median_lognormal"] == pytest.approx(5.0) and s["median"] == pytest.approx(5.0)
    assert s["sigma_ln"] == pytest.approx(np.std([0, 0.1, -0.1, 0.2, -0.2], ddof=1))
    assert median_f0_difference([1.0, 2.0, 3.0], [4.0, 5.0]) == pytest.approx(2.5)
    assert log_rmse(np.full(4, np.e), np.ones(4)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        log_rmse(np.zeros(3), np.ones(3))
    err = true_f0_error([4.0, 5.0, 6.0], 5.0)
    assert err["median_abs_error_hz"] == 0 and err["within_10_percent"] == pytest.approx(1 / 3)


def test_nearest_station_accuracy():
    rng = np.random.default_rng(1)
    real = {"a": np.exp(rng.normal(np.log(2.0), 0.05, 40)),
            "b": np.exp(rng.normal(np.log(8.0), 0.05, 40))}
    good = {"a": np.full(10, 2.1), "b": np.full(10, 7.5)}
    swapped = {"a": np.full(10, 7.9), "b": np.r_[np.full(5, 8.0), np.full(5, 2.0)]}
    for method in ("lognormal", "histogram"):
        r = nearest_station_accuracy(good, real, method=method)
        assert r["accuracy"] == 1.0 and np.array_equal(r["confusion"], [[10, 0], [0, 10]])
        r = nearest_station_accuracy(swapped, real, method=method)
        assert r["accuracy"] == pytest.approx(0.25)
        assert np.array_equal(r["confusion"], [[0, 10], [5, 5]])
        ceiling = nearest_station_accuracy_real(real, method=method)
        assert ceiling["accuracy"] == 1.0 and ceiling["n"] == 80
    r = nearest_station_accuracy({"a": [np.nan, 2.0]}, real)
    assert r["n"] == 1 and r["n_invalid"] == 1
    with pytest.raises(ValueError, match="no real f0"):
        nearest_station_accuracy({"c": [1.0]}, real)
    with pytest.raises(ValueError, match="unknown likelihood"):
        nearest_station_accuracy(good, real, method="kde")


def test_leave_one_out_is_honest():
    # Two stations with identical distributions: a record must not be pulled to its own station
    # by its own presence, so accuracy falls to about chance instead of 100 %.
    rng = np.random.default_rng(2)
    values = np.exp(rng.normal(1.0, 0.3, 30))
    real = {"a": values[:15], "b": values[15:]}
    assert nearest_station_accuracy_real(real, method="histogram")["accuracy"] < 0.8


@pytest.mark.skipif(not REFERENCE.exists(), reason="authors' reference bundles not present")
def test_authors_reference_pdfs_reproduced_and_scored():
    bundles = [np.load(REFERENCE / f"hvsr_f0_station_{s}.npz") for s in STATIONS]
    for d in bundles:
        # pdf_real is stored as float32: compare at that precision, exactly.
        ours = f0_histogram(d["f0_real"]).astype(np.float32)
        assert np.array_equal(ours, d["pdf_real"]), str(d["station"])
        for src in ("real", "timesnet", "vae"):  # with their own (float32) edges: all sources
            ours = f0_histogram(d[f"f0_{src}"], d["f0_bins"]).astype(np.float32)
            assert np.array_equal(ours, d[f"pdf_{src}"])
    real = [d["pdf_real"] for d in bundles]
    recon = [d["pdf_timesnet"] for d in bundles]
    vae = [d["pdf_vae"] for d in bundles]
    s_recon = specificity_scores(real, recon)
    s_vae = specificity_scores(real, vae)
    for s in (s_recon, s_vae):
        assert s["cross"]["matrix"].shape == (5, 5) and -1 <= s["cross"]["score"] <= 1
    # Reconstructions keep the station signature better than the VAE baseline (paper's claim).
    assert s_recon["cross"]["score"] > s_vae["cross"]["score"]
    assert np.all(np.diag(s_recon["cross"]["matrix"]) > 0.5)
    f0_real = {str(d["station"]): d["f0_real"] for d in bundles}
    ceiling = nearest_station_accuracy_real(f0_real)
    assert 0.5 < ceiling["accuracy"] <= 1.0
