"""The paper's localisation protocol: alpha chosen on calibration images, error on the others.

Hand-made per-image tables whose answers are counted on paper, and the split's properties.
"""

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.metrics import held_out_localization, loc_columns, split_calibration


def table() -> pd.DataFrame:
    """Six localised images a..f and one (g) that was not localised (NaN everywhere)."""
    nan = np.nan
    return pd.DataFrame({
        "path": ["n1/a.JPEG", "n1/b.JPEG", "n2/c.JPEG", "n2/d.JPEG", "n3/e.JPEG", "n3/f.JPEG", "n3/g.JPEG"],
        "loc_value_0.1_tight": [1, 0, 0, 1, 1, 1, nan],
        "loc_value_0.5_tight": [1, 1, 0, 1, 0, 0, nan],
        "loc_mean_0.5_tight": [1, 0, 1, 0, 0, 1, nan],
        "loc_mean_1_tight": [0, 1, 1, 1, 1, 1, nan],
        "loc_value_0.5_component": [0, 0, 0, 1, 1, 0, nan],
        "iou_value_0.5_tight": [0.9] * 7,  # not a loc_ column: ignored
        "loc_status": ["ok"] * 6 + ["no box of class"],
    })


def test_loc_columns_groups_by_method_and_box_kind():
    groups = loc_columns(table().columns)
    assert groups[("value", "tight")] == [(0.1, "loc_value_0.1_tight"), (0.5, "loc_value_0.5_tight")]
    assert groups[("mean", "tight")] == [(0.5, "loc_mean_0.5_tight"), (1.0, "loc_mean_1_tight")]
    assert set(groups) == {("value", "tight"), ("mean", "tight"), ("value", "component")}


def test_alpha_is_chosen_on_calibration_and_error_reported_on_test():
    t = table()
    calibration = np.array([True, True, True, False, False, False, True])  # g is not localised
    choices, columns = held_out_localization(t, calibration)
    by_key = {(c.method, c.box_kind): c for c in choices}
    assert [(c.method, c.box_kind) for c in choices] == [("value", "tight"), ("value", "component"),
                                                          ("mean", "tight")]
    value = by_key[("value", "tight")]
    # calibration a, b, c: alpha 0.1 gets 1 of 3 right, alpha 0.5 gets 2 of 3 -> 0.5;
    # test d, e, f at 0.5: 1, 0, 0 -> error 2/3 (at 0.1 it would have been 0).
    assert value.alpha == 0.5 and value.calibration_error == pytest.approx(1 / 3)
    assert value.test_error == pytest.approx(2 / 3) and (value.calibration_n, value.test_n) == (3, 3)
    # mean: both alphas get 2 of 3 on calibration; the tie goes to the smaller alpha, 0.5;
    # test at 0.5: 0, 0, 1 -> error 2/3.
    mean = by_key[("mean", "tight")]
    assert mean.alpha == 0.5 and mean.calibration_error == pytest.approx(1 / 3)
    assert mean.test_error == pytest.approx(2 / 3) and mean.alphas_tried == (0.5, 1.0)
    assert by_key[("value", "component")].test_error == pytest.approx(1 / 3)  # d, e right; f wrong
    assert columns["alpha_split"].iloc[:6].tolist() == ["calibration"] * 3 + ["test"] * 3
    assert pd.isna(columns["alpha_split"].iloc[6])
    np.testing.assert_array_equal(columns["locerr_value_tight"], [np.nan] * 3 + [0, 1, 1, np.nan])
    assert columns["locerr_mean_tight"].iloc[3:6].tolist() == [1, 1, 0]


def test_a_side_without_images_is_refused():
    t = table()
    with pytest.raises(ConfigError, match="0 test"):
        held_out_localization(t, np.array([True] * 6 + [False]))  # only g, not localised, is test
    with pytest.raises(ConfigError, match="no loc_"):
        held_out_localization(t[["path"]], np.ones(7, bool))


def test_fractional_split_is_per_image_seeded_and_order_free():
    keys = [f"n{i % 50:08d}/ILSVRC2012_val_{i:08d}.JPEG" for i in range(2000)]
    split = split_calibration(keys, 0.3, seed=0)
    assert 0.27 < split.mean() < 0.33
    np.testing.assert_array_equal(split, split_calibration(keys, 0.3, seed=0))
    # Each image's side depends on its own key only: reversing or subsetting changes nothing.
    np.testing.assert_array_equal(split_calibration(keys[::-1], 0.3)[::-1], split)
    np.testing.assert_array_equal(split_calibration(keys[:100], 0.3), split[:100])
    other = split_calibration(keys, 0.3, seed=1)
    assert 0.27 < other.mean() < 0.33 and (other != split).mean() > 0.3
    # A larger fraction only adds calibration images.
    assert (split_calibration(keys, 0.6) >= split).all()


def test_list_split_matches_paths_names_and_stems():
    keys = table()["path"].tolist()
    chosen = split_calibration(keys, ["n1/a.JPEG", "b.JPEG", "c"])
    assert chosen.tolist() == [True, True, True, False, False, False, False]
    for bad in (0.0, 1.0, 1.5, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match="alpha split"):
            split_calibration(keys, bad)


def test_cli_refuses_a_bad_alpha_split(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    for value, message in (("abc", "neither a fraction"), ("1.5", "alpha_split must be a fraction")):
        result = runner.invoke(app, ["evaluate", str(tmp_path / "none.h5"), "--out", str(tmp_path / "o"),
                                     "--alpha-split", value])
        assert result.exit_code == 1 and message in result.output, result.output
    empty = tmp_path / "list.txt"
    empty.write_text("\n")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none.h5"), "--out", str(tmp_path / "o"),
                                 "--alpha-split", str(empty)])
    assert result.exit_code == 1 and "lists no image" in result.output
