"""The argument parser every `timesnet-gen <verb>` starts from (kept apart from cli.py, which
reads the registry, so a stage's code does not depend on which generators are registered)."""

from __future__ import annotations

import argparse


def stage_parser(verb: str, doc: str | None) -> argparse.ArgumentParser:
    """The subcommand's parser: its module docstring as help; usage errors exit 2."""
    return argparse.ArgumentParser(prog=f"timesnet-gen {verb}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
