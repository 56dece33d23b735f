"""The report and ``compare`` on a run folder with ROAD, complexity and a randomisation check: a
gradient store of the tiny network, evaluated with ``metrics=("road", "complexity")`` and checked
by ``randomise_store`` into the same folder."""

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import EvalConfig, evaluate_store
from pipeline.jobs.randomisation import RandomisationConfig, randomise_store
from pipeline.report import write_report
from pipeline.report.compare import compare_runs
from pipeline.store import MaskStore


@pytest.fixture(scope="module")
def checked_run(gradient_store, tiny_classifier, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "gradient"
    config = EvalConfig(workers=0, gallery=1, metrics=("road", "complexity"), road_fractions=(0.2, 0.8))
    evaluate_store(gradient_store, None, tiny_classifier, folder, config=config)
    randomise_store(gradient_store, folder, tiny_classifier, config=RandomisationConfig(limit=4, batch_size=4))
    return folder


def test_report_shows_road_randomisation_and_complexity(checked_run, tmp_path, one_thread):
    page = write_report([checked_run], tmp_path / "report.html").read_text()
    assert 'id="road"' in page and "ROAD: remove and debias" in page
    assert 'id="randomisation"' in page and "Model-randomisation check" in page
    assert 'data-table="road"' in page and 'data-table="randomisation"' in page
    for metric in ("road_combined", "road_morf_auc", "sparseness", "complexity", "randomisation_spearman_abs"):
        assert metric in page
    assert page.count("data:image/png;base64") >= 2  # the ROAD and randomisation figures
    assert "maps constant" in page


def test_compare_bootstraps_the_new_metrics(checked_run, tmp_path):
    table = compare_runs([checked_run, checked_run], tmp_path / "cmp", n_boot=50, names=["a", "b"])
    rows = table.set_index(["metric", "run"])
    assert rows.loc[("road_combined", "a"), "n"] == 6  # every readable image of the store
    assert rows.loc[("randomisation_spearman_abs", "a"), "n"] == 4  # the images of the check
    assert rows.loc[("randomisation_spearman_abs", "b"), "diff"] == pytest.approx(0.0)
    assert rows.loc[("complexity", "a"), "better"] == "lower"
    checked = pd.read_csv(checked_run / "randomisation.csv")
    expected = checked[checked["step"] > 0]["spearman_abs"].groupby(checked["path"]).mean().mean()
    assert rows.loc[("randomisation_spearman_abs", "a"), "mean"] == pytest.approx(expected)
    per_image = pd.read_csv(checked_run / "per_image.csv")
    assert np.isfinite(per_image["road_lerf_80"]).sum() == 6


def test_randomisation_images_need_not_be_evaluated_ones(checked_run, gradient_store, tiny_classifier, tmp_path):
    """A check on the first 4 rows beside an evaluation of other rows: compare still has its 4 images."""
    import shutil

    folder = tmp_path / "other"
    with MaskStore(gradient_store) as store:
        later = store.column("index")[4:].tolist()
    evaluate_store(gradient_store, None, tiny_classifier, folder, indices=later,
                   config=EvalConfig(workers=0, plots=False, metrics=("complexity",)))
    for name in ("randomisation.csv", "randomisation.json"):
        shutil.copy(checked_run / name, folder / name)
    rows = compare_runs([folder], tmp_path / "cmp", n_boot=20).set_index("metric")
    assert rows.loc["randomisation_ssim", "n"] == 4 and rows.loc["complexity", "n"] == len(later) - 1  # 1 broken
    page = write_report([folder], tmp_path / "r.html").read_text()
    assert "randomisation_ssim" in page
