"""Layer names for layer methods: the default, the candidates, and the offline model's layers."""

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods.layers import LayerInfo, candidate_layers, default_layer, resolve_layer

from tests.helpers.methods import TinyConv
from tests.helpers.models import classifier_of


def test_candidates_are_the_spatial_outputs_in_definition_order():
    classifier = classifier_of(TinyConv(channels=5, kernel=3), (12, 10))
    assert candidate_layers(classifier) == [LayerInfo("conv", "Conv2d", (5, 12, 10)),
                                            LayerInfo("act", "ReLU", (5, 12, 10)),
                                            LayerInfo("pool", "AdaptiveAvgPool2d", (5, 1, 1))]
    assert default_layer(classifier.module) == "conv"  # the last child holding a convolution
    name, layer = resolve_layer(classifier.module, None)
    assert name == "conv" and layer is classifier.module.conv


def test_default_layer_of_timm_style_heads_and_models_without_convolutions():
    head = nn.Sequential()
    head.add_module("conv_head", nn.Conv2d(3, 4, 1))
    head.add_module("bn2", nn.BatchNorm2d(4))
    head.add_module("tail", nn.Conv2d(4, 4, 1))
    assert default_layer(head) == "bn2"
    with pytest.raises(ConfigError, match="no child block containing nn.Conv2d"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 3)))


def test_an_unknown_layer_lists_the_shallow_candidates():
    blocks = nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(nn.ReLU())), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(3, 3))
    with pytest.raises(ConfigError) as error:
        resolve_layer(blocks, "0.9", (8, 8))
    # names up to two dots deep are listed, deeper ones counted; the flat outputs are not candidates
    assert str(error.value) == ("unknown layer '0.9' of Sequential; layers with a spatial output: 0, 0.0, 0.1, 1 "
                                "(and 1 deeper ones)")


@pytest.fixture(scope="module")
def lite0():
    from pipeline.models import load_model

    torch.set_num_threads(2)
    classifier = load_model("efficientnet_lite0")
    return dataclasses.replace(classifier, input_size=(64, 64))  # a smaller probe, same network


def test_efficientnet_lite0_layers_relu_view_and_excitation_support(lite0):
    layers = {layer.name: layer for layer in candidate_layers(lite0)}
    assert default_layer(lite0.module) == "bn2" and layers["bn2"].shape == (1280, 2, 2)
    # Captum's ReLU rules run on a copy with out-of-place ReLU modules computing the same function
    from pipeline.methods.captum_methods import relu_view

    view = relu_view(lite0.module)
    assert not any(isinstance(m, nn.ReLU6) for m in view.modules())
    assert any(isinstance(m, nn.ReLU6) and m.inplace for m in lite0.module.modules())
    x = lite0.normalize(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        torch.testing.assert_close(view(x), lite0(x))
    # TorchRay's excitation rules cover the head (bn2 .. classifier), not the residual blocks
    pytest.importorskip("torchray")
    from pipeline.methods.excitation import excitation_method

    check = excitation_method("excitation_backprop").fn.check
    assert check(lite0, {})["layer"] == "bn2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="blocks.4.*AddBackward0"):
            check(lite0, {"layer": "blocks.4"})
