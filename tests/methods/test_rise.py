"""``rise``: equal to TorchRay's ``rise`` for the same seed, independent of batching, options checked."""

import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods import registry
from pipeline.methods.rise import CPU_NUM_MASKS, DEFAULTS, rise_draws, rise_masks, rise_method, rise_saliency

from tests.helpers.methods import TinyConv, images
from tests.helpers.models import classifier_of

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


class LogOdds(nn.Module):
    """The network's softmax probabilities as log-odds, so TorchRay's sigmoid gives them back."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        return torch.logit(self.network(x).double().softmax(1)).float()


@pytest.mark.parametrize("size, num_cells", [((16, 16), 5), ((20, 24), 7)])
def test_rise_equals_torchrays(size, num_cells):
    rise = pytest.importorskip("torchray.attribution.rise")
    module = TinyConv(channels=4, kernel=3, seed=1)
    classifier = classifier_of(module, size, MEAN, STD)
    x, targets = images(3, size, seed=2), torch.tensor([0, 2, 1])
    ours = rise_saliency(classifier, x, targets, num_masks=100, num_cells=num_cells, seed=3, batch_size=64)
    # TorchRay: the same seed draws the same masks; it masks the input it is given (the normalised
    # image), divides by N (not N p) and scores with a sigmoid of the model's output
    theirs = rise.rise(LogOdds(classifier.module), classifier.normalize(x), seed=3, num_masks=100,
                       num_cells=num_cells)
    theirs = theirs[torch.arange(3), targets][:, None]
    assert ours.shape == (3, 1, *size)
    torch.testing.assert_close(ours * 0.5, theirs, rtol=0, atol=1e-4)
    assert theirs.std() > 1e-3  # a real map, not a constant


def test_rise_masks_are_torchrays_masks():
    rise = pytest.importorskip("torchray.attribution.rise")
    # a "model" returning the log-odds of one pixel of its input makes TorchRay's map the mean of
    # mask * mask value at that pixel: compare the masks through it, mask by mask
    size, num_cells = (18, 18), 4
    draws = rise_draws(40, num_cells, size, 0.5, seed=7)
    ours = rise_masks(draws, size, 0, 40, "cpu")
    for pixel in [(0, 0), (9, 4), (17, 17)]:
        def probe(z, p=pixel):
            return torch.logit(z[:, :1, p[0], p[1]].double().clamp(1e-9, 1 - 1e-9)).float()

        theirs = rise.rise(probe, torch.ones(1, 3, *size), seed=7, num_masks=40, num_cells=num_cells)[0, 0]
        expected = (ours[:, pixel[0], pixel[1], None, None] * ours).mean(0)
        torch.testing.assert_close(theirs, expected, rtol=0, atol=1e-5)


def test_rise_does_not_depend_on_the_batch_or_the_chunking():
    classifier = classifier_of(TinyConv(channels=3, kernel=3, seed=4), (16, 16))
    x, targets = images(3, seed=5), torch.tensor([1, 0, 2])
    together = rise_saliency(classifier, x, targets, num_masks=70, num_cells=4, seed=1, batch_size=48)
    alone = torch.cat([rise_saliency(classifier, x[i:i + 1], targets[i:i + 1], num_masks=70, num_cells=4, seed=1,
                                     batch_size=5) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    other_seed = rise_saliency(classifier, x, targets, num_masks=70, num_cells=4, seed=2, batch_size=48)
    assert not torch.allclose(together, other_seed)


def test_a_constant_model_gives_the_mean_mask():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.0, 1.0, 2.0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 3)

    classifier = classifier_of(Constant(), (12, 12))
    heat = rise_saliency(classifier, images(1, (12, 12)), torch.tensor([2]), num_masks=50, num_cells=3, seed=0)
    probability = torch.tensor([0.0, 1.0, 2.0]).softmax(0)[2]
    # P_target is the same for every mask, so the map is P * (sum of the masks) / (N p)
    masks = rise_masks(rise_draws(50, 3, (12, 12), 0.5, 0), (12, 12), 0, 50, "cpu")
    torch.testing.assert_close(heat[0, 0], probability * masks.sum(0) / 25)


def test_rise_options_are_checked_and_the_cpu_default_recorded():
    method = rise_method()
    assert method.options == DEFAULTS and method.name == "rise"
    classifier = classifier_of(TinyConv(), (16, 16))
    resolved = method.fn.check(classifier, {"seed": "3"})
    assert resolved["num_masks"] == CPU_NUM_MASKS and resolved["seed"] == 3 and resolved["num_cells"] == 7
    with pytest.raises(ConfigError, match=r"no option 'masks'; options: num_masks, num_cells, p, seed, batch_size"):
        method.fn.check(classifier, {"masks": 10})
    with pytest.raises(ConfigError, match="p must be in"):
        method.fn.check(classifier, {"p": "1.5"})
    with pytest.raises(ConfigError, match="num_cells=32 exceeds"):
        method.fn.check(classifier, {"num_cells": 32})
    heat = method.fn(classifier, images(2), torch.tensor([0, 1]), torch.tensor([0, 1]), num_masks="20")
    assert heat.shape == (2, 1, 16, 16) and torch.isfinite(heat).all()
    from pipeline.methods.rise import register_all

    register_all()
    assert registry.get_method("rise").reduction.startswith("probability-weighted")
