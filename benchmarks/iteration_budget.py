"""Mask quality for a budget of iterations: variants of a preset against the preset as published.

Run from the repository root::

    .venv/bin/python benchmarks/iteration_budget.py --images 24          # the committed run
    .venv/bin/python benchmarks/iteration_budget.py --images 100 --device cuda

Each variant is a preset plus ``--set`` overrides (``--variant NAME=PRESET[:KEY=VALUE,...]``; the
defaults below), solved on the same images (the first ``--images`` of the development set, sorted),
top-1 targets, seeds = image index. The first variant is the reference (``paper`` as published,
300 iterations); ``reference-seed2`` is the same with other random draws (seeds + 1000), whose
difference from the reference is the run-to-run spread that any other difference is judged by.

Per image: iterations spent, ``p_final``, ``area``, and the deletion (blur and zero substrates)
and insertion AUCs of the mask's saliency (``pipeline.evaluation.causal_batch``, RISE's step).
Per variant: the means, the mean iterations, and the paired mean difference from the reference
with its standard error. A variant has the reference's quality when each AUC is within 0.005 of
the reference's and ``p_final`` and ``area`` are no worse than the reference's by more than the
run-to-run spread. Writes ``results/benchmarks/iteration-budget-<device>.csv`` (summary) and
``...-per-image.csv`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, clock, load_average, load_images, machine, now, pick_device, table, write_csv  # noqa: E402

from pipeline.config import override, preset  # noqa: E402
from pipeline.evaluation import EvalConfig, causal_batch  # noqa: E402
from pipeline.metrics import auc  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.solve import masks as masklib  # noqa: E402
from pipeline.solve import solve  # noqa: E402

DEFAULT_VARIANTS = [
    "reference=paper",
    "reference-seed2=paper",
    "constant-75=paper:optim.iterations=75",
    "cosine-50=paper:optim.iterations=50,optim.schedule=cosine",
    "cosine-75=paper:optim.iterations=75,optim.schedule=cosine",
    "cosine-100=paper:optim.iterations=100,optim.schedule=cosine",
]
METRICS = ("deletion_auc_blur", "deletion_auc_zero", "insertion_auc", "p_final", "area")
LOWER_IS_BETTER = {"deletion_auc_blur", "deletion_auc_zero", "p_final", "area"}


def parse_variant(text: str):
    name, _, rest = text.partition("=")
    preset_name, _, sets = rest.partition(":")
    return name, override(preset(preset_name), [s for s in sets.split(",") if s])


def run_variant(classifier, images: torch.Tensor, config, seeds: torch.Tensor, batch: int, eval_config: EvalConfig):
    """Per-image rows of one variant, solved ``batch`` images at a time."""
    rows, device = [], classifier.device
    for start in range(0, len(images), batch):
        part = slice(start, start + batch)
        began = clock(device)
        result = solve(classifier, images[part], config, seeds=seeds[part])
        seconds = clock(device) - began
        heat = masklib.saliency(result.masks, config.objective.game, tuple(images.shape[-2:]), config.mask)
        with torch.no_grad():
            curves = causal_batch(classifier, images[part], heat, result.targets, eval_config)
        aucs = {name: auc(values.double()).cpu() for name, values in curves.items()}
        for i in range(len(result.targets)):
            rows.append({"image": start + i, "target": int(result.targets[i]),
                         "iterations": int(result.iterations[i]), "p_final": float(result.p_final[i]),
                         "area": float(result.area[i]), "deletion_auc_blur": float(aucs["deletion_blur"][i]),
                         "deletion_auc_zero": float(aucs["deletion_zero"][i]),
                         "insertion_auc": float(aucs["insertion"][i]),
                         "solve_seconds": seconds / len(result.targets)})
    return rows


def paired(rows: list[dict], reference: list[dict], metric: str) -> tuple[float, float]:
    """Mean and standard error of the per-image difference ``variant - reference``."""
    diff = torch.tensor([r[metric] - q[metric] for r, q in zip(rows, reference)], dtype=torch.float64)
    return float(diff.mean()), float(diff.std(unbiased=True) / len(diff) ** 0.5) if len(diff) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", default="iteration-budget", help="CSV name stem under results/benchmarks/")
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME=PRESET[:KEY=VALUE,...], repeatable; the first is the reference")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = load_images(args.images, root=args.data)
    images = images.to(device)
    seeds = torch.arange(len(images))
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    eval_config = EvalConfig()
    info, started = machine(device), now()
    per_image, results = [], {}
    for name, config in variants:
        offset = 1000 if name.endswith("-seed2") else 0
        rows = run_variant(classifier, images, config, seeds + offset, args.batch, eval_config)
        results[name] = rows
        per_image += [{"variant": name, **row} for row in rows]
        print(f"{name}: {sum(r['solve_seconds'] for r in rows):.0f} s", flush=True)
    reference_name = variants[0][0]
    reference = results[reference_name]
    spread = {m: abs(paired(results[n], reference, m)[0]) for n in results if n.endswith("-seed2") for m in METRICS}
    summary = []
    for name, rows in results.items():
        row = {"machine": info["machine"], "torch": info["torch"], "date": started, "loadavg": load_average(),
               "source": source, "images": len(rows), "variant": name,
               "mean_iterations": sum(r["iterations"] for r in rows) / len(rows),
               "solve_seconds": sum(r["solve_seconds"] for r in rows)}
        verdict = []
        for metric in METRICS:
            row[f"mean_{metric}"] = sum(r[metric] for r in rows) / len(rows)
            diff, error = paired(rows, reference, metric)
            row[f"diff_{metric}"], row[f"se_{metric}"] = diff, error
            worse = diff if metric in LOWER_IS_BETTER else -diff
            if metric.endswith("auc") or "auc" in metric:
                verdict.append(abs(diff) <= 0.005)
            else:
                verdict.append(worse <= spread.get(metric, 0.0))
        row["same_quality"] = all(verdict) if name != reference_name else ""
        summary.append(row)
    write_csv(RESULTS / f"{args.out}-{device.type}.csv", summary)
    write_csv(RESULTS / f"{args.out}-{device.type}-per-image.csv", per_image)
    columns = ["variant", "mean_iterations", "solve_seconds", *[f"diff_{m}" for m in METRICS], "same_quality"]
    print(f"{info['machine']}, {source}; differences are variant - {reference_name} (paired means)")
    print(table(summary, columns))


if __name__ == "__main__":
    main()
