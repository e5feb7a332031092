"""Readers against every real record in ../shared/data and hand-made obspy-format files."""

from pathlib import Path

import numpy as np
import obspy
import pytest
from obspy import Stream, Trace, UTCDateTime

from timesnet_gen.io.orientation import parse_mapping
from timesnet_gen.io.quarantine import SkipRecord
from timesnet_gen.io.units import UnitOptions
from timesnet_gen.io.readers import (
    RawRecord,
    channel_component,
    orient_horizontals,
    parse_afad_asc,
    parse_time,
    processing_keys,
    read_afad_asc,
    read_afad_mat,
    read_obspy,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAT_DIR = DATA / "afad_mat"
ASC_DIR = DATA / "afad_asc" / "samos_2020"


def _mat_files():
    return sorted(MAT_DIR.glob("*.mat")) if MAT_DIR.is_dir() else []


@pytest.mark.skipif(not MAT_DIR.is_dir(), reason=f"real AFAD .mat examples absent ({MAT_DIR})")
@pytest.mark.parametrize("path", _mat_files(), ids=lambda p: p.name)
def test_real_afad_mat_records_match_their_headers(path):
    from scipy.io import loadmat

    (record,) = read_afad_mat(path)
    assert isinstance(record, RawRecord)
    an = loadmat(str(path), squeeze_me=True, struct_as_record=False)["EQ"].anEQ
    # station from the header, and it agrees with the whole token of the file name
    assert record.station == f"{int(an.statID):04d}" == path.stem.split("_")[1]
    assert record.sampling_rate == pytest.approx(1.0 / an.sampling) == pytest.approx(100.0)
    assert record.data.shape == (3, int(an.numofData))
    # units: the header PGA (cm/s^2) is the peak of each component E, N, U
    np.testing.assert_allclose(np.abs(record.data).max(axis=1), an.pga, rtol=1e-6)
    assert record.meta["units_original"] == "cm/s^2"
    assert record.starttime == parse_time(an.recordtime)
    assert record.meta["event_id"] == path.stem.split("_")[0]
    assert 0 < record.meta["depth_km"] < 40 and 0 < record.meta["distance_km"] < 200


def _asc_station_dirs():
    return sorted(d for d in ASC_DIR.iterdir() if d.is_dir()) if ASC_DIR.is_dir() else []


@pytest.mark.skipif(not ASC_DIR.is_dir(), reason=f"real AFAD .asc examples absent ({ASC_DIR})")
def test_real_afad_asc_records_match_their_headers():
    files = sorted(p for p in ASC_DIR.rglob("*.asc") if not p.name.startswith("._"))
    assert len(files) == 78
    results = read_afad_asc([parse_afad_asc(p) for p in files])
    records = [r for _, r in results]
    assert all(isinstance(r, RawRecord) for r in records), [str(r) for r in records]
    assert len(records) == 26
    by_station = {r.station: r for r in records}
    # station from the header = the whole token at the end of each folder name
    assert set(by_station) == {d.name.rsplit("_", 1)[1] for d in _asc_station_dirs()}
    for record in records:
        headers = [parse_afad_asc(Path(p)).header for p in record.sources]
        assert [h["STREAM"][-1] for h in headers] == ["E", "N", "Z"]
        assert all(h["STATION_CODE"] == record.station for h in headers)
        assert record.sampling_rate == pytest.approx(1.0 / float(headers[0]["SAMPLING_INTERVAL_S"]))
        assert record.data.shape[1] == int(headers[0]["NDATA"])
        assert headers[0]["UNITS"] == "cm/s^2"
        # header PGA per component = peak of the samples read (cm/s^2, no scaling applied)
        np.testing.assert_allclose(np.abs(record.data).max(axis=1),
                                   [float(h["PGA_CM/S^2"]) for h in headers], rtol=1e-4)
        assert record.starttime == parse_time(headers[0]["DATE_TIME_FIRST_SAMPLE_YYYYMMDD_HHMMSS"])
        assert record.network == "TK" and record.meta["magnitude"] == 6.6
        assert record.meta["vs30"] == float(headers[0]["VS30_M/S"])


@pytest.mark.skipif(not ASC_DIR.is_dir(), reason=f"real AFAD .asc examples absent ({ASC_DIR})")
def test_macos_junk_files_are_not_afad_ascii():
    junk = next(ASC_DIR.rglob("._*.asc"))
    with pytest.raises(SkipRecord, match="no AFAD ASCII header"):
        parse_afad_asc(junk)


# ------------------------------------------------------------------------------------------
# obspy formats


def _stream(channels, station="0205", data=None, rate=100.0, n=3000, network="TK"):
    rng = np.random.default_rng(0)
    traces = []
    for i, channel in enumerate(channels):
        samples = rng.normal(size=n).astype(np.float32) if data is None else data[i]
        traces.append(Trace(samples, header={
            "network": network, "station": station, "channel": channel,
            "sampling_rate": rate, "starttime": UTCDateTime("2021-03-04T05:06:07.5"),
        }))
    return Stream(traces)


@pytest.mark.parametrize(("channel", "expected"), [
    ("HNE", ("HN", "E")), ("HNZ", ("HN", "U")), ("HN1", ("HN", "1")), ("BHN", ("BH", "N")),
    ("HH2", ("HH", "2")), ("EW", ("", "E")), ("UD2", ("2", "U")), ("NS1", ("1", "N")),
    ("LOG", None),
])
def test_channel_component(channel, expected):
    assert channel_component(channel) == expected


def test_mseed_hne_hnn_hnz_read_in_enu_order(tmp_path):
    stream = _stream(["HNZ", "HNE", "HNN"])
    stream.write(str(tmp_path / "x.mseed"), format="MSEED")
    (record,) = read_obspy(tmp_path / "x.mseed", scale=1.0)  # the user declares cm/s^2
    assert record.station == "0205" and record.network == "TK" and record.sampling_rate == 100
    by_channel = {tr.stats.channel: tr.data for tr in stream}
    for row, channel in zip(record.data, ["HNE", "HNN", "HNZ"]):
        np.testing.assert_allclose(row, by_channel[channel], rtol=1e-6)
    assert record.starttime == UTCDateTime("2021-03-04T05:06:07.5")


def test_broadband_channels_and_scale(tmp_path):
    _stream(["BHE", "BHN", "BHZ"]).write(str(tmp_path / "bb.mseed"), format="MSEED")
    (plain,) = read_obspy(tmp_path / "bb.mseed", scale=1.0)
    (scaled,) = read_obspy(tmp_path / "bb.mseed", scale=100.0)  # m/s^2 -> cm/s^2
    np.testing.assert_allclose(scaled.data, 100.0 * plain.data)
    assert scaled.meta["units_original"] == "declared by --scale"
    assert scaled.meta["processing"] == "x calib 1 x --scale 100"


def test_mseed_without_units_is_quarantined_not_guessed(tmp_path):
    _stream(["HNE", "HNN", "HNZ"]).write(str(tmp_path / "counts.mseed"), format="MSEED")
    (skip,) = read_obspy(tmp_path / "counts.mseed")
    assert isinstance(skip, SkipRecord) and skip.reason == "units_unknown"
    assert "--inventory" in skip.detail and "--scale" in skip.detail


def test_sac_1_2_rotated_with_azimuths(tmp_path):
    rng = np.random.default_rng(3)
    east, north, up = rng.normal(size=(3, 2000))
    az1, az2 = 30.0, 120.0
    h1 = north * np.cos(np.radians(az1)) + east * np.sin(np.radians(az1))
    h2 = north * np.cos(np.radians(az2)) + east * np.sin(np.radians(az2))
    stream = _stream(["HN1", "HN2", "HNZ"], data=[h1, h2, up], n=2000)
    for trace, az in zip(stream, (az1, az2, 0.0)):
        trace.stats.sac = {"cmpaz": az}  # no cmpinc: the dip is unknown
        trace.write(str(tmp_path / f"r.{trace.stats.channel}.sac"), format="SAC")
    (skip,) = read_obspy(tmp_path / "r.*.sac", scale=1.0)
    assert skip.reason == "unknown_orientation" and "HN1, HN2" in skip.detail
    for trace, az in zip(stream, (az1, az2, 0.0)):
        trace.stats.sac = {"cmpaz": az, "cmpinc": 90.0 if az else 0.0}
        trace.write(str(tmp_path / f"r.{trace.stats.channel}.sac"), format="SAC")
    (record,) = read_obspy(tmp_path / "r.*.sac", scale=1.0)
    assert record.meta["orientation"] == ("rotated from HN1/HN2 (azimuths 30, 120 deg) "
                                          "[HN1: sac, HN2: sac, HNZ: code]")
    # SAC stores float32: compare at that precision
    np.testing.assert_allclose(record.data, np.stack([east, north, up]), atol=1e-5)
    # a single component per file is an incomplete record, not a crash
    (skip,) = read_obspy(tmp_path / "r.HN1.sac", scale=1.0)
    assert isinstance(skip, SkipRecord) and skip.reason == "missing_component"


def test_orient_horizontals_refuses_parallel_azimuths():
    with pytest.raises(ValueError, match="parallel"):
        orient_horizontals(np.zeros(3), np.zeros(3), 10.0, 190.0)


def test_hn1_hn2_without_azimuth_are_quarantined_unless_mapped(tmp_path):
    stream = _stream(["HN1", "HN2", "HNZ"])
    stream.write(str(tmp_path / "x.mseed"), format="MSEED")
    (skip,) = read_obspy(tmp_path / "x.mseed", scale=1.0)
    assert isinstance(skip, SkipRecord) and skip.reason == "unknown_orientation"
    assert "HN1, HN2" in skip.detail and "--orientation" in skip.detail
    # the user's mapping orients them: 1 = N, 2 = E exactly, no rotation
    (record,) = read_obspy(tmp_path / "x.mseed", scale=1.0,
                           mapping=parse_mapping(["HN1=N", "HN2=E"]))
    by_channel = {tr.stats.channel: tr.data for tr in stream}
    np.testing.assert_array_equal(record.data[0], by_channel["HN2"])
    np.testing.assert_array_equal(record.data[1], by_channel["HN1"])
    assert record.meta["orientation"] == "ENU"


def test_sac_headers_become_metadata(tmp_path):
    stream = _stream(["HNE", "HNN", "HNZ"])
    for trace in stream:
        trace.stats.sac = {"a": 7.5, "b": 0.5, "evla": 38.0, "evlo": 27.0, "evdp": 12.0,
                           "stla": 38.1, "stlo": 27.2, "mag": 5.1, "kevnm": "ev42"}
    # SAC holds one trace per file; obspy reads a file list as one stream via a glob
    for trace in stream:
        trace.write(str(tmp_path / f"r.{trace.stats.channel}.sac"), format="SAC")
    (record,) = read_obspy(tmp_path / "r.*.sac", scale=1.0)
    assert record.meta["p_pick_s"] == pytest.approx(7.0)
    assert record.meta["magnitude"] == pytest.approx(5.1)
    assert record.meta["event_id"] == "ev42"
    assert 15 < record.meta["distance_km"] < 25


def test_empty_station_code_falls_back_to_file_name(tmp_path):
    _stream(["HNE", "HNN", "HNZ"], station="").write(
        str(tmp_path / "AFAD.1716.02_20201030115124.mseed"), format="MSEED")
    (record,) = read_obspy(tmp_path / "AFAD.1716.02_20201030115124.mseed", scale=1.0)
    assert record.station == "1716"


def test_obspy_problems_are_skips_not_crashes(tmp_path):
    (tmp_path / "junk.mseed").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(SkipRecord, match="obspy cannot read it") as info:
        read_obspy(tmp_path / "junk.mseed")
    assert info.value.reason == "unreadable"
    _stream(["HNE", "HNZ"]).write(str(tmp_path / "two.mseed"), format="MSEED")
    (skip,) = read_obspy(tmp_path / "two.mseed", scale=1.0)
    assert isinstance(skip, SkipRecord) and skip.reason == "missing_component"
    assert "no N" in skip.detail


def test_unreadable_and_unknown_mat(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    with pytest.raises(SkipRecord) as info:
        read_afad_mat(tmp_path / "bad.mat")
    assert info.value.reason == "unreadable" and "bad.mat" in info.value.detail
    from scipy.io import savemat

    savemat(tmp_path / "other.mat", {"accel": np.zeros((10, 3))})
    with pytest.raises(SkipRecord, match="no 'EQ' struct nor 'signal' array"):
        read_afad_mat(tmp_path / "other.mat")


def test_signal_layout_both_orientations(tmp_path):
    from scipy.io import savemat

    data = np.random.default_rng(0).normal(size=(3, 500))
    savemat(tmp_path / "20201030115124_0205.mat", {"signal": data, "fs": 200.0})
    savemat(tmp_path / "b_0205.mat", {"signal": data.T, "dt": 0.005, "station": "0205"})
    for name in ("20201030115124_0205.mat", "b_0205.mat"):
        (record,) = read_afad_mat(tmp_path / name)
        assert record.station == "0205"  # from the key, else the file name's whole token
        np.testing.assert_allclose(record.data, data)
        assert record.sampling_rate == pytest.approx(200.0)


# ------------------------------------------------------------------------------------------
# AFAD processed (filtered) ASCII: a raw file with the TADAS processing lines prepended

PROCESSING = {"AAD_BASELINE_CORRECTION": "YES", "AAD_FILTER_TYPE": "Butterworth",
              "AAD_FILTER_ORDER": "4", "AAD_LOW_CUT_FREQUENCY_HZ": "0.05",
              "AAD_HIGH_CUT_FREQUENCY_HZ": "25"}


def _raw_asc(path, station="0205", comp="E", n=3000, seed=0):
    samples = np.random.default_rng(seed).normal(0, 10.0, n)
    header = {"NETWORK": "TK", "STATION_CODE": station, "SAMPLING_INTERVAL_S": "0.01",
              "NDATA": str(n), "STREAM": f"HN{'Z' if comp == 'U' else comp}",
              "UNITS": "cm/s^2", "VS30_M/S": "369",
              "DATE_TIME_FIRST_SAMPLE_YYYYMMDD_HHMMSS": "2020/10/30 11:51:01.92"}
    lines = [f"{k}: {v}" for k, v in header.items()] + [f"{x:.6f}" for x in samples]
    path.write_text("\n".join(lines) + "\n")
    return samples


def processed_copy(raw_path, dst, separator=": "):
    """The processed TADAS export of a raw file: format tag + AAD_* keys before the header."""
    lines = ["AAD_Filtered_TADAS_FILE"] + [f"{k}{separator}{v}" for k, v in PROCESSING.items()]
    dst.write_text("\n".join(lines) + "\n" + raw_path.read_text())
    return dst


@pytest.mark.parametrize("separator", [": ", " ", "="], ids=["colon", "space", "equals"])
def test_processed_afad_ascii_keeps_its_provenance(tmp_path, separator):
    raw = tmp_path / "raw_0205_E.asc"
    samples = _raw_asc(raw)
    comp = parse_afad_asc(processed_copy(raw, tmp_path / "proc_0205_E.asc", separator))
    assert comp.preamble[0] == "AAD_Filtered_TADAS_FILE"
    assert comp.header["STATION_CODE"] == "0205" and comp.header["NDATA"] == "3000"
    np.testing.assert_array_equal(comp.data, np.round(samples, 6))
    assert processing_keys(comp.preamble, comp.header) == PROCESSING


def test_processed_afad_ascii_record_metadata(tmp_path):
    parts = []
    for i, comp in enumerate("ENU"):
        raw = tmp_path / f"raw_0205_{comp}.asc"
        _raw_asc(raw, comp=comp, seed=i)
        parts.append(parse_afad_asc(processed_copy(raw, tmp_path / f"p_0205_{comp}.asc")))
    (([*_], record),) = read_afad_asc(parts)
    assert isinstance(record, RawRecord) and record.data.shape == (3, 3000)
    assert record.meta["aad_filter_type"] == "Butterworth"
    assert record.meta["aad_low_cut_frequency_hz"] == "0.05"
    assert record.meta["source_preamble"] == "AAD_Filtered_TADAS_FILE"  # AAD_*: header keys
    assert record.meta["processing"].startswith("AFAD: AAD_BASELINE_CORRECTION=YES;")


@pytest.mark.skipif(not ASC_DIR.is_dir(), reason=f"real AFAD .asc examples absent ({ASC_DIR})")
def test_real_raw_file_made_processed_reads_the_same(tmp_path):
    raw = sorted(p for p in ASC_DIR.rglob("*_E.asc") if not p.name.startswith("._"))[0]
    original = parse_afad_asc(raw)
    processed = parse_afad_asc(processed_copy(raw, tmp_path / raw.name))
    assert {k: v for k, v in processed.header.items() if not k.startswith("AAD_")} == \
        original.header
    np.testing.assert_array_equal(processed.data, original.data)


# ------------------------------------------------------------------------------------------
# obspy's own test files, read from the installed obspy

OBSPY_IO = Path(obspy.__file__).parent / "io"
EVT = OBSPY_IO / "kinemetrics" / "tests" / "data" / "BI008_MEMA-04823.evt"
KNET = OBSPY_IO / "nied" / "tests" / "data" / "test.knet"
MSEED = OBSPY_IO / "mseed" / "tests" / "data" / "BW.BGLD.__.EHE.D.2008.001.first_10_records"


def _need(path):
    if not path.exists():
        pytest.skip(f"obspy test file {path} is not installed")
    return path


def test_kinemetrics_evt_units_from_header_and_orientation_not_assumed():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (skip,) = read_obspy(_need(EVT))
        (record,) = read_obspy(EVT, mapping=parse_mapping(["0=N", "1=E", "2=U"]))
        traces = {tr.stats.channel: tr for tr in obspy.read(str(EVT))}
    # numeric channels 0/1/2 whose EVT orientation fields are all zero: not oriented
    assert skip.reason == "unknown_orientation" and "0 and 3" in skip.detail
    # counts -> cm/s^2 from the header: full scale 2.5 V / 2^23, sensitivity (V/g), g
    for row, channel in zip(record.data, ("1", "0", "2")):
        evt = traces[channel].stats.kinemetrics_evt
        factor = evt.chan_fullscale / 2**23 / evt.chan_sensitivity * 980.665
        np.testing.assert_allclose(row, traces[channel].data * factor, rtol=1e-12)
    assert record.meta["units_original"] == "counts (Kinemetrics EVT)"
    assert "V/g x 980.665 (EVT header; range 1g)" in record.meta["processing"]
    assert record.sampling_rate == 250.0 and record.station == "MEMA"


def test_knet_units_match_the_header_peak(tmp_path):
    text = _need(KNET).read_bytes()
    for direction in ("E-W", "N-S", "U-D"):  # one file per component, as K-NET ships them
        (tmp_path / f"AKT013.{direction[0]}").write_bytes(
            text.replace(b"Dir.              E-W", f"Dir.              {direction}".encode()))
    (record,) = read_obspy(tmp_path / "AKT013.*")
    assert record.meta["orientation"] == "ENU" and record.meta["units_original"] == \
        "counts (K-NET)"
    # K-NET's Max. Acc. (gal) is the peak after removing the mean
    peak = np.abs(record.data - record.data.mean(axis=1, keepdims=True)).max(axis=1)
    np.testing.assert_allclose(peak, 4.383, atol=5e-4)


def test_fdsn_miniseed_counts_need_a_response_or_scale():
    (skip,) = read_obspy(_need(MSEED))
    assert skip.reason == "units_unknown"
    (incomplete,) = read_obspy(MSEED, scale=1.0)
    assert incomplete.reason == "missing_component" and "no N/U (have E)" in incomplete.detail


# ------------------------------------------------------------------------------------------
# instrument response removal with a synthetic inventory of known response


def _accelerometer(sensitivity=4.0e5, f_corner=50.0, damping=0.7):
    """Poles of a 2-pole accelerometer, A0 normalising |H(1 Hz)| = 1, gain in counts/(m/s^2)."""
    w0 = 2 * np.pi * f_corner
    poles = [complex(-damping * w0, w0 * np.sqrt(1 - damping**2)),
             complex(-damping * w0, -w0 * np.sqrt(1 - damping**2))]
    s = 2j * np.pi * 1.0
    a0 = abs((s - poles[0]) * (s - poles[1]))
    return poles, a0, sensitivity


def _inventory(channels, azimuths, dips, rate):
    from obspy.core.inventory import Channel, Inventory, Network, Response, Station

    poles, a0, sensitivity = _accelerometer()
    chans = []
    for code, az, dip in zip(channels, azimuths, dips):
        response = Response.from_paz([], poles, sensitivity, 1.0, "M/S**2", "COUNTS", 1.0,
                                     normalization_factor=a0)
        chans.append(Channel(code, "", 38.0, 27.0, 10.0, 0.0, azimuth=az, dip=dip,
                             sample_rate=rate, response=response))
    station = Station("TEST", 38.0, 27.0, 10.0, channels=chans,
                      start_date=UTCDateTime(2000, 1, 1))
    return Inventory([Network("XX", stations=[station])], source="test")


def _counts(acc_m_s2, rate):
    """Forward model in closed form: counts = IFFT(FFT(a) * S * A0 / ((s - p1)(s - p2)))."""
    poles, a0, sensitivity = _accelerometer()
    n = acc_m_s2.shape[-1]
    s = 2j * np.pi * np.fft.rfftfreq(n, 1.0 / rate)
    h = sensitivity * a0 / ((s - poles[0]) * (s - poles[1]))
    return np.fft.irfft(np.fft.rfft(acc_m_s2, axis=-1) * h, n=n, axis=-1)


def _band_limited(rate, seconds=60.0, seed=0):
    """(3, N) m/s^2: 1-10 Hz noise under a smooth envelope that is zero at both ends."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.normal(size=(3, n)), axis=-1)
    f = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[:, (f < 1.0) | (f > 10.0)] = 0
    t = np.arange(n) / rate
    return np.fft.irfft(spectrum, n=n, axis=-1) * np.sin(np.pi * t / seconds) ** 4


@pytest.mark.parametrize("layout", ["ENZ", "12Z"])
def test_response_removal_recovers_the_known_acceleration(tmp_path, layout):
    rate = 200.0
    truth = _band_limited(rate)  # E, N, U in m/s^2
    if layout == "ENZ":
        channels, azimuths, signals = ["HNE", "HNN", "HNZ"], [90.0, 0.0, 0.0], truth
    else:  # horizontals at 30 and 120 deg: oriented by the inventory's azimuths
        channels, azimuths = ["HN1", "HN2", "HNZ"], [30.0, 120.0, 0.0]
        a1, a2 = np.radians(30.0), np.radians(120.0)
        signals = np.stack([truth[1] * np.cos(a1) + truth[0] * np.sin(a1),
                            truth[1] * np.cos(a2) + truth[0] * np.sin(a2), truth[2]])
    counts = _counts(signals, rate)
    stream = Stream([Trace(np.rint(c).astype(np.int32), header={
        "network": "XX", "station": "TEST", "channel": ch, "sampling_rate": rate,
        "starttime": UTCDateTime(2021, 1, 1)}) for c, ch in zip(counts, channels)])
    stream.write(str(tmp_path / "XX.TEST.mseed"), format="MSEED")
    inventory = _inventory(channels, azimuths, [0.0, 0.0, -90.0], rate)
    (record,) = read_obspy(tmp_path / "XX.TEST.mseed",
                           units=UnitOptions(inventory=inventory, inventory_names="test.xml"))
    expected = truth * 100.0  # cm/s^2
    inner = slice(int(5 * rate), int(55 * rate))
    error = np.abs(record.data[:, inner] - expected[:, inner]).max()
    assert error < 1e-4 * np.abs(expected).max()  # measured 1.7e-6 (int32 rounding)
    assert record.meta["units_original"] == "COUNTS (response input M/S**2)"
    assert record.meta["processing"].startswith("remove_response(output=ACC, pre_filt=")
    assert record.meta["station_latitude"] == 38.0
    if layout == "12Z":
        assert record.meta["orientation"].startswith("rotated from HN1/HN2 (azimuths 30, 120")
        assert "HN1: inventory" in record.meta["orientation"]


def test_inventory_without_the_channel_leaves_units_unknown(tmp_path):
    _stream(["HNE", "HNN", "HNZ"], station="OTHER").write(str(tmp_path / "o.mseed"),
                                                          format="MSEED")
    inventory = _inventory(["HNE", "HNN", "HNZ"], [90.0, 0.0, 0.0], [0, 0, -90], 100.0)
    (skip,) = read_obspy(tmp_path / "o.mseed", units=UnitOptions(inventory=inventory))
    assert skip.reason == "units_unknown"


# ------------------------------------------------------------------------------------------
# orientation: mappings and headers


@pytest.mark.parametrize("bad", ["0", "0=", "=N", "1=Q", "1=30", "1=30/100", "1=a/b"])
def test_bad_orientation_entries_are_refused(bad):
    with pytest.raises(ValueError, match="--orientation"):
        parse_mapping([bad])


def test_orientation_mapping_values():
    assert parse_mapping(["0=N", "MEMA.1=e", "2=z", "HN3=skip", "HN1=390/-0"]) == {
        "0": (0.0, 0.0), "MEMA.1": (90.0, 0.0), "2": (0.0, -90.0), "HN3": "skip",
        "HN1": (30.0, 0.0)}


def test_sac_downward_vertical_is_flipped(tmp_path):
    stream = _stream(["HNE", "HNN", "HN3"])
    for trace, (az, inc) in zip(stream, ((90, 90), (0, 90), (0, 180))):
        trace.stats.sac = {"cmpaz": az, "cmpinc": inc, "kuser0": "cm/s^2"}
        trace.write(str(tmp_path / f"d.{trace.stats.channel}.sac"), format="SAC")
    (record,) = read_obspy(tmp_path / "d.*.sac")
    np.testing.assert_allclose(record.data[2], -stream[2].data)
    assert "HN3 points down (sign flipped)" in record.meta["orientation"]
    assert record.meta["units_original"] == "cm/s^2 (SAC kuser0)"
