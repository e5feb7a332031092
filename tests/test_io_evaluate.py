"""`evaluate` on corpora as users bring them: stations without real records, empty sources."""

import numpy as np
import pandas as pd
import pytest

from timesnet_gen.cli import main as cli_main
from timesnet_gen.corpus.format import Corpus, write_corpus
from timesnet_gen.evaluation.evaluate import EmptySourceError, evaluate_sources


def _corpus(stations, per_station=3, seed=0, n=6000):
    """Noise records (n, 3, T) cm/s^2 with a station-specific horizontal resonance."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 100.0
    rows, waves = [], []
    for s_i, station in enumerate(stations):
        f0 = 2.0 + 2.0 * s_i
        for k in range(per_station):
            v = rng.normal(size=n)
            h = rng.normal(size=(2, n)) + 3.0 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6))
            waves.append(np.stack([h[0], h[1], v]))
            rows.append({"record_id": f"{station}_{seed}_{k}", "station": station})
    return Corpus(np.asarray(waves, np.float32), pd.DataFrame(rows),
                  pd.DataFrame({"station": stations}))


def test_stations_left_out_of_the_scores_are_named():
    real = _corpus(["0205", "1716", "2020"], per_station=2, seed=1)
    generated = _corpus(["0205", "1716", "4444"], per_station=2, seed=2)  # no 2020; 4444 has no real records
    result = evaluate_sources(real, {"gen": generated})
    warnings = result["metrics"]["warnings"]
    assert warnings == [
        "gen: station(s) 4444 have generated records but no real records; left out of every "
        "score",
        "gen: station(s) 2020 have no f0 values in every source; scores use the 2x2 station "
        "matrix (score_2x2, score_4x4 ...) of 0205, 1716 instead of 3x3",
    ]
    assert "score_2x2" in result["metrics"]["models"]["gen"]
    complete = evaluate_sources(real, {"gen": _corpus(["0205", "1716", "2020"], per_station=2,
                                                      seed=3)})
    assert complete["metrics"]["warnings"] == []
    assert "score_3x3" in complete["metrics"]["models"]["gen"]


def test_empty_generated_corpus_is_an_error():
    real = _corpus(["0205", "1716"], seed=1)
    empty = Corpus(np.zeros((0, 3, 6000), np.float32), pd.DataFrame(
        columns=["record_id", "station"]), pd.DataFrame({"station": []}))
    with pytest.raises(EmptySourceError, match="gen have no records"):
        evaluate_sources(real, {"gen": empty})


def _write(corpus, path):
    write_corpus(path, corpus.waveforms, corpus.records, corpus.stations)
    return path


def test_cli_warns_and_exits_1_on_an_empty_generated_corpus(tmp_path, capsys):
    real = _write(_corpus(["0205", "1716", "2020"], per_station=2, seed=1), tmp_path / "real")
    gen = _write(_corpus(["0205", "1716"], per_station=2, seed=2), tmp_path / "gen")
    assert cli_main(["evaluate", "--real", str(real), "--generated", f"tn={gen}", "--quiet",
                     "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "WARNING: tn: station(s) 2020 have no f0 values" in err and "2x2" in err
    empty = Corpus(np.zeros((0, 3, 6000), np.float32), pd.DataFrame(
        columns=["record_id", "station"]), pd.DataFrame({"station": ["0205"]}))
    _write(empty, tmp_path / "empty")
    assert cli_main(["evaluate", "--real", str(real), "--generated",
                     f"tn={tmp_path / 'empty'}", "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "timesnet-gen evaluate: source(s) tn have no records; nothing to " \
        "evaluate"
    assert not (tmp_path / "o2").exists()
