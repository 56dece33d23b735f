"""The metrics against independent code: deletion/insertion against Quantus, the pointing game
against TorchRay (both skipped when the ``peers`` extra is not installed).

The reference (``tests/reference/metrics.py``) configures Quantus to the project's protocol; here
it runs on a tiny fixed convolutional model and random 32x32 images, so the comparison is cheap.
"""

import numpy as np
import pytest
import torch

from pipeline.metrics import PointingGame, auc, blur_substrate, causal_curves, pointing_game_hit, zero_substrate
from tests.helpers.models import tiny_convnet
from tests.reference.metrics import CURVES, quantus_curves, tie_free, torchray_class_accuracy, torchray_hit

SIZE, STEP = 32, 64  # 16 steps of 64 pixels


def project_curves(model, x: torch.Tensor, saliency: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """The project's three curves of one normalised image ``(1, 3, H, W)``."""
    blurred = blur_substrate(x)
    plan = {"deletion_zero": (zero_substrate(x), "deletion"), "deletion_blur": (blurred, "deletion"),
            "insertion": (blurred, "insertion")}
    targets = torch.tensor([target])
    return {name: causal_curves(model, x, saliency, targets, sub, mode, STEP, chunk=7)[0]
            for name, (sub, mode) in plan.items()}


@pytest.mark.parametrize("plateaus", [False, True])
def test_deletion_insertion_equal_quantus(plateaus):
    pytest.importorskip("quantus")
    pytest.importorskip("cv2")
    model, rng = tiny_convnet(classes=5), np.random.default_rng(1)
    for _ in range(2):
        x = torch.from_numpy(rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32))
        heat = rng.uniform(size=(SIZE, SIZE))
        if plateaus:  # an upsampled coarse mask: many equal values
            heat = np.kron(rng.uniform(size=(4, 4)), np.ones((8, 8)))
        target = int(model(x).argmax())
        ours = project_curves(model, x, torch.from_numpy(heat)[None, None].float(), target)
        theirs = quantus_curves(model, x[0].numpy(), tie_free(heat.astype(np.float32)), target, STEP)
        for name in CURVES:
            assert len(theirs[name]) == len(ours[name]) == SIZE * SIZE // STEP + 1
            np.testing.assert_allclose(theirs[name], ours[name].double().numpy(), atol=1e-5, err_msg=name)
            their_auc = np.trapezoid(theirs[name], dx=1 / (len(theirs[name]) - 1))
            assert abs(float(auc(ours[name])) - their_auc) < 1e-6


def test_tie_free_keeps_the_order_and_breaks_ties_in_raster_order():
    heat = np.array([[0.5, 1.0], [0.5, 0.2]])
    assert tie_free(heat).tolist() == [[3, 4], [2, 1]]


def test_pointing_game_equals_torchray():
    pytest.importorskip("torchray")
    rng = np.random.default_rng(2)
    hits, classes, ours_game = [], [], PointingGame()
    for trial in range(300):
        h, w = 60, 80
        boxes = []
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.integers(0, w - 5), rng.integers(0, h - 5)
            boxes.append([x0, y0, rng.integers(x0, w), rng.integers(y0, h)])
        boxes = np.array(boxes)
        heat = np.zeros((h, w))
        if trial % 3 == 0:  # a point exactly 15 px from a box edge or corner: the boundary case
            x0, y0, x1, y1 = boxes[0]
            y, x = (y0, x0 - 15) if x0 >= 15 else (y1 + 9, x1 + 12) if (y1 + 9 < h and x1 + 12 < w) else (y0, x0)
        else:
            y, x = rng.integers(0, h), rng.integers(0, w)
        heat[y, x] = 1.0
        ours, theirs = pointing_game_hit(heat, boxes, 15), torchray_hit(heat, boxes, 15)
        assert ours == theirs, (trial, boxes.tolist(), (x, y))
        label = int(trial % 7)
        ours_game.update(ours, label)
        hits.append(theirs)
        classes.append(label)
    assert 0.1 < np.mean(hits) < 0.9  # both outcomes occur
    assert ours_game.compute()["per_class"] == pytest.approx(torchray_class_accuracy(hits, classes))
