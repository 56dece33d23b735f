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
with its standard error. A variant has the reference's quality (``same_quality``) when no AUC is
worse than the reference's by more than 0.005, and ``p_final`` and ``area`` are no worse by more
than the run-to-run spread (``reference-seed2``'s difference, when the run has it) or two standard
errors of the paired difference, whichever is larger. Writes ``results/benchmarks/iteration-budget-<device>.csv`` (summary) and
``...-per-image.csv`` (``--out`` changes the stem).

``--curve 25,50,100`` adds the reference (or each ``--curve-of`` variant) cut at those iteration
counts (variants ``reference@25`` ...), all from its one solve (:func:`iterations.solve_with_snapshots`):
quality against iterations at the cost of one run plus the scoring of each cut.

Per-image rows are reused: a row of the per-image CSV being written (and of any ``--reuse`` file)
whose ``config`` digest (the variant's full configuration, its seed offset and the device type)
and image index match is taken instead of solving that image again, so a new variant costs only
its own solves and a longer run only its new images.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, clock, load_average, load_images, machine, now, pick_device, table, write_csv  # noqa: E402

from pipeline.config import override, preset, to_dict  # noqa: E402
from pipeline.evaluation import EvalConfig, causal_batch  # noqa: E402
from pipeline.metrics import auc  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.solve import masks as masklib  # noqa: E402
from pipeline.solve import solve  # noqa: E402
from pipeline.solve.problem import Problem, final_scores  # noqa: E402

from iterations import solve_with_snapshots  # noqa: E402

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


def digest(config, offset: int, device: torch.device) -> str:
    """A short key of what makes a per-image row: the full configuration, seed offset and device type."""
    text = json.dumps({"config": to_dict(config), "seed_offset": offset, "device": device.type}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def load_cache(paths: list[Path]) -> dict[tuple[str, int], dict]:
    """Earlier per-image rows by ``(config digest, image index)``, numbers parsed."""
    cache = {}
    for path in paths:
        if not path.exists():
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("config"):
                    parsed = {k: (v if k in ("variant", "config") else float(v)) for k, v in row.items()}
                    parsed["image"], parsed["target"] = int(parsed["image"]), int(parsed["target"])
                    parsed["iterations"] = int(parsed["iterations"])
                    cache[(row["config"], parsed["image"])] = parsed
    return cache


def run_variant(classifier, images: torch.Tensor, config, seeds: torch.Tensor, batch: int, eval_config: EvalConfig,
                key: str, cache: dict):
    """Per-image rows of one variant, solved ``batch`` images at a time (rows in ``cache`` reused)."""
    todo = [i for i in range(len(images)) if (key, i) not in cache]
    for start in range(0, len(todo), batch):
        index = torch.tensor(todo[start : start + batch])
        began = clock(classifier.device)
        result = solve(classifier, images[index], config, seeds=seeds[index])
        seconds = clock(classifier.device) - began
        store_rows(cache, key, classifier, images[index], index, config, eval_config, result.masks, result.targets,
                   result.iterations, result.p_final, result.area, seconds)
    return [{k: v for k, v in cache[(key, i)].items() if k != "variant"} for i in range(len(images))]


def run_curve(classifier, images: torch.Tensor, config, seeds: torch.Tensor, batch: int, eval_config: EvalConfig,
              keys: dict[int, str], cache: dict):
    """Per-image rows of ``config`` cut at each iteration count of ``keys`` (count -> digest), all
    from one solve per batch of the largest count: without a schedule or early stopping
    the first ``t`` iterations of a solve are a ``t``-iteration solve (:mod:`iterations`). An L1
    warm-up counts its own ``l1_decay`` iterations, whatever the length of the solve."""
    optim = config.optim
    if optim.schedule != "constant" or optim.stop_window:
        raise SystemExit("--curve needs a variant without learning-rate schedule or early stopping")
    device, counts = classifier.device, sorted(keys)
    todo = [i for i in range(len(images)) if any((keys[n], i) not in cache for n in counts)]
    for start in range(0, len(todo), batch):
        index = torch.tensor(todo[start : start + batch])
        result, snapshots = solve_with_snapshots(classifier, images[index], config, counts, seeds[index])
        problem = Problem(classifier, images[index], result.targets, config, seeds[index].to(device))
        for n in counts:
            masks = snapshots[n]["masks"]
            p_final, area, _ = final_scores(problem, masks)
            store_rows(cache, keys[n], classifier, images[index], index, config, eval_config, masks, result.targets,
                       torch.full_like(result.iterations, n), p_final, area, snapshots[n]["seconds"])
    return {n: [{k: v for k, v in cache[(keys[n], i)].items() if k != "variant"} for i in range(len(images))]
            for n in counts}


def store_rows(cache: dict, key: str, classifier, images: torch.Tensor, index: torch.Tensor, config,
               eval_config: EvalConfig, masks, targets, iterations, p_final, area, seconds: float) -> None:
    """Score masks ``(b, K, h, w)`` of the images ``index`` (deletion and insertion AUCs) into ``cache``."""
    heat = masklib.saliency(masks, config.objective.game, tuple(images.shape[-2:]), config.mask)
    with torch.no_grad():
        curves = causal_batch(classifier, images, heat, targets, eval_config)
    aucs = {name: auc(values.double()).cpu() for name, values in curves.items()}
    for i in range(len(targets)):
        cache[(key, int(index[i]))] = {
            "image": int(index[i]), "target": int(targets[i]), "iterations": int(iterations[i]),
            "p_final": float(p_final[i]), "area": float(area[i]),
            "deletion_auc_blur": float(aucs["deletion_blur"][i]), "deletion_auc_zero": float(aucs["deletion_zero"][i]),
            "insertion_auc": float(aucs["insertion"][i]), "solve_seconds": seconds / len(targets), "config": key}


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
    parser.add_argument("--curve", default="",
                        help="iteration counts (25,50,...): a variant cut at each, from its one solve, "
                             "as variants NAME@COUNT")
    parser.add_argument("--curve-of", action="append", default=None,
                        help="the variants --curve cuts (repeatable; default: the first)")
    parser.add_argument("--reuse", type=Path, action="append", default=[],
                        help="per-image CSV of an earlier run whose matching rows are reused (repeatable)")
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
    per_image_path = RESULTS / f"{args.out}-{device.type}-per-image.csv"
    cache = load_cache([*args.reuse, per_image_path])
    per_image, results = [], {}
    for name, config in variants:
        offset = 1000 if name.endswith("-seed2") else 0
        key = digest(config, offset, device)
        cuts = {}
        if args.curve and name in (args.curve_of or [variants[0][0]]):  # its own length is the last cut
            counts = {int(n) for n in args.curve.split(",")} | {config.optim.iterations}
            keys = {n: digest(override(config, [f"optim.iterations={n}"]), offset, device) for n in counts}
            cuts = run_curve(classifier, images, config, seeds + offset, args.batch, eval_config, keys, cache)
        rows = run_variant(classifier, images, config, seeds + offset, args.batch, eval_config, key, cache)
        results[name] = rows
        per_image += [{"variant": name, **row} for row in rows]
        print(f"{name}: {sum(r['solve_seconds'] for r in rows):.0f} s", flush=True)
        for n, cut in cuts.items():
            if n != config.optim.iterations:
                results[f"{name}@{n}"] = cut
                per_image += [{"variant": f"{name}@{n}", **row} for row in cut]
        write_csv(per_image_path, per_image)  # after every variant: a cut-short run keeps what it solved
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
            allowed = 0.005 if "auc" in metric else max(spread.get(metric, 0.0), 2 * error)
            verdict.append(worse <= allowed)
        row["same_quality"] = all(verdict) if name != reference_name else ""
        summary.append(row)
    write_csv(RESULTS / f"{args.out}-{device.type}.csv", summary)
    write_csv(per_image_path, per_image)
    columns = ["variant", "mean_iterations", "solve_seconds", *[f"diff_{m}" for m in METRICS], "same_quality"]
    print(f"{info['machine']}, {source}; differences are variant - {reference_name} (paired means)")
    print(table(summary, columns))


if __name__ == "__main__":
    main()
