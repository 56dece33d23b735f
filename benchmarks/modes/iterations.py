"""Mask quality against solver iterations: variants of presets, each cut at several iteration counts
from one solve, compared with the first variant (the reference).

Each variant is a preset plus ``--set`` overrides (``--variant NAME=PRESET[:KEY=VALUE,...]``),
solved on the same images (the first ``--images`` of the development set, sorted), top-1 targets,
seeds = image index (+ 1000 for a variant named ``*-seed2``: the same configuration with other
random draws, whose difference from the reference is the run-to-run spread).

``--curve 25 50 100`` cuts the ``--curve-of`` variants (default: every variant) at those counts, as
variants ``NAME@COUNT``, all from one solve of the largest count: without a learning-rate schedule
or early stopping the first ``t`` iterations of a solve are a ``t``-iteration solve (every random
draw is keyed by image seed and iteration; an L1 warm-up counts its own ``l1_decay`` iterations).
``--early-stop WINDOW,TOL`` adds, for the same variants, a copy ``NAME-stopWINDOW-TOL`` with
per-image early stopping up to the largest count; its ``mean_iterations`` is the mean count used.

Per image: iterations spent, ``p_original``, ``p_perturbed`` (the fully perturbed image: the floor
``p_final`` can reach), ``p_final`` (through the mask, no noise or jitter), ``area`` (mean of
``1 - m`` upsampled), ``loss`` (the objective at that iteration, with its noise and jitter), and
the deletion (blur and zero substrates) and insertion AUCs of the mask's saliency as ``perturb
evaluate`` computes them. Per variant: the means, and the paired mean difference from the reference
with its standard error. A variant has the reference's quality (``same_quality``) when no AUC is
worse than the reference's by more than 0.005, and ``p_final`` and ``area`` are no worse by more
than the run-to-run spread (``<reference>-seed2``'s difference, when the run has it) or two
standard errors of the paired difference, whichever is larger.

Per-image rows are reused: a row of the per-image CSV being written (and of any ``--reuse`` file)
whose ``config`` digest (the variant's full configuration, its seed offset and the device type) and
image index match is taken instead of solving that image again, so a new variant costs only its
own solves and a longer run only its new images.

Files: ``STEM.csv`` (one row per variant and cut; default ``iterations-<device>.csv``),
``STEM-per-image.csv`` and ``STEM.png`` (quality against iterations).
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from benchmarks.common import add_batch_size, add_images, clock, early_stop, load_images, stop_overrides, table
from benchmarks.solving import VARIANT_HELP, digest, mask_aucs, parse_variant, solve_with_snapshots
from pipeline import load_model, override
from pipeline.solve import solve
from pipeline.solve.problem import Problem, final_scores

NAME = "iterations-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0
DEFAULT_VARIANTS = ["blur=blur", "jacobgil=jacobgil", "paper=paper"]
METRICS = ("deletion_auc_blur", "deletion_auc_zero", "insertion_auc", "p_final", "area")
"""The metrics judged against the reference."""
LOWER_IS_BETTER = {"deletion_auc_blur", "deletion_auc_zero", "p_final", "area"}
OTHERS = ("p_original", "p_perturbed", "loss")
"""Per-image columns reported as means only (rows reused from older runs may lack them)."""
SEED_OFFSET = 1000


def add_arguments(parser) -> None:
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        help=VARIANT_HELP + " (default: blur=blur jacobgil=jacobgil paper=paper)")
    parser.add_argument("--curve", type=int, nargs="+", default=[], metavar="COUNT",
                        help="iteration counts each --curve-of variant is cut at, from its one solve")
    parser.add_argument("--curve-of", nargs="+", default=None, metavar="NAME",
                        help="the variants --curve cuts and --early-stop copies (default: every variant)")
    parser.add_argument("--early-stop", type=early_stop, nargs="+", default=[], metavar="WINDOW,TOL",
                        help="also solve those variants with per-image early stopping (optim.stop_window, "
                        "optim.stop_tol) up to the largest count, e.g. 25,0.01")
    add_images(parser, 8)
    add_batch_size(parser, 8)
    parser.add_argument("--reuse", type=Path, action="append", default=[],
                        help="per-image CSV of an earlier run whose matching rows are reused (repeatable)")


def run(args, device: torch.device, results) -> int:
    variants = args.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    if len({name for name, _ in variants}) < len(variants):
        raise SystemExit("error: two --variant share a name")
    curve_of = set(args.curve_of or [name for name, _ in variants])
    unknown = curve_of - {name for name, _ in variants}
    if unknown:
        raise SystemExit(f"error: --curve-of names no variant: {sorted(unknown)}")
    if any(n < 1 for n in args.curve):
        raise SystemExit("error: --curve counts must be >= 1")
    variants, stops = with_early_stop(variants, curve_of, args.curve, args.early_stop)
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = load_images(args.images, root=args.data)
    images = images.to(device)
    per_image_path = results.path("per-image")
    cache = load_cache([*args.reuse, per_image_path])
    per_image: list[dict] = []
    solved: dict[str, list[dict]] = {}
    base_of: dict[str, tuple[str, str]] = {}
    for name, config in variants:
        offset = SEED_OFFSET if name.endswith("-seed2") else 0
        seeds = torch.arange(len(images)) + offset
        cuts: dict[int, list[dict]] = {}
        if args.curve and name in curve_of:  # its own length is one of the cuts
            counts = set(args.curve) | {config.optim.iterations}
            keys = {n: digest(override(config, [f"optim.iterations={n}"]), offset, device) for n in counts}
            cuts = run_curve(classifier, images, config, seeds, args.batch_size, keys, cache)
        rows = run_variant(classifier, images, config, seeds, args.batch_size, digest(config, offset, device), cache)
        solved[name], base_of[name] = rows, stops.get(name, (name, ""))
        per_image += [{"variant": name, **row} for row in rows]
        print(f"{name}: {sum(r['solve_seconds'] for r in rows):.0f} s", flush=True)
        for n, cut in sorted(cuts.items()):
            if n != config.optim.iterations:
                solved[f"{name}@{n}"], base_of[f"{name}@{n}"] = cut, (name, "")
                per_image += [{"variant": f"{name}@{n}", **row} for row in cut]
        results.write(per_image, "per-image")  # after every variant: a cut-short run keeps what it solved
        summary = summarise(solved, base_of, variants[0][0], source)
        out = results.write(summary)
    columns = ["variant", "mean_iterations", "solve_seconds", "mean_p_final", "mean_area", "mean_deletion_auc_blur",
               "mean_insertion_auc", *[f"diff_{m}" for m in METRICS], "same_quality"]
    print(f"{results.info['machine']}, {source}; differences are variant - {variants[0][0]} (paired means)")
    print(table(summary, columns))
    print(f"wrote {out} and its -per-image.csv")
    plot = figure(summary, results.path(suffix=".png"),
                  f"efficientnet_lite0, {len(images)} images of {source}; {results.info['machine']}")
    if plot:
        print(f"wrote {plot}")
    return 0


def with_early_stop(variants: list, curve_of: set[str], curve: list[int], settings: list) -> tuple[list, dict]:
    """``variants`` and, after them, an early-stopping copy of each ``curve_of`` variant per setting,
    up to the largest count (its own or the curve's); and ``{copy: (variant, "WINDOW,TOL")}``."""
    copies, sources = [], {}
    for setting in settings:
        for name, config in variants:
            if name in curve_of and not config.optim.stop_window:
                longest = max([config.optim.iterations, *curve])
                copy = f"{name}-stop{setting[0]}-{setting[1]:g}"
                copies.append((copy, override(config, [f"optim.iterations={longest}", *stop_overrides(setting)])))
                sources[copy] = (name, f"{setting[0]},{setting[1]:g}")
    return [*variants, *copies], sources


def load_cache(paths: list[Path]) -> dict[tuple[str, int], dict]:
    """Earlier per-image rows by ``(config digest, image index)``, numbers parsed."""
    cache = {}
    for path in paths:
        if not path.exists():
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if not row.get("config"):
                    continue
                parsed = {k: float(row[k]) for k in (*METRICS, *OTHERS, "solve_seconds") if row.get(k, "") != ""}
                parsed.update(image=int(row["image"]), target=int(row["target"]), iterations=int(row["iterations"]),
                              config=row["config"])
                cache[(row["config"], parsed["image"])] = parsed
    return cache


def run_variant(classifier, images: torch.Tensor, config, seeds: torch.Tensor, batch: int, key: str,
                cache: dict) -> list[dict]:
    """Per-image rows of one variant, solved ``batch`` images at a time (rows in ``cache`` reused)."""
    todo = [i for i in range(len(images)) if (key, i) not in cache]
    for start in range(0, len(todo), batch):
        index = torch.tensor(todo[start : start + batch])
        began = clock(classifier.device)
        result = solve(classifier, images[index], config, seeds=seeds[index])
        seconds = clock(classifier.device) - began
        store_rows(cache, key, classifier, images[index], index, config, result.masks, result,
                   {"iterations": result.iterations, "p_final": result.p_final, "area": result.area,
                    "loss": result.loss}, seconds)
    return [cache[(key, i)] for i in range(len(images))]


def run_curve(classifier, images: torch.Tensor, config, seeds: torch.Tensor, batch: int, keys: dict[int, str],
              cache: dict) -> dict[int, list[dict]]:
    """Per-image rows of ``config`` cut at each iteration count of ``keys`` (count -> digest), all from
    one solve per batch of the largest count (:func:`benchmarks.solving.solve_with_snapshots`)."""
    if config.optim.schedule != "constant" or config.optim.stop_window:
        raise SystemExit("error: --curve needs variants without a learning-rate schedule or early stopping "
                         "(name the others out with --curve-of)")
    device, counts = classifier.device, sorted(keys)
    todo = [i for i in range(len(images)) if any((keys[n], i) not in cache for n in counts)]
    for start in range(0, len(todo), batch):
        index = torch.tensor(todo[start : start + batch])
        result, snapshots = solve_with_snapshots(classifier, images[index], config, counts, seeds[index])
        problem = Problem(classifier, images[index], result.targets, config, seeds[index].to(device))
        for n in counts:
            masks = snapshots[n]["masks"]
            p_final, area, _ = final_scores(problem, masks)
            store_rows(cache, keys[n], classifier, images[index], index, config, masks, result,
                       {"iterations": torch.full_like(result.iterations, n), "p_final": p_final, "area": area,
                        "loss": snapshots[n]["loss"]}, snapshots[n]["seconds"])
        if counts[-1] == config.optim.iterations and not torch.equal(snapshots[counts[-1]]["masks"], result.masks):
            print(f"warning: the cut at {counts[-1]} differs from the solve's own masks")
    return {n: [cache[(keys[n], i)] for i in range(len(images))] for n in counts}


def store_rows(cache: dict, key: str, classifier, images: torch.Tensor, index: torch.Tensor, config,
               masks: torch.Tensor, result, scores: dict[str, torch.Tensor], seconds: float) -> None:
    """Score masks ``(b, K, h, w)`` of the images ``index`` (deletion and insertion AUCs) into ``cache``;
    ``scores`` holds the per-image ``iterations``, ``p_final``, ``area`` and ``loss``."""
    aucs = mask_aucs(classifier, images, masks, result.targets, config)
    for i in range(len(index)):
        cache[(key, int(index[i]))] = {
            "image": int(index[i]), "target": int(result.targets[i]), "iterations": int(scores["iterations"][i]),
            "p_original": float(result.p_original[i]), "p_perturbed": float(result.p_perturbed[i]),
            "p_final": float(scores["p_final"][i]), "area": float(scores["area"][i]), "loss": float(scores["loss"][i]),
            "deletion_auc_blur": float(aucs["deletion_blur"][i]), "deletion_auc_zero": float(aucs["deletion_zero"][i]),
            "insertion_auc": float(aucs["insertion"][i]), "solve_seconds": seconds / len(index), "config": key}


def paired(rows: list[dict], reference: list[dict], metric: str) -> tuple[float, float]:
    """Mean and standard error of the per-image difference ``variant - reference``."""
    diff = torch.tensor([r[metric] - q[metric] for r, q in zip(rows, reference)], dtype=torch.float64)
    return float(diff.mean()), float(diff.std(unbiased=True) / len(diff) ** 0.5) if len(diff) > 1 else 0.0


def summarise(solved: dict[str, list[dict]], base_of: dict[str, tuple[str, str]], reference_name: str,
              source: str) -> list[dict]:
    """One row per variant and cut: means, paired differences from the reference, ``same_quality``.
    ``base_of[name]`` is ``(the variant it was cut or copied from, its early stopping or "")``."""
    reference = solved[reference_name]
    seed2 = f"{reference_name}-seed2"
    spread = {m: abs(paired(solved[seed2], reference, m)[0]) for m in METRICS} if seed2 in solved else {}
    summary = []
    for name, rows in solved.items():
        row = {"source": source, "images": len(rows), "variant": name, "of": base_of[name][0],
               "early_stop": base_of[name][1],
               "mean_iterations": sum(r["iterations"] for r in rows) / len(rows),
               "solve_seconds": sum(r.get("solve_seconds", 0.0) for r in rows)}
        for column in OTHERS:
            values = [r[column] for r in rows if column in r]
            row[f"mean_{column}"] = sum(values) / len(values) if len(values) == len(rows) else float("nan")
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
    return summary


def figure(summary: list[dict], path: Path, title: str) -> Path | None:
    """Four panels against iterations: a variant and its cuts as a line, its early-stopping copies as
    stars at the mean iterations they used."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no figure")
        return None
    panels = [("mean_p_final", "mean p_final (dotted: fully perturbed image)"), ("mean_area", "mean area perturbed"),
              ("mean_deletion_auc_blur", "deletion AUC, blur (lower better)"),
              ("mean_insertion_auc", "insertion AUC (higher better)")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, label) in zip(axes, panels):
        for base in dict.fromkeys(r["of"] for r in summary if not r["early_stop"]):
            mine = sorted((r for r in summary if r["of"] == base and not r["early_stop"]),
                          key=lambda r: r["mean_iterations"])
            line, = ax.plot([r["mean_iterations"] for r in mine], [r[key] for r in mine], marker="o", label=base)
            stops = [r for r in summary if r["of"] == base and r["early_stop"]]  # stars at the mean iterations used
            ax.scatter([r["mean_iterations"] for r in stops], [r[key] for r in stops], marker="*", s=90,
                       color=line.get_color(), zorder=3, label=f"{base}, early stop" if stops else None)
            if key == "mean_p_final":  # what the fully perturbed image scores: the floor of p_final
                ax.axhline(mine[0]["mean_p_perturbed"], color=line.get_color(), ls=":", lw=1)
        ax.set_xlabel("solver iterations (mean per image)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
