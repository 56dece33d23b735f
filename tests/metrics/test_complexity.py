"""Sparseness and Complexity: hand-derived values, and equality with Quantus (skipped without the
``peers`` extra)."""

import math

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.metrics.map_complexity import complexity, sparseness


def test_one_hot_and_uniform_maps():
    n = 64
    one_hot = torch.zeros(1, 1, 8, 8)
    one_hot[0, 0, 3, 5] = -2.5  # sign and scale do not matter
    uniform = torch.full((1, 1, 8, 8), 0.3)
    # Gini of a one-hot map: only the largest term, (2n - n - 1) * 1 / (n * 1) = 1 - 1/n
    # (up to the 1e-7 epsilon added to every value).
    assert sparseness(one_hot).item() == pytest.approx(1 - 1 / n, abs=1e-5)
    assert sparseness(uniform).item() == pytest.approx(0.0, abs=1e-12)
    assert complexity(uniform).item() == pytest.approx(math.log(n), abs=1e-9)
    assert complexity(one_hot).item() == pytest.approx(0.0, abs=1e-9)


def test_two_level_map_by_hand():
    """Half the pixels 1, half 0 (n = 4): Gini = ((-3)(0) + (-1)(0) + (1)(1) + (3)(1)) / (4 * 2) = 0.5;
    entropy of two equal masses = log 2."""
    maps = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert sparseness(maps).item() == pytest.approx(0.5, abs=1e-6)
    assert complexity(maps).item() == pytest.approx(math.log(2), abs=1e-9)


def test_batched_equals_one_at_a_time_and_scale_free():
    maps = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(0)) ** 3
    for fn in (sparseness, complexity):
        together = fn(maps)
        assert together.shape == (5,)
        torch.testing.assert_close(together, torch.cat([fn(m[None]) for m in maps]))
        torch.testing.assert_close(together, fn(7 * maps[:, 0]))


def test_refuses_bad_maps():
    with pytest.raises(ConfigError, match="shape"):
        sparseness(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="NaN"):
        complexity(torch.full((1, 4, 4), float("nan")))


@pytest.mark.parametrize("plateaus", [False, True])
def test_equal_to_quantus(plateaus):
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(4, 1, 16, 16)).astype(np.float32)  # signed: abs matters
    if plateaus:
        maps = np.kron(rng.uniform(size=(4, 1, 4, 4)), np.ones((1, 1, 4, 4))).astype(np.float32)
    x = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    y = np.zeros(4, dtype=int)
    ours = {"Sparseness": sparseness(torch.from_numpy(maps)), "Complexity": complexity(torch.from_numpy(maps))}
    for name, values in ours.items():
        metric = getattr(quantus, name)(disable_warnings=True)
        # One image per call: Quantus scales by the maximum of the whole batch it is given.
        theirs = [metric(model=None, x_batch=x[i:i + 1], y_batch=y[i:i + 1], a_batch=maps[i:i + 1].copy())[0]
                  for i in range(4)]
        np.testing.assert_allclose(values.numpy(), theirs, atol=1e-6, err_msg=name)
        batched = metric(model=None, x_batch=x, y_batch=y, a_batch=maps.copy())
        np.testing.assert_allclose(values.numpy(), batched, atol=1e-5, err_msg=name + " (batch)")
