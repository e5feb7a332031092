"""Check a corpus folder against the hash that `data.dvc` pins, without DVC's cache.

DVC hashes a directory as the md5 of the JSON list of its files' {"md5", "relpath"} entries
(sorted by path, `json.dumps(..., sort_keys=True)`), suffixed ".dir".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_md5(folder: str | Path) -> str:
    """DVC's directory hash of `folder` (e.g. 'a1b2....dir')."""
    folder = Path(folder)
    entries = [
        {"md5": file_md5(path), "relpath": path.relative_to(folder).as_posix()}
        for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
        if path.is_file()
    ]
    payload = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(payload).hexdigest() + ".dir"


def pinned_md5(dvc_file: str | Path) -> str:
    """The md5 that a single-output .dvc file pins."""
    spec = yaml.safe_load(Path(dvc_file).read_text())
    (out,) = spec["outs"]
    return out["md5"]


def verify(folder: str | Path, dvc_file: str | Path) -> None:
    """Raise ValueError when `folder` differs from what `dvc_file` pins."""
    actual, expected = dir_md5(folder), pinned_md5(dvc_file)
    if actual != expected:
        raise ValueError(
            f"{folder} (md5 {actual}) does not match {dvc_file} (md5 {expected}): the corpus "
            "was synthesised with other parameters or library versions, or edited by hand"
        )
