"""The recipe options beside the paper's: v-prediction, Min-SNR-gamma weighting, logit-normal timesteps,
learning-rate warm-up and warm starts (dit_model/diffusion.py, dit_model/train.py)."""
import numpy as np
import pytest
import torch

from dit_model.diffusion import Diffusion
from dit_model.model import DiTConfig
from dit_model.randomness import batch_plan
from dit_model.trainer import Trainer

D = Diffusion()
DV = Diffusion(prediction="v")


def test_v_target_and_its_inverse():
    """v = sqrt(abar) eps - sqrt(1 - abar) x0, and the sampler recovers (x0, eps) from (x_t, v) exactly."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(5, 4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 700, 999])
    xt = DV.q_sample(x0, t, eps)
    v = DV.v_target(x0, t, eps)
    a = torch.from_numpy(DV.abar)[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(v, a.sqrt() * eps - (1 - a).sqrt() * x0)
    x0_hat, eps_hat = DV.x0_eps_from_output(v, xt, t)
    assert (x0_hat - x0).abs().max() < 1e-12 and (eps_hat - eps).abs().max() < 1e-12
    x0_e, eps_e = D.x0_eps_from_output(eps, xt, t)                       # eps-models: the paper's formula
    assert torch.equal(eps_e, eps) and (x0_e - x0).abs().max() < 1e-9


def test_min_snr_weights():
    """x0-space weight min(SNR, gamma) divided by the target's own SNR weight: SNR for eps, SNR + 1 for v."""
    t = torch.tensor([0, 100, 300, 999])
    snr = D.abar[t.numpy()] / (1 - D.abar[t.numpy()])
    assert snr[0] > 5 > snr[3]                                           # both sides of gamma are tested
    np.testing.assert_allclose(D.loss_weight(t, "min-snr", 5.0).numpy(), np.minimum(snr, 5.0) / snr, rtol=1e-6)
    np.testing.assert_allclose(DV.loss_weight(t, "min-snr", 5.0).numpy(), np.minimum(snr, 5.0) / (snr + 1), rtol=1e-6)
    assert torch.equal(D.loss_weight(t, "none"), torch.ones(4))
    with pytest.raises(ValueError, match="unknown loss weighting"):
        D.loss_weight(t, "bogus")


def test_v_loss_is_zero_for_the_true_v_and_weighted():
    x0 = torch.rand(3, 4, 8, 8, dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([5, 400, 990])
    true_v = lambda x, tt, y: DV.v_target(x0, t, eps)
    assert DV.training_losses(true_v, x0, t, None, eps)["mse"].abs().max() < 1e-20
    zero = lambda x, tt, y: torch.zeros_like(x)
    plain = DV.training_losses(zero, x0, t, None, eps)["mse"]
    weighted = DV.training_losses(zero, x0, t, None, eps, "min-snr", 5.0)["mse"]
    torch.testing.assert_close(weighted, plain * DV.loss_weight(t, "min-snr", 5.0).double())


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_a_v_oracle_returns_the_data(sampler):
    """A v-model that knows x0 leads the loop back to x0 (the prediction type reaches the sampler)."""
    from ditformat.guidance import Guide
    from dit_model.sample import sample_images
    x0 = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def oracle(x, t, y):
        a = torch.from_numpy(D.abar)[t].float().reshape(-1, 1, 1, 1)
        ref = x0.repeat(x.shape[0] // 2, 1, 1, 1)
        eps = (x - a.sqrt() * ref) / (1 - a).sqrt()
        return torch.cat([a.sqrt() * eps - (1 - a).sqrt() * ref, -torch.ones_like(eps)], 1)

    out = sample_images(oracle, in_channels=4, input_size=8, num_classes=3, class_ids=[0, 1], guide=Guide(scale=1.0),
                        steps=20, sampler=sampler, seed=0, prediction="v")
    assert (out - x0).abs().max() < 1e-4
    # One step from t = 999 returns the x0 estimate itself: read as eps, the same outputs miss it (a
    # reactive oracle would hide the misreading over many steps).
    one = dict(in_channels=4, input_size=8, num_classes=3, class_ids=[0, 1], guide=Guide(scale=1.0), steps=1,
               sampler=sampler, seed=0)
    assert (sample_images(oracle, prediction="v", **one) - x0).abs().max() < 1e-4
    assert (sample_images(oracle, prediction="eps", **one) - x0).abs().max() > 0.1


def test_logit_normal_timesteps():
    """t = floor(1000 sigmoid(n)), n ~ N(0, 1): median ~500, quartiles at 1000 sigmoid(-/+0.674) = 338 / 662."""
    _, t, _, _ = batch_plan(0, 3, 20000, 0, 20000, 100, 0.1, True, "logit-normal")
    q = np.quantile(t, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(q, [338, 500, 662], atol=12)
    assert t.min() >= 0 and t.max() <= 999
    _, tu, _, _ = batch_plan(0, 3, 20000, 0, 20000, 100, 0.1, True, "uniform")
    np.testing.assert_allclose(np.quantile(tu, [0.25, 0.5, 0.75]), [250, 500, 750], atol=12)
    with pytest.raises(ValueError, match="timestep sampling"):
        batch_plan(0, 3, 4, 0, 4, 100, 0.1, True, "bogus")


def test_warmup_ramps_the_learning_rate():
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    tr = Trainer(cfg, lr=1e-3, weight_decay=0.0, ema_decay=0.9, seed=0, device="cpu", warmup=4)
    x0, y, t, eps = torch.zeros(2, 4, 8, 8), torch.tensor([0, 1]), torch.tensor([3, 700]), torch.randn(2, 4, 8, 8)
    lrs = []
    for _ in range(6):
        tr.train_step(x0, y, t, eps)
        lrs.append(tr.opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_warm_start_takes_weights_and_refuses_other_shapes(tmp_path):
    from dit_model.checkpoint import CheckpointError, save_weights
    from dit_model.model import DiT
    cfg = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3)
    src = DiT(cfg)
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_weights(src, tmp_path / "w.safetensors", ["a", "b", "c"])
    v_cfg = DiTConfig(**{**cfg.to_dict(), "prediction": "v"})          # the prediction type may change
    tr = Trainer(v_cfg, lr=1e-3, weight_decay=0.0, ema_decay=0.9, seed=1, device="cpu")
    tr.warm_start(tmp_path / "w.safetensors")
    for a, b, c in zip(src.parameters(), tr.model.parameters(), tr.ema.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    other = Trainer(DiTConfig(**{**cfg.to_dict(), "depth": 2}), lr=1e-3, weight_decay=0.0, ema_decay=0.9, seed=1, device="cpu")
    with pytest.raises(CheckpointError, match="do not fit this model.*depth"):
        other.warm_start(tmp_path / "w.safetensors")
