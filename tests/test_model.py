"""TimesNet-Gen model: fused Inception == naive, period selection, conditioning, normalisation."""

from __future__ import annotations

import copy

import pytest
import torch

from timesnet_gen.models.timesnet import (
    Inception,
    TimesBlock,
    TimesNetConfig,
    TimesNetGen,
    data_frequencies,
    fft_periods,
    instance_norm,
    latent_std,
)
from timesnet_gen.runtime import set_up_torch

torch.set_num_threads(1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def tiny_cfg(**kw) -> TimesNetConfig:
    base = dict(d_model=4, d_ff=8, num_kernels=3, e_layers=2, top_k=2, dropout=0.0,
                seq_len=240, n_stations=3)
    base.update(kw)
    return TimesNetConfig(**base)


def records(n: int, T: int = 240, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / 100.0
    f = 2 + 20 * torch.rand(n, 3, 1, generator=g)
    return 30 * torch.sin(2 * torch.pi * f * t) * torch.rand(n, 3, 1, generator=g) + torch.randn(
        n, 3, T, generator=g)


@pytest.mark.parametrize("n_cond,with_cond", [(0, False), (3, True), (3, False)])
def test_fused_inception_matches_naive_forward_and_gradients(n_cond, with_cond):
    torch.manual_seed(0)
    fused = Inception(6, 10, num_kernels=4, n_cond=n_cond, fused=True).double()
    naive = copy.deepcopy(fused)
    naive.fused = False
    for conv in fused.kernels:  # non-zero biases so their averaging is tested too
        torch.nn.init.normal_(conv.bias)
    naive.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6, 7, 11, dtype=torch.float64, requires_grad=True)
    cond = torch.eye(3, dtype=torch.float64)[[0, 2, 1]] if with_cond else None
    outs, grads = [], []
    for m in (fused, naive):
        y = m(x, cond)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
        x.grad = None
    assert outs[0].shape == (3, 10, 7, 11)
    assert rel_err(outs[0], outs[1]) < 1e-5
    for gf, gn in zip(*grads):
        if gn.norm() > 0:
            assert rel_err(gf, gn) < 1e-5
        else:
            assert gf.norm() == 0  # cond weights without a station get no gradient


def test_fused_model_matches_naive_model_float32():
    torch.manual_seed(1)
    fused = TimesNetGen(tiny_cfg())
    naive = TimesNetGen(tiny_cfg(fused_inception=False))
    naive.load_state_dict(fused.state_dict())  # same parameterisation, same checkpoints
    x = records(4)
    station = torch.tensor([0, 1, 2, -1])
    yf, yn = fused(x, station), naive(x, station)
    assert rel_err(yf, yn) < 1e-5
    yf.pow(2).mean().backward()
    yn.pow(2).mean().backward()
    for pf, pn in zip(fused.parameters(), naive.parameters()):
        if pn.grad.norm() > 0:
            assert rel_err(pf.grad, pn.grad) < 1e-5


def test_fft_periods_finds_the_sinusoid_period():
    T = 256
    t = torch.arange(T, dtype=torch.float32)
    x = torch.stack([torch.sin(2 * torch.pi * t / 32), torch.sin(2 * torch.pi * t / 64)])
    x = x[:, :, None].expand(2, T, 4)  # (B, T, D)
    periods, amp = fft_periods(x, 1, per_sample=True)
    assert periods[:, 0].tolist() == [32, 64]
    assert amp.shape == (2, 1)
    batch_periods, _ = fft_periods(x + 5.0, 2, per_sample=False)  # DC must be ignored
    assert sorted(batch_periods[0].tolist()) == [32, 64]
    with pytest.raises(ValueError, match="top_k"):
        fft_periods(x[:, :8], 5, per_sample=True)


def test_per_sample_periods_make_a_record_independent_of_its_batch():
    torch.manual_seed(2)
    model = TimesNetGen(tiny_cfg(period_selection="sample")).eval()
    x = records(5, seed=3)
    station = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        together = model(x, station)
        for i in range(5):
            alone = model(x[i:i + 1], station[i:i + 1])
            # Float32 kernels may round a batch of one differently from a batch of five: one
            # ulp of outputs up to 31 is 1.9e-6 (seen on an AVX-512 machine, 7 Dec 2026). The
            # batch-wide choice below moves them by 0.03-33.
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)
        # the paper's batch-wide choice does depend on the batch for these records
        model_b = TimesNetGen(tiny_cfg(period_selection="batch")).eval()
        model_b.load_state_dict(model.state_dict())
        diffs = [float((model_b(x[i:i + 1], station[i:i + 1])[0] - model_b(x, station)[i])
                       .abs().max()) for i in range(5)]
    assert max(diffs) > 1e-4


def test_data_frequencies_pick_the_strongest_non_dc_components():
    t = torch.arange(47, dtype=torch.float32)
    x = (3.0 + torch.sin(2 * torch.pi * 5 * t / 47) + 0.5 * torch.cos(2 * torch.pi * 2 * t / 47)
         + 0.1 * torch.sin(2 * torch.pi * 9 * t / 47))[None, :, None].expand(4, 47, 3)
    assert data_frequencies(x, 2).tolist() == [2, 5]  # sorted; DC (3.0) ignored
    with pytest.raises(ValueError, match="top_k=30 exceeds the 23 non-DC"):
        data_frequencies(x, 30)


def test_fixed_periods_make_a_record_independent_of_its_batch_and_need_setting():
    torch.manual_seed(3)
    block = TimesBlock(tiny_cfg(period_selection="fixed", conditioning="none")).eval()
    x = torch.randn(5, 32, 4)
    with pytest.raises(ValueError, match="frequencies not set"):
        block(x)
    block.fix_frequencies(torch.tensor([1, 4]))
    with torch.no_grad():
        together = block(x)
        for i in range(5):
            torch.testing.assert_close(block(x[i:i + 1])[0], together[i], rtol=1e-6, atol=1e-6)
    assert block.state_dict()["freq"].tolist() == [1, 4]  # kept in a checkpoint
    with pytest.raises(ValueError, match="needs period_selection 'fixed'"):
        TimesBlock(tiny_cfg(period_selection="batch")).fix_frequencies(torch.tensor([1, 2]))


@pytest.mark.parametrize("selection, match", [
    ("fixed", "period_selection 'fixed': TimesNet-Gen takes batch | sample"),
    ("median", "period_selection 'median'"),
])
def test_timesnet_gen_refuses_a_period_selection_it_cannot_use(selection, match):
    with pytest.raises(ValueError, match=match):
        TimesNetGen(tiny_cfg(period_selection=selection))


@pytest.mark.parametrize("conditioning", ["concat", "film", "none"])
def test_conditioning_modes(conditioning):
    torch.manual_seed(4)
    model = TimesNetGen(tiny_cfg(conditioning=conditioning)).eval()
    if conditioning == "film":  # zero-init FiLM is the identity; make it act
        for block in model.blocks:
            torch.nn.init.normal_(block.film1.proj.weight)
            torch.nn.init.normal_(block.film2.proj.weight)
    x = records(2, seed=5)
    with torch.no_grad():
        none = model(x, None)
        minus_one = model(x, torch.tensor([-1, -1]))
        a = model(x, torch.tensor([0, 0]))
        b = model(x, torch.tensor([2, 2]))
    torch.testing.assert_close(none, minus_one)  # "no station" == all-zero one-hot
    if conditioning == "none":
        torch.testing.assert_close(a, b)
    else:
        assert float((a - b).abs().max()) > 1e-4
        assert float((a - none).abs().max()) > 1e-4


def test_film_starts_as_identity():
    torch.manual_seed(6)
    model = TimesNetGen(tiny_cfg(conditioning="film")).eval()
    x = records(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor([0, 1])), model(x, None))


def test_instance_norm_and_destandardisation():
    x = records(3, seed=7)
    xn, mean, std = instance_norm(x)
    torch.testing.assert_close(xn.mean(-1), torch.zeros(3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(xn.std(-1, unbiased=False), torch.ones(3, 3), atol=1e-4, rtol=0)
    assert mean.shape == std.shape == (3, 3, 1)
    torch.manual_seed(8)
    model = TimesNetGen(tiny_cfg()).eval()
    with torch.no_grad():
        y = model(x)
        # the output follows a per-channel offset and gain of the input (physical units back)
        offset = torch.tensor([100.0, -50.0, 7.0]).view(1, 3, 1)
        torch.testing.assert_close(model(x + offset), y + offset, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(model(10 * x), 10 * y, rtol=1e-4, atol=1e-3)
        z, m, s = model.encode(x)
        torch.testing.assert_close(model.decode(z, m, s), y)
    assert z.shape == (3, 240, 4)


def test_latent_noise_and_std_vector():
    torch.manual_seed(9)
    model = TimesNetGen(tiny_cfg())
    x = records(6, seed=10)
    std = latent_std(model, x, batch_size=4)
    assert std.shape == (4,) and bool(torch.all(std > 0))
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        clean = model(x)
        noisy = model(x, noise_std=torch.full((4,), 0.5))
    assert float((noisy - clean).abs().mean()) > 1e-3


def test_timesblock_residual_shape_and_bad_inputs():
    block = TimesBlock(tiny_cfg())
    h = torch.randn(2, 240, 4)
    assert block(h).shape == (2, 240, 4)
    model = TimesNetGen(tiny_cfg())
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(2, 3, 100))  # wrong length
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(2, 2, 240))  # wrong channel count
    with pytest.raises(ValueError, match="n_stations"):
        model(records(2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="conditioning"):
        TimesNetGen(tiny_cfg(conditioning="bogus"))
    with pytest.raises(ValueError, match="unknown model config"):
        TimesNetConfig.from_dict({"d_model": 4, "colour": "red"})


def test_flushing_denormals_leaves_the_gradients_bit_for_bit_the_same():
    """The weaker period's softmax weight can be denormal (real records: near exp(-100)); its
    branch's backward pass then runs on denormals, which `set_up_torch` flushes to zero for
    speed. The gradients must not change by a bit."""
    T = 240
    t = torch.arange(T, dtype=torch.float32)
    # rFFT amplitudes A T / 2 at period 24 and B T / 2 at period 10: weights 1 and exp(-96)
    wave = 1.0 * torch.sin(2 * torch.pi * t / 24) + 0.2 * torch.sin(2 * torch.pi * t / 10)
    noise = torch.randn(2, T, 4, generator=torch.Generator().manual_seed(0))
    x0 = wave[None, :, None] + 0.01 * noise
    grads = {}
    for flush in (False, True):
        torch.set_flush_denormal(False)
        if flush:
            set_up_torch(0)
        else:  # the case under test is there: a denormal weight
            weak = torch.softmax(fft_periods(x0, 2, per_sample=False)[1], dim=1).min()
            assert 0 < weak < torch.finfo(torch.float32).tiny
        torch.manual_seed(0)
        block = TimesBlock(tiny_cfg())
        x = x0.clone().requires_grad_()
        block(x).square().mean().backward()
        grads[flush] = [x.grad] + [p.grad for p in block.parameters()]
    assert (torch.tensor(1e-39) * 1.0).item() == 0.0  # flushed from now on
    assert all(torch.equal(a, b) for a, b in zip(grads[False], grads[True]))
