"""Training: both phases on a tiny prepared folder, determinism, resume, DDP, bad input."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from timesnet_gen.config import params_from_dict
from timesnet_gen.runtime import CheckpointError
from timesnet_gen.train import TrainError, load_model_file, main, train

from conftest import resplit

torch.set_num_threads(1)
T = 240


def make_prepared(out: Path, targets=("A", "B"), per_target=5, n_pre=3, per_pre=5,
                  seed=0) -> Path:
    """Tiny prepared folder: random-phase band-limited noise records (cm/s^2) with a taper."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(T, d=0.01)
    band = (f > 2) & (f < 20)

    def record() -> np.ndarray:
        spec = np.zeros((3, len(f)), complex)
        spec[:, band] = np.exp(2j * np.pi * rng.random((3, band.sum())))
        x = np.fft.irfft(spec, n=T)
        return x / x.std() * rng.uniform(1, 20) * np.hanning(T)

    rows, wav = [], []
    for i, s in enumerate(targets):
        for j in range(per_target):
            rows.append(dict(record_id=f"{s}-{j}", station=s, role="target",
                             split="holdout" if j == 0 else "train", station_index=i))
            wav.append(record())
    for p in range(n_pre):
        for j in range(per_pre):
            rows.append(dict(record_id=f"P{p}-{j}", station=f"P{p}", role="pretrain",
                             split="val" if j == 0 else "train", station_index=-1))
            wav.append(record())
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "waveforms.npy", np.stack(wav).astype(np.float32))
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
    return out


def tiny_params(**model):
    return params_from_dict({
        "data": {"target_stations": ["A", "B"]},
        "model": {"d_model": 4, "d_ff": 8, "num_kernels": 2, "seq_len": T, **model},
        "train": {"device": "cpu", "seed": 3,
                  "pretrain": {"epochs": 3, "batch_size": 4, "lr": 1e-2},
                  "finetune": {"epochs": 2, "batch_size": 4, "lr": 1e-2}},
    })


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data") / "prepared")


@pytest.fixture(scope="module")
def pretrained(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "pretrain"
    train(tiny_params(), prepared, out, "pretrain")
    return out


def test_pretrain_outputs(pretrained):
    losses = pd.read_csv(pretrained / "losses.tsv", sep="\t")
    assert list(losses.columns) == ["epoch", "train_loss", "val_loss"]
    assert losses["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(losses[["train_loss", "val_loss"]].to_numpy()).all()
    assert losses["train_loss"].iloc[-1] < losses["train_loss"].iloc[0]  # it learns
    ckpt = load_model_file(pretrained)
    assert ckpt["phase"] == "pretrain" and ckpt["stations"] == ["A", "B"]
    assert ckpt["config"]["d_model"] == 4 and ckpt["config"]["n_stations"] == 2
    std = torch.load(pretrained / "std.pt")
    assert std.shape == (4,) and bool(torch.all(std > 0))
    torch.testing.assert_close(std, ckpt["latent_std"])
    assert (pretrained / "training_curve.png").stat().st_size > 1000
    last = torch.load(pretrained / "checkpoints" / "last.pt", weights_only=False)
    assert last["epoch"] == 3 and {"optimizer", "scheduler", "rng", "model"} <= set(last)


def test_finetune_uses_train_split_only_and_is_deterministic(prepared, pretrained, tmp_path):
    # poison the holdout records: finetuning must never read them
    data = tmp_path / "prepared"
    data.mkdir()
    wav = np.load(prepared / "waveforms.npy")
    index = pd.read_csv(prepared / "index.csv")
    wav[(index["split"] == "holdout").to_numpy()] = np.nan
    np.save(data / "waveforms.npy", wav)
    index.to_csv(data / "index.csv", index=False)
    m1 = state(train(tiny_params(), data, tmp_path / "ft1", "finetune", init=pretrained))
    m2 = state(train(tiny_params(), data, tmp_path / "ft2", "finetune", init=pretrained))
    assert_same_state(m1, m2)
    l1 = (tmp_path / "ft1" / "losses.tsv").read_text()
    assert l1 == (tmp_path / "ft2" / "losses.tsv").read_text()
    assert np.isfinite(pd.read_csv(tmp_path / "ft1" / "losses.tsv", sep="\t")["train_loss"]).all()
    ckpt = load_model_file(tmp_path / "ft1")
    assert ckpt["phase"] == "finetune"
    torch.testing.assert_close(ckpt["latent_std"], torch.load(pretrained / "std.pt"))
    # fine-tuning changed the weights, including the station (one-hot) input channels
    pre = load_model_file(pretrained)["state_dict"]
    w_pre = pre["blocks.0.conv1.kernels.0.weight"][:, 4:]
    assert not torch.equal(w_pre, m1["blocks.0.conv1.kernels.0.weight"][:, 4:])


def test_interrupted_run_resumes_to_identical_weights(prepared, tmp_path):
    full = state(train(tiny_params(), prepared, tmp_path / "full", "pretrain"))
    assert main(["--params", str(write_params(tmp_path)), "--data", str(prepared),
                 "--out", str(tmp_path / "cut"), "--stop-after", "1"], "pretrain") == 0
    assert not (tmp_path / "cut" / "model.pt").exists()  # not finished yet
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt",
                      weights_only=False)["epoch"] == 1
    resumed = state(train(tiny_params(), prepared, tmp_path / "cut", "pretrain"))
    assert_same_state(full, resumed)
    assert ((tmp_path / "full" / "losses.tsv").read_text()
            == (tmp_path / "cut" / "losses.tsv").read_text())


def write_params(tmp_path: Path) -> Path:
    import yaml

    from timesnet_gen.config import to_dict

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_params())))
    return path


def test_checkpoint_from_another_configuration_is_refused(prepared, pretrained, tmp_path):
    with pytest.raises(CheckpointError, match="d_model: 4 -> 6"):
        train(tiny_params(d_model=6), prepared, tmp_path / "ft", "finetune", init=pretrained)
    with pytest.raises(CheckpointError, match="conditioning: 'concat' -> 'film'"):
        train(tiny_params(conditioning="film"), prepared, tmp_path / "ft", "finetune",
              init=pretrained)
    # resuming a run whose params changed
    train(tiny_params(), prepared, tmp_path / "pre", "pretrain", stop_after=1)
    changed = tiny_params()
    changed.train.pretrain.lr = 0.5
    with pytest.raises(TrainError, match="lr: 0.01 -> 0.5"):
        train(changed, prepared, tmp_path / "pre", "pretrain")


def test_bad_inputs(prepared, pretrained, tmp_path):
    with pytest.raises(TrainError, match="needs --init"):
        train(tiny_params(), prepared, tmp_path / "x", "finetune")
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        train(tiny_params(), prepared, tmp_path / "x", "finetune", init=tmp_path / "nothing")
    corrupt = tmp_path / "corrupt" / "model.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable checkpoint") as err:
        train(tiny_params(), prepared, tmp_path / "x", "finetune", init=corrupt)
    # one line naming the cause, not torch's paragraph of weights_only advice
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    assert "not a weights-only torch file" in str(err.value)
    with pytest.raises(TrainError, match="seq_len=100"):
        train(tiny_params(seq_len=100), prepared, tmp_path / "x", "pretrain")
    # empty training split: every pretrain record moved to val
    empty = resplit(prepared, tmp_path / "empty", "role", "pretrain", "val")
    with pytest.raises(TrainError, match="empty training split"):
        train(tiny_params(), empty, tmp_path / "x", "pretrain")
    # NaN in a training record
    nan = tmp_path / "nan"
    nan.mkdir()
    wav = np.load(prepared / "waveforms.npy")
    wav[-1, 0, 5] = np.nan
    np.save(nan / "waveforms.npy", wav)
    pd.read_csv(prepared / "index.csv").to_csv(nan / "index.csv", index=False)
    with pytest.raises(TrainError, match="NaN"):
        train(tiny_params(), nan, tmp_path / "x", "pretrain")
    with pytest.raises(TrainError, match="unknown phase"):
        train(tiny_params(), prepared, tmp_path / "x", "pretrian")


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    params = tiny_params()
    params.train.pretrain.epochs = 1
    model = train(params, data, Path(out) / "pretrain", "pretrain")
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(prepared, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(prepared), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert_same_state(a, b)
    # the weights moved away from the seeded initialisation
    torch.manual_seed(3)
    from timesnet_gen.models.timesnet import TimesNetGen
    from timesnet_gen.train import model_config

    fresh = TimesNetGen(model_config(tiny_params())).state_dict()
    assert not torch.equal(fresh["embed.weight"], a["embed.weight"])
    assert (tmp_path / "pretrain" / "model.pt").exists()


@pytest.mark.parametrize("section,raw,message", [
    ("train", {"pretrain": {"epochs": 0}}, "train.pretrain.epochs must be >= 1, got 0"),
    ("train", {"finetune": {"lr": 0.0}}, "train.finetune.lr must be > 0, got 0.0"),
    ("train", {"latent_noise_scale": -1.0}, "latent_noise_scale"),
    ("model", {"dropout": 1.5}, "dropout"),
    ("model", {"conditioning": "attention"}, "conditioning"),
    ("train", {"pretrain": {"epochz": 3}}, "unknown key train.pretrain.epochz"),
])
def test_bad_training_params_are_named(section, raw, message):
    from timesnet_gen.config import ParamsError

    with pytest.raises(ParamsError, match=message):
        params_from_dict({section: raw})
