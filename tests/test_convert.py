"""The diffusers DiT layout (dit_model/convert.py): a converted DiTTransformer2DModel with random
weights and tied embedders reproduces diffusers' forward pass; its two numerical differences
from the reference (frequency shift 1, pre-MLP LayerNorm eps 1e-5) are found by experiment;
files our architecture cannot express, or that are broken, are refused in one line.

Tolerance: both models run in float64 and differ only by summation order; a chain of L matmuls of
length <= K rounds by about L*K*u (u = 2^-53), ~1e-12 here. The timestep sinusoid is computed
in float32 by both (from the same float32 operations), so it adds no difference. Leaving out
either numerical option moves the output by >= 1e-7 (eps: ~(1e-5 - 1e-6) / 2 relative), far
above the bound, so each option is seen to matter."""
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import randomize
from dit_model.checkpoint import load_model
from dit_model.convert import ConvertError
from ditformat.errors import DitwebError
from dit_model.model import DiT, DiTConfig

diffusers = pytest.importorskip("diffusers", reason="diffusers (the test oracle, in the dev extra) is not installed")

HEADS, HEAD_DIM, DEPTH, SIZE, P, CLASSES = 2, 16, 3, 8, 2, 5
D = HEADS * HEAD_DIM


def reference_dit(tie: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ref = diffusers.DiTTransformer2DModel(num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=4,
                                          out_channels=8, num_layers=DEPTH, sample_size=SIZE, patch_size=P,
                                          num_embeds_ada_norm=CLASSES)
    randomize(ref, seed)
    if tie:   # converted official weights have equal copies of the embedder in every block
        emb0 = ref.transformer_blocks[0].norm1.emb.state_dict()
        for block in ref.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(emb0)
    return ref.eval()


def bound() -> float:
    return (4 + 4 * DEPTH) * 4 * D * 2.0 ** -53


def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, SIZE, SIZE, generator=g, dtype=torch.float64)                      # (N, C, I, I)
    return x, torch.tensor([0, 17, 500, 999]), torch.tensor([0, 2, 4, CLASSES])              # the null class too


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    ref = reference_dit()
    folder = tmp_path_factory.mktemp("pipeline")
    ref.save_pretrained(folder / "transformer")            # config.json + diffusion_pytorch_model.safetensors
    model, meta = load_model(folder)                      # a pipeline folder: its transformer/ is found
    x, t, y = inputs()
    with torch.no_grad():
        want = ref.double()(x, timestep=t, class_labels=y).sample                            # (N, 2C, I, I)
    return model, meta["config"], want, folder


def test_converted_dit_reproduces_diffusers(converted):
    model, cfg, want, _ = converted
    assert (cfg.freq_shift, cfg.norm_eps, cfg.depth, cfg.num_heads, cfg.num_classes) == (1.0, 1e-5, DEPTH, HEADS, CLASSES)
    x, t, y = inputs()
    with torch.no_grad():
        got = model.double()(x, t, y)
    assert got.shape == want.shape
    assert rel(got, want) <= bound(), f"rel. error {rel(got, want):.2e} > {bound():.2e}"


@pytest.mark.parametrize("options", [dict(freq_shift=0.0), dict(norm_eps=1e-6), dict(freq_shift=0.0, norm_eps=1e-6)],
                         ids=["without-freq-shift", "with-reference-eps", "reference-numerics"])
def test_each_numerical_difference_is_real(converted, options):
    model, cfg, want, _ = converted
    other = DiT(DiTConfig(**{**cfg.__dict__, **options})).double().eval()
    other.load_state_dict(model.state_dict())
    x, t, y = inputs()
    with torch.no_grad():
        err = rel(other(x, t, y), want)
    assert err > 1e3 * bound(), f"{options}: diffusers is reproduced without this option (rel. error {err:.1e})"


def test_config_round_trip_keeps_reference_files_unchanged(converted):
    _, cfg, _, _ = converted
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    assert "freq_shift" not in DiTConfig().to_dict() and "norm_eps" not in DiTConfig().to_dict()
    with pytest.raises(ValueError, match="freq_shift"):
        DiTConfig(freq_shift="1").validate()


def test_refuses_per_block_embedders_that_differ(tmp_path):
    reference_dit(tie=False).save_pretrained(tmp_path)
    with pytest.raises(ConvertError, match="block 1's timestep_embedder differs from block 0's") as e:
        load_model(tmp_path)
    assert "\n" not in str(e.value)


def test_broken_diffusers_files_fail_with_one_line(converted, tmp_path):
    _, _, _, folder = converted
    good = json.loads((folder / "transformer" / "config.json").read_text())
    from safetensors.torch import load_file
    sd = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")

    def fails(tensors, match, config=good):
        (tmp_path / "config.json").write_text(json.dumps(config))
        save_file(tensors, tmp_path / "diffusion_pytorch_model.safetensors")
        with pytest.raises(DitwebError) as e:       # ConvertError, or CheckpointError from load_model's checks
            load_model(tmp_path)
        assert match in str(e.value) and "\n" not in str(e.value), str(e.value)

    fails({k: v for k, v in sd.items() if k != "proj_out_2.bias"}, "missing tensor 'proj_out_2.bias'")
    fails({**sd, "transformer_blocks.0.attn1.to_q.weight": torch.zeros(D, D + 1)}, "to_q/to_k/to_v.weight differ in shape")
    fails({**sd, "transformer_blocks.0.norm2.weight": torch.zeros(D)}, "unexpected tensor 'transformer_blocks.0.norm2.weight'")
    fails({**sd, "proj_out_1.weight": torch.zeros(3 * D, D)}, "tensor final_layer.adaLN_modulation.1.weight is [96, 32]")
    fails({**sd, "pos_embed.proj.weight": torch.zeros(D)}, "tensor shapes that no DiT has")
    fails({**sd, "proj_out_2.weight": torch.zeros(())}, "tensor shapes that no DiT has")
    fails(sd, "3 heads x 16 = 48 channels, the tensors have 32", {**good, "num_attention_heads": 3})
    fails(sd, "field 'norm_type'", {**good, "norm_type": "ada_norm"})
    fails(sd, "missing field 'sample_size'", {k: v for k, v in good.items() if k != "sample_size"})
    fails(sd, "position table, larger than all", {**good, "sample_size": 1024})
    fails(sd, "not a DiTTransformer2DModel", {**good, "_class_name": "AutoencoderKL"})
    fails(sd, "norm_eps must be a number", {**good, "norm_eps": 0.5})
    save_file(sd, tmp_path / "bare.safetensors")
    with pytest.raises(ConvertError, match="without its config.json"):
        load_model(tmp_path / "bare.safetensors")


def test_sample_reads_a_diffusers_folder(converted, tmp_path):
    from ditweb.cli import main
    _, _, _, folder = converted
    assert main(["sample", str(folder), "--n", "1", "--steps", "2", "--no-clip", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample_000.png").is_file()
