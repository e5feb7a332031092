import numpy as np
import pandas as pd
import pytest

from timesnet_gen.corpus.format import (
    CorpusError,
    read_corpus,
    read_record,
    write_corpus,
    write_record,
)


def _records(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 50.0, size=(n, 3, 6000))


def _tables(n=3):
    records = pd.DataFrame({"record_id": [f"0205_{i}" for i in range(n)], "station": "0205",
                            "magnitude": np.linspace(4, 5, n)})
    stations = pd.DataFrame({"station": ["0205"], "role": ["target"], "f0_true_hz": [2.6]})
    return records, stations


def test_round_trip_keeps_samples_and_station_codes(tmp_path):
    waveforms = _records()
    records, stations = _tables()
    write_corpus(tmp_path / "c", waveforms, records, stations)
    corpus = read_corpus(tmp_path / "c")
    assert corpus.waveforms.shape == (3, 3, 6000)
    assert corpus.waveforms.dtype == np.float32
    # int32 counts at 1e5 per cm/s^2 (half a count) plus float32 rounding of the result
    tolerance = 0.5e-5 + np.abs(waveforms) * 2.0**-23
    assert np.all(np.abs(corpus.waveforms - waveforms) <= tolerance)
    assert list(corpus.records["station"]) == ["0205"] * 3  # not the integer 205
    assert corpus.stations["station"].iloc[0] == "0205"
    assert np.allclose(corpus.records["magnitude"], records["magnitude"])


def test_mseed_channels_and_calibration(tmp_path):
    from obspy import read

    acc = _records(1)[0]
    write_record(tmp_path / "r.mseed", acc, "4628", network="SY", counts_per_cm_s2=1e4)
    stream = read(str(tmp_path / "r.mseed"))
    assert sorted(tr.stats.channel for tr in stream) == ["HNE", "HNN", "HNZ"]
    assert all(tr.stats.sampling_rate == 100.0 and tr.stats.station == "4628" for tr in stream)
    assert stream.select(channel="HNE")[0].data.dtype == np.int32
    back = read_record(tmp_path / "r.mseed", counts_per_cm_s2=1e4)
    assert np.all(np.abs(back - acc) <= 0.5e-4 + np.abs(acc) * 2.0**-23)


@pytest.mark.parametrize("bad, message", [
    (np.full((3, 6000), np.nan), "NaN or inf"),
    (np.full((3, 6000), 1e9), "overflows int32"),
    (np.zeros((2, 6000)), r"shape \(3, T\)"),
])
def test_write_refuses_bad_records(tmp_path, bad, message):
    with pytest.raises(CorpusError, match=message):
        write_record(tmp_path / "r.mseed", bad, "0205")


def test_failed_write_keeps_previous_corpus(tmp_path):
    records, stations = _tables()
    write_corpus(tmp_path / "c", _records(), records, stations)
    before = sorted(p.name for p in (tmp_path / "c" / "records").iterdir())
    broken = _records()
    broken[2, 1, 100] = np.inf  # fails on the last record, after two files were written
    with pytest.raises(CorpusError):
        write_corpus(tmp_path / "c", broken, records, stations)
    assert sorted(p.name for p in (tmp_path / "c" / "records").iterdir()) == before
    assert read_corpus(tmp_path / "c").waveforms.shape == (3, 3, 6000)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left behind


def test_table_errors(tmp_path):
    records, stations = _tables()
    with pytest.raises(CorpusError, match="duplicate record_id"):
        write_corpus(tmp_path / "c", _records(), records.assign(record_id="x"), stations)
    with pytest.raises(CorpusError, match="2 metadata rows for 3 waveforms"):
        write_corpus(tmp_path / "c", _records(), records.iloc[:2], stations)
    with pytest.raises(CorpusError, match="not a corpus folder"):
        read_corpus(tmp_path)


def test_corrupt_record_file_is_named(tmp_path):
    records, stations = _tables()
    write_corpus(tmp_path / "c", _records(), records, stations)
    target = tmp_path / "c" / "records" / "0205_1.mseed"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(CorpusError, match="0205_1.mseed"):
        read_corpus(tmp_path / "c")
