"""`generate` stage: TimesNet-Gen samples and reconstructions as canonical corpus folders.

    timesnet-gen generate --params params.yaml --data data/prepared --model models/finetune \
        --out outputs/timesnet            -> outputs/timesnet/generated, outputs/timesnet/recon
    timesnet-gen generate --station 4628 -n 20 --checkpoint models/finetune/model.pt \
        --data data/prepared --out somewhere      -> somewhere/ (generated records only)

The paper's sampler, per target station: draw k of the station's *training* records (numpy
generator seeded with (generate.seed, station class), so a station's samples do not depend on
which other stations are generated), average their latent sequences (T, d_model) and their
input means/stds with equal weights or Dirichlet(alpha) weights, decode. Holdout records are
never mixed. Each record is encoded once, in fixed batches of its own station and split, so with
`period_selection: batch` the latents do not depend on -n either.

Reconstructions: encode-decode of every real target record (train and holdout; columns `split`
and `source_record` say which). records.csv extra columns: source (timesnet-gen |
timesnet-recon), model, seed, source_records (';'-joined ids), weights (';'-joined).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import GenerateParams, load_params
from timesnet_gen.errors import UserError
from timesnet_gen.corpus.format import write_corpus
from timesnet_gen.models.timesnet import TimesNetConfig, TimesNetGen
from timesnet_gen.prepare import load_prepared
from timesnet_gen.runtime import (
    check_station_index,
    resolve_device,
    station_table,
    write_generator_outputs,
)
from timesnet_gen.train import load_model_file


class GenerateError(UserError):
    """Generation cannot start: unknown station, too few records, bad checkpoint."""


def load_generator(path: str | Path) -> tuple[TimesNetGen, dict]:
    """(model in eval mode on CPU, checkpoint dict) from a model.pt or its folder."""
    ckpt = load_model_file(Path(path))
    model = TimesNetGen(TimesNetConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def mixing_plan(n_train: int, n: int, g: GenerateParams, station_class: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """picks (n, k) positions among the station's training records, weights (n, k) summing to 1."""
    rng = np.random.default_rng([g.seed, station_class])
    picks = np.stack([rng.choice(n_train, size=g.k, replace=False) for _ in range(n)])
    if g.weights == "dirichlet":
        weights = rng.dirichlet(np.full(g.k, g.dirichlet_alpha), size=n)
    else:
        weights = np.full((n, g.k), 1.0 / g.k)
    return picks, weights


@torch.no_grad()
def encode_records(model: TimesNetGen, x: np.ndarray, station_class: int, batch_size: int,
                   device: torch.device) -> tuple[torch.Tensor, ...]:
    """x (n, 3, T) cm/s^2 -> latent (n, T, D), mean (n, 3, 1), std (n, 3, 1) on the CPU."""
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
        station = torch.full((len(xb),), station_class, dtype=torch.long, device=device)
        outs.append([t.cpu() for t in model.encode(xb, station)])
    return tuple(torch.cat(parts) for parts in zip(*outs))


@torch.no_grad()
def decode_mixtures(model: TimesNetGen, latent: tuple[torch.Tensor, ...], picks: np.ndarray,
                    weights: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Weighted averages of latents and input statistics, decoded -> (n, 3, T) cm/s^2."""
    z, mean, std = latent
    out = []
    for i in range(0, len(picks), batch_size):
        p = torch.from_numpy(picks[i:i + batch_size])
        w = torch.from_numpy(weights[i:i + batch_size]).float()  # (b, k)
        mix = [(w.view(*w.shape, 1, 1) * t[p]).sum(dim=1).to(device) for t in (z, mean, std)]
        out.append(model.decode(*mix).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3, z.shape[1]), np.float32)


@torch.no_grad()
def reconstruct(model: TimesNetGen, latent: tuple[torch.Tensor, ...], batch_size: int,
                device: torch.device) -> np.ndarray:
    n = len(latent[0])
    return decode_mixtures(model, latent, np.arange(n)[:, None], np.ones((n, 1)), batch_size,
                           device)


def check_request(params_g: GenerateParams, model: TimesNetGen, known: list[str],
                  stations: list[str], n: int, waveforms: np.ndarray, index: pd.DataFrame,
                  data_dir: str | Path, checkpoint: str | Path) -> dict[str, tuple]:
    """Every check before any long work -> {station: (train rows, holdout rows)}."""
    unknown = [s for s in stations if s not in known]
    if unknown:
        raise GenerateError(f"station(s) {unknown} unknown to the model {checkpoint} "
                            f"(it knows {known})")
    if n < 1:
        raise GenerateError(f"number of samples per station must be >= 1, got {n}")
    if waveforms.shape[1:] != (model.cfg.c_in, model.cfg.seq_len):
        raise GenerateError(f"{data_dir}: records of shape {waveforms.shape[1:]}, the model "
                            f"expects ({model.cfg.c_in}, {model.cfg.seq_len})")
    target = index[index["role"] == "target"]
    check_station_index(target[target["station"].isin(stations)], known, f"{data_dir}/index.csv")
    rows = {}
    for s in stations:
        mine = (index["station"] == s) & (index["role"] == "target")
        train = np.flatnonzero(mine & (index["split"] == "train"))
        if len(train) == 0:
            raise GenerateError(f"station {s}: no training records in {data_dir} (empty split)")
        if params_g.k > len(train):
            raise GenerateError(f"station {s}: generate.k={params_g.k} exceeds its "
                                f"{len(train)} training records")
        rows[s] = (train, np.flatnonzero(mine & (index["split"] == "holdout")))
    return rows


def generate_station(model: TimesNetGen, waveforms: np.ndarray, ids: np.ndarray,
                     rows: tuple[np.ndarray, np.ndarray], station: str, cls: int, n: int,
                     params_g: GenerateParams, checkpoint: str, recon: bool,
                     device: torch.device) -> tuple[list, list, list, list]:
    """One station's samples (and reconstructions): waveforms and records-table rows."""
    bs = params_g.batch_size
    train, holdout = rows
    latent = encode_records(model, waveforms[train], cls, bs, device)
    picks, weights = mixing_plan(len(train), n, params_g, cls)
    gen_w = [decode_mixtures(model, latent, picks, weights, bs, device)]
    gen_meta = [{
        "record_id": f"tng-{station}-{i:04d}", "station": station, "source": "timesnet-gen",
        "model": checkpoint, "seed": params_g.seed, "source_records": ";".join(ids[train[p]]),
        "weights": ";".join(f"{v:.6g}" for v in w),
    } for i, (p, w) in enumerate(zip(picks, weights))]
    rec_w, rec_meta = [], []
    if recon:
        for split, rr, lat in (("train", train, latent), ("holdout", holdout, None)):
            if len(rr) == 0:
                continue
            lat = lat if lat is not None else encode_records(model, waveforms[rr], cls, bs, device)
            rec_w.append(reconstruct(model, lat, bs, device))
            rec_meta += [{
                "record_id": f"rec-{rid}", "station": station, "source": "timesnet-recon",
                "model": checkpoint, "seed": "", "source_records": rid, "weights": "1",
                "split": split, "source_record": rid,
            } for rid in ids[rr]]
    return gen_w, gen_meta, rec_w, rec_meta


def generate(params_g: GenerateParams, data_dir: str | Path, checkpoint: str | Path,
             out: str | Path, stations: list[str] | None = None, n: int | None = None,
             recon: bool = True, raw_dir: str | Path | None = None, device: str = "auto"
             ) -> None:
    """Write generated (and reconstructed) records; see the module docstring for the layout."""
    out = Path(out)
    model, ckpt = load_generator(checkpoint)
    known = list(ckpt["stations"])
    stations = known if stations is None else stations
    n = params_g.n_per_station if n is None else n
    waveforms, index = load_prepared(data_dir)
    rows = check_request(params_g, model, known, stations, n, waveforms, index, data_dir,
                         checkpoint)
    dev = resolve_device(device)
    model.to(dev)
    parts: list[list] = [[], [], [], []]
    ids = index["record_id"].to_numpy()
    for s in stations:
        got = generate_station(model, waveforms, ids, rows[s], s, known.index(s), n, params_g,
                               str(checkpoint), recon, dev)
        for part, values in zip(parts, got):
            part += values
        print(f"generate: station {s}: {n} samples from {len(rows[s][0])} training records")
    gen_w, gen_meta, rec_w, rec_meta = parts
    table = station_table(stations, raw_dir)
    generated = (np.concatenate(gen_w), pd.DataFrame(gen_meta))
    if not recon:
        write_corpus(out, *generated, table, sources=[data_dir])
        print(f"generate: wrote {len(gen_meta)} records -> {out}")
        return
    write_generator_outputs(out, table, generated, (np.concatenate(rec_w), pd.DataFrame(rec_meta)),
                            sources=[data_dir])
    print(f"generate: wrote {len(gen_meta)} generated -> {out / 'generated'}, "
          f"{len(rec_meta)} reconstructions -> {out / 'recon'}")


def main(argv: list[str], verb: str = "generate") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/prepared", type=Path)
    parser.add_argument("--model", default=None, type=Path, help="model folder (model.pt)")
    parser.add_argument("--checkpoint", default=None, type=Path, help="a model.pt file")
    parser.add_argument("--out", default="outputs/timesnet", type=Path)
    parser.add_argument("--raw", default="data/raw", type=Path,
                        help="raw corpus, read only for stations.csv f0_true_hz")
    parser.add_argument("--station", action="append", default=None,
                        help="standalone mode: generate only these stations (repeatable), "
                             "written straight into --out, without reconstructions")
    parser.add_argument("-n", type=int, default=None, help="samples per station")
    args = parser.parse_args(argv)
    if args.model is not None and args.checkpoint is not None:
        parser.error("give --model or --checkpoint, not both")
    checkpoint = args.checkpoint or args.model or Path("models/finetune")
    params = load_params(args.params)
    stations = None
    if args.station:
        stations = [s for item in args.station for s in item.split(",") if s]
    generate(params.generate, args.data, checkpoint, args.out, stations=stations, n=args.n,
             recon=stations is None, raw_dir=args.raw, device=params.train.device)
    return 0
