"""The flow sampler's parameters (`generators.flow` in params.yaml; each field's comment says
what it does and the section of docs/flow_sampler.md that measured it), the values its
options take and the sizes they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from timesnet_gen.config import Params, ParamsError, section
from timesnet_gen.errors import UserError
from timesnet_gen.models.timesnet import PERIOD_SELECTIONS


KIND = "timesnet-flow"
FORMAT = 1
SCENARIO_COLUMNS = ("magnitude", "distance_km")
TIMINGS = ("roll", "warp", "stretch", "pslot")
P_KNOTS = ("arias", "aic", "picker")
LONG_GAPS = ("clip", "shift", "squeeze")
CANVASES = ("wrap", "hold")
RECORD_SCALES = ("peak", "spectrum")
EXTRAPOLATIONS = ("linear", "gmm")
PRIOR_RECORDS = ("target", "all")
SOLVERS = ("euler", "heun")
TIME_SAMPLING = ("uniform", "logit-normal")
# the options that take one of several values, and those values
CHOICES = {"period_selection": PERIOD_SELECTIONS, "prior_records": PRIOR_RECORDS,
           "p_knot": P_KNOTS, "long_gap": LONG_GAPS, "extrapolate": EXTRAPOLATIONS,
           "record_scale": RECORD_SCALES, "canvas": CANVASES, "timing": TIMINGS}
# the decoder's settings for real records ("Real records: the canvas and the long-period steps")
REAL_RECORDS = {"canvas": "hold", "long_gap": "shift", "long_period_hz": 0.0,
                "random_phase_hz": 0.0, "quiet_before_p": True}
CALIBRATION_SEED = 7919  # added to p.seed for the draws the fits after training read (`draws`)


class FlowSamplerError(UserError):
    """Bad input to the flow sampler (scenario, station, data, state)."""


@dataclass
class FlowSamplerParams:
    """Every choice of the flow sampler. Defaults: the CPU profile (2 cores, minutes).

    Paper-scale (GPU) profile: params.yaml, the comment above generators.flow.
    """

    # representation
    n_fft: int = 256  # STFT window, samples (2.56 s; bins 0.39 Hz apart)
    hop: int = 64  # frame step, samples (0.64 s): 94 frames of a 60 s record
    n_bands: int = 24  # log-spaced coarse bands before merging empty ones
    band_fmin: float = 0.3  # Hz
    band_fmax: float = 45.0  # Hz
    n_fine: int = 196  # log-spaced frequencies of the fine spectrum (2.6 % apart)
    fine_fmin: float = 0.2  # Hz
    fine_fmax: float = 30.0  # Hz
    fine_bandwidth: float = 150.0  # b of exp(-b ln(f/fc)^2): sigma 0.058 in ln f
    log_eps: float = 1e-4  # of the unit-peak STFT magnitude
    align_s: float = 15.0  # s: the onset of every spectrogram is moved here
    align_fraction: float = 0.05  # onset = time of this fraction of the Arias intensity
    timing: str = "pslot"  # roll: circular shift of the onset to align_s | warp: piecewise-
    #                       linear time warp, P knot to p_align_s and onset to align_s |
    #                       stretch: warp plus the end knot to end_align_s | pslot: roll,
    #                       then the P knot warped to p_align_s (TIMINGS)
    p_fraction: float = 0.01  # warp, stretch, pslot: P knot = time of this fraction of Arias
    p_knot: str = "picker"  # arias: the P knot is the p_fraction time | aic: the onset
    #                         that Maeda's AIC finds on the vertical before the p_fraction
    #                         time + P_PICK_AFTER_S (`p_knot_time`), nearer the P arrival |
    #                         picker: the realism picker's P onset (`p_onset_index`), its
    #                         window ending past the vertical's half-maximum RMS (P_KNOTS)
    p_align_s: float = 8.0  # warp, stretch, pslot: s, the P knot's place in warped time (< align_s)
    long_gap: str = "clip"  # pslot: a P-to-onset gap longer than the canvas before the onset
    #                         (align_s less MIN_GAP_S; 16 % of the target training records) is
    #                         clipped to it, its P outside the slot (clip); or kept (squeeze):
    #                         the frames before the onset are read from the record's start, so
    #                         the slot holds its P and the frames from the onset on are clip's
    #                         (`canvas_start`); or kept (shift): a record whose P knot would sit
    #                         less than an STFT window into the canvas is rolled later so that
    #                         it sits there, and its last seconds leave the canvas
    #                         (`rolled_knots`). Three training seeds: squeeze raises S-P picks
    #                         91-92 -> 97-98 % but the held-out AUC by 0.010 and f0's misses at
    #                         0205; shift raised the AUC by 0.011 / 0.024 (measured; "Far records
    #                         in the P slot", "The far records' P squeezed into the slot"), so
    #                         clip (LONG_GAPS)
    canvas: str = "wrap"  # roll, pslot: how the record is moved onto the canvas. wrap: the
    #                       waveform rolled circularly (what leaves one end comes back at the
    #                       other: the coda's end before the pre-event part, or the pre-event
    #                       part after the coda); right for the simulated corpus, whose filters
    #                       are circular. hold: the frames are moved by whole hops with the
    #                       first and last frame held (the waveform by the rest, under a hop,
    #                       its edge mirrored), and decoding fills what lies outside the canvas
    #                       the same way (`canvas_shift`). Real records: hold, with the rest
    #                       of REAL_RECORDS ("Real records: the canvas and the long-period
    #                       steps") (CANVASES)
    end_fraction: float = 0.95  # stretch: end knot = time of this fraction of Arias intensity
    end_align_s: float = 40.0  # stretch: s, where the end knot sits in warped time (> align_s)
    coarse_pcs: int = 0  # flow over this many principal components of a frame's standardised
    #                      channels (whitened; fit on the training residuals); 0 = every channel
    fine_pcs: int = 0  # the same for the fine spectrum's 3 * n_fine values; 0 = every value
    record_pcs: int = 32  # this many principal components of the whole standardised spectrogram
    #                      (record-level modes: P strength, duration) move from the frames to
    #                      the static part, where the flow models them as scalars; 0 = none
    remainder_scale: bool = False  # True: what the record components leave of each (frame,
    #                      channel) is divided by its training rms, so the flow sees unit variance
    #                      in every cell (that rms runs 0.38-0.71 along the frames; the flow gave
    #                      every frame the same 0.51, measured); "The frame remainder"
    remainder_gauss: bool = False  # True: the remainder (after remainder_scale) is mapped cell by
    #                      cell through its channel's fitted marginal (`fit_marginal`) onto a
    #                      standard normal, so the flow's Gaussian output decodes to the
    #                      remainder's skewed marginals (real skewness -0.63; the flow gave 0.00,
    #                      with it -0.59, measured); off: "The frame remainder"
    remainder_ar: bool = False  # True: the remainder (after remainder_scale) is whitened by a
    #                      first-order vector autoregression along the frames fitted on the
    #                      training residuals (`fit_ar`), so the flow's white noise decodes to the
    #                      remainder's frame-to-frame and channel correlations (real lag-1
    #                      correlation 0.46; the flow alone gave 0.00, measured); ablated: worse
    #                      f0 (worst station 7-11 %), no AUC gain, so off
    remainder_calibrate: bool = True  # after training, the flow's frame coordinates are
    #                      multiplied cell by cell by a gain fitted on the target stations'
    #                      training scenarios (`calibrate_frames`: the training records' rms over
    #                      the flow's rms there), so each (frame, channel) gets the training
    #                      spread that the flow left flat ("The frame gain")
    scalar_calibrate: bool = False  # after training, the flow's level and timing scalars (their
    #                      standardised residuals about the mean model) are multiplied by a gain
    #                      fitted on the target stations' training scenarios (`calibrate`, as
    #                      remainder_calibrate does for the frames), before the record prior
    #                      is given them: the flow left their rms at 1.00, 0.81, 0.40 against
    #                      the training records' 1.06, 0.95, 0.71; the gain moved the PGA
    #                      residual spread +0.02 at two training seeds, out of the realism band
    #                      at one (measured; "The scalar gain"), so off
    station_scatter: bool = False  # after training (and after scalar_calibrate's gain), the
    #                      flow's level scalar is multiplied by a gain per target station fitted
    #                      on that station's training records (`calibrate` by station), so each
    #                      station's records get its own scatter of ln peak about the mean (a
    #                      single-station sigma; the stations' training rms shrunk toward their
    #                      mean by empirical Bayes, `group_rms`), not the flat 0.31-0.32 the
    #                      flow draws everywhere ("The station's own scatter"). Off since
    #                      record_scale: it made up for the peak's crest-factor miss, and with
    #                      the record scaled by its spectrum it only widens the PGA spread
    #                      (+0.009 in 12 paired draws; no nearer the truth's, measured)
    remainder_smooth: bool = True  # after the frame gain, the flow's frame coordinates go through
    #                      a first-order recursion along the frames per channel (`smooth_frames`)
    #                      fitted after training (`smoothing`) so that they get the training
    #                      records' correlation from one frame to the next at the same rms: the
    #                      flow's is 0.00, the records' 0.35-0.55; without it each record's frames
    #                      scatter more about their mean, and the band energies came out +0.13
    #                      (ln) at 0.4-2.7 Hz with the right mean log (measured; "The frame
    #                      smoothing")
    record_prior: bool = True  # True: the record components are drawn by a conditional flow of
    #                      their own (`RecordPrior`: an MLP over the whitened components, given
    #                      the station and the scenario), fitted after training, instead of by
    #                      the TimesBlock flow, whose joint draw of them loses each record's
    #                      sharp P onset ("Where the records still differ: the P wave");
    #                      needs record_pcs > 0
    prior_records: str = "all"  # record_prior fitted on: target (the target stations' training
    #                      records) | all (also the pre-training stations', as station 0, "any
    #                      station", as the TimesBlock flow learns them): 2.3x the records, so
    #                      it copies less ("The record prior on every station") (PRIOR_RECORDS)
    prior_scalars: bool = True  # record_prior: the prior is also given the record's level and
    #                      timing scalars (the TimesBlock flow's draw, at sampling), so the
    #                      spectrogram's modes stay coupled to its amplitude: without them the
    #                      prior widened the spread of ln PGV and ln PSA(1 s) about a station +
    #                      scenario fit to 0.35 and 0.44 (real 0.27 and 0.25), with them 0.29 and
    #                      0.32 (measured; "The record prior on every station")
    prior_fine: int = 3  # record_prior: the prior is also given this many leading principal
    #                      components of the record's fine spectrum (`prior_given`; the
    #                      TimesBlock flow's draw, at sampling), so the spectrogram's record modes
    #                      are drawn with the spectrum that the decoder imposes, not apart from
    #                      it: nearest-station accuracy +0.01 at two training seeds, 8 components
    #                      +0.02 but a higher held-out AUC (measured; "The record prior
    #                      given the fine spectrum"); 0 = not given
    prior_calibrate: bool = True  # record_prior: after the prior is fitted, its draws are
    #                      multiplied component by component by a gain fitted on the target
    #                      stations' training scenarios (`calibrate`: the training records' rms
    #                      over the draws' rms, as remainder_calibrate does for the frames):
    #                      the prior alone gave a mean variance of 0.76 per whitened component
    #                      against the training records' 1.01 (measured; "The record
    #                      prior's gain")
    prior_hidden: int = 256  # record_prior: width of the MLP's three hidden layers
    prior_steps: int = 4000  # record_prior: optimiser steps (batches of 64 records)
    prior_ode_steps: int = 50  # record_prior: Heun steps when sampling
    record_weight: float = 1.0  # weight of the record components' mean squared velocity error in
    #                      the loss (the spectrogram's weighs 1); 0 = pooled with the fine part
    coarse_weight: float = 1.0  # weight of the spectrogram's (frame part's) mean squared velocity
    #                      error in the loss; 0.5 with remainder_scale gives back to the fine
    #                      spectrum (the site signature) the weight that the unit-variance
    #                      remainder took from it (ablation: every station's median f0 within
    #                      5 % in 24 of 32 seeds, 17 of 32 at weight 1)
    # network
    d_model: int = 32
    d_ff: int = 32
    num_kernels: int = 2  # Inception kernels 1, 3
    e_layers: int = 2
    top_k: int = 2
    d_cond: int = 64
    period_selection: str = "batch"  # batch | sample | fixed (models/timesnet.fft_periods;
    #                                  fixed: chosen once on the training features)
    patch: int = 2  # frames per token of the backbone (94 frames -> 47 tokens)
    time_mixing: bool = True  # a linear token mix after each TimesBlock (global context)
    dropout: float = 0.0  # after each TimesBlock, training only
    # training (both phases: AdamW, cosine per step, grad-norm clip)
    pretrain_epochs: int = 300
    finetune_epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    mean_model: bool = True  # site + scenario linear mean under the flow (fit_stats)
    mean_quadratic: bool = False  # the mean's scenario terms add M'^2, lnR'^2 and M' lnR'
    #                      (held at the training range's edge outside it; `scenario_terms`)
    site_intercepts: bool = False  # sampling uses the frames' station intercepts estimated
    #                      as a site term (`site_intercepts`: the stations' mean, the station's
    #                      own mean over the frames, its rest shrunk by empirical Bayes); the
    #                      flow is trained about the free fit. Held-out AUC -0.006 at three
    #                      training seeds, but D5-95 1.04 -> 1.13 x the simulator's (measured;
    #                      "The site term"), so off
    ema: float = 0.995  # weight EMA used for sampling (0 = none)
    time_sampling: str = "logit-normal"  # uniform | logit-normal (flow time t of training)
    seed: int = 0
    device: str = "cpu"  # training: cpu | cuda | cuda:N | auto (sampling runs on the CPU)
    num_threads: int = 1  # torch threads; 0 = torch's default. 2 trains 1.2-1.3x faster on 2
    #                       free cores (7 Dec 2026) but sums in another order, so the weights
    #                       differ from the committed checkpoint's; the records sampled from a
    #                       checkpoint are the same bit for bit with 1 or 2 threads and 1 or 2
    #                       workers (measured)
    # sampling
    n_steps: int = 12  # ODE steps (Heun: 23 network evaluations)
    solver: str = "heun"  # euler | heun
    griffin_lim_iters: int = 2  # 8 gave the same realism scores, 1.5x slower (measured)
    griffin_lim_momentum: float = 0.99
    envelope_rounds: int = 4  # (equalise, envelope projection) pairs after Griffin-Lim; 0 = one
    #                           equalisation only (the decoder before Dec 2026)
    long_period_hz: float = 0.6  # after the envelope rounds the fine spectrum is imposed once
    #                              more below this frequency (fully below half of it); the
    #                              rounds' last band projection lifts ln PSA(5 s) by 0.3
    #                              (measured); 0 = off
    random_phase_hz: float = 0.3  # last, the phase below this frequency (all of it below half,
    #                              tapering to none at it) is drawn at random, keeping every
    #                              bin's magnitude: the STFT has no bin there to place the energy
    #                              in time, and the band-0 envelope made the content below 0.3 Hz
    #                              0.90 x as long as real and ln PSA(5 s) +0.09 on the round trip
    #                              (random: 1.00 x and +0.00, measured); 0 = off
    quiet_before_p: bool = False  # last (timing other than roll), each component's envelope in
    #                              the STFT window's length (n_fft) before the drawn P knot is
    #                              capped at its rms over the window's length before that (the
    #                              pre-event level; `quiet_before_p`): the decoder's frames
    #                              spread the P wave's onset over the window, backwards too.
    #                              S-P picks +3.5 points, classifier AUC +0.005 (measured;
    #                              "Quiet before the P knot"), so off
    record_scale: str = "spectrum"  # last, what sets the decoded record's amplitude. peak: its
    #                            peak is the drawn level. spectrum: its fine spectrum is the
    #                            drawn level + fine spectrum in the least-squares sense
    #                            (`decode`) and its peak follows: the ASB14 PSA residual
    #                            spread 0.050 -> 0.019 above real, PGA -0.029 -> -0.005 (mean
    #                            of 12 draws, measured; "The record's scale")
    decoder_bias: bool = True  # after training, the mean error of the decoder on the training
    #                            records' frames is fitted (`fit_decoder_bias`), and sampling
    #                            asks the decoder for the flow's frames less it
    #                            ("The decoder's mean error")
    extrapolate: str = "linear"  # a magnitude outside the station's training range. linear:
    #                            the mean model and the network are asked for it (at M 6 and
    #                            station 4628, trained on M 3.5-5.1, the records came out
    #                            1.6-2.9 x too strong and 0.64-0.76 x as long; README "Outside
    #                            the training range"). gmm: they are asked for the nearest
    #                            magnitude of the range, and the features drawn there are scaled
    #                            to the one asked for by ASB14's PSA and AS16's D5-95 ratios
    #                            (`FlowSampler.scaled`). Records inside the range are the same
    batch_generate: int = 16  # records per chunk (each chunk seeded by (seed, chunk start))
    workers: int = 2  # threads generating chunks in parallel (num_threads torch threads each)

    def __post_init__(self) -> None:
        """FlowSamplerError naming a NaN/inf value or a rate or size that cannot train."""
        bad = [f"{f.name} = {getattr(self, f.name)}" for f in fields(self)
               if isinstance(getattr(self, f.name), float)
               and not math.isfinite(getattr(self, f.name))]
        bad += [f"{name} = {getattr(self, name)} (must be > 0)"
                for name in ("lr", "finetune_lr", "batch_size", "n_steps", "n_fine", "n_bands",
                             "prior_hidden", "prior_steps", "prior_ode_steps", "batch_generate",
                             "workers")
                if getattr(self, name) <= 0]  # NaN is named above
        bad += [f"{name} = {getattr(self, name)} (must be >= 0)"
                for name in ("envelope_rounds", "griffin_lim_iters", "coarse_pcs", "fine_pcs",
                             "record_pcs", "record_weight", "coarse_weight", "long_period_hz",
                             "random_phase_hz", "prior_fine", "num_threads")
                if getattr(self, name) < 0]
        if self.record_prior and not self.record_pcs > 0:
            bad.append(f"record_prior = True needs record_pcs > 0 (got {self.record_pcs}; "
                       f"set record_prior: false)")
        if not 0.0 <= self.dropout < 1.0:  # NaN fails here too
            bad.append(f"dropout = {self.dropout} (must be in [0, 1))")
        for key, values in CHOICES.items():
            if getattr(self, key) not in values:
                bad.append(f"{key} = {getattr(self, key)!r} (not one of {values})")
        if self.timing != "roll" and not 0 < self.p_align_s < self.align_s:
            bad.append(f"p_align_s = {self.p_align_s} ({self.timing}: must be in (0, align_s = "
                       f"{self.align_s}))")
        if self.timing != "roll" and not 0 < self.p_fraction < self.align_fraction:
            bad.append(f"p_fraction = {self.p_fraction} ({self.timing}: must be in (0, "
                       f"align_fraction = {self.align_fraction}))")
        if self.timing == "stretch" and not self.align_s < self.end_align_s:
            bad.append(f"end_align_s = {self.end_align_s} (stretch: must be > align_s = "
                       f"{self.align_s})")
        if self.timing == "stretch" and not self.align_fraction < self.end_fraction < 1:
            bad.append(f"end_fraction = {self.end_fraction} (stretch: must be in (align_fraction"
                       f" = {self.align_fraction}, 1))")
        if bad:  # one message per parameter: the last, which says most (a NaN fails twice)
            named = {msg.split(" ")[0]: msg for msg in bad}
            raise FlowSamplerError(f"flow-sampler parameter(s) {'; '.join(named.values())}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FlowSamplerParams:
        """The params of a generators.flow mapping (a checkpoint's), each value checked against
        its annotation as params.yaml's are (`config.section`): FlowSamplerError naming an
        unknown key or a wrong type."""
        try:
            return section(Params(generators={"flow": raw}), "flow", cls)
        except ParamsError as exc:
            raise FlowSamplerError(str(exc)) from None


def n_given(p: FlowSamplerParams) -> int:
    """How many values the record prior is given besides the station and the scenario
    (`prior_given`): the record's scalars (its first n_scalars(p) static values) with
    p.prior_scalars, and p.prior_fine fine-spectrum components."""
    return (n_scalars(p) if p.prior_scalars else 0) + n_prior_fine(p)


def n_prior_fine(p: FlowSamplerParams) -> int:
    """Fine-spectrum components the record prior is given: p.prior_fine with a record prior,
    else none (the option is then ignored, as prior_scalars is)."""
    return p.prior_fine if p.record_prior else 0


def n_scalars(p: FlowSamplerParams) -> int:
    """Scalars at the head of the static part: the level and the timing (roll: the onset;
    warp: ln onset and ln(onset - P knot); stretch: those and ln(end knot - onset); pslot: the
    onset and ln(onset - P knot))."""
    return 1 + len(warped_knots(p)) if p.timing != "roll" else 2


def warped_knots(p: FlowSamplerParams) -> np.ndarray:
    """Warped time (s) of the P knot, the onset and (stretch) the end knot."""
    knots = [p.p_align_s, p.align_s] + ([p.end_align_s] if p.timing == "stretch" else [])
    return np.array(knots)

