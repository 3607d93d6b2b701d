import math

import numpy as np
import pytest
import torch

from dit_model.diffusion import Diffusion, discretized_gaussian_log_likelihood
from ditformat.schedule import linear_betas, respaced_timesteps

D = Diffusion()


def test_schedule_tables():
    assert D.betas.dtype == np.float64 and len(D.betas) == 1000
    np.testing.assert_allclose(D.betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    assert D.abar_prev[0] == 1.0 and D.abar[0] == pytest.approx(1 - 1e-4)
    assert D.posterior_variance[0] == 0.0
    assert D.posterior_log_variance_clipped[0] == D.posterior_log_variance_clipped[1] == math.log(D.posterior_variance[1])


def test_q_sample_moments():
    x0 = torch.full((20000, 1, 2, 2), 0.7, dtype=torch.float64)
    for t in (0, 250, 999):
        tt = torch.full((x0.shape[0],), t)
        xt = D.q_sample(x0, tt, torch.randn_like(x0, generator=torch.Generator().manual_seed(t)))
        assert xt.mean().item() == pytest.approx(math.sqrt(D.abar[t]) * 0.7, abs=0.01)
        assert xt.var().item() == pytest.approx(1 - D.abar[t], rel=0.03, abs=1e-4)


def test_posterior_matches_bayes_closed_form():
    x0, xt = torch.randn(5, 1, 1, 1, dtype=torch.float64), torch.randn(5, 1, 1, 1, dtype=torch.float64)
    t = torch.tensor([1, 10, 100, 500, 999])
    mean, var, _ = D.q_posterior(x0, xt, t)
    for n, tv in enumerate(t.tolist()):
        # product of q(x_{t-1} | x_0) = N(sqrt(abar_prev) x0, 1 - abar_prev) and q(x_t | x_{t-1})
        prec = 1 / (1 - D.abar_prev[tv]) + D.alphas[tv] / D.betas[tv]
        m = (math.sqrt(D.abar_prev[tv]) * x0[n].item() / (1 - D.abar_prev[tv]) + math.sqrt(D.alphas[tv]) * xt[n].item() / D.betas[tv]) / prec
        assert mean[n].item() == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert var[n].item() == pytest.approx(1 / prec, rel=1e-9)


def perfect_output(x0, t, noise):
    """(eps, v) that make the model mean the true posterior mean and Sigma the posterior variance."""
    return torch.cat([noise, -torch.ones_like(noise)], dim=1)     # v = -1: log Sigma = log pv (clipped)


def test_vlb_nonnegative_and_zero_for_true_posterior():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1000, (64,), generator=g)
    xt = D.q_sample(x0, t, noise)
    random_out = torch.randn(64, 6, 4, 4, generator=g, dtype=torch.float64)
    assert (D.vlb_terms(random_out, x0, xt, t) >= 0).all()
    assert D.vlb_terms(perfect_output(x0, t, noise), x0, xt, t).abs().max() < 1e-8


def test_decoder_nll_at_t0_against_direct_computation():
    g = torch.Generator().manual_seed(1)
    x0 = (torch.randint(0, 256, (2, 1, 2, 2), generator=g).double() / 127.5 - 1)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    xt = D.q_sample(x0, t, noise)
    out = torch.cat([torch.randn(x0.shape, generator=g, dtype=torch.float64) * 0.1 + noise, torch.zeros_like(x0)], 1)
    got = D.vlb_terms(out, x0, xt, t)
    p = D.p_mean_variance(out, xt, t)
    Phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))
    for n in range(2):
        bits = []
        for x, mu, lv in zip(x0[n].flatten().tolist(), p["mean"][n].flatten().tolist(), p["logvar"][n].flatten().tolist()):
            s = math.exp(lv / 2)
            hi = 1.0 if x > 0.999 else Phi((x + 1 / 255 - mu) / s)
            lo = 0.0 if x < -0.999 else Phi((x - 1 / 255 - mu) / s)
            bits.append(-math.log(max(hi - lo, 1e-12)) / math.log(2))
        assert got[n].item() == pytest.approx(sum(bits) / len(bits), rel=1e-6)


def test_decoder_nll_is_one_to_two_bits_even_for_the_exact_mean():
    x0 = torch.linspace(-0.9, 0.9, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
    mean = x0.clone()
    logvar = torch.full_like(x0, D.posterior_log_variance_clipped[0])
    nll = -discretized_gaussian_log_likelihood(x0, mean, logvar).mean() / math.log(2)
    assert 0.5 < nll.item() < 2.5


def test_respacing_with_all_steps_is_the_base_process():
    full = Diffusion(1000)
    np.testing.assert_array_equal(full.timestep_map, np.arange(1000))
    np.testing.assert_allclose(full.betas, linear_betas(), rtol=1e-10)
    np.testing.assert_allclose(full.posterior_variance, D.posterior_variance, rtol=1e-10)


def test_respacing_250():
    S = respaced_timesteps(250)
    assert S[0] == 0 and S[1] == 4 and S[-1] == 999 and len(S) == 250
    assert any(s % 4 for s in S)                          # not exactly multiples of 4
    d = Diffusion(250)
    np.testing.assert_allclose(d.abar, D.abar[S], rtol=1e-12)
    np.testing.assert_allclose(d.betas[1:], 1 - D.abar[S[1:]] / D.abar[S[:-1]], rtol=1e-12)


def test_ddim_eta0_is_deterministic_and_ignores_noise():
    d = Diffusion(10)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 6, 4, 4, generator=g)
    a = d.ddim_step(out, x, 5, torch.randn(2, 3, 4, 4, generator=g), eta=0.0)
    b = d.ddim_step(out, x, 5, torch.randn(2, 3, 4, 4, generator=g), eta=0.0)
    assert torch.equal(a, b)
    c = d.ddim_step(out, x, 5, torch.randn(2, 3, 4, 4, generator=g), eta=1.0)
    assert not torch.allclose(a, c)


def test_ddim_eta1_sigma_is_the_ddpm_posterior_std():
    d = Diffusion(50)
    for i in (1, 10, 49):
        assert d.ddim_sigma(i, 1.0) ** 2 == pytest.approx(d.posterior_variance[i], rel=1e-9)


def test_training_loss_terms(tiny_cfg):
    from conftest import randomize
    from dit_model.model import DiT
    model = randomize(DiT(tiny_cfg))
    x0 = torch.rand(4, 4, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 500, 999])
    terms = D.training_losses(model, x0, t, torch.tensor([0, 1, 2, 3]), torch.randn(4, 4, 8, 8))
    assert terms["loss"].shape == (4,) and torch.allclose(terms["loss"], terms["mse"] + terms["vlb"])
    assert (terms["vlb"] >= 0).all()
    terms["vlb"].mean().backward()                        # the VLB's mean is detached: only v gets its gradient
    grad = model.final_layer.linear.weight.grad.reshape(2 * 2, 8, -1)   # rows ordered (p_row, p_col, channel)
    assert grad[:, :4].abs().max() == 0 and grad[:, 4:].abs().max() > 0


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("steps", [10, 50])
def test_sampling_loop_with_an_oracle_returns_the_data(sampler, steps):
    """A model that knows x_0 (eps from the forward process, v = -1) must lead the whole loop,
    respacing included, back to x_0: checks timestep mapping, tables and both samplers end to end."""
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    x0 = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def oracle(x, t, y):
        a = torch.from_numpy(D.abar)[t].float().reshape(-1, 1, 1, 1)      # the model sees original t
        eps = (x - a.sqrt() * x0.repeat(x.shape[0] // 2, 1, 1, 1)) / (1 - a).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], 1)

    out = sample_images(oracle, in_channels=4, input_size=8, num_classes=3, class_ids=[0, 1], guide=Guide(scale=1.0),
                        steps=steps, sampler=sampler, seed=0)
    assert (out - x0).abs().max() < 1e-4
