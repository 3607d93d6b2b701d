"""Each guide changes the output the way its formula says (randomised weights throughout)."""
import numpy as np
import pytest
import torch

from conftest import randomize
from dit_model.guidance import combine
from ditformat.guidance import Guide, make_plan
from dit_model.model import DiT
from dit_model.sample import sample_images


@pytest.fixture
def model(tiny_cfg):
    return randomize(DiT(tiny_cfg), seed=3).eval()


def run(model, guide, **kw):
    cfg = model.cfg
    opts = dict(in_channels=cfg.in_channels, input_size=cfg.input_size, num_classes=cfg.num_classes,
                class_ids=[0, 2], guide=guide, steps=6, seed=11)
    opts.update(kw)
    return sample_images(model, **opts)


def eps(model, x, t, label):
    return model(x, torch.full((x.shape[0],), t), torch.full((x.shape[0],), label))


def test_randomised_model_is_not_trivial(model):
    x = torch.randn(2, 4, 8, 8)
    assert eps(model, x, 500, 1).std() > 0.1


def test_scale_one_is_plain_conditional(model):
    plain = run(model, Guide(scale=1.0))                                                   # one branch
    two_branch = run(model, Guide(scale=1.0, schedule="linear", scale_end=1.0))            # eps_u + 1 (eps_c - eps_u)
    torch.testing.assert_close(plain, two_branch, rtol=1e-5, atol=1e-5)


def test_cfg_formula(model):
    g = Guide(scale=3.0)
    plan = make_plan(g, [0, 2], 3)
    x = torch.randn(2, 4, 8, 8)
    u, c = model(torch.cat([x, x]), torch.full((4,), 400), torch.tensor(sum(plan.labels, []))).reshape(1, 2, 2, 8, 8, 8).unbind(1)
    guided = combine(torch.stack([u, c], 1), plan.coefficients(3.0), plan.var_branch, 4)
    torch.testing.assert_close(guided[:, :4], u[0, :, :4] + 3.0 * (c[0, :, :4] - u[0, :, :4]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided[:, 4:], c[0, :, 4:])                                 # variance from the conditional


def test_negative_class_moves_away_from_its_eps(model):
    x = torch.randn(2, 4, 8, 8)
    plan = make_plan(Guide(scale=4.0, negative_class=1), [0, 2], 3)
    assert plan.labels[0] == [1, 1]
    e_n, e_c = eps(model, x, 300, 1), model(x, torch.full((2,), 300), torch.tensor([0, 2]))
    guided = combine(torch.stack([e_n, e_c])[None], plan.coefficients(4.0), plan.var_branch, 4)[:, :4]
    torch.testing.assert_close(guided, e_n[:, :4] + 4.0 * (e_c[:, :4] - e_n[:, :4]), rtol=1e-5, atol=1e-5)
    # farther from the negative's eps than the plain conditional prediction is
    assert (guided - e_n[:, :4]).norm() > 3.5 * (e_c[:, :4] - e_n[:, :4]).norm()
    assert not torch.allclose(run(model, Guide(scale=4.0, negative_class=1)), run(model, Guide(scale=4.0)))


def test_composition_formula_with_negative_weight(model):
    g = Guide(scale=1.0, compose=((0, 1.5), (2, -0.5)))
    plan = make_plan(g, [0, 0], 3)
    assert plan.labels == [[3, 3], [0, 0], [2, 2]]
    x = torch.randn(2, 4, 8, 8)
    e = [eps(model, x, 600, lab) for lab in (3, 0, 2)]
    guided = combine(torch.stack(e)[None], plan.coefficients(1.0), plan.var_branch, 4)[:, :4]
    expect = e[0][:, :4] + 1.5 * (e[1][:, :4] - e[0][:, :4]) - 0.5 * (e[2][:, :4] - e[0][:, :4])
    torch.testing.assert_close(guided, expect, rtol=1e-5, atol=1e-5)


def test_schedules():
    lin = Guide(scale=5.0, schedule="linear", scale_end=1.0)
    assert [lin.scale_at(i, 5, 0) for i in range(5)] == [5.0, 4.0, 3.0, 2.0, 1.0]
    inter = Guide(scale=5.0, schedule="interval", interval=(100, 700))
    assert inter.scale_at(0, 10, 999) == 1.0 and inter.scale_at(3, 10, 500) == 5.0 and inter.scale_at(9, 10, 0) == 1.0
    assert Guide(scale=2.5).scale_at(7, 10, 123) == 2.5


def test_interval_outside_everything_is_plain_conditional(model):
    out = run(model, Guide(scale=6.0, schedule="interval", interval=(0, 0)), steps=5)   # respaced t: 999 ... 0
    plain = run(model, Guide(scale=1.0), steps=5)
    assert not torch.allclose(out, plain)                 # the last step (t = 0) is guided
    out2 = run(model, Guide(scale=6.0, schedule="interval", interval=(1, 1)), steps=5)  # t = 1 never sampled
    torch.testing.assert_close(out2, plain, rtol=1e-5, atol=1e-5)


def test_batch_estimate_k1_or_tau0_is_plain(model):
    plain = run(model, Guide(scale=3.0))
    torch.testing.assert_close(run(model, Guide(scale=3.0, batch_k=4, batch_tau=0.0)), plain)
    torch.testing.assert_close(run(model, Guide(scale=3.0, batch_k=1, batch_tau=0.5)), plain)
    assert not torch.allclose(run(model, Guide(scale=3.0, batch_k=3, batch_tau=0.5)), plain)


def test_batch_estimate_is_the_mean_of_guided_eps():
    plan = make_plan(Guide(scale=2.0), [1], 3)
    out = torch.randn(3, 2, 1, 8, 4, 4)                   # K=3 copies, J=2 branches, N=1
    got = combine(out, plan.coefficients(2.0), plan.var_branch, 4)
    expect = torch.stack([o[0, :, :4] + 2.0 * (o[1, :, :4] - o[0, :, :4]) for o in out]).mean(0)
    torch.testing.assert_close(got[:, :4], expect)


def test_same_seed_same_images_and_ddpm_uses_noise(model):
    a, b = run(model, Guide(scale=2.0), sampler="ddpm"), run(model, Guide(scale=2.0), sampler="ddpm")
    assert torch.equal(a, b)
    assert not torch.equal(a, run(model, Guide(scale=2.0), sampler="ddpm", seed=12))


def test_bad_guides():
    with pytest.raises(ValueError, match="schedule"):
        Guide(schedule="cosine").validate(3)
    with pytest.raises(ValueError, match="out of range"):
        Guide(negative_class=7).validate(3)
    with pytest.raises(ValueError, match="end scale"):
        Guide(schedule="linear").validate(3)
