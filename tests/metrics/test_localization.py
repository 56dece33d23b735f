"""Localisation and pointing games on synthetic heatmaps with answers derived by hand."""

import math

import numpy as np
import pytest
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.metrics import (
    BoxKind,
    PointingGame,
    ThresholdMethod,
    best_iou,
    energy_pointing_game,
    iou,
    largest_component_box,
    localize,
    pointing_game_hit,
    rescale_box,
    resize_heatmap,
    threshold,
    tight_box,
)

# 2x5 heatmap holding 0..9 in raster order: min 0, max 9, mean 4.5, sum 45.
RAMP = np.arange(10, dtype=float).reshape(2, 5)


def kept_values(mask):
    return sorted(RAMP[mask].astype(int).tolist())


@pytest.mark.parametrize(
    "method, alpha, expected",
    [
        ("value", 0.10, list(range(1, 10))),  # h >= 0.9
        ("value", 0.5, [5, 6, 7, 8, 9]),  # h >= 4.5
        ("value", 1.0, [9]),
        # 0.95 * 45 = 42.75; cumsum 9, 17, 24, 30, 35, 39, 42, 44 -> 8 pixels.
        ("energy", 0.95, [2, 3, 4, 5, 6, 7, 8, 9]),
        ("energy", 0.5, [7, 8, 9]),  # 22.5: 9, 17, 24
        ("energy", 1.0, list(range(1, 10))),  # the 0 pixel holds no mass
        ("mean", 0.5, [3, 4, 5, 6, 7, 8, 9]),  # h >= 2.25
        ("mean", 1.0, [5, 6, 7, 8, 9]),  # h >= 4.5
        (ThresholdMethod.MEAN, 2.0, [9]),  # h >= 9
    ],
)
def test_threshold_methods(method, alpha, expected):
    mask = threshold(RAMP, method, alpha)
    assert mask.dtype == bool and mask.shape == RAMP.shape
    assert kept_values(mask) == expected


def test_energy_ties_in_raster_order_and_negative_clipping():
    ones = np.ones((2, 2))
    assert threshold(ones, "energy", 0.5).tolist() == [[True, True], [False, False]]
    # Clipped: [0, 1, 3], total 4; 0.75 * 4 = 3 is held by the 3 alone.
    kept = threshold(np.array([[-5.0, 1.0, 3.0]]), "energy", 0.75)
    assert kept.tolist() == [[False, False, True]]
    assert not threshold(np.zeros((3, 3)), "energy", 0.95).any()  # no mass: nothing kept


def test_value_threshold_on_constant_heatmap_keeps_everything():
    assert threshold(np.full((3, 4), 2.0), "value", 0.1).all()


@pytest.mark.parametrize(
    "method, alpha, match",
    [
        ("otsu", 0.5, "method must be one of 'value', 'energy', 'mean'; got 'otsu'"),
        ("value", 1.5, "alpha for method 'value' must be in \\[0, 1\\]; got 1.5"),
        ("energy", -0.1, "alpha for method 'energy'"),
        ("mean", float("nan"), "alpha for method 'mean' must be >= 0"),
    ],
)
def test_threshold_rejects_bad_arguments(method, alpha, match):
    with pytest.raises(ConfigError, match=match):
        threshold(RAMP, method, alpha)


def two_blobs():
    """10x10: blob A = 1.0 on rows/cols 1..3 (9 px), blob B = 0.5 on rows/cols 7..8 (4 px)."""
    h = np.zeros((10, 10))
    h[1:4, 1:4] = 1.0
    h[7:9, 7:9] = 0.5
    return h


def test_tight_versus_component_box():
    mask = two_blobs() > 0
    assert tight_box(mask) == (1, 1, 8, 8)
    assert largest_component_box(mask) == (1, 1, 3, 3)
    assert tight_box(np.zeros((4, 4), bool)) is None
    assert largest_component_box(np.zeros((4, 4), bool)) is None


def test_component_uses_8_connectivity_and_raster_tie_break():
    mask = np.zeros((6, 6), bool)
    mask[[0, 1, 2], [0, 1, 2]] = True  # a diagonal: one component under 8-connectivity (3 px)
    mask[5, 0:2] = True  # 2 px
    assert largest_component_box(mask) == (0, 0, 2, 2)
    ties = np.zeros((6, 6), bool)
    ties[4, 3:5] = True  # met second in raster order
    ties[1, 0:2] = True  # met first
    assert largest_component_box(ties) == (0, 1, 1, 1)


def test_tight_box_is_x_then_y():
    mask = np.zeros((5, 8), bool)
    mask[1, 6] = mask[3, 2] = True  # rows 1..3, cols 2..6
    assert tight_box(mask) == (2, 1, 6, 3)


def test_iou_inclusive_pixel_boxes():
    boxes = np.array([[0, 0, 9, 9], [5, 5, 14, 14], [20, 20, 29, 29], [2, 2, 3, 3]])
    # 100-px boxes sharing 5x5 = 25: 25 / 175; disjoint: 0; a 2x2 box inside: 4 / 100.
    np.testing.assert_allclose(iou((0, 0, 9, 9), boxes), [1.0, 1 / 7, 0.0, 0.04])
    # Sharing one column of 5 pixels: 5 / (25 + 25 - 5).
    assert iou((0, 0, 4, 4), np.array([[4, 0, 8, 4]]))[0] == pytest.approx(1 / 9)
    assert iou((3, 3, 3, 3), np.array([[3, 3, 3, 3]]))[0] == 1.0  # a single pixel has area 1
    assert best_iou((0, 0, 9, 9), boxes[1:]) == pytest.approx(1 / 7)
    assert best_iou(None, boxes) == 0.0
    with pytest.raises(ConfigError, match="boxes must have shape"):
        iou((0, 0, 1, 1), np.zeros((0, 4)))


def test_rescale_box_integer_arithmetic():
    assert rescale_box((0, 0, 111, 111), (224, 224), (448, 448)) == (0, 0, 223, 223)
    # to (H, W) = (375, 500): x0 = 112 * 500 // 224 = 250, x1 = 224 * 500 / 224 - 1 = 499,
    # y1 = ceil(112 * 375 / 224) - 1 = ceil(187.5) - 1 = 187.
    assert rescale_box((112, 0, 223, 111), (224, 224), (375, 500)) == (250, 0, 499, 187)
    assert rescale_box((0, 0, 223, 223), (224, 224), (100, 50)) == (0, 0, 49, 99)
    with pytest.raises(ConfigError, match="to_size must be \\(height, width\\)"):
        rescale_box((0, 0, 1, 1), (224, 224), (0, 10))


def test_resize_heatmap_bilinear_with_edge_border():
    out = resize_heatmap(np.array([[0.0, 1.0], [0.0, 1.0]]), (3, 4))
    # Pixel-centre aligned: output columns sample input x = -0.25, 0.25, 0.75, 1.25 (edge-clamped).
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]] * 3)
    assert resize_heatmap(np.ones((224, 224)), (375, 500)).shape == (375, 500)


def test_localize_two_blobs():
    h, gt = two_blobs(), np.array([[1, 1, 3, 3]])
    # value 0.10 and mean 0.5 (mean 0.11 -> h >= 0.055) keep both blobs; energy 0.95 needs
    # 10.45 of 11: blob A (9) plus three of B's 0.5 pixels, so the tight box still spans both.
    rows = localize(h, gt)
    assert [(r.method.value, r.alpha, r.box_kind.value) for r in rows] == [
        ("value", 0.1, "tight"), ("value", 0.1, "component"),
        ("energy", 0.95, "tight"), ("energy", 0.95, "component"),
        ("mean", 0.5, "tight"), ("mean", 0.5, "component"),
    ]
    for r in rows:
        tight = r.box_kind is BoxKind.TIGHT
        assert r.box == ((1, 1, 8, 8) if tight else (1, 1, 3, 3))
        assert r.iou == pytest.approx(9 / 64 if tight else 1.0)  # gt 3x3 inside an 8x8 box
        assert r.correct is (not tight) and r.fallback is False
    (only_a,) = localize(h, gt, [("value", 0.6)], ["tight"])  # h >= 0.6: blob A only
    assert only_a.box == (1, 1, 3, 3) and only_a.correct


def test_localize_falls_back_to_whole_image_when_nothing_survives():
    (row,) = localize(np.zeros((10, 20)), np.array([[0, 0, 19, 9]]), [("energy", 0.95)], ["tight"])
    assert row.fallback and row.box == (0, 0, 19, 9) and row.iou == 1.0 and row.correct


def test_localize_errors():
    with pytest.raises(ConfigError, match="box_kinds entries must be one of 'tight', 'component'"):
        localize(two_blobs(), np.array([[1, 1, 3, 3]]), box_kinds=["loose"])
    with pytest.raises(ConfigError, match="gt_boxes must have shape"):
        localize(two_blobs(), np.zeros((0, 4)))
    with pytest.raises(ConfigError, match="heatmap must be a non-empty 2-D array"):
        localize(np.zeros((1, 3, 3)), np.array([[1, 1, 3, 3]]))


BOX = np.array([[30, 20, 40, 25]])  # x 30..40, y 20..25


def point_heatmap(y, x, shape=(60, 60)):
    h = np.zeros(shape)
    h[y, x] = 1.0
    return h


@pytest.mark.parametrize(
    "y, x, hit",
    [
        (22, 35, True),  # inside
        (22, 16, True),  # 14 px left of the box edge x = 30
        (22, 15, False),  # exactly 15 px: TorchRay's test is strict
        (22, 14, False),  # 16 px
        (39, 35, True),  # 14 px below y = 25
        (40, 35, False),  # exactly 15 px
        (8, 21, False),  # corner (30, 20): dx 9, dy 12 -> exactly 15
        (9, 21, True),  # dx 9, dy 11 -> 14.2
        (37, 49, False),  # corner (40, 25): dx 9, dy 12 -> exactly 15
        (36, 49, True),  # dx 9, dy 11
    ],
)
def test_pointing_game_tolerance_15(y, x, hit):
    assert pointing_game_hit(point_heatmap(y, x), BOX, tolerance=15) is hit


def test_pointing_game_equals_torchray_disk_dilation():
    # TorchRay: a hit when a box pixel lies at squared distance < 15**2 from the point, that is
    # the box dilated by the open disk of radius 15.
    gt_mask = np.zeros((60, 60), bool)
    gt_mask[20:26, 30:41] = True
    yy, xx = np.mgrid[-15:16, -15:16]
    dilated = ndimage.binary_dilation(gt_mask, structure=yy**2 + xx**2 < 15**2)
    for y in range(60):
        for x in range(0, 60, 3):
            assert pointing_game_hit(point_heatmap(y, x), BOX) == dilated[y, x], (y, x)


def test_pointing_game_tie_takes_first_maximum_in_raster_order():
    h = point_heatmap(22, 35)
    h[0, 0] = 1.0  # an equal maximum earlier in raster order, far from the box
    assert pointing_game_hit(h, BOX) is False
    assert pointing_game_hit(point_heatmap(22, 35), BOX, tolerance=0) is True
    with pytest.raises(ConfigError, match="tolerance"):
        pointing_game_hit(h, BOX, tolerance=-1)


def test_pointing_game_any_box_counts():
    boxes = np.array([[0, 0, 2, 2], [50, 50, 55, 55]])
    assert pointing_game_hit(point_heatmap(45, 45), boxes)  # sqrt(50) from the second box


def test_energy_pointing_game_share():
    h = np.ones((4, 4))
    h[:2, :2] = 3.0  # inside: 4 * 3 = 12, outside: 12
    assert energy_pointing_game(h, np.array([[0, 0, 1, 1]])) == pytest.approx(0.5)
    h[3, 3] = -5.0  # clipped to 0: outside mass 11
    assert energy_pointing_game(h, np.array([[0, 0, 1, 1]])) == pytest.approx(12 / 23)
    # Overlapping boxes count their union once: 4 + 4 - 1 = 7 of 16 pixels.
    overlap = np.array([[0, 0, 1, 1], [1, 1, 2, 2]])
    assert energy_pointing_game(np.ones((4, 4)), overlap) == pytest.approx(7 / 16)
    assert energy_pointing_game(np.zeros((4, 4)), overlap) == 0.0


def test_pointing_game_accumulator_per_image_vs_per_class():
    game = PointingGame()
    assert math.isnan(game.compute()["per_image"])
    for hit, cls in [(True, 0), (True, 0), (True, 0), (False, 1)]:
        game.update(hit, cls)
    # per image: 3 / 4; per class: mean(3 / 3, 0 / 1) = 0.5.
    assert game.compute() == {"per_image": 0.75, "per_class": 0.5, "n_images": 4, "n_classes": 2}
    other = PointingGame()
    for hit, cls in [(False, 1), (True, 0), (np.bool_(True), np.int64(0)), (True, 0)]:
        other.update(hit, cls)
    assert other.compute() == game.compute()  # order and numpy scalars do not matter
    game.reset()
    assert game.compute()["n_images"] == 0 and math.isnan(game.compute()["per_class"])


def test_pointing_game_accumulator_rejects_bad_input():
    game = PointingGame()
    with pytest.raises(ConfigError, match="hit must be a bool; got 1"):
        game.update(1, 0)
    with pytest.raises(ConfigError, match="class_id must be an integer"):
        game.update(True, "n01440764")
