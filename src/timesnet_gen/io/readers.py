"""Readers for real strong-motion records: AFAD .mat, AFAD ASCII (.asc), anything obspy reads.

Every reader returns, per record found, either a RawRecord (three components E, N, U in
cm/s^2 at the file's own sampling rate, plus header metadata) or a SkipRecord naming why it
cannot be used. A whole file that cannot be read raises SkipRecord("unreadable", ...).
Files are only opened for reading.

Metadata keys (records.csv columns, absent when the header has no such field):
    event_id, event_time, event_latitude, event_longitude, depth_km, magnitude,
    magnitude_type, distance_km (epicentral), station_name, station_latitude,
    station_longitude, station_elevation_m, vs30 (m/s), site_class, pga_cm_s2 (header),
    instrument, units_original, orientation, p_pick_s (s after the first sample)
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from obspy import Stream, UTCDateTime, read

from timesnet_gen.io.orientation import (
    GEOGRAPHIC,
    SKIP,
    Orientation,
    assemble_enu,
    rotate_to_en,
    trace_orientation,
)
from timesnet_gen.io.quarantine import SkipRecord
from timesnet_gen.io.stations import normalize_station, station_from_name
from timesnet_gen.io.units import G, UNIT_FACTORS, UnitOptions, to_cm_s2  # noqa: F401

COMPONENTS = ("E", "N", "U")


@dataclass
class RawRecord:
    """One 3-component record as read, before resampling and windowing."""

    data: np.ndarray  # (3, N) float64, cm/s^2, rows E, N, U
    sampling_rate: float | None  # Hz; None when the file does not say
    station: str
    starttime: UTCDateTime | None  # time of the first sample; None when unknown
    sources: list[str]  # source file(s), E N U order for one-file-per-component formats
    fmt: str  # afad_mat | afad_asc | obspy:<FORMAT>
    network: str = ""
    location: str = ""
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# shared helpers


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km on a sphere of radius 6371 km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(a, 1.0)))


def _float(value: object) -> float | None:
    """Header value -> float, None when empty or not a number."""
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def parse_time(text: str) -> UTCDateTime | None:
    """'2020/10/30 11:51:01.9260240', '06-Jan-2012 00:16:42', ISO ... -> UTCDateTime or None."""
    text = str(text).strip()
    if not text:
        return None
    for fmt in ("%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M:%S.%f"):
        try:
            return UTCDateTime(datetime.strptime(text, fmt))
        except ValueError:
            pass
    norm = text.replace("/", "-").replace(" ", "T", 1)
    # UTCDateTime takes at most 6 fractional digits
    norm = re.sub(r"(\.\d{6})\d+", r"\1", norm)
    try:
        return UTCDateTime(norm)
    except Exception:  # obspy raises TypeError/ValueError variously
        return None


def stack_components(
    parts: dict[str, tuple[np.ndarray, float | None, UTCDateTime | None]], where: str
) -> tuple[np.ndarray, float | None, UTCDateTime | None]:
    """{E/N/U: (samples, rate Hz, start)} -> ((3, N) array, rate, start), or SkipRecord.

    Components must all be present, share a rate (or all lack one), a length and (within half
    a sample) a start.
    """
    missing = [c for c in COMPONENTS if c not in parts]
    if missing:
        have = ", ".join(sorted(parts)) or "none"
        raise SkipRecord("missing_component", f"{where}: no {'/'.join(missing)} (have {have})")
    rates = [parts[c][1] for c in COMPONENTS]
    usable = [r for r in rates if r is not None and math.isfinite(r) and r > 0]
    if usable and len(usable) < 3:
        raise SkipRecord("unknown_sampling_rate", f"{where}: sampling rates {rates}")
    if usable and max(usable) - min(usable) > 1e-6 * max(usable):
        raise SkipRecord("unequal_sampling_rate", f"{where}: E/N/U at {rates} Hz")
    rate = usable[0] if usable else None  # None: decided later (--default-rate-hz)
    lengths = [len(parts[c][0]) for c in COMPONENTS]
    if len(set(lengths)) > 1:
        raise SkipRecord("unequal_length", f"{where}: E/N/U have {lengths} samples")
    starts = [parts[c][2] for c in COMPONENTS]
    known = [s for s in starts if s is not None]
    if known and (len(known) < 3 or max(known) - min(known) > 0.5 / (rate or 100.0)):
        shown = [str(s) for s in starts]
        raise SkipRecord("unequal_starttime", f"{where}: E/N/U start at {shown}")
    data = np.stack([np.asarray(parts[c][0], dtype=np.float64) for c in COMPONENTS])
    return data, rate, starts[0]


# ------------------------------------------------------------------------------------------
# AFAD .mat


def _mat_value(struct: object, name: str) -> object:
    value = getattr(struct, name, None)
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    return value


def _record_from_eq(an: object, path: Path, known: tuple[str, ...]) -> RawRecord:
    """The AFAD-1218 layout: EQ.anEQ with Accel (N x 3, E N U, cm/s^2), sampling (s) ..."""
    accel = _mat_value(an, "Accel")
    if accel is None:
        raise SkipRecord("unreadable", f"{path.name}: EQ.anEQ has no Accel field")
    accel = np.atleast_2d(np.asarray(accel, dtype=np.float64))
    if accel.shape[1] != 3 and accel.shape[0] == 3:
        accel = accel.T
    if accel.shape[1] != 3:
        raise SkipRecord("missing_component", f"{path.name}: Accel has shape {accel.shape}")
    station_id = _mat_value(an, "statID")
    station = normalize_station(station_id) if station_id is not None else (
        station_from_name(path, known) or ""
    )
    dt = _float(_mat_value(an, "sampling"))
    meta: dict = {"units_original": "cm/s^2", "orientation": "ENU"}
    n_header = _float(_mat_value(an, "numofData"))
    if n_header is not None and n_header > accel.shape[0]:
        raise SkipRecord(
            "truncated", f"{path.name}: numofData {int(n_header)} but Accel has "
            f"{accel.shape[0]} rows", station,
        )
    event_time = parse_time(_mat_value(an, "date") or "")
    if event_time is not None:
        meta["event_time"] = str(event_time)
        meta["event_id"] = event_time.strftime("%Y%m%d%H%M%S")
    epicenter, statco = _mat_value(an, "epicenter"), _mat_value(an, "statco")
    if epicenter is not None and np.size(epicenter) == 2:
        meta["event_latitude"], meta["event_longitude"] = (float(v) for v in epicenter)
    if statco is not None and np.size(statco) == 2:
        meta["station_latitude"], meta["station_longitude"] = (float(v) for v in statco)
    if "event_latitude" in meta and "station_latitude" in meta:
        meta["distance_km"] = haversine_km(
            meta["event_latitude"], meta["event_longitude"],
            meta["station_latitude"], meta["station_longitude"],
        )
    depth = _float(_mat_value(an, "depth"))
    if depth is not None:
        meta["depth_km"] = depth / 1000.0  # this layout stores the hypocentre depth in m
    for key, name in (("magnitude", "magnitudeval"), ("station_elevation_m", "alt")):
        value = _float(_mat_value(an, name))
        if value is not None:
            meta[key] = value
    for key, name in (("magnitude_type", "magnitudetype"), ("station_name", "place"),
                      ("instrument", "recordtype")):
        value = _mat_value(an, name)
        if isinstance(value, str) and value.strip():
            meta[key] = value.strip()
    pga = _mat_value(an, "pga")
    if pga is not None and np.size(pga):
        meta["pga_cm_s2"] = float(np.max(np.abs(pga)))
    return RawRecord(
        data=accel.T.copy(), sampling_rate=(1.0 / dt) if dt else None, station=station,
        starttime=parse_time(_mat_value(an, "recordtime") or ""), sources=[str(path)],
        fmt="afad_mat", network="TK", meta=meta,
    )


_RATE_KEYS = ("fs", "Fs", "sampling_rate", "sr", "samplingRate")
_DT_KEYS = ("dt", "delta", "sampling", "sampling_interval")
_STATION_KEYS = ("station", "statID", "station_id", "station_code", "stationCode")


def _record_from_signal(mat: dict, path: Path, known: tuple[str, ...]) -> RawRecord:
    """The simple layout: `signal` (3, N) or (N, 3), E N U, cm/s^2; rate keys optional."""
    signal = np.asarray(mat["signal"], dtype=np.float64)
    if signal.ndim != 2 or 3 not in signal.shape:
        raise SkipRecord("missing_component", f"{path.name}: signal has shape {signal.shape}")
    data = signal if signal.shape[0] == 3 else signal.T
    rate = next((_float(mat[k]) for k in _RATE_KEYS if k in mat), None)
    if rate is None:
        dt = next((_float(mat[k]) for k in _DT_KEYS if k in mat), None)
        rate = 1.0 / dt if dt else None
    station = next((normalize_station(mat[k]) for k in _STATION_KEYS if k in mat), "") or (
        station_from_name(path, known) or ""
    )
    start = next((parse_time(mat[k]) for k in ("starttime", "start_time") if k in mat), None)
    return RawRecord(
        data=data.copy(), sampling_rate=rate, station=station, starttime=start,
        sources=[str(path)], fmt="afad_mat", meta={"units_original": "cm/s^2",
                                                   "orientation": "ENU"},
    )


def read_afad_mat(path: str | Path, known: tuple[str, ...] = ()) -> list[RawRecord | SkipRecord]:
    """AFAD .mat (MATLAB v5/v7): EQ.anEQ struct(s), or a plain `signal` array.

    Station: statID / station key, else a whole token of the file name (`known` codes first).
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise SkipRecord("unreadable", f"{path.name}: MATLAB v7.3 (HDF5) file; re-save it "
                         "with save(..., '-v7')") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise SkipRecord("unreadable", f"{path.name}: not a readable MATLAB file "
                         f"({type(exc).__name__}: {exc})") from None
    if "EQ" in mat:
        events = np.atleast_1d(getattr(mat["EQ"], "anEQ", np.array([])))
        if events.size == 0:
            raise SkipRecord("unreadable", f"{path.name}: EQ struct without anEQ")
        out: list[RawRecord | SkipRecord] = []
        for an in events.ravel():
            try:
                out.append(_record_from_eq(an, path, known))
            except SkipRecord as skip:
                out.append(skip)
        return out
    if "signal" in mat:
        return [_record_from_signal(mat, path, known)]
    keys = sorted(k for k in mat if not k.startswith("__"))
    raise SkipRecord("unreadable", f"{path.name}: no 'EQ' struct nor 'signal' array "
                     f"(variables: {', '.join(keys) or 'none'})")


# ------------------------------------------------------------------------------------------
# AFAD ASCII


@dataclass
class AscComponent:
    """One AFAD ASCII file: its `KEY: value` header and its samples (one per line)."""

    path: Path
    header: dict[str, str]
    data: np.ndarray  # (N,) float64 in header UNITS
    error: str = ""  # non-empty when the sample block could not be parsed
    preamble: list[str] = field(default_factory=list)  # lines before the header (processed
    # TADAS exports: a format tag such as AAD_Filtered_TADAS_FILE, AAD_* processing keys)


_AAD_KEY = re.compile(r"^(AAD_[A-Z0-9_]+)\s*(?:[:=]\s*|\s+)(\S.*)$", re.IGNORECASE)


def _is_sample_line(line: str) -> bool:
    return all(_float(t) is not None for t in line.split())


def _split_header(text: str) -> tuple[list[str], dict[str, str], int]:
    """(preamble lines, `KEY: value` header, offset where the samples start).

    Lines before the first `KEY: value` line that are not samples are the preamble; after
    the header has started, the first line without ':' starts the samples.
    """
    preamble: list[str] = []
    header: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end].strip()
        if line and ":" not in line:
            if header or _is_sample_line(line):
                break
            preamble.append(line)
        elif line:
            key, _, value = line.partition(":")
            header[key.strip().upper()] = value.strip()
        pos = end + 1
    return preamble, header, pos


def processing_keys(preamble: list[str], header: dict[str, str]) -> dict[str, str]:
    """AAD_* processing keys (baseline, filter type/order/corners) from preamble or header."""
    keys = {k: v for k, v in header.items() if k.startswith("AAD_") and v}
    for line in preamble:
        match = _AAD_KEY.match(line)
        if match:
            keys[match.group(1).upper()] = match.group(2).strip()
    return keys


def parse_afad_asc(path: str | Path) -> AscComponent:
    """Read one AFAD ASCII component file (raw or processed TADAS export).

    SkipRecord('unreadable') when it is not one.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise SkipRecord("unreadable", f"{path.name}: {exc}") from None
    preamble, header, pos = _split_header(text)
    if not any(k in header for k in ("STATION_CODE", "SAMPLING_INTERVAL_S", "STREAM")):
        raise SkipRecord("unreadable", f"{path.name}: no AFAD ASCII header (STATION_CODE, "
                         "SAMPLING_INTERVAL_S, STREAM)")
    tokens = text[pos:].split()
    try:
        data = np.array(tokens, dtype=np.float64)
        error = ""
    except ValueError:
        bad = next(t for t in tokens if _float(t) is None and t.lower() not in
                   ("nan", "inf", "-inf", "+inf"))
        data, error = np.zeros(0), f"non-numeric sample {bad[:20]!r}"
    return AscComponent(path, header, data, error, preamble)


def _asc_component(comp: AscComponent) -> str | None:
    stream = comp.header.get("STREAM", "")
    if stream:
        return {"E": "E", "N": "N", "Z": "U", "U": "U"}.get(stream[-1].upper())
    match = re.search(r"[_.-]([ENUZ])$", comp.path.stem, re.IGNORECASE)
    return {"Z": "U"}.get(match.group(1).upper(), match.group(1).upper()) if match else None


def _asc_group_key(comp: AscComponent, known: tuple[str, ...]) -> tuple[str, str, str, str]:
    """(folder, station, event, file stem without component): the files of one record."""
    header = comp.header
    station = normalize_station(header.get("STATION_CODE", "")) or (
        station_from_name(comp.path, known) or ""
    )
    event = header.get("EVENT_ID") or header.get("EVENT_NAME") or ""
    stem = re.sub(r"[_.-][ENUZ]$", "", comp.path.stem, flags=re.IGNORECASE)
    return str(comp.path.parent), station, event, stem


def _asc_meta(headers: list[dict[str, str]]) -> dict:
    first = headers[0]
    meta: dict = {}
    number_keys = {
        "event_latitude": "EVENT_LATITUDE_DEGREE", "event_longitude": "EVENT_LONGITUDE_DEGREE",
        "depth_km": "EVENT_DEPTH_KM", "distance_km": "EPICENTRAL_DISTANCE_KM",
        "station_latitude": "STATION_LATITUDE_DEGREE",
        "station_longitude": "STATION_LONGITUDE_DEGREE",
        "station_elevation_m": "STATION_ELEVATION_M", "vs30": "VS30_M/S",
    }
    for key, name in number_keys.items():
        value = _float(first.get(name))
        if value is not None:
            meta[key] = value
    for key, name in (("event_id", "EVENT_ID"), ("station_name", "STATION_NAME"),
                      ("site_class", "SITE_CLASSIFICATION_EC8"), ("instrument", "INSTRUMENT"),
                      ("units_original", "UNITS")):
        if first.get(name):
            meta[key] = first[name]
    for mtype in ("W", "L", "D", "S", "B"):
        value = _float(first.get(f"MAGNITUDE_{mtype}"))
        if value is not None:
            meta["magnitude"], meta["magnitude_type"] = value, f"M{mtype.lower()}"
            break
    event_time = parse_time(
        f"{first.get('EVENT_DATE_YYYYMMDD', '')} {first.get('EVENT_TIME_HHMMSS', '')}"
    )
    if event_time is not None:
        meta["event_time"] = str(event_time)
    pgas = [_float(h.get("PGA_CM/S^2")) for h in headers]
    if any(p is not None for p in pgas):
        meta["pga_cm_s2"] = max(abs(p) for p in pgas if p is not None)
    meta["orientation"] = "ENU"
    return meta


def _asc_provenance(parts: list[AscComponent]) -> dict:
    """records.csv columns for processed exports: the preamble and the AAD_* keys."""
    first = parts[0]
    keys = processing_keys(first.preamble, first.header)
    meta: dict = {f"aad_{k[4:].lower()}": v for k, v in keys.items()}
    if first.preamble:
        meta["source_preamble"] = " | ".join(first.preamble)
    meta["processing"] = ("AFAD: " + "; ".join(f"{k}={v}" for k, v in keys.items())
                          if keys else "none")
    return meta


def _asc_record(group: dict[str, AscComponent], where: str) -> RawRecord:
    first = next(iter(group.values()))
    station = normalize_station(first.header.get("STATION_CODE", ""))
    errors = [f"{c.path.name}: {c.error}" for c in group.values() if c.error]
    if errors:
        raise SkipRecord("unreadable", "; ".join(errors), station)
    for part in group.values():
        n_header = _float(part.header.get("NDATA"))
        if n_header is not None and len(part.data) < n_header:
            raise SkipRecord("truncated", f"{part.path.name}: {len(part.data)} samples, header "
                             f"NDATA {int(n_header)}", station)
        kind = part.header.get("DATA_TYPE", "acceleration").lower()
        if kind and "acc" not in kind:
            raise SkipRecord("wrong_units", f"{part.path.name}: DATA_TYPE {kind!r}, "
                             "not acceleration", station)
    parts = {}
    for comp, part in group.items():
        units = part.header.get("UNITS", "cm/s^2").strip() or "cm/s^2"
        factor = UNIT_FACTORS.get(units.lower().replace(" ", ""))
        if factor is None:
            raise SkipRecord("wrong_units", f"{part.path.name}: UNITS {units!r} cannot be "
                             "converted to cm/s^2", station)
        dt = _float(part.header.get("SAMPLING_INTERVAL_S"))
        start = parse_time(part.header.get("DATE_TIME_FIRST_SAMPLE_YYYYMMDD_HHMMSS", ""))
        parts[comp] = (part.data * factor, (1.0 / dt) if dt and dt > 0 else None, start)
    try:
        data, rate, start = stack_components(parts, where)
    except SkipRecord as skip:
        skip.station = station
        raise
    ordered = [group[c] for c in COMPONENTS]
    return RawRecord(
        data=data, sampling_rate=rate, station=station, starttime=start,
        sources=[str(c.path) for c in ordered], fmt="afad_asc",
        network=first.header.get("NETWORK", ""),
        meta={**_asc_meta([c.header for c in ordered]), **_asc_provenance(ordered)},
    )


def read_afad_asc(
    components: list[AscComponent], known: tuple[str, ...] = ()
) -> list[tuple[list[str], RawRecord | SkipRecord]]:
    """Group parsed component files by record and assemble each: [(paths, record or skip)]."""
    groups: dict[tuple, dict[str, AscComponent]] = defaultdict(dict)
    out: list[tuple[list[str], RawRecord | SkipRecord]] = []
    for comp in components:
        name = _asc_component(comp)
        key = _asc_group_key(comp, known)
        if name is None:
            out.append(([str(comp.path)], SkipRecord(
                "missing_component", f"{comp.path.name}: cannot tell the component (no "
                "STREAM header, no _E/_N/_U suffix)", key[1])))
        elif name in groups[key]:
            out.append(([str(comp.path)], SkipRecord(
                "duplicate", f"{comp.path.name}: second {name} file for the same record "
                f"(first: {groups[key][name].path.name})", key[1])))
        else:
            groups[key][name] = comp
    for key, group in groups.items():
        paths = [str(c.path) for c in group.values()]
        where = f"{key[3]} ({len(group)} component file(s))"
        if not key[1]:
            out.append((paths, SkipRecord("unknown_station", f"{where}: no STATION_CODE and "
                                          "no station token in the file name")))
            continue
        try:
            record = _asc_record(group, where)
            record.station = record.station or key[1]
            out.append((paths, record))
        except SkipRecord as skip:
            skip.station = skip.station or key[1]
            out.append((paths, skip))
    return out


# ------------------------------------------------------------------------------------------
# obspy formats (MiniSEED, SAC, GSE2, K-NET, Kinemetrics EVT, SEISAN, ...)

_KNET_DIRS = {"EW": "E", "NS": "N", "UD": "U"}
_LAST_CHAR = {"E": "E", "N": "N", "Z": "U", "U": "U"}


def channel_component(channel: str) -> tuple[str, str] | None:
    """Channel code -> (instrument prefix, E|N|U or the orientation code), None when it is not
    a ground component.

    HNE/HNN/HNZ -> E/N/U; HN1/HN2/HN3 and numeric EVT channels 0, 1, 2 ... -> '1', '2', '0'
    (oriented from headers or --orientation later); BH?, HH?, EN? alike; K-NET EW/NS/UD
    (KiK-net EW1/EW2: the digit tells the sensor, borehole 1 or surface 2).
    """
    code = channel.strip().upper().replace("-", "")
    for tag, comp in _KNET_DIRS.items():
        if code.startswith(tag):
            return code[len(tag):], comp
    if not code:
        return None
    last = code[-1]
    comp = _LAST_CHAR.get(last) or (last if last.isdigit() else None)
    return (code[:-1], comp) if comp else None


def orient_horizontals(
    h1: np.ndarray, h2: np.ndarray, az1: float, az2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two horizontal components at azimuths az1, az2 (deg from N) -> (E, N)."""
    return rotate_to_en(h1, h2, az1, az2)


def _obspy_meta(trace: object) -> dict:
    meta: dict = {}
    sac = trace.stats.get("sac")
    if sac is not None:
        def value(name: str) -> float | None:
            v = _float(sac.get(name))
            return None if v is None or v == -12345.0 else v

        for key, name in (("event_latitude", "evla"), ("event_longitude", "evlo"),
                          ("depth_km", "evdp"), ("magnitude", "mag"), ("distance_km", "dist"),
                          ("station_latitude", "stla"), ("station_longitude", "stlo"),
                          ("station_elevation_m", "stel")):
            if value(name) is not None:
                meta[key] = value(name)
        a, b = value("a"), value("b")
        if a is not None:
            meta["p_pick_s"] = a - (b or 0.0)  # 'a' is the first arrival, relative like 'b'
        kevnm = str(sac.get("kevnm", "")).strip()
        if kevnm and kevnm != "-12345":
            meta["event_id"] = kevnm
    knet = trace.stats.get("knet")
    if knet is not None:
        for key, name in (("event_latitude", "evla"), ("event_longitude", "evlo"),
                          ("depth_km", "evdp"), ("magnitude", "mag"),
                          ("station_latitude", "stla"), ("station_longitude", "stlo"),
                          ("station_elevation_m", "stel")):
            if _float(knet.get(name)) is not None:
                meta[key] = float(knet[name])
        if knet.get("evot") is not None:
            meta["event_time"] = str(knet["evot"])
    evt = trace.stats.get("kinemetrics_evt")
    if evt is not None:
        for key, name in (("station_latitude", "latitude"), ("station_longitude", "longitude"),
                          ("station_elevation_m", "elevation")):
            if _float(evt.get(name)) is not None:
                meta[key] = float(evt[name])
    if "distance_km" not in meta and "event_latitude" in meta and "station_latitude" in meta:
        meta["distance_km"] = haversine_km(
            meta["event_latitude"], meta["event_longitude"],
            meta["station_latitude"], meta["station_longitude"],
        )
    return meta


def _merge_pieces(traces: list, where: str) -> dict[str, object]:
    """{channel code: one trace}; several pieces of a channel are joined, gaps refused."""
    by_channel: dict[str, list] = defaultdict(list)
    for trace in traces:
        by_channel[trace.stats.channel].append(trace)
    merged = {}
    for channel, group in by_channel.items():
        if len(group) > 1:
            stream = Stream(group).merge(method=1)
            if len(stream) != 1 or np.ma.is_masked(stream[0].data):
                raise SkipRecord("gaps", f"{where}: channel {channel} has gaps or overlaps")
            group = [stream[0]]
        merged[channel] = group[0]
    return merged


def _orientations(merged: dict, where: str, mapping: dict | None, inventory: object
                  ) -> tuple[dict[str, Orientation], dict[str, str]]:
    """{channel: (az, dip)} and {channel: source}; 'skip'ped channels left out."""
    oriented, how = {}, {}
    unknown = []
    for channel, trace in merged.items():
        found, source = trace_orientation(trace, mapping, inventory)
        if found == SKIP:
            continue
        if found is None:
            unknown.append(channel)
            continue
        oriented[channel], how[channel] = found, source
    if unknown:
        raise SkipRecord("unknown_orientation", f"{where}: no orientation for channel(s) "
                         f"{', '.join(unknown)} in the header (SAC cmpaz/cmpinc, EVT, "
                         "--inventory); pass --orientation CHANNEL=E|N|U|AZ/DIP")
    return oriented, how


def _obspy_group(traces: list, where: str, path: Path, units: UnitOptions,
                 mapping: dict | None = None) -> RawRecord:
    """Traces of one station and instrument -> RawRecord (E, N, U in cm/s^2)."""
    merged = _merge_pieces(traces, where)
    oriented, how = _orientations(merged, where, mapping, units.inventory)
    geographic = {ch: c for ch, o in oriented.items() for c in COMPONENTS if o == GEOGRAPHIC[c]}
    plain = len(geographic) == len(oriented) == len(set(geographic.values()))
    if not plain and len(oriented) != 3:
        reason = "missing_component" if len(oriented) < 3 else "unknown_orientation"
        raise SkipRecord(reason, f"{where}: need 3 oriented channels (1 vertical, 2 "
                         f"horizontal), have {', '.join(oriented) or 'none'}"
                         + ("; drop the others with --orientation CHANNEL=skip"
                            if len(oriented) > 3 else ""))
    converted = {ch: to_cm_s2(merged[ch], path, units) for ch in oriented}
    parts = {ch: (samples, float(merged[ch].stats.sampling_rate) or None,
                  merged[ch].stats.starttime) for ch, (samples, _, _) in converted.items()}
    if plain:  # E/N/Z channels: no rotation; stack_components names a missing one
        data, rate, start = stack_components(
            {geographic[ch]: part for ch, part in parts.items()}, where)
        orientation = "ENU"
    else:  # checks common rate, length and start, then rotates
        channels = list(oriented)
        raw, rate, start = stack_components(dict(zip(COMPONENTS, parts.values())), where)
        enu, orientation = assemble_enu(dict(zip(channels, raw)), oriented, where)
        data = np.stack([enu[c] for c in COMPONENTS])
        orientation += " [" + ", ".join(f"{ch}: {how[ch]}" for ch in channels) + "]"
    first = merged[next(iter(oriented))]
    meta = _obspy_meta(first)
    if units.inventory is not None:
        meta.update(_inventory_coordinates(first, units.inventory))
    meta["orientation"] = orientation
    meta["units_original"] = "; ".join(sorted({u for _, u, _ in converted.values()}))
    meta["processing"] = "; ".join(sorted({p for _, _, p in converted.values()}))
    return RawRecord(
        data=data, sampling_rate=rate, station=first.stats.station.strip(),
        starttime=start, sources=[], fmt=f"obspy:{first.stats.get('_format', '?')}",
        network=first.stats.network.strip(), location=first.stats.location.strip(), meta=meta,
    )


def _inventory_coordinates(trace: object, inventory: object) -> dict:
    try:
        found = inventory.get_coordinates(trace.id, trace.stats.starttime)
    except Exception:  # absent from the inventory
        return {}
    keys = {"latitude": "station_latitude", "longitude": "station_longitude",
            "elevation": "station_elevation_m"}
    return {column: float(found[k]) for k, column in keys.items() if found.get(k) is not None}


def read_obspy(
    path: str | Path,
    scale: float | None = None,
    known: tuple[str, ...] = (),
    units: UnitOptions | None = None,
    mapping: dict | None = None,
) -> list[RawRecord | SkipRecord]:
    """Any file obspy.read understands; one record per (network, station, location, instrument).

    Samples become cm/s^2 through `units` (io.units: inventory response, K-NET, EVT, SAC
    kuser0, an export sidecar, or `scale` = cm/s^2 per input unit declared by the user);
    a record with none of these is SkipRecord('units_unknown'). Channel orientation comes from
    the codes, headers, the inventory or `mapping` (io.orientation), else
    'unknown_orientation'. Station: the header code, else a whole token of the file name.
    """
    path = Path(path)
    units = units or UnitOptions(scale=scale)
    try:
        stream = read(str(path))
    except Exception as exc:  # obspy raises many types for unknown or corrupt files
        raise SkipRecord("unreadable", f"{path.name}: obspy cannot read it "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    groups: dict[tuple[str, str, str, str], list] = defaultdict(list)
    ignored = []
    for trace in stream:
        comp = channel_component(trace.stats.channel)
        if comp is None:
            ignored.append(trace.stats.channel)
            continue
        stats = trace.stats
        groups[(stats.network, stats.station, stats.location, comp[0])].append(trace)
    if not groups:
        raise SkipRecord("missing_component", f"{path.name}: no ground-motion channels "
                         f"(channels: {', '.join(ignored) or 'none'})")
    out: list[RawRecord | SkipRecord] = []
    for (net, sta, loc, prefix), traces in sorted(groups.items()):
        station = normalize_station(sta) if sta.strip() else station_from_name(path, known)
        where = f"{path.name} {net}.{sta}.{loc}.{prefix}?"
        try:
            record = _obspy_group(traces, where, path, units, mapping)
            record.station = station or ""
            record.sources = [str(path)]
            if not record.station:
                raise SkipRecord("unknown_station", f"{where}: empty station code and no "
                                 "station token in the file name")
            out.append(record)
        except SkipRecord as skip:
            skip.station = skip.station or station or ""
            out.append(skip)
    return out


# ------------------------------------------------------------------------------------------
# canonical corpus folders (what ingest, synth and generate write)

# records.csv columns that ingest derives again for the new corpus, so not carried over
DERIVED_COLUMNS = {
    "record_id", "station", "network", "location", "file", "counts_per_cm_s2", "starttime",
    "record_starttime", "sampling_rate_original", "n_samples_original", "duration_s_original",
    "window", "window_start_s", "p_pick_s", "source_format", "source_path",
}


def is_corpus_folder(path: Path) -> bool:
    return path.is_dir() and (path / "records.csv").is_file() and (path / "records").is_dir()


def _corpus_counts(path: Path) -> tuple[np.ndarray, object]:
    """One canonical record file -> ((3, T) int counts as float64 in E, N, U order, 1st trace)."""
    stream = read(str(path), format="MSEED")
    by_comp = {tr.stats.channel[-1:]: tr for tr in stream}
    missing = [c for c, code in zip(COMPONENTS, "ENZ") if code not in by_comp]
    if missing or len(stream) != 3:
        raise SkipRecord("missing_component", f"{path.name}: {len(stream)} trace(s), "
                         f"missing {'/'.join(missing) or 'none'}")
    traces = [by_comp[code] for code in "ENZ"]
    if len({len(tr.data) for tr in traces}) > 1:
        raise SkipRecord("unequal_length", f"{path.name}: components differ in length")
    return np.stack([tr.data.astype(np.float64) for tr in traces]), traces[0]


def _corpus_row_record(folder: Path, row: dict) -> RawRecord:
    path = folder / str(row.get("file") or f"records/{row['record_id']}.mseed")
    try:
        counts, trace = _corpus_counts(path)
    except SkipRecord:
        raise
    except Exception as exc:  # obspy raises many types on corrupt files
        raise SkipRecord("unreadable", f"{path.name}: {type(exc).__name__}: {exc}") from None
    per_cm_s2 = _float(row.get("counts_per_cm_s2")) or 1.0e5
    meta = {k: v for k, v in row.items() if k not in DERIVED_COLUMNS and not
            (isinstance(v, float) and math.isnan(v)) and v != ""}
    meta["source_record_id"] = str(row["record_id"])
    meta.setdefault("units_original", "cm/s^2")
    pick, offset = _float(row.get("p_pick_s")), _float(row.get("window_start_s")) or 0.0
    if pick is not None:
        meta["p_pick_s"] = pick - offset  # the header pick, now relative to this window
    start = parse_time(str(row.get("starttime") or "")) or trace.stats.starttime
    return RawRecord(
        data=counts / per_cm_s2, sampling_rate=float(trace.stats.sampling_rate),
        station=normalize_station(row["station"]), starttime=start, sources=[str(path)],
        fmt="corpus", network=trace.stats.network.strip(),
        location=trace.stats.location.strip(), meta=meta,
    )


def read_corpus_folder(folder: str | Path) -> list[tuple[list[str], RawRecord | SkipRecord]]:
    """A canonical corpus folder (records.csv + records/*.mseed) -> [(paths, record or skip)].

    Samples are the stored int32 counts / counts_per_cm_s2 in float64, so re-ingesting a corpus
    reproduces its counts exactly; metadata columns are carried over (record_id as
    source_record_id), the derived ones (window, starttime, source_path ...) are made anew.
    """
    import pandas as pd

    folder = Path(folder)
    try:
        table = pd.read_csv(folder / "records.csv", dtype={"station": str, "record_id": str},
                            keep_default_na=True)
    except Exception as exc:  # pandas raises several types on a broken table
        raise SkipRecord("unreadable", f"{folder.name}/records.csv: {type(exc).__name__}: "
                         f"{exc}") from None
    for column in ("record_id", "station"):
        if column not in table.columns:
            raise SkipRecord("unreadable", f"{folder.name}/records.csv has no {column!r} "
                             "column")
    out: list[tuple[list[str], RawRecord | SkipRecord]] = []
    for row in table.to_dict("records"):
        where = str(folder / str(row.get("file") or row["record_id"]))
        try:
            out.append(([where], _corpus_row_record(folder, row)))
        except SkipRecord as skip:
            skip.station = skip.station or str(row["station"])
            out.append(([where], skip))
    return out
