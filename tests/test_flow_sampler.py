"""The TimesNet flow sampler end to end: training, sampling, the options that retrain or
resample, the state."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import resplit
from flow_common import (FS, T, tiny_params, assert_older_state_loads_off, assert_state_refused,
                         retrained, sample_and_reload, synthetic_records)

from timesnet_gen.errors import UserError
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import calibration as cal
from timesnet_gen.models.flow_sampler import latent as lat
from timesnet_gen.models.flow_sampler import network as fnet
from timesnet_gen.models.flow_sampler import representation as rep


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared folder: 2 target and 2 pretrain stations, 6 records each, with the
    scenario columns in index.csv."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("flow")
    rows, waves = [], []
    stations = [("A", "target", 0, 2.0), ("B", "target", 1, 8.0), ("P1", "pretrain", -1, 4.0),
                ("P2", "pretrain", -1, 5.0)]
    for code, role, index, f0 in stations:
        m, r = rng.uniform(4, 6, 6), rng.uniform(10, 100, 6)
        waves.append(synthetic_records(rng, f0, m, r))
        other = "holdout" if role == "target" else "val"
        for k in range(6):
            rows.append({"record_id": f"{code}_{k}", "station": code, "role": role,
                         "split": other if k == 0 else "train", "station_index": index,
                         "magnitude": m[k], "distance_km": r[k]})
    prepared = root / "prepared"
    prepared.mkdir()
    np.save(prepared / "waveforms.npy", np.concatenate(waves))
    pd.DataFrame(rows).to_csv(prepared / "index.csv", index=False)
    return prepared


@pytest.fixture(scope="module")
def trained(prepared):
    out = prepared.parent / "model"
    sampler = fs.train_sampler(prepared, tiny_params(), out, raw_dir=prepared.parent / "none",
                               log=lambda _: None)
    return sampler, out


@pytest.mark.parametrize("m, r, match", [
    ([np.nan], [10.0], "magnitude must be finite"),
    ([5.0], [-1.0], "distance_km must be finite and > 0"),
    ([5.0, 6.0], [10.0], "equal"),
    ([], [], "n must be >= 1"),
])
def test_check_scenario_refuses(m, r, match):
    with pytest.raises(UserError, match=match):
        fs.check_scenario(np.array(m), np.array(r))


def test_training_writes_checkpoint_and_both_phases(trained):
    sampler, out = trained
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["kind"] == "timesnet-flow" and ckpt["format"] == 1
    losses = pd.read_csv(out / "losses.tsv", sep="\t")
    assert list(losses["phase"]) == ["pretrain", "finetune", "finetune"]
    assert np.isfinite(losses["train_loss"]).all()
    assert sampler.stations == ["A", "B"]


def test_training_without_validation_records_skips_the_validation_loss(prepared, tmp_path):
    """A corpus whose pre-training stations have no val split (few records per station, as a
    real corpus can have) trains: the validation loss is left empty, and the sampler draws."""
    no_val = resplit(prepared, tmp_path / "no_val", "split", "val", "train")
    sampler = fs.train_sampler(no_val, tiny_params(), tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    losses = pd.read_csv(tmp_path / "m" / "losses.tsv", sep="\t")
    assert losses["val_loss"].isna().all() and np.isfinite(losses["train_loss"]).all()
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", np.array([5.0]),
                      np.array([30.0]), seed=1)


def test_scenarios_are_the_training_rows_of_the_station(trained, prepared):
    sampler, _ = trained
    index = pd.read_csv(prepared / "index.csv")
    rows = index[(index["station"] == "B") & (index["split"] == "train")]
    np.testing.assert_allclose(sampler.scenarios("B"), rows[["magnitude", "distance_km"]])


def test_sample_shape_determinism_and_conditioning(trained):
    sampler, _ = trained
    m, r = np.array([5.0, 5.5, 4.5]), np.array([20.0, 40.0, 80.0])
    a = sampler.sample("A", m, r, seed=3)
    assert a.shape == (3, 3, T) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, sampler.sample("A", m, r, seed=3))
    assert not np.allclose(a, sampler.sample("A", m, r, seed=4))
    assert not np.allclose(a, sampler.sample("B", m, r, seed=3))  # station reaches the output
    assert not np.allclose(a, sampler.sample("A", m + 1.0, r, seed=3))  # so does M


@pytest.mark.parametrize("timing, n_timing", [("warp", 2), ("stretch", 3), ("pslot", 2)])
def test_warped_timings_train_sample_and_round_trip_their_state(prepared, tmp_path, timing,
                                                                n_timing):
    """timing "warp" / "stretch" end to end: 2 / 3 timing scalars in the static part, seeded
    records that start and end where a record can (finite, peak exp(level)), a state that
    reloads, and a retrain with the same seed that writes the same losses.tsv bytes."""
    p = tiny_params(timing=timing, align_s=20.0, end_align_s=30.0)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.net.n_scalars == 1 + n_timing
    assert sampler.stats["static_std"].numel() == 1 + n_timing + 3 * p.n_fine
    m, r = np.array([5.0, 5.5, 4.5]), np.array([20.0, 40.0, 80.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "B", m, r, seed=3)
    if timing == "stretch":
        fs.train_sampler(prepared, p, tmp_path / "m2", raw_dir=tmp_path / "none",
                         log=lambda _: None)
        assert (tmp_path / "m" / "losses.tsv").read_bytes() == \
            (tmp_path / "m2" / "losses.tsv").read_bytes()


def test_real_records_profile_trains_samples_and_round_trips_its_state(prepared, tmp_path,
                                                                      trained):
    """The decoder settings for real records (REAL_RECORDS: canvas hold, long_gap shift, the
    long-period steps off, quiet before the P knot) end to end: trained (the decoder-bias fit
    included), seeded records, a state that reloads with them; a checkpoint from before the
    canvas option loads as wrap."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ingest.json").write_text("{}\n")  # what `ingest` writes beside real records
    lines = []
    sampler = fs.train_sampler(prepared, tiny_params(**fs.REAL_RECORDS), tmp_path / "m",
                               raw_dir=raw, log=lines.append)
    assert sampler.params.canvas == "hold" and not any("warning" in x for x in lines)
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", np.array([5.0, 4.5]),
                      np.array([20.0, 60.0]), seed=3)
    old = trained[0].state()
    del old["params"]["canvas"]
    assert fs.FlowSampler.from_state(old).params.canvas == "wrap"


def test_real_records_decoded_with_the_simulated_corpus_settings_get_a_warning(tmp_path):
    """Beside ingested records (ingest.json) every setting of the simulated corpus's is named
    with the real records' ones; the real records' settings, or a corpus that `ingest` did not
    write, get none."""
    assert fs.real_records_warning(tmp_path, fs.FlowSamplerParams()) is None
    (tmp_path / "ingest.json").write_text("{}\n")
    message = fs.real_records_warning(tmp_path, fs.FlowSamplerParams(long_gap="shift"))
    assert message == (
        f"warning: {tmp_path} holds real records (ingest.json), decoded with the simulated "
        "corpus's canvas 'wrap', long_period_hz 0.6, random_phase_hz 0.3, quiet_before_p False; "
        "real records take canvas 'hold', long_gap 'shift', long_period_hz 0.0, "
        "random_phase_hz 0.0, quiet_before_p True (README \"Run it on your own AFAD records\")")
    assert fs.real_records_warning(tmp_path, fs.FlowSamplerParams(**fs.REAL_RECORDS)) is None


def test_aic_knot_and_quadratic_mean_train_sample_and_round_trip_their_state(prepared,
                                                                            tmp_path):
    """p_knot "aic" with mean_quadratic end to end: five scenario terms in the stats, finite
    seeded records of the checkpoint's peak, a state that reloads to the same records; a
    checkpoint without p_knot (older) loads with the 1 % Arias knot it was trained with."""
    p = tiny_params(p_knot="aic", mean_quadratic=True)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.stats["coarse_slope"].shape[0] == 5
    m, r = np.array([5.0, 7.5]), np.array([20.0, 40.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=1)
    old = sampler.state()  # written before p_knot existed: trained with the 1 % Arias knot
    del old["params"]["p_knot"]
    assert fs.FlowSampler.from_state(old).params.p_knot == "arias"


def test_fixed_periods_train_from_the_data_and_do_not_depend_on_the_batch(prepared, tmp_path):
    """period_selection "fixed": the frequencies come from the training features and travel in
    the checkpoint; a record's velocity is the same alone and in a batch (with "batch" it is
    not: the batch picks the periods)."""
    sampler = fs.train_sampler(prepared, tiny_params(period_selection="fixed"), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    freq = [b.freq.tolist() for b in sampler.net.blocks]
    assert all(f == freq[0] and len(f) == 2 and min(f) >= 1 for f in freq)
    again = fs.FlowSampler.from_state(torch.load(tmp_path / "m" / "model.pt",
                                                 weights_only=True)["state"])
    assert [b.freq.tolist() for b in again.net.blocks] == freq
    torch.manual_seed(1)
    n, t = 6, sampler.n_frames
    n_coarse, n_static = lat.latent_sizes(sampler.stats, t, sampler.net.n_scalars)
    args = (torch.randn(n, t, n_coarse), torch.randn(n, n_static), torch.rand(n),
            torch.tensor([1, 2, 1, 2, 1, 2]), torch.randn(n, 2))
    with torch.no_grad():
        together = again.net(*args)[0]
        for i in range(n):
            alone = again.net(*(a[i:i + 1] for a in args))[0]
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)


def test_remainder_calibrate_leaves_the_flow_and_scales_its_frames(trained, prepared, tmp_path):
    """The gain (on by default) is fitted after training: the network's weights are those of the
    same run without it; sampling multiplies the flow's frame coordinates by it; a checkpoint
    whose params and stats disagree is refused; an older checkpoint loads with the option off."""
    sampler, out = trained
    plain = retrained(sampler, prepared, tmp_path, remainder_calibrate=False)
    gain = sampler.stats["frame_gain"]
    assert gain.shape == (plain.n_frames, plain.stats["coarse_std"].numel() // plain.n_frames)
    assert torch.isfinite(gain).all() and (gain >= 0).all() and gain.max() > 0
    assert "frame_gain" not in plain.stats
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0]]), sampler.stats)

    def frames(stats):
        s = fs.FlowSampler(sampler.params, sampler.net, stats, sampler.stations,
                           sampler._scenarios, sampler.n_frames, sampler.n_samples)
        return s.features(1, scenario, torch.Generator().manual_seed(3))[0]

    zero, base, doubled = (frames(sampler.stats | {"frame_gain": k * torch.ones_like(gain)})
                           for k in (0.0, 1.0, 2.0))
    # the gain scales the frame remainder; the record components (record_pcs) are left
    torch.testing.assert_close(doubled - base, base - zero, atol=1e-5, rtol=0)
    assert (base - zero).abs().max() > 0.1
    assert_state_refused(sampler, lambda st: st["stats"].pop("frame_gain"),
                         "remainder_calibrate = True, but the statistics lack the frame gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(frame_gain=gain[1:]),
                         "frame_gain has shape")
    old = sampler.state()  # written before the option existed: trained without it
    del old["params"]["remainder_calibrate"], old["stats"]["frame_gain"]
    assert fs.FlowSampler.from_state(old).params.remainder_calibrate is False
    m, r = np.array([5.0]), np.array([40.0])
    again = fs.FlowSampler.from_state(torch.load(out / "model.pt", weights_only=True)["state"])
    np.testing.assert_array_equal(again.sample("A", m, r, seed=4), sampler.sample("A", m, r, 4))


def test_remainder_smooth_leaves_the_flow_and_correlates_its_frames(trained, prepared, tmp_path):
    """The smoothing (on by default) is fitted after training: the network's weights and the
    frame gain are those of the same run without it; sampling passes the flow's frame
    coordinates (after the gain) through `smooth_frames`, raising their lag-1 correlation
    towards the training records'; a checkpoint whose params and stats disagree is refused; an
    older checkpoint loads with the option off and samples as it did."""
    sampler, out = trained
    plain = retrained(sampler, prepared, tmp_path, remainder_smooth=False)
    torch.testing.assert_close(sampler.stats["frame_gain"], plain.stats["frame_gain"],
                               rtol=0, atol=0)
    coef = sampler.stats["frame_smooth"]
    channels = plain.stats["coarse_std"].numel() // plain.n_frames
    assert coef.shape == (2, channels) and torch.isfinite(coef).all()
    assert "frame_smooth" not in plain.stats
    station = torch.ones(64, dtype=torch.long)
    scenario = lat.standardise_scenario(np.tile([[5.0, 30.0]], (64, 1)), sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xc, cal.smooth_frames(xc0, coef), rtol=0, atol=0)
    torch.testing.assert_close(xs, xs0, rtol=0, atol=0)
    assert cal.lag1(xc).mean() > cal.lag1(xc0).mean() + 0.1
    assert_state_refused(sampler, lambda st: st["stats"].pop("frame_smooth"),
                         "remainder_smooth = True, but the statistics lack the frame smoothing")
    assert_state_refused(sampler, lambda st: st["stats"].update(frame_smooth=coef[:, 1:]),
                         "frame_smooth has shape")
    assert_older_state_loads_off(plain, "remainder_smooth")


def test_decoder_bias_leaves_the_flow_and_asks_the_decoder_for_less(trained, prepared,
                                                                   tmp_path):
    """decoder_bias (on by default) is fitted after training: the network's weights are those
    of the same run without it; sampling decodes the flow's frames less the fitted mean error
    (`FlowSampler.decode`); a checkpoint whose params and stats disagree is refused; an older
    checkpoint loads with the option off and samples as it did."""
    sampler, _ = trained
    plain = retrained(sampler, prepared, tmp_path, decoder_bias=False)
    bias = sampler.stats["decoder_bias"]
    assert "decoder_bias" not in plain.stats
    assert bias.shape == (plain.n_frames, plain.stats["coarse_std"].numel() // plain.n_frames)
    assert float(bias.abs().max()) > 0.01
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0]]), sampler.stats)
    _, coarse, static = plain.features(1, scenario, torch.Generator().manual_seed(3))
    mine = sampler.decode(coarse, static, torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(mine, plain.decode(coarse - bias, static,
                                                     torch.Generator().manual_seed(4)))
    assert np.abs(mine - plain.decode(coarse, static, torch.Generator().manual_seed(4))
                  ).max() > 0
    assert_state_refused(sampler, lambda st: st["stats"].pop("decoder_bias"),
                         "decoder_bias = True, but the statistics lack the decoder's mean error")
    assert_state_refused(sampler, lambda st: st["stats"].update(decoder_bias=bias[1:]),
                         "decoder_bias has shape")
    assert_older_state_loads_off(plain, "decoder_bias")


def test_site_intercepts_leave_the_flow_and_move_only_the_frames_intercepts(trained, prepared,
                                                                            tmp_path):
    """site_intercepts (off by default) changes what sampling starts from, not what the flow
    learns: the network's weights are those of the same run without it, the statistics differ
    in the coarse intercepts alone; an older checkpoint loads with the option off."""
    sampler, _ = trained
    site = retrained(sampler, prepared, tmp_path, site_intercepts=True)
    differ = [k for k, v in site.stats.items() if not torch.equal(v, sampler.stats[k])]
    assert differ == ["coarse_icpt"]
    assert_older_state_loads_off(sampler, "site_intercepts")


def test_prior_calibrate_scales_the_prior_draws_by_its_gain(trained, prepared, tmp_path):
    """prior_calibrate (on by default) is fitted after the prior: the network's and the prior's
    weights are those of the same run without it; the prior's record components are multiplied
    by the gain, the rest of the latent left; a checkpoint whose params and stats disagree is
    refused; an older checkpoint loads with the option off; without a prior there is no gain."""
    sampler, _ = trained
    plain = fs.train_sampler(prepared, tiny_params(prior_calibrate=False), tmp_path / "m",
                             raw_dir=tmp_path / "none", log=lambda _: None)
    for mine, theirs in ((sampler.net, plain.net), (sampler.prior, plain.prior)):
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    gain = sampler.stats["prior_gain"]
    n_rec, k = sampler.params.record_pcs, fs.n_scalars(sampler.params)
    assert gain.shape == (n_rec,) and torch.isfinite(gain).all() and (gain > 0).all()
    assert "prior_gain" not in plain.stats
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xs[:, k:k + n_rec], xs0[:, k:k + n_rec] * gain, rtol=1e-6,
                               atol=1e-7)
    torch.testing.assert_close(xs[:, :k], xs0[:, :k], rtol=0, atol=0)
    torch.testing.assert_close(xs[:, k + n_rec:], xs0[:, k + n_rec:], rtol=0, atol=0)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    assert_state_refused(sampler, lambda st: st["stats"].pop("prior_gain"),
                         "prior_calibrate = True with record_prior = True, but the statistics "
                         "lack the record prior's gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(prior_gain=gain[:2]),
                         f"prior_gain has shape \\(2,\\), expected \\({n_rec},\\)")
    old = sampler.state()  # written before the option existed: trained without it
    del old["params"]["prior_calibrate"], old["stats"]["prior_gain"]
    assert fs.FlowSampler.from_state(old).params.prior_calibrate is False
    none = fs.train_sampler(prepared, tiny_params(record_prior=False), tmp_path / "n",
                            raw_dir=tmp_path / "none", log=lambda _: None)
    assert none.params.prior_calibrate and "prior_gain" not in none.stats


def test_scalar_calibrate_scales_the_flows_scalars_before_the_prior_sees_them(trained, prepared,
                                                                              tmp_path):
    """scalar_calibrate (off by default) is fitted after training: the network's and the prior's
    weights are those of the same run without it; the flow's level and timing scalars are
    multiplied by the gain and the record prior is given the scaled ones; the frames are left;
    a checkpoint whose params and stats disagree is refused; an older checkpoint loads with the
    option off and samples as before."""
    plain, _ = trained
    assert not plain.params.scalar_calibrate and "scalar_gain" not in plain.stats
    sampler = fs.train_sampler(prepared, tiny_params(scalar_calibrate=True), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    for mine, theirs in ((sampler.net, plain.net), (sampler.prior, plain.prior)):
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    gain, k = sampler.stats["scalar_gain"], fs.n_scalars(sampler.params)
    assert gain.shape == (k,) and torch.isfinite(gain).all() and (gain > 0).all()
    assert not torch.allclose(gain, torch.ones(k), rtol=0.01)  # the tiny flow is not calibrated
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xs[:, :k], xs0[:, :k] * gain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    # the prior draws from the same noise given the scaled scalars (and refits its own gain)
    n_rec = sampler.params.record_pcs
    same_gain = fs.FlowSampler(plain.params, plain.net,
                               plain.stats | {"prior_gain": sampler.stats["prior_gain"]},
                               plain.stations, plain._scenarios, plain.n_frames,
                               plain.n_samples, plain.prior)
    unscaled = same_gain.latent(station, scenario, torch.Generator().manual_seed(3))[1]
    assert (xs[:, k:k + n_rec] - unscaled[:, k:k + n_rec]).abs().max() > 1e-4
    assert_state_refused(sampler, lambda st: st["stats"].pop("scalar_gain"),
                         "scalar_calibrate = True, but the statistics lack the scalar gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(scalar_gain=gain[:1]),
                         f"scalar_gain has shape \\(1,\\), expected \\({k},\\)")
    assert_older_state_loads_off(plain, "scalar_calibrate")


def test_station_scatter_gives_each_station_its_own_level_spread(trained, prepared, tmp_path):
    """station_scatter (off by default) is fitted after training: the network's weights are
    those of the same run without it; each target station's level scalar is multiplied by its
    own gain (`calibrate` by station, tested above); the other scalars and the frames are left;
    a checkpoint whose params and stats disagree is refused; an older one loads with it off."""
    off, _ = trained
    assert not off.params.station_scatter and "station_gain" not in off.stats
    sampler = fs.train_sampler(prepared, tiny_params(station_scatter=True), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    for key, value in off.net.state_dict().items():
        torch.testing.assert_close(sampler.net.state_dict()[key], value, rtol=0, atol=0)
    gain = sampler.stats["station_gain"]
    n_st = len(sampler.stations)
    assert gain.shape == (n_st, 1) and torch.isfinite(gain).all() and (gain >= 0).all()
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, off))
    torch.testing.assert_close(xs[:, 0], xs0[:, 0] * gain[station - 1, 0], rtol=1e-6, atol=1e-7)
    k = fs.n_scalars(sampler.params)
    torch.testing.assert_close(xs[:, 1:k], xs0[:, 1:k], rtol=0, atol=0)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    assert_state_refused(sampler, lambda st: st["stats"].pop("station_gain"),
                         "station_scatter = True, but the statistics lack the station gains")
    assert_state_refused(sampler, lambda st: st["stats"].update(station_gain=gain[:1]),
                         f"station_gain has shape \\(1, 1\\), expected \\({n_st}, 1\\)")
    assert_older_state_loads_off(off, "station_scatter")


def test_record_scale_changes_only_the_scale_of_each_sampled_record(trained):
    """record_scale is a sampling setting: the same checkpoint read with "peak" gives the same
    waveforms, each scaled so that its peak is exp(level) rather than its spectrum level + fine
    spectrum; an older checkpoint (no record_scale) loads with "peak"."""
    sampler, _ = trained
    assert sampler.params.record_scale == "spectrum"
    state = sampler.state()
    state["params"]["record_scale"] = "peak"
    by_peak = fs.FlowSampler.from_state(state)
    m, r = np.array([5.0, 4.5, 6.0]), np.array([40.0, 20.0, 90.0])
    x, y = sampler.sample("A", m, r, seed=4), by_peak.sample("A", m, r, seed=4)
    ratio = np.abs(x).max(axis=(1, 2)) / np.abs(y).max(axis=(1, 2))
    assert np.abs(np.log(ratio)).max() > 0.01  # the scales differ
    np.testing.assert_allclose(x, y * ratio[:, None, None], rtol=1e-4,
                               atol=1e-5 * np.abs(x).max())
    assert_older_state_loads_off(by_peak, "record_scale", off="peak")


@pytest.mark.parametrize("prior_records", ["target", "all"])
def test_record_prior_trains_samples_and_round_trips_its_state(prepared, tmp_path,
                                                               prior_records):
    """record_prior: the sampler holds a prior (prior_records "all": one that also knows
    station 0, the pre-training stations; here with prior_scalars and prior_fine, given the
    record's scalars and fine-spectrum components),
    draws the record components from it (the records
    differ from the same flow without it), and reloads from the checkpoint to the same
    records; a checkpoint whose params and weights disagree is refused in one line; an older
    checkpoint loads with the option off, and one with a prior but no prior_records,
    prior_scalars or prior_fine with the target-only, scenario-only prior it was written with;
    without record components it is refused."""
    every = prior_records == "all"
    p = tiny_params(record_prior=True, prior_records=prior_records, prior_scalars=every,
                    prior_fine=3 if every else 0)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert isinstance(sampler.prior, fnet.RecordPrior)
    assert sampler.prior.n_classes == (3 if every else 2)
    assert sampler.prior.n_given == (fs.n_scalars(p) + 3 if every else 0)
    if not every:  # written before prior_records, prior_scalars and prior_fine existed
        old = sampler.state()
        del old["params"]["prior_records"], old["params"]["prior_scalars"]
        del old["params"]["prior_fine"]
        assert fs.FlowSampler.from_state(old).prior.n_classes == 2
    else:
        assert_state_refused(sampler, lambda st: st["params"].update(prior_records="target"),
                             "not a valid timesnet-flow sampler state")
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    a = sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    without = fs.FlowSampler(sampler.params, sampler.net, sampler.stats, sampler.stations,
                             sampler._scenarios, sampler.n_frames, sampler.n_samples)
    assert not np.allclose(without.sample("A", m, r, seed=2), a)
    assert_state_refused(sampler, lambda st: st.pop("prior_weights"),
                         "record_prior = True, but the checkpoint lacks the record prior's")
    assert_state_refused(sampler, lambda st: st["params"].update(record_prior=False),
                         "record_prior = False, but the checkpoint holds the record prior's")
    old = sampler.state()  # written before the option (and prior_calibrate, prior_fine) existed
    del old["params"]["record_prior"], old["prior_weights"]
    del old["params"]["prior_calibrate"], old["stats"]["prior_gain"]
    if every:
        del old["params"]["prior_fine"], old["stats"]["prior_fine_axes"]
        del old["stats"]["prior_fine_rms"]
    assert fs.FlowSampler.from_state(old).prior is None
    with pytest.raises(fs.FlowSamplerError, match="record_prior = True needs record_pcs > 0"):
        tiny_params(record_pcs=0, record_prior=True)
    with pytest.raises(fs.FlowSamplerError, match="prior_steps = 0 \\(must be > 0\\)"):
        tiny_params(prior_steps=0)
    with pytest.raises(fs.FlowSamplerError, match="prior_records = 'pretrain' \\(not one of"):
        tiny_params(prior_records="pretrain")


def test_prior_fine_gives_the_record_prior_the_flows_fine_spectrum(prepared, tmp_path,
                                                                  monkeypatch):
    """prior_fine: the fine spectrum's principal axes are fitted with the other axes, the prior
    is given its projections (of the training records when fitted, of the flow's draw when
    sampling: a different fine spectrum changes the record components drawn, nothing else);
    the checkpoint reloads to the same records; a checkpoint whose params and stats disagree is
    refused; an older checkpoint loads with prior_fine 0 and samples as it did; without a record
    prior the option is ignored; bad values are refused."""
    p = tiny_params(prior_fine=3)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    k, n_rec = fs.n_scalars(p), p.record_pcs
    assert sampler.stats["prior_fine_axes"].shape == (3 * p.n_fine, 3)
    assert sampler.prior.n_given == k + 3
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    station = torch.tensor([1, 2])
    scenario = lat.standardise_scenario(np.stack([m, r], axis=1), sampler.stats)
    xc, xs = sampler.latent(station, scenario, torch.Generator().manual_seed(3))
    integrate = fnet.integrate

    def shifted_fine(*args, **kwargs):  # the flow's draw with its fine spectrum moved
        c, s = integrate(*args, **kwargs)
        return c, torch.cat([s[:, :k + n_rec], s[:, k + n_rec:] + 1.0], dim=1)

    monkeypatch.setattr(fs.sampler, "integrate", shifted_fine)
    xc2, xs2 = sampler.latent(station, scenario, torch.Generator().manual_seed(3))
    monkeypatch.undo()
    torch.testing.assert_close(xc2, xc, rtol=0, atol=0)
    torch.testing.assert_close(xs2[:, :k], xs[:, :k], rtol=0, atol=0)
    assert (xs2[:, k:k + n_rec] - xs[:, k:k + n_rec]).abs().max() > 1e-3
    assert_state_refused(sampler, lambda st: st["stats"].pop("prior_fine_axes"),
                         "prior_fine = 3 but the statistics hold 0 such components "
                         "\\(expected 3\\)")
    axes = sampler.stats["prior_fine_axes"]
    assert_state_refused(sampler, lambda st: st["stats"].update(prior_fine_axes=axes[:10]),
                         f"prior_fine_axes has shape \\(10, 3\\), expected \\({len(axes)}, 3\\)")
    assert_state_refused(sampler, lambda st: st["stats"].update(
        prior_fine_rms=sampler.stats["prior_fine_rms"][:2]), "prior_fine_rms has shape")
    old = fs.train_sampler(prepared, tiny_params(prior_fine=0), tmp_path / "o",
                           raw_dir=tmp_path / "none", log=lambda _: None)
    state = old.state()  # written before the option existed: trained without it
    del state["params"]["prior_fine"]
    loaded = fs.FlowSampler.from_state(state)
    assert loaded.params.prior_fine == 0 and loaded.prior.n_given == k
    np.testing.assert_array_equal(loaded.sample("A", m, r, seed=4), old.sample("A", m, r, 4))
    none = fs.train_sampler(prepared, tiny_params(record_prior=False), tmp_path / "n",
                            raw_dir=tmp_path / "none", log=lambda _: None)
    assert none.params.prior_fine == 3 and "prior_fine_axes" not in none.stats  # ignored
    with pytest.raises(fs.FlowSamplerError, match="prior_fine = -1 \\(must be >= 0\\)"):
        tiny_params(prior_fine=-1)
    with pytest.raises(fs.FlowSamplerError, match="prior_fine = 500: at most"):
        fs.train_sampler(prepared, tiny_params(prior_fine=500), tmp_path / "x",
                         raw_dir=tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "x").exists()


def test_too_many_principal_components_is_refused(prepared, tmp_path):
    with pytest.raises(fs.FlowSamplerError, match="record_pcs = 500: at most"):
        fs.train_sampler(prepared, tiny_params(record_pcs=500), tmp_path / "m",
                         raw_dir=tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "m").exists()
    with pytest.raises(fs.FlowSamplerError, match="coarse_pcs = -1 \\(must be >= 0\\)"):
        tiny_params(coarse_pcs=-1)
    with pytest.raises(fs.FlowSamplerError, match="coarse_weight = -0.5 \\(must be >= 0\\)"):
        tiny_params(coarse_weight=-0.5)
    with pytest.raises(fs.FlowSamplerError, match="coarse_weight = nan"):
        tiny_params(coarse_weight=float("nan"))
    with pytest.raises(fs.FlowSamplerError) as nan_knot:  # named once, with its range
        tiny_params(p_align_s=float("nan"))
    assert str(nan_knot.value).count("p_align_s") == 1
    assert "p_align_s = nan (pslot: must be in (0, align_s" in str(nan_knot.value)


def test_principal_latent_trains_samples_and_round_trips_its_state(prepared, tmp_path):
    p = tiny_params(coarse_pcs=4, fine_pcs=6, record_pcs=3, remainder_scale=True,
                    remainder_gauss=True)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.net.embed.in_features == 4 * p.patch
    assert sampler.net.skip.out_features == 4 + 3 + 3 + 6
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    state = sampler.state()
    state["params"]["record_pcs"] = 5  # params that disagree with the stored axes
    with pytest.raises(fs.FlowSamplerError, match="record_pcs = 5 but the statistics hold 3"):
        fs.FlowSampler.from_state(state)
    state = sampler.state()
    assert "remainder_rms" in state["stats"] and "marginal_knots" in state["stats"]
    state["params"]["remainder_scale"] = False  # params that disagree with the stored stats
    with pytest.raises(fs.FlowSamplerError, match="remainder_scale = False with record_pcs = 3, "
                                                  "but the statistics hold the remainder rms"):
        fs.FlowSampler.from_state(state)
    old = sampler.state()  # a checkpoint written before remainder_scale: trained without it
    del old["params"]["remainder_scale"], old["stats"]["remainder_rms"]
    del old["params"]["remainder_ar"], old["params"]["remainder_gauss"]
    del old["stats"]["marginal_knots"]
    del old["params"]["coarse_weight"]
    assert fs.FlowSampler.from_state(old).params.remainder_scale is False
    assert fs.FlowSampler.from_state(old).params.remainder_ar is False
    assert_state_refused(sampler, lambda st: st["params"].update(remainder_ar=True),
                         "remainder_ar = True, but the statistics lack the autoregression")
    assert_state_refused(sampler, lambda st: st["params"].update(remainder_gauss=False),
                         "remainder_gauss = False, but the statistics hold the marginal knots")


def test_result_does_not_depend_on_the_number_of_workers(trained):

    sampler, _ = trained
    m, r = np.full(5, 5.0), np.full(5, 30.0)  # 3 chunks of 2
    one = fs.FlowSampler.from_state(sampler.state())
    one.params = replace(one.params, workers=1)
    two = fs.FlowSampler.from_state(sampler.state())
    two.params = replace(two.params, workers=2)
    np.testing.assert_array_equal(one.sample("A", m, r, 9), two.sample("A", m, r, 9))


def test_unknown_station_names_the_known_ones(trained):
    sampler, _ = trained
    with pytest.raises(fs.FlowSamplerError, match="unknown station 'Z'.*A, B"):
        sampler.sample("Z", np.array([5.0]), np.array([10.0]), seed=0)


def test_state_round_trips_through_torch_save(trained, tmp_path):
    sampler, _ = trained
    path = tmp_path / "state.pt"
    torch.save({"kind": sampler.kind, "format": 1, "state": sampler.state()}, path)
    again = fs.FlowSampler.from_state(torch.load(path, weights_only=True)["state"])
    m, r = np.array([5.0]), np.array([30.0])
    np.testing.assert_array_equal(sampler.sample("B", m, r, 7), again.sample("B", m, r, 7))
    np.testing.assert_array_equal(sampler.scenarios("A"), again.scenarios("A"))


def test_from_state_refuses_a_broken_state(trained):
    sampler, _ = trained
    state = sampler.state()
    del state["weights"]
    with pytest.raises(fs.FlowSamplerError, match="not a valid timesnet-flow sampler state"):
        fs.FlowSampler.from_state(state)
    # NaN in a statistic or a weight would reach the decoder: named, not sampled (new tensors:
    # the state holds the sampler's own)
    bias = sampler.stats["decoder_bias"].clone()
    bias[3, 3] = float("nan")
    assert_state_refused(sampler, lambda st: st["stats"].update(decoder_bias=bias),
                         "NaN or inf in the statistics decoder_bias\\)")
    key = next(iter(sampler.net.state_dict()))
    assert_state_refused(sampler, lambda st: st["weights"].update(
        {key: torch.full_like(st["weights"][key], float("inf"))}),
        f"NaN or inf in the weights {key}\\)")
    assert torch.isfinite(sampler.stats["decoder_bias"]).all()


def test_scenarios_joined_from_raw_records(prepared, tmp_path):
    index = pd.read_csv(prepared / "index.csv", dtype={"station": str})
    raw = tmp_path / "raw"
    raw.mkdir()
    index[["record_id", "magnitude", "distance_km"]].to_csv(raw / "records.csv", index=False)
    bare = index.drop(columns=["magnitude", "distance_km"])
    values = fs.scenario_table(prepared, raw, bare)
    np.testing.assert_allclose(values, index[["magnitude", "distance_km"]])
    with pytest.raises(fs.FlowSamplerError, match="records.csv: needed for the scenario"):
        fs.scenario_table(prepared, tmp_path / "absent", bare)
    index.loc[3, "magnitude"] = np.nan
    with pytest.raises(fs.FlowSamplerError, match="record P1_0|invalid magnitude"):
        fs.scenario_table(prepared, raw, index)


@pytest.mark.parametrize("device, match", [
    ("cuda", "generators.flow.device=cuda but CUDA is not available"),
    ("tpu9", "generators.flow.device='tpu9': not a device"),
])
def test_training_device_errors_name_the_key(prepared, tmp_path, device, match):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UserError, match=match):
        fs.train_sampler(prepared, tiny_params(device=device), tmp_path / "m",
                         raw_dir=prepared.parent / "none", log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_gmm_scaling_is_the_ratio_of_the_published_medians():
    """No ratio at the magnitude drawn; a larger magnitude is stronger at every period and
    longer; periods beyond ASB14's 4 s take its 4 s ratio."""
    freqs = np.array([0.1, 0.25, 1.0, 5.0, 200.0])
    zero = fs.gmm_scaling(5.0, 5.0, 30.0, freqs)
    np.testing.assert_array_equal(zero[0], 0.0)
    assert zero[1] == 0.0 and zero[2] == 0.0
    d_psa, d_pga, d_dur = fs.gmm_scaling(6.0, 5.0, 30.0, freqs)
    assert np.all(d_psa > 0) and d_pga > 0 and d_dur > 0
    assert d_psa[0] == d_psa[1] and d_psa[2] > d_psa[4]  # long periods grow most with M


def test_extrapolate_gmm_draws_at_the_range_end_and_scales_by_the_gmm_ratios(trained):
    """Inside the station's training magnitudes `gmm` draws what `linear` draws, bit for bit.
    Beyond them it draws at the range's end and `scaled` moves those features: the fine
    spectrum by ASB14's PSA ratio and half AS16's ln D5-95 ratio, the frames before the onset by
    the PSA ratio at their bands, the frames from the onset on stretched by the D5-95 ratio;
    the level and the timing are kept (record_scale spectrum). The sampled record is that one,
    decoded. An unknown value is refused; a checkpoint without the option samples linearly."""
    sampler, _ = trained
    p = replace(sampler.params, extrapolate="gmm")
    gmm = fs.FlowSampler.from_state(sampler.state() | {"params": asdict(p)})
    top = sampler.scenarios("A")[:, 0].max()
    r = np.array([40.0])
    np.testing.assert_array_equal(gmm.sample("A", np.array([top - 0.1]), r, seed=3),
                                  sampler.sample("A", np.array([top - 0.1]), r, seed=3))
    big = np.array([top + 1.0])
    scenario = lat.standardise_scenario(np.array([[top, 40.0]]), sampler.stats)
    generator = torch.Generator().manual_seed(5 * 1_000_003)  # `sample`'s first chunk, seed 5
    _, coarse, static = sampler.features(sampler.station_index("A"), scenario, generator)
    coarse2, static2 = gmm.scaled(coarse, static, big, np.array([top]), r)
    np.testing.assert_array_equal(gmm.sample("A", big, r, seed=5),
                                  gmm.decode(coarse2, static2, generator))
    bands = rep.band_centers(p)
    d_psa, _, d_dur = fs.gmm_scaling(top + 1.0, top, 40.0, np.r_[bands, rep.fine_centers(p)])
    k, nb = fs.n_scalars(p), len(bands)
    np.testing.assert_allclose((static2 - static)[0, :k], 0.0)
    np.testing.assert_allclose((static2 - static)[0, k:].reshape(3, -1),
                               np.tile(d_psa[nb:] + 0.5 * d_dur, (3, 1)), atol=1e-5)
    onset = int(np.ceil(p.align_s * FS / p.hop))
    np.testing.assert_allclose((coarse2 - coarse)[0, :onset].numpy(),
                               np.tile(d_psa[:nb], (onset, 3)), atol=1e-5)
    stretched = rep.stretch_after_onset(coarse.numpy(), np.exp([d_dur]), p)
    np.testing.assert_allclose(coarse2[0, onset:].numpy(),
                               stretched[0, onset:] + np.tile(d_psa[:nb], 3), atol=1e-5)
    with pytest.raises(fs.FlowSamplerError, match="extrapolate = 'cubic' \\(not one of"):
        tiny_params(extrapolate="cubic")
    assert_older_state_loads_off(gmm, "extrapolate", "linear")


def test_checkpoint_weights_are_on_the_cpu(trained):
    sampler, _ = trained
    assert {str(v.device) for v in sampler.state()["weights"].values()} == {"cpu"}
