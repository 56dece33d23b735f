"""compare_runs on hand-made evaluation folders: bootstrap intervals and paired differences."""

import numpy as np
import pandas as pd
import pytest

from pipeline.report.compare import RANK_METRIC, bootstrap_ci, compare_runs
from pipeline.errors import ConfigError
from tests.helpers.evaluations import base_table, write_run


def test_paired_difference_is_exact_for_a_shifted_run(tmp_path):
    a = base_table()
    b = a.copy()
    b["deletion_auc_zero"] = a["deletion_auc_zero"] + 0.1
    b = b.iloc[::-1].reset_index(drop=True)  # another order: pairing is by path, not position
    b.loc[len(b)] = {**b.iloc[0].to_dict(), "path": "n0/only_in_b.png"}
    runs = [write_run(tmp_path / "A", a), write_run(tmp_path / "B", b)]
    table = compare_runs(runs, tmp_path / "cmp", n_boot=500, seed=3).set_index(["metric", "run"])
    row = table.loc[("deletion_auc_zero", "B")]
    assert row["n"] == 13 and row["n_paired"] == 12
    assert row["diff"] == pytest.approx(0.1, abs=1e-12)
    assert row["diff_ci_low"] == pytest.approx(0.1, abs=1e-12)
    assert row["diff_ci_high"] == pytest.approx(0.1, abs=1e-12)
    assert table.loc[("insertion_auc", "B"), "diff"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(table.loc[("deletion_auc_zero", "A"), "diff"])  # the reference itself
    assert table.loc[("deletion_auc_zero", "A"), "better"] == "lower"
    assert table.loc[("insertion_auc", "A"), "better"] == "higher"
    expected = a["insertion_auc"] - a["deletion_auc_zero"]
    assert table.loc[(RANK_METRIC, "A"), "mean"] == pytest.approx(expected.mean())
    for name in ("comparison.csv", "comparison.md", "curves.png"):
        assert (tmp_path / "cmp" / name).is_file()
    markdown = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "1. `A`" in markdown and "2. `B`" in markdown  # B deletes worse: ranked second


def test_intervals_contain_the_mean_and_are_seeded(tmp_path):
    runs = [write_run(tmp_path / "A", base_table(seed=1)), write_run(tmp_path / "B", base_table(seed=2))]
    first = compare_runs(runs, tmp_path / "c1", n_boot=300, seed=7)
    again = compare_runs(runs, tmp_path / "c2", n_boot=300, seed=7)
    other = compare_runs(runs, tmp_path / "c3", n_boot=300, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_low"], other["ci_low"])
    valid = first.dropna(subset=["mean"])
    assert ((valid["ci_low"] <= valid["mean"]) & (valid["mean"] <= valid["ci_high"])).all()
    assert (valid["ci_high"] > valid["ci_low"]).all()
    paired = first.dropna(subset=["diff"])
    assert ((paired["diff_ci_low"] <= paired["diff"]) & (paired["diff"] <= paired["diff_ci_high"])).all()
    # Adding a run leaves the other runs' intervals unchanged (one generator per metric and run).
    third = write_run(tmp_path / "C", base_table(seed=3))
    bigger = compare_runs([*runs, third], tmp_path / "c4", n_boot=300, seed=7)
    pd.testing.assert_frame_equal(bigger[bigger["run"] != "C"].reset_index(drop=True), first)


def test_bootstrap_ci_by_hand():
    rng = np.random.default_rng(0)
    assert bootstrap_ci([0.25] * 5, 100, rng) == (0.25, 0.25)
    low, high = bootstrap_ci([0.0, 1.0], 4000, rng)  # resampled means are 0, .5, 1 w.p. 1/4, 1/2, 1/4
    assert (low, high) == (0.0, 1.0)
    assert all(np.isnan(bootstrap_ci([], 10, rng)))


def test_settings_differences_are_reported_and_bad_input_refused(tmp_path):
    a = write_run(tmp_path / "A", base_table(), step=1792, curves=False)
    b = write_run(tmp_path / "B", base_table(), step=224, curves=False)
    compare_runs([a, b], tmp_path / "out", n_boot=10)
    assert "`step`" in (tmp_path / "out" / "comparison.md").read_text()
    assert not (tmp_path / "out" / "curves.png").exists()
    with pytest.raises(ConfigError, match="distinct"):
        compare_runs([a, a], tmp_path / "out")
    with pytest.raises(ConfigError, match="no evaluation folder at"):
        compare_runs([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(ConfigError, match="not an evaluation folder.*per_image.parquet"):
        compare_runs([tmp_path / "not-a-run"], tmp_path / "out")
    with pytest.raises(ConfigError, match="n_boot"):
        compare_runs([a], tmp_path / "out", n_boot=0)
