"""The HTML report through the real command line: sections, numbers against the CSV files, escaping.

One module fixture solves 2-iteration masks for three pictures (one named like a script tag) and a
broken file, evaluates them with boxes, and evaluates the centre baseline on the same folder; the
tests read the pages `perturb evaluate`, `perturb compare` and `perturb report` write.
"""

import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report.compare import RANK_METRIC, compare_runs
from pipeline.imagenet import ClassVocabulary
from pipeline.report import ReportConfig, build_report
from pipeline.report.markup import fmt
from tests.helpers.boxes import write_chelsea_box
from tests.helpers.images import write_folder

runner = CliRunner()
EVIL = "<script>alert(1)</script>"
SECTIONS = {"provenance", "summary", "curves", "localisation", "pointing", "classes", "strength", "galleries",
            "files"}


class Page(HTMLParser):
    """What the tests read off a page: sections, tables (rows of cells with attributes), figures,
    image sources, links and script elements."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.sections, self.tables, self.figures, self.images, self.links = [], {}, [], [], []
        self.scripts, self.external = 0, []
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("data-table"), [])
        elif tag == "tr" and self._table is not None:
            self._row = {"attrs": attrs, "cells": []}
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"attrs": attrs, "text": "", "header": tag == "th"}
            self._row["cells"].append(self._cell)
        elif tag == "figure":
            self.figures.append(attrs)
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "script":
            self.scripts += 1
            if "src" in attrs:
                self.external.append(attrs["src"])
        elif tag == "link":
            self.external.append(attrs.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def rows(self, name):
        """Body rows of table ``name``: (row attributes, {data-col: cell attributes + text})."""
        out = []
        for row in self.tables.get(name, []):
            if row["cells"] and row["cells"][0]["header"]:
                continue
            cols = {c["attrs"]["data-col"]: c for c in row["cells"] if "data-col" in c["attrs"]}
            out.append((row["attrs"], cols, row["cells"]))
        return out


def value(cell, key="data-value"):
    text = cell["attrs"].get(key, "")
    return float(text) if text != "" else math.nan


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    root = write_folder(base / "data", {"n02124075": ["chelsea"], "n07920052": ["coffee"]}, suffix=".png")
    # A file called <script>alert(1)</script>.JPEG: the "/" makes "<script>alert(1)<" a folder.
    evil = root / "n02124075" / f"{EVIL}.JPEG"
    evil.parent.mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).resize((160, 160)).save(evil, format="JPEG")
    (root / "n02124075" / "broken.jpg").write_bytes(b"not a jpeg")
    boxes = write_chelsea_box(base / "boxes")
    steps = [["masks", str(root), "--out", str(base / "m.h5"), "-n", "2", "-b", "4", "--workers", "0",
              "--device", "cpu"],
             ["evaluate", str(base / "m.h5"), "--out", str(base / "masks"), "--boxes", str(boxes), "--step", "12544",
              "--workers", "0", "--device", "cpu"],
             ["baseline", "centre", str(root), "--out", str(base / "c.h5"), "--workers", "0", "--device", "cpu"],
             ["evaluate", str(base / "c.h5"), "--out", str(base / "centre"), "--boxes", str(boxes), "--step", "12544",
              "--workers", "0", "--device", "cpu"],
             ["compare", str(base / "masks"), str(base / "centre"), "--out", str(base / "cmp"), "--n-boot", "50"]]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        if args[0] in ("evaluate", "compare"):
            assert "report.html" in result.output  # the command says where its page is
    return base


def test_evaluate_page_has_every_section_and_the_csv_numbers(runs, tmp_path):
    run = runs / "masks"
    text = (run / "report.html").read_text()
    page = Page(text)
    assert SECTIONS <= set(page.sections)
    # Self-contained: pictures embedded, no external script or style sheet, one inline script.
    assert page.images and all(src.startswith("data:image/") for src in page.images)
    assert page.external == [] and page.scripts == 1 and "http" not in "".join(page.images)

    # The summary: means, counts and standard errors from summary.csv, intervals from compare.
    summary = pd.read_csv(run / "summary.csv").set_index("metric")
    compare_runs([run], tmp_path / "one")  # the same bootstrap (2000 resamples, seed 0) as the page
    intervals = pd.read_csv(tmp_path / "one" / "comparison.csv").set_index("metric")
    rows = page.rows("summary")
    assert {attrs["data-metric"] for attrs, _, _ in rows} >= set(summary.index) | {RANK_METRIC}
    for attrs, cols, _ in rows:
        metric = attrs["data-metric"]
        if metric in summary.index:
            assert same(value(cols["mean"]), summary.loc[metric, "mean"])
            assert same(value(cols["sem"]), summary.loc[metric, "sem"])
            assert value(cols["n"]) == summary.loc[metric, "count"]
        if metric in intervals.index:
            for col in ("mean", "ci_low", "ci_high", "n"):
                assert same(value(cols[col]), float(intervals.loc[metric, col])), (metric, col)

    # Every number shown is its data-value rounded (what a reader sees is what the tests compare).
    shown = [c for rows_ in page.tables.values() for r in rows_ for c in r["cells"]
             if "num" in c["attrs"].get("class", "") and "data-low" not in c["attrs"]]
    assert len(shown) > 100
    for cell in shown:
        digits = 0 if "." not in cell["text"] else 4 if cell["attrs"].get("data-col") != "alpha" else 2
        if cell["attrs"]["data-value"] != "" and "e" not in cell["text"]:
            assert cell["text"] == fmt(value(cell), digits), cell

    # Galleries, the class breakdown, the flagged images, the image counts: from per_image.csv.
    per_image = pd.read_csv(run / "per_image.csv")
    by_path = per_image.set_index("path")
    assert page.figures
    by_path["ratio"] = by_path["p_perturbed"] / by_path["p_original"]  # the strength diagnostic's pictures
    for figure in page.figures:
        assert same(float(figure["data-value"]), by_path.loc[figure["data-path"], figure["data-metric"]])
    evaluated = per_image[per_image["eval_status"] == "ok"].assign(
        **{RANK_METRIC: lambda t: t["insertion_auc"] - t["deletion_auc_zero"]})
    classes = page.rows("classes")
    assert len(classes) == evaluated["target"].nunique()
    for attrs, cols, _ in classes:
        group = evaluated[evaluated["target"] == int(attrs["data-target"])]
        assert value(cols["n"]) == len(group)
        for metric in ("insertion_auc", "deletion_auc_zero", RANK_METRIC, "energy_pg"):
            assert same(value(cols[metric]), group[metric].mean())
    ok = per_image[per_image["status"] == "ok"]
    flagged = ok[ok["p_perturbed"] >= 0.5 * ok["p_original"]]
    assert len(page.rows("flagged")) == len(flagged)
    for attrs, cols, _ in page.rows("flagged"):
        assert same(value(cols["p_perturbed"]), by_path.loc[attrs["data-path"], "p_perturbed"])
    counts = {attrs["data-key"]: value(cols["masks"]) for attrs, cols, _ in page.rows("images")}
    assert counts["rows in the store"] == len(per_image) == 4
    assert counts["evaluated"] == (per_image["eval_status"] == "ok").sum() == 3
    skipped = per_image.loc[per_image["status"] != "ok", "reason"].iloc[0]
    assert counts[f"skipped in the store: {skipped}"] == 1

    # Localisation at every threshold; the links lead to the run's tables.
    loc = page.rows("localisation")
    assert len(loc) == len([c for c in per_image if c.startswith("loc_") and c != "loc_status"])
    for attrs, cols, _ in loc:
        assert same(value(cols["accuracy"]), summary.loc[attrs["data-metric"], "mean"])
    files = [href for href in page.links if not href.startswith("#")]  # not the table of contents
    assert {"per_image.parquet", "per_image.csv", "summary.csv", "summary.json"} <= {Path(unquote(h)).name for h in files}
    for href in files:
        assert (run / unquote(href)).resolve().is_file()


def test_names_from_the_data_are_escaped(runs):
    for page_path in (runs / "masks" / "report.html", runs / "cmp" / "report.html"):
        text = page_path.read_text()
        assert EVIL not in text and "<script>alert" not in text
        assert Page(text).scripts == 1  # only the page's own sorting script
    text = (runs / "masks" / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.JPEG" in text  # shown, as text
    # Class names too: a vocabulary whose names are markup.
    names = tuple(f'<img src=x onerror="alert({i})">' for i in range(1000))
    vocabulary = ClassVocabulary(wnids=tuple(f"n{i:08d}" for i in range(1000)), names=names)
    text = build_report([runs / "masks"], runs / "x.html", ReportConfig(n_boot=20, gallery=1), vocabulary=vocabulary)
    assert "<img src=x" not in text and "&lt;img src=x onerror=&quot;alert(" in text


def test_comparison_page_matches_comparison_csv(runs, tmp_path):
    expected = pd.read_csv(runs / "cmp" / "comparison.csv").set_index(["metric", "run"])
    direct = tmp_path / "again.html"
    made = runner.invoke(app, ["report", str(runs / "masks"), str(runs / "centre"), "--out", str(direct),
                               "--n-boot", "50"])
    assert made.exit_code == 0, made.output
    for page_path in (runs / "cmp" / "report.html", direct):
        page = Page(page_path.read_text())
        assert SECTIONS | {"differences"} <= set(page.sections)
        ranking = page.rows("ranking")
        assert [a["data-run"] for a, _, _ in ranking] == list(
            expected.xs(RANK_METRIC, level="metric")["mean"].sort_values(ascending=False).index)
        for attrs, cols, _ in ranking:
            row = expected.loc[(RANK_METRIC, attrs["data-run"])]
            for col in ("mean", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high"):
                assert same(value(cols[col]), float(row[col])), col
        summary = page.rows("summary")
        assert len(summary) >= len(expected.index.get_level_values("metric").unique())
        for attrs, cols, _ in summary:
            for run in ("masks", "centre"):
                if (attrs["data-metric"], run) in expected.index:
                    row = expected.loc[(attrs["data-metric"], run)]
                    assert same(value(cols[run]), float(row["mean"]))
                    assert same(value(cols[run], "data-low"), float(row["ci_low"]))
                    assert same(value(cols[run], "data-high"), float(row["ci_high"]))
        for attrs, cols, _ in page.rows("differences"):
            if (attrs["data-metric"], "centre") in expected.index:
                row = expected.loc[(attrs["data-metric"], "centre")]
                assert same(value(cols["centre"]), float(row["diff"]))
                assert same(value(cols["centre"], "data-high"), float(row["diff_ci_high"]))
    cmp_links = {Path(unquote(h)).name for h in Page((runs / "cmp" / "report.html").read_text()).links}
    assert {"comparison.csv", "comparison.md"} <= cmp_links


def test_unknown_summary_entries_are_shown_and_bad_input_is_one_line(runs, tmp_path):
    run = tmp_path / "masks"
    shutil.copytree(runs / "masks", run)
    summary = json.loads((run / "summary.json").read_text())
    summary["held_out"] = {"alpha": 0.25, "protocol": "<i>split</i>"}
    (run / "summary.json").write_text(json.dumps(summary))
    page = Page(build_report([run], tmp_path / "r.html", ReportConfig(n_boot=10, gallery=1)))
    extra = {attrs["data-key"]: cells for attrs, _, cells in page.rows("extra")}
    assert "more" in page.sections and extra["held_out.alpha"][2]["text"] == "0.2500"
    assert extra["held_out.protocol"][2]["text"] == "<i>split</i>"  # as text: parsed back from &lt;i&gt;
    for args in (["report", str(tmp_path / "nowhere")], ["report", str(run), "--gallery", "-1"]):
        result = runner.invoke(app, args + ["--out", str(tmp_path / "bad.html")])
        assert result.exit_code == 1 and result.output.startswith("error: "), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad.html").exists()
