"""Cascading model-parameter randomisation: block lists, the cascade itself, the similarities, and
equality with Quantus' MPRT (skipped without the ``peers`` extra)."""

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.metrics.randomisation import (
    BLOCK_LISTS,
    map_similarity,
    randomisation_blocks,
    randomisation_check,
    randomised_models,
)

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 5))
    return model.eval().requires_grad_(False)


def gradient_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Absolute input gradient of the target logit, max over channels: ``(B, 1, H, W)``."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x)
    return grad.abs().amax(1, keepdim=True).detach()


def _covers_every_parameter_once(model: nn.Module, blocks) -> None:
    owners = {}
    for step, names in blocks:
        for name in names:
            for pname, _ in model.get_submodule(name).named_parameters(prefix=name):
                assert pname not in owners, f"{pname} in {owners.get(pname)} and {step}"
                owners[pname] = step
    assert set(owners) == {name for name, _ in model.named_parameters()}


def test_efficientnet_lite0_blocks_cover_the_model_in_8_steps():
    from pipeline.models import load_model

    model = load_model("efficientnet_lite0", pretrained=False).module
    blocks = randomisation_blocks(model)
    assert blocks is BLOCK_LISTS["efficientnet"] and len(blocks) == 8
    assert blocks[0][0] == "classifier"
    _covers_every_parameter_once(model, blocks)


def test_resnet50_blocks_cover_the_model():
    import torchvision

    model = torchvision.models.resnet50()
    blocks = randomisation_blocks(model)
    assert blocks is BLOCK_LISTS["resnet"] and [b[0] for b in blocks][:2] == ["fc", "layer4"]
    _covers_every_parameter_once(model, blocks)


def test_generic_blocks_go_top_down_look_inside_wrappers_and_group():
    inner = tiny_model()
    wrapped = nn.Sequential(nn.Identity(), inner)  # one parameterised child: the network
    assert [b[1] for b in randomisation_blocks(wrapped)] == [("1.6",), ("1.2",), ("1.0",)]
    assert [b[1] for b in randomisation_blocks(inner, max_steps=2)] == [("6", "2"), ("0",)]
    _covers_every_parameter_once(inner, randomisation_blocks(inner, max_steps=2))
    with pytest.raises(ConfigError, match="no parameterised"):
        randomisation_blocks(nn.ReLU())


def test_cascade_changes_blocks_cumulatively_and_leaves_the_model_and_rng_alone():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    changed_per_step = []
    for _, randomised in randomised_models(model, randomisation_blocks(model), seed=42):
        now = randomised.state_dict()
        changed_per_step.append({k.split(".")[0] for k in now if not torch.equal(now[k], before[k])})
        assert not any(p.requires_grad for p in randomised.parameters())
    assert changed_per_step == [{"6"}, {"6", "2"}, {"6", "2", "0"}]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_classifier_goes_in_and_comes_out_with_its_module_randomised():
    from pipeline.models import Classifier

    classifier = Classifier(tiny_model(), "tiny", (SIZE, SIZE), (0.5,) * 3, (0.5,) * 3, None)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([1, 2])
    seen = []

    def saliency(model):
        seen.append(model)
        return gradient_maps(model.module, x, y)

    result = randomisation_check(classifier, saliency)
    assert result.steps == ("6", "2", "0") and result.ssim.shape == (2, 3)
    assert seen[0] is classifier and all(isinstance(m, Classifier) and m.spec == "tiny" for m in seen)
    assert seen[1].module is not classifier.module
    assert set(result.means()) == {"spearman_abs", "spearman", "ssim", "hog_pearson"}


def test_unknown_block_is_a_clear_error():
    with pytest.raises(ConfigError, match="no submodule 'head'"):
        next(randomised_models(tiny_model(), (("head", ("head",)),)))


def test_similarity_of_identical_reversed_and_scaled_maps():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.1, 1, size=(3, 1, 24, 24))
    same = map_similarity(maps, 3 * maps)  # scale does not matter to any of them
    for name, values in same.items():
        np.testing.assert_allclose(values, 1.0, atol=1e-12, err_msg=name)
    flipped = map_similarity(maps, -maps)  # same absolute map, opposite signed ranks
    np.testing.assert_allclose(flipped["spearman_abs"], 1.0, atol=1e-12)
    np.testing.assert_allclose(flipped["spearman"], -1.0, atol=1e-12)
    reversed_order = map_similarity(maps, 2 - maps)  # 2 - m > 0 reverses the absolute order too
    np.testing.assert_allclose(reversed_order["spearman_abs"], -1.0, atol=1e-12)


def test_similarity_refuses_mismatched_maps():
    with pytest.raises(ConfigError, match="shape"):
        map_similarity(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 9)))
    with pytest.raises(ConfigError, match="24x24"):
        map_similarity(np.zeros((2, 1, 16, 16)), np.zeros((2, 1, 16, 16)))


def _quantus_mprt(model, x, y, original, similarity_func):
    quantus = pytest.importorskip("quantus")
    metric = quantus.MPRT(similarity_func=similarity_func, layer_order="top_down", seed=42,
                          normalise_func_kwargs={"normalise_axes": [1, 2, 3]},  # per image, as ours
                          disable_warnings=True)

    def explain(model, inputs, targets, **kwargs):
        return gradient_maps(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    scores = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=original.numpy(),
                    explain_func=explain, device="cpu")
    return {name: np.asarray(values) for name, values in scores.items() if name != "original"}


def test_similarities_equal_quantus_mprt():
    """Same model, layer order (every ``reset_parameters`` module, last first), seed and maps:
    Quantus' Spearman (its default), its SSIM on the 2-D maps, and the HOG correlation through its
    cascade equal ours. Quantus' own SSIM on the flattened maps would be a 1-D SSIM: a different
    quantity, which is why its function is given the maps' shape here."""
    quantus = pytest.importorskip("quantus")
    from quantus.functions.similarity_func import ssim as quantus_ssim

    model = tiny_model()
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)  # the original targets, explained at every step
    original = gradient_maps(model, x, y)
    ours = randomisation_check(model, lambda m: gradient_maps(m, x, y), seed=42, original=original)
    assert ours.steps == ("6", "2", "0")

    def as_maps(rows):
        return rows.reshape(len(rows), SIZE, SIZE)

    def ssim_2d(a, b, batched=True, **kwargs):
        # np.asarray: Quantus' batched ssim returns a list, which its own MPRT cannot take.
        return np.asarray(quantus_ssim(as_maps(a), as_maps(b), batched=True))

    def hog_2d(a, b, batched=True, **kwargs):
        return map_similarity(as_maps(a), as_maps(b))["hog_pearson"]

    for name, function in (("spearman_abs", quantus.similarity_func.correlation_spearman),
                           ("ssim", ssim_2d), ("hog_pearson", hog_2d)):
        theirs = _quantus_mprt(model, x, y, original, function)
        assert list(theirs) == list(ours.steps)
        np.testing.assert_allclose(getattr(ours, name), np.stack(list(theirs.values()), 1), atol=1e-5, err_msg=name)
    # the cascade does change the maps of this model: the test compares something
    assert np.all(ours.spearman_abs[:, -1] < 0.9)
