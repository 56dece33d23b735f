"""Fixtures shared by the whole suite. The plain helpers they are built from (pictures, tiny models,
store rows, boxes, damaged files) are in ``tests/helpers``; reference implementations in
``tests/reference``.

- ``classifier``: the real offline model (EfficientNet-Lite0), loaded once.
- ``chelsea``, ``eight_images``: scikit-image pictures as model inputs.
- ``tiny_model``: the tiny random network (:func:`tests.helpers.models.tiny_convnet`) saved as
  TorchScript, for runs where the model does not matter (``--model PATH``).
- ``imagenet_folder``: an ImageNet-style folder of scikit-image pictures and one broken file.
- ``solved_store``: that folder solved by a quick ``perturb masks`` on one thread.
- ``tiny_classifier``: the tiny random network at 32x32 as a classifier (1000 classes), per module.
- ``gradient_store``: ``imagenet_folder``'s gradient maps of ``tiny_classifier`` (a method store).
- ``one_thread``: the test runs with one torch thread.
"""

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.jobs.baselines import run_baseline
from pipeline.jobs.run import RunConfig
from pipeline.models import load_model
from tests.helpers.cli import SOLVE
from tests.helpers.images import IMAGENET_LAYOUT, sample_input, write_folder
from tests.helpers.models import classifier_of, tiny_convnet, tiny_torchscript, torch_threads


@pytest.fixture(scope="session")
def classifier():
    torch.set_num_threads(2)
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def chelsea():
    """scikit-image's chelsea (an Egyptian cat, ImageNet class 285) as (1, 3, 224, 224) in [0, 1]."""
    return sample_input("chelsea")[None]


@pytest.fixture(scope="session")
def eight_images(chelsea):
    names = ["coffee", "astronaut", "rocket", "chelsea", "immunohistochemistry", "colorwheel", "coins", "hubble_deep_field"]
    return torch.stack([sample_input(n) for n in names])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The path of a TorchScript file of the tiny network (1000 classes), for ``load_model(path)``
    and ``--model``."""
    return str(tiny_torchscript(tmp_path_factory.mktemp("model") / "tiny.pt"))


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory):
    """Three classes of an ImageNet-style folder, tench (0), goldfish (1), Egyptian cat (285), with
    two 160 x 120 JPEG pictures each and a broken file in the cat's: 7 indices, 6 readable."""
    root = write_folder(tmp_path_factory.mktemp("val"), IMAGENET_LAYOUT, size=(160, 120))
    (root / "n02124075" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


@pytest.fixture(scope="session")
def solved_store(imagenet_folder, tmp_path_factory):
    """``imagenet_folder`` solved by ``perturb masks`` with :data:`tests.helpers.cli.SOLVE`, on one
    thread (as each torchrun worker runs): the path of the store (6 rows ok, 1 skipped). Tests read it
    and must not write to it."""
    out = tmp_path_factory.mktemp("solved") / "masks.h5"
    with torch_threads(1):
        result = CliRunner().invoke(app, ["masks", str(imagenet_folder), "--out", str(out), *SOLVE])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def one_thread():
    """The test on one torch thread: on a loaded 2-core machine two threads ran a solver iteration
    4-10x slower than one, and a torchrun worker runs on one (OMP_NUM_THREADS=1)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_classifier():
    """The tiny random network (:func:`tests.helpers.models.tiny_convnet`) as a 32x32 classifier of
    1000 classes; two parameterised blocks (a linear layer over a convolution)."""
    return classifier_of(tiny_convnet(1000), (32, 32), classes=1000)


@pytest.fixture(scope="module")
def gradient_store(imagenet_folder, tiny_classifier, tmp_path_factory):
    """``imagenet_folder``'s gradient maps of ``tiny_classifier``: the path of a method store."""
    out = tmp_path_factory.mktemp("rand") / "gradient.h5"
    run_baseline("gradient", imagenet_folder, out, tiny_classifier, RunConfig(batch_size=4, workers=0, progress=False))
    return out
