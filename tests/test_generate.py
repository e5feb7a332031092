"""Generation: the latent-averaging sampler, reconstructions, corpus output, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from timesnet_gen.config import GenerateParams, params_from_dict
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.generate import (
    GenerateError,
    decode_mixtures,
    encode_records,
    generate,
    load_generator,
    main,
    mixing_plan,
)
from timesnet_gen.models.timesnet import TimesNetConfig, TimesNetGen
from timesnet_gen.runtime import RuntimeSetupError

from conftest import resplit

torch.set_num_threads(1)
T = 240


def make_prepared(out: Path, per_target=(5, 4), seed=0) -> Path:
    """Two target stations A, B (first record of each = holdout), random-phase noise, cm/s^2."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(T, d=0.01)
    rows, wav = [], []
    for i, (s, n) in enumerate(zip(("A", "B"), per_target)):
        for j in range(n):
            spec = np.where((f > 2) & (f < 20), np.exp(2j * np.pi * rng.random((3, len(f)))), 0)
            x = np.fft.irfft(spec, n=T)
            wav.append(x / x.std() * rng.uniform(1, 20) * np.hanning(T))
            rows.append(dict(record_id=f"{s}-{j}", station=s, role="target",
                             split="holdout" if j == 0 else "train", station_index=i))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "waveforms.npy", np.stack(wav).astype(np.float32))
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared folder, model.pt) of an untrained tiny model (generation does not care)."""
    root = tmp_path_factory.mktemp("gen")
    data = make_prepared(root / "prepared")
    torch.manual_seed(0)
    cfg = TimesNetConfig(d_model=4, d_ff=8, num_kernels=2, seq_len=T, n_stations=2)
    model = TimesNetGen(cfg)
    path = root / "model.pt"
    torch.save({"kind": "timesnet-gen", "config": cfg.to_dict(), "state_dict": model.state_dict(),
                "latent_std": torch.ones(4), "stations": ["A", "B"], "phase": "finetune"}, path)
    return data, path


def test_pipeline_mode_writes_generated_and_recon(setup, tmp_path):
    data, ckpt = setup
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"station": ["A", "B", "Z"], "role": ["target", "target", "pretrain"],
                  "f0_true_hz": [2.5, 7.0, 3.0]}).to_csv(raw / "stations.csv", index=False)
    g = GenerateParams(n_per_station=3, k=2, seed=1)
    generate(g, data, ckpt, tmp_path / "out", raw_dir=raw, device="cpu")

    gen = read_corpus(tmp_path / "out" / "generated")
    assert gen.waveforms.shape == (6, 3, T)
    assert np.isfinite(gen.waveforms).all() and gen.waveforms.std() > 0
    rec = gen.records
    assert rec["station"].tolist() == ["A"] * 3 + ["B"] * 3
    assert set(rec["source"]) == {"timesnet-gen"} and set(rec["seed"]) == {1}
    index = pd.read_csv(data / "index.csv")
    train_ids = set(index.loc[index["split"] == "train", "record_id"])
    for row in rec.itertuples():
        srcs = row.source_records.split(";")
        assert len(srcs) == 2 and len(set(srcs)) == 2
        assert set(srcs) <= train_ids  # holdout records are never mixed
        assert all(s.startswith(row.station) for s in srcs)
        assert [float(w) for w in row.weights.split(";")] == [0.5, 0.5]
    assert gen.stations["f0_true_hz"].tolist() == [2.5, 7.0]

    recon = read_corpus(tmp_path / "out" / "recon")
    assert len(recon.records) == 9  # every real target record, train and holdout
    assert set(recon.records["source"]) == {"timesnet-recon"}
    assert sorted(recon.records["source_record"]) == sorted(index["record_id"])
    split = dict(zip(index["record_id"], index["split"]))
    assert all(split[r] == s for r, s in zip(recon.records["source_record"],
                                             recon.records["split"]))


def test_mixture_of_one_record_is_its_reconstruction_and_mixing_is_linear(setup):
    data, ckpt = setup
    model, _ = load_generator(ckpt)
    wav = np.load(data / "waveforms.npy")[1:5]
    latent = encode_records(model, wav, 0, batch_size=4, device=torch.device("cpu"))
    cpu = torch.device("cpu")
    recon = decode_mixtures(model, latent, np.arange(4)[:, None], np.ones((4, 1)), 2, cpu)
    with torch.no_grad():
        direct = model(torch.from_numpy(wav), torch.zeros(4, dtype=torch.long)).numpy()
    np.testing.assert_allclose(recon, direct, rtol=1e-5, atol=1e-4)
    # the same record twice with weights (0.3, 0.7) is that record again
    twice = decode_mixtures(model, latent, np.array([[2, 2]]), np.array([[0.3, 0.7]]), 2, cpu)
    np.testing.assert_allclose(twice[0], recon[2], rtol=1e-5, atol=1e-4)
    # input means/stds are mixed too: with a zero latent the output is
    # head bias * mixed std + mixed mean (cm/s^2)
    z, mean, std = latent
    mix = decode_mixtures(model, (z * 0, mean, std), np.array([[0, 1]]), np.array([[0.5, 0.5]]),
                          1, cpu)
    bias = model.head.bias.detach().numpy()[:, None]
    expected = bias * 0.5 * (std[0] + std[1]).numpy() + 0.5 * (mean[0] + mean[1]).numpy()
    np.testing.assert_allclose(mix[0], np.broadcast_to(expected, (3, T)), rtol=1e-5, atol=1e-5)


def test_mixing_plan_is_seeded_and_dirichlet_weights_sum_to_one():
    g = GenerateParams(k=3, weights="dirichlet", dirichlet_alpha=1.0, seed=7)
    p1, w1 = mixing_plan(10, 20, g, station_class=2)
    p2, w2 = mixing_plan(10, 20, g, station_class=2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_allclose(w1.sum(axis=1), 1.0)
    assert w1.std() > 0.05  # not equal weights
    assert all(len(set(row)) == 3 for row in p1)  # k distinct records
    p3, _ = mixing_plan(10, 20, g, station_class=3)
    assert not np.array_equal(p1, p3)  # each station its own stream
    pe, we = mixing_plan(10, 4, GenerateParams(k=2), 0)
    assert pe.shape == (4, 2) and np.all(we == 0.5)


def test_standalone_mode_matches_pipeline_samples(setup, tmp_path):
    data, ckpt = setup
    params = params_from_dict({"generate": {"n_per_station": 4, "k": 2, "seed": 3},
                               "train": {"device": "cpu"}})
    import yaml

    from timesnet_gen.config import to_dict

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(to_dict(params)))
    assert main(["--params", str(tmp_path / "params.yaml"), "--station", "B", "-n", "2",
                 "--checkpoint", str(ckpt), "--data", str(data), "--out",
                 str(tmp_path / "one")]) == 0
    one = read_corpus(tmp_path / "one")
    assert one.records["record_id"].tolist() == ["tng-B-0000", "tng-B-0001"]
    assert not (tmp_path / "one" / "recon").exists()
    generate(params.generate, data, ckpt, tmp_path / "all", device="cpu")
    full = read_corpus(tmp_path / "all" / "generated")
    b = full.station_mask("B")
    # same seeded picks and same latents: the first two B samples are identical
    np.testing.assert_array_equal(one.waveforms, full.waveforms[b][:2])
    assert one.records["source_records"].tolist() == \
        full.records.loc[b, "source_records"].tolist()[:2]


def test_bad_inputs(setup, tmp_path):
    data, ckpt = setup
    g = GenerateParams(n_per_station=2, k=2)
    with pytest.raises(GenerateError, match=r"\['Q'\] unknown to the model"):
        generate(g, data, ckpt, tmp_path / "x", stations=["Q"], device="cpu")
    with pytest.raises(GenerateError, match="generate.k=4 exceeds its 3 training records"):
        generate(GenerateParams(k=4), data, ckpt, tmp_path / "x", stations=["B"], device="cpu")
    empty = resplit(data, tmp_path / "empty", "station", "A", "holdout")
    with pytest.raises(GenerateError, match="station A: no training records"):
        generate(g, empty, ckpt, tmp_path / "x", device="cpu")
    with pytest.raises(GenerateError, match=">= 1"):
        generate(g, data, ckpt, tmp_path / "x", n=0, device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        generate(g, data, bad, tmp_path / "x", device="cpu")
    # prepared with the stations in another order than the model's classes
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    index = pd.read_csv(data / "index.csv")
    index["station_index"] = 1 - index["station_index"]
    index.to_csv(swapped / "index.csv", index=False)
    np.save(swapped / "waveforms.npy", np.load(data / "waveforms.npy"))
    with pytest.raises(RuntimeSetupError, match="station_index"):
        generate(g, swapped, ckpt, tmp_path / "x", device="cpu")
    assert not (tmp_path / "x").exists()  # nothing written by any failed call
