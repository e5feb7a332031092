"""`pretrain` and `finetune` stages: the two training phases of TimesNet-Gen (one loop for both).

    timesnet-gen pretrain --params params.yaml --data data/prepared --out models/pretrain
    timesnet-gen finetune --params params.yaml --data data/prepared --init models/pretrain \
        --out models/finetune
    torchrun --nproc_per_node=N -m timesnet_gen pretrain ...     (DDP: gloo on CPU, nccl on GPU)

Phase 0 (pretrain): role == pretrain records, split train (val for the validation loss), no
station condition. Afterwards the per-channel std of the time-averaged latent over the training
records (the paper's "std vector", shape (d_model,)).
Phase 1 (finetune): role == target, split == train only (the holdout is never read), station
conditioning on, latent noise N(0, (latent_noise_scale * std_d)^2) on every latent time step.
Both: MSE in cm/s^2 after de-standardisation, AdamW, per-step cosine schedule, grad-norm clip.

Writes to --out
    model.pt            {"config", "state_dict", "latent_std", "stations", "phase", ...}
    std.pt              the std vector (d_model,) alone (also inside model.pt)
    losses.tsv          epoch, train_loss, val_loss (cm/s^2 squared; DVC plots data). finetune
                        has no validation records: its val_loss is the training records' loss in
                        eval mode without latent noise.
    training_curve.png
    checkpoints/last.pt model, optimiser, scheduler, RNG states, epoch and loss history, written
                        atomically after every epoch; a rerun resumes from it (a checkpoint of
                        another configuration is an error).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from timesnet_gen.atomic import staged_file
from timesnet_gen.cli import stage_parser
from timesnet_gen.config import Params, load_params
from timesnet_gen.models.timesnet import TimesNetConfig, TimesNetGen, latent_std
from timesnet_gen.prepare import load_prepared, select
from timesnet_gen.errors import UserError

PHASES = ("pretrain", "finetune")


class TrainError(UserError):
    """Training cannot start: bad data, split, checkpoint or configuration."""


# --------------------------------------------------------------------------------------------
# small helpers


def resolve_device(spec: str) -> torch.device:
    """train.device: auto -> cuda when available, else cpu."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"train.device={spec} but CUDA is not available")
    return torch.device(spec)


def model_config(params: Params) -> TimesNetConfig:
    """The model's config: params.model plus the number of target stations (classes)."""
    return TimesNetConfig(**asdict(params.model), n_stations=len(params.data.target_stations))


def save_atomic(obj: Any, path: Path) -> None:
    with staged_file(path) as tmp:
        torch.save(obj, tmp)


def config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every differing (nested) key."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def load_model_file(path: Path, expected: TimesNetConfig | None = None) -> dict:
    """Read a model.pt; with `expected`, refuse one trained with another model config."""
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise TrainError(f"{path}: no model checkpoint (run the previous stage first)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types on corrupt files
        raise TrainError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise TrainError(f"{path}: not a TimesNet-Gen model file (no config/state_dict)")
    if expected is not None:
        diff = config_diff(ckpt["config"], expected.to_dict())
        if diff:
            raise TrainError(f"{path} was trained with another model configuration "
                             f"(checkpoint -> params): {'; '.join(diff)}")
    return ckpt


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(frame["epoch"], frame["train_loss"], "o-", label="train")
    ax.plot(frame["epoch"], frame["val_loss"], "s--", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE ((cm/s$^2$)$^2$)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with staged_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_losses(history: list[dict], path: Path) -> None:
    with staged_file(path) as tmp:
        pd.DataFrame(history, columns=["epoch", "train_loss", "val_loss"]).to_csv(
            tmp, sep="\t", index=False, float_format="%.6g")


# --------------------------------------------------------------------------------------------
# data


def phase_rows(index: pd.DataFrame, phase: str, stations: list[str]
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Row positions (train, val) of a phase; finetune has no val rows (holdout is never read)."""
    if phase == "pretrain":
        train, val = select(index, "pretrain", "train"), select(index, "pretrain", "val")
    else:
        train, val = select(index, "target", "train"), None
        rows = index.iloc[train]
        expected = rows["station"].map({s: i for i, s in enumerate(stations)})
        if expected.isna().any() or (expected.to_numpy() != rows["station_index"].to_numpy()).any():
            raise TrainError(
                f"index.csv station_index does not match data.target_stations {stations} "
                "(rerun the prepare stage)")
    if len(train) == 0:
        role = "pretrain" if phase == "pretrain" else "target"
        raise TrainError(f"{phase}: no records with role={role} and split=train in the prepared "
                         "data (empty training split)")
    return train, val


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in (cm/s^2)^2."""
    return torch.mean((pred - target) ** 2)


# --------------------------------------------------------------------------------------------
# distributed


def dist_setup(device: torch.device) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, initialised here) from torchrun's environment variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device, False
    initialised = not dist.is_initialized()
    if initialised:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device, initialised


def all_sum(values: list[float], world: int, device: torch.device) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate(model: TimesNetGen, x: torch.Tensor, station: torch.Tensor | None,
             batch_size: int, rank: int, world: int, device: torch.device) -> float:
    """Mean MSE over records (eval mode, no noise), each rank taking every world-th record."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        idx = torch.arange(rank, len(x), world)
        for i in range(0, len(idx), batch_size):
            b = idx[i:i + batch_size]
            s = None if station is None else station[b].to(device)
            xb = x[b].to(device)
            total += float(mse(model(xb, s), xb)) * len(b)
            count += len(b)
    model.train()
    total, count = all_sum([total, float(count)], world, device)
    return total / count if count else float("nan")


# --------------------------------------------------------------------------------------------
# the loop


def train(params: Params, data_dir: str | Path, out_dir: str | Path, phase: str,
          init: str | Path | None = None, stop_after: int | None = None) -> TimesNetGen:
    """Run one phase (resuming from out_dir/checkpoints/last.pt); returns the trained model.

    `stop_after` ends this invocation after that many epochs (a rerun resumes), e.g. for
    time-sliced jobs and the resume test.
    """
    if phase not in PHASES:
        raise TrainError(f"unknown phase {phase!r} (expected one of {PHASES})")
    out_dir = Path(out_dir)
    pp = params.train.pretrain if phase == "pretrain" else params.train.finetune
    cfg = model_config(params)
    stations = list(params.data.target_stations)

    # ---- every check before any long work
    if phase == "finetune" and init is None:
        raise TrainError("finetune needs --init (the pre-trained model folder or model.pt)")
    init_ckpt = load_model_file(Path(init), expected=cfg) if init is not None else None
    if phase == "finetune" and init_ckpt.get("latent_std") is None:
        raise TrainError(f"{init}: no latent std vector (not a pretrain output)")
    waveforms, index = load_prepared(data_dir)
    if waveforms.shape[1:] != (cfg.c_in, cfg.seq_len):
        raise TrainError(f"{data_dir}: records have shape {waveforms.shape[1:]} but "
                         f"model.seq_len={cfg.seq_len} expects ({cfg.c_in}, {cfg.seq_len})")
    train_rows, val_rows = phase_rows(index, phase, stations)
    if not np.all(np.isfinite(waveforms[train_rows])):
        raise TrainError(f"{data_dir}: NaN/inf samples in the training records")

    fingerprint = {
        "phase": phase, "model": cfg.to_dict(), "phase_params": asdict(pp),
        "seed": params.train.seed, "latent_noise_scale": params.train.latent_noise_scale,
        "train_records": hashlib.sha1(
            ";".join(index["record_id"].iloc[train_rows]).encode()).hexdigest(),
        "init": None if init_ckpt is None else init_ckpt.get("fingerprint"),
    }
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    resume = None
    if ckpt_path.exists():
        try:
            resume = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise TrainError(f"{ckpt_path}: unreadable checkpoint ({exc}); delete it") from None
        diff = config_diff(resume.get("fingerprint", {}), fingerprint)
        if diff:
            raise TrainError(f"{ckpt_path} is from another configuration (checkpoint -> now): "
                             f"{'; '.join(diff)}. Delete {ckpt_path.parent} to start over.")

    # ---- set-up
    if params.train.num_threads:
        torch.set_num_threads(params.train.num_threads)
    rank, world, device, own_group = dist_setup(resolve_device(params.train.device))
    torch.manual_seed(params.train.seed)  # identical initial weights on every rank
    model = TimesNetGen(cfg)
    if init_ckpt is not None:
        model.load_state_dict(init_ckpt["state_dict"])
    model.to(device)
    x_train = torch.from_numpy(np.ascontiguousarray(waveforms[train_rows])).to(device)
    s_train = None
    noise_std = None
    if phase == "finetune":
        s_train = torch.from_numpy(index["station_index"].to_numpy()[train_rows]).long()
        noise_std = (params.train.latent_noise_scale * init_ckpt["latent_std"]).to(device)
    if phase == "pretrain" and len(val_rows):
        x_val, s_val = torch.from_numpy(np.ascontiguousarray(waveforms[val_rows])).to(device), None
    else:  # finetune: loss of the training records without noise (see module docstring)
        x_val, s_val = x_train, s_train

    sampler = torch.utils.data.DistributedSampler(
        range(len(x_train)), num_replicas=world, rank=rank, shuffle=True, seed=params.train.seed)
    steps_per_epoch = math.ceil(len(sampler) / pp.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=pp.lr, weight_decay=pp.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=pp.epochs * steps_per_epoch)
    history: list[dict] = []
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"]["torch"])
        history, start = resume["history"], resume["epoch"]
        if rank == 0:
            print(f"{phase}: resuming from {ckpt_path} after epoch {start}")
    # FiLM layers get no input without a station (pretrain): tell DDP they are unused
    net = model if world == 1 else DistributedDataParallel(
        model, find_unused_parameters=cfg.conditioning == "film" and phase == "pretrain")

    # ---- epochs
    model.train()
    done = 0
    for epoch in range(start, pp.epochs):
        if stop_after is not None and done >= stop_after:
            break
        # reseed per (seed, epoch, rank): dropout/noise identical whether resumed or not
        torch.manual_seed(params.train.seed * 1_000_003 + epoch * 1009 + rank)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        total, count = 0.0, 0
        bar = tqdm(range(0, len(order), pp.batch_size), desc=f"{phase} {epoch + 1}/{pp.epochs}",
                   disable=rank != 0, leave=False, mininterval=2.0, dynamic_ncols=True)
        for i in bar:
            b = order[i:i + pp.batch_size]
            xb = x_train[b]
            sb = None if s_train is None else s_train[b].to(device)
            loss = mse(net(xb, sb, noise_std), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), pp.grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
            bar.set_postfix(loss=f"{total / count:.4g}")
        total, count = all_sum([total, float(count)], world, device)
        val = evaluate(model, x_val, s_val, pp.batch_size, rank, world, device)
        history.append({"epoch": epoch + 1, "train_loss": total / count, "val_loss": val})
        done += 1
        if rank == 0:
            print(f"{phase} epoch {epoch + 1}/{pp.epochs}: train_loss {total / count:.6g} "
                  f"val_loss {val:.6g} lr {sched.get_last_lr()[0]:.3g}", flush=True)
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic({
                "fingerprint": fingerprint, "epoch": epoch + 1, "history": history,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            }, ckpt_path)
    finished = (history[-1]["epoch"] if history else 0) >= pp.epochs

    # ---- outputs (rank 0), once every epoch is done
    if finished and rank == 0:
        if phase == "pretrain":
            std = latent_std(model, x_train, pp.batch_size).cpu()
        else:
            std = init_ckpt["latent_std"]
        save_atomic(std, out_dir / "std.pt")
        save_atomic({
            "config": cfg.to_dict(), "state_dict": model.state_dict(), "latent_std": std,
            "stations": stations, "phase": phase, "fingerprint": fingerprint,
            "history": history, "params": {"train": asdict(params.train)},
        }, out_dir / "model.pt")
        write_losses(history, out_dir / "losses.tsv")
        plot_curve(history, out_dir / "training_curve.png", f"TimesNet-Gen {phase}")
        print(f"{phase}: wrote {out_dir / 'model.pt'}")
    if world > 1:
        dist.barrier()
        if own_group:
            dist.destroy_process_group()
    return model.cpu()


def main(argv: list[str], verb: str = "pretrain") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--out", default=f"models/{verb}", type=Path)
    if verb == "finetune":
        parser.add_argument("--init", default="models/pretrain", type=Path,
                            help="pre-trained model folder (or its model.pt)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                        help="stop this run after EPOCHS epochs; a rerun resumes")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    train(params, args.data, args.out, verb, getattr(args, "init", None), args.stop_after)
    return 0
