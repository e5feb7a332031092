"""A record-free sampler: conditional flow matching over a compressed time-frequency record,
with TimesBlocks along the frame axis as the velocity network's backbone. Section names in
quotes ("The frame gain") are those of docs/flow_sampler.md, the design record.

The package, one module a step (each imports only the modules above it):
    params          `FlowSamplerParams` (params.yaml's generators.flow), the option values and
                    the sizes they imply
    representation  a record as features and back: `encode`, `decode`, the P slot's timing
    latent          the site + scenario mean model and the flow's coordinates (`to_latent`)
    network         the velocity network, its training, the ODE solver, the record prior
    calibration     the fits after training: gains and the frame smoothing
    sampler         `FlowSampler` (sample.py's sampler contract) and `train_sampler`, the
                    pipeline's entry point
This module re-exports the names of `params` and `sampler`; the steps' own names are read from
their modules.

Everything here is a pure function or an nn.Module; files are written by `train_sampler` and the
`timesnet-gen sample` CLI (sample.py) through timesnet_gen.atomic.
"""

from timesnet_gen.models.flow_sampler.params import (
    CALIBRATION_SEED, CANVASES, EXTRAPOLATIONS, FORMAT, KIND, LONG_GAPS, P_KNOTS, PRIOR_RECORDS,
    REAL_RECORDS, RECORD_SCALES, SCENARIO_COLUMNS, SOLVERS, TIME_SAMPLING, TIMINGS,
    FlowSamplerError, FlowSamplerParams, n_given, n_prior_fine, n_scalars, warped_knots)
from timesnet_gen.models.flow_sampler.sampler import (
    BEFORE_OPTIONS, GMM_MECHANISM, GMM_VS30, FlowSampler, build_net, check_scenario,
    gmm_scaling, real_records_warning, scenario_table, train_sampler, val_fit)

__all__ = [
    "BEFORE_OPTIONS", "CALIBRATION_SEED", "CANVASES", "EXTRAPOLATIONS", "FORMAT",
    "GMM_MECHANISM", "GMM_VS30", "KIND", "LONG_GAPS", "P_KNOTS", "PRIOR_RECORDS",
    "REAL_RECORDS", "RECORD_SCALES", "SCENARIO_COLUMNS", "SOLVERS", "TIME_SAMPLING", "TIMINGS",
    "build_net", "check_scenario", "FlowSampler", "FlowSamplerError", "FlowSamplerParams",
    "gmm_scaling", "n_given", "n_prior_fine", "n_scalars", "real_records_warning",
    "scenario_table", "train_sampler", "val_fit", "warped_knots"]
