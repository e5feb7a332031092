"""Quarantine: records that were not ingested, each with a reason a person can act on.

Nothing is dropped silently: every skipped file or record becomes one row of `quarantine.csv`
(path, station, reason, detail) in the output folder. `reason` is one of REASONS (a short code
to count and filter on); `detail` says what exactly was wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

REASONS = {
    "unreadable": "file cannot be read or parsed (corrupt, unknown format, unreadable .mat)",
    "truncated": "fewer samples than the header announces",
    "missing_component": "one of E, N, U is absent",
    "unequal_length": "components have different numbers of samples",
    "unequal_starttime": "components start at different times",
    "unequal_sampling_rate": "components have different sampling rates",
    "unknown_sampling_rate": "no usable sampling rate in the file",
    "unsupported_sampling_rate": "rate too low, or not a rational multiple of 100 Hz",
    "gaps": "a component has gaps or overlapping pieces",
    "wrong_units": "not acceleration, or units that cannot be converted to cm/s^2",
    "units_unknown": "the file does not say its units (counts?): give --inventory or --scale",
    "unknown_orientation": "channel orientation not in the header: give --orientation",
    "unencodable": "the canonical MiniSEED writer cannot hold the record",
    "nan_or_inf": "NaN or infinite samples",
    "flat_channel": "a component is constant (dead channel)",
    "too_short": "record shorter than --min-duration-s",
    "unknown_station": "no station code in the header nor as a whole token of the file name",
    "duplicate": "same station, start time and samples as a record already ingested",
    "overflow": "amplitude too large for the canonical int32 format",
}
COLUMNS = ["path", "station", "reason", "detail"]


class SkipRecord(Exception):
    """Raised by readers and checks: this record goes to quarantine for `reason`."""

    def __init__(self, reason: str, detail: str, station: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.station = station


@dataclass
class Entry:
    path: str
    station: str
    reason: str
    detail: str

    def line(self) -> str:
        station = f" [station {self.station}]" if self.station else ""
        return f"{self.path}{station}: {self.reason}: {self.detail}"


@dataclass
class Quarantine:
    """Collects skipped records in the order they were met."""

    entries: list[Entry] = field(default_factory=list)

    def add(self, path: str | Path, reason: str, detail: str, station: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}")
        self.entries.append(Entry(str(path), station or "", reason, detail))

    def add_skip(self, path: str | Path, skip: SkipRecord, station: str = "") -> None:
        self.add(path, skip.reason, skip.detail, skip.station or station)

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Counter:
        return Counter(e.reason for e in self.entries)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(e) for e in self.entries], columns=COLUMNS)

    def write_csv(self, path: Path) -> None:
        self.frame().to_csv(path, index=False)
