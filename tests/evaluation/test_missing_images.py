"""`perturb evaluate` with images that are not where it looks (issue 21, item 1): a wrong folder
is one `error:` line naming both folders, before any model is loaded; a few lost files are
skipped rows, counted on the console."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ImageReadError
from pipeline.evaluation import EvalConfig
from pipeline.jobs.evaluate import evaluate_run
from pipeline.models import Classifier
from pipeline.store import COLUMNS, MaskWriter
from tests.helpers.models import mean_colour_classifier

runner = CliRunner()


def tiny_classifier() -> Classifier:
    """Mean-pool then a linear layer: a model with the store's spec "tiny" and input 16 x 16."""
    return mean_colour_classifier(torch.ones(4, 3))


def make_store(tmp_path, n_images: int, n_present: int):
    """A hand-written store of ``n_images`` ok rows whose first ``n_present`` files exist."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_present):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    defaults = {"height": 16, "width": 16, "label": 0, "target": 0, "status": "ok", "reason": "",
                "p_original": 0.5, "p_perturbed": 0.1, "p_final": 0.2, "loss": 0.3}
    rows = [{**defaults, "index": i, "path": f"{i}.png"} for i in range(n_images)]
    store = tmp_path / "store.h5"
    with MaskWriter(store, {"baseline": "hand", "model": "tiny"}, "tiny", root, (1, 4, 4),
                    input_size=(16, 16)) as writer:
        writer.append({name: [r[name] for r in rows] for name in COLUMNS},
                      rng.uniform(size=(n_images, 1, 4, 4)).astype(np.float32))
    return store, root


def test_a_wrong_image_folder_is_one_error_line_before_the_model_loads(tmp_path):
    store, root = make_store(tmp_path, 3, 3)
    wrong = tmp_path / "missing"
    # The store's model "tiny" cannot be loaded: reaching load_model would be a different error.
    result = runner.invoke(app, ["evaluate", str(store), "--out", str(tmp_path / "bad"), "--data", str(wrong)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: none of the store's 3 images")
    assert str(wrong) in lines[0] and str(root) in lines[0] and "--data" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "bad").exists()


def test_most_images_missing_is_refused_by_the_library_call(tmp_path):
    store, root = make_store(tmp_path, 4, 1)  # 3 of 4 missing: more than half
    with pytest.raises(ImageReadError, match=r"3 of the store's 4 images to evaluate are missing under"):
        evaluate_run(store, tmp_path / "out", tiny_classifier(), config=EvalConfig(workers=0, plots=False))


def test_a_few_missing_images_are_skipped_and_counted(tmp_path):
    store, root = make_store(tmp_path, 4, 3)  # 1 of 4 missing: evaluated, the lost one skipped
    run = evaluate_run(store, tmp_path / "out", tiny_classifier(), config=EvalConfig(workers=0, step=64),
                       progress=False)
    assert run.result.summary["counts"]["evaluated"] == 3
    assert run.warnings == ["1 image could not be read (skipped): 3.png (missing)"]
    assert run.result.table.set_index("path").loc["3.png", "eval_status"] == "unreadable: missing"
