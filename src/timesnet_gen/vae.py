"""`train-vae` and `generate-vae`: the spectrogram conditional-VAE baseline (models/cvae.py).

train-vae     trains on the target stations' training split only (holdout records stay unseen);
              writes <out>/model.pt (weights, config, training-set statistics), losses.tsv
              (epoch, train_loss, recon_loss, kl) and training_curve.png.
generate-vae  writes two canonical corpus folders:
              <out>/generated  vae.n_per_station records per target station, z ~ N(0, I)
              <out>/recon      encode-decode (posterior mean) of every real target record,
                               train and holdout, with split and source_record columns
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import VaeParams, load_params
from timesnet_gen.atomic import staged_dir
from timesnet_gen.models.cvae import (
    SpecCVAE,
    amplitude_scale,
    griffin_lim,
    log_magnitude,
    magnitude_from_log,
    station_onehot,
    vae_loss,
)
from timesnet_gen.errors import UserError
from timesnet_gen.prepare import load_prepared
from timesnet_gen.runtime import (
    CheckpointError,
    check_station_index,
    config_diff,
    load_checkpoint,
    plot_curve,
    record_ids,
    resolve_device,
    run_epochs,
    save_checkpoint,
    set_up_torch,
    station_table,
    write_generator_outputs,
    write_losses,
)

CHECKPOINT_VERSION = 1
MODEL_NAME = "cvae"
KIND = "spectrogram-cvae"  # checkpoint kind (runtime.load_checkpoint checks it)
# params that change the network or its input features: a checkpoint is usable only if they match
ARCH_KEYS = ("n_fft", "hop", "log_eps", "latent_dim", "channels", "condition_encoder")


class VaeError(UserError):
    """Bad input to the VAE stages (data, stations, checkpoint)."""


# --------------------------------------------------------------------------------------------
# data


def load_targets(
    prepared_dir: str | Path, stations: list[str], splits: tuple[str, ...]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Target-station rows of a prepared folder in the given splits: (waveforms, index rows).

    Checks that every target station is one of `stations` with a matching station_index and that
    the waveforms are finite, so a bad corpus stops before any training.
    """
    waveforms, index = load_prepared(prepared_dir)
    rows = index[(index["role"] == "target") & index["split"].isin(splits)]
    if rows.empty:
        raise VaeError(f"{prepared_dir}: no target records in split(s) {', '.join(splits)}")
    check_station_index(rows, stations, f"{prepared_dir}/index.csv")
    selected = np.asarray(waveforms[rows.index.to_numpy()], dtype=np.float32)
    bad = ~np.isfinite(selected).all(axis=(1, 2))
    if bad.any():
        raise VaeError(f"record {rows['record_id'].iloc[int(np.argmax(bad))]} has NaN/inf samples")
    return selected, rows.reset_index(drop=True)


def features(waveforms: torch.Tensor, vae: VaeParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, T) cm/s^2 -> (log-magnitude (n, 3, n_fft/2, frames), peak scale (n,) cm/s^2)."""
    scale = amplitude_scale(waveforms)
    logmag = log_magnitude(waveforms / scale[:, None, None], vae.n_fft, vae.hop, vae.log_eps)
    return logmag, scale


def fit_stats(
    logmag: torch.Tensor, scale: torch.Tensor, station_index: torch.Tensor, n_classes: int
) -> dict[str, torch.Tensor]:
    """Training-set statistics kept in the checkpoint.

    mean, std (3, F, 1): per component and frequency, over records and frames (standardisation).
    scale_mu, scale_sigma (classes,): lognormal fit of each station's peak |acc| (cm/s^2),
    scale_lo, scale_hi: the station's observed log-peak range (samples are clipped to it).
    """
    mean = logmag.mean(dim=(0, 3), keepdim=True)[0]
    std = logmag.std(dim=(0, 3), keepdim=True)[0].clamp_min(1e-3)
    log_scale = torch.log(scale.double())
    stats = {"mean": mean, "std": std}
    mu, sigma, lo, hi = (torch.zeros(n_classes, dtype=torch.float64) for _ in range(4))
    for c in range(n_classes):
        values = log_scale[station_index == c]
        if len(values) == 0:
            raise VaeError(f"station class {c} has no training records (cannot fit its scale)")
        mu[c], sigma[c] = values.mean(), values.std(unbiased=False)
        lo[c], hi[c] = values.min(), values.max()
    stats.update(scale_mu=mu, scale_sigma=sigma, scale_lo=lo, scale_hi=hi)
    return stats


def standardise(logmag: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    return (logmag - stats["mean"]) / stats["std"]


def beta_at(epoch: int, vae: VaeParams) -> float:
    """KL weight in (1-based) `epoch`: linear warm-up to vae.beta over beta_warmup_epochs."""
    if vae.beta_warmup_epochs <= 0:
        return vae.beta
    return vae.beta * min(1.0, epoch / vae.beta_warmup_epochs)


# --------------------------------------------------------------------------------------------
# training


def build_model(vae: VaeParams, n_freq: int, n_frames: int, n_classes: int) -> SpecCVAE:
    return SpecCVAE(n_freq, n_frames, n_classes, vae.latent_dim, tuple(vae.channels),
                    vae.condition_encoder)


@torch.no_grad()
def reconstruction_mse(
    model: SpecCVAE, spec: torch.Tensor, onehot: torch.Tensor, batch_size: int = 64
) -> float:
    """Mean squared error of the posterior-mean reconstruction, standardised log-magnitude."""
    model.eval()
    total = 0.0
    for start in range(0, len(spec), batch_size):
        x, c = spec[start : start + batch_size], onehot[start : start + batch_size]
        mean, _ = model.encode(x, c)
        total += float(((model.decode(mean, c) - x) ** 2).sum())
    return total / spec.numel()


def train_model(
    waveforms: np.ndarray,
    station_index: np.ndarray,
    n_classes: int,
    vae: VaeParams,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[SpecCVAE, dict[str, torch.Tensor], pd.DataFrame]:
    """Train the CVAE on (n, 3, T) cm/s^2 records of classes `station_index` (seeded).

    Returns the model (eval mode, on CPU), the training-set statistics and the per-epoch losses.
    """
    device = torch.device(device)
    if len(waveforms) == 0:
        raise VaeError("no training records")
    torch.manual_seed(vae.seed)
    generator = torch.Generator().manual_seed(vae.seed)
    labels = torch.tensor(np.asarray(station_index), dtype=torch.long)
    onehot = station_onehot(labels, n_classes)
    logmag, scale = features(torch.as_tensor(waveforms, dtype=torch.float32), vae)
    stats = fit_stats(logmag, scale, labels, n_classes)
    spec = standardise(logmag, stats)  # (n, 3, F, frames)

    model = build_model(vae, spec.shape[2], spec.shape[3], n_classes).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=vae.lr, weight_decay=vae.weight_decay)
    clock = {"start": time.perf_counter()}

    def batches(epoch: int) -> list[torch.Tensor]:
        model.train()
        clock["start"] = time.perf_counter()
        order = torch.randperm(len(spec), generator=generator)
        return [order[i : i + vae.batch_size] for i in range(0, len(order), vae.batch_size)]

    def loss_fn(batch: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict]:
        x, c = spec[batch].to(device), onehot[batch].to(device)
        recon, mean, logvar = model(x, c, generator)
        loss, mse, kl = vae_loss(recon, x, mean, logvar, beta_at(epoch + 1, vae), vae.free_bits)
        return loss, {"recon_loss": mse.item(), "kl": kl.item()}

    def end_epoch(epoch: int, row: dict, count: int) -> None:
        log(f"epoch {epoch + 1:3d}/{vae.epochs}  loss {row['train_loss']:.4f}  recon "
            f"{row['recon_loss']:.4f}  kl {row['kl']:.1f} nats  beta {beta_at(epoch + 1, vae):.3g}"
            f"  {time.perf_counter() - clock['start']:.1f} s")

    rows = run_epochs(range(vae.epochs), batches, loss_fn, optimiser, model.parameters(),
                      vae.grad_clip, None, end_epoch, "train-vae", show=False)
    return model.cpu().eval(), stats, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# decoding to waveforms


@torch.no_grad()
def to_waveforms(
    model: SpecCVAE,
    stats: dict[str, torch.Tensor],
    z: torch.Tensor,
    onehot: torch.Tensor,
    scale: torch.Tensor,
    vae: VaeParams,
    length: int,
    generator: torch.Generator,
) -> np.ndarray:
    """Decode latents (n, latent) to (n, 3, length) float32 records whose peak |acc| is `scale`."""
    out = []
    for start in range(0, len(z), vae.batch_size):
        part = slice(start, start + vae.batch_size)
        logmag = model.decode(z[part], onehot[part]) * stats["std"] + stats["mean"]
        mag = magnitude_from_log(logmag, vae.log_eps)
        x = griffin_lim(mag, vae.n_fft, vae.hop, length, vae.griffin_lim_iters,
                        vae.griffin_lim_momentum, generator)
        # Griffin-Lim fixes the spectral shape, not the peak: set the peak to the wanted scale
        peak = x.abs().amax(dim=(1, 2)).clamp_min(1e-12)
        out.append(x * (scale[part].float() / peak)[:, None, None])
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruct(
    model: SpecCVAE, stats: dict[str, torch.Tensor], waveforms: np.ndarray,
    station_index: np.ndarray, vae: VaeParams,
) -> np.ndarray:
    """Encode-decode real records (n, 3, T) cm/s^2 with the posterior mean; peaks preserved."""
    x = torch.as_tensor(waveforms, dtype=torch.float32)
    onehot = station_onehot(torch.tensor(np.asarray(station_index)), model.n_classes)
    logmag, scale = features(x, vae)
    spec = standardise(logmag, stats)
    means = torch.cat([model.encode(spec[i : i + vae.batch_size], onehot[i : i + vae.batch_size])[0]
                       for i in range(0, len(spec), vae.batch_size)])
    generator = torch.Generator().manual_seed(vae.seed)
    return to_waveforms(model, stats, means, onehot, scale, vae, x.shape[-1], generator)


@torch.no_grad()
def sample(
    model: SpecCVAE, stats: dict[str, torch.Tensor], n_per_station: int, vae: VaeParams,
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate n_per_station records per class: z ~ N(0, I); peak ~ the station's lognormal.

    Returns (waveforms (n, 3, length) cm/s^2, station_index (n,)); seeded by vae.seed.
    """
    generator = torch.Generator().manual_seed(vae.seed)
    labels = torch.arange(model.n_classes).repeat_interleave(n_per_station)
    z = torch.randn(len(labels), model.latent_dim, generator=generator)
    noise = torch.randn(len(labels), generator=generator, dtype=torch.float64)
    log_scale = stats["scale_mu"][labels] + stats["scale_sigma"][labels] * noise
    # clip to the station's observed range: no peak the training data never showed
    log_scale = torch.minimum(torch.maximum(log_scale, stats["scale_lo"][labels]),
                              stats["scale_hi"][labels])
    onehot = station_onehot(labels, model.n_classes)
    waves = to_waveforms(model, stats, z, onehot, torch.exp(log_scale), vae, length, generator)
    return waves, labels.numpy()


# --------------------------------------------------------------------------------------------
# checkpoint


def checkpoint_payload(
    model: SpecCVAE, stats: dict[str, torch.Tensor], vae: VaeParams, stations: list[str],
    n_samples: int,
) -> dict:
    config = {key: getattr(vae, key) for key in ARCH_KEYS}
    config.update(stations=list(stations), n_samples=int(n_samples), n_freq=model.n_freq,
                  n_frames=model.n_frames)
    return {"kind": KIND, "version": CHECKPOINT_VERSION, "config": config,
            "vae_params": asdict(vae), "state_dict": model.state_dict(), "stats": stats}


def load_vae(
    path: Path, vae: VaeParams, stations: list[str]
) -> tuple[SpecCVAE, dict[str, torch.Tensor], dict]:
    """Load model.pt; stops with a message naming every key that does not match the params."""
    ckpt = load_checkpoint(path, KIND)
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')}, "
                              f"expected {CHECKPOINT_VERSION}")
    config = ckpt["config"]
    wanted = {f"vae.{key}": getattr(vae, key) for key in ARCH_KEYS}
    wanted["data.target_stations"] = list(stations)
    saved = {name: config.get(name.split(".", 1)[1] if name.startswith("vae.") else "stations")
             for name in wanted}
    diff = config_diff(saved, wanted)
    if diff:
        raise CheckpointError(f"{path} was trained with other params (checkpoint -> params): "
                              f"{'; '.join(diff)}; retrain (timesnet-gen train-vae)")
    model = build_model(vae, config["n_freq"], config["n_frames"], len(stations))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["stats"], config


# --------------------------------------------------------------------------------------------
# outputs


def write_outputs(
    out_dir: Path, generated: np.ndarray, gen_index: np.ndarray, recon: np.ndarray,
    recon_rows: pd.DataFrame, stations: list[str], seed: int, raw_dir: Path | None,
) -> None:
    """outputs/vae/generated and outputs/vae/recon as canonical corpus folders (one atomic step)."""
    table = station_table(stations, raw_dir)
    gen_stations = [stations[i] for i in gen_index]
    ids = record_ids("vae-gen", gen_stations)
    gen_records = pd.DataFrame({"record_id": ids, "station": gen_stations, "source": "vae-gen",
                                "model": MODEL_NAME, "seed": seed})
    recon_records = pd.DataFrame({
        "record_id": [f"vae-recon-{rid}" for rid in recon_rows["record_id"]],
        "station": recon_rows["station"].to_numpy(), "split": recon_rows["split"].to_numpy(),
        "source_record": recon_rows["record_id"].to_numpy(), "source": "vae-recon",
        "model": MODEL_NAME, "seed": seed,
    })
    write_generator_outputs(out_dir, table, (generated, gen_records), (recon, recon_records))


# --------------------------------------------------------------------------------------------
# CLI


def train_main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    vae, stations = params.vae, params.data.target_stations
    set_up_torch(params.train.num_threads)
    waveforms, rows = load_targets(args.data, stations, ("train",))
    device = resolve_device(params.train.device)
    print(f"train-vae: {len(rows)} target training records, {len(stations)} stations, "
          f"{vae.epochs} epochs on {device}")
    model, stats, losses = train_model(waveforms, rows["station_index"].to_numpy(),
                                       len(stations), vae, device)
    with staged_dir(args.out, [args.data]) as tmp:
        save_checkpoint(checkpoint_payload(model, stats, vae, stations, waveforms.shape[-1]),
                        tmp / "model.pt")
        write_losses(losses, tmp / "losses.tsv")
        plot_curve(losses, tmp / "training_curve.png", "Spectrogram CVAE baseline")
    print(f"wrote {args.out}/model.pt, losses.tsv, training_curve.png")
    return 0


def generate_main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    vae, stations = params.vae, params.data.target_stations
    set_up_torch(params.train.num_threads)
    model, stats, config = load_vae(args.model / "model.pt", vae, stations)
    waveforms, rows = load_targets(args.data, stations, ("train", "holdout"))
    if waveforms.shape[-1] != config["n_samples"]:
        raise VaeError(f"{args.data}: records have {waveforms.shape[-1]} samples, the model was "
                       f"trained on {config['n_samples']}")
    t0 = time.perf_counter()
    generated, gen_index = sample(model, stats, vae.n_per_station, vae, waveforms.shape[-1])
    print(f"generated {len(generated)} records ({time.perf_counter() - t0:.1f} s)")
    t0 = time.perf_counter()
    recon = reconstruct(model, stats, waveforms, rows["station_index"].to_numpy(), vae)
    print(f"reconstructed {len(recon)} records ({time.perf_counter() - t0:.1f} s)")
    write_outputs(args.out, generated, gen_index, recon, rows, stations, vae.seed, args.raw)
    print(f"wrote {args.out}/generated and {args.out}/recon")
    return 0


def main(argv: list[str], verb: str = "train-vae") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default=Path("data/prepared"), type=Path)
    if verb == "train-vae":
        parser.add_argument("--out", default=Path("models/vae"), type=Path)
        return train_main(parser.parse_args(argv))
    if verb == "generate-vae":
        parser.add_argument("--model", default=Path("models/vae"), type=Path)
        parser.add_argument("--out", default=Path("outputs/vae"), type=Path)
        parser.add_argument("--raw", default=Path("data/raw"), type=Path,
                            help="raw corpus folder; its stations.csv gives f0_true_hz if present")
        return generate_main(parser.parse_args(argv))
    raise UserError(f"unknown verb {verb!r} for timesnet_gen.vae")
