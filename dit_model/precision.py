"""Training precision: what `--precision auto` picks from the detected capability (bf16 autocast or f32)."""
from __future__ import annotations

import torch

from ditformat.errors import UsageError

from .model import DiTConfig

PRECISIONS = ("auto", "f32", "bf16")

# bf16 autocast pays on a CPU only where its matrix units do bf16 natively (Intel AMX, or the
# AVX512-BF16 dot products), and only for models whose matrix products dominate the step: measured
# (bench/results/train.md) 1.3-1.8x for Favicon-T/2, Favicon-S/2 and DiT-S/2, none for Favicon-T/4
# or the 8x8 Favicon-N/2, where elementwise work and the casts cost as much as the products save.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_BF16_MIN_GFLOPS = 0.25            # forward Gflops per image; T/2 is 0.54, T/4 0.11


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where unknown, e.g. not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_precision(device_type: str, gflops: float, flags=frozenset(), cuda_bf16: bool = False) -> tuple[str, str]:
    """(precision, why) that --precision auto picks, from the detected capability only:
    CUDA: bf16 where the GPU supports it; CPU: bf16 when it has bf16 matrix instructions and the
    model is large enough to profit (CPU_BF16_MIN_GFLOPS), else f32."""
    if device_type == "cuda":
        return ("bf16", "the GPU supports bf16") if cuda_bf16 else ("f32", "the GPU has no bf16")
    if device_type != "cpu":
        return "f32", f"no bf16 rule for {device_type}"
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    if not native:
        return "f32", "the CPU has no bf16 matrix instructions (amx_bf16 / avx512_bf16)"
    if gflops < CPU_BF16_MIN_GFLOPS:
        return "f32", f"{native[0]} present, but the model is too small to profit ({gflops:.2f} < {CPU_BF16_MIN_GFLOPS} Gflops)"
    return "bf16", f"the CPU has {native[0]}"


def resolve_precision(precision: str, device, cfg: DiTConfig) -> tuple[str, str]:
    """--precision on this device: f32 / bf16 as asked, or auto's pick with the reason."""
    from .model import forward_gflops
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "asked for"
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if device.type == "cpu" else frozenset()
    return auto_precision(device.type, forward_gflops(cfg), flags, cuda_bf16)
