"""Physical units of obspy-read traces: samples -> cm/s^2 from what the record says, never guessed.

Each source in UNIT_SOURCES looks at one trace and either converts it or passes; the first
that converts wins. What was applied is returned as text for records.csv (`units_original`,
`processing`). A trace no source can convert raises SkipRecord('units_unknown').

    inventory  --inventory FILE (StationXML, RESP, dataless; obspy.read_inventory): the
               instrument response removed to acceleration (output='ACC', pre-filter and water
               level from the options), m/s^2 -> cm/s^2
    knet       K-NET / KiK-net: obspy's calib is the header scale factor to m/s^2
    evt        Kinemetrics EVT: counts * full scale (V) / 2^(bits-1) / sensitivity (V/g) * g
    sac        SAC kuser0 naming a unit (what `timesnet-gen export` writes)
    sidecar    <stem>.json beside the file with a "units" key (`export --format mseed`)
    scale      --scale: cm/s^2 per input unit, declared by the user for everything else
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from timesnet_gen.io.quarantine import SkipRecord

G = 980.665  # cm/s^2
# factor to cm/s^2 for the unit names AFAD and others write in headers
UNIT_FACTORS = {
    "cm/s^2": 1.0, "cm/s/s": 1.0, "cm/s2": 1.0, "gal": 1.0, "cm/sec^2": 1.0, "cm/s**2": 1.0,
    "m/s^2": 100.0, "m/s/s": 100.0, "m/s2": 100.0, "m/s**2": 100.0,
    "mm/s^2": 0.1, "g": G,
}
DEFAULT_PRE_FILT = (0.02, 0.05, 40.0, 45.0)  # Hz: cosine taper of the deconvolution
DEFAULT_WATER_LEVEL = 60.0  # dB below the spectrum's maximum (obspy's default)


def unit_factor(name: object) -> float | None:
    """'cm/s^2', 'M/S**2', 'gal' ... -> factor to cm/s^2; None when not an acceleration unit."""
    return UNIT_FACTORS.get(str(name).strip().lower().replace(" ", ""))


@dataclass
class UnitOptions:
    """How obspy-read samples become cm/s^2 (see the module docstring)."""

    scale: float | None = None  # cm/s^2 per input unit, for records without known units
    inventory: object = None  # obspy Inventory, or None
    inventory_names: str = ""  # file name(s) of the inventory, for the processing note
    pre_filt: tuple[float, float, float, float] | None = DEFAULT_PRE_FILT  # Hz
    water_level: float | None = DEFAULT_WATER_LEVEL  # dB
    sidecars: dict = field(default_factory=dict)  # cache: json path -> units or None


Converted = tuple[np.ndarray, str, str]  # (samples cm/s^2, units_original, processing)


def _samples(trace: object) -> np.ndarray:
    return np.asarray(trace.data, dtype=np.float64)


def by_inventory(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    if options.inventory is None:
        return None
    try:
        response = options.inventory.get_response(trace.id, trace.stats.starttime)
    except Exception:  # obspy raises plain Exception when the channel is absent
        return None
    sensitivity = response.instrument_sensitivity
    units_in = str(getattr(sensitivity, "input_units", "") or "?")
    units_out = str(getattr(sensitivity, "output_units", "") or "?")
    work = trace.copy()
    work.data = _samples(trace)
    try:
        work.remove_response(inventory=options.inventory, output="ACC",
                             pre_filt=options.pre_filt, water_level=options.water_level)
    except Exception as exc:  # evalresp / unit problems surface as various types
        raise SkipRecord("units_unknown", f"{trace.id}: response removal failed "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    processing = (f"remove_response(output=ACC, pre_filt={options.pre_filt}, "
                  f"water_level={options.water_level}) from {options.inventory_names}; "
                  "m/s^2 x 100")
    return _samples(work) * 100.0, f"{units_out} (response input {units_in})", processing


def by_knet(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    if trace.stats.get("knet") is None:
        return None
    calib = float(trace.stats.calib)
    return (_samples(trace) * calib * 100.0, "counts (K-NET)",
            f"x {calib:.6g} (K-NET scale factor, m/s^2) x 100")


def by_evt(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    evt = trace.stats.get("kinemetrics_evt")
    if evt is None:
        return None
    fullscale, sensitivity = evt.get("chan_fullscale"), evt.get("chan_sensitivity")
    bits = evt.get("a2dbits")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (fullscale, sensitivity, bits)):
        raise SkipRecord("units_unknown", f"{path.name} channel {trace.stats.channel}: EVT "
                         f"header lacks full scale / sensitivity / a2dbits ({fullscale}, "
                         f"{sensitivity}, {bits})")
    volts_per_count = float(fullscale) / 2.0 ** (int(bits) - 1)
    factor = volts_per_count / float(sensitivity) * G
    note = (f"counts x {fullscale:g} V / 2^{int(bits) - 1} / {sensitivity:.6g} V/g x "
            f"{G:g} (EVT header; range {evt.get('chan_range', '?')})")
    return _samples(trace) * factor, "counts (Kinemetrics EVT)", note


def by_sac(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    sac = trace.stats.get("sac")
    factor = unit_factor(sac.get("kuser0", "")) if sac is not None else None
    if factor is None:
        return None
    calib = float(trace.stats.calib)
    return (_samples(trace) * calib * factor, f"{sac['kuser0'].strip()} (SAC kuser0)",
            "none" if factor * calib == 1.0 else f"x {factor * calib:g}")


def _sidecar_units(path: Path, cache: dict) -> str | None:
    sidecar = path.with_suffix(".json")
    if sidecar not in cache:
        try:
            units = json.loads(sidecar.read_text()).get("units")
        except (OSError, ValueError, AttributeError):
            units = None
        cache[sidecar] = units if unit_factor(units) is not None else None
    return cache[sidecar]


def by_sidecar(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    units = _sidecar_units(path, options.sidecars)
    if units is None:
        return None
    factor = unit_factor(units) * float(trace.stats.calib)
    return (_samples(trace) * factor, f"{units} ({path.with_suffix('.json').name})",
            "none" if factor == 1.0 else f"x {factor:g}")


def by_scale(trace: object, path: Path, options: UnitOptions) -> Converted | None:
    if options.scale is None:
        return None
    factor = float(trace.stats.calib) * options.scale
    return (_samples(trace) * factor, "declared by --scale",
            f"x calib {float(trace.stats.calib):g} x --scale {options.scale:g}")


UNIT_SOURCES: dict[str, Callable] = {
    "inventory": by_inventory, "knet": by_knet, "evt": by_evt, "sac": by_sac,
    "sidecar": by_sidecar, "scale": by_scale,
}


def to_cm_s2(trace: object, path: Path, options: UnitOptions) -> Converted:
    """One trace -> (samples cm/s^2, units_original, processing), or SkipRecord('units_unknown')."""
    for source in UNIT_SOURCES.values():
        converted = source(trace, path, options)
        if converted is not None:
            return converted
    fmt = trace.stats.get("_format", "?")
    raise SkipRecord("units_unknown", f"{path.name} {trace.id}: {fmt} samples with no known "
                     "unit (counts?); give --inventory FILE to remove the instrument response, "
                     "or --scale CM_S2_PER_UNIT if you know the unit")
