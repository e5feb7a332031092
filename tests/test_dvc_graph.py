"""dvc.yaml is honest: every stage lists every project module its entry module (the verb's
module in cli.COMMANDS) imports (derived from the code, transitively, function-level imports
included) and the params it reads by key,
so `dvc exp run -S key=value` reruns only the stages that read that key."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from timesnet_gen import registry
from timesnet_gen.cli import COMMANDS

SRC = ROOT / "src"
PACKAGE = "timesnet_gen"


def module_file(name: str) -> Path | None:
    """src/ file of a timesnet_gen module or package (None: not a project module)."""
    base = SRC / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.resolve()
    return None


def project_imports(module: str) -> set[Path]:
    """Files of every timesnet_gen module `module` imports, transitively (package __init__s
    included, since Python runs them)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way run too
            path = module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            source = path.read_text()
            tree = ast.parse(source)
            dynamic = "importlib.import_module" in source  # e.g. sample.py's SAMPLERS table
            for node in ast.walk(tree):
                if dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str):
                    name = node.value.split(":")[0]
                    if name.startswith(PACKAGE + ".") and module_file(name) is not None:
                        todo.append(name)
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.startswith(PACKAGE)]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module.startswith(PACKAGE):
                        todo.append(node.module)
                        # `from timesnet_gen import registry` imports a module
                        todo += [f"{node.module}.{a.name}" for a in node.names
                                 if module_file(f"{node.module}.{a.name}") is not None]
    data_files = {p.with_name("paper.json") for p in seen if p.name == "registry.py"}
    return seen | data_files


def stage_verb(cmd: str) -> str:
    words = cmd.split()
    return words[words.index(".venv/bin/timesnet-gen") + 1]


def covered(path: Path, deps: list[str]) -> bool:
    for dep in deps:
        dep_path = (ROOT / dep).resolve()
        if path == dep_path or dep_path in path.parents:
            return True
    return False


def outs_of(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_every_module_its_command_imports(name):
    stage = STAGES[name]
    verb = stage_verb(stage["cmd"])
    assert verb in COMMANDS, f"{name}: {verb!r} is not a timesnet-gen command"
    assert name == verb or name.startswith(f"{verb}-"), \
        f"stage {name!r} runs `timesnet-gen {verb}`: name it after its verb"
    needed = project_imports(COMMANDS[verb][0])
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if not covered(p, stage["deps"]))
    assert not missing, f"dvc.yaml stage {name!r} misses deps {missing}"


def test_import_closure_sees_function_level_imports():
    # generate imports train.load_model_file at module level and the runtime through it;
    # notebooks imports corpus.format inside a function: both must be found
    assert module_file("timesnet_gen.runtime") in project_imports("timesnet_gen.generate")
    assert module_file("timesnet_gen.corpus.format") in project_imports("timesnet_gen.notebooks")


def test_every_registered_generator_feeds_evaluate_and_figures():
    for g in registry.GENERATORS:
        for stage in ("evaluate", "figures"):
            assert covered((ROOT / g.outputs).resolve(), STAGES[stage]["deps"]), (stage, g.name)
        for path in g.losses.values():
            assert covered((ROOT / path).resolve(), STAGES["figures"]["deps"]), path
        generated = f"{g.outputs}/generated"
        writers = [n for n, s in STAGES.items()
                   if any(o in (g.outputs, generated) for o in outs_of(s))]
        assert len(writers) == 1, f"{generated}: written by {writers}"
        if g.record_free:  # the held-out scenarios of the scenario-fidelity score
            assert any(f"{g.outputs}/scenario" in outs_of(s) for s in STAGES.values()), g.name


def test_every_file_evaluate_writes_is_a_declared_output():
    """The evaluate stage writes confusion_<model>.csv for every generated source into its
    --plots folder: that folder (not one entry per model) is a declared plots output, so a new
    generator's table is tracked too, and a run-cache checkout of the stage cannot leave a
    stale one behind."""
    stage = STAGES["evaluate"]
    args = stage["cmd"].split()
    plots = args[args.index("--plots") + 1]
    declared = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("plots", [])]
    assert declared == [plots]
    for flag in ("--out", "--metrics"):
        target = args[args.index(flag) + 1]
        assert target in outs_of(stage) + [next(iter(m)) for m in stage["metrics"]], target


@pytest.mark.slow
def test_changing_a_finetune_key_leaves_pretrain_unchanged(tmp_path):
    """`dvc status` after editing params: only the stages that read the key are stale."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    dvc = ROOT / ".venv" / "bin" / "dvc"
    if not dvc.exists():
        pytest.skip("needs the project's venv (make setup)")
    repo = tmp_path / "repo"
    for rel in ("dvc.yaml", "params.yaml", ".dvc/config"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def status() -> dict:
        out = subprocess.run([str(dvc), "status", "--json"], cwd=repo, env=env,
                             capture_output=True, text=True, check=True).stdout
        return yaml.safe_load(out) or {}

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    # Record the current params as each stage's lock (as `dvc repro` would), deps unchanged.
    params = yaml.safe_load((repo / "params.yaml").read_text())

    def value(key: str):
        node = params
        for part in key.split("."):
            node = node[part]
        return node

    lock = {"schema": "2.0", "stages": {}}
    for name, stage in STAGES.items():
        lock["stages"][name] = {"cmd": stage["cmd"], "params": {"params.yaml": {
            key: value(key) for key in stage.get("params", [])}}}
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))

    def changed_params(stat: dict) -> set[str]:
        """Stages whose params changed (dvc lists them under "changed deps": params.yaml)."""
        return {name for name, entries in stat.items() for entry in entries
                if isinstance(entry, dict) and "params.yaml" in entry.get("changed deps", {})}

    baseline = changed_params(status())
    assert not baseline, baseline
    edited = yaml.safe_load((repo / "params.yaml").read_text())
    edited["train"]["finetune"]["epochs"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(edited))
    assert changed_params(status()) == {"finetune"}
    edited["evaluate"]["psa_periods"] = [0.1, 1.0]
    (repo / "params.yaml").write_text(yaml.safe_dump(edited))
    stale = changed_params(status())
    assert "check-corpus" not in stale and "pretrain" not in stale and "evaluate" in stale
