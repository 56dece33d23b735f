"""The sections of a report page, built from :mod:`.tables` (numbers) and :mod:`.figures` (pictures).

Each ``_section`` function returns one ``<section>``'s HTML. Data-derived strings are escaped in
:mod:`.markup`'s cell helpers or with :func:`~.markup.esc` here; nothing else is interpolated raw.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from .compare import RANK_METRIC
from ..evaluation import GALLERY_METRICS, WEAK_RATIO, gallery_picks, metric_direction
from ..imagenet import ClassVocabulary
from .figures import Thumbnails, curves_png, localisation_png, randomisation_png, road_png
from .provenance import flatten, plain, provenance_section
from .markup import Table, ci_cell, esc, fmt, num_cell, page, section, text_cell
from .tables import (
    RunData,
    class_extremes,
    class_name,
    class_table,
    flagged_images,
    localisation_table,
    randomisation_of,
    ranking,
    road_curves_of,
    verdict,
)

KNOWN_SUMMARY_KEYS = ("metrics", "pointing_game", "counts", "settings", "road")
"""``summary.json`` entries with their own section; any other entry is shown as key/value rows."""


def build_page(runs: Sequence[RunData], intervals: pd.DataFrame, out_path: Path, config: Any,
               vocabulary: ClassVocabulary | None, extra_files: Sequence[Path] = ()) -> str:
    """The report's HTML (see :func:`pipeline.report.build_report`)."""
    multi = len(runs) > 1
    thumbs = {run.name: Thumbnails(run.folder) for run in runs}
    loc = {run.name: localisation_table(run, intervals) for run in runs}
    parts = [
        ("provenance", "Provenance", provenance_section(runs)),
        ("summary", "Summary", _summary(runs, intervals, config)),
    ]
    if multi:
        parts.append(("differences", "Paired differences", _differences(runs, intervals)))
    parts += [
        ("curves", "Deletion and insertion curves", _curves(runs)),
    ]
    road = {run.name: road_curves_of(run) for run in runs}
    if any(r is not None for r in road.values()):
        parts.append(("road", "ROAD: remove and debias", _road(runs, road)))
    randomised = {run.name: randomisation_of(run) for run in runs}
    if any(r is not None for r in randomised.values()):
        parts.append(("randomisation", "Model-randomisation check", _randomisation(randomised)))
    parts += [
        ("localisation", "Localisation", _localisation(runs, loc)),
        ("pointing", "Pointing games", _pointing(runs, intervals)),
        ("classes", "Per-class breakdown", _classes(runs, vocabulary, config)),
        ("strength", "Perturbation strength", _strength(runs, thumbs, vocabulary, config)),
        ("galleries", "Galleries", _galleries(runs, thumbs, vocabulary, config)),
        ("files", "Files", _files(runs, out_path, extra_files)),
    ]
    extra = _extra_entries(runs)
    if extra:
        parts.append(("more", "Other summary entries", extra))
    body = "".join(section(anchor, title, html) for anchor, title, html in parts)
    nav = [(anchor, title) for anchor, title, _ in parts]
    names = ", ".join(run.name for run in runs)
    title = f"Comparison of {len(runs)} runs" if multi else f"Evaluation report: {runs[0].name}"
    counts = sorted({len(run.evaluated) for run in runs})
    evaluated = f"{counts[0]} evaluated images" + (" each" if multi else "") if len(counts) == 1 else \
        f"{counts[0]} to {counts[-1]} evaluated images per run"
    subtitle = f"{names} · {evaluated} · report written {_now()}"
    return page(title, subtitle, nav, body, _footer())


# --------------------------------------------------------------------------------------------
# helpers


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _footer() -> str:
    from .. import __version__

    versions = {"pipeline": __version__}
    for module in ("numpy", "pandas", "matplotlib", "torch", "h5py"):
        try:
            from importlib import metadata

            versions[module] = metadata.version(module)
        except Exception:  # a missing distribution is simply not listed
            continue
    listed = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (f"Written by <code>perturb report</code> ({esc(listed)}). One self-contained file: pictures embedded, "
            "no script or style sheet from elsewhere. Click a column header to sort a table.")


def _run_heading(run: RunData, multi: bool) -> str:
    return f"<h3>{esc(run.name)}</h3>" if multi else ""


def _img(uri: str | None, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">' if uri else '<p class="note">(nothing to plot)</p>'


# --------------------------------------------------------------------------------------------
# summary, ranking, differences


def _summary(runs: Sequence[RunData], intervals: pd.DataFrame, config: Any) -> str:
    note = (f'<p class="note">Means over the evaluated images with 95% percentile-bootstrap intervals '
            f"({config.n_boot} resamples, seed {config.seed}; the same numbers as <code>perturb compare</code>). "
            f"<code>{RANK_METRIC}</code> is insertion AUC minus zero-substrate deletion AUC per image. "
            "<em>better</em>: which direction is better.</p>") + _target_note(runs)
    if len(runs) == 1:
        table = Table("summary", ["metric", "better", "n", "mean", "95% CI low", "95% CI high", "sem"])
        for row in intervals.to_dict("records"):
            table.add([text_cell(row["metric"]), text_cell(row["better"]), num_cell(row["n"], "n", 0),
                       num_cell(row["mean"], "mean"), num_cell(row["ci_low"], "ci_low"),
                       num_cell(row["ci_high"], "ci_high"), num_cell(row["sem"], "sem")],
                      metric=row["metric"], run=row["run"])
        return note + table.html()
    ranked = ranking(intervals)
    rank = Table("ranking", ["rank", "run", "n", "mean", "95% CI low", "95% CI high", "diff vs reference",
                             "diff CI low", "diff CI high"],
                 f"Ranking by {RANK_METRIC} (higher first); differences are paired, run minus {runs[0].name}")
    for row in ranked.to_dict("records"):
        rank.add([num_cell(row["rank"], "rank", 0), text_cell(row["run"]), num_cell(row["n"], "n", 0),
                  num_cell(row["mean"], "mean"), num_cell(row["ci_low"], "ci_low"), num_cell(row["ci_high"], "ci_high"),
                  num_cell(row["diff"], "diff"), num_cell(row["diff_ci_low"], "diff_ci_low"),
                  num_cell(row["diff_ci_high"], "diff_ci_high")], metric=row["metric"], run=row["run"])
    wide = Table("summary", ["metric", "better", *[f"{run.name}: mean [95% CI]" for run in runs]],
                 "Mean [95% CI] per run; the best mean of a metric in bold when its interval overlaps "
                 "no other run's")
    for metric, rows in intervals.groupby("metric", sort=False):
        by_run = rows.set_index("run")
        better = rows["better"].iloc[0]
        best = _clear_best(by_run, better)
        cells = [text_cell(metric), text_cell(better)]
        for run in runs:
            r = by_run.loc[run.name]
            cells.append(ci_cell(r["mean"], r["ci_low"], r["ci_high"], col=run.name,
                                 cls="best" if run.name == best else ""))
        wide.add(cells, metric=metric)
    return note + rank.html() + wide.html()


def _clear_best(by_run: pd.DataFrame, better: str) -> str | None:
    """The run with the best mean of one metric (``by_run``: ``mean``, ``ci_low``, ``ci_high``
    per run) when its 95% interval lies wholly on the better side of every other run's; else None."""
    means = by_run["mean"].astype(float)
    if better not in ("higher", "lower") or not means.notna().any():
        return None
    best = means.idxmax() if better == "higher" else means.idxmin()
    others = by_run.drop(index=best)
    low, high = float(by_run.at[best, "ci_low"]), float(by_run.at[best, "ci_high"])
    if better == "higher":
        clear = (low > others["ci_high"].astype(float)).all()
    else:
        clear = (high < others["ci_low"].astype(float)).all()
    return best if clear else None


def _target_note(runs: Sequence[RunData]) -> str:
    """A visible warning for each run whose localised masks explain another class than the label's
    (a ``--target top1`` store): localisation scores them against the label's boxes."""
    notes = []
    for run in runs:
        counts = run.summary.get("counts") or {}
        differs, localized = counts.get("localized_target_differs_from_label"), counts.get("localized")
        if differs and localized:
            prefix = f"{esc(run.name)}: " if len(runs) > 1 else ""
            notes.append(f'<p class="warn">{prefix}the target differs from the label on <b>{differs} of '
                         f"{localized}</b> localised images ({100 * differs / localized:.0f}%): their masks "
                         "explain the predicted class but are scored against the label's boxes. Solve with "
                         "<code>--target label</code> to localise the label's class.</p>")
    return "".join(notes)


def _differences(runs: Sequence[RunData], intervals: pd.DataFrame) -> str:
    ref = runs[0].name
    note = (f'<p class="note">Paired differences <em>run − {esc(ref)}</em> [95% CI] over the images both runs '
            "evaluated (matched by path; the pair count is in each cell's tooltip), with bootstrap intervals over the "
            "pairs. Green: better, red: worse (the interval excludes zero, read with the metric's direction).</p>")
    others = [run for run in runs if run.name != ref]
    table = Table("differences", ["metric", "better", *[f"{run.name} − {ref}" for run in others]])
    for metric, rows in intervals.groupby("metric", sort=False):
        by_run = rows.set_index("run")
        cells = [text_cell(metric), text_cell(rows["better"].iloc[0])]
        for run in others:
            row = by_run.loc[run.name]
            word = verdict(row)
            cell = ci_cell(row["diff"], row["diff_ci_low"], row["diff_ci_high"], col=run.name,
                           cls=word if word in ("better", "worse") else "")
            n_paired = fmt(row["n_paired"], 0) if np.isfinite(row["n_paired"]) else "–"
            cells.append(cell.replace("<td ", f'<td title="{esc(word)}; n paired = {esc(n_paired)}" '
                                      f'data-n-paired="{esc(n_paired)}" ', 1))
        table.add(cells, metric=metric)
    return note + table.html()


# --------------------------------------------------------------------------------------------
# curves, localisation, pointing


def _curves(runs: Sequence[RunData]) -> str:
    steps = {json.dumps(run.settings.get("step")) for run in runs}
    note = ('<p class="note">Mean score of the explained class as pixels are removed (deletion: most salient '
            "first, onto zeros or onto a blur) or restored (insertion: onto a blurred copy), with a pointwise "
            "95% band (mean ± 1.96 standard errors). Areas under these curves are the AUC rows of the summary.")
    if len(steps) > 1:
        note += ' <span class="warn">The runs used different step sizes.</span>'
    return note + "</p>" + _img(curves_png({run.name: run.curves for run in runs}), "deletion and insertion curves")


def _road(runs: Sequence[RunData], road: dict[str, Any]) -> str:
    """ROAD's mean MoRF and LeRF curves per run, and their share of images still top-1."""
    note = ('<p class="note">ROAD (Rong et al. 2022): pixels ranked by saliency are removed and filled by '
            "noisy linear imputation, so the removed region's shape does not give the class away. MoRF removes "
            "the most relevant fraction (lower is better), LeRF removes all but the most relevant fraction "
            "(higher is better); the areas (means over the fractions) and the combined score "
            "(LeRF - MoRF) / 2 are rows of the summary. Band: 95% (mean ± 1.96 standard errors).</p>")
    table = Table("road", ["run", "fraction", "MoRF p", "LeRF p", "MoRF top-1", "LeRF top-1", "n"])
    for name, curves in road.items():
        if curves is None:
            continue
        for j, fraction in enumerate(curves["fractions"]):
            table.add([text_cell(name), num_cell(float(fraction), "fraction", 2),
                       *(num_cell(float(np.mean(curves[k][:, j])) if len(curves[k]) else float("nan"), k, 4)
                         for k in ("morf", "lerf", "morf_top1", "lerf_top1")),
                       num_cell(len(curves["morf"]), "n", 0)], run=name)
    return note + _img(road_png({n: c for n, c in road.items() if c is not None}), "ROAD curves") + table.html()


def _randomisation(randomised: dict[str, Any]) -> str:
    """The randomisation check's mean similarity per step and run (``perturb randomisation``)."""
    shown = {name: r for name, r in randomised.items() if r is not None}
    first = next(iter(shown.values()))
    settings = first.get("settings") or {}
    note = ('<p class="note">Cascading model-parameter randomisation (Adebayo et al. 2018): the model\'s blocks '
            "are re-initialised from the logits down and each map re-made "
            f"({esc(settings.get('class_explained', ''))}). Each point is the mean similarity to the map of the "
            "unmodified model; step 'original' compares that re-made map with the stored one. A method whose "
            "maps stay similar while the model turns to noise does not explain the model: lower is better. "
            "'maps constant' is the share of images whose re-made map is constant (its rank correlation "
            "is undefined and left out of the means; a constant map carries no explanation at all). "
            f"Seed {esc(str(settings.get('seed', '')))}; blocks per step in randomisation.json.</p>")
    table = Table("randomisation", ["run", "step", "randomised down to", "Spearman |map|", "SSIM", "HOG",
                                    "maps constant", "seconds"])
    for name, run in shown.items():
        undefined = run.get("undefined_share") or [float("nan")] * len(run["steps"])
        for i, step in enumerate(run["steps"]):
            values = [run["mean"][k][i] for k in ("spearman_abs", "ssim", "hog_pearson")]
            table.add([text_cell(name), num_cell(i, "step", 0), text_cell(step),
                       *(num_cell(float("nan") if v is None else float(v), "similarity", 4) for v in values),
                       num_cell(undefined[i], "constant", 2), num_cell(float(run["seconds"][i]), "seconds", 1)],
                      run=name)
    return note + _img(randomisation_png(shown), "randomisation curves") + table.html()


def _localisation(runs: Sequence[RunData], loc: dict[str, pd.DataFrame]) -> str:
    if not any(len(t) for t in loc.values()):
        return '<p class="note">No localisation: these runs were evaluated without ground-truth boxes.</p>'
    note = ('<p class="note">Share of images whose saliency, thresholded and boxed, overlaps a ground-truth box '
            "of the label class with IoU ≥ 0.5, at every threshold (value: share of the maximum; energy: share "
            "of the saliency mass; mean: multiple of the mean), for tight boxes around all pixels above the "
            "threshold and for the largest connected component. Intervals: 95% bootstrap over images.</p>")
    names = [name for name, rows in loc.items() if len(rows)]
    multi = len(names) > 1
    headers = ["method", "alpha", "box"]
    headers += [f"{name}: accuracy [95% CI]" for name in names] if multi else \
        ["n", "accuracy", "95% CI low", "95% CI high", "mean IoU"]
    table = Table("localisation", headers, "Accuracy per threshold" + (" and run" if multi else ""))
    ious = Table("iou", ["method", "alpha", "box", *[f"{name}: mean IoU" for name in names]],
                 "Mean IoU with the best-matching box of the label class")
    keyed = {name: loc[name].set_index("metric") for name in names}
    for metric in dict.fromkeys(m for name in names for m in loc[name]["metric"]):
        first = next(keyed[name].loc[metric] for name in names if metric in keyed[name].index)
        key = [text_cell(first["method"]), num_cell(first["alpha"], "alpha", 2), text_cell(first["kind"])]
        rows = {name: keyed[name].loc[metric] if metric in keyed[name].index else pd.Series(dtype=float)
                for name in names}
        if multi:
            table.add(key + [ci_cell(rows[n].get("accuracy"), rows[n].get("ci_low"), rows[n].get("ci_high"), col=n)
                             for n in names], metric=metric)
            ious.add(key + [num_cell(rows[n].get("mean_iou"), n) for n in names], metric=metric)
        else:
            row = rows[names[0]]
            table.add(key + [num_cell(row.get("n"), "n", 0), num_cell(row.get("accuracy"), "accuracy"),
                             num_cell(row.get("ci_low"), "ci_low"), num_cell(row.get("ci_high"), "ci_high"),
                             num_cell(row.get("mean_iou"), "mean_iou")], metric=metric, run=names[0])
    if multi:
        return note + _img(localisation_png(loc), "localisation accuracy by threshold") + table.html() + ious.html()
    return note + _img(localisation_png(loc), "localisation accuracy by threshold") + table.html()


def _pointing(runs: Sequence[RunData], intervals: pd.DataFrame) -> str:
    table = Table("pointing", ["run", "pointing game (per image)", "per-image 95% CI", "pointing game (per class)",
                               "classes", "energy pointing game", "energy 95% CI", "n"])
    any_rows = False
    for run in runs:
        own = intervals[intervals["run"] == run.name].set_index("metric")
        game = run.summary.get("pointing_game") or {}
        if "pointing_hit" not in own.index and not game:
            continue
        any_rows = True
        hit = own.loc["pointing_hit"] if "pointing_hit" in own.index else None
        energy = own.loc["energy_pg"] if "energy_pg" in own.index else None
        table.add([text_cell(run.name),
                   num_cell(hit["mean"] if hit is not None else None, "pointing_hit"),
                   text_cell("–" if hit is None else f"[{fmt(hit['ci_low'])}, {fmt(hit['ci_high'])}]"),
                   num_cell(game.get("per_class"), "per_class"), num_cell(game.get("n_classes"), "n_classes", 0),
                   num_cell(energy["mean"] if energy is not None else None, "energy_pg"),
                   text_cell("–" if energy is None else f"[{fmt(energy['ci_low'])}, {fmt(energy['ci_high'])}]"),
                   num_cell(hit["n"] if hit is not None else None, "n", 0)], run=run.name)
    if not any_rows:
        return '<p class="note">No pointing games: these runs were evaluated without ground-truth boxes.</p>'
    tolerance = {json.dumps(run.settings.get("pointing_tolerance_px")) for run in runs}
    note = ('<p class="note">Pointing game: the saliency maximum falls within '
            f"{esc(', '.join(sorted(tolerance)))} px of a box of the label class (per image, and averaged per class "
            "first). Energy pointing game: the share of saliency mass inside the class's boxes.</p>")
    return note + table.html()


# --------------------------------------------------------------------------------------------
# classes and the strength diagnostic


def _classes(runs: Sequence[RunData], vocabulary: ClassVocabulary | None, config: Any) -> str:
    multi = len(runs) > 1
    out = [f'<p class="note">Means per explained class (the store\'s <code>target</code>), classes ranked by '
           f"<code>{RANK_METRIC}</code>; the {config.classes} best and {config.classes} worst are listed.</p>"]
    for run in runs:
        classes = class_table(run, vocabulary)
        best, worst = class_extremes(classes, config.classes)
        metrics = [c for c in classes.columns if c not in ("target", "class", "n")]
        inner = [f'<p class="note">{len(classes)} classes.</p>']
        for label, rows in (("best classes", best), ("worst classes", worst)):
            if not len(rows):
                continue
            name = "classes" if label.startswith("best") else "classes-worst"
            table = Table(name, ["class", "index", "n", *metrics], label if len(worst) else "all classes")
            for row in rows.to_dict("records"):
                table.add([text_cell(row["class"]), num_cell(row["target"], "target", 0), num_cell(row["n"], "n", 0),
                           *[num_cell(row[m], m) for m in metrics]], run=run.name, target=int(row["target"]))
            inner.append(table.html())
        out.append(_fold(run.name, "".join(inner), opened=run is runs[0]) if multi else "".join(inner))
    return "".join(out)


def _fold(title: str, body: str, opened: bool) -> str:
    """A ``<details>`` block (one run's part of a section, in a comparison)."""
    return f"<details{' open' if opened else ''}><summary>{esc(title)}</summary>{body}</details>"


def _strength(runs: Sequence[RunData], thumbs: dict[str, Thumbnails], vocabulary: ClassVocabulary | None,
              config: Any) -> str:
    multi = len(runs) > 1
    out = [f'<p class="note">A mask can only delete what its perturbation removes. An image is flagged when its '
           f"fully perturbed version keeps at least {WEAK_RATIO:.0%} of the class score "
           "(<code>p_perturbed / p_original</code>); for such images no mask can succeed.</p>"]
    for run in runs:
        report, flagged = flagged_images(run)
        out.append(_run_heading(run, multi))
        if not report.images:
            out.append('<p class="note">No solved image has <code>p_perturbed</code> (a baseline store, or nothing '
                       "solved): no diagnostic.</p>")
            continue
        weak = report.weak_share >= 0.25
        out.append(f'<p class="{"warn" if weak else "note"}">{esc(report.line())}</p>')
        shown = flagged.head(config.flagged)
        if not len(shown):
            continue
        inner = []
        if len(flagged) > len(shown):
            inner.append(f'<p class="note">The {len(shown)} highest ratios of {len(flagged)} flagged images.</p>')
        table = Table("flagged", ["path", "class", "p_original", "p_perturbed", "ratio"])
        for row in shown.to_dict("records"):
            table.add([text_cell(row["path"], "path"), text_cell(class_name(int(row["target"]), vocabulary)),
                       num_cell(row["p_original"], "p_original"), num_cell(row["p_perturbed"], "p_perturbed"),
                       num_cell(row["ratio"], "ratio")], run=run.name, path=row["path"])
        inner.append(table.html())
        pictures = shown.head(config.gallery * 2)
        rows = run.table.set_index("path").loc[list(pictures["path"])].reset_index()
        inner.append(_figures(rows.assign(ratio=list(pictures["ratio"])), "ratio", thumbs[run.name], vocabulary))
        out.append(_fold(f"{len(flagged)} flagged images of {run.name}", "".join(inner), opened=weak or not multi))
    return "".join(out)


# --------------------------------------------------------------------------------------------
# galleries


def _figures(rows: pd.DataFrame, metric: str, thumbs: Thumbnails, vocabulary: ClassVocabulary | None) -> str:
    """One figure per row: the image with its saliency, path, classes, probabilities, metric value."""
    uris = thumbs.get(list(rows["path"].astype(str)))
    figures = []
    for row in rows.to_dict("records"):
        path = str(row["path"])
        uri = uris.get(path)
        picture = (f'<img src="{uri}" alt="{esc(path)}" loading="lazy">' if uri
                   else '<div class="missing">no picture</div>')
        target, label = int(row["target"]), int(row["label"]) if "label" in row else -1
        classes = f"class: {esc(class_name(target, vocabulary))}"
        if label >= 0 and label != target:
            classes += f"<br>label: {esc(class_name(label, vocabulary))}"
        probs = " · ".join(f"{short} {esc(fmt(row.get(col), 3))}" for short, col in
                           (("p", "p_original"), ("p pert.", "p_perturbed"), ("p final", "p_final"))
                           if col in row and row.get(col) is not None and np.isfinite(row.get(col)))
        value = row[metric]
        kind = str(row.get("_kind", ""))
        badge = f'<span class="kind">{esc(kind)}</span>' if kind else ""
        figures.append(
            f'<figure class="{esc(kind)}" data-path="{esc(path)}" data-metric="{esc(metric)}" '
            f'data-value="{esc(repr(float(value)))}">{badge}{picture}<figcaption><span class="path">{esc(path)}</span><br>{classes}<br>{probs}<br>'
            f'<span class="value">{esc(metric)} = {esc(fmt(value))}</span></figcaption></figure>')
    return f'<div class="gallery">{"".join(figures)}</div>'


def _box_legend(runs: Sequence[RunData]) -> str:
    """The thumbnails' boxes, named (evaluations before ``locbox_*`` columns drew no found box)."""
    if not any("loc_status" in run.table for run in runs):
        return ""  # evaluated without boxes: none drawn
    settings = sorted({str(s) for run in runs if "locbox_setting" in run.table
                       for s in run.table["locbox_setting"].dropna()})
    found = (f"; dashed magenta = the box localisation found (threshold and box kind {', '.join(settings)}: "
             "per_image.csv's locbox_* columns)" if settings else "")
    return esc(f" Boxes: white = the label's ground-truth boxes{found}.")


def _galleries(runs: Sequence[RunData], thumbs: dict[str, Thumbnails], vocabulary: ClassVocabulary | None,
               config: Any) -> str:
    out = [f'<p class="note">Per metric: the {config.gallery} best, the {config.gallery} worst and a fixed random '
           f"sample of {config.gallery} images (seed {config.seed}; the same images in every run that evaluated "
           "them), each with its saliency overlaid (red = most salient), the explained class, the probabilities "
           "of the original, fully perturbed and masked image, and the metric's value. The number of pictures is "
           f"bounded, whatever the number of images.{_box_legend(runs)}</p>"]
    for i, run in enumerate(runs):
        body = []
        for metric in GALLERY_METRICS:
            picks = gallery_picks(run.evaluated, metric, config.gallery, config.seed)
            if not picks:
                continue
            body.append(f"<h4>{esc(metric)} ({esc(metric_direction(metric) or 'descriptive')} is better)</h4>")
            body.append(_figures(pd.concat([picks[k].assign(_kind=k) for k in ("best", "worst", "random")]),
                                 metric, thumbs[run.name], vocabulary))
        if thumbs[run.name].problem:
            body.insert(0, f'<p class="note">{esc(thumbs[run.name].problem)}</p>')
        inner = "".join(body) or '<p class="note">(no evaluated image)</p>'
        if len(runs) == 1:
            out.append(inner)
        else:
            opened = " open" if i == 0 else ""
            out.append(f"<details{opened}><summary>{esc(run.name)}</summary>{inner}</details>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# files and other entries


def _href(target: Path, page_path: Path) -> str:
    try:
        relative = os.path.relpath(target.resolve(), page_path.resolve().parent)
    except ValueError:  # another drive (Windows)
        relative = str(target.resolve())
    return quote(Path(relative).as_posix())


def _files(runs: Sequence[RunData], out_path: Path, extra_files: Sequence[Path]) -> str:
    table = Table("files", ["run", "file", "bytes"], "The tables this page was built from (links relative to it)")
    for run in runs:
        for path in run.files:
            table.add([text_cell(run.name),
                       f'<td class="path"><a href="{esc(_href(path, out_path))}">{esc(path.name)}</a></td>',
                       num_cell(path.stat().st_size, "bytes", 0)], run=run.name)
    for path in extra_files:
        if path.is_file():
            table.add([text_cell("(comparison)"),
                       f'<td class="path"><a href="{esc(_href(path, out_path))}">{esc(path.name)}</a></td>',
                       num_cell(path.stat().st_size, "bytes", 0)])
    return table.html()


def _extra_entries(runs: Sequence[RunData]) -> str:
    """``summary.json`` entries this page has no section for (added by newer evaluations)."""
    rows = {run.name: {k: v for k, v in run.summary.items() if k not in KNOWN_SUMMARY_KEYS} for run in runs}
    if not any(rows.values()):
        return ""
    table = Table("extra", ["run", "entry", "value"])
    for name, entries in rows.items():
        for key, value in flatten(entries).items():
            table.add([text_cell(name), text_cell(key),
                       num_cell(value, key) if isinstance(value, (int, float)) and not isinstance(value, bool)
                       else text_cell(plain(value), "path")], run=name, key=key)
    return table.html()
