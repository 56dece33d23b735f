"""Continuous batching: slots refilled as images stop give each image its solo result."""

import math

import pytest
import torch

from pipeline.config import override, preset
from pipeline.solve import solve
from pipeline.solve.problem import Problem, objective
from pipeline.solve.stream import StreamBatch, RowOptimizer, solve_stream

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: 2 threads on a loaded 2-core machine ran 4-10x slower


def _batches(images, sizes):
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        yield StreamBatch(images[part], None, torch.arange(len(images))[part] + 100, torch.arange(len(images))[part])
        start += size


@pytest.mark.slow
def test_streamed_images_follow_their_own_trajectories(classifier, eight_images):
    # 5 images through 2 slots: images stop at different window ends and new ones take their slots
    # mid-run, so slot-mates are at different iterations. Each image must still get the mask and
    # scores that a plain solve of its own length gives it (its own iteration count, Adam steps and
    # random draws). The reference is a batch of 2 as well, the image beside some other one: over
    # tens of iterations Adam turns the rounding differences of batch-1 convolutions into visible
    # steps (see test_solver's early-stopping test).
    # The paper preset draws jitter from each image's own iteration count.
    images = eight_images[[3, 0, 2, 6, 1]]
    config = override(preset("paper"), ["optim.iterations=30", "optim.stop_window=5", "optim.stop_tol=0.2"])
    results = {}
    for ids, result in solve_stream(classifier, _batches(images, [2, 2, 1]), config):
        for j, i in enumerate(ids.tolist()):
            assert i not in results
            results[i] = {name: value[j] for name, value in {"masks": result.masks, **result.columns()}.items()}
    assert sorted(results) == [0, 1, 2, 3, 4]
    used = [int(results[i]["iterations"]) for i in range(5)]
    assert all(n % 5 == 0 and 10 <= n <= 30 for n in used), used  # window ends, after two windows
    assert min(used) < 30 and len(set(used)) > 1, used  # some stop early, not all together
    for i in range(5):
        pair = [i, (i + 1) % 5]
        plain = override(config, ["optim.stop_window=0", f"optim.iterations={used[i]}"])
        reference = solve(classifier, images[pair], plain, seeds=torch.tensor(pair) + 100)
        torch.testing.assert_close(results[i]["masks"], reference.masks[0], atol=1e-5, rtol=0)
        for name in ("p_final", "p_original", "p_perturbed", "area", "tv", "loss"):
            torch.testing.assert_close(results[i][name], reference.columns()[name][0], atol=2e-3, rtol=1e-3)
        assert int(results[i]["target"]) == int(reference.targets[0])


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_stream_without_waiting_images_shrinks_like_solve(classifier, eight_images, schedule):
    # One batch of 3 in 3 slots: nothing waits, so the stream shrinks its slots as images stop, to
    # the powers of two solve() cuts its batch to, at the same iterations. So every image gets
    # exactly what solve() with early stopping gives it.
    images, seeds = eight_images[[3, 0, 2]], torch.tensor([10, 11, 12])
    config = override(preset("paper"), ["optim.iterations=40", "optim.stop_window=10", "optim.stop_tol=0.2",
                                        f"optim.schedule={schedule}"])
    reference = solve(classifier, images, config, seeds=seeds)
    assert len(set(reference.iterations.tolist())) > 1  # images stop at different times: it shrinks
    got = {}
    for ids, result in solve_stream(classifier, [StreamBatch(images, None, seeds, torch.arange(3))], config):
        got.update({i: (result.masks[j], result.iterations[j], result.p_final[j]) for j, i in enumerate(ids.tolist())})
    for i in range(3):
        assert int(got[i][1]) == int(reference.iterations[i])
        torch.testing.assert_close(got[i][0], reference.masks[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[i][2], reference.p_final[i], atol=1e-5, rtol=0)


def test_slots_at_different_iterations_get_their_own_objective(classifier, eight_images):
    # The stream's slots are at different iterations: the objective takes per-image counts, and
    # each image's loss (jitter draw, L1 warm-up weight) must be what its own count gives it alone.
    config = override(preset("paper"), ["objective.l1_start=4", "objective.l1_decay=20"])
    problem = Problem(classifier, eight_images[:2], None, config, torch.tensor([5, 6]))
    masks = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = objective(problem, masks, torch.tensor([0, 13]))
        alone = [objective(problem.subset(torch.tensor([i])), masks[i : i + 1], t) for i, t in ((0, 0), (1, 13))]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)
    # Without jitter only the L1 weight depends on the count: 4x at 0, (1 + 3 * 7 / 20)x at 13.
    still = Problem(classifier, eight_images[:1], None, override(config, ["mask.jitter=0"]), torch.tensor([5]))
    with torch.no_grad():
        change = objective(still, masks[:1], 0) - objective(still, masks[:1], 13)
    expected = (4 - (1 + 3 * 7 / 20)) * 1e-4 * (1 - masks[0]).sum()
    torch.testing.assert_close(change[0], expected, atol=1e-6, rtol=1e-4)


@pytest.mark.slow
def test_stream_with_several_masks_per_image(classifier, eight_images):
    # Extremal perturbation with a fixed area weight may stop early: K = 2 masks per image, SGD with
    # momentum, refilled slots. Each image again gets what a plain solve of its length gives it.
    images = eight_images[[3, 0, 2]]
    config = override(preset("extremal"), ["objective.areas=[0.1, 0.3]", "objective.area_growth=1",
                                           "optim.iterations=20", "optim.stop_window=5", "optim.stop_tol=0.5"])
    results = {}
    for ids, result in solve_stream(classifier, _batches(images, [2, 1]), config):
        assert result.masks.shape[1:] == (2, 32, 32)
        results.update({i: (result.masks[j], int(result.iterations[j]), result.p_final[j])
                        for j, i in enumerate(ids.tolist())})
    assert sorted(results) == [0, 1, 2]
    for i in range(3):
        pair = [i, (i + 1) % 3]
        plain = override(config, ["optim.stop_window=0", f"optim.iterations={results[i][1]}"])
        reference = solve(classifier, images[pair], plain, seeds=torch.tensor(pair) + 100)
        torch.testing.assert_close(results[i][0], reference.masks[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(results[i][2], reference.p_final[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_row_optimizer_steps_like_torch_and_restarts_rows(kind, schedule):
    # Rows 0 and 1 run 3 steps; then row 1 restarts and must follow a fresh optimizer again (its
    # schedule restarting too). The torch reference sets each step's lr by hand: 0.1 (1 + cos(pi t / 5)) / 2.
    torch.manual_seed(0)
    config = override(preset("paper"), [f"optim.optimizer={kind}", "optim.lr=0.1", "optim.momentum=0.9",
                                        f"optim.schedule={schedule}", "optim.iterations=5"]).optim
    start = torch.rand(2, 1, 4, 4)
    grads = [torch.randn(2, 1, 4, 4) for _ in range(5)]
    mine = start.clone()
    rows = RowOptimizer(mine, config)
    reference = start.clone().requires_grad_(True)

    def torch_optimizer_of(tensor):
        return torch.optim.Adam([tensor], lr=0.1) if kind == "adam" else torch.optim.SGD([tensor], lr=0.1, momentum=0.9)

    def step(optimizer, t):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * ((1 + math.cos(math.pi * t / 5)) / 2 if schedule == "cosine" else 1.0)
        optimizer.step()

    torch_optimizer = torch_optimizer_of(reference)
    for t, grad in enumerate(grads[:3]):
        rows.step(grad)
        reference.grad = grad.clone()
        step(torch_optimizer, t)
    torch.testing.assert_close(mine, reference.detach(), atol=1e-6, rtol=1e-6)
    rows.reset(torch.tensor([1]))
    fresh = mine[1:].clone().requires_grad_(True)
    fresh_optimizer = torch_optimizer_of(fresh)
    for t, grad in enumerate(grads[3:]):
        rows.step(grad)
        reference.grad = grad.clone()
        step(torch_optimizer, 3 + t)
        fresh.grad = grad[1:].clone()
        step(fresh_optimizer, t)
    torch.testing.assert_close(mine[0], reference.detach()[0], atol=1e-6, rtol=1e-6)  # row 0 carried on
    torch.testing.assert_close(mine[1:], fresh.detach(), atol=1e-6, rtol=1e-6)  # row 1 started afresh


def test_stream_needs_early_stopping(classifier, eight_images):
    with pytest.raises(ValueError, match="early stopping"):
        next(solve_stream(classifier, _batches(eight_images[:2], [2]), preset("blur")))
