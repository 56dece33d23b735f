import pytest
import torch

from pipeline.config import ObjectiveConfig
from pipeline.solve.masks import area_penalty, saliency, sparsity, total_variation
from pipeline.solve.problem import l1_weight


MASK = torch.tensor([[0.0, 1.0, 1.0], [0.5, 1.0, 0.0], [1.0, 1.0, 1.0]]).view(1, 1, 3, 3)


def test_total_variation_by_hand():
    # vertical diffs: |.5-0|,|1-1|,|0-1|,|1-.5|,|1-1|,|1-0| = .5,0,1,.5,0,1 ; horizontal: 1,0,.5,1,0,0
    # beta 1: mean(3/6) + mean(2.5/6); beta 3: (.125+1+.125+1)/6 + (1+.125+1)/6
    assert float(total_variation(MASK, 1.0)[0]) == pytest.approx(3 / 6 + 2.5 / 6)
    assert float(total_variation(MASK, 3.0)[0]) == pytest.approx(2.25 / 6 + 2.125 / 6)


def test_l1_by_hand_for_both_games_and_reductions():
    # 1 - m: 1,0,0,.5,0,1,0,0,0 -> sum 2.5 ; m sums to 6.5
    assert float(sparsity(MASK, ObjectiveConfig(l1_reduction="mean"))[0]) == pytest.approx(2.5 / 9)
    assert float(sparsity(MASK, ObjectiveConfig(l1_reduction="sum"))[0]) == pytest.approx(2.5)
    assert float(sparsity(MASK, ObjectiveConfig(game="preserve", l1_reduction="sum"))[0]) == pytest.approx(6.5)


def test_l1_warm_up_falls_linearly_to_the_published_weight():
    # l1_start 4 over 50 iterations: 4x at 0, (1 + 3 * 0.5)x = 2.5x at 25, 1x from 50 on.
    warm = ObjectiveConfig(l1_coeff=0.01, l1_start=4.0, l1_decay=50)
    expected = [0.04, 0.025, 0.01, 0.01]
    assert [l1_weight(warm, t) for t in (0, 25, 50, 80)] == pytest.approx(expected)
    # per-image counts (the streaming solver's) give each image its own weight
    per_image = l1_weight(warm, torch.tensor([0, 25, 50, 80]))
    torch.testing.assert_close(per_image, torch.tensor(expected))
    assert l1_weight(ObjectiveConfig(l1_coeff=0.01), 0) == 0.01  # l1_start 1: the constant weight


def test_area_penalty_is_zero_for_a_mask_of_exactly_that_area():
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., :2, :] = 1  # 20 % kept
    assert float(area_penalty(mask, torch.tensor([0.2]))[0]) == pytest.approx(0.0)
    # one cell too many ones: (1 - 0)^2 / 100
    mask[..., 5, 5] = 1
    assert float(area_penalty(mask, torch.tensor([0.2]))[0]) == pytest.approx(0.01)


def test_saliency_is_what_the_game_removed_or_kept():
    ones = torch.ones(1, 1, 4, 4)
    assert float(saliency(ones, "delete", (8, 8)).max()) == pytest.approx(0.0, abs=1e-6)
    assert float(saliency(ones, "preserve", (8, 8)).min()) == pytest.approx(1.0, abs=1e-6)
