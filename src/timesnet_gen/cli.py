"""One console entry point, one subcommand per pipeline stage: `timesnet-gen <verb> ...`.

Each verb lives in its own module as `main(argv) -> exit code`; modules are imported only when
their verb runs, so `timesnet-gen synth` does not pay for importing torch.

Exit codes: 0 done, 1 a user error (bad params key, path, record or checkpoint: one line on
stderr naming it; `--debug` anywhere on the command line shows the traceback), 2 a usage error.
"""

from __future__ import annotations

import importlib
import sys

from timesnet_gen.errors import one_line_errors
from timesnet_gen.registry import GENERATORS

COMMANDS = {
    "synth": ("timesnet_gen.corpus.synth", "simulate the physics-based default corpus"),
    "check-corpus": ("timesnet_gen.corpus.check",
                     "validate the corpus (HVSR f0 vs truth), overview figure"),
    "ingest": ("timesnet_gen.io.ingest", "convert real records (AFAD .mat/.asc, obspy formats)"),
    "export": ("timesnet_gen.io.export", "export records as MiniSEED, SAC or .npz"),
    "hvsr": ("timesnet_gen.hvsr_survey", "earthquake HVSR survey (f0 per record and station)"),
    "prepare": ("timesnet_gen.prepare", "stack the corpus and make the seeded splits"),
    **{verb: command for g in GENERATORS for verb, command in g.commands.items()},
    "sample": ("timesnet_gen.sample",
               "record-free records of a sampler checkpoint for a station and scenario"),
    "evaluate": ("timesnet_gen.evaluate",
                 "HVSR, f0, specificity scores, intensity measures of generated records"),
    "figures": ("timesnet_gen.notebooks", "execute the figure notebooks (papermill)"),
    "report": ("timesnet_gen.report", "score tables and the README results block"),
}


def usage() -> str:
    lines = ["usage: timesnet-gen <command> [options]   (timesnet-gen <command> -h for help)", ""]
    lines += [f"  {verb:<13} {help_}" for verb, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        print(f"timesnet-gen: unknown command {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    rest = [a for a in rest if a != "--debug"]
    module = importlib.import_module(COMMANDS[verb][0])
    return one_line_errors(lambda: module.main(rest, verb), f"timesnet-gen {verb}", debug)
