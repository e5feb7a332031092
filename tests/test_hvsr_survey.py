"""`timesnet-gen hvsr`: statistics in closed form, a known resonance, the command, Samos."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from timesnet_gen.cli import main as cli_main
from timesnet_gen.config import EvaluateParams
from timesnet_gen.hvsr_survey import (
    f0_statistics,
    lognormal_curve,
    markdown_table,
    spearman,
    survey,
)

SAMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "afad_asc" / "samos_2020"


def test_lognormal_curve_closed_form():
    curves = np.array([[1.0, 2.0], [4.0, 8.0], [np.nan, 1.0]])  # the NaN row is left out
    median, p16, p84 = lognormal_curve(curves)
    np.testing.assert_allclose(median, [2.0, 4.0])  # geometric means
    sigma = math.log(4.0) / math.sqrt(2.0)  # std (ddof 1) of ln 1, ln 4
    np.testing.assert_allclose(p16, median * math.exp(-sigma))
    np.testing.assert_allclose(p84, median * math.exp(sigma))
    one = lognormal_curve(np.array([[3.0, 5.0]]))
    for band in one:  # a single curve: the band is the curve
        np.testing.assert_allclose(band, [3.0, 5.0])
    assert np.isnan(lognormal_curve(np.full((2, 3), np.nan))[0]).all()


def test_f0_statistics_closed_form():
    stats = f0_statistics(np.array([1.0, 4.0, np.nan]))
    assert stats["n_valid"] == 2 and stats["f0_lognormal_median_hz"] == pytest.approx(2.0)
    assert stats["sigma_ln_f0"] == pytest.approx(math.log(4.0) / math.sqrt(2.0))
    single = f0_statistics(np.array([3.0]))
    assert single["f0_lognormal_median_hz"] == pytest.approx(3.0) and math.isnan(single["sigma_ln_f0"])
    assert f0_statistics(np.array([np.nan]))["n_valid"] == 0


def test_spearman_and_markdown():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    table = markdown_table(pd.DataFrame({"a": ["x"], "b": [1.23456], "c": [np.nan]}))
    assert table == "| a | b | c |\n|---|---|---|\n| x | 1.23 |  |\n"


def _resonant_records(f0_hz, n_records=4, seed=0, n=6000, fs=100.0):
    """(n, 3, T): white vertical noise, horizontals = noise through an SDOF at f0_hz (zeta 5 %)."""
    from scipy.signal import bilinear, lfilter

    rng = np.random.default_rng(seed)
    w0, zeta = 2 * fs * np.tan(np.pi * f0_hz / fs), 0.05  # pre-warped: digital peak at f0_hz
    b, a = bilinear([2 * zeta * w0, w0**2], [1, 2 * zeta * w0, w0**2], fs)
    out = []
    for _ in range(n_records):
        noise = rng.normal(size=(3, n))
        horizontal = lfilter(b, a, noise[:2], axis=-1)
        out.append(np.stack([horizontal[0], horizontal[1], noise[2]]))
    return np.asarray(out)


def test_survey_finds_a_known_resonance():
    waveforms = np.concatenate([_resonant_records(3.0, seed=1), _resonant_records(8.0, seed=2)])
    records = pd.DataFrame({"record_id": [f"r{i}" for i in range(8)],
                            "station": ["A"] * 4 + ["B"] * 4, "vs30": [200.0] * 4 + [700.0] * 4})
    result = survey(waveforms, records, EvaluateParams())
    summary = result["summary"].set_index("station")
    assert summary.loc["A", "f0_lognormal_median_hz"] == pytest.approx(3.0, rel=0.05)
    assert summary.loc["B", "f0_lognormal_median_hz"] == pytest.approx(8.0, rel=0.05)
    assert summary.loc["A", "f0_median_curve_hz"] == pytest.approx(3.0, rel=0.05)
    assert 0 < summary.loc["A", "sigma_ln_f0"] < 0.1
    assert summary.loc["A", "a0_median_curve"] > 3  # a 5 % damped resonance
    assert (summary["n_f0_at_edge"] == 0).all() and summary.loc["B", "vs30"] == 700.0
    median, p16, p84 = result["bands"]["A"]
    assert np.all(p16 <= median) and np.all(median <= p84)
    assert result["curves"].shape == (8, len(result["freqs"]))


def _asc(folder, station, data, vs30):
    folder.mkdir(parents=True, exist_ok=True)
    for comp, stream, samples in zip("ENU", ("HNE", "HNN", "HNZ"), data):
        header = {"NETWORK": "TK", "STATION_CODE": station, "SAMPLING_INTERVAL_S": "0.01",
                  "NDATA": str(len(samples)), "STREAM": stream, "UNITS": "cm/s^2",
                  "VS30_M/S": str(vs30), "SITE_CLASSIFICATION_EC8": "C",
                  "DATE_TIME_FIRST_SAMPLE_YYYYMMDD_HHMMSS": "2020/10/30 11:51:01.92"}
        lines = [f"{k}: {v}" for k, v in header.items()] + [f"{x:.5f}" for x in samples]
        (folder / f"20201030115124_{station}_RawAcc_{comp}.asc").write_text("\n".join(lines))


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "src"
    for station, f0, vs30 in (("0205", 2.5, 250), ("1716", 6.0, 600)):
        _asc(src / station, station, 10 * _resonant_records(f0, 1, seed=int(f0))[0], vs30)
    (src / "junk.mseed").write_bytes(b"not a record")
    return src


def test_hvsr_command_writes_the_survey(folder, tmp_path, capsys):
    out = tmp_path / "survey"
    assert cli_main(["hvsr", str(folder), "--out", str(out), "--smoothing", "konno-ohmachi",
                     "--bandwidth", "40", "--grid", "log", "--n-grid-points", "150",
                     "--title", "test"]) == 0
    assert "2 record(s), 2 with an f0, at 2 station(s); 1 skipped" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv", dtype={"station": str}).set_index("station")
    assert summary.loc["0205", "f0_lognormal_median_hz"] == pytest.approx(2.5, rel=0.08)
    assert summary.loc["1716", "f0_lognormal_median_hz"] == pytest.approx(6.0, rel=0.08)
    records = pd.read_csv(out / "records.csv", dtype={"station": str})
    assert list(records.columns[:6]) == ["record_id", "station", "f0_hz", "a0", "f0_at_edge",
                                        "problem"]
    assert records["vs30"].tolist() == [250, 600]
    with np.load(out / "curves.npz") as npz:
        assert npz["curves"].shape == (2, len(npz["freqs"]))
        assert {"0205/median", "0205/p16", "1716/p84", "grid"} <= set(npz.files)
    assert "konno-ohmachi" in (out / "summary.md").read_text()
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert quarantine["reason"].tolist() == ["unreadable"]
    for name in ("figures/0205.png", "figures/1716.png", "f0_vs_vs30.png"):
        size = (out / name).stat().st_size
        assert 5_000 < size < 150_000, (name, size)


def test_hvsr_params_and_flags(folder, tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("evaluate:\n  fmin: 1.0\n  fmax: 15.0\n")
    out = tmp_path / "s"
    assert cli_main(["hvsr", str(folder), "--out", str(out), "--params", str(params),
                     "--fmin", "2.0"]) == 0
    assert '"fmin": 2.0, "fmax": 15.0' in (out / "summary.md").read_text()
    params.write_text("evaluate:\n  fmn: 1.0\n")
    assert cli_main(["hvsr", str(folder), "--out", str(out), "--params", str(params)]) == 1
    assert "unknown key evaluate.fmn" in capsys.readouterr().err
    assert cli_main(["hvsr", str(folder), "--out", str(out), "--fmin", "30"]) == 1
    assert "evaluate.fmin must be below evaluate.fmax" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["hvsr", str(folder), "--out", str(out), "--smoothing", "boxcar"])
    assert info.value.code == 2


def test_hvsr_bad_folders(folder, tmp_path, capsys):
    assert cli_main(["hvsr", str(folder), "--out", str(folder)]) == 1
    assert "would replace the input" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.asc").write_text("1.0\n2.0\n")
    assert cli_main(["hvsr", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "no record could be read" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not SAMOS.is_dir(), reason=f"real AFAD Samos records absent ({SAMOS})")
def test_samos_stations_give_f0_in_band(tmp_path):
    folders = [SAMOS / d for d in sorted(p.name for p in SAMOS.iterdir() if p.is_dir())[:3]]
    out = tmp_path / "samos"
    assert cli_main(["hvsr", *map(str, folders), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv", dtype={"station": str})
    assert len(summary) == 3 and (summary["n_valid"] == 1).all()
    assert summary["f0_lognormal_median_hz"].between(1.0, 20.0).all()
    assert summary["vs30"].notna().all() and summary["sigma_ln_f0"].isna().all()  # 1 record
