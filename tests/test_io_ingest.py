"""`ingest`: a hand-made folder of good and broken records; quarantine, --strict, atomicity."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from timesnet_gen.cli import main as cli_main
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.io import ingest as ingest_module
from timesnet_gen.io.ingest import IngestOptions, collect, ingest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
START = "2020/10/30 11:51:01.9260240"


def _signal(seconds=70.0, rate=100.0, seed=0):
    """(3, N) noise plus a decaying burst after 10 s, cm/s^2."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    return rng.normal(0, 0.05, (3, n)) + np.exp(-np.clip(t - 10, 0, None) / 6) * (t > 10) * \
        rng.normal(0, 20.0, (3, n))


def write_asc(folder, station, comp, samples, dt=0.01, ndata=None, start=START, **extra):
    """One AFAD ASCII component file (header subset of the real ones + one sample per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    stream = {"E": "HNE", "N": "HNN", "U": "HNZ"}[comp]
    header = {
        "EVENT_ID": "10614", "EVENT_DATE_YYYYMMDD": "2020/10/30",
        "EVENT_TIME_HHMMSS": "11:51:24.00000", "EVENT_DEPTH_KM": "16.54", "MAGNITUDE_W": "6.6",
        "NETWORK": "TK", "STATION_CODE": station, "VS30_M/S": "369",
        "EPICENTRAL_DISTANCE_KM": "49.38", "DATE_TIME_FIRST_SAMPLE_YYYYMMDD_HHMMSS": start,
        "SAMPLING_INTERVAL_S": "" if dt is None else str(dt),
        "NDATA": str(len(samples) if ndata is None else ndata), "STREAM": stream,
        "UNITS": "cm/s^2", "DATA_TYPE": "Acceleration", **extra,
    }
    lines = [f"{k}: {v}" for k, v in header.items()] + [f"{x:.6f}" for x in samples]
    path = folder / f"20201030115124_{station}_mp_RawAcc_{comp}.asc"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_triplet(folder, station, data, **kwargs):
    return [write_asc(folder, station, c, d, **kwargs) for c, d in zip("ENU", data)]


@pytest.fixture()
def broken_set(tmp_path):
    """Good records (0205 asc, 1716 mat at 200 Hz, 2020 mseed) next to one broken case each."""
    src = tmp_path / "src"
    good = _signal(seed=1)
    write_triplet(src / "good_0205", "0205", good)
    savemat(src / "20201030115124_1716.mat", {"signal": _signal(rate=200.0, seed=2).T,
                                              "fs": 200.0})
    from obspy import Stream, Trace, UTCDateTime

    traces = [Trace(d.astype(np.float32), header={"station": "2020", "channel": ch,
              "sampling_rate": 50.0, "starttime": UTCDateTime(2020, 10, 30)})
              for d, ch in zip(_signal(rate=50.0, seed=3), ("HNE", "HNN", "HNZ"))]
    Stream(traces).write(str(src / "TK.2020.HN.mseed"), format="MSEED")

    # broken ones
    write_triplet(src / "later_copy", "0205", good)  # same record in another folder
    data = _signal(seed=4)
    write_asc(src / "trunc", "3501", "E", data[0])
    write_asc(src / "trunc", "3501", "N", data[1])
    write_asc(src / "trunc", "3501", "U", data[2][:3000], ndata=data.shape[1])
    nan = _signal(seed=5)
    nan[1, 100] = np.nan
    write_triplet(src / "nan", "3502", nan)
    write_asc(src / "missing", "3503", "E", data[0])
    write_asc(src / "missing", "3503", "N", data[1])
    write_asc(src / "rate", "3504", "E", data[0])
    write_asc(src / "rate", "3504", "N", data[1])
    write_asc(src / "rate", "3504", "U", data[2], dt=0.005)
    write_triplet(src / "norate", "3505", data, dt=None)
    write_triplet(src / "lowrate", "3506", _signal(rate=20.0), dt=0.05)
    flat = _signal(seed=6)
    flat[2] = 0.0
    write_triplet(src / "flat", "3507", flat)
    write_triplet(src / "short", "3508", _signal(seconds=4.0))
    write_asc(src / "late", "3509", "E", data[0])
    write_asc(src / "late", "3509", "N", data[1])
    write_asc(src / "late", "3509", "U", data[2], start="2020/10/30 11:51:03.9260240")
    (src / "corrupt.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated" + b"\x00" * 20)
    (src / "corrupt.mseed").write_bytes(b"\xff\x00not miniseed at all" * 40)
    savemat(src / "odd.mat", {"EQ": {"anEQ": {"Accel": "text", "sampling": 0.01}}})
    (src / "notafad.asc").write_text("1.0\n2.0\n")
    text = write_asc(src / "text", "3510", "E", data[0])
    write_asc(src / "text", "3510", "N", data[1])
    write_asc(src / "text", "3510", "U", data[2])
    text.write_text(text.read_text().replace("\n0.", "\nO.", 1))  # letter O for a zero
    # junk that is not a record at all
    junk = src / "good_0205" / "._20201030115124_0205_mp_RawAcc_E.asc"
    junk.write_bytes(b"\x00\x05\x16\x07" * 64)
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (src / "README.txt").write_text("downloaded from AFAD\n")
    return src


EXPECTED = {
    "later_copy": "duplicate", "trunc": "truncated", "nan": "nan_or_inf",
    "missing": "missing_component", "rate": "unequal_sampling_rate",
    "norate": "unknown_sampling_rate", "lowrate": "unsupported_sampling_rate",
    "flat": "flat_channel", "short": "too_short", "late": "unequal_starttime",
    "corrupt.mat": "unreadable", "corrupt.mseed": "unreadable", "odd.mat": "unreadable",
    "notafad.asc": "unreadable", "text": "unreadable",
}


def test_broken_files_are_quarantined_and_good_ones_ingested(broken_set, tmp_path):
    out = tmp_path / "raw"
    result = ingest([broken_set], out, IngestOptions(target_stations=("0205", "2020"),
                                                     scale=1.0))
    quarantine = pd.read_csv(out / "quarantine.csv", dtype={"station": str})
    reasons = {}
    for row in quarantine.itertuples():
        rel = Path(row.path.split(";")[0]).relative_to(broken_set)
        reasons[rel.parts[0]] = row.reason
    assert reasons == EXPECTED
    assert len(quarantine) == len(EXPECTED)  # junk (._*, .DS_Store, README) is not quarantined
    assert quarantine.set_index("reason").loc["truncated", "station"] == "3501"
    detail = quarantine.set_index("reason")["detail"]
    assert "3000 samples, header NDATA 7000" in detail["truncated"]
    assert "no U" in detail["missing_component"]
    assert "component(s) U constant" in detail["flat_channel"]
    assert "good_0205" in detail["duplicate"]
    by_path = {Path(p.split(";")[0]).name: d for p, d in zip(quarantine["path"],
                                                               quarantine["detail"])}
    assert "non-numeric sample 'O." in by_path["20201030115124_3510_mp_RawAcc_E.asc"]
    assert "no AFAD ASCII header" in by_path["notafad.asc"]
    assert "ValueError" in by_path["odd.mat"]
    assert result.ignored == {"macOS metadata (._*)": 1, "hidden file": 1, ".txt file": 1}

    corpus = read_corpus(out)
    assert sorted(corpus.records["station"]) == ["0205", "1716", "2020"]
    assert corpus.waveforms.shape == (3, 3, 6000)
    rows = corpus.records.set_index("station")
    assert rows.loc["1716", "sampling_rate_original"] == 200.0
    assert rows.loc["2020", "sampling_rate_original"] == 50.0
    assert rows.loc["0205", "record_id"] == "0205_20201030T115101"
    assert rows.loc["0205", "starttime"] == "2020-10-30T11:51:01.926024Z"
    assert rows.loc["0205", "vs30"] == 369 and rows.loc["0205", "window"] == "first"
    # 0205 is 100 Hz: the first 6000 samples, unchanged up to the int32 counts precision
    good = _signal(seed=1)
    index = list(corpus.records["station"]).index("0205")
    np.testing.assert_allclose(corpus.waveforms[index], good[:, :6000], atol=2e-5)
    stations = pd.read_csv(out / "stations.csv", dtype={"station": str}).set_index("station")
    assert stations["role"].to_dict() == {"0205": "target", "1716": "pretrain",
                                          "2020": "target"}
    assert stations["f0_true_hz"].isna().all()  # unknown for real data
    info = json.loads((out / "ingest.json").read_text())
    assert info["n_records"] == 3 and info["skipped"]["duplicate"] == 1


def _burst(rate, seconds=70.0):
    """(3, N) band-limited record: 3, 5 and 8 Hz tones under a smooth envelope, cm/s^2."""
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = np.exp(-(((t - 25.0) / 8.0) ** 2))
    return np.stack([50 * envelope * np.sin(2 * np.pi * f * t) for f in (3.0, 5.0, 8.0)])


def test_resampled_record_matches_the_100_hz_truth(tmp_path):
    savemat(tmp_path / "rec_0205.mat", {"signal": _burst(200.0), "fs": 200.0})
    savemat(tmp_path / "rec_1716.mat", {"signal": _burst(50.0), "fs": 50.0})
    result = collect([tmp_path])
    truth = _burst(100.0)[:, :6000]
    for window in result.waveforms:
        assert np.abs(window - truth).max() < 0.01 * 50  # within 1 % of the peak
    assert list(result.records["n_samples_original"]) == [14000, 3500]


def test_min_duration_is_configurable(broken_set):
    options = IngestOptions(min_duration_s=3.0)
    result = collect([broken_set / "short"], options)
    assert len(result.records) == 1 and len(result.quarantine) == 0
    padded = result.waveforms[0]
    assert np.all(padded[:, 400:] == 0)  # 4 s record, zero-padded at the end


def test_default_rate_rescues_files_without_rate(broken_set):
    result = collect([broken_set / "norate"], IngestOptions(default_rate_hz=100.0))
    assert list(result.records["station"]) == ["3505"]


def test_strict_fails_with_the_quarantine_message(broken_set, tmp_path, capsys):
    out = tmp_path / "raw"
    code = cli_main(["ingest", str(broken_set), "--out", str(out), "--strict", "--no-progress",
                     "--scale", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--strict: 15 record(s) would be skipped" in err
    assert "truncated: " in err and "flat_channel" in err
    assert not out.exists()
    # without --strict the same call succeeds and prints the summary
    assert cli_main(["ingest", str(broken_set), "--out", str(out), "--no-progress",
                     "--scale", "1", "--target-stations", "0205", "9999"]) == 0
    printed = capsys.readouterr().out
    assert "ingest: 3 record(s)" in printed and "skipped truncated: 1" in printed
    assert "target station(s) without records: 9999" in printed


def test_nothing_ingestible_is_an_error(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mseed").write_bytes(b"nonsense")
    assert cli_main(["ingest", str(src), "--out", str(tmp_path / "raw")]) == 1
    err = capsys.readouterr().err
    assert "no record could be ingested from 1 file(s); 1 skipped" in err
    # a document given instead of a folder: said, not a silent "0 file(s)"
    (tmp_path / "notes.md").write_text("# not a record")
    assert cli_main(["ingest", str(tmp_path / "notes.md"), "--out", str(tmp_path / "raw")]) == 1
    err = capsys.readouterr().err
    assert "from 0 file(s); 1 .md file(s) not read as records" in err
    assert len(err.strip().splitlines()) == 1
    assert cli_main(["ingest", str(tmp_path / "absent"), "--out", str(tmp_path / "raw")]) == 1


def test_sources_are_not_modified(broken_set, tmp_path):
    before = {p: p.read_bytes() for p in broken_set.rglob("*") if p.is_file()}
    ingest([broken_set], tmp_path / "raw")
    after = {p: p.read_bytes() for p in broken_set.rglob("*") if p.is_file()}
    assert before == after


def _previous_corpus(out):
    out.mkdir(parents=True)
    (out / "marker.txt").write_text("previous corpus")


def test_failure_mid_write_leaves_previous_output_intact(broken_set, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    _previous_corpus(out)
    import timesnet_gen.corpus.format as fmt

    calls = []
    real = fmt.write_record

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(fmt, "write_record", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest([broken_set], out)
    assert (out / "marker.txt").read_text() == "previous corpus"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "src"]  # no temp left


def test_failure_while_reading_leaves_previous_output_intact(broken_set, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    _previous_corpus(out)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "to_canonical", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest([broken_set], out)
    assert sorted(p.name for p in out.iterdir()) == ["marker.txt"]


def test_output_inside_source_is_not_reingested(broken_set):
    out = broken_set / "raw"
    ingest([broken_set], out, IngestOptions(scale=1.0))
    again = ingest([broken_set], out, IngestOptions(scale=1.0))
    assert len(again.records) == 3  # the previous corpus's .mseed files were not read


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown window 'middle'"):
        IngestOptions(window="middle")
    with pytest.raises(ValueError, match="scale > 0"):
        IngestOptions(scale=0.0)


@pytest.mark.skipif(not (DATA / "afad_asc").is_dir() or not (DATA / "afad_mat").is_dir(),
                    reason=f"real AFAD examples absent ({DATA})")
def test_real_folders_ingest_without_skips(tmp_path):
    result = ingest([DATA / "afad_asc", DATA / "afad_mat"], tmp_path / "raw",
                    IngestOptions(target_stations=("0905", "6501")))
    assert len(result.quarantine) == 0
    assert len(result.records) == 26 + 8
    junk = sum(1 for p in (DATA / "afad_asc").rglob("._*") if p.is_file())
    assert result.ignored["macOS metadata (._*)"] == junk
    counts = result.records["station"].value_counts()
    assert counts["6501"] == 2 and counts["0905"] == 1
    corpus = read_corpus(tmp_path / "raw")
    assert corpus.waveforms.shape == (34, 3, 6000)
    assert set(corpus.stations.loc[corpus.stations["role"] == "target", "station"]) == \
        {"0905", "6501"}


# ------------------------------------------------------------------------------------------
# processed AFAD ASCII through the whole ingest: provenance columns, short records padded


def _processed_triplet(folder, station, data, seconds):
    """A processed TADAS export: tag + AAD_* keys before the raw header, `seconds` long."""
    n = int(seconds * 100)
    paths = write_triplet(folder, station, data[:, :n])
    preamble = ("AAD_Filtered_TADAS_FILE\nAAD_BASELINE_CORRECTION: YES\nAAD_FILTER_TYPE: "
                "Butterworth\nAAD_FILTER_ORDER: 4\nAAD_LOW_CUT_FREQUENCY_HZ: 0.1\n"
                "AAD_HIGH_CUT_FREQUENCY_HZ: 25\n")
    for path in paths:
        path.write_text(preamble + path.read_text())
    return paths


def test_processed_afad_ascii_is_ingested_with_its_processing(tmp_path):
    data = _signal(seed=7)
    _processed_triplet(tmp_path / "src" / "proc_0205", "0205", data, seconds=35.0)
    result = collect([tmp_path / "src"])
    assert len(result.quarantine) == 0
    (row,) = result.records.to_dict("records")
    assert row["aad_filter_type"] == "Butterworth" and row["aad_filter_order"] == "4"
    assert row["aad_low_cut_frequency_hz"] == "0.1" and row["aad_baseline_correction"] == "YES"
    assert row["source_preamble"] == "AAD_Filtered_TADAS_FILE"
    assert row["processing"].startswith("AFAD: AAD_BASELINE_CORRECTION=YES")
    window = result.waveforms[0]
    np.testing.assert_allclose(window[:, :3500], data[:, :3500], atol=1e-6)  # 6 decimals
    assert np.all(window[:, 3500:] == 0)  # 35 s record zero-padded to 6000 samples


# ------------------------------------------------------------------------------------------
# units are never guessed; orientation is never assumed


def test_obspy_record_without_units_is_quarantined(broken_set):
    result = collect([broken_set / "TK.2020.HN.mseed"])
    assert len(result.records) == 0
    (entry,) = result.quarantine.entries
    assert entry.reason == "units_unknown" and entry.station == "2020"
    scaled = collect([broken_set / "TK.2020.HN.mseed"], IngestOptions(scale=1.0))
    assert scaled.records["units_original"].tolist() == ["declared by --scale"]


def test_evt_ingest_needs_an_orientation_and_uses_the_header_sensitivity(tmp_path, capsys):
    import warnings

    import obspy

    evt = Path(obspy.__file__).parent / "io" / "kinemetrics" / "tests" / "data" / \
        "BI008_MEMA-04823.evt"
    if not evt.exists():
        pytest.skip(f"obspy test file {evt} is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = collect([evt])
        assert [e.reason for e in plain.quarantine.entries] == ["unknown_orientation"]
        code = cli_main(["ingest", str(evt), "--out", str(tmp_path / "raw"), "--no-progress",
                         "--orientation", "0=N", "1=E", "2=U", "--min-duration-s", "5"])
    assert code == 0, capsys.readouterr().err
    records = pd.read_csv(tmp_path / "raw" / "records.csv", dtype={"station": str})
    (row,) = records.to_dict("records")
    assert row["station"] == "MEMA" and row["sampling_rate_original"] == 250.0
    assert row["units_original"] == "counts (Kinemetrics EVT)"
    assert "V/g" in row["processing"]


def test_ingest_with_a_stationxml_inventory(tmp_path):
    from test_io_readers import _band_limited, _counts, _inventory
    from obspy import Stream, Trace, UTCDateTime

    rate = 100.0
    truth = _band_limited(rate, seconds=70.0)
    channels = ["HNE", "HNN", "HNZ"]
    src = tmp_path / "src"
    src.mkdir()
    Stream([Trace(np.rint(c).astype(np.int32), header={
        "network": "XX", "station": "TEST", "channel": ch, "sampling_rate": rate,
        "starttime": UTCDateTime(2021, 1, 1)}) for c, ch in zip(_counts(truth, rate), channels)]
    ).write(str(src / "XX.TEST.mseed"), format="MSEED")
    inventory = tmp_path / "station.xml"
    _inventory(channels, [90.0, 0.0, 0.0], [0.0, 0.0, -90.0], rate).write(
        str(inventory), format="STATIONXML")
    assert cli_main(["ingest", str(src), "--out", str(tmp_path / "raw"), "--no-progress"]) == 1
    assert cli_main(["ingest", str(src), "--out", str(tmp_path / "raw"), "--no-progress",
                     "--inventory", str(inventory), "--water-level", "none"]) == 0
    corpus = read_corpus(tmp_path / "raw")
    row = corpus.records.iloc[0]
    assert "remove_response(output=ACC" in row["processing"] and "station.xml" in \
        row["processing"]
    assert "water_level=None" in row["processing"]
    inner = slice(500, 5500)
    expected = truth[:, :6000] * 100.0
    error = np.abs(corpus.waveforms[0][:, inner] - expected[:, inner]).max()
    assert error < 1e-3 * np.abs(expected).max()


def test_bad_inventory_and_orientation_options_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "bad.xml").write_text("<not a station xml/>")
    assert cli_main(["ingest", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                     "--inventory", str(tmp_path / "bad.xml")]) == 1
    assert "--inventory" in capsys.readouterr().err
    assert cli_main(["ingest", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                     "--orientation", "1=sideways"]) == 1
    assert "--orientation '1=sideways'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pre_filt"):
        IngestOptions(pre_filt=(1.0, 0.5, 20.0, 30.0))


# ------------------------------------------------------------------------------------------
# no single record stops an ingest; an ingested folder round-trips exactly


def test_spike_beyond_steim2_is_written_losslessly(tmp_path):
    from obspy import read

    data = _signal(seed=8)
    data[0, 2000] = 7000.0  # a 7000 cm/s^2 jump: STEIM2 holds at most 2^29 counts (5369)
    write_triplet(tmp_path / "src" / "spike_0205", "0205", data)
    write_triplet(tmp_path / "src" / "good_1716", "1716", _signal(seed=9))
    result = ingest([tmp_path / "src"], tmp_path / "raw")
    assert len(result.records) == 2 and len(result.quarantine) == 0
    rows = pd.read_csv(tmp_path / "raw" / "records.csv", dtype={"station": str})
    files = dict(zip(rows["station"], rows["file"]))
    spike = read(str(tmp_path / "raw" / files["0205"]))
    assert {tr.stats.mseed.encoding for tr in spike} == {"INT32"}
    good = read(str(tmp_path / "raw" / files["1716"]))
    assert {tr.stats.mseed.encoding for tr in good} == {"STEIM2"}
    assert spike[0].data[2000] == 700_000_000  # 7000 cm/s^2 at 1e5 counts per cm/s^2
    corpus = read_corpus(tmp_path / "raw")
    index = list(corpus.records["station"]).index("0205")
    np.testing.assert_allclose(corpus.waveforms[index], data[:, :6000], atol=2e-4)


def _counts_of(folder):
    from obspy import read

    rows = pd.read_csv(folder / "records.csv", dtype={"station": str})
    return {row.station: np.stack([tr.data for tr in read(str(folder / row.file))])
            for row in rows.itertuples()}


def test_reingesting_an_ingested_folder_is_exact(tmp_path):
    data = _signal(seed=10)
    data[1, 3000] = -3000.0  # x 3 below: a 9000 cm/s^2 jump, beyond STEIM2 too
    write_triplet(tmp_path / "src" / "a_0205", "0205", data * 3.0)  # peaks ~ 200 cm/s^2
    savemat(tmp_path / "src" / "20201030115124_1716.mat", {"signal": _signal(seed=11).T,
                                                           "fs": 200.0})
    first = tmp_path / "first"
    assert len(ingest([tmp_path / "src"], first).records) == 2
    second = tmp_path / "second"
    result = ingest([first], second)
    assert len(result.quarantine) == 0 and len(result.records) == 2
    before, after = _counts_of(first), _counts_of(second)
    assert before.keys() == after.keys()
    for station in before:
        np.testing.assert_array_equal(after[station], before[station])  # bit-exact counts
    rows = result.records.set_index("station")
    assert rows.loc["0205", "vs30"] == 369  # metadata carried over
    assert rows.loc["0205", "source_record_id"] == "0205_20201030T115101"
    assert rows.loc["0205", "source_format"] == "corpus"
    third = ingest([second], tmp_path / "third")
    assert third.records["record_id"].tolist() == result.records["record_id"].tolist()


def test_a_record_the_writer_refuses_is_quarantined_not_fatal(tmp_path, monkeypatch):
    import timesnet_gen.corpus.format as fmt

    write_triplet(tmp_path / "src" / "a_0205", "0205", _signal(seed=12))
    write_triplet(tmp_path / "src" / "b_1716", "1716", _signal(seed=13))
    real = fmt.to_counts

    def refuse_1716(acc, counts_per_cm_s2):
        if abs(float(acc[0, 0]) - _signal(seed=13)[0, 0]) < 1e-5:
            raise fmt.CorpusError("cannot encode")
        return real(acc, counts_per_cm_s2)

    monkeypatch.setattr(fmt, "to_counts", refuse_1716)
    result = ingest([tmp_path / "src"], tmp_path / "raw")
    assert list(result.records["station"]) == ["0205"]
    assert [(e.station, e.reason) for e in result.quarantine.entries] == [
        ("1716", "unencodable")]
    quarantine = pd.read_csv(tmp_path / "raw" / "quarantine.csv", dtype={"station": str})
    assert "cannot encode" in quarantine["detail"].iloc[0]


# ------------------------------------------------------------------------------------------
# --out that is a file or holds a source is refused before anything is read


def test_out_containing_a_source_is_refused(tmp_path, capsys):
    src = tmp_path / "out" / "p" / "afad"
    write_triplet(src, "0205", _signal(seed=14))
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert cli_main(["ingest", str(src), "--out", str(tmp_path / "out" / "p")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would replace the input" in err
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    assert cli_main(["ingest", str(src), "--out", str(src)]) == 1


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    write_triplet(tmp_path / "src", "0205", _signal(seed=15))
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert cli_main(["ingest", str(tmp_path / "src"), "--out", str(target)]) == 1
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(("step", "encoding"), [
    (2**29 - 1, "STEIM2"), (-(2**29), "STEIM2"), (2**29, "INT32"), (-(2**29) - 1, "INT32"),
])
def test_writer_picks_a_lossless_encoding_at_the_steim2_limit(tmp_path, step, encoding):
    from obspy import read

    from timesnet_gen.corpus.format import lossless_encoding, read_record, write_record

    counts = np.zeros((3, 600), np.int64)
    counts[1, 300:] = step  # one jump of `step` counts
    assert lossless_encoding(counts) == encoding
    write_record(tmp_path / "r.mseed", counts / 1e5, "0205")
    assert {tr.stats.mseed.encoding for tr in read(str(tmp_path / "r.mseed"))} == {encoding}
    raw = np.stack([tr.data for tr in read(str(tmp_path / "r.mseed"))])
    np.testing.assert_array_equal(raw[[0, 1, 2]], counts)  # HNE, HNN, HNZ written in order
    np.testing.assert_allclose(read_record(tmp_path / "r.mseed"), counts / 1e5, rtol=1e-7)
