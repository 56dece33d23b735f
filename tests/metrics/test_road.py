"""ROAD: the batched imputation and curves against hand-derived answers and against the reference
(pytorch-grad-cam's copy of ``road_evaluation``'s ``NoisyLinearImputer`` and its ROAD metrics; those
tests are skipped without the ``peers`` extra)."""

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.metrics.imputation import ImputationConfig, linear_impute, noisy_linear_impute
from pipeline.metrics.road import RoadConfig, road_auc, road_curves, road_ranks, road_removed
from tests.helpers.models import tiny_convnet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy on torch tensors in pytorch-grad-cam


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


SIZE = 40  # 1600 pixels: int(1600 * p) and pytorch-grad-cam's percentile threshold remove the same count


def blob_map(size: int, seed: int) -> torch.Tensor:
    """A smooth map with one peak plus small tie-free texture, ``(size, size)`` float64."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    heat = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 5) ** 2)) + 0.02 * rng.uniform(size=(size, size))
    return torch.from_numpy(heat)


# ---- hand-derived imputation --------------------------------------------------------------------

def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    image = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5) ** 2  # not linear: weights matter
    removed = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    removed[0, 0, 2, 2] = True
    out = linear_impute(image, removed)
    v = image[0, 0]
    edges = v[1, 2] + v[3, 2] + v[2, 1] + v[2, 3]
    diagonals = v[1, 1] + v[1, 3] + v[3, 1] + v[3, 3]
    assert out[0, 0, 2, 2].item() == pytest.approx(float(edges / 6 + diagonals / 12), abs=1e-9)
    assert torch.equal(out[~removed], image[~removed])


def test_corner_pixel_renormalises_over_its_three_neighbours():
    image = torch.tensor([[0.0, 3.0], [6.0, 12.0]], dtype=torch.float64).view(1, 1, 2, 2)
    removed = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    removed[0, 0, 0, 0] = True
    # neighbours: right 3 (1/6), below 6 (1/6), diagonal 12 (1/12); weights sum to 5/12
    expected = (3 / 6 + 6 / 6 + 12 / 12) / (5 / 12)
    assert linear_impute(image, removed)[0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shape", [(16, 16), (13, 21)])
def test_a_linear_image_is_reproduced_exactly_inside(shape):
    """A linear ramp is harmonic for this symmetric stencil, so removed interior pixels (including
    a large block) come back exactly; odd sizes exercise the padded coarse grids."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (0.3 + 0.02 * yy - 0.01 * xx).expand(1, 3, h, w) * torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    removed = torch.zeros(1, 1, h, w, dtype=torch.bool)
    removed[..., 2:h - 2, 3:w - 3] = True  # ring of kept pixels around it
    out = linear_impute(ramp, removed)
    torch.testing.assert_close(out, ramp, atol=1e-7, rtol=0)


def test_constant_image_stays_constant_and_batching_does_not_matter():
    rng = torch.Generator().manual_seed(3)
    images = torch.rand(5, 3, 24, 24, generator=rng, dtype=torch.float64)
    images[0] = 0.7
    removed = torch.rand(5, 1, 24, 24, generator=rng) < 0.6
    together = linear_impute(images, removed)
    torch.testing.assert_close(together[0], torch.full_like(images[0], 0.7), atol=1e-9, rtol=0)
    one_by_one = torch.cat([linear_impute(images[i:i + 1], removed[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(together, one_by_one, atol=1e-8, rtol=0)
    chunked = linear_impute(images, removed, ImputationConfig(chunk=2))
    torch.testing.assert_close(together, chunked, atol=1e-8, rtol=0)


def test_noise_only_on_removed_pixels_and_fixed_by_the_seed():
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    removed = torch.zeros(2, 1, 12, 12, dtype=torch.bool)
    removed[:, :, 3:9, 3:9] = True
    clean = linear_impute(images, removed)
    noisy = noisy_linear_impute(images, removed, noise=0.01, seeds=[7, 8])
    diff = (noisy - clean)
    assert torch.equal(diff[~removed.expand_as(diff)], torch.zeros_like(diff[~removed.expand_as(diff)]))
    assert 0.006 < float(diff[removed.expand_as(diff)].std()) < 0.014
    again = noisy_linear_impute(images[1:], removed[1:], noise=0.01, seeds=[8])
    torch.testing.assert_close(again, noisy[1:])


def test_imputation_refuses_bad_input():
    with pytest.raises(ConfigError, match="every pixel removed"):
        linear_impute(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="removed must have shape"):
        linear_impute(torch.zeros(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="tol"):
        ImputationConfig(tol=0)


# ---- ranking and curves -------------------------------------------------------------------------

def test_ranks_follow_the_map_and_ties_keep_raster_order_without_jitter():
    saliency = torch.tensor([[[0.5, 1.0], [0.5, 0.2]]])
    assert road_ranks(saliency, tie_jitter=0).tolist() == [[[1, 0], [2, 3]]]


def test_jitter_breaks_plateaus_the_same_way_for_every_image():
    flat = torch.zeros(2, 1, 6, 6)
    ranks = road_ranks(flat, tie_jitter=1e-4, tie_seed=5)
    assert torch.equal(ranks[0], ranks[1])
    assert sorted(ranks[0].flatten().tolist()) == list(range(36))
    assert not torch.equal(ranks[0], road_ranks(flat[:1], tie_jitter=0)[0])


def test_removal_counts_are_the_references_int_of_h_w_p():
    ranks = road_ranks(torch.rand(1, 10, 10), tie_jitter=0)
    morf, lerf = road_removed(ranks, [0.29, 0.5])
    assert morf[0, 0].sum() == int(100 * 0.29) == 28  # float rounding as the reference's int()
    assert lerf[0, 1].sum() == 50 and torch.equal(lerf, ~morf)


def test_road_auc_is_the_mean_over_fractions():
    assert road_auc(torch.tensor([[0.2, 0.4, 0.9]])).tolist() == pytest.approx([0.5])


def test_road_settings_are_json_ready():
    import json

    from pipeline.metrics.road import road_settings

    values = json.loads(json.dumps(road_settings(RoadConfig(fractions=(0.25, 0.5)))))
    assert values["fractions"] == [0.25, 0.5] and values["imputation"]["dtype"] == "float64"
    assert values["noise"] == 0.01 and values["tie_jitter"] == 1e-4


def test_road_config_refuses_bad_fractions():
    for bad in [(0.0, 0.5), (0.5, 0.2), (0.3, 1.0), ()]:
        with pytest.raises(ConfigError, match="fractions"):
            RoadConfig(fractions=bad)


def test_road_curves_on_a_model_that_reads_one_pixel():
    """A model whose class-0 logit is 10 x the mean of a 3x3 patch at the centre: MoRF on a map
    peaking there imputes the patch from its surroundings (all 0), so its probability falls; LeRF
    keeps it, so its probability stays."""

    class Patch(nn.Module):
        def forward(self, x):
            centre = x[:, 0, 4:7, 4:7].mean((1, 2))
            return torch.stack([10 * centre, torch.zeros_like(centre)], 1)

    images = torch.zeros(1, 3, 11, 11)
    images[:, :, 4:7, 4:7] = 1.0
    saliency = torch.zeros(1, 1, 11, 11)
    saliency[..., 4:7, 4:7] = 1.0
    config = RoadConfig(fractions=(0.1, 0.5), noise=0.0)
    result = road_curves(Patch(), images, saliency, torch.tensor([0]), config)
    expected_kept = torch.sigmoid(torch.tensor(10.0))
    assert result.original.item() == pytest.approx(float(expected_kept))
    assert result.lerf[0].tolist() == pytest.approx([float(expected_kept)] * 2)
    assert result.morf[0].tolist() == pytest.approx([0.5, 0.5])  # patch imputed to 0: logits equal
    assert result.lerf_top1.all() and result.combined.item() == pytest.approx((float(expected_kept) - 0.5) / 2)


def test_road_curves_do_not_depend_on_the_batch():
    """With noise on, images scored together or one at a time (same seeds) give the same curves:
    a sharded run equals a one-process run."""
    model = tiny_convnet(classes=5)
    images = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    maps = torch.stack([blob_map(24, seed) for seed in range(3)]).float()[:, None]
    targets = torch.tensor([0, 3, 1])
    config = RoadConfig(fractions=(0.2, 0.6), noise=0.05)
    together = road_curves(model, images, maps, targets, config, seeds=[10, 11, 12])
    for i in range(3):
        alone = road_curves(model, images[i:i + 1], maps[i:i + 1], targets[i:i + 1], config, seeds=[10 + i])
        for name in ("original", "morf", "lerf", "morf_top1", "lerf_top1"):
            torch.testing.assert_close(getattr(alone, name)[0], getattr(together, name)[i], atol=1e-6, rtol=0)
    noiseless = road_curves(model, images, maps, targets, RoadConfig(fractions=(0.2, 0.6), noise=0.0))
    assert not torch.allclose(noiseless.morf, together.morf, atol=1e-7)  # the noise is really there


# ---- against the reference ----------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
def test_imputation_equals_the_reference(size):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    reference = road.NoisyLinearImputer(noise=0.0)
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    ranks = road_ranks(torch.stack([blob_map(size, seed) for seed in range(3)]), tie_jitter=0)
    morf, lerf = road_removed(ranks, (0.1, 0.5, 0.9))
    removed = torch.cat([morf, lerf], 1)  # (3, 6, H, W)
    ours = linear_impute(images.repeat_interleave(6, 0), removed.reshape(18, 1, size, size))
    for i in range(18):
        keep = (~removed.reshape(18, size, size)[i]).float()
        theirs = reference(images[i // 6], keep)
        torch.testing.assert_close(ours[i], theirs, atol=1e-4, rtol=0)


def test_road_scores_equal_pytorch_grad_cam():
    """Our MoRF at fraction p equals pytorch-grad-cam's ``ROADMostRelevantFirst(percentile=100 (1 - p))``
    (its percentile is the share kept), our LeRF at p its ``ROADLeastRelevantFirst(percentile=100 p)``,
    and our combined score its ``ROADCombined``, all without noise on tie-free maps."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = tiny_convnet(classes=5)
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    maps = torch.stack([blob_map(SIZE, seed) for seed in range(3)]).float()
    targets = model(images).argmax(1)
    fractions = (0.1, 0.3, 0.5, 0.7, 0.9)
    ours = road_curves(model, images, maps[:, None], targets, RoadConfig(fractions=fractions, noise=0.0, tie_jitter=0))
    cams, wanted = maps.numpy(), [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]

    def run(metric):
        metric.perturbation.imputer.noise = 0.0
        return metric(images, cams, wanted, model, return_diff=False)

    for k, p in enumerate(fractions):
        morf = run(road.ROADMostRelevantFirst(percentile=round(100 * (1 - p))))
        lerf = run(road.ROADLeastRelevantFirst(percentile=round(100 * p)))
        np.testing.assert_allclose(ours.morf[:, k].numpy(), morf, atol=1e-5)
        np.testing.assert_allclose(ours.lerf[:, k].numpy(), lerf, atol=1e-5)

    combined = road.ROADCombined(percentiles=[round(100 * p) for p in fractions])
    for averager in (combined.morf_averager, combined.lerf_averager):
        base = averager.imputer
        averager.imputer = lambda q, base=base: _silent(base(q))
    np.testing.assert_allclose(ours.combined.numpy(), combined(images, cams, wanted, model), atol=1e-5)


def _silent(metric):
    metric.perturbation.imputer.noise = 0.0
    return metric
