"""The report commands through the real command line: baseline, evaluate, compare, sweep."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.helpers.boxes import write_chelsea_box
from tests.helpers.images import write_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """chelsea and coffee as PNG files in their ImageNet classes, and the box of chelsea's cat."""
    root = write_folder(tmp_path_factory.mktemp("data"), {"n02124075": ["chelsea"], "n07920052": ["coffee"]},
                        suffix=".png")
    return root, write_chelsea_box(root.parent / "boxes")


@pytest.mark.slow
def test_sweep_solves_evaluates_and_compares(folder, tmp_path):
    root, boxes = folder
    out = tmp_path / "sweep"
    (tmp_path / "calibration.txt").write_text("coffee\n")  # the held-out protocol reaches evaluate
    args = ["sweep", str(root), "-p", "jacobgil", "-p", "blur", "-n", "2", "--out", str(out), "--boxes", str(boxes),
            "--workers", "0", "--step", "12544", "--alpha-split", str(tmp_path / "calibration.txt")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("jacobgil", "blur"):
        table = pd.read_parquet(out / name / "per_image.parquet")
        assert len(table) == 2 and table["insertion_auc"].notna().all()
        config = json.loads((out / name / "summary.json").read_text())
        assert config["settings"]["step"] == 12544 and config["settings"]["alpha_split"] == ["coffee"]
        assert "calibration" in config["localization_split"]["error"]  # only chelsea has a box: no split
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["run"]) == {"jacobgil", "blur"}
    assert (out / "comparison.md").read_text().count("|") > 10
    for page in (out / "report.html", out / "jacobgil" / "report.html", out / "blur" / "report.html"):
        assert page.read_text().count('data-table="summary"') == 1  # the HTML reports (tests/report/test_report.py)
    # Resumed: nothing solved or evaluated again.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("report is up to date") == 2
    # A stamp from before the metric settings existed (repr(EvalConfig)) still counts when its
    # settings agree; one whose step differs is evaluated again.
    for name, step in (("jacobgil", 12544), ("blur", 896)):
        stamp = json.loads((out / name / "report.stamp").read_text())
        older = {k: v for k, v in stamp["eval"].items() if k != "metrics" and not k.startswith("road")}
        older.update(step=step, chunk=32, batch_size=8, workers=0)
        fields = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}" for k, v in older.items())
        (out / name / "report.stamp").write_text(json.dumps({**stamp, "eval": f"EvalConfig({fields})"}))
    third = runner.invoke(app, args)
    assert third.exit_code == 0, third.output
    assert "[jacobgil] report is up to date" in third.output and "[blur] evaluating" in third.output


def test_baseline_evaluate_compare_commands(folder, tmp_path):
    root, boxes = folder
    for name in ("centre", "gradcam"):
        made = runner.invoke(app, ["baseline", name, str(root), "--out", str(tmp_path / f"{name}.h5"), "--workers", "0"])
        assert made.exit_code == 0, made.output
        evaluated = runner.invoke(app, ["evaluate", str(tmp_path / f"{name}.h5"), "--out", str(tmp_path / name),
                                        "--boxes", str(boxes), "--step", "12544", "--workers", "0"])
        assert evaluated.exit_code == 0, evaluated.output
        assert "insertion_auc" in evaluated.output
    compared = runner.invoke(app, ["compare", str(tmp_path / "centre"), str(tmp_path / "gradcam"),
                                   "--out", str(tmp_path / "cmp"), "--n-boot", "50"])
    assert compared.exit_code == 0, compared.output
    assert "gradcam" in compared.output and (tmp_path / "cmp" / "curves.png").exists()


def test_unknown_preset_and_field_are_clear_errors(folder, tmp_path):
    root, _ = folder
    bad = runner.invoke(app, ["sweep", str(root), "-p", "paper", "--alpha-split", "0.5", "--out", str(tmp_path / "s")])
    assert bad.exit_code == 1 and "--boxes" in bad.output and not (tmp_path / "s").exists()
    bad = runner.invoke(app, ["sweep", str(root), "-p", "papr", "--out", str(tmp_path / "s")])
    assert bad.exit_code == 1 and "did you mean paper" in bad.output
    bad = runner.invoke(app, ["masks", str(root), "--set", "tv_coef=1", "--out", str(tmp_path / "m.h5")])
    assert bad.exit_code == 1 and "tv_coeff" in bad.output
