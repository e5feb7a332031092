"""`timesnet-gen evaluate` on tiny corpora written in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from timesnet_gen.cli import main as cli_main
from timesnet_gen.config import EvaluateParams
from timesnet_gen.corpus.format import read_corpus, write_corpus
from timesnet_gen.evaluation.evaluate import evaluate_sources

FS = 100.0
SITES = {"0205": 2.5, "1716": 6.0, "3130": 12.0}  # true f0 (Hz)


def _resonant(f_true: float, rng: np.random.Generator) -> np.ndarray:
    """(3, 6000) cm/s^2: horizontals = vertical noise through a damped resonance at f_true."""
    f = np.fft.rfftfreq(6000, 1 / FS)
    r = f * np.exp(rng.normal(0, 0.03)) / f_true
    transfer = 1.0 / np.sqrt((1 - r**2) ** 2 + (0.1 * r) ** 2)
    v = rng.standard_normal(6000) * 5
    rec = np.stack([np.fft.irfft(np.fft.rfft(rng.standard_normal(6000) * 5) * transfer, 6000),
                    np.fft.irfft(np.fft.rfft(rng.standard_normal(6000) * 5) * transfer, 6000), v])
    return rec


def _corpus(path, seed: int, per_station: int = 4, prefix: str = "r"):
    rng = np.random.default_rng(seed)
    waves, rows = [], []
    for station, f_true in SITES.items():
        for k in range(per_station):
            waves.append(_resonant(f_true, rng))
            rows.append({"record_id": f"{prefix}{station}_{k}", "station": station})
    stations = pd.DataFrame({"station": list(SITES), "role": "target",
                             "f0_true_hz": list(SITES.values())})
    write_corpus(path, np.stack(waves), pd.DataFrame(rows), stations)
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {
        "real": _corpus(root / "real", 0),
        "gen": _corpus(root / "gen", 1, prefix="g"),
        "recon": _corpus(root / "recon", 2, prefix="c"),
        "root": root,
    }


def test_evaluate_sources_scores_distinct_stations(corpora):
    params = EvaluateParams(psa_periods=[0.1, 1.0])
    real = read_corpus(corpora["real"])
    result = evaluate_sources(real, {"model": read_corpus(corpora["gen"])},
                              {"model": read_corpus(corpora["recon"])}, params)
    m = result["metrics"]["models"]["model"]
    assert m["score_3x3"] > 0.9 and m["score_6x6"] > 0.9 and m["score_9x9"] > 0.9
    assert m["nearest_station"]["accuracy"] == 1.0
    assert result["metrics"]["real_ceiling"]["accuracy"] == 1.0
    for s, f_true in SITES.items():
        assert abs(result["metrics"]["f0"]["Real"][s]["median"] / f_true - 1) < 0.06
        assert m["per_station"][s]["median_f0_abs_diff_hz"] < 0.1 * f_true
        assert m["per_station"][s]["log_rmse_median_hvsr"] < 0.5
        assert result["metrics"]["true_f0"][s]["model"]["within_10_percent"] == 1.0
    assert result["matrices"]["model"]["real_recon_gen"].shape == (9, 9)
    assert result["median_hvsr"]["grid"].shape == (400,)
    records = result["records"]
    assert len(records) == 36 and set(records["source"]) == {"Real", "model", "model-recon"}
    assert {"f0_hz", "pga_cm_s2", "pgv_cm_s", "arias_m_s", "d5_95_s", "psa_0.1s",
            "psa_1s"} <= set(records.columns)
    json.dumps(result["metrics"])  # JSON-ready


def test_station_blind_generator_scores_low(corpora):
    real = read_corpus(corpora["real"])
    # Every "generated" record comes from station 1716, labelled as all three stations.
    blind = read_corpus(corpora["gen"])
    src = blind.waveforms[blind.station_mask("1716")]
    blind.waveforms[:] = np.concatenate([src, src, src])
    result = evaluate_sources(real, {"blind": blind}, params=EvaluateParams(psa_periods=[1.0]))
    m = result["metrics"]["models"]["blind"]
    assert m["score_3x3"] < 0.6 and m["nearest_station"]["accuracy"] == pytest.approx(1 / 3)


def test_cli_writes_outputs(corpora, capsys):
    out = corpora["root"] / "out"
    held = corpora["root"] / "held.csv"
    pd.DataFrame({"record_id": [f"r{s}_{k}" for s in SITES for k in (0, 1, 2)]}).to_csv(held)
    rc = cli_main(["evaluate", "--real", str(corpora["real"]), "--generated",
                   f"tn={corpora['gen']}", "--recon", f"tn={corpora['recon']}",
                   "--real-records", str(held), "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())["all"]  # one reference set
    assert metrics["models"]["tn"]["score_9x9"] > 0.9
    assert metrics["n_records"]["Real"] == {s: 3 for s in SITES}
    table = pd.read_csv(out / "records.csv", dtype={"station": str})
    assert len(table) == 9 + 12 + 12 and table["f0_hz"].notna().all()
    with np.load(out / "median_hvsr.npz") as npz:
        assert "grid" in npz.files and "0205/tn" in npz.files and "0205/tn-recon" in npz.files
    with np.load(out / "matrices.npz") as npz:
        assert npz["tn/3x3/all"].shape == (3, 3)
        assert list(npz["tn/9x9/all/labels"][:3]) == ["0205 Real", "0205 Recon", "0205 Gen"]
    assert not (out / "novelty.csv").exists()  # no train split without --prepared


def test_cli_bad_input(corpora, capsys, tmp_path):
    rc = cli_main(["evaluate", "--real", str(tmp_path / "nope"), "--generated",
                   str(corpora["gen"]), "--out", str(tmp_path / "o")])
    assert rc == 1 and "not a corpus folder" in capsys.readouterr().err
    rc = cli_main(["evaluate", "--real", str(corpora["real"]), "--out", str(tmp_path / "o")])
    assert rc == 1 and "--generated" in capsys.readouterr().err
    # an --out that is the real corpus itself is refused before anything is written
    rc = cli_main(["evaluate", "--real", str(corpora["real"]), "--generated",
                   str(corpora["gen"]), "--out", str(corpora["real"])])
    assert rc == 1 and "would replace the input" in capsys.readouterr().err
    assert (corpora["real"] / "records.csv").exists()
    rc = cli_main(["evaluate", "--real", str(corpora["real"]), "--generated",
                   f"a={corpora['gen']}", "--generated", f"a={corpora['recon']}",
                   "--out", str(tmp_path / "o")])
    assert rc == 1 and "unique" in capsys.readouterr().err
    rc = cli_main(["evaluate", "--real", str(corpora["real"]), "--generated",
                   str(corpora["gen"]), "--stations", "9999", "--out", str(tmp_path / "o")])
    assert rc == 1 and "9999" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
