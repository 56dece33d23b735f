"""Localisation of a `--target top1` store (issue 21, item 2): the rows whose target is not their
label are counted on the console, in summary.json and visibly in the report's summary."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image
import torch

from pipeline.evaluation import EvalConfig
from pipeline.jobs.evaluate import evaluate_run
from pipeline.models import Classifier
from pipeline.store import COLUMNS, MaskWriter

from tests.helpers.models import mean_colour_classifier  # noqa: E402

WNIDS = tuple(f"n{i:08d}" for i in range(4))  # classifier_of's made-up wnids


def tiny_classifier() -> Classifier:
    """Mean colour, summed into each of 4 classes (so class 0 wins every image)."""
    return mean_colour_classifier(torch.ones(4, 3))


def voc(wnid: str) -> str:
    return (f"<annotation><size><width>32</width><height>24</height><depth>3</depth></size><object><name>"
            f"{wnid}</name><bndbox><xmin>4</xmin><ymin>4</ymin><xmax>20</xmax><ymax>16</ymax></bndbox>"
            "</object></annotation>")


def test_top1_targets_that_differ_from_the_label_are_said(tmp_path):
    root, bbox = tmp_path / "images", tmp_path / "bbox"
    root.mkdir(), bbox.mkdir()
    rng = np.random.default_rng(0)
    # four labelled images of class 1 with boxes; the targets of two are another class (top1)
    targets = [1, 2, 1, 3]
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        (bbox / f"im{i}.xml").write_text(voc(WNIDS[1]))
    rows = [{"index": i, "path": f"im{i}.png", "height": 24, "width": 32, "label": 1, "target": t,
             "status": "ok", "reason": "", "p_original": 0.5, "p_perturbed": 0.1, "p_final": 0.2, "loss": 0.3}
            for i, t in enumerate(targets)]
    store = tmp_path / "store.h5"
    with MaskWriter(store, {"baseline": "hand", "model": "tiny"}, "tiny", root, (1, 4, 4),
                    input_size=(16, 16)) as writer:
        writer.append({name: [r[name] for r in rows] for name in COLUMNS},
                      rng.uniform(size=(4, 1, 4, 4)).astype(np.float32))

    run = evaluate_run(store, tmp_path / "out", tiny_classifier(), boxes=bbox,
                       config=EvalConfig(workers=0, step=64, gallery=1), progress=False)

    [line] = [w for w in run.warnings if w.startswith("localisation:")]
    assert "differs from the label on 2 of 4 localised images (50%)" in line and "--target label" in line
    counts = json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]
    assert counts["localized_target_differs_from_label"] == 2 and counts["localized_target_differs_share"] == 0.5
    html = run.report.read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', html, re.S).group(1)
    warning = re.search(r'<p class="warn">(.*?)</p>', summary, re.S).group(1)
    assert "<b>2 of 4</b>" in warning and "--target label" in warning
    # visible: not inside a collapsed <details> of the summary section
    assert summary.index('<p class="warn">') < summary.find("<details") or "<details" not in summary
