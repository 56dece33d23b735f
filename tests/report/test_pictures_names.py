"""The report as a new user sees it (issue 21, item 13): thumbnails keep the image's aspect ratio
and show the ground-truth boxes, runs can be named, "best" is bold only when its interval clears
the others', and the provenance writes every path the same way."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pandas as pd
from PIL import Image
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluation import EvalConfig, read_thumbnails
from pipeline.jobs.evaluate import evaluate_run
from pipeline.models import Classifier
from pipeline.pictures import BOX_COLOUR, draw_boxes
from pipeline.report.compare import compare_runs
from pipeline.store import COLUMNS, MaskWriter

runner = CliRunner()
from tests.helpers.models import mean_colour_classifier  # noqa: E402

WNIDS = tuple(f"n{i:08d}" for i in range(4))  # classifier_of's made-up wnids
HEIGHT, WIDTH = 100, 200  # wide images: a square thumbnail would squash them


def tiny_classifier() -> Classifier:
    """Mean colour, summed into each of 4 classes (so class 0 wins every image)."""
    return mean_colour_classifier(torch.ones(4, 3))


def voc(box: tuple[int, int, int, int]) -> str:
    x0, y0, x1, y1 = box
    return (f"<annotation><size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>"
            f"<object><name>{WNIDS[1]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object></annotation>")


def evaluated_run(tmp_path, data_link=None):
    """Three black 100 x 200 images of class 1 with a box, evaluated into ``tmp_path/run``."""
    root, bbox = tmp_path / "images", tmp_path / "bbox"
    root.mkdir(), bbox.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / f"im{i}.png")
        (bbox / f"im{i}.xml").write_text(voc((20, 20, 180, 80)))
    rows = [{"index": i, "path": f"im{i}.png", "height": HEIGHT, "width": WIDTH, "label": 1, "target": 1,
             "status": "ok", "reason": "", "p_original": 0.5, "p_perturbed": 0.1, "p_final": 0.2, "loss": 0.3}
            for i in range(3)]
    store = tmp_path / "store.h5"
    rng = np.random.default_rng(0)
    with MaskWriter(store, {"baseline": "hand", "model": "tiny"}, "tiny", root, (1, 4, 4),
                    input_size=(16, 16)) as writer:
        writer.append({name: [r[name] for r in rows] for name in COLUMNS},
                      rng.uniform(size=(3, 1, 4, 4)).astype(np.float32))
    data = data_link or root
    return evaluate_run(store, tmp_path / "run", tiny_classifier(), data=data, boxes=bbox,
                        config=EvalConfig(workers=0, step=64, gallery=1), progress=False)


def test_thumbnails_keep_the_aspect_ratio_and_show_the_boxes(tmp_path):
    run = evaluated_run(tmp_path)
    thumbnails = read_thumbnails(run.out)
    assert thumbnails
    for jpeg in thumbnails.values():
        picture = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
        assert picture.shape[:2] == (70, 140)  # 140 on the longer side, 1:2 as the image
        # the box's top edge (y 20 -> 14) is white; the overlay alone never has all channels high
        assert picture[12:17, 40:100].min(axis=-1).max() > 180
        assert picture[30:50, 40:100].min(axis=-1).max() < 150
    # draw_boxes: the outline in BOX_COLOUR on the box's edge, the inside untouched
    drawn = draw_boxes(np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.array([[20, 20, 180, 80]]))
    assert tuple(drawn[20, 50]) == BOX_COLOUR and tuple(drawn[50, 50]) == (0, 0, 0)
    assert tuple(drawn[5, 5]) == (0, 0, 0)


def test_runs_are_named_bold_only_when_clear_and_paths_resolved(tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(tmp_path / "images", target_is_directory=True)  # the data given through a link
    first = evaluated_run(tmp_path, data_link=link).out
    second = tmp_path / "second" / "run"  # same folder name: only --name tells them apart
    shutil.copytree(first, second)
    table = pd.read_parquet(second / "per_image.parquet")
    table["insertion_auc"] = table["insertion_auc"] + 1.0  # clearly better on insertion only
    table.to_parquet(second / "per_image.parquet")

    compared = compare_runs([first, second], tmp_path / "cmp", n_boot=50, names=["paper", "fast"])
    assert list(dict.fromkeys(compared["run"])) == ["paper", "fast"]
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(first), str(second), "--name", "paper", "--name", "fast",
                                 "--n-boot", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "paper: mean [95% CI]" in html and "fast: mean [95% CI]" in html
    bold = re.findall(r'<tr data-metric="([^"]+)"[^>]*>(?:(?!</tr>).)*class="[^"]*best', html, re.S)
    assert "insertion_auc" in bold  # the copy's interval lies above the original's
    assert "deletion_auc_zero" not in bold  # equal runs: intervals overlap, nothing bold

    refused = runner.invoke(app, ["report", str(first), str(second), "--out", str(out)])
    assert refused.exit_code == 1 and "--name" in refused.output

    # provenance: every path absolute, symlinks resolved, written the same way
    provenance = re.search(r'<section id="provenance">(.*?)</section>', html, re.S).group(1)
    assert str((tmp_path / "images").resolve()) in provenance and str(link) not in provenance
    assert str(first.resolve()) in provenance
