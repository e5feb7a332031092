"""Export to MiniSEED, SAC and .npz: write -> read gives the same samples and metadata."""

import json

import numpy as np
import pandas as pd
import pytest
from obspy import UTCDateTime, read

from timesnet_gen.cli import main as cli_main
from timesnet_gen.corpus.format import read_corpus, write_corpus
from timesnet_gen.io.export import export_corpus, export_records, read_npz
from timesnet_gen.io.ingest import collect


@pytest.fixture()
def corpus(tmp_path):
    """A two-record generated corpus with provenance columns."""
    rng = np.random.default_rng(0)
    waveforms = rng.normal(0, 30.0, (2, 3, 6000)).astype(np.float32)
    records = pd.DataFrame({
        "record_id": ["gen_0205_000", "gen_1716_001"],
        "station": ["0205", "1716"],
        "starttime": ["2021-01-02T03:04:05.250000Z", "2021-01-02T03:05:00.000000Z"],
        "model": ["timesnet-gen", "timesnet-gen"],
        "seed": [7, 7],
        "source_records": ["0205_a;0205_b", "1716_a"],
        "magnitude": [5.5, np.nan],
        "distance_km": [12.5, np.nan],
    })
    stations = pd.DataFrame({"station": ["0205", "1716"], "role": ["target", "target"]})
    write_corpus(tmp_path / "gen", waveforms, records, stations)
    return tmp_path / "gen"


def test_mseed_round_trip(corpus, tmp_path):
    out = tmp_path / "exp"
    export_corpus(corpus, out, "mseed", provenance={"checkpoint": "ckpt.pt"})
    source = read_corpus(corpus)
    for acc, row in zip(source.waveforms, source.records.itertuples()):
        stream = read(str(out / f"{row.record_id}.mseed"))
        assert [tr.stats.channel for tr in stream] == ["HNE", "HNN", "HNZ"]
        for trace, expected in zip(stream, acc):
            assert trace.stats.station == row.station and trace.stats.sampling_rate == 100.0
            assert trace.stats.starttime == UTCDateTime(row.starttime)
            assert trace.data.dtype == np.float32
            np.testing.assert_array_equal(trace.data, expected)  # float32: exact
        sidecar = json.loads((out / f"{row.record_id}.json").read_text())
        assert sidecar["units"] == "cm/s^2"
        assert sidecar["provenance"]["model"] == "timesnet-gen"
        assert sidecar["provenance"]["seed"] == 7
        assert sidecar["provenance"]["checkpoint"] == "ckpt.pt"
        assert sidecar["metadata"]["source_records"] == row.source_records
    manifest = pd.read_csv(out / "manifest.csv", dtype={"station": str})
    assert list(manifest["station"]) == ["0205", "1716"]


def test_sac_round_trip(corpus, tmp_path):
    out = tmp_path / "exp"
    export_corpus(corpus, out, "sac")
    source = read_corpus(corpus)
    for acc, row in zip(source.waveforms, source.records.itertuples()):
        for channel, expected, (az, inc) in zip(
            ("HNE", "HNN", "HNZ"), acc, ((90, 90), (0, 90), (0, 0))
        ):
            (trace,) = read(str(out / f"{row.record_id}.{channel}.sac"))
            sac = trace.stats.sac
            np.testing.assert_array_equal(trace.data, expected)
            assert trace.stats.starttime == UTCDateTime(row.starttime)
            assert sac.kstnm == row.station and sac.kcmpnm == channel and sac.delta == 0.01
            assert (sac.cmpaz, sac.cmpinc) == (az, inc)
            assert sac.kuser0 == "cm/s^2" and sac.idep == 8  # IACC
            assert sac.kuser1 == "timesnet" and sac.user0 == 7.0  # model (8 chars), seed
            assert sac.kevnm == row.record_id[:16]
        if row.station == "0205":
            assert sac.mag == pytest.approx(5.5) and sac.dist == pytest.approx(12.5)
        else:
            assert "mag" not in sac  # unknown stays unset, not 0 or NaN


def test_npz_round_trip(corpus, tmp_path):
    out = tmp_path / "exp"
    export_corpus(corpus, out, "npz", provenance={"note": "test"})
    waveforms, records, provenance = read_npz(out / "records.npz")
    source = read_corpus(corpus)
    np.testing.assert_array_equal(waveforms, source.waveforms)
    assert list(records["record_id"]) == list(source.records["record_id"])
    assert list(records["station"]) == ["0205", "1716"]
    assert records["seed"].tolist() == [7, 7]
    assert provenance == {"note": "test"}


def test_exported_mseed_ingests_back_to_the_same_samples(corpus, tmp_path):
    export_corpus(corpus, tmp_path / "exp", "mseed")
    result = collect([tmp_path / "exp"])
    source = read_corpus(corpus)
    assert list(result.records["station"]) == ["0205", "1716"]
    np.testing.assert_allclose(result.waveforms, source.waveforms, rtol=1e-6)
    assert list(result.records["starttime"]) == list(source.records["starttime"])


def test_export_cli_and_bad_input(corpus, tmp_path, capsys):
    assert cli_main(["export", str(corpus), "--format", "sac", "--out", str(tmp_path / "s"),
                     "--provenance", "model=timesnet-gen"]) == 0
    assert "wrote 9 file(s)" in capsys.readouterr().out  # 6 SAC + 2 JSON + manifest.csv
    assert cli_main(["export", str(tmp_path / "nothing"), "--format", "npz",
                     "--out", str(tmp_path / "n")]) == 1
    assert "neither a corpus folder" in capsys.readouterr().err
    assert cli_main(["export", str(corpus), "--format", "sac", "--out", str(tmp_path / "s"),
                     "--provenance", "oops"]) == 1
    with pytest.raises(ValueError, match="unknown export format 'wav'"):
        export_records(np.zeros((1, 3, 10)), pd.DataFrame({"record_id": ["a"],
                       "station": ["0205"]}), tmp_path / "w", "wav")
    with pytest.raises(ValueError, match="NaN or inf"):
        export_records(np.full((1, 3, 10), np.nan), pd.DataFrame({"record_id": ["a"],
                       "station": ["0205"]}), tmp_path / "w", "npz")
    with pytest.raises(ValueError, match=r"shape \(n, 3, T\)"):
        export_records(np.zeros((1, 2, 10)), pd.DataFrame({"record_id": ["a"],
                       "station": ["0205"]}), tmp_path / "w", "npz")
    assert not (tmp_path / "w").exists()


def test_export_from_arrays_and_prepared_folder(tmp_path):
    waveforms = np.random.default_rng(1).normal(size=(1, 3, 500)).astype(np.float32)
    folder = tmp_path / "prepared"
    folder.mkdir()
    np.save(folder / "waveforms.npy", waveforms)
    pd.DataFrame({"record_id": ["r0"], "station": ["0205"]}).to_csv(folder / "index.csv",
                                                                      index=False)
    export_corpus(folder, tmp_path / "exp", "mseed")
    stream = read(str(tmp_path / "exp" / "r0.mseed"))
    assert stream[0].stats.station == "0205"  # kept as a string, not the number 205
    np.testing.assert_array_equal(np.stack([tr.data for tr in stream]), waveforms[0])


def test_export_keeps_the_corpus_network_code(tmp_path):
    waveforms = np.random.default_rng(2).normal(size=(1, 3, 600)).astype(np.float32)
    records = pd.DataFrame({"record_id": ["r0"], "station": ["0205"]})  # no network column
    write_corpus(tmp_path / "syn", waveforms, records,
                 pd.DataFrame({"station": ["0205"]}), network="SY")
    export_corpus(tmp_path / "syn", tmp_path / "m", "mseed")
    assert {tr.stats.network for tr in read(str(tmp_path / "m" / "r0.mseed"))} == {"SY"}
    export_corpus(tmp_path / "syn", tmp_path / "s", "sac")
    (trace,) = read(str(tmp_path / "s" / "r0.HNE.sac"))
    assert trace.stats.sac.knetwk == "SY"
    sidecar = json.loads((tmp_path / "m" / "r0.json").read_text())
    assert sidecar["metadata"]["network"] == "SY"
