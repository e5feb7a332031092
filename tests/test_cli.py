"""The console entry point and the corpus pin check."""

import pandas as pd
import pytest

from timesnet_gen.cli import COMMANDS, main
from timesnet_gen.corpus.format import write_corpus
from timesnet_gen.corpus.pin import dir_md5, verify

from conftest import ROOT


def test_every_verb_parses_through_the_one_parser_helper(capsys):
    """`-h` of every verb prints its usage as `timesnet-gen <verb>` and exits 0 (argparse
    built by stage.stage_parser); an unknown option is a usage error (exit 2)."""
    for verb in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([verb, "-h"])
        assert exit_.value.code == 0, verb
        assert capsys.readouterr().out.startswith(f"usage: timesnet-gen {verb}"), verb
        with pytest.raises(SystemExit) as exit_:
            main([verb, "--no-such-option"])
        assert exit_.value.code == 2, verb
        assert f"timesnet-gen {verb}: error:" in capsys.readouterr().err


def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  split_seed: -1\n")
    args = ["prepare", "--params", str(bad), "--raw", str(tmp_path), "--out", str(tmp_path / "p")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == "timesnet-gen prepare: data.split_seed must be >= 0, got -1\n"
    assert main([*args, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("data.split_seed must be >= 0, got -1\n")


def test_unknown_verb_and_help(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out


def test_pin_detects_a_changed_corpus(tmp_path):
    import numpy as np

    records = pd.DataFrame({"record_id": ["a"], "station": ["0205"]})
    stations = pd.DataFrame({"station": ["0205"]})
    write_corpus(tmp_path / "c", np.zeros((1, 3, 600)), records, stations)
    pinned = tmp_path / "c.dvc"
    pinned.write_text(f"outs:\n- md5: {dir_md5(tmp_path / 'c')}\n  path: c\n")
    verify(tmp_path / "c", pinned)  # unchanged: no error
    (tmp_path / "c" / "stations.csv").write_text("station\n1716\n")
    with pytest.raises(ValueError, match="does not match"):
        verify(tmp_path / "c", pinned)


def test_stage_commands_use_the_project_interpreter():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"].startswith(".venv/bin/"), name
