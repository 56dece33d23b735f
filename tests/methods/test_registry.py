"""The registry of named saliency methods: lookup, aliases, refusals, and what a method computes
(its raw map, then the per-image min-max normalisation)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.jobs.baselines import baseline_saliency
from pipeline.methods import get_method, method_names
from pipeline.methods.simple import minmax
from pipeline.models import Classifier
from tests.helpers.methods import red_minus_green
from tests.helpers.models import classifier_of

ROOT = Path(__file__).resolve().parents[2]


def test_the_simple_methods_are_registered_by_name():
    assert {"centre", "random", "gradient", "gradcam"} <= set(method_names())
    for name in ("centre", "random", "gradient", "gradcam"):
        method = get_method(name)
        assert method.name == name and callable(method.fn) and method.description
    assert get_method("center") is get_method("centre")
    assert get_method("gradcam").layer and not get_method("gradient").layer
    with pytest.raises(ConfigError, match="unknown saliency method 'smooth'; known: .*gradcam"):
        get_method("smooth")


def test_importing_the_registry_does_not_import_torch():
    code = ("import sys, pipeline.methods as m; m.method_names(); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'captum')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_minmax_by_hand():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[7.0, 7.0], [7.0, 7.0]]]])
    expected = torch.tensor([[[[0.0, 0.5], [0.25, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert torch.equal(minmax(maps), expected)  # a constant map becomes all zeros


def _tiny() -> Classifier:
    """The red-minus-green model (class 0 = A_0 - A_1) on 6 x 6 inputs."""
    return classifier_of(red_minus_green(), (6, 6), classes=3)


def test_a_saliency_is_the_methods_map_min_max_normalised():
    classifier = _tiny()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    targets, seeds = torch.zeros(2, dtype=torch.long), torch.tensor([3, 4])
    for name in ("centre", "random", "gradient", "gradcam"):
        raw = get_method(name).fn(classifier, x, targets, seeds)
        assert raw.shape == (2, 1, 6, 6)
        assert torch.equal(baseline_saliency(name, classifier, x, targets, seeds), minmax(raw.float()))


def test_gradcam_on_a_named_layer_by_hand():
    """Grad-CAM weights of the 1x1 convolution's maps for class 0 are [1, -1] / 36: the map is
    ReLU(red - green) / 36, whichever way the layer is chosen."""
    classifier = _tiny()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    targets, seeds = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    gradcam = get_method("gradcam").fn
    expected = (x[:, :1] - x[:, 1:2]).clamp_min(0) / 36
    torch.testing.assert_close(gradcam(classifier, x, targets, seeds), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gradcam(classifier, x, targets, seeds, layer="0"), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="layer 'nope' is not a module of Sequential"):
        gradcam(classifier, x, targets, seeds, layer="nope")
