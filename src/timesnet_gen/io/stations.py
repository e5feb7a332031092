"""Station codes: normalisation and recovery from file names.

AFAD station codes are four digits ('0205', '1716', '2020'). A code is taken from the file
header whenever there is one; the file name is only a fallback, and there a code must be a
whole token (`AFAD.0205.02_...`, `..._0205_...`), never a substring, and never part of a date:
in `20201030115124_0905` or `2020-10-30_0905` the station is 0905, not 2020.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# A calendar date (YYYYMMDD, YYYY-MM-DD, YYYY_MM_DD, YYYY.MM.DD), optionally followed by a
# time glued to it (hhmm[ss], Thhmmss) or written with colons; the date separator must be the
# same twice and a time after '_' is not taken, so that a following station token survives.
_DATE = re.compile(
    r"(?<![0-9])(?:19|20)\d{2}([-_.]?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])"
    r"(?:T?\d{4}(?:\d{2}(?:\.\d+)?)?|[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?![0-9])"
)
_TOKEN_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_AFAD_CODE = re.compile(r"^\d{4}$")


def normalize_station(code: object) -> str:
    """Header value -> station code string: strip, drop '.0' from floats, zero-pad digits to 4.

    MATLAB stores AFAD station 0205 as the number 205; the canonical code is '0205'.
    """
    text = str(code).strip()
    if re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    if text.isdigit() and len(text) < 4:
        text = text.zfill(4)
    return text


def safe_code(text: str) -> str:
    """Keep only characters that are safe in file names and MiniSEED headers."""
    return re.sub(r"[^A-Za-z0-9]", "", text)


def name_tokens(name: str) -> list[str]:
    """Whole tokens of a file name with dates/times blanked out."""
    stem = Path(name).name
    for suffix in (".gz", ".mat", ".asc", ".mseed", ".miniseed", ".sac", ".msd"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = _DATE.sub(" ", stem)
    return [t for t in _TOKEN_SPLIT.split(stem) if t]


def station_from_name(path: str | Path, known: Iterable[str] = ()) -> str | None:
    """Station code from a file name (then its folder name), or None when absent or ambiguous.

    With `known` codes, a whole token equal to one of them wins; otherwise the single
    four-digit token (AFAD convention). Two different candidates -> None (ambiguous).
    """
    known = {normalize_station(k) for k in known}
    path = Path(path)
    for name in (path.name, path.parent.name):
        tokens = name_tokens(name)
        hits = [t for t in tokens if t in known]
        if not hits:
            hits = [t for t in tokens if _AFAD_CODE.match(t)]
        unique = sorted(set(hits))
        if len(unique) == 1:
            return unique[0]
        if len(unique) > 1:
            return None
    return None
