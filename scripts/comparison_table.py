"""Markdown tables of a comparison (`perturb compare` or `perturb sweep`'s comparison.csv), one
row per run, the first run the reference.

    python scripts/comparison_table.py results/methods/comparison.csv           # mean [95% CI] and
                                                                                 # the paired difference
    python scripts/comparison_table.py results/methods/comparison.csv --short   # means, * where the
                                                                                 # difference's interval
                                                                                 # excludes zero

The columns are the deletion AUCs, the insertion AUC, the localisation error (energy threshold,
tight box; with `--alpha-split`, alpha chosen on the held-out images) and both pointing games.
results/methods/README.md and the README's "Against other saliency methods" are made by it.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

COLUMNS = [("deletion_auc_zero", "deletion AUC, zeros"), ("deletion_auc_blur", "deletion AUC, blur"),
           ("insertion_auc", "insertion AUC"), ("locerr_energy_tight", "localisation error"),
           ("pointing_hit", "pointing game"), ("energy_pg", "energy pointing")]
LONG_NAMES = {"deletion_auc_zero": "deletion AUC, zeros (lower)", "deletion_auc_blur": "deletion AUC, blur (lower)",
              "insertion_auc": "insertion AUC (higher)",
              "locerr_energy_tight": "localisation error, energy, held-out alpha (lower)",
              "pointing_hit": "pointing game (higher)", "energy_pg": "energy pointing game (higher)"}


def table(comparison: pd.DataFrame, short: bool) -> list[str]:
    """The markdown lines of ``comparison`` (comparison.csv's columns)."""
    names = [name for _, name in COLUMNS] if short else [LONG_NAMES[metric] for metric, _ in COLUMNS]
    lines = ["| method | images | " + " | ".join(names) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for run in comparison["run"].unique():
        rows = comparison[comparison["run"] == run].set_index("metric")
        images = int(rows.loc["deletion_auc_zero", "n"]) if "deletion_auc_zero" in rows.index else 0
        cells = [_cell(rows, metric, short) for metric, _ in COLUMNS]
        lines.append(f"| `{run}` | {images} | " + " | ".join(cells) + " |")
    return lines


def _cell(rows: pd.DataFrame, metric: str, short: bool) -> str:
    if metric not in rows.index or pd.isna(rows.loc[metric, "mean"]):
        return "-"
    r = rows.loc[metric]
    excludes_zero = not pd.isna(r["diff"]) and (r["diff_ci_low"] > 0 or r["diff_ci_high"] < 0)
    if short:
        return f"{r['mean']:.3f}" + ("*" if excludes_zero else "")
    cell = f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    if not pd.isna(r["diff"]):
        diff = f"{r['diff']:+.3f}"
        cell += "<br>" + (f"**{diff}**" if excludes_zero else diff)
    return cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", help="a comparison.csv")
    parser.add_argument("--short", action="store_true", help="means only, * where the paired difference's "
                                                             "95%% interval excludes zero")
    args = parser.parse_args(argv)
    try:
        comparison = pd.read_csv(args.comparison)
    except (OSError, pd.errors.ParserError) as error:
        print(f"error: cannot read {args.comparison!r}: {error}", file=sys.stderr)
        return 1
    print("\n".join(table(comparison, args.short)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
