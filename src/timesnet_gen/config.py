"""Typed schema of params.yaml, validated before any work starts.

Every section is a dataclass; `load_params` walks the YAML mapping against the schema and stops
with a message naming the offending key and the expected type (unknown keys included).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from timesnet_gen.errors import UserError

TARGET_STATIONS = ["0205", "1716", "2020", "3130", "4628"]


class ParamsError(UserError):
    """params.yaml does not match the schema."""


def _require(checks: list[tuple[bool, str]]) -> None:
    """Raise ParamsError with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ParamsError(message)


# --------------------------------------------------------------------------------------------
# data: corpus synthesis (data/raw, pinned by data.dvc) and the prepare stage (splits)


@dataclass
class SiteSpec:
    """Intended site response of one synthetic target station (see corpus/synth.py)."""

    f0: float  # Hz, fundamental SH resonance of the soil column
    f0_sigma_ln: float  # record-to-record spread of f0 (lognormal sigma)
    impedance: float  # bedrock/soil impedance contrast (controls the HVSR peak height)
    damping: float  # soil damping ratio
    second_f0: float = 0.0  # Hz, a second (shallower) resonance; 0 = none
    second_impedance: float = 1.0
    outlier_fraction: float = 0.0  # fraction of records drawn with the wider spread below
    outlier_sigma_ln: float = 0.0


def _default_targets() -> dict[str, SiteSpec]:
    # Medians, spreads and peak heights follow the table in PAPER.md (authors' result files).
    return {
        "0205": SiteSpec(2.6, 0.12, 2.8, 0.07, second_f0=6.5, second_impedance=2.6,
                         outlier_fraction=0.2, outlier_sigma_ln=0.5),
        "1716": SiteSpec(6.1, 0.05, 6.0, 0.05, outlier_fraction=0.25, outlier_sigma_ln=0.35),
        "2020": SiteSpec(5.17, 0.07, 3.2, 0.06),
        "3130": SiteSpec(11.74, 0.04, 7.0, 0.04),
        "4628": SiteSpec(1.83, 0.03, 12.0, 0.03),
    }


@dataclass
class SynthParams:
    """The physics-based default corpus (`timesnet-gen synth`, `make corpus`)."""

    seed: int = 20251204
    sampling_rate: float = 100.0  # Hz
    n_samples: int = 6000  # 60 s
    counts_per_cm_s2: float = 1.0e5  # int32 MiniSEED calibration: counts = acc * this
    target_records: dict[str, int] = field(
        default_factory=lambda: {"0205": 71, "1716": 80, "2020": 46, "3130": 72, "4628": 56}
    )
    targets: dict[str, SiteSpec] = field(default_factory=_default_targets)
    n_pretrain_stations: int = 32
    records_per_pretrain_station: int = 14
    n_rock_stations: int = 3  # pretrain stations without a clear site peak
    magnitude_range: list[float] = field(default_factory=lambda: [3.5, 7.0])
    distance_range_km: list[float] = field(default_factory=lambda: [10.0, 200.0])
    stress_drop_bar: float = 60.0
    stress_drop_sigma_ln: float = 0.5
    kappa0_s: float = 0.03
    q0: float = 180.0  # Q(f) = q0 * f**q_eta
    q_eta: float = 0.45
    noise_level: float = 0.02  # ambient noise rms, fraction of the record peak


@dataclass
class DataParams:
    synth: SynthParams = field(default_factory=SynthParams)
    target_stations: list[str] = field(default_factory=lambda: list(TARGET_STATIONS))
    holdout_fraction: float = 0.2  # of each target station, never seen by training/generation
    val_fraction: float = 0.2  # pre-training validation split
    split_seed: int = 0
    max_records_per_station: int = 0  # 0 = all; the tiny profile slices the corpus
    max_pretrain_stations: int = 0  # 0 = all

    def __post_init__(self) -> None:
        _require([(self.split_seed >= 0, f"split_seed must be >= 0, got {self.split_seed}"),
                  (self.max_records_per_station >= 0, "max_records_per_station must be >= 0 "
                   f"(0 = all), got {self.max_records_per_station}"),
                  (self.max_pretrain_stations >= 0, "max_pretrain_stations must be >= 0 "
                   f"(0 = all), got {self.max_pretrain_stations}")])


# --------------------------------------------------------------------------------------------
# model / train / generate: TimesNet-Gen


@dataclass
class ModelParams:
    """TimesNet-Gen (models/timesnet.py). CPU profile; paper: 128 / 256 / 6 (README)."""

    d_model: int = 32  # latent channels
    d_ff: int = 64  # Inception hidden channels
    num_kernels: int = 3  # Inception kernels 1, 3, ..., 2n-1
    e_layers: int = 2  # TimesBlocks
    top_k: int = 2  # FFT periods per TimesBlock
    dropout: float = 0.1
    seq_len: int = 6000  # samples per record (must match the prepared data)
    conditioning: Literal["concat", "film", "none"] = "concat"  # station-ID conditioning
    period_selection: Literal["batch", "sample"] = "batch"  # batch = paper; sample = per record
    fused_inception: bool = True  # one conv with the averaged kernel (same function, faster)

    def __post_init__(self) -> None:
        _require([(self.e_layers >= 1, "model.e_layers must be >= 1"),
                  (0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)"),
                  (self.seq_len >= 2 * self.top_k + 2, "model.seq_len too short for model.top_k")])


@dataclass
class PhaseParams:
    """One training phase: AdamW, per-step cosine schedule, grad-norm clip."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        # keys relative to the section: _build prefixes the section (train.pretrain.epochs)
        _require([(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
                  (self.lr > 0, f"lr must be > 0, got {self.lr}"),
                  (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
                  (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")])


@dataclass
class TrainParams:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    num_threads: int = 0  # torch CPU threads; 0 = torch default
    pretrain: PhaseParams = field(default_factory=lambda: PhaseParams(epochs=20, lr=3e-4))
    finetune: PhaseParams = field(default_factory=lambda: PhaseParams(epochs=10, lr=1e-4))
    latent_noise_scale: float = 1.0  # phase-1 latent noise std = scale * std vector (0 = off)

    def __post_init__(self) -> None:
        _require([(self.latent_noise_scale >= 0, "train.latent_noise_scale must be >= 0"),
                  (self.num_threads >= 0, "train.num_threads must be >= 0"),
                  (self.seed >= 0, f"train.seed must be >= 0, got {self.seed}")])


@dataclass
class GenerateParams:
    """The paper's sampler: average the latents of k training records of a station."""

    n_per_station: int = 50
    k: int = 5  # real training records mixed per sample
    weights: Literal["equal", "dirichlet"] = "equal"  # dirichlet = the paper's v3 variant
    dirichlet_alpha: float = 1.0
    seed: int = 0
    batch_size: int = 16  # records per encode/decode batch
    # record-free samplers: records at each held-out record's scenario (scenario fidelity)
    n_per_scenario: int = 20

    def __post_init__(self) -> None:
        _require([(self.n_per_station >= 1, "generate.n_per_station must be >= 1"),
                  (self.dirichlet_alpha > 0, "generate.dirichlet_alpha must be > 0"),
                  (self.batch_size >= 1, "generate.batch_size must be >= 1"),
                  (self.n_per_scenario >= 1, "generate.n_per_scenario must be >= 1")])


# --------------------------------------------------------------------------------------------
# vae: the spectrogram conditional-VAE baseline


@dataclass
class VaeParams:
    """Spectrogram conditional-VAE baseline (models/cvae.py, vae.py); CPU default profile."""

    n_fft: int = 256  # STFT window, samples (2.56 s at 100 Hz), Hann
    hop: int = 32  # STFT hop, samples (0.32 s)
    log_eps: float = 1.0e-4  # log(|X| + eps) floor, in units of the record's peak
    latent_dim: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  # conv widths
    condition_encoder: bool = True  # also feed the station one-hot to the encoder
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # KL weight; the loss divides the KL by the spectrogram size (3 x 128 x 188), so beta = 1 is
    # the plain ELBO and ~1e3 is needed before the decoder relies on the station one-hot
    beta: float = 1000.0
    beta_warmup_epochs: int = 10  # beta ramps linearly from beta/warmup to beta
    free_bits: float = 0.05  # nats per latent dimension
    griffin_lim_iters: int = 64
    griffin_lim_momentum: float = 0.99  # fast Griffin-Lim; 0 = classic
    n_per_station: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.n_fft >= 8 and self.n_fft % 2 == 0, "vae.n_fft must be an even number >= 8"),
            (0 < self.hop <= self.n_fft // 2, "vae.hop must be in 1..n_fft/2 (overlap for istft)"),
            (self.log_eps > 0, "vae.log_eps must be > 0"),
            (self.latent_dim >= 1, "vae.latent_dim must be >= 1"),
            (len(self.channels) >= 1 and min(self.channels, default=0) >= 1,
             "vae.channels must be a non-empty list of positive widths"),
            (self.epochs >= 1 and self.batch_size >= 1,
             "vae.epochs and vae.batch_size must be >= 1"),
            (self.lr > 0 and self.weight_decay >= 0 and self.grad_clip >= 0,
             "vae.lr must be > 0, vae.weight_decay and vae.grad_clip >= 0"),
            (self.beta >= 0 and self.beta_warmup_epochs >= 0 and self.free_bits >= 0,
             "vae.beta, vae.beta_warmup_epochs and vae.free_bits must be >= 0"),
            (self.griffin_lim_iters >= 0 and 0 <= self.griffin_lim_momentum < 1,
             "vae.griffin_lim_iters must be >= 0 and vae.griffin_lim_momentum in [0, 1)"),
            (self.n_per_station >= 1, "vae.n_per_station must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamsError(message)


# --------------------------------------------------------------------------------------------
# evaluate: the paper's protocol (PAPER.md "Evaluation protocol (exact)")


# RotD50 PSA periods of the realism metrics (s): 0.05-5 s
REALISM_PERIODS_S = [0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                     4.0, 5.0]


@dataclass
class RealismParams:
    """Settings of the realism metrics (flat, plain types: the `evaluate.realism` section)."""

    periods: list[float] = field(default_factory=lambda: list(REALISM_PERIODS_S))  # s
    damping: float = 0.05
    rotd_samples_per_cycle: float = 20.0  # response samples per oscillator period (>=)
    rotd_pad_s: float = 60.0  # zeros after the record before the FFT (no wrap-around)
    envelope_window_s: float = 1.0  # moving-RMS window of the horizontal envelope
    envelope_step_s: float = 0.25
    envelope_floor: float = 1e-3  # envelope / its peak floored here before ln
    burst_on: float = 0.5  # burst starts above this fraction of the envelope's peak
    burst_off: float = 0.25  # ... and ends below this one
    burst_min_gap_s: float = 2.0  # bursts closer than this are one
    pick_snr: float = 2.0  # RMS after / before a pick for it to count as found
    pick_window_s: float = 1.0
    s_min_delay_s: float = 0.5  # S is searched from P + this
    spec_window_s: float = 5.0  # classifier features: log power per time window ...
    spec_n_bands: int = 12  # ... and per log-spaced band in spec_fmin-spec_fmax Hz
    spec_fmin: float = 0.3
    spec_fmax: float = 25.0
    classifier_folds: int = 5
    classifier_l2: float = 1.0  # ridge penalty of the logistic regression (standardised x)
    n_draws: int = 20  # perfect-generator draws of the band
    band_lo: float = 5.0  # percentiles of the band
    band_hi: float = 95.0
    perfect_n_records: int = 50  # records per station of the perfect generator
    min_records: int = 3  # fewer valid records at a station: reported, not scored
    vs30_default_m_s: float = 760.0  # site without Vs30 and without a soil column
    gmm_mechanism: str = "SS"  # fault mechanism given to the GMMs (unknown: strike-slip)
    seed: int = 0
    chunk: int = 64  # records per batch


@dataclass
class EvaluateParams:
    fmin: float = 1.0  # Hz
    fmax: float = 20.0  # Hz
    smoothing: Literal["paper", "konno-ohmachi"] = "paper"
    bandwidth: float = 40.0  # b
    highpass_hz: float = 0.05
    highpass_order: int = 2
    horizontal: Literal["geometric", "quadratic", "arithmetic", "total"] = "geometric"
    taper: float = 0.0  # Tukey alpha; 0 = none (paper)
    n_median_points: int = 400
    hist_bins: int = 20
    js_eps: float = 1e-10
    psa_periods: list[float] = field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0]
    )
    damping: float = 0.05
    nfft: int = 0  # FFT length; 0 = the padded length (paper: 6000 + 2 * 6000 = 18000)
    highpass_method: Literal["filtfilt", "spectral"] = "spectral"  # same |H|^2; see spectra.py
    v_floor: float = 1e-12  # smoothed V floored here before H / V
    grid: Literal["fft", "log"] = "fft"  # HVSR centres: FFT bins in band (paper) or log-spaced
    n_grid_points: int = 200  # centres of the log grid
    smoothing_tol: float = 1e-13  # kernel truncation / low-rank tolerance (relative)
    min_cycles: float = 10.0  # a record must last min_cycles / fmin seconds
    nearest_method: Literal["lognormal", "histogram"] = "lognormal"
    sigma_ln_floor: float = 0.01  # lower bound of a station's lognormal f0 spread
    duration_range: list[float] = field(default_factory=lambda: [0.05, 0.95])  # D5-95
    fas_fmin: float = 0.1  # Hz, Konno-Ohmachi smoothed FAS centres (log-spaced)
    fas_fmax: float = 25.0
    fas_n_points: int = 100
    realism: RealismParams = field(default_factory=RealismParams)  # evaluation/realism*.py


@dataclass
class Params:
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    vae: VaeParams = field(default_factory=VaeParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    # sections of generators added through the registry: generators.<name> is validated
    # against that generator's own params dataclass by `section` when its stage starts
    generators: dict[str, Any] = field(default_factory=dict)


def section(params: Params, name: str, cls: type) -> Any:
    """params.generators.<name> as the generator's dataclass `cls` (defaults for absent keys);
    an unknown key or a wrong type is a ParamsError naming generators.<name>.<key>."""
    raw = params.generators.get(name, {})
    if not isinstance(raw, dict):
        raise ParamsError(f"generators.{name}: expected a mapping, got {type(raw).__name__}")
    return _build(cls, raw, f"generators.{name}")


# --------------------------------------------------------------------------------------------
# validation


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float only)."""
    origin = typing.get_origin(tp)
    if tp is Any:  # checked later by its owner (see `section`)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        ktp, vtp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, ktp):
                raise ParamsError(
                    f"{key}: key {k!r} must be {ktp.__name__} (quote station codes: '0205')"
                )
            out[k] = _convert(v, vtp, f"{key}.{k}")
        return out
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ParamsError:
                continue
        raise ParamsError(f"{key}: expected {tp}, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{key}: expected a finite float, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ParamsError(
                f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}"
                + (" (quote station codes: '0205')" if tp is str else "")
            )
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(
            f"unknown key {where}{unknown[0]} (known keys{' of ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))})"
        )
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except ParamsError as exc:  # a value check: name the full key
        message = str(exc)
        if prefix and not message.startswith(f"{prefix.split('.')[0]}."):
            message = f"{prefix}.{message}"
        raise ParamsError(message) from None


def _check_values(p: Params) -> None:
    """Value checks the types cannot express."""
    checks = [
        (0.0 <= p.data.holdout_fraction < 1.0, "data.holdout_fraction must be in [0, 1)"),
        (0.0 < p.data.val_fraction < 1.0, "data.val_fraction must be in (0, 1)"),
        (len(set(p.data.target_stations)) == len(p.data.target_stations),
         "data.target_stations has duplicates"),
        (p.model.d_model > 0 and p.model.d_ff > 0, "model.d_model and model.d_ff must be > 0"),
        (p.model.num_kernels >= 1, "model.num_kernels must be >= 1"),
        (p.model.top_k >= 1, "model.top_k must be >= 1"),
        (p.generate.k >= 1, "generate.k must be >= 1"),
        (p.generate.seed >= 0, f"generate.seed must be >= 0, got {p.generate.seed}"),
        (p.vae.seed >= 0, f"vae.seed must be >= 0, got {p.vae.seed}"),
        (p.data.synth.seed >= 0, f"data.synth.seed must be >= 0, got {p.data.synth.seed}"),
        (p.evaluate.fmin < p.evaluate.fmax, "evaluate.fmin must be below evaluate.fmax"),
        (p.train.device == "auto" or p.train.device == "cpu" or p.train.device.startswith("cuda"),
         "train.device must be auto, cpu, cuda or cuda:N"),
    ]
    for ok, message in checks:
        if not ok:
            raise ParamsError(message)


def params_from_dict(raw: dict | None) -> Params:
    params = _build(Params, raw or {}, "")
    _check_values(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ParamsError naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return params_from_dict(raw)


def to_dict(params: Any) -> dict:
    return dataclasses.asdict(params)
