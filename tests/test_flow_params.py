"""The flow sampler's parameters: bad values are refused, one message naming each."""

from __future__ import annotations

import pytest

from timesnet_gen.models import flow_sampler as fs


@pytest.mark.parametrize("overrides, match", [
    (dict(timing="shift"), "timing = 'shift'"),
    (dict(timing="warp", p_align_s=15.0), r"p_align_s = 15.0 \(warp: must be in \(0, align_s"),
    (dict(timing="warp", p_fraction=0.05), r"p_fraction = 0.05 \(warp: must be in"),
    (dict(timing="stretch", end_align_s=15.0), r"end_align_s = 15.0 \(stretch: must be > "),
    (dict(timing="stretch", end_fraction=1.0), r"end_fraction = 1.0 \(stretch: must be in"),
    (dict(timing="stretch", p_align_s=0.0), r"p_align_s = 0.0 \(stretch: must be in"),
    (dict(timing="pslot", p_align_s=16.0), r"p_align_s = 16.0 \(pslot: must be in \(0, align_s"),
    (dict(p_knot="pick"), r"p_knot = 'pick' \(not one of \('arias', 'aic', 'picker'\)\)"),
    (dict(long_gap="wrap"), r"long_gap = 'wrap' \(not one of \('clip', 'shift', 'squeeze'\)\)"),
    (dict(canvas="clip"), r"canvas = 'clip' \(not one of \('wrap', 'hold'\)\)"),
    (dict(record_scale="energy"),
     r"record_scale = 'energy' \(not one of \('peak', 'spectrum'\)\)"),
])
def test_bad_timing_params_are_refused(overrides, match):
    with pytest.raises(fs.FlowSamplerError, match=match):
        fs.FlowSamplerParams(**overrides)


@pytest.mark.parametrize("key", ["envelope_rounds", "griffin_lim_iters", "long_period_hz",
                                 "random_phase_hz", "num_threads"])
def test_negative_decoder_rounds_are_refused(key):
    with pytest.raises(fs.FlowSamplerError, match=f"{key} = -1"):
        fs.FlowSamplerParams(**{key: -1})


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_dropout_outside_unit_interval_is_refused(value):
    with pytest.raises(fs.FlowSamplerError, match=rf"dropout = {value} \(must be in \[0, 1\)\)"):
        fs.FlowSamplerParams(dropout=value)


def test_params_from_a_mapping_refuse_unknown_keys_and_wrong_types():
    """A checkpoint's params are checked as params.yaml's are: an unknown key, a string where a
    bool is wanted (it would be truthy) and a float where an int is wanted are refused."""
    with pytest.raises(fs.FlowSamplerError, match="unknown key generators.flow.bogus"):
        fs.FlowSamplerParams.from_dict({"d_model": 8, "bogus": 1})
    with pytest.raises(fs.FlowSamplerError, match="quiet_before_p: expected bool, got str"):
        fs.FlowSamplerParams.from_dict({"quiet_before_p": "yes"})
    with pytest.raises(fs.FlowSamplerError, match="prior_fine: expected int, got float 1.5"):
        fs.FlowSamplerParams.from_dict({"prior_fine": 1.5})
    assert fs.FlowSamplerParams.from_dict({"lr": 1}).lr == 1.0  # an int is a float


def test_unknown_period_selection_is_refused():
    with pytest.raises(fs.FlowSamplerError, match="period_selection = 'median' \\(not one of"):
        fs.FlowSamplerParams(period_selection="median")
