"""MeaningfulPerturbation: Captum's call shape over a plain module, equal to what `perturb masks` stores,
one clear exception per bad argument, and the caller's model left as it was."""

import copy

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

import pipeline as pp
from pipeline.data import read_input
from pipeline.errors import ConfigError, InputError
from pipeline.models import IMAGENET_MEAN, IMAGENET_STD, frozen
from pipeline.solve import masks as masklib

SIZE = (32, 32)
CLASSES = 5
PICTURES = ("astronaut", "chelsea", "coffee")  # sorted: discover's order is the call's order
QUICK = {"iterations": 2, "set": ["perturbation.kind=constant"]}  # no blur pyramid: fast tests of the API


def tiny_module(classes: int = CLASSES) -> nn.Module:
    """A torchvision-style CNN on normalised input, with BatchNorm (folded by the solver) whose
    statistics are not the identity. Fixed weights (its own generator)."""
    generator = torch.Generator().manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        for bn in (module[1], module[4]):
            bn.running_mean.copy_(torch.randn(8, generator=generator) * 0.1)
            bn.running_var.copy_(torch.rand(8, generator=generator) + 0.5)
    return module.eval()


def vocabulary(classes: int = CLASSES) -> pp.ClassVocabulary:
    return pp.ClassVocabulary(wnids=("",) * classes, names=tuple(f"c{i}" for i in range(classes)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three scikit-image pictures as a flat folder of PNGs (of different sizes)."""
    root = tmp_path_factory.mktemp("images")
    for i, name in enumerate(PICTURES):
        array = np.asarray(getattr(skimage.data, name)())[..., :3]
        Image.fromarray(array).resize((60 + 10 * i, 48)).save(root / f"{name}.png")
    return root


def images01(folder, size=SIZE) -> torch.Tensor:
    """The folder's images as `perturb masks` reads them: (N, 3, H, W) in [0, 1]."""
    return torch.stack([read_input(folder / f"{name}.png", size)[0] for name in PICTURES])


@pytest.mark.parametrize("preset, sets", [("paper-fast", ["optim.iterations=3"]),
                                          ("extremal", ["optim.iterations=3", "mask.size=5"])])
def test_attribute_equals_the_masks_perturb_masks_stores(folder, tmp_path, preset, sets):
    module = tiny_module()
    classifier = pp.Classifier(frozen(copy.deepcopy(module)), "tiny", SIZE, IMAGENET_MEAN, IMAGENET_STD,
                               vocabulary())
    config = pp.override(pp.preset(preset), sets)
    run = pp.RunConfig(batch_size=4, workers=0, progress=False)  # 3 images: the batch is padded to 4
    pp.run_masks(folder, tmp_path / "m.h5", classifier, config, run)
    with pp.MaskStore(tmp_path / "m.h5") as store:
        table, stored = store.table(), store.masks()
        store_heat = pp.store_saliency(store, range(len(PICTURES)), SIZE)
    assert list(table["path"]) == [f"{name}.png" for name in PICTURES]

    explainer = pp.MeaningfulPerturbation(module, preset, set=sets)  # ImageNet's mean and std
    x = explainer.normalize(images01(folder))
    assert torch.equal(x, classifier.normalize(images01(folder)))
    result = explainer.attribute(x, batch_size=4, return_result=True)  # seeds 0, 1, 2: the dataset indices

    assert result.attributions.shape == (3, 1, *SIZE) and result.attributions.dtype == torch.float32
    k = config.objective.masks_per_image
    assert result.masks.shape == (3, k, config.mask.size, config.mask.size)
    assert result.areas == config.objective.areas
    # The store keeps float16 masks: the solver's masks rounded so are the stored ones, bit for bit.
    assert np.array_equal(result.masks.numpy().astype(np.float16), stored.numpy().astype(np.float16))
    assert torch.equal(result.targets, torch.tensor(table["target"].to_numpy()).long())
    for name in ("p_original", "p_perturbed", "p_final", "loss", "area", "tv"):
        assert np.array_equal(getattr(result, name).numpy(), table[name].to_numpy(np.float32)), name
    # The saliency is the store's, read back the way evaluate reads it: equal from the rounded masks,
    # and within float16's rounding (half a step below 1: 2**-12; upsampling only averages) otherwise.
    rounded = masklib.saliency(result.masks.half().float(), config.objective.game, SIZE, config.mask)
    assert torch.equal(rounded, store_heat)
    assert float((result.attributions - store_heat).abs().max()) <= 2**-12
    assert torch.equal(result.attributions, explainer.attribute(x, batch_size=4))  # the plain call, same numbers


def test_spec_string_loads_the_model_and_its_normalisation(folder, tmp_path):
    """A TorchScript file is a model spec (ImageNet's normalisation, 224 x 224 input)."""
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(tiny_module()), str(path))
    classifier = pp.load_model(str(path))
    config = pp.override(pp.preset("paper-fast"), ["optim.iterations=2"])
    pp.run_masks(folder, tmp_path / "script.h5", classifier, config,
                 pp.RunConfig(batch_size=3, workers=0, progress=False, limit=2, seed=7))
    with pp.MaskStore(tmp_path / "script.h5") as store:
        stored, heat = store.masks(), pp.store_saliency(store, [0, 1], (224, 224))
    explainer = pp.MeaningfulPerturbation(str(path), iterations=2, seed=7)
    assert (explainer.mean, explainer.std) == (IMAGENET_MEAN, IMAGENET_STD) == (classifier.mean, classifier.std)
    x = explainer.normalize(images01(folder, (224, 224))[:2])
    result = explainer.attribute(x, batch_size=3, return_result=True)
    assert result.attributions.shape == (2, 1, 224, 224)
    assert torch.equal(result.seeds, torch.tensor([7, 8]))
    assert np.array_equal(result.masks.numpy().astype(np.float16), stored.numpy().astype(np.float16))
    assert float((result.attributions - heat).abs().max()) <= 2**-12


def test_targets_seeds_and_batches():
    module = tiny_module()
    explainer = pp.MeaningfulPerturbation(module, **QUICK)
    x = torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    top1 = explainer.attribute(x, return_result=True)
    with torch.no_grad():
        assert torch.equal(top1.targets, module(x).argmax(1))
    assert torch.equal(top1.seeds, torch.arange(3)) and torch.equal(top1.iterations, torch.full((3,), 2))
    # every spelling of the same targets gives the same masks
    chosen = [explainer.attribute(x, target=t) for t in ([1, 4, 1], torch.tensor([1, 4, 1]), np.array([1, 4, 1]))]
    assert all(torch.equal(chosen[0], other) for other in chosen[1:])
    same = explainer.attribute(x, target=2, return_result=True)
    assert torch.equal(same.targets, torch.full((3,), 2))
    # batched per 2, padded to 2 on the CPU: image 2 alone (with its seed) gives the same mask
    batched = explainer.attribute(x, target=2, batch_size=2, return_result=True)
    alone = explainer.attribute(x[2:], target=2, seeds=[2], batch_size=2, return_result=True)
    assert torch.equal(batched.masks[2:], alone.masks)
    # (upsampling 3 masks or 1 rounds differently on a CPU, by about 1e-7)
    torch.testing.assert_close(batched.attributions[2:], alone.attributions, atol=1e-6, rtol=0)
    other_seed = explainer.attribute(x[2:], target=2, seeds=[3], batch_size=2, return_result=True)
    assert not torch.equal(other_seed.masks, alone.masks)
    shifted = pp.MeaningfulPerturbation(module, **QUICK, seed=10).attribute(x[:1], target=2, return_result=True)
    assert torch.equal(shifted.seeds, torch.tensor([10]))


def test_no_grad_and_inference_mode_callers_get_the_same_answer():
    explainer = pp.MeaningfulPerturbation(tiny_module(), **QUICK)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    expected = explainer.attribute(x, target=0)
    with torch.no_grad():
        assert torch.equal(explainer.attribute(x, target=0), expected)
    with torch.inference_mode():
        frozen_x = x.clone()
    assert torch.equal(explainer.attribute(frozen_x, target=0), expected)
    assert torch.equal(explainer.attribute(x.double().requires_grad_(True), target=0), expected)


@pytest.mark.parametrize("fold", [True, False])  # False: the solver runs the caller's own module
def test_the_callers_model_is_left_as_it_was_and_weight_changes_are_seen(fold):
    module = tiny_module()
    module[0].weight.requires_grad_(False)  # the caller's own mix of flags comes back
    flags = [p.requires_grad for p in module.parameters()]
    before = copy.deepcopy(module.state_dict())
    explainer = pp.MeaningfulPerturbation(module, **QUICK, fold=fold)
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    first = explainer.attribute(x, target=1, return_result=True)
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all(p.grad is None for p in module.parameters()) and not module.training
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    with torch.no_grad():
        module[-1].bias[1] += 2.0  # the caller trains on: the next call sees the new weights
    again = explainer.attribute(x, target=1, return_result=True)
    fresh = pp.MeaningfulPerturbation(module, **QUICK, fold=fold).attribute(x, target=1, return_result=True)
    assert torch.equal(again.p_original, fresh.p_original) and not torch.equal(again.p_original, first.p_original)


class _TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_module()

    def forward(self, x):
        return self.inner(x), x.mean()


def _bad_calls():
    x = torch.randn(3, 3, *SIZE)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return {
        "three dimensions": (lambda e: e.attribute(x[0]), "shape \\(N, 3, H, W\\)"),
        "one channel": (lambda e: e.attribute(x[:, :1]), "shape \\(N, 3, H, W\\)"),
        "integer pixels": (lambda e: e.attribute((x * 100).long()), "floating point"),
        "a numpy array": (lambda e: e.attribute(x.numpy()), "torch.Tensor"),
        "NaN": (lambda e: e.attribute(nan), "NaN"),
        "target out of range": (lambda e: e.attribute(x, target=CLASSES), "out of range.*0..4"),
        "negative target": (lambda e: e.attribute(x, target=[0, -1, 2]), "out of range"),
        "targets of the wrong length": (lambda e: e.attribute(x, target=[0, 1]), "one int per input.*\\(3,\\)"),
        "float target": (lambda e: e.attribute(x, target=1.5), "integers"),
        "class name as target": (lambda e: e.attribute(x, target="cat"), "an int or 3 ints"),
        "seeds of the wrong length": (lambda e: e.attribute(x, seeds=[1]), "seeds must be one int per input"),
        "batch size 0": (lambda e: e.attribute(x, batch_size=0), "batch_size must be an int >= 1"),
        "inputs on another device": (lambda e: e.attribute(torch.empty(1, 3, *SIZE, device="meta")),
                                     "inputs are on meta but the model is on cpu.*inputs.to"),
        "inputs the model cannot take": (lambda e: e.attribute(torch.randn(1, 3, 0, 4)), "shape"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_each_bad_argument_gets_one_clear_exception(case):
    call, message = _bad_calls()[case]
    with pytest.raises(InputError, match=message) as caught:
        call(pp.MeaningfulPerturbation(tiny_module(), iterations=1))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)
    assert len(str(caught.value).splitlines()) == 1


def test_bad_models_and_settings_are_refused_before_solving():
    x = torch.randn(1, 3, *SIZE)
    training = tiny_module().train()
    with pytest.raises(InputError, match="training mode.*call model.eval\\(\\) first"):
        pp.MeaningfulPerturbation(training, iterations=1).attribute(x)
    assert training.training  # refused, not switched behind the caller's back
    with pytest.raises(InputError, match="logits \\(N, C\\)"):
        pp.MeaningfulPerturbation(_TupleModel().eval(), iterations=1).attribute(x)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2)).eval()
    with pytest.raises(InputError, match="fails on an input of shape \\(1, 3, 32, 32\\)"):
        pp.MeaningfulPerturbation(flat, iterations=1).attribute(x)
    with pytest.raises(InputError, match="torch.nn.Module"):
        pp.MeaningfulPerturbation(lambda images: images)
    with pytest.raises(InputError, match="move the module itself"):
        pp.MeaningfulPerturbation(tiny_module(), device="cpu")
    with pytest.raises(ConfigError, match="iterationz.*did you mean"):
        pp.MeaningfulPerturbation(tiny_module(), iterationz=3)
    with pytest.raises(ConfigError, match="unknown preset"):
        pp.MeaningfulPerturbation(tiny_module(), "papr")
    with pytest.raises(InputError, match="mean must be 3 numbers"):
        pp.MeaningfulPerturbation(tiny_module(), mean=(0.5, 0.5))
    explainer = pp.MeaningfulPerturbation(tiny_module(), **{"optim.iterations": 7}, set=["tv_coeff=0.05"])
    assert explainer.config.optim.iterations == 7 and explainer.config.objective.tv_coeff == 0.05
