"""The forward pass as ONNX (opset 17, torch's legacy exporter: its opset-17 graph loads in onnxruntime,
the dynamo exporter's opset-17 Split does not, measured with torch 2.13 and the dev extra's onnxruntime). Batch is a
dynamic axis."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from dit_model.model import DiT

OPSET = 17


class _Forward(torch.nn.Module):
    """int64 t and y inputs, as the DiT expects them."""

    def __init__(self, model: DiT):
        super().__init__()
        self.model = model

    def forward(self, x, t, y):
        return self.model(x, t, y)


def export_onnx(model: DiT, path: str | os.PathLike) -> Path:
    cfg = model.cfg
    x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    t = torch.tensor([10, 500], dtype=torch.long)
    y = torch.tensor([0, cfg.num_classes], dtype=torch.long)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Forward(model.float().eval()), (x, t, y), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["x", "t", "y"], output_names=["out"],
                          dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "y": {0: "batch"}, "out": {0: "batch"}})
    return path
