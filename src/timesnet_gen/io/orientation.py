"""Channel orientation: which way each trace points, from the record itself, never assumed.

An orientation is (azimuth, dip) in degrees, SEED convention: azimuth clockwise from north,
dip downward from the horizontal (-90 = vertical up, +90 = vertical down). Sources, first
that answers wins (ORIENTATION_SOURCES):
    mapping    the user's --orientation CHANNEL=E|N|U|Z|AZ/DIP|skip (also STATION.CHANNEL)
    code       channel codes that name a geographic direction: ..E, ..N, ..Z, K-NET EW/NS/UD
    inventory  channel azimuth/dip of the --inventory (StationXML, RESP, dataless)
    sac        SAC cmpaz / cmpinc (cmpinc from the vertical: dip = cmpinc - 90)
    evt        Kinemetrics EVT chan_azimuth / chan_altitude (altitude above the horizontal)
Numeric or 1/2/3 channels that no source orients make the record `unknown_orientation`.
`assemble_enu` turns three oriented traces into E, N, U (rotating two horizontals that are
not E/N, flipping a downward vertical) or says why it cannot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import numpy as np

from timesnet_gen.errors import UserError
from timesnet_gen.io.quarantine import SkipRecord

Orientation = tuple[float, float]  # (azimuth deg from N, dip deg down from horizontal)
GEOGRAPHIC: dict[str, Orientation] = {"E": (90.0, 0.0), "N": (0.0, 0.0), "U": (0.0, -90.0)}
_NAMED = {**GEOGRAPHIC, "Z": GEOGRAPHIC["U"]}
SKIP = "skip"
VERTICAL_DIP = 80.0  # |dip| >= this: a vertical channel
HORIZONTAL_DIP = 10.0  # |dip| <= this: a horizontal channel
SAC_UNSET = -12345.0


class OrientationError(UserError):
    """A malformed --orientation entry."""


def parse_mapping(items: Iterable[str]) -> dict[str, Orientation | str]:
    """['0=N', 'HN1=30/0', 'MEMA.2=U', '3=skip'] -> {channel key: (az, dip) or 'skip'}."""
    out: dict[str, Orientation | str] = {}
    for item in items:
        key, sep, value = (part.strip() for part in str(item).partition("="))
        if not sep or not key or not value:
            raise OrientationError(f"--orientation expects CHANNEL=E|N|U|AZ/DIP|skip, got "
                                   f"{item!r}")
        if value.lower() == SKIP:
            out[key.upper()] = SKIP
        elif value.upper() in _NAMED:
            out[key.upper()] = _NAMED[value.upper()]
        else:
            match = re.fullmatch(r"([-+0-9.eE]+)/([-+0-9.eE]+)", value)
            try:
                az, dip = (float(match.group(1)), float(match.group(2))) if match else (None,) * 2
            except ValueError:
                az = dip = None
            if az is None or not (math.isfinite(az) and math.isfinite(dip)) or abs(dip) > 90:
                raise OrientationError(f"--orientation {item!r}: value must be E, N, U, Z, "
                                       "skip or AZIMUTH/DIP in degrees (dip -90 = up)")
            out[key.upper()] = (az % 360.0, dip)
    return out


def from_mapping(trace: object, mapping: dict, inventory: object) -> Orientation | str | None:
    stats = trace.stats
    for key in (f"{stats.station}.{stats.channel}".upper(), str(stats.channel).upper()):
        if key in mapping:
            return mapping[key]
    return None


def from_code(trace: object, mapping: dict, inventory: object) -> Orientation | None:
    """..E / ..N / ..Z / ..U and K-NET EW, NS, UD (with a sensor digit after them)."""
    code = str(trace.stats.channel).strip().upper().replace("-", "")
    for tag, comp in (("EW", "E"), ("NS", "N"), ("UD", "U")):
        if code.startswith(tag):
            return GEOGRAPHIC[comp]
    return _NAMED.get(code[-1:]) if len(code) >= 2 or code in _NAMED else None


def from_inventory(trace: object, mapping: dict, inventory: object) -> Orientation | None:
    if inventory is None:
        return None
    try:
        found = inventory.get_orientation(trace.id, trace.stats.starttime)
    except Exception:  # obspy raises plain Exception when the channel is absent
        return None
    az, dip = found.get("azimuth"), found.get("dip")
    return None if az is None or dip is None else (float(az) % 360.0, float(dip))


def from_sac(trace: object, mapping: dict, inventory: object) -> Orientation | None:
    sac = trace.stats.get("sac")
    if sac is None:
        return None
    az, inc = sac.get("cmpaz"), sac.get("cmpinc")
    if az is None or inc is None or SAC_UNSET in (float(az), float(inc)):
        return None
    return float(az) % 360.0, float(inc) - 90.0


def from_evt(trace: object, mapping: dict, inventory: object) -> Orientation | None:
    evt = trace.stats.get("kinemetrics_evt")
    if evt is None or evt.get("chan_azimuth") is None or evt.get("chan_altitude") is None:
        return None
    return float(evt["chan_azimuth"]) % 360.0, -float(evt["chan_altitude"])


ORIENTATION_SOURCES: dict[str, Callable] = {
    "mapping": from_mapping, "code": from_code, "inventory": from_inventory, "sac": from_sac,
    "evt": from_evt,
}


def trace_orientation(
    trace: object, mapping: dict | None = None, inventory: object = None
) -> tuple[Orientation | str | None, str]:
    """(orientation or 'skip' or None, name of the source that gave it)."""
    for name, source in ORIENTATION_SOURCES.items():
        found = source(trace, mapping or {}, inventory)
        if found is not None:
            return found, name
    return None, ""


def rotate_to_en(h1: np.ndarray, h2: np.ndarray, az1: float, az2: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two horizontals at azimuths az1, az2 (deg from N) -> (E, N); non-orthogonal pairs too.

    Each channel measures N cos(az) + E sin(az): a 2 x 2 linear system.
    """
    a1, a2 = math.radians(az1), math.radians(az2)
    matrix = np.array([[math.cos(a1), math.sin(a1)], [math.cos(a2), math.sin(a2)]])
    if abs(np.linalg.det(matrix)) < 1e-3:
        raise ValueError(f"horizontal azimuths {az1:g} and {az2:g} are parallel")
    north, east = np.linalg.solve(matrix, np.stack([h1, h2]))
    return east, north


def _describe(oriented: dict[str, Orientation]) -> str:
    return ", ".join(f"{c}=({az:g}, {dip:g})" for c, (az, dip) in oriented.items())


def assemble_enu(
    samples: dict[str, np.ndarray], oriented: dict[str, Orientation], where: str
) -> tuple[dict[str, np.ndarray], str]:
    """{channel: samples}, {channel: (az, dip)} -> ({E, N, U: samples}, orientation note).

    Needs one vertical and two non-parallel horizontals; E/N pairs pass unchanged, others are
    rotated, a downward vertical is sign-flipped. SkipRecord otherwise.
    """
    vertical = [c for c, (_, dip) in oriented.items() if abs(dip) >= VERTICAL_DIP]
    horizontal = [c for c, (_, dip) in oriented.items() if abs(dip) <= HORIZONTAL_DIP]
    tilted = [c for c in oriented if c not in vertical + horizontal]
    if tilted:
        raise SkipRecord("unknown_orientation", f"{where}: channel(s) {', '.join(tilted)} "
                         f"neither vertical nor horizontal ({_describe(oriented)})")
    if len(vertical) != 1 or len(horizontal) != 2:
        raise SkipRecord("unknown_orientation", f"{where}: need 1 vertical and 2 horizontal "
                         f"channels, the headers give {len(vertical)} and {len(horizontal)} "
                         f"({_describe(oriented)}); pass --orientation CHANNEL=E|N|U")
    up = samples[vertical[0]] * (1.0 if oriented[vertical[0]][1] < 0 else -1.0)
    by_az = {oriented[c][0]: c for c in horizontal}
    if set(by_az) == {90.0, 0.0}:
        east, north = samples[by_az[90.0]], samples[by_az[0.0]]
        note = "ENU"
    else:
        c1, c2 = horizontal
        if len(samples[c1]) != len(samples[c2]):
            raise SkipRecord("unequal_length", f"{where}: horizontals {c1}, {c2} differ in "
                             "length")
        try:
            east, north = rotate_to_en(samples[c1], samples[c2], oriented[c1][0],
                                       oriented[c2][0])
        except ValueError as exc:
            raise SkipRecord("unknown_orientation", f"{where}: {exc}") from None
        note = (f"rotated from {c1}/{c2} (azimuths {oriented[c1][0]:g}, "
                f"{oriented[c2][0]:g} deg)")
    if oriented[vertical[0]][1] > 0:
        note += f"; {vertical[0]} points down (sign flipped)"
    return {"E": east, "N": north, "U": up}, note
