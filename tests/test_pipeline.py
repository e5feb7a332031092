"""The whole DVC pipeline on the tiny profile, in a scratch copy of the repository.

Checks that every stage and notebook runs, every figure is written, `dvc status` is clean
afterwards and a second `dvc repro` does nothing.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

FIGURES = [
    "figures/corpus_overview.png",
    "figures/similarity_matrices.png",
    "figures/similarity_matrices_5x5_10x10.png",
    "figures/intensity_measures.png",
    "figures/training_curves.png",
    "figures/ground_truth_f0.png",
    "figures/novelty.png",
    "figures/realism.png",
    "figures/table_scores.md",
    "figures/table_scores.csv",
    "figures/results.md",
]
PER_STATION = ["figures/combined/station_{}.png", "figures/waveforms/station_{}.png"]


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = deep_merge(base[key], value)
        else:
            out[key] = value
    return out


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout of the repository")
    dst = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dst / name)
    (dst / ".venv").symlink_to(ROOT / ".venv")
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                        yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text()))
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
    run(["git", "init", "-q"], dst)
    run(git + ["add", "-A"], dst)
    run(git + ["commit", "-qm", "tiny"], dst)
    bin_ = ROOT / ".venv" / "bin"
    run([str(bin_ / "timesnet-gen"), "synth", "--out", "data/raw"], dst)
    run([str(bin_ / "dvc"), "commit", "-f", "-q", "data.dvc"], dst)
    return dst


@pytest.mark.slow
def test_tiny_pipeline_produces_every_figure(repo):
    dvc = str(ROOT / ".venv" / "bin" / "dvc")
    run([dvc, "repro"], repo)
    stations = yaml.safe_load((repo / "params.yaml").read_text())["data"]["target_stations"]
    expected = FIGURES + [p.format(s) for p in PER_STATION for s in stations]
    missing = [p for p in expected if not (repo / p).is_file()]
    assert not missing, f"figures not produced: {missing}"
    assert (repo / "metrics.json").is_file()
    status = run([dvc, "status"], repo)
    assert "up to date" in status, status
    again = run([dvc, "repro"], repo)
    assert "didn't change" in again or "up to date" in again, again
    assert "Running stage" not in again, again
