"""`timesnet-gen sample` and `train-sampler`: record-free generation from a checkpoint, and
every bad input as a one-line error with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from timesnet_gen import cli
from timesnet_gen import sample as sample_mod
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import latent as lat, representation as rep

T = 6000


def untrained_sampler() -> fs.FlowSampler:
    """A FlowSampler with random weights and statistics of noise records (no training needed
    to test the command line)."""
    rng = np.random.default_rng(0)
    p = fs.FlowSamplerParams(d_model=8, d_ff=8, num_kernels=1, e_layers=1, d_cond=8,
                             n_steps=2, griffin_lim_iters=2, num_threads=1, n_fine=40,
                             record_pcs=0, remainder_calibrate=False,  # untrained: no gain
                             remainder_smooth=False,  # nor smoothing
                             decoder_bias=False,  # nor the decoder's mean error
                             station_scatter=False,  # nor the station gains
                             record_prior=False)
    x = rng.standard_normal((6, 3, T)).astype(np.float32)
    scenario = np.column_stack([rng.uniform(4, 6, 6), rng.uniform(10, 100, 6)])
    codes = np.array(["0205"] * 3 + ["4628"] * 3)
    stats = lat.fit_stats(rep.encode(x, p), codes, scenario, ["0205", "4628"], True)
    stats = {k: v for k, v in stats.items() if not k.startswith("_")}
    torch.manual_seed(0)
    net = fs.build_net(p, 1 + T // p.hop, stats, 2)
    return fs.FlowSampler(p, net, stats, ["0205", "4628"],
                          {"0205": scenario[:3], "4628": scenario[3:]}, 1 + T // p.hop)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    sample_mod.save_sampler(untrained_sampler(), path)
    return path


def run(argv, capsys):
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_sample_reads_only_the_checkpoint(checkpoint, tmp_path, monkeypatch, capsys):
    """No data folder anywhere: the run must not touch prepared data or a raw corpus."""
    monkeypatch.chdir(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("sample read a data folder")

    monkeypatch.setattr("timesnet_gen.prepare.load_prepared", forbidden)
    monkeypatch.setattr("timesnet_gen.corpus.format.read_corpus", forbidden)
    rc, out, err = run(["sample", "--checkpoint", str(checkpoint), "--station", "4628",
                        "-n", "4", "--seed", "5", "--out", "gen"], capsys)
    assert rc == 0, err
    monkeypatch.undo()
    from timesnet_gen.corpus.format import read_corpus

    corpus = read_corpus(tmp_path / "gen")
    assert corpus.waveforms.shape == (4, 3, T)
    rec = corpus.records
    assert set(rec["station"]) == {"4628"}
    assert set(rec["sampler"]) == {"timesnet-flow"} and set(rec["seed"]) == {5}
    assert set(rec["scenario"]) == {"drawn"} and set(rec["checkpoint"]) == {str(checkpoint)}
    train = untrained_sampler().scenarios("4628")
    for m, r in zip(rec["magnitude"], rec["distance_km"]):  # drawn from the training rows
        assert np.isclose(train, [m, r], rtol=1e-9).all(axis=1).any()


def test_sample_given_scenario_and_determinism(checkpoint, tmp_path, capsys):
    args = ["sample", "--checkpoint", str(checkpoint), "--station", "0205", "--magnitude", "5",
            "--distance-km", "30", "-n", "2", "--seed", "1"]
    assert run(args + ["--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run(args + ["--out", str(tmp_path / "b")], capsys)[0] == 0
    from timesnet_gen.corpus.format import read_corpus

    a, b = read_corpus(tmp_path / "a"), read_corpus(tmp_path / "b")
    np.testing.assert_array_equal(a.waveforms, b.waveforms)
    assert list(a.records["magnitude"]) == [5.0, 5.0]
    assert list(a.records["distance_km"]) == [30.0, 30.0]
    assert set(a.records["scenario"]) == {"given"}


def test_outside_training_range_warns_with_the_range(checkpoint, tmp_path, capsys):
    rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--station", "4628",
                      "--magnitude", "7.5", "--distance-km", "30", "-n", "1",
                      "--out", str(tmp_path / "g")], capsys)
    assert rc == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "magnitude outside station 4628's training range" in lines[0]
    magnitudes = untrained_sampler().scenarios("4628")[:, 0]
    assert f"magnitude {magnitudes.min():.2f}-{magnitudes.max():.2f}" in lines[0]


def test_station_all(checkpoint, tmp_path, capsys):
    rc, _, _ = run(["sample", "--checkpoint", str(checkpoint), "--station", "all", "-n", "2",
                    "--out", str(tmp_path / "g")], capsys)
    assert rc == 0
    records = pd.read_csv(tmp_path / "g" / "records.csv", dtype={"station": str})
    assert list(records["station"]) == ["0205", "0205", "4628", "4628"]
    assert records["record_id"].is_unique


@pytest.mark.parametrize("extra, match", [
    (["--station", "9999"], "unknown station '9999' (known: 0205, 4628)"),
    (["--station", "4628", "-n", "0"], "-n must be >= 1, got 0"),
    (["--station", "4628", "--magnitude", "nan", "--distance-km", "10"],
     "--magnitude must be finite and > 0, got nan"),
    (["--station", "4628", "--magnitude", "5", "--distance-km", "-3"],
     "--distance-km must be finite and > 0, got -3"),
    (["--station", "4628", "--magnitude", "5"], "give both --magnitude and --distance-km"),
    (["--station", "4628", "--kind", "stochastic"],
     "a 'timesnet-flow' checkpoint, expected 'stochastic'"),
])
def test_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, extra, match):
    out = tmp_path / "g"
    rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--out", str(out)] + extra,
                     capsys)
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not out.exists() and not list(tmp_path.glob(".g.*"))


def test_checkpoint_of_another_kind_or_corrupt(tmp_path, capsys):
    other = tmp_path / "timesnet.pt"
    torch.save({"config": {"d_model": 8}, "state_dict": {}}, other)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    unknown = tmp_path / "unknown.pt"
    torch.save({"kind": "gan", "format": 1, "state": {}}, unknown)
    for path, match in ((other, "not a sampler checkpoint"),
                        (corrupt, "unreadable checkpoint"),
                        (unknown, "unknown sampler kind 'gan'"),
                        (tmp_path / "absent.pt", "no model checkpoint")):
        rc, _, err = run(["sample", "--checkpoint", str(path), "--station", "4628",
                          "--out", str(tmp_path / "g")], capsys)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "g").exists()


def test_unwritable_out(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out, match in ((blocker, "is an existing file"), (blocker / "sub", "not a folder"),
                       (checkpoint.parent, "would replace the input")):
        rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--station", "4628",
                          "--out", str(out)], capsys)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and match in err, err
    assert blocker.read_text() == "x" and checkpoint.exists()
    if Path("/proc/self").is_dir():  # Linux: a folder in which no folder can be made
        rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--station", "4628", "-n",
                          "2", "--out", "/proc/timesnet_gen_out"], capsys)
        assert rc == 1 and err.strip().splitlines() == [
            "timesnet-gen sample: /proc/timesnet_gen_out: cannot write there (No such file or "
            "directory)"], err


def test_train_sampler_refuses_unknown_or_bad_keys(tmp_path, capsys):
    for setting, match in (("bogus=1", "--set bogus: unknown generators.flow key"),
                           ("d_model=wide", "--set d_model: expected a int, got 'wide'"),
                           ("d_model", "expected KEY=VALUE")):
        rc, _, err = run(["train-sampler", "--params", str(tmp_path / "none.yaml"),
                          "--set", setting, "--out", str(tmp_path / "m")], capsys)
        assert rc == 1 and match in err, err
    params = tmp_path / "params.yaml"
    params.write_text("generators:\n  flow:\n    d_model: 8\n    typo_key: 3\n")
    rc, _, err = run(["train-sampler", "--params", str(params), "--out", str(tmp_path / "m")],
                     capsys)
    assert rc == 1 and "unknown key generators.flow.typo_key" in err
    # a params file named but absent is an error, not the defaults; NaN never trains
    rc, _, err = run(["train-sampler", "--params", str(tmp_path / "none.yaml"), "--out",
                      str(tmp_path / "m")], capsys)
    assert rc == 1 and "none.yaml: no such params file" in err
    for text, extra, match in (("lr: .nan", [], "generators.flow.lr: expected a finite float"),
                               ("lr: 0.001", ["--set", "finetune_lr=nan"], "finetune_lr = nan"),
                               ("batch_size: 0", [], "batch_size = 0 (must be > 0)"),
                               ("lr: 0.001", ["--set", "num_threads=-2"],
                                "num_threads = -2 (must be >= 0)"),
                               ("lr: 0.001", ["--set", "workers=0"], "workers = 0 (must be > 0)"),
                               ("batch_generate: 0", [], "batch_generate = 0 (must be > 0)")):
        params.write_text(f"generators:\n  flow:\n    {text}\n")
        rc, _, err = run(["train-sampler", "--params", str(params), "--out", str(tmp_path / "m"),
                          *extra], capsys)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "m").exists()


def test_flow_params_from_section_and_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("generators:\n  flow:\n    d_model: 16\n    solver: euler\n")
    p = sample_mod.flow_params(params, ["n_steps=4"])
    assert (p.d_model, p.solver, p.n_steps) == (16, "euler", 4)


def test_sample_at_held_out_scenarios(checkpoint, tmp_path, capsys):
    """--scenarios: -n records at each held-out row of a prepared index.csv, magnitude and
    distance joined from the raw records.csv; each record names its scenario's record."""
    from timesnet_gen.corpus.format import read_corpus

    index = pd.DataFrame({"record_id": ["a", "b", "c"], "station": ["0205", "4628", "4628"],
                          "role": "target", "split": ["holdout", "train", "holdout"]})
    index.to_csv(tmp_path / "index.csv", index=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"record_id": ["a", "b", "c"], "magnitude": [5.0, 4.0, 5.5],
                  "distance_km": [30.0, 20.0, 50.0]}).to_csv(raw / "records.csv", index=False)
    out = tmp_path / "scenario"
    rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--scenarios",
                      str(tmp_path / "index.csv"), "--split", "holdout", "--raw", str(raw),
                      "-n", "2", "--out", str(out)], capsys)
    assert rc == 0, err
    records = read_corpus(out).records
    assert list(records["source_record"]) == ["a", "a", "c", "c"]
    assert list(records["station"]) == ["0205", "0205", "4628", "4628"]
    assert list(records["magnitude"]) == [5.0, 5.0, 5.5, 5.5]
    assert list(records["distance_km"]) == [30.0, 30.0, 50.0, 50.0]
    # bad input: both --station and --scenarios; a table without the scenario columns
    rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--station", "4628",
                      "--scenarios", str(tmp_path / "index.csv"), "--out", str(tmp_path / "x")],
                     capsys)
    assert rc == 1 and "not both" in err
    rc, _, err = run(["sample", "--checkpoint", str(checkpoint), "--scenarios",
                      str(tmp_path / "index.csv"), "--out", str(tmp_path / "x")], capsys)
    assert rc == 1 and "no magnitude, distance_km columns" in err
    assert not (tmp_path / "x").exists()


def test_peak_beyond_what_a_record_holds_names_the_scenario():
    from timesnet_gen.sample import SampleError, check_peak

    waves = np.zeros((2, 3, 100), np.float32)
    waves[1, 0, 5] = -3.0e4  # 31 g: an M 9.5 extrapolated from M 3.5-5.1 training records
    with pytest.raises(SampleError, match=r"magnitude 9\.50 at 30\.0 km: generated peak "
                                          r"3e\+04 cm/s\^2 \(31 g\) exceeds the 22 g"):
        check_peak(waves, "4628", np.array([5.0, 9.5]), np.array([20.0, 30.0]))
    waves[1, 0, 5] = 2.0e4  # 20 g: representable, written
    check_peak(waves, "4628", np.array([5.0, 9.5]), np.array([20.0, 30.0]))
