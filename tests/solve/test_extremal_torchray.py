"""The ``extremal`` preset against its reference implementation, TorchRay's ``extremal_perturbation``.

Skipped when TorchRay is not installed (the ``peers`` extra; ``make test`` installs it).
"""

import pytest
import torch

from pipeline.solve import masks as masklib
from pipeline.config import override, preset
from pipeline.solve import solve

from tests.helpers.images import sample_input

extremal = pytest.importorskip("torchray.attribution.extremal_perturbation")

AREAS = [0.05, 0.1, 0.2]
ITERATIONS = 4
TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def pair():
    """chelsea and coffee at 224, (2, 3, 224, 224) in [0, 1]."""
    return torch.stack([sample_input(name) for name in ("chelsea", "coffee")])


def test_extremal_preset_gives_torchrays_masks(classifier, pair):
    """Both images solved in one batch equal TorchRay's masks, run one image at a time through its
    API with its defaults (preservation, blur, step 7, sigma 21, flip jitter), on the same inputs.

    TorchRay returns the mask it evaluated last, before its last update: its ``max_iter = n + 1``
    is the preset's ``n`` iterations."""
    config = override(preset("extremal"), [f"optim.iterations={ITERATIONS}", f"objective.areas={AREAS}"])
    result = solve(classifier, pair, config)
    ours = masklib.upsample(result.masks, (224, 224), config.mask)  # (2, 3, 224, 224)
    assert result.masks.shape == (2, 3, 32, 32)
    gaps, moved = [], []
    for i in range(2):
        x = classifier.normalize(pair[i : i + 1])
        reference, _ = extremal.extremal_perturbation(classifier.module, x, int(result.targets[i]), areas=AREAS,
                                                      max_iter=ITERATIONS + 1)
        gaps.append(float((ours[i] - reference[:, 0]).abs().max()))
        moved.append(float((reference[:, 0] - 1).abs().max()))
    # float32 rounding in a different order (channels-last convolutions, the hand-written smooth-max
    # gradient) is all that separates them; the masks move by far more over these iterations, so a
    # wrong step size, sign, flip parity, margin or area count would show.
    assert max(gaps) < TOLERANCE, f"largest difference from TorchRay {gaps}, masks moved {moved}"
    assert min(moved) > 20 * TOLERANCE, moved
