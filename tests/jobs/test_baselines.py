"""Saliency baselines: hand-checked maps on tiny models, the real model on chelsea, and stores."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.jobs.baselines import baseline_saliency, run_baseline
from pipeline.methods.simple import centre_gaussian, gradcam_layer
from pipeline.errors import ConfigError
from pipeline.evaluation import EvalConfig, evaluate_store
from pipeline.jobs.run import RunConfig
from pipeline.store import MaskStore
from tests.helpers.methods import images, linear_model, red_minus_green
from tests.helpers.models import classifier_of


def test_centre_baseline_peaks_at_the_centre():
    gauss = centre_gaussian((9, 13))[0, 0]  # sigma: 9 / 4 = 2.25 rows, 13 / 4 = 3.25 columns
    assert gauss[4, 6] == 1.0 and tuple(np.unravel_index(int(gauss.argmax()), gauss.shape)) == (4, 6)
    assert float(gauss[4, 0]) == pytest.approx(math.exp(-(6**2) / (2 * 3.25**2)), rel=1e-6)
    assert float(gauss[0, 6]) == pytest.approx(math.exp(-(4**2) / (2 * 2.25**2)), rel=1e-6)
    # separable: the corner is the product of its row and column factors
    assert float(gauss[0, 0]) == pytest.approx(float(gauss[4, 0] * gauss[0, 6]), rel=1e-6)
    classifier = classifier_of(linear_model(torch.ones(3, 15, 15), classes=2), (15, 15))
    heat = baseline_saliency("centre", classifier, images(2, (15, 15)), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert heat.shape == (2, 1, 15, 15)
    assert torch.equal(heat[0], heat[1]) and heat[0, 0, 7, 7] == 1.0 and heat.min() == 0.0
    # the American spelling names the same baseline
    spelled = baseline_saliency("center", classifier, images(2, (15, 15)), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert torch.equal(spelled, heat)


def test_random_baseline_is_reproducible_per_image_across_batches():
    classifier = classifier_of(linear_model(torch.ones(3, 16, 16), classes=2))
    x, targets = images(4), torch.zeros(4, dtype=torch.long)
    seeds = torch.tensor([10, 11, 12, 13])
    together = baseline_saliency("random", classifier, x, targets, seeds)
    alone = baseline_saliency("random", classifier, x[2:3], targets[2:3], seeds[2:3])
    pair = baseline_saliency("random", classifier, x[[3, 1]], targets[:2], seeds[[3, 1]])
    assert torch.equal(together[2], alone[0])
    assert torch.equal(together[[3, 1]], pair)
    assert not torch.equal(together[0], together[1])
    assert together.min() == 0.0 and together.max() == 1.0


def test_gradient_of_a_linear_model_by_hand():
    """p0 = sigmoid(sum(a * x)): d p0 / dx = p0 (1 - p0) a, so |grad| max over channels is
    p0 (1 - p0) max_c |a_c|, and min-max normalisation removes the factor p0 (1 - p0)."""
    a = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 16, 16))).float() * 0.05
    classifier = classifier_of(linear_model(a, classes=2))
    heat = baseline_saliency("gradient", classifier, images(2), torch.tensor([0, 0]), torch.tensor([0, 1]))
    expected = a.abs().amax(0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    torch.testing.assert_close(heat[0, 0], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heat[1, 0], expected, atol=1e-5, rtol=1e-4)


def test_gradcam_of_a_tiny_conv_model_by_hand():
    """1x1 conv (A_0 = red, A_1 = green) -> mean pool -> linear with row [1, -1] for class 0:
    Grad-CAM weights are [1, -1] / (H W), so the map is ReLU(red - green), min-max normalised."""
    module = red_minus_green()
    assert gradcam_layer(module)[0] == "0"
    x = images(3)
    heat = baseline_saliency("gradcam", classifier_of(module), x, torch.zeros(3, dtype=torch.long),
                             torch.arange(3))
    expected = (x[:, 0] - x[:, 1]).clamp_min(0)
    low = expected.flatten(1).min(1).values.view(-1, 1, 1)
    high = expected.flatten(1).max(1).values.view(-1, 1, 1)
    torch.testing.assert_close(heat[:, 0], (expected - low) / (high - low), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gradient", "gradcam"])
def test_model_baselines_on_chelsea(classifier, chelsea, name):
    heat = baseline_saliency(name, classifier, chelsea, torch.tensor([285]), torch.tensor([0]))
    assert heat.shape == (1, 1, 224, 224) and torch.isfinite(heat).all()
    assert heat.min() == 0.0 and heat.max() == 1.0 and heat.std() > 0.01
    if name == "gradcam":
        assert gradcam_layer(classifier.module)[0] == "bn2"
        # The cat's face fills roughly x 50..190, y 40..210 of the 224x224 input.
        inside = heat[0, 0, 40:211, 50:191].sum() / heat.sum()
        area = (171 * 141) / 224**2
        assert inside > area + 0.1


def test_unknown_baseline_is_refused():
    classifier = classifier_of(linear_model(torch.ones(3, 16, 16), classes=2))
    with pytest.raises(ConfigError, match="gradient"):
        baseline_saliency("smooth", classifier, images(1), torch.tensor([0]), torch.tensor([0]))


def test_run_baseline_writes_a_store_evaluate_reads(tmp_path):
    root = tmp_path / "data"
    for name, seed in (("n00000000/a.png", 0), ("n00000001/b.png", 1), ("c.png", 2)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)
    (root / "n00000000" / "broken.png").write_bytes(b"not a png")
    a = torch.from_numpy(np.random.default_rng(5).normal(size=(3, 16, 16))).float() * 0.01
    classifier = classifier_of(linear_model(a, classes=2))
    run = RunConfig(batch_size=2, workers=0, progress=False, seed=4)
    summary = run_baseline("random", root, tmp_path / "random.h5", classifier, run)
    assert (summary.total, summary.solved, dict(summary.skipped)) == (4, 3, {"not an image": 1})
    again = run_baseline("random", root, tmp_path / "random.h5", classifier, run)
    assert (again.solved, again.resumed) == (0, 4)
    with MaskStore(tmp_path / "random.h5") as store:
        assert store.config == {"baseline": "random", "model": "tiny", "target": "top1", "seed": 4,
                                "input_size": [16, 16]}
        assert store.mask_shape == (1, 16, 16)
        table = store.table().set_index("path")
        ok = table[table["status"] == "ok"]
        assert ok["p_original"].between(0.5, 1).all()  # the top-1 of two classes
        assert ok["p_final"].isna().all() and ok["loss"].isna().all()
        assert table.loc["n00000000/broken.png", "reason"] == "not an image"
        row = store.row_of_path("n00000000/a.png")
        mask = store.masks([row])
        assert mask.min() == 0.0 and mask.max() == 1.0
        assert float(table.loc["n00000000/a.png", "area"]) == pytest.approx(float((1 - mask).mean()), abs=1e-3)
    labelled = run_baseline("centre", root, tmp_path / "centre.h5", classifier,
                            RunConfig(workers=0, progress=False, target="label"))
    assert dict(labelled.skipped) == {"not an image": 1, "no label": 1}
    result = evaluate_store(tmp_path / "random.h5", None, classifier, tmp_path / "eval",
                            config=EvalConfig(step=32, workers=0, plots=False))
    assert result.summary["counts"]["evaluated"] == 3
    assert result.table["insertion_auc"].notna().sum() == 3
