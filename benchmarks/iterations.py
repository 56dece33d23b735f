"""Mask quality against solver iterations, for several presets.

Run from the repository root::

    .venv/bin/python benchmarks/iterations.py                     # defaults: about 15 min on 2 CPU cores
    .venv/bin/python benchmarks/iterations.py --images 16 --iterations 25 50 100 200 300 500

For each preset, **one** solve of ``max(--iterations)`` iterations runs on the images, and the masks
are copied at every listed iteration count. This is the same as separate solves of each length:
the solver has no learning-rate schedule and its random draws depend only on the image seed and
the iteration index (``pipeline.solve.solver``), so the first ``t`` iterations of a longer solve are a
``t``-iteration solve. (The copy at the last count is checked against what ``solve`` returns.)

At every count: mean ``p_final`` (target probability through the mask, no noise or jitter, as
``SolveResult.p_final``), mean ``area`` (share of the image perturbed, mean of ``1 - m``
upsampled), mean objective (with that iteration's noise and jitter), and the mean deletion (blur
substrate) and insertion AUCs at ``--step`` (fp32 model; saliency from
:func:`pipeline.solve.masks.saliency`), and the solve time taken to get there.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, clock, load_average, load_images, machine, now, pick_device, table, write_csv  # noqa: E402

from pipeline.solve import masks as masklib  # noqa: E402
from pipeline.config import override, preset  # noqa: E402
from pipeline.metrics.deletion import auc, blur_substrate, causal_curves  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.solve import Perturber, solve  # noqa: E402


def solve_with_snapshots(classifier, images: torch.Tensor, config, checkpoints: list[int], seeds: torch.Tensor):
    """Solve once for ``max(checkpoints)`` iterations; return the result and, per checkpoint, the
    (clamped) masks, the per-image objective and the seconds since the solve started."""
    holder: dict = {}
    snapshots: dict[int, dict] = {}
    device = classifier.device
    wanted = set(checkpoints)

    def step_hook(optimizer, args, kwargs) -> None:  # find the mask tensor the solver optimises
        holder.setdefault("masks", optimizer.param_groups[0]["params"][0])

    def callback(iteration: int, loss: torch.Tensor) -> None:
        done = iteration + 1
        if done in wanted:  # the solver clamps to [0, 1] before calling back
            snapshots[done] = {"masks": holder["masks"].detach().clone(), "loss": loss.detach().clone(),
                               "seconds": clock(device) - start}

    handle = register_optimizer_step_post_hook(step_hook)
    try:
        start = clock(device)
        result = solve(classifier, images, override(config, [f"optim.iterations={max(checkpoints)}"]),
                       seeds=seeds, callback=callback)
    finally:
        handle.remove()
    return result, snapshots


def p_final(classifier, images01: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, config,
            seeds: torch.Tensor) -> torch.Tensor:
    """Target probability through ``masks`` ``(B, 1, h, w)`` without noise or jitter, scored as the
    solver scores (its precision, channels_last): ``SolveResult.p_final`` for a delete-game preset."""
    x = classifier.normalize(images01)
    perturb = Perturber(x, config, seeds)
    up = masklib.upsample(masks, tuple(x.shape[-2:]), config.mask)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if config.precision == "bf16" \
        else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        logits = classifier(perturb(up[:, :1]).contiguous(memory_format=torch.channels_last)).float()
    return logits.softmax(1).gather(1, targets[:, None])[:, 0]


def figure(rows: list[dict], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no figure")
        return None
    panels = [("mean_p_final", "mean p_final (dotted: fully perturbed image)"), ("mean_area", "mean area perturbed"),
              ("mean_deletion_blur_auc", "deletion AUC, blur (lower better)"),
              ("mean_insertion_auc", "insertion AUC (higher better)")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, label) in zip(axes, panels):
        for name in dict.fromkeys(r["preset"] for r in rows):
            mine = [r for r in rows if r["preset"] == name and not r["early_stop"]]
            line, = ax.plot([r["iterations"] for r in mine], [r[key] for r in mine], marker="o", label=name)
            stops = [r for r in rows if r["preset"] == name and r["early_stop"]]  # stars at mean iterations used
            ax.scatter([r["iterations"] for r in stops], [r[key] for r in stops], marker="*", s=90,
                       color=line.get_color(), zorder=3, label=f"{name}, early stop" if stops else None)
            if key == "mean_p_final":  # what the fully perturbed image scores: the floor of p_final
                ax.axhline(mine[0]["mean_p_perturbed"], color=line.get_color(), ls=":", lw=1)
        ax.set_xlabel("solver iterations")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--presets", nargs="+", default=["blur", "jacobgil", "paper"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[25, 50, 100, 200, 300])
    parser.add_argument("--images", type=int, default=8, help="images (the first of the sorted dev set)")
    parser.add_argument("--batch", type=int, default=16, help="images per solve")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--early-stop", nargs="*", default=[], metavar="WINDOW,TOL",
                        help="also solve with per-image early stopping (optim.stop_window, optim.stop_tol) "
                        "up to the largest --iterations, e.g. 25,0.01 50,0.005; rows report the mean "
                        "iterations used and the solve time")
    parser.add_argument("--step", type=int, default=1792, help="deletion/insertion pixels per step")
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    checkpoints = sorted(set(args.iterations))
    if checkpoints[0] < 1:
        parser.error("--iterations must be >= 1")

    device = pick_device(args.device)
    info = machine(device)
    common = {"machine": info["machine"], "cpu": info["cpu"], "cores": info["cores"], "gpu": info.get("gpu", ""),
              "torch": info["torch"], "date": now(), "loadavg_start": load_average()}
    print(f"machine: {info['machine']}; torch {info['torch']}; load average {common['loadavg_start']}")
    classifier = load_model("efficientnet_lite0", device=device)
    images01, labels, source = load_images(args.images, root=args.data)
    images01 = images01.to(device)
    print(f"images: {source}; presets {args.presets}; iterations {checkpoints}; {args.precision}")
    x = classifier.normalize(images01)
    blurred = blur_substrate(x)
    seeds_all = torch.arange(len(images01), device=device)

    rows = []
    began = time.perf_counter()
    for name in args.presets:
        config = override(preset(name), [f"precision={args.precision}"])
        snaps: dict[int, dict] = {}
        finals, targets_parts = [], []
        for first in range(0, len(images01), args.batch):
            part = slice(first, first + args.batch)
            result, snapshots = solve_with_snapshots(classifier, images01[part], config, checkpoints, seeds_all[part])
            finals.append(result)
            targets_parts.append(result.targets)
            for t, snap in snapshots.items():
                entry = snaps.setdefault(t, {"masks": [], "loss": [], "seconds": 0.0})
                entry["masks"].append(snap["masks"])
                entry["loss"].append(snap["loss"])
                entry["seconds"] += snap["seconds"]
        targets = torch.cat(targets_parts)
        last = checkpoints[-1]
        # The copy at the last count must be what solve returned (masks and p_final).
        final_masks = torch.cat([r.masks for r in finals])
        final_p = torch.cat([r.p_final for r in finals])
        mine = p_final(classifier, images01, torch.cat(snaps[last]["masks"]), targets, config, seeds_all)
        same = torch.equal(torch.cat(snaps[last]["masks"]), final_masks) and torch.allclose(mine, final_p, atol=1e-5)
        print(f"{name}: snapshot at {last} equals solve's result: {same} "
              f"(max |p_final diff| {(mine - final_p).abs().max().item():.1e})")
        p_perturbed = torch.cat([r.p_perturbed for r in finals])
        p_original = torch.cat([r.p_original for r in finals])
        def quality_row(masks: torch.Tensor, mean_iterations: float, loss: torch.Tensor, seconds: float,
                        early_stop: str = "") -> dict:
            heat = masklib.saliency(masks, config.objective.game, classifier.input_size, config.mask)
            deletion = auc(causal_curves(classifier, x, heat, targets, blurred, "deletion", args.step, args.chunk))
            insertion = auc(causal_curves(classifier, x, heat, targets, blurred, "insertion", args.step, args.chunk))
            up = masklib.upsample(masks, classifier.input_size, config.mask)
            row = {**common, "model": "efficientnet_lite0", "device": device.type, "preset": name,
                   "precision": args.precision, "images": len(images01), "early_stop": early_stop,
                   "iterations": mean_iterations,
                   "mean_p_original": float(p_original.mean()), "mean_p_perturbed": float(p_perturbed.mean()),
                   "mean_p_final": float(p_final(classifier, images01, masks, targets, config, seeds_all).mean()),
                   "mean_area": float((1 - up).flatten(1).mean(1).mean()), "mean_loss": float(loss.mean()),
                   "mean_deletion_blur_auc": float(deletion.mean()), "mean_insertion_auc": float(insertion.mean()),
                   "solve_seconds": seconds, "step": args.step, "loadavg_row": load_average()}
            rows.append(row)
            print(f"  {name:6s} {mean_iterations:6.1f} it{' (' + early_stop + ')' if early_stop else ''}: "
                  f"p_final {row['mean_p_final']:.3f}  area {row['mean_area']:.3f}  "
                  f"del(blur) {row['mean_deletion_blur_auc']:.3f}  ins {row['mean_insertion_auc']:.3f}  "
                  f"solve {row['solve_seconds']:.1f} s", flush=True)
            write_csv(args.out / f"iterations-{device.type}.csv", rows)  # partial results survive an interrupt
            return row

        for t in checkpoints:
            quality_row(torch.cat(snaps[t]["masks"]), t, torch.cat(snaps[t]["loss"]), snaps[t]["seconds"])
        # Early stopping: the same images and maximum length, each image stopping on its own.
        for setting in args.early_stop:
            window, tol = setting.split(",")
            cfg = override(config, [f"optim.iterations={last}", f"optim.stop_window={window}", f"optim.stop_tol={tol}"])
            parts, seconds = [], 0.0
            for first in range(0, len(images01), args.batch):
                part = slice(first, first + args.batch)
                start = clock(device)
                parts.append(solve(classifier, images01[part], cfg, seeds=seeds_all[part], targets=targets[part]))
                seconds += clock(device) - start
            used = torch.cat([r.iterations for r in parts]).float()
            quality_row(torch.cat([r.masks for r in parts]), float(used.mean()), torch.cat([r.loss for r in parts]),
                        seconds, early_stop=f"window {window}, tol {tol}, max {last}")
    out = write_csv(args.out / f"iterations-{device.type}.csv", rows)
    print()
    print(table(rows, ["preset", "early_stop", "iterations", "mean_p_final", "mean_area", "mean_loss", "mean_deletion_blur_auc",
                       "mean_insertion_auc", "solve_seconds"]))
    print(f"wrote {out} ({time.perf_counter() - began:.0f} s)")
    title = (f"efficientnet_lite0, {len(images01)} images of {source}, {args.precision}, step {args.step}; "
             f"{info['machine']}")
    plot = figure(rows, args.out / f"iterations-{device.type}.png", title)
    if plot:
        print(f"wrote {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
