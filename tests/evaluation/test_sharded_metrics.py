"""A sharded ``perturb evaluate --metrics deletion,road,complexity`` (two shards, then ``perturb
merge``) writes the one-process report: the ROAD and complexity columns, the summary with its
ROAD settings and curve means; the settings travel through the shard plan (JSON) unchanged."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
SETTINGS = ["--step", "16724", "-b", "3", "--workers", "0", "--device", "cpu", "--metrics", "deletion,road,complexity",
            "--road-percentages", "30,70", "--road-precision", "float32", "--road-tol", "1e-6"]


@pytest.mark.slow
def test_sharded_road_and_complexity_equal_one_process(solved_store, tmp_path, one_thread):
    one = runner.invoke(app, ["evaluate", str(solved_store), "--out", str(tmp_path / "one"), *SETTINGS])
    assert one.exit_code == 0, one.output
    report = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        done = runner.invoke(app, ["evaluate", str(solved_store), "--out", str(report), "--shard", shard, *SETTINGS])
        assert done.exit_code == 0, done.output
    merged = runner.invoke(app, ["merge", str(report)])
    assert merged.exit_code == 0, merged.output
    got, want = pd.read_parquet(report / "per_image.parquet"), pd.read_parquet(tmp_path / "one" / "per_image.parquet")
    pd.testing.assert_frame_equal(got, want)
    assert {"road_morf_30", "road_lerf_70", "road_combined", "sparseness", "complexity"} <= set(got.columns)
    assert np.isfinite(got["road_combined"]).sum() == 6 and got["insertion_auc"].isna().all()
    summary = json.loads((report / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["settings"]["road"]["fractions"] == [0.3, 0.7]
    assert summary["settings"]["road"]["imputation"]["dtype"] == "float32"
    assert summary["road"]["n"] == 6 and "insertion_auc" not in summary["metrics"]
