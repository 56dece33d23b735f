"""``cam:`` methods (pytorch-grad-cam): hand-computed CAMs on a tiny conv net, options and errors."""

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.methods import registry

from tests.helpers.methods import TinyConv, images
from tests.helpers.models import classifier_of

pytest.importorskip("pytorch_grad_cam")

from pipeline.methods.cam import MEMBERS, cam_method, register_all  # noqa: E402


def scaled(cam: torch.Tensor) -> torch.Tensor:
    """The library's per-image scaling: ReLU'd map minus its minimum, over its maximum (+1e-7)."""
    cam = cam.clamp_min(0)
    cam = cam - cam.amin((1, 2), keepdim=True)
    return cam / (1e-7 + cam.amax((1, 2), keepdim=True))


def setup():
    module = TinyConv(channels=4, kernel=1, seed=3)
    x, targets = images(2, seed=4), torch.tensor([2, 0])
    with torch.no_grad():
        conv = module.conv(x)
    return module, classifier_of(module), x, targets, conv, module.fc.weight[targets] / 256


def test_gradcam_and_xgradcam_by_hand():
    module, classifier, x, targets, conv, w = setup()
    heat = cam_method("GradCAM").fn(classifier, x, targets, targets, layer="act")
    # layer "act" (A = ReLU(conv)): d logit / d A_k,u = W_ck / HW everywhere, so alpha_k = W_ck / HW
    expected = scaled((w[:, :, None, None] * conv.clamp_min(0)).sum(1))
    assert heat.shape == (2, 1, 16, 16)
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-4, atol=1e-5)
    # XGradCAM on the default layer "conv": alpha_k = sum_u(g_ku A_ku) / sum_u A_ku with the gradient
    # masked by the ReLU, g_ku = W_ck / HW [A_ku > 0]
    grad = w[:, :, None, None] * (conv > 0)
    alpha = (grad * conv).sum((2, 3), keepdim=True) / (conv.sum((2, 3), keepdim=True) + 1e-7)
    expected = scaled((alpha * conv).sum(1))
    heat = cam_method("XGradCAM").fn(classifier, x, targets, targets)
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_scorecam_by_hand_with_the_batch_size_option():
    module, classifier, x, targets, conv, _ = setup()
    act = conv.clamp_min(0)
    low, high = act.amin((2, 3), keepdim=True), act.amax((2, 3), keepdim=True)
    normalised = (act - low) / (high - low + 1e-8)  # (2, 4, 16, 16): each channel in [0, 1]
    with torch.no_grad():
        # the target's logit on the image times each channel's map, softmax over channels
        scores = torch.stack([module(x[i:i + 1] * normalised[i][:, None]).gather(
            1, targets[i].repeat(4)[:, None])[:, 0] for i in range(2)])
    weights = scores.softmax(1)[:, :, None, None]
    expected = scaled((weights * act).sum(1))
    heat = cam_method("ScoreCAM").fn(classifier, x, targets, targets, layer="act", batch_size="3")
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_options_members_and_layers_are_checked():
    classifier = classifier_of(TinyConv())
    with pytest.raises(ConfigError, match="cam:GradCAM.*cam:ScoreCAM"):
        cam_method("GradCam")
    with pytest.raises(ConfigError, match=r"no option 'batchsize'; options: layer, batch_size, "
                                          r"ratio_channels_to_ablate, aug_smooth, eigen_smooth"):
        cam_method("AblationCAM").fn.check(classifier, {"batchsize": 4})
    with pytest.raises(ConfigError, match=r"unknown layer 'features'.*conv, act"):
        cam_method("GradCAMPlusPlus").fn.check(classifier, {"layer": "features"})
    with pytest.raises(ConfigError, match="ShapleyCAM needs second derivatives at layer 'act'"):
        cam_method("ShapleyCAM").fn(classifier, images(1), torch.zeros(1, dtype=torch.long),
                                    torch.zeros(1, dtype=torch.long), layer="act")
    unbiased = TinyConv()
    unbiased.conv.bias = None
    with pytest.raises(ConfigError, match="FullGrad needs"):
        cam_method("FullGrad").fn(classifier_of(unbiased), images(1), torch.zeros(1, dtype=torch.long),
                                  torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("member", sorted(set(MEMBERS) - {"ScoreCAM", "GradCAM", "XGradCAM"}))
def test_every_member_gives_one_map_per_image(member):
    classifier = classifier_of(TinyConv(channels=4, kernel=3, seed=5))
    layer = "conv" if member == "ShapleyCAM" else "act"  # ShapleyCAM needs a nonlinearity after its layer
    heat = cam_method(member).fn(classifier, images(2, seed=6), torch.tensor([0, 1]), torch.tensor([0, 1]),
                                 layer=layer)
    assert heat.shape == (2, 1, 16, 16) and torch.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() <= 1 + 1e-6


def test_the_family_registers():
    register_all()
    assert "cam:ScoreCAM" in registry.method_names()
    method = registry.get_method("cam:AblationCAM")
    assert method.layer and method.options["batch_size"] == 32 and method.options["layer"] is None
