"""The console entry point and the corpus pin check."""

import pandas as pd
import pytest

from timesnet_gen.cli import COMMANDS, main
from timesnet_gen.corpus.format import write_corpus
from timesnet_gen.corpus.pin import dir_md5, verify

from conftest import ROOT


def test_every_verb_resolves_to_a_main():
    import importlib

    for verb, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), verb


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
