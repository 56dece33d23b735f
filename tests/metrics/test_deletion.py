"""Deletion/insertion curves on a hand-built model whose answers are worked out on paper."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.metrics import (
    CausalMode,
    auc,
    blur_substrate,
    causal_curves,
    pixel_order,
    zero_substrate,
)
from tests.helpers.models import tiny_convnet


class SumModel(nn.Module):
    """Two classes with softmax probability p0 = 0.1 + 0.2 * sum(channel 0), p1 = 1 - p0.

    The logits are log(p0), log(p1), so the softmax gives p0 back exactly (up to rounding).
    With channel 0 in {0, 1} on at most 4 pixels, p0 stays in [0.1, 0.9].
    """

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        p = 0.1 + 0.2 * x[:, 0].sum(dim=(1, 2))
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def hand_image():
    """(1, 3, 4, 4): channel 0 is 1 on the top-left 2x2 block (flat 0, 1, 4, 5), else 0."""
    image = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    image[0, 0, :2, :2] = 1.0
    image[0, 1:] = torch.arange(32, dtype=torch.float64).view(2, 4, 4)  # ignored by the model
    return image


def hand_saliency():
    """(1, 1, 4, 4): order 5, 0, 4, 1 (the block), then the 0.1 ties in raster order."""
    sal = torch.full((1, 1, 4, 4), 0.1)
    sal[0, 0, 0, 0], sal[0, 0, 0, 1], sal[0, 0, 1, 0], sal[0, 0, 1, 1] = 0.9, 0.7, 0.8, 1.0
    return sal


HAND_ORDER = [5, 0, 4, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
# step 3 on 16 pixels: ceil(16/3) = 6 steps, 7 scores after 0, 3, 6, 9, 12, 15, 16 pixels.
# Deletion: 3 moved = {5, 0, 4} leaves one block pixel -> 0.1 + 0.2 = 0.3; 6 moved = whole block.
HAND_DELETION = [0.9, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1]
HAND_DELETION_AUC = (sum(HAND_DELETION) - 0.9 / 2 - 0.1 / 2) / 6  # = 1.2 / 6 = 0.2
HAND_INSERTION = [0.1, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9]
HAND_INSERTION_AUC = (sum(HAND_INSERTION) - 0.1 / 2 - 0.9 / 2) / 6  # = 5.6 / 6


def test_pixel_order_descending_with_raster_tie_break():
    assert pixel_order(hand_saliency()).tolist() == [HAND_ORDER]
    # All equal: pure raster order. (B, H, W) input is accepted too.
    assert pixel_order(torch.zeros(2, 3, 3)).tolist() == [list(range(9))] * 2
    ties = torch.tensor([[[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]]])
    assert pixel_order(ties).tolist() == [[1, 3, 2, 5, 0, 4]]


def test_pixel_order_rejects_nan_and_bad_shapes():
    with pytest.raises(ConfigError, match="NaN"):
        pixel_order(torch.tensor([[[float("nan"), 1.0]]]))
    with pytest.raises(ConfigError, match="saliency"):
        pixel_order(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize(
    "mode, expected, expected_auc",
    [
        ("deletion", HAND_DELETION, HAND_DELETION_AUC),
        (CausalMode.INSERTION, HAND_INSERTION, HAND_INSERTION_AUC),
    ],
)
def test_hand_curves_and_auc(mode, expected, expected_auc):
    image = hand_image()
    curves = causal_curves(
        SumModel(), image, hand_saliency(), torch.tensor([0]), zero_substrate(image), mode, step=3
    )
    assert curves.shape == (1, 7)  # partial last step: 16 = 5 * 3 + 1
    assert curves.dtype == torch.float32
    torch.testing.assert_close(curves[0], torch.tensor(expected), atol=1e-6, rtol=0)
    assert auc(curves).item() == pytest.approx(expected_auc, abs=1e-6)


def test_target_one_scores_the_complement():
    image = hand_image()
    curves = causal_curves(
        SumModel(), image, hand_saliency(), torch.tensor([1]), zero_substrate(image), "deletion",
        step=3,
    )
    torch.testing.assert_close(curves[0], 1 - torch.tensor(HAND_DELETION), atol=1e-6, rtol=0)


@pytest.mark.parametrize("step, n_points", [(1, 17), (5, 5), (15, 3), (16, 2), (100, 2)])
def test_number_of_points_and_final_all_substrate_score(step, n_points):
    image = hand_image()
    substrate = torch.zeros_like(image)
    substrate[0, 0, 3, 3] = 1.0  # substrate alone scores 0.1 + 0.2 = 0.3
    model = SumModel()
    args = (image, hand_saliency(), torch.tensor([0]), substrate)
    deletion = causal_curves(model, *args, "deletion", step=step)
    insertion = causal_curves(model, *args, "insertion", step=step)
    assert deletion.shape == insertion.shape == (1, n_points) == (1, math.ceil(16 / step) + 1)
    assert deletion[0, 0].item() == pytest.approx(0.9) == insertion[0, -1].item()
    assert deletion[0, -1].item() == pytest.approx(0.3) == insertion[0, 0].item()


def random_case(b=3, h=5, w=6, classes=4, seed=0):
    """A fixed random conv model and inputs; saliency quantised so it has many ties."""
    model = tiny_convnet(classes, seed)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, h, w, generator=gen)
    saliency = (torch.rand(b, 1, h, w, generator=gen) * 4).floor()
    targets = torch.randint(classes, (b,), generator=gen)
    return model, images, saliency, targets, blur_substrate(images, kernel_size=3, sigma=1.0)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_chunking_and_batch_independence(mode):
    model, images, saliency, targets, substrate = random_case()
    ref = causal_curves(model, images, saliency, targets, substrate, mode, step=4, chunk=1)
    assert ref.shape == (3, 9)  # ceil(30 / 4) + 1
    for chunk in (3, 100):
        out = causal_curves(model, images, saliency, targets, substrate, mode, step=4, chunk=chunk)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    for i in range(3):
        one = causal_curves(model, images[i : i + 1], saliency[i : i + 1], targets[i : i + 1],
                            substrate[i : i + 1], mode, step=4, chunk=5)
        torch.testing.assert_close(one[0], ref[i], atol=1e-6, rtol=1e-6)


def test_forward_sees_at_most_chunk_inputs():
    image = hand_image().expand(3, -1, -1, -1)
    model = SumModel()
    causal_curves(model, image, hand_saliency().expand(3, -1, -1, -1), torch.tensor([0, 0, 1]),
                  zero_substrate(image), "deletion", step=3, chunk=4)
    assert model.calls == [4, 4, 4, 4, 4, 1]  # 3 images x 7 points = 21 inputs


def rise_reference(model, image, saliency, target, substrate, mode, step):
    """A per-image loop in the style of RISE's CausalMetric.single_run (no ties in saliency)."""
    hw = image.shape[-1] * image.shape[-2]
    order = np.flip(np.argsort(saliency.reshape(-1).numpy()), axis=0).copy()
    start, finish = (image, substrate) if mode == "deletion" else (substrate, image)
    start = start.clone().reshape(3, hw)
    finish = finish.reshape(3, hw)
    scores = []
    for i in range(math.ceil(hw / step) + 1):
        probs = torch.softmax(model(start.reshape(1, *image.shape)), dim=1)
        scores.append(probs[0, target].item())
        coords = order[step * i : step * (i + 1)]
        start[:, coords] = finish[:, coords]
    return torch.tensor(scores)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_matches_per_image_rise_loop(mode):
    model, images, _, targets, substrate = random_case(seed=1)
    saliency = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(2))  # no ties
    curves = causal_curves(model, images, saliency, targets, substrate, mode, step=7, chunk=8)
    with torch.no_grad():
        for i in range(3):
            ref = rise_reference(model, images[i], saliency[i], targets[i], substrate[i], mode, 7)
            torch.testing.assert_close(curves[i], ref, atol=1e-6, rtol=1e-6)


def test_auc_matches_numpy_trapezoid():
    curves = torch.rand(5, 29, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = np.trapezoid(curves.numpy(), dx=1 / 28, axis=1)
    np.testing.assert_allclose(auc(curves).numpy(), expected, rtol=1e-12)
    assert auc(torch.tensor([0.0, 1.0])).item() == pytest.approx(0.5)
    assert auc(torch.tensor([1.0, 1.0, 1.0])).item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="P >= 2"):
        auc(torch.tensor([1.0]))


def test_blur_substrate_matches_hand_gaussian():
    image = torch.zeros(1, 3, 21, 21)
    image[0, :, 10, 10] = 1.0  # an impulse far from the border: the output is the kernel
    out = blur_substrate(image)
    x = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * 5.0**2))
    g /= g.sum()
    kernel = torch.outer(g, g).float()
    for c in range(3):
        torch.testing.assert_close(out[0, c, 5:16, 5:16], kernel, atol=1e-6, rtol=1e-5)
    assert out[0, 0, :5].abs().max() == 0  # outside the 11x11 support
    flat = torch.full((2, 3, 12, 12), 0.7)
    torch.testing.assert_close(blur_substrate(flat), flat)  # normalised kernel, reflect border


def test_zero_substrate_is_zeros_like():
    images = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    out = zero_substrate(images)
    assert out.shape == images.shape and out.dtype == images.dtype and not out.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "erase"}, "mode must be one of 'deletion', 'insertion'; got 'erase'"),
        ({"step": 0}, "step must be an integer >= 1; got 0"),
        ({"chunk": 2.5}, "chunk must be an integer >= 1; got 2.5"),
        ({"targets": torch.tensor([0, 1])}, "targets must be an integer tensor of shape"),
        ({"saliency": torch.zeros(1, 1, 4, 5)}, "saliency shape"),
        ({"substrate": torch.zeros(1, 3, 5, 4)}, "substrate shape"),
    ],
)
def test_causal_curves_errors_name_the_argument(kwargs, match):
    image = hand_image()
    args = {"forward": SumModel(), "images": image, "saliency": hand_saliency(),
            "targets": torch.tensor([0]), "substrate": zero_substrate(image), "mode": "deletion"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        causal_curves(**args)


def test_blur_substrate_errors():
    with pytest.raises(ConfigError, match="kernel_size"):
        blur_substrate(torch.zeros(1, 3, 20, 20), kernel_size=4)
    with pytest.raises(ConfigError, match="sigma"):
        blur_substrate(torch.zeros(1, 3, 20, 20), sigma=0.0)
    with pytest.raises(ConfigError, match="H, W > kernel_size // 2 = 5"):
        blur_substrate(torch.zeros(1, 3, 4, 4))
