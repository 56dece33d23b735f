import pytest
import torch

from pipeline.config import override, preset
from pipeline.solve import counter_normal, counter_uniform, solve
from pipeline.solve.problem import shift


def test_blur_solve_deletes_the_cat(classifier, chelsea):
    # docs/method.md: against a sigma-10 blur without noise the cat can be deleted (0.77 -> 0.003 in 200 its).
    config = override(preset("blur"), ["optim.iterations=100"])
    result = solve(classifier, chelsea, config)
    assert int(result.targets[0]) == 285  # Egyptian cat
    assert float(result.p_perturbed[0]) < 0.05
    assert float(result.p_final[0]) < 0.1 * float(result.p_original[0])
    assert 0 < float(result.area[0]) < 0.9  # a real mask, not everything deleted
    assert result.masks.shape == (1, 1, 28, 28)
    assert float(result.masks.min()) >= 0 and float(result.masks.max()) <= 1


def test_the_l1_warm_up_deletes_the_cat_with_a_smaller_mask_in_75_iterations(classifier, chelsea):
    # paper-fast is paper with the L1 weight starting at 4x and falling to the paper's over its 75
    # iterations. Against paper stopped at 75 iterations (measured: area 0.28), the warm-up has
    # shrunk the mask further (0.20) and the cat is still deleted (0.80 -> 0.0003 for both).
    fast = preset("paper-fast")
    assert fast.optim.iterations == 75 and (fast.objective.l1_start, fast.objective.l1_decay) == (4.0, 75)
    assert override(preset("paper"), ["optim.iterations=75", "objective.l1_start=4", "objective.l1_decay=75"]) == fast
    plain = solve(classifier, chelsea, override(preset("paper"), ["optim.iterations=75"]))
    warm = solve(classifier, chelsea, fast)
    for result in (plain, warm):
        assert float(result.p_final[0]) < 0.01 * float(result.p_original[0])
    assert float(warm.area[0]) < float(plain.area[0]) - 0.05


def test_jacobgil_blur_is_too_weak_for_this_model(classifier, chelsea):
    # jacobgil's average blur leaves the cat recognisable: the diagnostic must show it.
    config = override(preset("jacobgil"), ["optim.iterations=1"])
    result = solve(classifier, chelsea, config)
    assert float(result.p_perturbed[0]) > 0.3


def _same_alone_and_in_batch(classifier, images, config, index):
    batch = solve(classifier, images, config, seeds=torch.arange(len(images)) + 100)
    alone = solve(classifier, images[index : index + 1], config, seeds=torch.tensor([100 + index]))
    torch.testing.assert_close(batch.masks[index : index + 1], alone.masks, atol=2e-3, rtol=0)
    torch.testing.assert_close(batch.p_final[index : index + 1], alone.p_final, atol=2e-3, rtol=0)


def test_batch_independence_with_noise(classifier, eight_images):
    # The jacobgil preset draws fresh noise every iteration: per-image streams keep images independent.
    _same_alone_and_in_batch(classifier, eight_images, override(preset("jacobgil"), ["optim.iterations=4"]), 3)


def test_batch_independence_with_jitter_and_random_init(classifier, eight_images):
    _same_alone_and_in_batch(classifier, eight_images, override(preset("paper"), ["optim.iterations=3"]), 5)


def test_explicit_target_is_explained(classifier, chelsea):
    config = override(preset("blur"), ["optim.iterations=1"])
    result = solve(classifier, chelsea, config, targets=torch.tensor([281]))  # tabby
    assert int(result.targets[0]) == 281
    assert float(result.p_original[0]) < 0.5


def test_extremal_solves_one_mask_per_area(classifier, chelsea):
    config = override(preset("extremal"), ["optim.iterations=2", "areas=[0.1, 0.3]"])
    result = solve(classifier, chelsea, config)
    assert result.masks.shape == (1, 2, 32, 32)


def test_counter_streams_are_standard_normal_and_position_free():
    seeds = torch.tensor([7, 8, 9])
    noise = counter_normal(seeds, 5, (3, 64, 64))
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
    assert not torch.equal(noise[0], noise[1])
    torch.testing.assert_close(counter_normal(seeds[1:2], 5, (3, 64, 64))[0], noise[1])
    assert not torch.equal(counter_uniform(seeds, 1, (10,)), counter_uniform(seeds, 2, (10,)))


def test_shift_moves_each_image_by_its_own_offset():
    images = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    out = shift(images, torch.tensor([1, 0]), torch.tensor([0, 2]))
    assert torch.equal(out[0, 0, 1:], images[0, 0, :3]) and torch.equal(out[0, 0, 0], images[0, 0, 0])
    assert torch.equal(out[1, 0, :, 2:], images[1, 0, :, :2])


@pytest.mark.slow
def test_early_stopping_keeps_each_mask_where_its_image_stopped(classifier, eight_images):
    # Images leave the batch as they converge; each keeps the mask a plain solve of the same batch
    # for that many iterations gives it (so compaction carries Adam's state, seeds and jitter
    # along). The reference is the same batch, not the image alone: over tens of iterations Adam
    # turns rounding-level gradient differences (batch 1 vs 3 convolutions) into visible steps
    # in cells whose gradient is near zero.
    images, seeds = eight_images[[3, 0, 2]], torch.tensor([10, 11, 12])
    config = override(preset("paper"), ["optim.iterations=40", "optim.stop_window=10", "optim.stop_tol=0.2"])
    stopped = solve(classifier, images, config, seeds=seeds)
    used = stopped.iterations.tolist()
    assert all(n in (20, 30, 40) for n in used), used  # stops only at window ends, never before two windows
    assert min(used) < 40, used  # the tolerance is loose enough for some image to stop
    plain = override(config, ["optim.stop_window=0"])
    for n in sorted(set(used)):
        reference = solve(classifier, images, override(plain, [f"optim.iterations={n}"]), seeds=seeds)
        mine = torch.tensor(used) == n
        torch.testing.assert_close(stopped.masks[mine], reference.masks[mine], atol=1e-5, rtol=0)
        torch.testing.assert_close(stopped.p_final[mine], reference.p_final[mine], atol=1e-5, rtol=0)


def test_early_stopping_ends_the_solve_when_every_image_has_converged(classifier, eight_images):
    config = override(preset("blur"), ["optim.iterations=50", "optim.stop_window=5", "optim.stop_tol=100"])
    calls = []
    result = solve(classifier, eight_images[:2], config, callback=lambda it, loss: calls.append(loss.shape))
    assert result.iterations.tolist() == [10, 10]  # the first possible check stops everything
    assert len(calls) == 10 and calls[-1] == (2,)
    assert torch.isfinite(result.loss).all()


def test_problem_subset_scores_like_the_full_batch(classifier, eight_images):
    # The compacted problem of images [2, 0] gives their rows of the full objective, K masks each.
    from pipeline.solve.problem import Problem, objective

    config = override(preset("extremal"), ["objective.areas=[0.1, 0.3]", "objective.area_growth=1"])
    problem = Problem(classifier, eight_images[:3], None, config, torch.arange(3))
    masks = torch.rand(3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([2, 0])
    with torch.no_grad():
        full = objective(problem, masks, 7)
        part = objective(problem.subset(keep), masks[keep], 7)
    torch.testing.assert_close(part, full[keep], atol=1e-4, rtol=1e-4)


def test_early_stopping_needs_a_fixedobjective():
    import pytest

    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="area weight grows"):
        override(preset("extremal"), ["optim.stop_window=10"])
