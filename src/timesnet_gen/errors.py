"""The one base class of user mistakes: `timesnet-gen` prints it as one line and exits 1.

Every error a user can cause (a bad params key, path, record or checkpoint) derives from
UserError; anything else is a bug and keeps its traceback. `--debug` shows the traceback of a
UserError too.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake in the user's input: one line, names the key or file."""


def from_known_keys(cls: type[T], raw: dict[str, Any], error: type[Exception] = UserError,
                    what: str = "key") -> T:
    """The dataclass cls(**raw), or `error` listing the keys that are not its fields."""
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise error(f"unknown {what}(s) {unknown}")
    return cls(**raw)


def one_line_errors(run: Callable[[], int | None], prog: str, debug: bool = False) -> int:
    """run()'s exit code; a UserError printed as `prog: message` on stderr, exit 1 (with its
    traceback when debug). The console entry point and the benchmark scripts share it."""
    try:
        return int(run() or 0)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
