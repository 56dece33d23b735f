"""Excitation backprop through TorchRay: hand-computed maps on a tiny net, refused models, ResNets."""

import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods import registry

from tests.helpers.methods import TinyConv, images
from tests.helpers.models import classifier_of

pytest.importorskip("torchray.attribution.excitation_backprop")

from pipeline.methods.excitation import excitation_method, register_all  # noqa: E402


def call(name, classifier, x, targets, **options):
    return excitation_method(name).fn(classifier, x, targets, targets, **options)


def setup():
    module = TinyConv(channels=4, kernel=1, seed=2)
    x, targets = images(2, seed=3), torch.tensor([1, 2])
    with torch.no_grad():
        act = module.act(module.conv(x))  # (2, 4, 16, 16), non-negative
    return module, classifier_of(module), x, targets, act


def test_excitation_backprop_by_hand():
    module, classifier, x, targets, act = setup()
    heat = call("excitation_backprop", classifier, x, targets, layer="act")
    # winning probabilities, top down: the linear layer passes P(k) = x_k W+_ck / sum_j x_j W+_cj to
    # the pooled features x = mean_u A_ku, and the average pool passes A_ku / (N x_k) of it to each
    # position; the map sums over the channels
    pooled = act.mean((2, 3))
    positive = module.fc.weight[targets].clamp_min(0)
    share = positive / (positive * pooled).sum(1, keepdim=True)  # (2, 4): P(k) / x_k
    expected = (act * share[:, :, None, None]).sum(1) / 256
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(heat.sum((1, 2, 3)), torch.ones(2), rtol=1e-4, atol=0)  # probability is conserved


def test_contrastive_excitation_backprop_by_hand():
    module, classifier, x, targets, act = setup()
    heat = call("contrastive_excitation_backprop", classifier, x, targets, layer="act")
    # the contrast: the same propagation through the negated classifier, taken at the pool's output
    # (the default contrast layer) and subtracted there
    pooled = act.mean((2, 3))
    share = {}
    for sign in (1, -1):
        positive = (sign * module.fc.weight[targets]).clamp_min(0)
        share[sign] = positive / (positive * pooled).sum(1, keepdim=True)
    expected = (act * (share[1] - share[-1])[:, :, None, None]).sum(1).clamp_min(0) / 256
    torch.testing.assert_close(heat[:, 0], expected, rtol=1e-4, atol=1e-7)
    assert (expected == 0).any() and (expected > 0).any()
    options = excitation_method("contrastive_excitation_backprop").fn.check(classifier, {"layer": "act"})
    assert options == {"layer": "act", "contrast_layer": "pool", "classifier_layer": None}


class Residual(nn.Module):
    """conv -> ReLU -> (x + conv(x)) -> pool -> linear: a skip connection TorchRay does not rewrite."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU()
        self.branch = nn.Conv2d(4, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.act(self.conv(x))
        return self.fc(self.pool(a + self.branch(a)).flatten(1))


def test_unsupported_operations_are_refused_by_name():
    classifier = classifier_of(Residual())
    x, targets = images(1), torch.tensor([0])
    with pytest.raises(ConfigError, match=r"from layer 'act'.*AddBackward0"):
        call("excitation_backprop", classifier, x, targets, layer="act")
    # after the addition the path is pool and linear only
    assert call("excitation_backprop", classifier, x, targets, layer="pool").shape == (1, 1, 16, 16)
    with pytest.raises(ConfigError, match=r"no option 'layers'; options: layer, classifier_layer"):
        excitation_method("excitation_backprop").fn.check(classifier, {"layers": "act"})
    with pytest.raises(ConfigError, match=r"unknown layer 'layer4'.*conv, act"):
        excitation_method("excitation_backprop").fn.check(classifier, {"layer": "layer4"})


def test_a_torchvision_resnet_runs_batched_on_a_patched_copy():
    torchvision = pytest.importorskip("torchvision")
    module = torchvision.models.resnet18(num_classes=3)
    classifier = classifier_of(module, (32, 32))
    x, targets = images(2, (32, 32), seed=4), torch.tensor([0, 2])
    batched = call("excitation_backprop", classifier, x, targets, layer="layer3")
    single = torch.cat([call("excitation_backprop", classifier, x[i:i + 1], targets[i:i + 1], layer="layer3")
                        for i in range(2)])
    assert batched.shape == (2, 1, 32, 32) and batched.abs().sum() > 0
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    contrastive = call("contrastive_excitation_backprop", classifier, x, targets, layer="layer3")
    assert contrastive.shape == (2, 1, 32, 32) and contrastive.min() >= 0
    # the skip connections were rewritten on a copy, not on the user's model
    assert not any(hasattr(block, "skip") for block in module.modules())


def test_both_names_register():
    register_all()
    method = registry.get_method("excitation_backprop")
    assert method.layer and method.options == {"layer": None, "classifier_layer": None}
    assert "clamped" in registry.get_method("contrastive_excitation_backprop").reduction
