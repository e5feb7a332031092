"""`FlowSampler`, sample.py's sampler contract (draw a record's features at a station and
scenario, decode them, save and load the state), and `train_sampler`, the pipeline's entry point:
pre-training, fine-tuning and the fits after training, written atomically."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from timesnet_gen.evaluation.realism_gmm import predict_medians
from timesnet_gen.models.flow_sampler.calibration import (calibrate, calibrate_frames, draws,
                                                          smooth_frames, smoothing)
from timesnet_gen.models.flow_sampler.latent import (check_latent, fit_latent, fit_stats,
                                                     from_latent, latent_sizes, mean_prediction,
                                                     prior_given, scenario_terms,
                                                     standardise_scenario, to_batchable, to_latent)
from timesnet_gen.models.flow_sampler.network import (RecordPrior, VelocityNet, draw_record_prior,
                                                      fit, fit_record_prior, integrate)
from timesnet_gen.models.flow_sampler.params import (FORMAT, FlowSamplerError, FlowSamplerParams,
                                                     KIND, REAL_RECORDS, SCENARIO_COLUMNS, SOLVERS,
                                                     TIME_SAMPLING, n_given, n_prior_fine,
                                                     n_scalars)
from timesnet_gen.models.flow_sampler.representation import (band_centers, decode, encode,
                                                             fine_centers, fit_decoder_bias,
                                                             stretch_after_onset)
from timesnet_gen.records import N_SAMPLES
from timesnet_gen.runtime import set_up_torch


GMM_VS30 = 760.0  # m/s, the site of `gmm_scaling`'s ratios: ASB14's site term is linear from
#                   750 m/s on, so its ratios do not carry its soil nonlinearity
GMM_MECHANISM = "SS"


def gmm_scaling(magnitude: float, drawn: float, distance_km: float, freqs: np.ndarray
                ) -> tuple[np.ndarray, float, float]:
    """ln ratios of the published GMMs' medians at magnitude to those at drawn, at distance_km
    (hypocentral): ASB14's PSA at the periods 1 / freqs (Hz; held at its 0.01 and 4 s ends
    outside them) (F,), ASB14's PGA, AS16's D5-95."""
    periods = np.clip(1.0 / np.asarray(freqs, dtype=np.float64), 0.01, 4.0)
    (pga, _, dur, psa), (pga0, _, dur0, psa0) = (
        predict_medians(m, max(distance_km, 0.1), GMM_VS30, periods, GMM_MECHANISM)
        for m in (magnitude, drawn))
    return psa - psa0, pga - pga0, dur - dur0


def check_scenario(magnitude: np.ndarray, distance_km: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validated float64 (n,) arrays of equal length; NaN, inf, negative or zero is an error."""
    m = np.atleast_1d(np.asarray(magnitude, dtype=np.float64))
    r = np.atleast_1d(np.asarray(distance_km, dtype=np.float64))
    if m.ndim != 1 or r.shape != m.shape:
        raise FlowSamplerError(f"magnitude {m.shape} and distance_km {r.shape} need one value "
                               "per record (equal 1-D shapes)")
    if len(m) < 1:
        raise FlowSamplerError("n must be >= 1 (no scenario given)")
    for name, v in (("magnitude", m), ("distance_km", r)):
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            raise FlowSamplerError(f"{name} must be finite and > 0, got {v[bad][0]}")
    return m, r


# the options' values before each existed: a checkpoint written then was trained with these
BEFORE_OPTIONS = {"remainder_scale": False, "remainder_ar": False, "remainder_gauss": False,
                  "coarse_weight": 1.0, "remainder_calibrate": False, "record_prior": False,
                  "prior_records": "target", "prior_scalars": False, "prior_calibrate": False,
                  "p_knot": "arias", "mean_quadratic": False, "random_phase_hz": 0.0,
                  "remainder_smooth": False, "prior_fine": 0, "quiet_before_p": False,
                  "scalar_calibrate": False, "long_gap": "clip", "decoder_bias": False,
                  "canvas": "wrap", "site_intercepts": False, "station_scatter": False,
                  "record_scale": "peak", "extrapolate": "linear"}


class FlowSampler:
    """The deep record-free sampler (see the module docstring); sample.py's sampler contract."""

    kind: ClassVar[str] = KIND

    def __init__(self, params: FlowSamplerParams, net: VelocityNet, stats: dict[str, torch.Tensor],
                 stations: list[str], scenarios: dict[str, np.ndarray], n_frames: int,
                 n_samples: int = N_SAMPLES, prior: RecordPrior | None = None) -> None:
        self.params, self.net, self.stats = params, net.eval(), stats
        self.prior = prior
        self.stations, self._scenarios = list(stations), scenarios
        self.n_frames, self.n_samples = n_frames, n_samples

    def station_index(self, station: str) -> int:
        if station not in self.stations:
            raise FlowSamplerError(f"unknown station {station!r} (known: "
                                   f"{', '.join(self.stations)})")
        return self.stations.index(station) + 1

    def scenarios(self, station: str) -> np.ndarray:
        """(n_train, 2) [magnitude, distance_km] of the station's training records."""
        self.station_index(station)
        return self._scenarios[station].copy()

    def sample(self, station: str, magnitude: np.ndarray, distance_km: np.ndarray,
               seed: int) -> np.ndarray:
        """(n, 3, T) float32 cm/s^2 records at the station for the scenarios; seeded."""
        s = self.station_index(station)
        m, r = check_scenario(magnitude, distance_km)
        p = self.params
        set_up_torch(p.num_threads)
        drawn_m = m
        if p.extrapolate == "gmm":  # the network draws inside the range, `scaled` goes on
            trained = self._scenarios[station][:, 0]
            drawn_m = np.clip(m, trained.min(), trained.max())
        scenario = standardise_scenario(np.stack([drawn_m, r], axis=1), self.stats)
        starts = range(0, len(m), p.batch_generate)

        def chunk(start: int) -> np.ndarray:
            """Records start..start+batch_generate; their own generator (seed, start), so the
            result does not depend on the number of workers."""
            part = slice(start, start + p.batch_generate)
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
            _, coarse, static = self.features(s, scenario[part], generator)
            if (m[part] != drawn_m[part]).any():
                coarse, static = self.scaled(coarse, static, m[part], drawn_m[part], r[part])
            return self.decode(coarse, static, generator)

        if p.workers > 1 and len(starts) > 1:  # torch and numpy FFTs release the GIL
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(p.workers) as pool:
                out = list(pool.map(chunk, starts))
        else:
            out = [chunk(k) for k in starts]
        return np.concatenate(out)

    def scaled(self, coarse: torch.Tensor, static: torch.Tensor, magnitude: np.ndarray,
               drawn: np.ndarray, distance_km: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Physical features (`features`) drawn at the magnitudes drawn (n,), scaled to the
        magnitudes asked for (n,) at distance_km (n,) by published GMMs' median ratios
        (`gmm_scaling`): the frames from the onset on lengthened by AS16's D5-95 ratio
        (`stretch_after_onset`); every frame's bands and the fine spectrum moved by ASB14's
        ln PSA ratio at their frequencies (a frame's band level goes as the PSA there, random
        vibration), the fine spectrum by half the ln D5-95 ratio more (the longer record holds
        that much more energy at the same frame level), the three components alike; with
        record_scale peak the level by the ln PGA ratio. A record drawn where asked is kept."""
        p, k = self.params, n_scalars(self.params)
        freqs = np.r_[band_centers(p), fine_centers(p)]
        n_bands = len(freqs) - p.n_fine
        d_psa, d_pga, d_dur = np.zeros((len(drawn), len(freqs))), np.zeros(len(drawn)), \
            np.zeros(len(drawn))
        ratios: dict[tuple[float, ...], tuple[np.ndarray, float, float]] = {}
        for i in np.flatnonzero(magnitude != drawn):
            key = (float(magnitude[i]), float(drawn[i]), float(distance_km[i]))
            if key not in ratios:
                ratios[key] = gmm_scaling(*key, freqs)
            d_psa[i], d_pga[i], d_dur[i] = ratios[key]
        frames = stretch_after_onset(coarse.numpy(), np.exp(d_dur), p)
        frames = frames + np.tile(d_psa[:, :n_bands], 3)[:, None, :]
        fine = np.tile(d_psa[:, n_bands:] + 0.5 * d_dur[:, None], 3)
        level = d_pga if p.record_scale == "peak" else np.zeros(len(drawn))
        moved = np.concatenate([level[:, None], np.zeros((len(drawn), k - 1)), fine], axis=1)
        return (torch.from_numpy(frames).to(coarse.dtype),
                static + torch.from_numpy(moved).to(static.dtype))

    def decode(self, coarse: torch.Tensor, static: torch.Tensor, generator: torch.Generator
               ) -> np.ndarray:
        """Records (n, 3, T) from physical coarse frames (n, frames, C) and static parts (n, S)
        (as `features` returns them): `decode`, asked for the frames less the decoder's mean
        error when the checkpoint holds it (p.decoder_bias, `fit_decoder_bias`)."""
        k = n_scalars(self.params)
        if "decoder_bias" in self.stats:
            coarse = coarse - self.stats["decoder_bias"]
        return decode(static[:, :1], static[:, 1:k], coarse, static[:, k:], self.params,
                      generator, self.n_samples)

    def latent(self, station: torch.Tensor, scenario: torch.Tensor, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow's latent coordinates (frames (n, frames, C), static (n, S)) at station
        indices (n,) and standardised scenarios (n, 2), gains applied, the record components
        drawn by the record prior when there is one."""
        p, k = self.params, n_scalars(self.params)
        xc, xs = integrate(self.net, station, scenario, self.n_frames,
                           *latent_sizes(self.stats, self.n_frames, k), p, generator)
        if "frame_gain" in self.stats:
            xc = xc * self.stats["frame_gain"]
        if "frame_smooth" in self.stats:
            xc = smooth_frames(xc, self.stats["frame_smooth"])
        if "scalar_gain" in self.stats:
            xs = torch.cat([xs[:, :k] * self.stats["scalar_gain"], xs[:, k:]], dim=1)
        if "station_gain" in self.stats:  # the level scalar, by the station's own gain
            xs = torch.cat([xs[:, :1] * self.stats["station_gain"][station - 1], xs[:, 1:]],
                           dim=1)
        if self.prior is not None:  # the record components from their own flow
            n_rec = self.stats["record_axes"].shape[1]
            drawn = draw_record_prior(self.prior, station, scenario,
                                      prior_given(xs, self.stats, p), p.prior_ode_steps,
                                      generator, n_rec)
            if "prior_gain" in self.stats:
                drawn = drawn * self.stats["prior_gain"]
            xs = torch.cat([xs[:, :k], drawn, xs[:, k + n_rec:]], dim=1)
        return xc, xs

    def features(self, s: int, scenario: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generated features at station index s (1..S) and standardised scenarios (n, 2),
        before decoding: the flow's standardised residuals (n, frames, C), and the physical
        coarse frames (n, frames, C) and static part (n, S) that `decode` takes."""
        station_t = torch.full((len(scenario),), s, dtype=torch.long)
        xc, xs = from_latent(*self.latent(station_t, scenario, generator), self.stats,
                             n_scalars(self.params))
        mean_c, mean_s = mean_prediction(self.stats, station_t, scenario)
        coarse = (xc.reshape(len(scenario), -1) * self.stats["coarse_std"] + mean_c)
        return xc, coarse.reshape(xc.shape), xs * self.stats["static_std"] + mean_s

    def state(self) -> dict:
        return {
            "params": asdict(self.params), "stations": list(self.stations),
            "scenarios": {k: torch.as_tensor(v, dtype=torch.float64)
                          for k, v in self._scenarios.items()},
            "stats": dict(self.stats), "weights": self.net.state_dict(),
            "n_frames": int(self.n_frames), "n_samples": int(self.n_samples),
        } | ({"prior_weights": self.prior.state_dict()} if self.prior is not None else {})

    @classmethod
    def from_state(cls, state: dict) -> FlowSampler:
        try:
            params = FlowSamplerParams.from_dict(BEFORE_OPTIONS | state["params"])
            if params.record_prior != ("prior_weights" in state):
                raise FlowSamplerError(
                    f"record_prior = {params.record_prior}, but the checkpoint "
                    f"{'lacks' if params.record_prior else 'holds'} the record prior's weights")
            stats = {k: torch.as_tensor(v) for k, v in state["stats"].items()}
            tensors = {"statistics": stats, "weights": state["weights"],
                       "prior weights": state.get("prior_weights", {})}
            bad = [f"{part} {key}" for part, group in tensors.items()
                   for key, v in group.items() if not torch.isfinite(torch.as_tensor(v)).all()]
            if bad:
                raise FlowSamplerError(f"NaN or inf in the {', '.join(bad[:3])}"
                                       + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))
            net = build_net(params, int(state["n_frames"]), stats, len(state["stations"]))
            net.load_state_dict(state["weights"])
            scenarios = {k: np.asarray(v, dtype=np.float64)
                         for k, v in state["scenarios"].items()}
            prior = None
            if params.record_prior:
                prior = RecordPrior(stats["record_axes"].shape[1], len(state["stations"]),
                                    params.prior_hidden, params.prior_records == "all",
                                    n_given(params))
                prior.load_state_dict(state["prior_weights"])
                prior.eval()
            return cls(params, net, stats, list(state["stations"]), scenarios,
                       int(state["n_frames"]), int(state["n_samples"]), prior)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise FlowSamplerError(f"not a valid {KIND} sampler state ({exc})") from None


def build_net(p: FlowSamplerParams, n_frames: int, stats: dict[str, torch.Tensor],
              n_stations: int, calibrated: bool = True) -> VelocityNet:
    if p.solver not in SOLVERS:
        raise FlowSamplerError(f"solver {p.solver!r} not one of {SOLVERS}")
    if p.time_sampling not in TIME_SAMPLING:
        raise FlowSamplerError(f"time_sampling {p.time_sampling!r} not one of {TIME_SAMPLING}")
    check_latent(p, stats, calibrated)
    sizes = latent_sizes(stats, n_frames, n_scalars(p))
    n_fine = sizes[1] - n_scalars(p) - p.record_pcs  # the fine part of the static coordinates
    for key, shape in (("frame_gain", (n_frames, sizes[0])), ("prior_gain", (p.record_pcs,)),
                       ("scalar_gain", (n_scalars(p),)), ("station_gain", (n_stations, 1)),
                       ("frame_smooth", (2, sizes[0])),
                       ("prior_fine_axes", (n_fine, n_prior_fine(p))),
                       ("prior_fine_rms", (n_prior_fine(p),)),
                       ("decoder_bias", (n_frames, stats["coarse_std"].numel() // n_frames))):
        if key in stats and tuple(stats[key].shape) != shape:
            raise FlowSamplerError(f"the statistics' {key} has shape {tuple(stats[key].shape)}, "
                                   f"expected {shape}")
    return VelocityNet(p, n_frames, *sizes, n_stations)


def scenario_table(prepared_dir: Path, raw_dir: Path, index: pd.DataFrame) -> np.ndarray:
    """(n, 2) [magnitude, distance_km] of every index row: index.csv's columns, else joined on
    record_id from the raw corpus's records.csv."""
    if all(c in index.columns for c in SCENARIO_COLUMNS):
        table = index
    else:
        path = Path(raw_dir) / "records.csv"
        if not path.exists():
            raise FlowSamplerError(f"{path}: needed for the scenario columns "
                                   f"{SCENARIO_COLUMNS} (absent from {prepared_dir}/index.csv)")
        raw = pd.read_csv(path, dtype={"record_id": str, "station": str})
        missing = [c for c in SCENARIO_COLUMNS if c not in raw.columns]
        if missing:
            raise FlowSamplerError(f"{path}: no column(s) {missing}")
        table = index[["record_id"]].merge(raw[["record_id", *SCENARIO_COLUMNS]],
                                           on="record_id", how="left")
    values = table[list(SCENARIO_COLUMNS)].to_numpy(np.float64)
    bad = ~np.isfinite(values).all(axis=1) | (values <= 0).any(axis=1)
    if bad.any():
        raise FlowSamplerError(f"record {index['record_id'].iloc[int(np.argmax(bad))]}: missing "
                               f"or invalid {'/'.join(SCENARIO_COLUMNS)}")
    return values


def val_fit(index: pd.DataFrame, rows: dict[str, np.ndarray], stats: dict[str, torch.Tensor],
            fit_c: torch.Tensor, fit_s: torch.Tensor, scen: np.ndarray
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-model fit of the validation records: their station's training intercept (the
    training fit minus its scenario term, averaged) plus their own scenario term."""
    z_train = scenario_terms(standardise_scenario(scen[rows["pretrain"]], stats), stats)
    z_val = scenario_terms(standardise_scenario(scen[rows["val"]], stats), stats)
    codes_train = index["station"].to_numpy()[rows["pretrain"]]
    codes_val = index["station"].to_numpy()[rows["val"]]
    out = []
    for fitted, name in ((fit_c, "coarse"), (fit_s, "static")):
        icpt = fitted - z_train @ stats[f"{name}_slope"]
        by_station = {c: icpt[torch.from_numpy(codes_train == c)].mean(dim=0)
                      for c in set(codes_train)}
        mean_icpt = icpt.mean(dim=0)
        base = torch.stack([by_station.get(c, mean_icpt) for c in codes_val])
        out.append(base + z_val @ stats[f"{name}_slope"])
    return out[0], out[1]


def real_records_warning(raw_dir: Path, params: FlowSamplerParams) -> str | None:
    """A warning when raw_dir holds ingested records (its ingest.json) and params decode them
    with a setting of the simulated corpus's (not REAL_RECORDS); None otherwise."""
    if not (Path(raw_dir) / "ingest.json").exists():
        return None
    other = [f"{key} {getattr(params, key)!r}" for key, value in REAL_RECORDS.items()
             if getattr(params, key) != value]
    if not other:
        return None
    wanted = ", ".join(f"{key} {value!r}" for key, value in REAL_RECORDS.items())
    return (f"warning: {raw_dir} holds real records (ingest.json), decoded with the simulated "
            f"corpus's {', '.join(other)}; real records take {wanted} (README \"Run it on your "
            "own AFAD records\")")


def train_sampler(prepared_dir: str | Path, params: FlowSamplerParams, out_dir: str | Path,
                  raw_dir: str | Path = "data/raw", log: Callable[[str], None] = print
                  ) -> FlowSampler:
    """Pre-train on the non-target stations' train split (validation: their val split), then
    fine-tune on the target stations' train split (holdout never read). Writes
    out_dir/model.pt (the sampler checkpoint) and losses.tsv (phase, epoch, train_loss,
    val_loss; the epoch times go to the log only, so the same seed writes the same bytes)
    atomically; returns the sampler. Logs `real_records_warning` first when it has one."""
    from timesnet_gen.atomic import check_out, staged_dir
    from timesnet_gen.prepare import load_prepared, select
    from timesnet_gen.runtime import resolve_device

    prepared_dir, raw_dir = Path(prepared_dir), Path(raw_dir)
    check_out(out_dir, [prepared_dir, raw_dir])
    device = resolve_device(params.device, "generators.flow.device")
    warning = real_records_warning(raw_dir, params)
    if warning:
        log(warning)
    set_up_torch(params.num_threads)
    waveforms, index = load_prepared(prepared_dir)
    scen = scenario_table(prepared_dir, raw_dir, index)
    rows = {name: select(index, role, split) for name, role, split in (
        ("pretrain", "pretrain", "train"), ("val", "pretrain", "val"),
        ("finetune", "target", "train"))}
    for name in ("pretrain", "finetune"):
        if len(rows[name]) == 0:
            raise FlowSamplerError(f"{prepared_dir}: no records for the {name} phase")
    targets = index[index["role"] == "target"].sort_values("station_index")
    stations = list(dict.fromkeys(targets["station"]))
    t0 = time.perf_counter()
    feats = {name: encode(waveforms[r], params) for name, r in rows.items() if len(r)}
    train = np.concatenate([rows["pretrain"], rows["finetune"]])
    both = {k: np.concatenate([feats["pretrain"][k], feats["finetune"][k]])
            for k in feats["pretrain"]}
    stats = fit_stats(both, index["station"].to_numpy()[train], scen[train], stations,
                      params.mean_model, params.mean_quadratic, params.site_intercepts)
    fit_c, fit_s = stats.pop("_coarse_fit"), stats.pop("_static_fit")
    n_pre = len(rows["pretrain"])
    fits = {"pretrain": (fit_c[:n_pre], fit_s[:n_pre]), "finetune": (fit_c[n_pre:], fit_s[n_pre:])}
    if len(rows["val"]):  # validation stations are the pretrain ones: their fitted intercepts
        fits["val"] = val_fit(index, rows, stats, fit_c[:n_pre], fit_s[:n_pre], scen)
    station_of = {name: np.zeros(len(r), dtype=np.int64) for name, r in rows.items()}
    station_of["finetune"] = index["station"].iloc[rows["finetune"]].map(
        {s: i + 1 for i, s in enumerate(stations)}).to_numpy()
    data = {name: to_batchable(feats[name], station_of[name], scen[rows[name]], stats,
                               *fits[name]) for name in fits}
    stats |= fit_latent(torch.cat([data["pretrain"].coarse, data["finetune"].coarse]),
                        torch.cat([data["pretrain"].static, data["finetune"].static]), params)
    k = n_scalars(params)
    for b in data.values():
        b.coarse, b.static = to_latent(b.coarse, b.static, stats, k)
    data = {name: b.to(device) for name, b in data.items()}
    log(f"features of {sum(len(r) for r in rows.values())} records "
        f"({time.perf_counter() - t0:.1f} s); training on {device}")

    torch.manual_seed(params.seed)
    n_frames = data["pretrain"].coarse.shape[1]
    net = build_net(params, n_frames, stats, len(stations), calibrated=False).to(device)
    if params.period_selection == "fixed":
        log(f"fixed TimesBlock frequencies {net.fix_frequencies(data['pretrain'].coarse)} "
            f"(of {-(-n_frames // params.patch)} tokens)")
    history = fit(net, data["pretrain"], data["val"] if len(rows["val"]) else None,
                  params.pretrain_epochs, params.lr, params, "pretrain", log)
    with torch.no_grad():  # every target station starts from "any station"
        net.station.weight[1:] = net.station.weight[0]
    history += fit(net, data["finetune"], None, params.finetune_epochs, params.finetune_lr,
                   params, "finetune", log)
    net.cpu()  # the checkpoint and sampling are on the CPU
    fine = data["finetune"].to(torch.device("cpu"))  # the fits after training
    if params.remainder_calibrate:
        stats["frame_gain"] = calibrate_frames(net, fine, params)
    prior = None
    if params.record_prior:
        n_rec = stats["record_axes"].shape[1]
        own = ([data["pretrain"].to(torch.device("cpu"))]
               if params.prior_records == "all" else []) + [fine]
        prior = fit_record_prior(torch.cat([b.static[:, k:k + n_rec] for b in own]),
                                 torch.cat([b.station for b in own]),
                                 torch.cat([b.scenario for b in own]),
                                 torch.cat([prior_given(b.static, stats, params)
                                            for b in own]),
                                 params, len(stations))
    fine_rows = index.iloc[rows["finetune"]]
    scenarios = {s: scen[rows["finetune"]][(fine_rows["station"] == s).to_numpy()]
                 for s in stations}
    sampler = FlowSampler(params, net, stats, stations, scenarios, n_frames, waveforms.shape[-1],
                          prior)
    if params.scalar_calibrate:  # before the prior's gain: the prior is given the scalars
        stats["scalar_gain"] = calibrate(fine.static[:, :k], lambda part, generator:
                                         sampler.latent(fine.station[part], fine.scenario[part],
                                                        generator)[1][:, :k], params)
    if params.station_scatter:  # after the pooled gain, before the prior's: it is given the level
        stats["station_gain"] = calibrate(
            fine.static[:, :1], lambda part, generator: sampler.latent(
                fine.station[part], fine.scenario[part], generator)[1][:, :1], params,
            fine.station - 1, len(stations))
    if prior is not None and params.prior_calibrate:
        n_rec = stats["record_axes"].shape[1]
        stats["prior_gain"] = calibrate(fine.static[:, k:k + n_rec], lambda part, generator:
                                        sampler.latent(fine.station[part], fine.scenario[part],
                                                       generator)[1][:, k:k + n_rec], params)
    if params.decoder_bias:  # the training records of both phases
        stats["decoder_bias"] = fit_decoder_bias(both, params, waveforms.shape[-1])
    if params.remainder_smooth:
        stats["frame_smooth"] = smoothing(fine.coarse, draws(
            len(fine.coarse), lambda part, generator: sampler.latent(
                fine.station[part], fine.scenario[part], generator)[0], params))
    with staged_dir(out_dir, [prepared_dir, raw_dir]) as tmp:
        torch.save({"kind": KIND, "format": FORMAT, "state": sampler.state()}, tmp / "model.pt")
        losses = pd.DataFrame(history).drop(columns="seconds")
        losses.to_csv(tmp / "losses.tsv", sep="\t", index=False, float_format="%.6g")
    return sampler
