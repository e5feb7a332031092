import re

import pytest
import yaml

from timesnet_gen.config import ParamsError, load_params, params_from_dict

from conftest import ROOT


def test_committed_params_validate():
    params = load_params(ROOT / "params.yaml")
    assert params.data.target_stations == ["0205", "1716", "2020", "3130", "4628"]
    assert sum(params.data.synth.target_records.values()) == 325


def test_dataclass_defaults_are_the_committed_cpu_profile():
    """The schema's defaults and params.yaml describe the same default profile: a key added to
    one and forgotten in the other, or a default edited in only one place, fails here."""
    from timesnet_gen.config import to_dict

    import importlib

    from timesnet_gen import registry

    committed = to_dict(load_params(ROOT / "params.yaml"))
    defaults = to_dict(params_from_dict({}))
    for g in registry.GENERATORS:  # generators.<name>: the generator's own dataclass
        if g.params:
            module, _, cls = g.params.partition(":")
            defaults["generators"][g.name] = to_dict(getattr(importlib.import_module(module),
                                                             cls)())
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def leaves(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    assert leaves(committed) == leaves(defaults)
    assert set(leaves(raw)) == set(leaves(defaults)), "params.yaml must spell out every key"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"d_modle": 8}}, "unknown key model.d_modle"),
        ({"trainn": {}}, "unknown key trainn"),
        ({"model": {"d_model": "big"}}, "model.d_model: expected int"),
        ({"model": {"d_model": 8.5}}, "model.d_model: expected int"),
        ({"train": {"pretrain": {"lr": "fast"}}}, "train.pretrain.lr: expected float"),
        ({"model": {"conditioning": "add"}}, "model.conditioning: expected one of"),
        ({"data": {"target_stations": [205]}}, "quote station codes"),
        ({"data": {"holdout_fraction": 1.5}}, "data.holdout_fraction"),
        ({"evaluate": {"fmin": 30.0}}, "fmin must be below"),
        ({"model": 3}, "model: expected a mapping"),
        ({"train": {"finetune": {"epochs": -1}}}, "train.finetune.epochs must be >= 1, got -1"),
        ({"train": {"pretrain": {"batch_size": 0}}}, "train.pretrain.batch_size must be >= 1"),
        ({"data": {"split_seed": -1}}, "data.split_seed must be >= 0"),
        ({"data": {"max_records_per_station": -1}}, "data.max_records_per_station must be >= 0"),
        ({"data": {"max_pretrain_stations": -2}}, "data.max_pretrain_stations must be >= 0"),
        ({"train": {"seed": -1}}, "train.seed must be >= 0"),
        ({"generate": {"seed": -1}}, "generate.seed must be >= 0"),
        ({"train": {"pretrain": {"lr": float("nan")}}},
         "train.pretrain.lr: expected a finite float, got nan"),
        ({"evaluate": {"fmax": float("inf")}}, "evaluate.fmax: expected a finite float, got inf"),
        ({"evaluate": {"realism": {"periods": [0.1, float("nan")]}}},
         "evaluate.realism.periods[1]: expected a finite float"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        params_from_dict(raw)


def test_nan_in_the_yaml_file_names_the_key(tmp_path):
    """YAML's .nan and .inf are floats to the parser; the schema refuses them in one line."""
    path = tmp_path / "params.yaml"
    path.write_text("vae:\n  lr: .nan\n")
    with pytest.raises(ParamsError, match=r"vae\.lr: expected a finite float, got nan"):
        load_params(path)


def test_int_accepted_for_float():
    params = params_from_dict({"train": {"pretrain": {"lr": 1}}})
    assert params.train.pretrain.lr == 1.0 and isinstance(params.train.pretrain.lr, float)


def test_yaml_octal_station_code_is_caught(tmp_path):
    # unquoted 0205 is an octal int in YAML 1.1: the schema must refuse it, not train on "133"
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  target_stations: [0205, '1716']\n")
    with pytest.raises(ParamsError, match="data.target_stations"):
        load_params(path)


def test_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model: {d_model: [\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(path)
