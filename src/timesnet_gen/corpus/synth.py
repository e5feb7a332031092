"""The physics-based default corpus: stochastic point-source records with known site response.

Bedrock motion follows the stochastic method of Boore (2003): an omega-squared (Brune) source
spectrum from Mw and stress drop, trilinear geometric spreading, anelastic attenuation
Q(f) = q0 f^eta, kappa high-frequency decay, duration = source (1/fc) + path (0.1 R) terms,
and windowed Gaussian noise (Saragoni-Hart envelope, random phase) shaped to that spectrum.
P arrives first (mostly on the vertical), S after the S-P time of the distance (mostly on the
horizontals), with pre-event noise before P.

Each station has a 1D soil column over bedrock (Kramer 1996, damped layer on elastic rock):
horizontals are filtered by the SH transfer function (resonance f0 = Vs / 4H and odd overtones),
the vertical by the P-wave transfer function of the same column (resonance Vp / 4H), so HVSR
peaks near f0 as on real sites. Per-record jitter of the column (lognormal on f0) and event-to-
event variability give the spread of f0 per record. The intended f0 of every station and the
realised f0 of every record are written to stations.csv and records.csv: the ground truth that
real AFAD data cannot give.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import SiteSpec, SynthParams, load_params
from timesnet_gen.corpus.format import write_corpus
from timesnet_gen.corpus.pin import verify
from timesnet_gen.evaluation.smoothing import smooth

# The calibration of every site (calibrate_site) goes through the evaluation's smoothing
# operator with these exact arguments: the paper's kernel (a Gaussian in ln f, b = 40) on the
# 1/180 Hz grid. data/raw therefore depends on evaluation/smoothing.py: an edit there that moves
# any calibrated f_SH by one ulp changes the corpus bytes, and tests/test_synth.py
# (byte-for-byte against data.dvc, and the kernel against its closed form) fails.
CALIBRATION_KERNEL = {"kind": "paper", "bandwidth": 40.0, "normalize": True, "tol": 1e-13}

BETA_KM_S = 3.5  # crustal shear-wave speed
ALPHA_KM_S = 6.0  # crustal P-wave speed
RHO_G_CM3 = 2.8
RADIATION = 0.55  # average S radiation pattern
FREE_SURFACE = 2.0
PARTITION = 1.0 / np.sqrt(2.0)  # energy split onto two horizontal components
VP_VS_SOIL = 5.0  # P/S speed ratio in the (saturated) soil column: vertical resonance at 5 f0


@dataclass(frozen=True)
class Site:
    """A soil column, reduced to what the transfer functions need."""

    f0: float  # Hz, SH fundamental resonance
    impedance: float  # rock/soil impedance contrast (>= 1)
    damping: float  # soil damping ratio
    second_f0: float = 0.0  # Hz, resonance of a shallower layer; 0 = none
    second_impedance: float = 1.0


# ---------------------------------------------------------------------------------------------
# bedrock spectrum (Boore 2003)


def corner_frequency(mw: float, stress_bar: float) -> float:
    """Brune corner frequency in Hz (Boore 2003, eq. 4; M0 in dyne-cm, stress in bar)."""
    m0 = 10.0 ** (1.5 * mw + 16.05)
    return 4.906e6 * BETA_KM_S * (stress_bar / m0) ** (1.0 / 3.0)


def source_spectrum(f: np.ndarray, mw: float, stress_bar: float) -> np.ndarray:
    """Omega-squared Fourier acceleration spectrum at 1 km, cm/s."""
    m0 = 10.0 ** (1.5 * mw + 16.05)
    fc = corner_frequency(mw, stress_bar)
    c = RADIATION * FREE_SURFACE * PARTITION / (4 * np.pi * RHO_G_CM3 * BETA_KM_S**3) * 1e-20
    return c * m0 * (2 * np.pi * f) ** 2 / (1.0 + (f / fc) ** 2)


def geometric_spreading(r_km: float) -> float:
    """Trilinear spreading: 1/R to 70 km, flat to 130 km, then R^-0.5 (Atkinson-Boore)."""
    if r_km <= 70.0:
        return 1.0 / r_km
    if r_km <= 130.0:
        return 1.0 / 70.0
    return (1.0 / 70.0) * np.sqrt(130.0 / r_km)


def path_and_site_decay(f: np.ndarray, r_km: float, q0: float, eta: float, kappa: float):
    q = q0 * np.maximum(f, 0.1) ** eta
    return geometric_spreading(r_km) * np.exp(-np.pi * f * r_km / (q * BETA_KM_S)) * np.exp(
        -np.pi * kappa * f
    )


def duration_s(mw: float, stress_bar: float, r_km: float) -> float:
    """Source duration 1/fc plus path duration 0.1 R (about the Boore 2003 regional range)."""
    return 1.0 / corner_frequency(mw, stress_bar) + 0.1 * r_km


# ---------------------------------------------------------------------------------------------
# site response (Kramer 1996, eq. 7.22: damped soil layer on elastic rock)


def layer_transfer(f: np.ndarray, f0: float, impedance: float, damping: float) -> np.ndarray:
    """|U_surface / U_rock-outcrop| of one damped layer with fundamental frequency f0."""
    kh = (np.pi / 2) * (f / f0) / (1 + 1j * damping)  # k* H, complex wavenumber
    alpha = (1 + 1j * damping) / impedance  # complex soil/rock impedance ratio
    return np.abs(1.0 / (np.cos(kh) + 1j * alpha * np.sin(kh)))


def sh_transfer(f: np.ndarray, site: Site) -> np.ndarray:
    h = layer_transfer(f, site.f0, site.impedance, site.damping)
    if site.second_f0 > 0:
        h = h * layer_transfer(f, site.second_f0, site.second_impedance, site.damping)
    return h


def p_transfer(f: np.ndarray, site: Site) -> np.ndarray:
    """Vertical: P resonance of the same column at VP_VS_SOIL * f0, weaker contrast."""
    contrast = 1.0 + (site.impedance - 1.0) / VP_VS_SOIL
    h = layer_transfer(f, VP_VS_SOIL * site.f0, contrast, site.damping)
    if site.second_f0 > 0:
        contrast2 = 1.0 + (site.second_impedance - 1.0) / VP_VS_SOIL
        h = h * layer_transfer(f, VP_VS_SOIL * site.second_f0, contrast2, site.damping)
    return h


def theoretical_hvsr(site: Site, weight: np.ndarray | None = None, n_fft: int = 18000,
                     fs: float = 100.0):
    """Noise-free HVSR of the column under the paper's protocol: |SH| and |P| transfer functions
    times a bedrock spectrum `weight` (on the rfft grid without DC; flat if None), each smoothed
    with CALIBRATION_KERNEL on the 1/180 Hz grid, then divided.
    Returns (freqs in 1-20 Hz, hvsr)."""
    f = np.fft.rfftfreq(n_fft, 1.0 / fs)[1:]
    centres = f[(f >= 1.0) & (f <= 20.0)]
    weight = np.ones_like(f) if weight is None else weight
    h, v = smooth(np.stack([sh_transfer(f, site), p_transfer(f, site)]) * weight, f, centres,
                  **CALIBRATION_KERNEL)
    return centres, h / v


def typical_bedrock_spectrum(p: SynthParams, n_fft: int = 18000, fs: float = 100.0):
    """Bedrock Fourier spectrum of the median event of the corpus (median Mw of the truncated
    Gutenberg-Richter law, median stress drop and kappa, geometric-mean distance)."""
    m_lo, m_hi = p.magnitude_range
    mw = m_lo - np.log10(1 - 0.5 * (1 - 10 ** (-(m_hi - m_lo))))
    r = float(np.sqrt(np.prod(p.distance_range_km)))
    f = np.fft.rfftfreq(n_fft, 1.0 / fs)[1:]
    return source_spectrum(f, mw, p.stress_drop_bar) * path_and_site_decay(
        f, r, p.q0, p.q_eta, p.kappa0_s)


def calibrate_site(spec: SiteSpec, weight: np.ndarray | None = None) -> tuple[Site, float]:
    """The column whose theoretical HVSR peaks at spec.f0 (the intended, protocol-visible f0).

    Damping, the P response, the steep bedrock spectrum of small events and the protocol's
    smoothing move the HVSR peak below the SH resonance Vs/4H, so the resonance is scaled until
    the peak (for the typical event spectrum `weight`) sits on spec.f0.
    Returns the site and its SH resonance frequency.
    """
    f_sh = spec.f0
    for _ in range(8):
        site = Site(f_sh, spec.impedance, spec.damping, spec.second_f0, spec.second_impedance)
        freqs, hv = theoretical_hvsr(site, weight)
        peak = freqs[np.argmax(hv)]
        if abs(peak / spec.f0 - 1) < 2e-3:
            break
        f_sh *= spec.f0 / peak
    return site, f_sh


# ---------------------------------------------------------------------------------------------
# time series


def envelope(t: np.ndarray, t_start: float, duration: float) -> np.ndarray:
    """Saragoni-Hart envelope (Boore 2003, eps 0.2, eta 0.05) over 2 x duration, peak 1."""
    eps, eta, tn = 0.2, 0.05, 2.0
    b = -eps * np.log(eta) / (1 + eps * (np.log(eps) - 1))
    c = b / eps
    a = (np.e / eps) ** b
    x = (t - t_start) / (tn * duration)
    w = np.zeros_like(t)
    on = x > 0
    w[on] = a * x[on] ** b * np.exp(-c * x[on])
    return w


def shaped_noise(rng: np.random.Generator, env: np.ndarray, amplitude: np.ndarray, dt: float):
    """Windowed Gaussian noise whose Fourier amplitude (cm/s) follows `amplitude` on average."""
    noise = rng.standard_normal(env.size) * env
    spec = np.fft.rfft(noise)
    rms = np.sqrt(np.mean(np.abs(spec) ** 2))
    if rms == 0:
        return np.zeros_like(env)
    return np.fft.irfft(spec / rms * amplitude / dt, n=env.size)


def simulate_record(
    rng: np.random.Generator, event: dict, site: Site, p: SynthParams
) -> tuple[np.ndarray, dict]:
    """One 3-component record (3, n) in cm/s^2 (E, N, U) and its arrival times."""
    n, dt = p.n_samples, 1.0 / p.sampling_rate
    t = np.arange(n) * dt
    f = np.fft.rfftfreq(n, dt)
    f[0] = 1e-3  # avoid 0 in power laws; the DC bin is zeroed below
    mw, r, stress = event["magnitude"], event["distance_km"], event["stress_drop_bar"]
    bedrock = source_spectrum(f, mw, stress) * path_and_site_decay(
        f, r, p.q0, p.q_eta, event["kappa_s"]
    )
    bedrock[0] = 0.0
    t_p = event["p_arrival_s"]
    t_s = t_p + r * (1.0 / BETA_KM_S - 1.0 / ALPHA_KM_S)
    dur = duration_s(mw, stress, r)
    env_s = envelope(t, t_s, dur)
    env_p = envelope(t, t_p, 0.5 * min(dur, t_s - t_p + 0.5))
    # P: weaker and richer in high frequencies, mostly vertical; S: mostly horizontal.
    p_spectrum = 0.3 * bedrock
    incidence = rng.uniform(0.1, 0.3)  # share of P amplitude on each horizontal
    sv_on_vertical = rng.uniform(0.6, 0.9)  # SV energy on the vertical: rock H/V near 1.3
    comps = []
    for share_s, share_p in ((1.0, incidence), (1.0, incidence), (sv_on_vertical, 1.0)):
        s_part = shaped_noise(rng, env_s, share_s * bedrock, dt)
        p_part = shaped_noise(rng, env_p, share_p * p_spectrum, dt)
        comps.append(s_part + p_part)
    bedrock_motion = np.stack(comps)
    # Pre-event (ambient) noise enters at bedrock too, so it carries the site signature.
    peak = np.abs(bedrock_motion).max()
    noise = rng.standard_normal((3, n)) * p.noise_level * peak
    spectra = np.fft.rfft(bedrock_motion + noise, axis=1)
    f_site = np.fft.rfftfreq(n, dt)
    spectra[:2] *= sh_transfer(f_site, site)
    spectra[2] *= p_transfer(f_site, site)
    acc = np.fft.irfft(spectra, n=n, axis=1)
    acc -= acc.mean(axis=1, keepdims=True)
    return acc, {"p_arrival_s": t_p, "s_arrival_s": t_s, "duration_model_s": dur}


# ---------------------------------------------------------------------------------------------
# populations of stations and events


def station_table(p: SynthParams, rng: np.random.Generator) -> pd.DataFrame:
    """Targets from params (PAPER.md table) plus a pre-training population over 1-20 Hz."""
    rows = []
    weight = typical_bedrock_spectrum(p)
    for code, spec in p.targets.items():
        rows.append({"station": code, "role": "target", **_site_row(spec, weight)})
    n = p.n_pretrain_stations
    f0s = np.round(np.exp(rng.uniform(np.log(1.2), np.log(18.0), n)), 2)
    for i in range(n):
        rock = i < p.n_rock_stations
        spec = SiteSpec(
            f0=float(f0s[i]),
            f0_sigma_ln=round(float(rng.uniform(0.03, 0.12)), 3),
            impedance=1.0 if rock else round(float(rng.uniform(1.8, 6.0)), 2),
            damping=round(float(rng.uniform(0.03, 0.08)), 3),
        )
        row = _site_row(spec, weight)
        if rock:  # no resonance: the site has no f0 and no soil column
            for key in ("f0_true_hz", "f0_sh_hz", "vs_soil_m_s", "thickness_m"):
                row[key] = np.nan
        rows.append({"station": f"S{i + 1:03d}", "role": "pretrain", **row})
    return pd.DataFrame(rows)


def _site_row(spec: SiteSpec, weight: np.ndarray) -> dict:
    """stations.csv columns: the intended f0 (HVSR peak under the paper's protocol, the ground
    truth of the evaluation), the SH resonance of the column and the column itself."""
    site, f_sh = calibrate_site(spec, weight)
    vs_soil = 200.0 if spec.f0 < 4 else 350.0  # m/s, illustrative; H follows from Vs / 4 f_sh
    return {
        "f0_true_hz": spec.f0,
        "f0_sh_hz": round(f_sh, 4),
        "f0_sigma_ln": spec.f0_sigma_ln,
        "impedance": spec.impedance,
        "damping": spec.damping,
        "second_f0_hz": spec.second_f0,
        "second_impedance": spec.second_impedance,
        "outlier_fraction": spec.outlier_fraction,
        "outlier_sigma_ln": spec.outlier_sigma_ln,
        "vs_soil_m_s": vs_soil,
        "thickness_m": round(vs_soil / (4.0 * f_sh), 2),
    }


def draw_event(rng: np.random.Generator, p: SynthParams) -> dict:
    """Gutenberg-Richter magnitude (b = 1, truncated), log-uniform distance."""
    m_lo, m_hi = p.magnitude_range
    u = rng.uniform()
    mw = m_lo - np.log10(1 - u * (1 - 10 ** (-(m_hi - m_lo))))
    r_lo, r_hi = p.distance_range_km
    return {
        "magnitude": float(mw),
        "distance_km": float(np.exp(rng.uniform(np.log(r_lo), np.log(r_hi)))),
        "stress_drop_bar": float(p.stress_drop_bar * np.exp(p.stress_drop_sigma_ln
                                                             * rng.standard_normal())),
        "kappa_s": float(p.kappa0_s * np.exp(0.2 * rng.standard_normal())),
        "p_arrival_s": float(rng.uniform(4.0, 10.0)),
    }


def record_site(rng: np.random.Generator, station: pd.Series) -> Site:
    """Jitter the column per record: lognormal f0, occasionally a wider (outlier) draw."""
    sigma = station["f0_sigma_ln"]
    if rng.uniform() < station["outlier_fraction"]:
        sigma = station["outlier_sigma_ln"]
    jitter = np.exp(sigma * rng.standard_normal())
    f_sh = station["f0_sh_hz"]
    if not np.isfinite(f_sh):  # rock: no resonance
        return Site(f0=10.0, impedance=1.0, damping=0.05)
    second = station["second_f0_hz"] * jitter if station["second_f0_hz"] > 0 else 0.0
    return Site(
        f0=float(f_sh * jitter),
        impedance=float(station["impedance"] * np.exp(0.1 * rng.standard_normal())),
        damping=float(station["damping"]),
        second_f0=float(second),
        second_impedance=float(station["second_impedance"]),
    )


def synthesize(p: SynthParams) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """The whole corpus: waveforms (n, 3, T) cm/s^2, records table, stations table."""
    rng = np.random.default_rng(p.seed)
    stations = station_table(p, rng)
    counts = {**p.target_records}
    for code in stations.loc[stations["role"] == "pretrain", "station"]:
        counts[code] = p.records_per_pretrain_station
    waveforms, rows = [], []
    for _, station in stations.iterrows():
        # one child generator per station: adding stations never changes the others' records
        st_rng = np.random.default_rng([p.seed, int(_station_key(station["station"]))])
        for i in range(counts[station["station"]]):
            event = draw_event(st_rng, p)
            site = record_site(st_rng, station)
            # the record's own protocol-visible f0: station truth times this record's jitter
            f0_record = station["f0_true_hz"] * site.f0 / station["f0_sh_hz"]
            acc, arrivals = simulate_record(st_rng, event, site, p)
            waveforms.append(acc)
            origin = pd.Timestamp("2010-01-01") + pd.Timedelta(
                seconds=int(st_rng.integers(0, 15 * 365 * 86400)))
            rows.append({
                "record_id": f"{station['station']}_{i:03d}",
                "station": station["station"],
                "event_id": f"EV{station['station']}{i:03d}",
                "starttime": origin.strftime("%Y-%m-%dT%H:%M:%S"),
                **{k: round(v, 4) for k, v in event.items()},
                "f0_record_hz": round(float(f0_record), 4),
                **{k: round(v, 3) for k, v in arrivals.items()},
                "pga_cm_s2": round(float(np.abs(acc).max()), 4),
            })
    records = pd.DataFrame(rows)
    records["counts_per_cm_s2"] = p.counts_per_cm_s2
    return np.stack(waveforms), records, stations


def _station_key(code: str) -> int:
    return int.from_bytes(code.encode(), "big") % (2**31)


def main(argv: list[str], verb: str = "synth") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw", type=Path)
    parser.add_argument("--verify", metavar="DVC_FILE", type=Path,
                        help="after writing, check the folder against the hash this .dvc pins")
    args = parser.parse_args(argv)
    params = load_params(args.params).data.synth
    start = time.perf_counter()
    waveforms, records, stations = synthesize(params)
    write_corpus(args.out, waveforms, records, stations, network="SY")
    print(f"synthesised {len(records)} records at {len(stations)} stations -> {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    if args.verify:
        try:
            verify(args.out, args.verify)
        except ValueError as exc:
            print(f"timesnet-gen synth: {exc}", file=sys.stderr)
            return 1
        print(f"{args.out} matches {args.verify}")
    return 0
