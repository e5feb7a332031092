"""Where a flow sampler's records differ from real ones in time (docs/flow_sampler.md: the
Husid times and the residual statistics behind the timing discussion).

    PYTHONPATH=src python benchmarks/diagnose_flow.py models/flow/model.pt [--seeds 3]

Per target station, generated at every training scenario of the station (station k sampled with
seed 100 j + k, j < --seeds) against the station's real training records:
  husid     median times (s) after the 5 % Arias time at which the three-component Husid curve
            reaches 1, 25, 50, 75, 90 and 95 % (mean over the stations), of the real records, of
            their round trip (encode, decode, no flow) and of the generated records
  P gap     (timings other than roll) median P-to-onset time (s, the timing feature) of the real
            records, of the flow's features before decoding, and of the generated records
            encoded again (what the decoded P wave holds)
  segments  in the flow's feature space (the mean model's standardised residuals; segments in
            the canvas's time: before the P knot, the two halves of the P slot (roll: of the
            5 s before the onset), the first 5 s of S and the coda to 20 s after the onset),
            real / generated:
              energy   median share of the record's band energy in the segment (%)
              cell sd  spread of the residuals over records, frames and channels
              rec sd   spread over records of a record's mean residual over the segment
              rough    mean |change| of the ln band magnitude from one frame to the next
  picks     the realism protocol's P and S picks (realism_phases.pick_p_s): the share of records
            with an S-P pick (%) and their median S-P time (s), mean over the stations, for the
            real records, their round trip, the round trip with the record components kept and
            the remainder dropped or replaced by white noise at its per-cell training rms (only
            with record_pcs), the generated spectrogram decoded with the real records' level,
            timing and fine spectrum, and the generated records: which part of the generated
            features loses the P wave (docs/flow_sampler.md "Where the records still differ:
            the P wave")
  P step    (timings other than roll) on the vertical's band power (dB, summed over the
            bands) in the canvas's time: the median over records of the P step (1.5 s after the
            P knot less 1 s before it), of the S peak (the strongest frame of the 15 s after the
            onset less their median) and the correlation over records of the levels before and
            after the P knot; of the real records' features, their round trip and the generated
            records (both encoded again) and the flow's features before decoding: whether the
            flow or the decoder weakens the P onset (docs/flow_sampler.md "The P knot")
  remainder what the record components leave of those residuals (`flow_sampler.split_records`;
            only with record_pcs), real / generated, pooled over the stations:
              lag-1 frames    correlation of a cell with the next frame's
              lag-1 channels  correlation of a channel with the next one in the same frame
              skewness        of the cells
              frame rms       range over the frames of the cells' rms
  amplitude mean over the records of (their round trip, or the generated record at the same
            scenario, all --seeds) less the real record, per period, pooled over the stations:
            ln PSA (5 % damping) and the smoothed ln FAS that the fine feature holds, both the
            geometric mean of the horizontals; and the fine feature the flow drew less the real
            one: whether the flow's features, or the decoder, or the disagreement of the drawn
            spectrogram with the drawn fine spectrum biases the generated amplitudes (README
            "The record prior's gain")
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timesnet_gen.config import load_params
from timesnet_gen.errors import one_line_errors
from timesnet_gen.evaluation.intensity import psa
from timesnet_gen.evaluation.realism_phases import horizontal_envelope, pick_p_s
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import latent as lat, representation as rep
from timesnet_gen.prepare import load_prepared
from timesnet_gen.sample import load_sampler

HUSID_FRACTIONS = (0.01, 0.25, 0.5, 0.75, 0.9, 0.95)
AMPLITUDE_PERIODS = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0)  # s


def period_centres(p) -> list[int]:
    """Index of the fine centre nearest each of AMPLITUDE_PERIODS (in ln f)."""
    return [int(np.argmin(np.abs(np.log(rep.fine_centers(p) * t)))) for t in AMPLITUDE_PERIODS]


def amplitude_bias(x: np.ndarray, real: np.ndarray, p) -> dict[str, np.ndarray]:
    """Mean over records of x (n, 3, T) less real (n, 3, T), record by record, of the ln PSA and
    the smoothed ln FAS (`rep.fine_spectrum`, at the fine centre nearest each period) at
    AMPLITUDE_PERIODS, each the mean of the two horizontals' ln values."""
    centres = period_centres(p)

    def ln_measures(y: np.ndarray) -> dict[str, np.ndarray]:
        return {"ln PSA": np.log(psa(y, rep.SAMPLING_RATE, AMPLITUDE_PERIODS)[:, :2]).mean(1),
                "ln FAS": rep.fine_spectrum(y, p)[:, :2, centres].mean(1)}

    mx, mr = ln_measures(x), ln_measures(real)
    return {name: (mx[name] - mr[name]).mean(0) for name in mx}


def husid_times(x: np.ndarray) -> np.ndarray:
    """Median time (s) after the 5 % Arias time of each fraction -> (len(HUSID_FRACTIONS),)."""
    t5 = rep.onset_time(x, 0.05)
    return np.array([np.median(rep.onset_time(x, f) - t5) for f in HUSID_FRACTIONS])


def segment_stats(res: np.ndarray, coarse: np.ndarray, frames: dict[str, slice]) -> dict:
    energy = np.exp(2.0 * coarse).sum(axis=-1)
    energy /= energy.sum(axis=1, keepdims=True)
    out = {}
    for name, sl in frames.items():
        out[name] = {"energy": 100 * float(np.median(energy[:, sl].sum(axis=1))),
                     "cell sd": float(res[:, sl].std()),
                     "rec sd": float(res[:, sl].mean(axis=(1, 2)).std()),
                     "rough": float(np.abs(np.diff(coarse[:, sl], axis=1)).mean())}
    return out


def canvas_frame(seconds: float, p) -> int:
    """The frame of the aligned canvas at `seconds` (p: FlowSamplerParams; 100 Hz records)."""
    return int(round(seconds * 100.0 / p.hop))


def vertical_steps(coarse: np.ndarray, p) -> dict[str, float]:
    """P step and S peak (dB, medians over records) and the correlation of the levels before
    and after the P knot, from the vertical's band power of features (n, frames, 3 B) in the
    canvas's time (p: FlowSamplerParams, a timing other than roll)."""
    n, t, cb = coarse.shape
    db = 10 * np.log10(np.exp(2.0 * coarse.reshape(n, t, 3, cb // 3)[:, :, 2].astype(
        np.float64)).sum(axis=-1))
    frame = lambda s: canvas_frame(s, p)  # noqa: E731
    before, after = db[:, frame(p.p_align_s - 1.0)], db[:, frame(p.p_align_s + 1.5)]
    s_part = db[:, frame(p.align_s):frame(p.align_s + 15.0)]
    return {"P step dB": float(np.median(after - before)),
            "S peak dB": float(np.median(s_part.max(axis=1) - np.median(s_part, axis=1))),
            "corr before/after P": float(np.corrcoef(before, after)[0, 1])}


def realism_picks(x: np.ndarray, rp) -> tuple[np.ndarray, np.ndarray]:
    """P and S picks (s, NaN where not found) of records (n, 3, T) at 100 Hz, as the realism
    metrics pick them (rp: RealismParams)."""
    env_times, env = horizontal_envelope(x, 100.0, rp.envelope_window_s, rp.envelope_step_s)
    return pick_p_s(x, 100.0, env_times, env, rp.s_min_delay_s, rp.pick_snr, rp.pick_window_s)


def sp_summary(sp: np.ndarray) -> dict[str, float]:
    """Share (%) of S-P times (s, NaN where not picked) that were picked, and their median."""
    return {"S-P found %": 100.0 * float(np.isfinite(sp).mean()),
            "S-P median s": float(np.nanmedian(sp)) if np.isfinite(sp).any() else np.nan}


def pick_stats(x: np.ndarray, rp) -> dict[str, float]:
    """Share of records (%) with an S-P pick and their median S-P time (s), as the realism
    metrics pick them (rp: RealismParams)."""
    p, s = realism_picks(x, rp)
    return sp_summary(s - p)


def remainder_stats(res: np.ndarray, stats: dict[str, torch.Tensor]) -> dict:
    """Statistics of what the record components leave of residuals (n, frames, channels)."""
    r = lat.split_records(torch.as_tensor(res), stats)[0].double().numpy()

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))

    rms = np.sqrt((r ** 2).mean(axis=(0, 2)))
    return {"lag-1 frames": corr(r[:, 1:], r[:, :-1]),
            "lag-1 channels": corr(r[..., 1:], r[..., :-1]),
            "skewness": float(((r - r.mean()) ** 3).mean() / r.std() ** 3),
            "frame rms min": float(rms.min()), "frame rms max": float(rms.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds for the Husid times")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--params", default="params.yaml", help="for the realism pick settings")
    args = ap.parse_args(argv)
    rp = load_params(args.params).evaluate.realism
    sampler = load_sampler(args.checkpoint)
    p = sampler.params
    waves, index = load_prepared(args.data)
    train = index[(index["role"] == "target") & (index["split"] == "train")]
    frame = lambda s: canvas_frame(s, p)  # noqa: E731
    p_knot = p.p_align_s if p.timing != "roll" else p.align_s - 5.0
    half = (p_knot + p.align_s) / 2
    frames = {"pre-P": slice(0, frame(p_knot)), "P slot 1st half": slice(frame(p_knot), frame(half)),
              "P slot 2nd half": slice(frame(half), frame(p.align_s)),
              "S 0-5 s": slice(frame(p.align_s), frame(p.align_s + 5)),
              "coda 5-20 s": slice(frame(p.align_s + 5), frame(p.align_s + 20))}
    husid_real, husid_trip, husid_gen, rows, gaps, picks, steps = [], [], [], [], [], [], []
    k_s = fs.n_scalars(p)
    pooled: dict[str, list[np.ndarray]] = {"real": [], "generated": []}
    amplitude: dict[str, list[np.ndarray]] = {}
    for k, station in enumerate(sampler.stations):
        real = waves[train.index[train["station"] == station].to_numpy()]
        scen = sampler.scenarios(station)
        gen = np.concatenate([sampler.sample(station, scen[:, 0], scen[:, 1], 100 * j + k)
                              for j in range(args.seeds)])
        husid_real.append(husid_times(real))
        husid_gen.append(husid_times(gen))
        feats = rep.encode(real, p)
        static_r = torch.from_numpy(lat.static_of(feats))

        def decode_real_static(coarse: np.ndarray) -> np.ndarray:  # real level, timing, fine
            return sampler.decode(torch.as_tensor(coarse), static_r,
                                  torch.Generator().manual_seed(k))

        trip = decode_real_static(feats["coarse"])
        husid_trip.append(husid_times(trip))
        z = lat.standardise_scenario(scen, sampler.stats)
        with torch.no_grad():
            res_g, coarse_g, static_g = (t.numpy() for t in sampler.features(
                sampler.station_index(station), z, torch.Generator().manual_seed(70 + k)))
        if p.timing != "roll":  # timing feature 1: ln(onset - P knot)
            for name, c in (("real", feats["coarse"]),
                            ("round trip", rep.encode(trip, p)["coarse"]),
                            ("flow features", coarse_g),
                            ("generated", rep.encode(gen[:len(scen)], p)["coarse"])):
                steps.append({"station": station, "records": name, **vertical_steps(c, p)})
            gaps.append({"station": station, "real": np.median(np.exp(feats["onset"][:, 1])),
                         "flow features": np.median(np.exp(static_g[:, 2])),
                         "generated, encoded": np.median(np.exp(
                             rep.encode(gen[:len(scen)], p)["onset"][:, 1]))})
        st = torch.full((len(z),), sampler.station_index(station), dtype=torch.long)
        mean_c = lat.mean_prediction(sampler.stats, st, z)[0].numpy()
        std = sampler.stats["coarse_std"].numpy()
        res_r = ((feats["coarse"].reshape(len(real), -1) - mean_c) / std).reshape(res_g.shape)
        pooled["real"].append(res_r)
        pooled["generated"].append(res_g)
        decoded = {"real": real, "round trip": trip}
        if "record_axes" in sampler.stats:
            rem = lat.split_records(torch.as_tensor(res_r), sampler.stats)[0].numpy()
            rms = np.sqrt((rem ** 2).mean(axis=0))
            white = np.random.default_rng(k).standard_normal(rem.shape) * rms
            for name, r in (("record components, no remainder", res_r - rem),
                            ("record components, white remainder", res_r - rem + white)):
                decoded[name] = decode_real_static(
                    (r.reshape(len(real), -1) * std + mean_c).reshape(r.shape).astype(np.float32))
        decoded["generated spectrogram, real rest"] = decode_real_static(coarse_g)
        tiled = np.concatenate([real] * args.seeds)  # gen: the scenarios' rows, seed by seed
        for name, (x, ref) in (("round trip", (trip, real)), ("generated", (gen, tiled))):
            for measure, bias in amplitude_bias(x, ref, p).items():
                amplitude.setdefault(f"{measure}, {name}", []).append(bias * len(real))
        fine_g = static_g[:, k_s:].reshape(len(real), 3, -1)[:, :2].mean(1)
        fine_r = feats["fine"].reshape(len(real), 3, -1)[:, :2].mean(1)
        amplitude.setdefault("fine feature, flow", []).append(
            (fine_g - fine_r)[:, period_centres(p)].sum(0))
        decoded["generated"] = gen[:len(scen)]
        for name, x in decoded.items():
            picks.append({"station": station, "records": name, **pick_stats(x, rp)})
        for who, st in (("real", segment_stats(res_r, feats["coarse"], frames)),
                        ("generated", segment_stats(res_g, coarse_g, frames))):
            for seg, values in st.items():
                rows.append({"station": station, "source": who, "segment": seg, **values})
    print(f"{args.checkpoint} (timing {p.timing}): Husid times after the 5 % time (s), "
          f"fractions {HUSID_FRACTIONS}")
    print("  real       ", np.round(np.mean(husid_real, axis=0), 2))
    print("  round trip ", np.round(np.mean(husid_trip, axis=0), 2))
    print("  generated  ", np.round(np.mean(husid_gen, axis=0), 2))
    if gaps:
        print("\nmedian P-to-onset time (s) per station:")
        print(pd.DataFrame(gaps).to_string(index=False, float_format="%.2f"))
    if steps:
        print("\nvertical P step and S peak (dB), mean over the stations:")
        print(pd.DataFrame(steps).groupby("records", sort=False).mean(numeric_only=True)
              .to_string(float_format="%.2f"))
    table = pd.DataFrame(rows)
    summary = table.groupby(["segment", "source"], sort=False)[
        ["energy", "cell sd", "rec sd", "rough"]].agg(["min", "max"])
    print("\nper segment, range over the stations (real / generated rows):")
    print(summary.to_string(float_format="%.2f"))
    print("\nS-P picks (realism protocol), mean over the stations:")
    print(pd.DataFrame(picks).groupby("records", sort=False)[["S-P found %", "S-P median s"]]
          .mean().to_string(float_format="%.2f"))
    if "record_axes" in sampler.stats:
        rem = pd.DataFrame({who: remainder_stats(np.concatenate(res).astype(np.float32),
                                                 sampler.stats) for who, res in pooled.items()})
        print("\nwhat the record components leave (pooled over the stations):")
        print(rem.to_string(float_format="%.2f"))
    n_train = len(train[train["station"].isin(sampler.stations)])
    print("\nmean ln difference to the real record at the same scenario, pooled over the "
          "stations (periods in s):")
    print(pd.DataFrame({name: np.sum(v, axis=0) / n_train for name, v in amplitude.items()},
                       index=AMPLITUDE_PERIODS).T.to_string(float_format="%.3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "diagnose_flow"))
