"""`ingest` stage: folders of real records -> the canonical corpus folder (data/raw).

    timesnet-gen ingest SRC... --out data/raw [--target-stations 0205 1716 ...]
                        [--window first|p_aligned|energy] [--min-duration-s 10] [--strict]
                        [--inventory station.xml] [--scale 100] [--orientation 0=N 1=E 2=U]

Formats: AFAD .mat (EQ.anEQ struct or `signal` array), AFAD ASCII .asc (raw or processed
TADAS exports; one file per component, grouped by folder, station, event and file stem),
canonical corpus folders (re-ingested exactly), and every format obspy reads (MiniSEED, SAC,
GSE2, K-NET, Kinemetrics EVT, SEISAN, ...). Units are taken from the record, never guessed:
header units, K-NET / EVT calibration, the instrument response of --inventory, or --scale;
otherwise the record is quarantined as units_unknown. Channels are oriented from their codes,
headers or --orientation, else quarantined as unknown_orientation. Each record is converted
to cm/s^2, resampled to 100 Hz with an anti-aliasing filter when needed, and cut to a
6000-sample window (default `first`, the paper's; shorter records are zero-padded). Anything unusable is skipped and listed with its reason in
`quarantine.csv` in the output folder; `--strict` turns any skip into exit code 1 and writes
nothing. Source files are only read. The output folder is replaced atomically, so a failed
ingest leaves the previous one intact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from obspy import UTCDateTime
from tqdm import tqdm

from timesnet_gen.atomic import check_out, staged_dir
from timesnet_gen.errors import UserError
from timesnet_gen.corpus import format as corpus_format
from timesnet_gen.corpus.format import (
    DEFAULT_COUNTS_PER_CM_S2,
    CorpusError,
    DEFAULT_STARTTIME,
    INT32_MAX,
    N_SAMPLES,
    SAMPLING_RATE,
    write_corpus_into,
)
from timesnet_gen.io.orientation import OrientationError, parse_mapping
from timesnet_gen.io.quarantine import Quarantine, SkipRecord
from timesnet_gen.io.readers import (
    RawRecord,
    is_corpus_folder,
    parse_afad_asc,
    read_afad_asc,
    read_afad_mat,
    read_corpus_folder,
    read_obspy,
)
from timesnet_gen.io.units import DEFAULT_PRE_FILT, DEFAULT_WATER_LEVEL, UnitOptions
from timesnet_gen.io.stations import normalize_station, safe_code, station_from_name
from timesnet_gen.io.windowing import (
    RATE_RTOL,
    WINDOW_MODES,
    cut,
    resample,
    resample_factors,
    window_start,
)

# Not records: documents, tables, pictures, archives (unpack those first), code.
IGNORED_SUFFIXES = {
    ".md", ".txt", ".rst", ".pdf", ".csv", ".json", ".xml", ".yaml", ".yml", ".html", ".htm",
    ".png", ".jpg", ".jpeg", ".gif", ".svg", ".log", ".py", ".m", ".ipynb", ".kml", ".dvc",
    ".zip", ".tar", ".gz", ".tgz", ".7z", ".rar",
}


class IngestError(UserError):
    """An ingest the user asked for cannot run (bad option, missing source, nothing usable)."""


@dataclass
class IngestOptions:
    """Command-line options of `ingest` (defaults are the paper's choices where it has one)."""

    window: str = "first"  # first | p_aligned | energy
    p_lead_s: float = 5.0  # s of signal kept before the P pick in p_aligned mode
    min_duration_s: float = 10.0  # s; shorter records are quarantined (shorter than 60 s are
    # zero-padded at the end, as in the paper)
    min_rate_hz: float = 50.0  # Hz; lower rates cannot carry the 0.5-20 Hz HVSR band
    default_rate_hz: float | None = None  # Hz, for files without a rate (else quarantined)
    scale: float | None = None  # cm/s^2 per input unit, for records whose unit is not known
    target_stations: tuple[str, ...] = ()
    inventory: tuple[str, ...] = ()  # StationXML / RESP / dataless files (obspy.read_inventory)
    pre_filt: tuple[float, ...] | None = DEFAULT_PRE_FILT  # Hz, response-removal taper
    water_level: float | None = DEFAULT_WATER_LEVEL  # dB, response-removal water level
    orientation: tuple[str, ...] = ()  # CHANNEL=E|N|U|AZ/DIP|skip entries

    def __post_init__(self) -> None:
        if self.window not in WINDOW_MODES:
            raise IngestError(f"unknown window {self.window!r}; choose "
                              f"{', '.join(WINDOW_MODES)}")
        if self.min_duration_s < 0 or self.p_lead_s < 0 or (
                self.scale is not None and not self.scale > 0):
            raise IngestError("min_duration_s and p_lead_s must be >= 0 and scale > 0")
        if self.pre_filt is not None:
            self.pre_filt = tuple(float(f) for f in self.pre_filt)
            if len(self.pre_filt) != 4 or list(self.pre_filt) != sorted(self.pre_filt) or \
                    self.pre_filt[0] <= 0:
                raise IngestError(f"pre_filt must be 4 increasing frequencies > 0 Hz, got "
                                  f"{self.pre_filt}")
        try:
            parse_mapping(self.orientation)
        except OrientationError as exc:
            raise IngestError(str(exc)) from None
        self.target_stations = tuple(normalize_station(s) for s in self.target_stations)
        self.inventory = tuple(str(p) for p in self.inventory)
        self.orientation = tuple(self.orientation)


@dataclass
class IngestResult:
    waveforms: np.ndarray  # (n, 3, 6000) float64 cm/s^2 (exact re-ingest), rows = records
    records: pd.DataFrame
    stations: pd.DataFrame
    quarantine: Quarantine
    ignored: Counter = field(default_factory=Counter)  # kind of file not read -> count
    n_files: int = 0


# ------------------------------------------------------------------------------------------
# discovery


def _ignored_kind(path: Path) -> str | None:
    """Why a file is not a record candidate (macOS metadata, hidden, documents), else None."""
    if path.name.startswith("._") or "__MACOSX" in path.parts:
        return "macOS metadata (._*)"
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() in IGNORED_SUFFIXES:
        return f"{path.suffix.lower()} file"
    return None


def discover(
    sources: Iterable[str | Path], exclude: Path | None = None
) -> tuple[list[Path], Counter]:
    """Candidate record files under `sources` (files or folders, recursive, sorted).

    Returns (files, ignored kinds -> count). A canonical corpus folder (records.csv +
    records/) is one candidate, read whole. Hidden folders and `exclude` (the output folder,
    so that re-running into a folder inside SRC does not ingest the previous corpus) are skipped.
    """
    files: list[Path] = []
    ignored: Counter = Counter()
    exclude = exclude.resolve() if exclude is not None else None
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise IngestError(f"source {source} does not exist")
        if source.is_file() or is_corpus_folder(source):
            candidates = [source]
        else:
            candidates = []
            for root, dirs, names in os.walk(source):
                root_path = Path(root)
                dirs[:] = sorted(
                    d for d in dirs if not d.startswith(".") and d != "__MACOSX"
                    and (exclude is None or (root_path / d).resolve() != exclude)
                )
                corpora = [d for d in dirs if is_corpus_folder(root_path / d)]
                dirs[:] = [d for d in dirs if d not in corpora]
                candidates += [root_path / n for n in sorted(names)]
                candidates += [root_path / d for d in corpora]
        for path in candidates:
            kind = _ignored_kind(path)
            if kind:
                ignored[kind] += 1
            else:
                files.append(path)
    return files, ignored


def check_any_record(result: IngestResult, done: str = "read", shown: int = 50) -> None:
    """IngestError when no record came through: the files tried, those not read as records
    (by kind) and the first `shown` skip reasons."""
    if len(result.records):
        return
    ignored = "".join(f"; {n} {kind}(s) not read as records" for kind, n in
                      sorted(result.ignored.items()))
    skipped = f"; {len(result.quarantine)} skipped" if len(result.quarantine) else ""
    raise IngestError(f"no record could be {done} from {result.n_files} file(s){ignored}"
                      f"{skipped}" + "".join(f"\n{e.line()}"
                                             for e in result.quarantine.entries[:shown]))


# ------------------------------------------------------------------------------------------
# one record -> canonical window


def check_samples(data: np.ndarray, rate: float, min_duration_s: float) -> None:
    """Raise SkipRecord for NaN/inf, a flat (dead) channel or a too short record. data: (3, N)."""
    bad = ~np.isfinite(data)
    if bad.any():
        comps = [c for c, b in zip("ENU", bad.any(axis=1)) if b]
        raise SkipRecord("nan_or_inf", f"{int(bad.sum())} NaN/inf sample(s) in {'/'.join(comps)}")
    duration = data.shape[1] / rate
    if duration < min_duration_s:
        raise SkipRecord("too_short", f"{duration:.2f} s < --min-duration-s {min_duration_s:g} s")
    flat = [c for c, p in zip("ENU", np.ptp(data, axis=1)) if p < 1e-9]
    if flat:
        raise SkipRecord("flat_channel", f"component(s) {'/'.join(flat)} constant (dead channel)")


def to_canonical(record: RawRecord, options: IngestOptions) -> tuple[np.ndarray, dict]:
    """RawRecord -> ((3, 6000) float64 cm/s^2 at 100 Hz, metadata row), or SkipRecord."""
    if not record.station:
        raise SkipRecord("unknown_station", "no station code in the header nor the file name")
    rate = record.sampling_rate or options.default_rate_hz
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise SkipRecord("unknown_sampling_rate", "the file gives no sampling rate "
                         "(pass --default-rate-hz if you know it)")
    near_100 = abs(rate - SAMPLING_RATE) <= RATE_RTOL * SAMPLING_RATE
    if rate < options.min_rate_hz or not (near_100 or resample_factors(rate)):
        raise SkipRecord("unsupported_sampling_rate", f"{rate:g} Hz (need >= "
                         f"{options.min_rate_hz:g} Hz and a small rational ratio to 100 Hz)")
    check_samples(record.data, rate, options.min_duration_s)
    data = resample(record.data, rate)  # (3, M) at 100 Hz
    start, used, p_pick_s = window_start(
        data, options.window, SAMPLING_RATE, record.meta.get("p_pick_s"), options.p_lead_s,
        N_SAMPLES,
    )
    window = cut(data, start, N_SAMPLES)
    peak = float(np.abs(window).max())
    if peak * DEFAULT_COUNTS_PER_CM_S2 > INT32_MAX:
        raise SkipRecord("overflow", f"peak {peak:.4g} cm/s^2 exceeds the canonical int32 range")
    begin = record.starttime
    row = {
        "station": record.station,
        "network": record.network,
        "location": record.location,
        "starttime": str((begin or UTCDateTime(DEFAULT_STARTTIME)) + start / SAMPLING_RATE),
        "record_starttime": str(begin) if begin is not None else "",
        "sampling_rate_original": rate,
        "n_samples_original": record.data.shape[1],
        "duration_s_original": record.data.shape[1] / rate,
        "window": used,
        "window_start_s": start / SAMPLING_RATE,
        "p_pick_s": p_pick_s,
        "processing": "none",
        **{k: v for k, v in record.meta.items() if k != "p_pick_s"},
        "source_format": record.fmt,
        "source_path": ";".join(record.sources),
    }
    return window, row


def _record_id(row: dict, taken: set[str]) -> str:
    """'<station>_<YYYYmmddTHHMMSS of the first sample>', suffixed _2, _3 ... when taken."""
    station = safe_code(row["station"]) or "XXXX"
    if row["record_starttime"]:
        stamp = UTCDateTime(row["record_starttime"]).strftime("%Y%m%dT%H%M%S")
    else:
        stamp = safe_code(Path(row["source_path"].split(";")[0]).stem)[:40] or "unknown"
    base = rid = f"{station}_{stamp}"
    k = 2
    while rid in taken:
        rid, k = f"{base}_{k}", k + 1
    return rid


def _fingerprint(window: np.ndarray) -> str:
    # samples at the canonical precision (1e-5 cm/s^2), so re-reads of one record match
    counts = np.rint(window * DEFAULT_COUNTS_PER_CM_S2).astype(np.int64)
    return hashlib.sha1(counts.tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------
# the whole run


@dataclass
class ReadContext:
    """What every reader call shares: the options, loaded inventory, orientation mapping."""

    options: IngestOptions
    units: UnitOptions
    mapping: dict


def load_inventory(paths: Iterable[str | Path]) -> object:
    """obspy Inventory of every file (StationXML, RESP, dataless SEED), or None when none."""
    from obspy import read_inventory

    inventory = None
    for path in paths:
        try:
            part = read_inventory(str(path))
        except Exception as exc:  # obspy raises many types on unknown or corrupt files
            raise IngestError(f"--inventory {path}: cannot be read by obspy.read_inventory "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None
        inventory = part if inventory is None else inventory + part
    return inventory


def read_context(options: IngestOptions) -> ReadContext:
    units = UnitOptions(
        scale=options.scale, inventory=load_inventory(options.inventory),
        inventory_names=", ".join(Path(p).name for p in options.inventory),
        pre_filt=options.pre_filt, water_level=options.water_level,
    )
    return ReadContext(options, units, parse_mapping(options.orientation))


def _read_file(path: Path, context: ReadContext, asc_parts: list) -> list:
    """Read one file: [(paths, RawRecord | SkipRecord)]; .asc parts are grouped later."""
    suffix = path.suffix.lower()
    known = context.options.target_stations

    def obspy_records() -> list:
        return [([str(path)], r) for r in read_obspy(path, known=known, units=context.units,
                                                     mapping=context.mapping)]

    try:
        if path.is_dir():
            return read_corpus_folder(path)
        if suffix == ".mat":
            return [([str(path)], r) for r in read_afad_mat(path, known)]
        if suffix == ".asc":
            try:
                asc_parts.append(parse_afad_asc(path))
                return []
            except SkipRecord as not_afad:
                try:  # not AFAD ASCII: obspy may know it (SH_ASC, TSPAIR ...)
                    return obspy_records()
                except SkipRecord:
                    raise not_afad from None
        return obspy_records()
    except SkipRecord as skip:
        skip.station = skip.station or station_from_name(path, known) or ""
        return [([str(path)], skip)]
    except Exception as exc:  # a reader tripping over odd content must not stop the run
        skip = SkipRecord("unreadable", f"{path.name}: {type(exc).__name__}: {exc}",
                          station_from_name(path, known) or "")
        return [([str(path)], skip)]


def station_table(records: pd.DataFrame, targets: tuple[str, ...]) -> pd.DataFrame:
    """One row per station: role, f0_true_hz (empty: unknown for real data), site metadata."""
    rows = []
    for station, group in records.groupby("station", sort=True):
        def first(column: str) -> object:
            if column not in group:
                return None
            values = group[column].dropna()
            values = values[values.astype(str) != ""]
            return values.iloc[0] if len(values) else None

        rows.append({
            "station": station,
            "network": first("network"),
            "role": "target" if station in targets else "pretrain",
            "f0_true_hz": None,
            "vs30": first("vs30"),
            "site_class": first("site_class"),
            "latitude": first("station_latitude"),
            "longitude": first("station_longitude"),
            "elevation_m": first("station_elevation_m"),
            "station_name": first("station_name"),
            "n_records": len(group),
        })
    return pd.DataFrame(rows, columns=[
        "station", "network", "role", "f0_true_hz", "vs30", "site_class", "latitude",
        "longitude", "elevation_m", "station_name", "n_records",
    ])


def collect(
    sources: Iterable[str | Path],
    options: IngestOptions | None = None,
    exclude: Path | None = None,
    progress: bool = False,
) -> IngestResult:
    """Read, check, resample and window every record under `sources` (writes nothing)."""
    options = options or IngestOptions()
    context = read_context(options)
    files, ignored = discover(sources, exclude)
    items: list[tuple[list[str], RawRecord | SkipRecord]] = []
    asc_parts: list = []
    for path in tqdm(files, desc="ingest", unit="file", disable=not progress):
        items += _read_file(path, context, asc_parts)
    items += read_afad_asc(asc_parts, options.target_stations)

    quarantine = Quarantine()
    windows, rows, taken = [], [], set()
    seen: dict[tuple, str] = {}  # (station, start s, fingerprint) -> first source
    for paths, item in items:
        where = ";".join(paths)
        if isinstance(item, SkipRecord):
            quarantine.add_skip(where, item)
            continue
        try:
            window, row = to_canonical(item, options)
        except SkipRecord as skip:
            quarantine.add_skip(where, skip, item.station)
            continue
        except (ValueError, ArithmeticError) as exc:  # odd samples the checks did not foresee
            quarantine.add(where, "unreadable", f"{type(exc).__name__}: {exc}", item.station)
            continue
        try:  # what the writer will do, so that no single record can stop the run
            corpus_format.to_counts(window, DEFAULT_COUNTS_PER_CM_S2)
        except CorpusError as exc:
            quarantine.add(where, "unencodable", str(exc), item.station)
            continue
        start_key = round(float(UTCDateTime(row["record_starttime"]).timestamp)) if \
            row["record_starttime"] else None
        key = (row["station"], start_key, _fingerprint(window))
        if key in seen:
            quarantine.add(where, "duplicate", f"same station, start time and samples as "
                           f"{seen[key]}", row["station"])
            continue
        seen[key] = where
        row["record_id"] = _record_id(row, taken)
        taken.add(row["record_id"])
        windows.append(window)
        rows.append(row)

    order = sorted(range(len(rows)), key=lambda i: rows[i]["record_id"])
    records = pd.DataFrame([rows[i] for i in order], columns=None if rows else
                           ["record_id", "station", "starttime"])
    if len(records):
        first_columns = ["record_id", "station", "starttime"]
        records = records[first_columns + [c for c in records.columns if c not in first_columns]]
    waveforms = (np.stack([windows[i] for i in order]) if windows
                 else np.zeros((0, 3, N_SAMPLES)))
    stations = station_table(records, options.target_stations) if len(records) else \
        pd.DataFrame(columns=["station", "role", "f0_true_hz"])
    return IngestResult(waveforms, records, stations, quarantine, ignored, len(files))


def summary(result: IngestResult, options: IngestOptions) -> str:
    """Human-readable account: records read, per-station counts, skipped by reason."""
    lines = [f"ingest: {len(result.records)} record(s) from {result.n_files} file(s), "
             f"{len(result.quarantine)} skipped"]
    if len(result.records):
        counts = result.records["station"].value_counts().sort_index()
        lines.append(f"  stations ({len(counts)}): " + ", ".join(
            f"{s}{'*' if s in options.target_stations else ''}={n}" for s, n in counts.items()
        ))
    missing = [s for s in options.target_stations
               if not len(result.records) or s not in set(result.records["station"])]
    if missing:
        lines.append(f"  WARNING: target station(s) without records: {', '.join(missing)}")
    for reason, n in sorted(result.quarantine.counts().items()):
        lines.append(f"  skipped {reason}: {n}")
    for kind, n in sorted(result.ignored.items()):
        lines.append(f"  ignored {kind}: {n} (not records)")
    return "\n".join(lines)


def write_output(result: IngestResult, out_dir: Path, options: IngestOptions,
                 network: str = "", sources: Iterable[str | Path] = ()) -> None:
    """Corpus + quarantine.csv + ingest.json into a staging folder, then renamed over out_dir."""
    out_dir = Path(out_dir)
    nets = [n for n in result.records.get("network", pd.Series(dtype=str)) if n]
    network = network or (Counter(nets).most_common(1)[0][0] if nets else "XX")
    with staged_dir(out_dir, sources) as staging:
        write_corpus_into(staging, result.waveforms, result.records, result.stations, network)
        result.quarantine.write_csv(staging / "quarantine.csv")
        info = {
            "options": asdict(options),
            "n_records": len(result.records),
            "n_files": result.n_files,
            "skipped": dict(result.quarantine.counts()),
            "ignored": dict(result.ignored),
            "per_station": {str(k): int(v) for k, v in
                            result.records["station"].value_counts().sort_index().items()},
        }
        (staging / "ingest.json").write_text(json.dumps(info, indent=2) + "\n")


def ingest(
    sources: Iterable[str | Path],
    out_dir: str | Path,
    options: IngestOptions | None = None,
    strict: bool = False,
    progress: bool = False,
) -> IngestResult:
    """Collect every record under `sources` and write the corpus folder `out_dir`.

    Raises IngestError when nothing could be ingested, or (strict) when anything was skipped;
    then, as after any exception, `out_dir` is left as it was.
    """
    options = options or IngestOptions()
    sources = list(sources)
    out_dir = check_out(out_dir, sources)  # refused before any file is read
    result = collect(sources, options, exclude=out_dir, progress=progress)
    if strict and len(result.quarantine):
        lines = "\n".join(e.line() for e in result.quarantine.entries)
        raise IngestError(f"--strict: {len(result.quarantine)} record(s) would be skipped; "
                         f"nothing written\n{lines}")
    check_any_record(result, "ingested")
    write_output(result, out_dir, options, sources=sources)
    return result


def _water_level(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def add_reading_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that decide how records are read and windowed (ingest and hvsr share them)."""
    parser.add_argument("--target-stations", nargs="*", default=[], metavar="CODE",
                        help="stations marked role=target in stations.csv (e.g. 0205 1716)")
    parser.add_argument("--window", choices=WINDOW_MODES, default="first",
                        help="6000-sample window: first (paper, default), p_aligned, energy")
    parser.add_argument("--p-lead-s", type=float, default=5.0,
                        help="s kept before the P pick for --window p_aligned (default 5)")
    parser.add_argument("--min-duration-s", type=float, default=10.0,
                        help="quarantine records shorter than this (s, default 10)")
    parser.add_argument("--min-rate-hz", type=float, default=50.0,
                        help="quarantine records sampled below this (Hz, default 50)")
    parser.add_argument("--default-rate-hz", type=float, default=None,
                        help="rate for files that give none (default: quarantine them)")
    parser.add_argument("--scale", type=float, default=None,
                        help="cm/s^2 per input unit for records whose unit the file does not "
                        "state (MiniSEED counts without --inventory ...); default: quarantine "
                        "them as units_unknown")
    parser.add_argument("--inventory", action="append", default=[], metavar="FILE",
                        help="StationXML, RESP or dataless SEED (repeatable): remove the "
                        "instrument response to acceleration")
    parser.add_argument("--pre-filt", type=float, nargs=4, default=list(DEFAULT_PRE_FILT),
                        metavar=("F1", "F2", "F3", "F4"),
                        help=f"response-removal cosine taper, Hz (default {DEFAULT_PRE_FILT})")
    parser.add_argument("--water-level", type=_water_level, default=DEFAULT_WATER_LEVEL,
                        metavar="DB", help="response-removal water level in dB, or none "
                        f"(default {DEFAULT_WATER_LEVEL:g})")
    parser.add_argument("--orientation", nargs="*", default=[], metavar="CHANNEL=DIR",
                        help="orientation of channels the headers do not orient: 0=N 1=E "
                        "2=U, HN1=30/0 (azimuth/dip deg), STATION.CHANNEL=..., 3=skip")


def options_from_args(args: argparse.Namespace) -> IngestOptions:
    return IngestOptions(
        window=args.window, p_lead_s=args.p_lead_s, min_duration_s=args.min_duration_s,
        min_rate_hz=args.min_rate_hz, default_rate_hz=args.default_rate_hz,
        scale=args.scale, target_stations=tuple(args.target_stations),
        inventory=tuple(args.inventory), pre_filt=tuple(args.pre_filt),
        water_level=args.water_level, orientation=tuple(args.orientation),
    )


def build_parser(verb: str = "ingest") -> argparse.ArgumentParser:
    from timesnet_gen.stage import stage_parser

    parser = stage_parser(verb, __doc__)
    parser.add_argument("sources", nargs="+", type=Path, help="files or folders (recursive)")
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="corpus folder "
                        "(replaced atomically; default data/raw)")
    add_reading_arguments(parser)
    parser.add_argument("--strict", action="store_true",
                        help="any skipped record is an error (exit 1, nothing written)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str], verb: str = "ingest") -> int:
    args = build_parser(verb).parse_args(argv)
    options = options_from_args(args)
    result = ingest(args.sources, args.out, options, strict=args.strict,
                    progress=not args.no_progress and sys.stderr.isatty())
    print(summary(result, options))
    print(f"  wrote {args.out} ({len(result.records)} records; quarantine.csv lists "
          f"{len(result.quarantine)} skipped)")
    return 0
