"""The one base class of user mistakes: `timesnet-gen` prints it as one line and exits 1.

Every error a user can cause (a bad params key, path, record or checkpoint) derives from
UserError; anything else is a bug and keeps its traceback. `--debug` shows the traceback of a
UserError too.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input: one line, names the key or file."""
