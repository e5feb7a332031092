"""One console entry point, one subcommand per pipeline stage: `timesnet-gen <verb> ...`.

Each verb lives in its own module as `main(argv) -> exit code`; modules are imported only when
their verb runs, so `timesnet-gen synth` does not pay for importing torch.

Exit codes: 0 done, 1 a user error (bad params key, path, record or checkpoint: one line on
stderr naming it; `--debug` anywhere on the command line shows the traceback), 2 a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from timesnet_gen.errors import UserError

COMMANDS = {
    "synth": ("timesnet_gen.corpus.synth", "simulate the physics-based default corpus"),
    "check-corpus": ("timesnet_gen.corpus.check", "validate the corpus (HVSR f0 vs truth), overview figure"),
    "ingest": ("timesnet_gen.io.ingest", "convert real records (AFAD .mat/.asc, obspy formats)"),
    "export": ("timesnet_gen.io.export", "export records as MiniSEED, SAC or .npz"),
    "prepare": ("timesnet_gen.prepare", "stack the corpus and make the seeded splits"),
    "pretrain": ("timesnet_gen.train", "phase 0: pre-train TimesNet on non-target stations"),
    "finetune": ("timesnet_gen.train", "phase 1: station-conditioned fine-tuning"),
    "generate": ("timesnet_gen.generate", "generate and reconstruct records with TimesNet-Gen"),
    "train-vae": ("timesnet_gen.vae", "train the spectrogram conditional-VAE baseline"),
    "generate-vae": ("timesnet_gen.vae", "generate and reconstruct records with the VAE"),
    "train-sampler": ("timesnet_gen.sample", "train the record-free TimesNet flow sampler"),
    "sample": ("timesnet_gen.sample", "record-free records for a station and scenario"),
    "evaluate": ("timesnet_gen.evaluation.cli", "HVSR, f0, specificity scores, intensity measures"),
    "score": ("timesnet_gen.score", "the evaluate stage: every model vs all and held-out records"),
    "report": ("timesnet_gen.report", "score tables and the README results block"),
}


def stage_parser(verb: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser every subcommand starts from: its module docstring as help."""
    return argparse.ArgumentParser(prog=f"timesnet-gen {verb}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


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
    try:
        return int(module.main(rest, verb) or 0)
    except UserError as exc:
        if debug:
            traceback.print_exc()
        print(f"timesnet-gen {verb}: {exc}", file=sys.stderr)
        return 1
