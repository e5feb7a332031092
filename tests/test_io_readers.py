"""Readers against every real record in ../shared/data and hand-made obspy-format files."""

from pathlib import Path

import numpy as np
import pytest
from obspy import Stream, Trace, UTCDateTime

from timesnet_gen.io.orientation import parse_mapping
from timesnet_gen.io.quarantine import SkipRecord
from timesnet_gen.io.readers import (
    RawRecord,
    channel_component,
    orient_horizontals,
    parse_afad_asc,
    parse_time,
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
