import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from pipeline.solve.perturbations import BlurPyramid, PerturbationConfig, blend, gaussian_blur, median_blur, substrate
from pipeline.errors import ConfigError


@pytest.fixture
def images():
    return torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))


def test_gaussian_blur_matches_scipy(images):
    sigma = 3.0
    ours = gaussian_blur(images, sigma).numpy()
    radius = int(np.ceil(3 * sigma))
    # torch's "reflect" padding is scipy's "mirror" (the edge pixel is not repeated).
    ref = ndi.gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=radius / sigma)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_seed_gaussian_is_11_by_11_sigma_5(images):
    ours = gaussian_blur(images, 5.0, 11).numpy()
    ref = ndi.gaussian_filter(images.numpy(), sigma=(0, 0, 5, 5), mode="mirror", truncate=5 / 5)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_median_blur_matches_scipy(images):
    ours = median_blur(images, 11).numpy()
    ref = ndi.median_filter(images.numpy(), size=(1, 1, 11, 11), mode="nearest")
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_seed_average_is_the_mean_of_its_two_blurs(images):
    expected = 0.5 * (gaussian_blur(images, 5.0, 11) + median_blur(images, 11))
    torch.testing.assert_close(substrate(images, PerturbationConfig(kind="jacobgil-average")), expected)


def test_blend_keeps_where_mask_is_one(images):
    mask = torch.zeros(2, 1, 40, 48)
    mask[..., :20, :] = 1
    p = torch.zeros_like(images)
    out = blend(images, mask, p)
    assert torch.equal(out[..., :20, :], images[..., :20, :]) and float(out[..., 20:, :].abs().max()) == 0


def test_constant_mean_colour(images):
    out = substrate(images, PerturbationConfig(kind="constant", constant="mean"))
    torch.testing.assert_close(out[:, :, 0, 0], images.mean(dim=(2, 3)))


def test_pyramid_ends_are_the_image_and_the_full_blur(images):
    pyramid = BlurPyramid(images, sigma0=10.0, levels=8)
    torch.testing.assert_close(pyramid(torch.ones(2, 1, 40, 48)), images)
    torch.testing.assert_close(pyramid(torch.zeros(2, 1, 40, 48)), gaussian_blur(images, 10.0))


def test_pyramid_interpolates_between_levels(images):
    pyramid = BlurPyramid(images, sigma0=7.0, levels=8)  # level l has sigma l
    mask = torch.full((2, 1, 40, 48), 1 - 2.5 / 7)  # sigma 2.5: halfway between levels 2 and 3
    expected = 0.5 * (gaussian_blur(images, 2.0) + gaussian_blur(images, 3.0))
    torch.testing.assert_close(pyramid(mask), expected, atol=1e-5, rtol=0)


def test_pyramid_gradient_matches_finite_differences():
    torch.manual_seed(1)
    images = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    pyramid = BlurPyramid(images, sigma0=4.0, levels=5)
    weights = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    # Values away from the level boundaries (multiples of 1/4), where the hat weights have kinks.
    mask = (torch.rand(1, 1, 16, 16, dtype=torch.float64) * 0.2 + 0.05).requires_grad_(True)
    (pyramid(mask) * weights).sum().backward()
    assert float(mask.grad.abs().sum()) > 0
    assert torch.autograd.gradcheck(lambda m: (pyramid(m) * weights).sum(), (mask,), eps=1e-6)


def test_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="modulated-blur"):
        PerturbationConfig(kind="sharpen")
