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

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import Params, load_params
from timesnet_gen.errors import UserError
from timesnet_gen.models.timesnet import TimesNetConfig, TimesNetGen, latent_std
from timesnet_gen.prepare import load_prepared, select
from timesnet_gen.runtime import (
    CheckpointError,
    check_station_index,
    config_diff,
    load_checkpoint,
    plot_curve,
    resolve_device,
    run_epochs,
    save_checkpoint,
    set_up_torch,
    write_losses,
)

PHASES = ("pretrain", "finetune")
KIND = "timesnet-gen"  # checkpoint kind (runtime.load_checkpoint checks it)
LOSS_COLUMNS = ["epoch", "train_loss", "val_loss"]
MSE = "MSE ((cm/s$^2$)$^2$)"


class TrainError(UserError):
    """Training cannot start: bad data, split, checkpoint or configuration."""


# --------------------------------------------------------------------------------------------
# small helpers


def model_config(params: Params) -> TimesNetConfig:
    """The model's config: params.model plus the number of target stations (classes)."""
    return TimesNetConfig(**asdict(params.model), n_stations=len(params.data.target_stations))


def load_model_file(path: Path, expected: TimesNetConfig | None = None) -> dict:
    """Read a TimesNet model.pt; with `expected`, refuse one trained with another config."""
    ckpt = load_checkpoint(path, KIND, None if expected is None else expected.to_dict())
    if "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a TimesNet-Gen model file (no config/state_dict)")
    return ckpt


# --------------------------------------------------------------------------------------------
# data


def phase_rows(index: pd.DataFrame, phase: str, stations: list[str]
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Row positions (train, val) of a phase; finetune has no val rows (holdout is never read)."""
    if phase == "pretrain":
        train, val = select(index, "pretrain", "train"), select(index, "pretrain", "val")
    else:
        train, val = select(index, "target", "train"), None
        check_station_index(index.iloc[train], stations, "index.csv")
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


def validation_loss(model: TimesNetGen, x: torch.Tensor, station: torch.Tensor | None,
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
# the phase: check, set up, run the shared loop, write


def check_phase(params: Params, data_dir: str | Path, phase: str, init: str | Path | None
                ) -> dict:
    """Everything a phase needs, checked before any long work: data, rows, init checkpoint."""
    if phase not in PHASES:
        raise TrainError(f"unknown phase {phase!r} (expected one of {PHASES})")
    cfg = model_config(params)
    if phase == "finetune" and init is None:
        raise TrainError("finetune needs --init (the pre-trained model folder or model.pt)")
    init_ckpt = load_model_file(Path(init), expected=cfg) if init is not None else None
    if phase == "finetune" and init_ckpt.get("latent_std") is None:
        raise TrainError(f"{init}: no latent std vector (not a pretrain output)")
    waveforms, index = load_prepared(data_dir)
    if waveforms.shape[1:] != (cfg.c_in, cfg.seq_len):
        raise TrainError(f"{data_dir}: records have shape {waveforms.shape[1:]} but "
                         f"model.seq_len={cfg.seq_len} expects ({cfg.c_in}, {cfg.seq_len})")
    train_rows, val_rows = phase_rows(index, phase, list(params.data.target_stations))
    if not np.all(np.isfinite(waveforms[train_rows])):
        raise TrainError(f"{data_dir}: NaN/inf samples in the training records")
    pp = params.train.pretrain if phase == "pretrain" else params.train.finetune
    fingerprint = {
        "phase": phase, "model": cfg.to_dict(), "phase_params": asdict(pp),
        "seed": params.train.seed, "latent_noise_scale": params.train.latent_noise_scale,
        "train_records": hashlib.sha1(
            ";".join(index["record_id"].iloc[train_rows]).encode()).hexdigest(),
        "init": None if init_ckpt is None else init_ckpt.get("fingerprint"),
    }
    return {"cfg": cfg, "pp": pp, "init": init_ckpt, "waveforms": waveforms, "index": index,
            "train_rows": train_rows, "val_rows": val_rows, "fingerprint": fingerprint}


def read_resume(ckpt_path: Path, fingerprint: dict) -> dict | None:
    """The last epoch's checkpoint of this configuration, if any (another one is an error)."""
    if not ckpt_path.exists():
        return None
    resume = load_checkpoint(ckpt_path)
    diff = config_diff(resume.get("fingerprint", {}), fingerprint)
    if diff:
        raise TrainError(f"{ckpt_path} is from another configuration (checkpoint -> now): "
                         f"{'; '.join(diff)}. Delete {ckpt_path.parent} to start over.")
    return resume


def tensors(job: dict, phase: str, latent_noise_scale: float, device: torch.device) -> dict:
    """Training (and validation) records, station classes and the latent noise std."""
    waveforms, index, rows = job["waveforms"], job["index"], job["train_rows"]
    out = {"x": torch.from_numpy(np.ascontiguousarray(waveforms[rows])).to(device),
           "s": None, "noise": None}
    if phase == "finetune":
        out["s"] = torch.from_numpy(index["station_index"].to_numpy()[rows]).long()
        out["noise"] = (latent_noise_scale * job["init"]["latent_std"]).to(device)
    if phase == "pretrain" and len(job["val_rows"]):
        out["x_val"] = torch.from_numpy(np.ascontiguousarray(waveforms[job["val_rows"]])).to(device)
        out["s_val"] = None
    else:  # finetune: loss of the training records without noise (see module docstring)
        out["x_val"], out["s_val"] = out["x"], out["s"]
    return out


def write_phase(model: TimesNetGen, job: dict, params: Params, phase: str, history: list,
                x_train: torch.Tensor, out_dir: Path) -> None:
    if phase == "pretrain":
        std = latent_std(model, x_train, job["pp"].batch_size).cpu()
    else:
        std = job["init"]["latent_std"]
    save_checkpoint(std, out_dir / "std.pt")
    save_checkpoint({
        "kind": KIND, "config": job["cfg"].to_dict(), "state_dict": model.state_dict(),
        "latent_std": std, "stations": list(params.data.target_stations), "phase": phase,
        "fingerprint": job["fingerprint"], "history": history,
        "params": {"train": asdict(params.train)},
    }, out_dir / "model.pt")
    write_losses(history, out_dir / "losses.tsv", LOSS_COLUMNS)
    plot_curve(history, out_dir / "training_curve.png", f"TimesNet-Gen {phase}", MSE)
    print(f"{phase}: wrote {out_dir / 'model.pt'}")


def train(params: Params, data_dir: str | Path, out_dir: str | Path, phase: str,
          init: str | Path | None = None, stop_after: int | None = None) -> TimesNetGen:
    """Run one phase (resuming from out_dir/checkpoints/last.pt); returns the trained model.

    `stop_after` ends this invocation after that many epochs (a rerun resumes), e.g. for
    time-sliced jobs and the resume test.
    """
    out_dir = Path(out_dir)
    job = check_phase(params, data_dir, phase, init)
    cfg, pp, seed = job["cfg"], job["pp"], params.train.seed
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    resume = read_resume(ckpt_path, job["fingerprint"])

    # ---- set-up
    set_up_torch(params.train.num_threads)
    rank, world, device, own_group = dist_setup(resolve_device(params.train.device))
    torch.manual_seed(seed)  # identical initial weights on every rank
    model = TimesNetGen(cfg)
    if job["init"] is not None:
        model.load_state_dict(job["init"]["state_dict"])
    model.to(device)
    data = tensors(job, phase, params.train.latent_noise_scale, device)
    sampler = torch.utils.data.DistributedSampler(
        range(len(data["x"])), num_replicas=world, rank=rank, shuffle=True, seed=seed)
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

    def batches(epoch: int) -> list[torch.Tensor]:
        # reseed per (seed, epoch, rank): dropout/noise identical whether resumed or not
        torch.manual_seed(seed * 1_000_003 + epoch * 1009 + rank)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        return [order[i:i + pp.batch_size] for i in range(0, len(order), pp.batch_size)]

    def loss_fn(b: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        xb = data["x"][b]
        sb = None if data["s"] is None else data["s"][b].to(device)
        return mse(net(xb, sb, data["noise"]), xb), {}

    def end_epoch(epoch: int, row: dict, count: int) -> None:
        if world > 1:
            total, count = all_sum([row["train_loss"] * count, float(count)], world, device)
            row["train_loss"] = total / count
        row["val_loss"] = validation_loss(model, data["x_val"], data["s_val"], pp.batch_size,
                                          rank, world, device)
        if rank == 0:
            print(f"{phase} epoch {epoch + 1}/{pp.epochs}: train_loss {row['train_loss']:.6g} "
                  f"val_loss {row['val_loss']:.6g} lr {sched.get_last_lr()[0]:.3g}", flush=True)
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        history.append(row)
        if rank == 0:
            save_checkpoint({
                "fingerprint": job["fingerprint"], "epoch": epoch + 1,
                "history": history, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            }, ckpt_path)

    # ---- epochs
    model.train()
    stop = pp.epochs if stop_after is None else min(pp.epochs, start + stop_after)
    run_epochs(range(start, stop), batches, loss_fn, opt, model.parameters(), pp.grad_clip,
               sched, end_epoch, phase, show=rank == 0)  # end_epoch appends to history
    finished = (history[-1]["epoch"] if history else 0) >= pp.epochs

    # ---- outputs (rank 0), once every epoch is done
    if finished and rank == 0:
        write_phase(model, job, params, phase, history, data["x"], out_dir)
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
