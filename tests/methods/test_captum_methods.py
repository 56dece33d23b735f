"""``captum:`` methods: hand-derived maps on tiny models, one per kind (gradient, perturbation, layer),
the ReLU6 view, options and errors."""

import warnings

import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods import registry
from pipeline.methods.captum_methods import MEMBERS, captum_method, register_all, relu_view, superpixels

from tests.helpers.methods import TinyConv, images, linear_model
from tests.helpers.models import classifier_of

pytest.importorskip("captum")
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")

REGION = (slice(4, 8), slice(8, 12))  # one 4 x 4 tile of a 16 x 16 image


def run(member, classifier, x, targets, **options):
    return captum_method(member).fn(classifier, x, targets, targets, **options)


def region_model() -> nn.Module:
    """logit 0 = the sum of the image over REGION (all channels); the model sees nothing else."""
    weights = torch.zeros(3, 16, 16)
    weights[:, REGION[0], REGION[1]] = 1
    return linear_model(weights)


def test_saliency_of_a_linear_model_is_the_absolute_weight():
    weights = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))
    heat = run("Saliency", classifier_of(linear_model(weights)), images(2), torch.zeros(2, dtype=torch.long))
    # d logit_0 / dx = weights everywhere; Simonyan's map is the maximum |.| over the channels
    expected = weights.abs().amax(0)
    assert heat.shape == (2, 1, 16, 16)
    torch.testing.assert_close(heat[:, 0], expected.expand(2, 16, 16))


@pytest.mark.parametrize("member", ["IntegratedGradients", "InputXGradient"])
def test_integrated_gradients_of_a_linear_model_is_input_times_weight(member):
    weights = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2))
    x = images(3)
    # options as the command line gives them: strings, coerced to Captum's types
    options = {"n_steps": "8", "internal_batch_size": "5"} if member == "IntegratedGradients" else {}
    heat = run(member, classifier_of(linear_model(weights)), x, torch.zeros(3, dtype=torch.long), **options)
    # a linear model's gradient is constant, so IG from the zero baseline is exactly x * w
    torch.testing.assert_close(heat[:, 0], (x * weights).abs().sum(1), rtol=1e-5, atol=1e-6)


def test_occlusion_is_nonzero_only_where_the_model_looks():
    x = images(2, seed=3)
    heat = run("Occlusion", classifier_of(region_model()), x, torch.zeros(2, dtype=torch.long), score="logit",
               sliding_window_shapes="4", strides=4)
    # tiles of 4 x 4 at stride 4: occluding (zeroing) REGION drops logit 0 by its sum; nothing else matters
    expected = torch.zeros(2, 16, 16)
    expected[:, REGION[0], REGION[1]] = x[:, :, REGION[0], REGION[1]].sum((1, 2, 3)).view(2, 1, 1)
    torch.testing.assert_close(heat[:, 0], expected)


def test_feature_ablation_drops_the_superpixels_that_cover_the_region():
    classifier = classifier_of(region_model())
    # four flat quadrants (different colours per image) plus noise: SLIC finds several segments
    quadrants = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    x = (0.8 * quadrants.repeat_interleave(8, 2).repeat_interleave(8, 3) + 0.2 * images(2, seed=4)).clamp(0, 1)
    options = {"score": "logit", "n_segments": 6, "compactness": 10.0, "sigma": 1.0}
    heat = run("FeatureAblation", classifier, x, torch.zeros(2, dtype=torch.long), **options)
    labels = superpixels(x, classifier, {**options})[:, 0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[REGION] = True
    for i in range(2):
        # each pixel's value: the logit lost when its superpixel is zeroed = the image summed over
        # (its superpixel and REGION)
        expected = torch.zeros(16, 16)
        for segment in labels[i].unique():
            where = labels[i] == segment
            expected[where] = (x[i].sum(0) * (where & inside)).sum()
        torch.testing.assert_close(heat[i, 0], expected)
        assert (heat[i, 0][~torch.isin(labels[i], labels[i][inside])] == 0).all()
        assert labels[i].unique().numel() >= 2


def test_layer_gradcam_of_a_tiny_conv_net_by_hand():
    module = TinyConv(channels=4, kernel=1)
    classifier = classifier_of(module)
    x = images(2, seed=5)
    targets = torch.tensor([0, 2])
    with torch.no_grad():
        conv = module.conv(x)
    weights = module.fc.weight[targets]  # (2, 4): d logit / d pooled feature
    # layer "act" (the ReLU output A): d y / d A_k,u = W_ck / HW, so alpha_k = W_ck / HW
    act = conv.clamp_min(0)
    expected = (weights[:, :, None, None] / 256 * act).sum(1).clamp_min(0)
    heat = run("LayerGradCam", classifier, x, targets, layer="act")
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-5, atol=1e-7)
    # the default layer (the gradcam baseline's: the last child with a convolution) is "conv", whose
    # gradient is masked by the ReLU: alpha_k = mean_u(W_ck / HW * [A_ku > 0])
    alpha = (weights[:, :, None, None] / 256 * (conv > 0)).mean((2, 3), keepdim=True)
    expected = (alpha * conv).sum(1).clamp_min(0)
    torch.testing.assert_close(run("LayerGradCam", classifier, x, targets)[:, 0], expected, rtol=1e-5, atol=1e-7)


def saturating_relu6_net() -> TinyConv:
    """A TinyConv with an in-place ReLU6 and weights large enough that some units pass 6."""
    module = TinyConv(channels=4, kernel=1, activation=nn.ReLU6(inplace=True), seed=6)
    with torch.no_grad():
        module.conv.weight.mul_(6)
    return module


def test_guided_backprop_and_deconvolution_on_relu6_by_hand():
    module = saturating_relu6_net()
    classifier = classifier_of(module)
    x = images(2, seed=7)
    targets = torch.tensor([1, 0])
    with torch.no_grad():
        z = module.conv(x)  # (2, 4, 16, 16)
    assert (z > 6).any() and (z < 0).any()
    g = (module.fc.weight[targets] / 256)[:, :, None, None]  # gradient at the ReLU6 output
    conv_w = module.conv.weight[:, :, 0, 0]  # (4 out, 3 in)
    # guided backprop: ReLU6's own mask (0 < z < 6), then only positive gradients pass
    passed = (g * ((z > 0) & (z < 6))).clamp_min(0)
    expected = torch.einsum("bkhw,kc->bchw", passed, conv_w).abs().amax(1)
    torch.testing.assert_close(run("GuidedBackprop", classifier, x, targets)[:, 0], expected, rtol=1e-5, atol=1e-7)
    # deconvolution: the positive part of the gradient, ignoring the forward mask
    passed = g.clamp_min(0).expand_as(z)
    expected = torch.einsum("bkhw,kc->bchw", passed, conv_w).abs().amax(1)
    torch.testing.assert_close(run("Deconvolution", classifier, x, targets)[:, 0], expected, rtol=1e-5, atol=1e-7)
    # the user's network is untouched: still an in-place ReLU6
    assert type(module.act) is nn.ReLU6 and module.act.inplace


def test_deeplift_on_relu6_sums_to_the_output_difference():
    from captum.attr import DeepLift

    module = saturating_relu6_net()
    classifier = classifier_of(module)
    x = images(2, seed=8)
    targets = torch.tensor([2, 1])
    view = relu_view(module)
    assert view is not module and not any(isinstance(m, nn.ReLU6) for m in view.modules())
    torch.testing.assert_close(view(x), module(x))
    attribution = DeepLift(view).attribute(x, target=targets)
    with torch.no_grad():
        delta = (module(x) - module(torch.zeros_like(x))).gather(1, targets[:, None])[:, 0]
    # DeepLift's summation-to-delta holds only if ReLU6 gets the rescale rule (the gradient would not:
    # some units saturate)
    torch.testing.assert_close(attribution.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-4)
    heat = run("DeepLift", classifier, x, targets)
    torch.testing.assert_close(heat[:, 0], attribution.abs().sum(1), rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_a_linear_model_is_the_absolute_weight():
    weights = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(9))
    classifier = classifier_of(linear_model(weights))
    torch.manual_seed(0)
    heat = run("NoiseTunnel", classifier, images(2), torch.zeros(2, dtype=torch.long), nt_samples=3)
    # the gradient of a linear model does not depend on the noise
    torch.testing.assert_close(heat[:, 0], weights.abs().amax(0).expand(2, 16, 16))
    # smoothgrad_sq averages squares (w^2), vargrad their variance (0 for a constant gradient)
    squared = run("NoiseTunnel", classifier, images(2), torch.zeros(2, dtype=torch.long), nt_samples=3,
                  nt_type="smoothgrad_sq")
    torch.testing.assert_close(squared[:, 0], weights.square().amax(0).expand(2, 16, 16))
    variance = run("NoiseTunnel", classifier, images(2), torch.zeros(2, dtype=torch.long), nt_samples=3,
                   nt_type="vargrad")
    assert variance.abs().max() < 1e-5
    options = captum_method("NoiseTunnel").fn.check(classifier, {"base": "IntegratedGradients", "n_steps": "4"})
    assert options["n_steps"] == 4 and options["nt_type"] == "smoothgrad" and options["nt_samples"] == 50


def test_smoothgrad_noise_is_a_function_of_each_images_seed():
    classifier = classifier_of(TinyConv(channels=3, kernel=3, seed=12))
    x, targets, seeds = images(3, seed=13), torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    fn = captum_method("NoiseTunnel").fn
    options = {"nt_samples": 5, "nt_samples_batch_size": 2, "stdevs": 0.5}
    batched = fn(classifier, x, targets, seeds, **options)
    single = torch.cat([fn(classifier, x[i:i + 1], targets[i:i + 1], seeds[i:i + 1], nt_samples=5,
                           nt_samples_batch_size=5, stdevs=0.5) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)
    noise_free = run("Saliency", classifier, x, targets)
    assert not torch.allclose(batched, noise_free, atol=1e-4)  # the noise matters on this model
    assert not torch.allclose(batched, fn(classifier, x, targets, seeds + 1, **options), atol=1e-5)


def test_a_batch_gives_each_image_its_own_map():
    module = TinyConv(channels=3, kernel=3, seed=10)
    classifier = classifier_of(module)
    x, targets = images(3, seed=11), torch.tensor([0, 1, 2])
    batched = run("IntegratedGradients", classifier, x, targets, n_steps=6)
    single = torch.cat([run("IntegratedGradients", classifier, x[i:i + 1], targets[i:i + 1], n_steps=6)
                        for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)


def test_unknown_member_option_and_layer_are_one_error_listing_what_exists():
    with pytest.raises(ConfigError, match="captum:IntegratedGradients.*captum:NoiseTunnel"):
        captum_method("IntegratedGradient")
    classifier = classifier_of(TinyConv())
    with pytest.raises(ConfigError, match=r"no option 'n_step'; options: .*n_steps.*internal_batch_size"):
        captum_method("IntegratedGradients").fn.check(classifier, {"n_step": 8})
    with pytest.raises(ConfigError, match=r"unknown layer 'layer4'.*conv, act"):
        captum_method("LayerGradCam").fn.check(classifier, {"layer": "layer4"})
    with pytest.raises(ConfigError, match="base must be one of"):
        captum_method("NoiseTunnel").fn.check(classifier, {"base": "Occlusion"})
    with pytest.raises(ConfigError, match="not a int"):
        captum_method("IntegratedGradients").fn.check(classifier, {"n_steps": "many"})
    with pytest.raises(ConfigError, match="no nn.ReLU"):
        run("GuidedBackprop", classifier_of(TinyConv(activation=nn.SiLU())), images(1),
            torch.zeros(1, dtype=torch.long))


def test_the_family_registers_and_records_its_settings():
    register_all()
    assert {f"captum:{m}" for m in MEMBERS} <= set(registry.method_names())
    method = registry.get_method("captum:IntegratedGradients")
    assert method.options["n_steps"] == 50 and method.options["score"] == "logit"
    assert "absolute" in method.reduction and not method.layer and not method.open_options
    layer_method = registry.get_method("captum:LayerGradCam")
    assert layer_method.layer and layer_method.options["relu_attributions"] is True
    assert registry.get_method("captum:Occlusion").options["score"] == "probability"
    with pytest.raises(ConfigError, match="captum:Saliency"):
        registry.get_method("captum:Salience")
