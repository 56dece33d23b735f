"""Extremal perturbation's smooth-max masks, damped SGD and configuration records (no model needed)."""

import pytest
import torch

from pipeline.solve import masks as masklib
from pipeline.config import MaskConfig, OptimConfig, PRESETS, from_dict, preset, to_dict


def _direct(params: torch.Tensor, step: int, sigma: float, coldness: float) -> torch.Tensor:
    """The smooth max written from its definition, pixel by pixel over the cells: (N, out, out)."""
    geometry = masklib._geometry(params.shape[-1], step, sigma, "cpu", None)
    out, margin, pad = geometry.out, geometry.margin, geometry.padding
    grid = params.shape[-1]
    rows = []
    for u in range(out):
        row = []
        for v in range(out):
            values = []
            for i in range(u // step - pad, u // step - pad + geometry.taps):
                for j in range(v // step - pad, v // step - pad + geometry.taps):
                    d = ((u - margin - step * i) ** 2 + (v - margin - step * j) ** 2) ** 0.5
                    w = torch.exp(torch.tensor(-2 * max(d / sigma - 0.5, 0) ** 2, dtype=params.dtype))
                    inside = 0 <= i < grid and 0 <= j < grid
                    values.append(w * (params[:, i, j] if inside else torch.zeros_like(params[:, 0, 0])))
            values = torch.stack(values, -1)
            row.append((values * torch.softmax(coldness * values, -1)).sum(-1))
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


@pytest.mark.parametrize("save_bytes", [2**30, 0])  # backward from kept tensors, or recomputed
def test_smooth_max_is_its_definition_and_its_gradient_is_exact(save_bytes, monkeypatch):
    monkeypatch.setattr(masklib._SmoothMax, "SAVE_BYTES", save_bytes)
    params = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    full = masklib._SmoothMax.apply(params, masklib._geometry(3, 2, 2.0, "cpu", None), 20.0)
    assert torch.allclose(full, _direct(params, 2, 2.0, 20.0), atol=1e-6)
    geometry = masklib._geometry(3, 2, 2.0, "cpu", None)
    assert torch.autograd.gradcheck(lambda p: masklib._SmoothMax.apply(p, geometry, 20.0), (params,), atol=1e-4)


def test_generate_crops_the_margin_and_rejects_a_grid_too_small():
    config = MaskConfig(size=32, upsample="smooth-max", smooth_sigma=21.0, step=7)
    on_input, full = masklib.generate(torch.ones(1, 2, 32, 32), (224, 224), config)
    assert on_input.shape == (1, 2, 224, 224) and full.shape == (1, 2, 260, 260)
    assert torch.equal(on_input, full[..., 21:245, 21:245])
    assert torch.equal(masklib.upsample(torch.ones(1, 2, 32, 32), (224, 224), config), on_input)
    with pytest.raises(Exception, match="mask.size=32"):
        masklib.generate(torch.ones(1, 1, 20, 20), (224, 224), config)


def test_row_optimizer_damps_like_torch_sgd():
    from pipeline.solve.stream import RowOptimizer

    optim = OptimConfig(optimizer="sgd", lr=0.01, momentum=0.9, dampening=0.9)
    ours = torch.zeros(2, 1, 3, 3)
    theirs = ours.clone().requires_grad_(True)
    rows = RowOptimizer(ours, optim)
    sgd = torch.optim.SGD([theirs], lr=0.01, momentum=0.9, dampening=0.9)
    for t in range(4):
        grad = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(t))
        rows.step(grad)
        theirs.grad = grad.clone()
        sgd.step()
    assert torch.allclose(ours, theirs.detach(), atol=1e-7)


def test_new_fields_are_recorded_only_where_used():
    for name, config in PRESETS.items():
        record = to_dict(config)
        assert from_dict(record) == config
        new = {"truncate", "padding", "interpolation"} & set(record["perturbation"])
        new |= {"step", "coldness", "flip"} & set(record["mask"]) | {"dampening"} & set(record["optim"])
        assert bool(new) == (name == "extremal"), (name, new)
    assert to_dict(preset("extremal"))["optim"]["dampening"] == 0.9
