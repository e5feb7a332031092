"""The flow sampler's networks: dropout, the record prior."""

from __future__ import annotations

import pytest
import torch

from flow_common import tiny_params

from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import network as fnet


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = fnet.VelocityNet(fs.FlowSamplerParams(dropout=0.5), n_frames=10, n_coarse=6,
                         n_static=4, n_stations=2)
    for film in net.films:  # non-zero FiLM so that the blocks reach the output
        torch.nn.init.normal_(film.weight)
    args = (torch.randn(3, 10, 6), torch.randn(3, 4), torch.rand(3), torch.tensor([0, 1, 2]),
            torch.randn(3, 2))
    net.train()
    assert not torch.allclose(net(*args)[0], net(*args)[0])  # a fresh mask per call
    net.eval()
    torch.testing.assert_close(net(*args)[0], net(*args)[0])


@pytest.mark.parametrize("prior_records", ["target", "all"])
def test_record_prior_learns_a_station_and_scenario_conditional_distribution(prior_records):
    """Two stations with different means and spreads, a mean that moves with the first
    scenario value and a second value that moves with a given value (prior_records "all": and
    records of station 0, "any station", centred elsewhere): draws from the fitted prior have
    each station's mean and its shifts with the scenario and the given value (within 0.15) and
    its spread (within 25 %; the fit narrows it by 15-20 % here)."""
    g = torch.Generator().manual_seed(0)
    first = 0 if prior_records == "all" else 1
    n = 1200 if first else 1800
    station = torch.randint(first, 3, (n,), generator=g)
    scenario = torch.randn(n, 2, generator=g)
    centre = torch.tensor([[0.0, 3.0], [2.0, -1.0], [-2.0, 1.0]])[station]
    spread = torch.tensor([0.5, 0.3, 0.6])[station, None]
    x = centre + spread * torch.randn(n, 2, generator=g)
    given = torch.randn(n, 1, generator=g)
    x[:, 0] += scenario[:, 0]
    x[:, 1] -= given[:, 0]
    p = tiny_params(prior_hidden=64, prior_steps=3000, prior_records=prior_records)
    prior = fnet.fit_record_prior(x, station, scenario, given, p, n_stations=2)
    assert prior.n_classes == 3 - first
    cases = ((1, (2.0, -1.0), 0.3), (2, (-2.0, 1.0), 0.6)) + ((0, (0.0, 3.0), 0.5),) * (1 - first)
    for s, mean, sd in cases:
        for shift, lift in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
            st = torch.full((2000,), s)
            sc = torch.tensor([[shift, 0.0]]).expand(2000, 2)
            gv = torch.full((2000, 1), lift)
            draw = fnet.draw_record_prior(prior, st, sc, gv, 30, torch.Generator().manual_seed(s),
                                        2)
            torch.testing.assert_close(draw.mean(0),
                                       torch.tensor([mean[0] + shift, mean[1] - lift]),
                                       atol=0.15, rtol=0)
            torch.testing.assert_close(draw.std(0), torch.tensor([sd, sd]), atol=0, rtol=0.25)
