"""``--metrics``: ROAD and complexity inside the evaluation, the selection of metrics, and its errors.

The model and images are those of ``test_evaluate.py``: logit 0 = ``16 C mean(x)``, the others 0, on
16x16 black images with a white 4x4 patch. Map A marks the patch salient (16 pixels), map B
everything else. With ROAD's noise off, a removed region whose kept pixels are all black is imputed
black, so its image has ``mean(x) = 0`` and ``p0 = 1/10`` exactly: A's MoRF (the patch is removed
at every fraction, since ``k = int(256 p) >= 25 > 16``) and B's LeRF (the kept top ``k <= 230``
pixels are black ones) are flat at 0.1. Complexity of map A (16 ones, 240 zeros): Gini
``(256 - 16) / 256`` and entropy ``log 16``.
"""

import json
import math

import numpy as np
import pytest
import torch

from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.evaluation import EvalConfig, evaluate_store, merge_evaluations, road_column, store_saliency
from pipeline.metrics import RoadConfig, ImputationConfig, road_curves
from pipeline.store import MaskStore
from tests.helpers.patch import patch_classifier, patch_image
from typer.testing import CliRunner

FRACTIONS = (0.1, 0.5, 0.9)


def test_road_and_complexity_columns_by_hand(deletion_case, tmp_path, one_thread):
    store, root = deletion_case
    config = EvalConfig(step=16, workers=0, gallery=1, metrics=("road", "complexity"), road_fractions=FRACTIONS,
                        road_noise=0.0)
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "out", config=config)
    t = result.table.set_index("path")
    a, b = t.loc["n00000000/a.png"], t.loc["n00000000/b.png"]
    for f in FRACTIONS:
        assert a[road_column("morf", f)] == pytest.approx(0.1, abs=1e-6)
        assert b[road_column("lerf", f)] == pytest.approx(0.1, abs=1e-6)
        assert a[road_column("morf_top1", f)] == 1.0  # all logits 0: argmax is class 0
    assert a["road_morf_auc"] == pytest.approx(0.1, abs=1e-6)
    assert a["road_combined"] == pytest.approx((a["road_lerf_auc"] - 0.1) / 2, abs=1e-6)
    assert a["road_combined"] > 0 > b["road_combined"]  # the patch map beats its complement
    assert a["sparseness"] == pytest.approx(240 / 256, abs=1e-5)
    assert a["complexity"] == pytest.approx(math.log(16), abs=1e-6)
    # the deletion and insertion curves were not asked for: not computed, not summarised
    assert np.isnan(a["deletion_auc_zero"]) and "deletion_auc_zero" not in result.summary["metrics"]
    summary = json.loads(result.paths["summary_json"].read_text())
    for name in ("road_morf_auc", "road_lerf_auc", "road_combined", "sparseness", "complexity"):
        assert summary["metrics"][name]["count"] == 2
    assert summary["metrics"]["road_morf_auc"]["better"] == "lower"
    assert summary["metrics"]["complexity"]["better"] == "lower"
    assert summary["road"]["fractions"] == list(FRACTIONS) and summary["road"]["n"] == 2
    assert summary["road"]["morf"][0] == pytest.approx((a[road_column("morf", 0.1)] + b[road_column("morf", 0.1)]) / 2)
    road = summary["settings"]["road"]
    assert road["fractions"] == list(FRACTIONS) and road["noise"] == 0.0 and road["imputation"]["tol"] == 1e-9
    assert summary["settings"]["metrics"] == ["road", "complexity"]
    header = result.paths["per_image_csv"].read_text().splitlines()[0].split(",")
    assert {"road_morf_10", "road_lerf_90", "road_lerf_top1_50", "road_combined", "sparseness"} <= set(header)


def test_road_columns_equal_road_curves_with_noise(deletion_case, tmp_path, one_thread):
    """With noise on, the columns are road_curves' on the [0, 1] images, noise seeded by image index."""
    store, root = deletion_case
    classifier = patch_classifier()
    config = EvalConfig(step=16, workers=0, plots=False, batch_size=1, metrics=("road",), road_fractions=FRACTIONS)
    result = evaluate_store(store, root, classifier, tmp_path / "out", config=config)
    with MaskStore(store) as opened:
        heat = store_saliency(opened, [0, 1], (16, 16))
    images = torch.from_numpy(np.stack([patch_image()] * 2)).permute(0, 3, 1, 2).float()
    expected = road_curves(lambda x: classifier(classifier.normalize(x)), images, heat, torch.tensor([0, 0]),
                           RoadConfig(fractions=FRACTIONS, imputation=ImputationConfig()), seeds=[0, 1])
    table = result.table.iloc[:2]
    for j, f in enumerate(FRACTIONS):
        np.testing.assert_allclose(table[road_column("morf", f)], expected.morf[:, j].numpy(), atol=1e-6)
        np.testing.assert_allclose(table[road_column("lerf", f)], expected.lerf[:, j].numpy(), atol=1e-6)


def test_sharded_evaluation_keeps_the_road_columns(deletion_case, tmp_path, one_thread):
    store, root = deletion_case
    classifier = patch_classifier()
    config = EvalConfig(step=16, workers=0, plots=False, metrics=("deletion", "road", "complexity"),
                        road_fractions=FRACTIONS)
    whole = evaluate_store(store, root, classifier, tmp_path / "whole", config=config)
    for part, indices in enumerate(([0, 2], [1, 3])):
        evaluate_store(store, root, classifier, tmp_path / f"part{part}", config=config, indices=indices)
    merged = merge_evaluations(store, [tmp_path / "part0", tmp_path / "part1"], tmp_path / "merged", config, False)
    columns = ["road_morf_10", "road_lerf_90", "road_combined", "sparseness", "complexity", "deletion_auc_zero"]
    np.testing.assert_allclose(merged.table[columns].to_numpy(float), whole.table[columns].to_numpy(float))
    assert merged.summary["road"] == whole.summary["road"]
    assert merged.summary["metrics"] == whole.summary["metrics"]


def test_metric_names_are_checked():
    assert EvalConfig(metrics="complexity, road").metrics == ("road", "complexity")
    with pytest.raises(ConfigError, match="unknown metric 'roads'; the metrics are deletion, insertion"):
        EvalConfig(metrics=("roads",))
    with pytest.raises(ConfigError, match="perturb randomisation"):
        EvalConfig(metrics=("randomisation",))


def test_localisation_without_boxes_is_refused(deletion_case, tmp_path):
    store, root = deletion_case
    with pytest.raises(ConfigError, match="localisation needs ground-truth boxes"):
        evaluate_store(store, root, patch_classifier(), tmp_path / "out",
                       config=EvalConfig(workers=0, metrics=("deletion", "localisation")))
    assert not (tmp_path / "out").exists()


def test_cli_unknown_metric_is_one_error_line_before_any_work(deletion_case, tmp_path):
    store, _ = deletion_case
    result = CliRunner().invoke(app, ["evaluate", str(store), "--out", str(tmp_path / "out"), "--metrics", "deletion,nope"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown metric 'nope'")
    assert "road" in lines[0] and "complexity" in lines[0]
    assert not (tmp_path / "out").exists()
