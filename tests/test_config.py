import pytest
import yaml

from timesnet_gen.config import ParamsError, load_params, params_from_dict

from conftest import ROOT


def test_committed_params_validate():
    params = load_params(ROOT / "params.yaml")
    assert params.data.target_stations == ["0205", "1716", "2020", "3130", "4628"]
    assert sum(params.data.synth.target_records.values()) == 325


def test_defaults_equal_the_empty_file():
    assert params_from_dict({}) == params_from_dict(None)


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
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")):
        params_from_dict(raw)


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
