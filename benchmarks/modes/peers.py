"""The ``extremal`` preset against TorchRay's ``extremal_perturbation`` (its reference code).

Needs the ``peers`` extra (``pip install -e '.[peers]'``). Three actions::

    python benchmarks/run.py peers run torchray-even   # TorchRay as shipped (flip on even iterations)
    python benchmarks/run.py peers run torchray-odd    # TorchRay, flip on odd iterations (the yardstick)
    python benchmarks/run.py peers run ours            # the extremal preset, all images batched
    python benchmarks/run.py peers speed               # masks per second, both, same process
    python benchmarks/run.py peers judge               # quality and agreement

Every ``run`` caches its masks per image under ``<out>/cache/<method>-<iterations>/`` (``.npz``,
upsampled to the input, float16), so an interrupted run resumes and ``judge`` recomputes only the
judge. All methods see the same model (EfficientNet-Lite0), the first ``--images`` sorted images of
the development set, their top-1 classes, the areas 0.05 / 0.1 / 0.2 and ``--iterations`` (800).

TorchRay runs one image at a time through its own API: preservation variant, blur perturbation and
its defaults (step 7, sigma 21, 8 levels, flip jitter). Its input is the normalised image and its
model the network that takes it, which is what the preset optimises too. ``torchray-odd`` gives
TorchRay a model that flips its input first: TorchRay then sees flipped inputs on odd iterations
instead of even ones. TorchRay draws nothing at random, so this is the one jitter it can vary;
the agreement of the two runs is the yardstick for "as close as TorchRay is to itself".

The judge belongs to neither method: for each area, the mask's mean against the area asked; the
target's probability and logit on the image kept through the mask with the rest replaced by a
Gaussian blur (sigma 10, reflect borders, computed here); deletion and insertion AUCs of each
method's saliency (the sum of its area masks) with :mod:`pipeline.metrics.deletion`; Pearson
correlation and top-a IoU between the masks of two methods.

Files (``--out``, default ``results/peers``): ``judge`` writes ``quality-STEM.csv``,
``per-image-STEM.csv`` and ``agreement-STEM.csv``, ``speed`` writes ``speed-STEM.csv``; ``STEM``
(``--name``) defaults to the iteration count, followed for ``judge`` by the methods when
``--methods`` leaves some out (``100-torchray-even-torchray-odd``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO, add_images, clock, load_average, load_images, now, table
from pipeline import load_model, override, preset

NAME = ""
DEVICES = ("cpu", "cuda")
THREADS = 0

AREAS = (0.05, 0.1, 0.2)
OUT = REPO / "results" / "peers"
"""The default ``--out``."""
METHODS = ("torchray-even", "torchray-odd", "ours")


class _FlipFirst(torch.nn.Module):
    """The network with its input flipped horizontally first (TorchRay's jitter on odd iterations)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.flip(3))


def torchray_masks(classifier, x: torch.Tensor, target: int, iterations: int, flip_odd: bool) -> torch.Tensor:
    """TorchRay's masks ``(K, 1, H, W)`` for one normalised image ``x`` ``(1, 3, H, W)``."""
    from torchray.attribution.extremal_perturbation import extremal_perturbation

    module = _FlipFirst(classifier.module) if flip_odd else classifier.module
    masks, _ = extremal_perturbation(module, x, target, areas=list(AREAS), max_iter=iterations)
    return masks.detach()


def ours_config(iterations: int, extra: list[str] | None = None):
    return override(preset("extremal"), [f"optim.iterations={iterations}", f"objective.areas={list(AREAS)}"]
                    + list(extra or []))


def ours_masks(classifier, images: torch.Tensor, targets: torch.Tensor, iterations: int,
               extra: list[str] | None = None) -> torch.Tensor:
    """The preset's masks, upsampled to the input, ``(B, K, H, W)``, the whole batch at once."""
    from pipeline.solve import masks as masklib
    from pipeline.solve import solve

    config = ours_config(iterations, extra)
    result = solve(classifier, images, config, targets=targets)
    return masklib.upsample(result.masks, tuple(images.shape[-2:]), config.mask)


def _cache(out: Path, method: str, iterations: int) -> Path:
    return out / "cache" / f"{method}-{iterations}"


def _setup(args, device: torch.device) -> tuple:
    torch.manual_seed(0)
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = load_images(args.images, classifier.input_size, args.data, require_real=True)
    if not len(images):
        sys.exit(f"error: the development set is missing ({source})")
    images = images.to(device)
    with torch.no_grad():
        targets = classifier(classifier.normalize(images)).argmax(1)
    return classifier, images, targets, source


def cmd_run(args, device: torch.device, results) -> None:
    classifier, images, targets, source = _setup(args, device)
    folder = _cache(args.out, args.method, args.iterations)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{args.method}: {len(images)} images of {source}, {args.iterations} iterations; {now()}; "
          f"load {load_average()}", flush=True)
    if args.method == "ours":
        todo = [i for i in range(len(images)) if not (folder / f"{i:03d}.npz").exists()]
        if not todo:
            return
        index = torch.tensor(todo, device=images.device)
        start = clock(images.device)
        masks = ours_masks(classifier, images[index], targets[index], args.iterations, args.set)
        seconds = clock(images.device) - start
        for row, i in enumerate(todo):
            _save(folder / f"{i:03d}.npz", masks[row], int(targets[i]), seconds / len(todo), args)
        print(f"  {len(todo)} images in {seconds:.0f} s (batched); load {load_average()}", flush=True)
        return
    for i in range(len(images)):
        path = folder / f"{i:03d}.npz"
        if path.exists():
            continue
        start = clock(images.device)
        x = classifier.normalize(images[i : i + 1])
        masks = torchray_masks(classifier, x, int(targets[i]), args.iterations, args.method == "torchray-odd")
        seconds = clock(images.device) - start
        _save(path, masks[:, 0], int(targets[i]), seconds, args)
        print(f"  image {i}: {seconds:.0f} s, load {load_average()}", flush=True)


def _save(path: Path, masks: torch.Tensor, target: int, seconds: float, args) -> None:
    np.savez_compressed(path, masks=masks.cpu().numpy().astype(np.float16), target=target, seconds=seconds,
                        iterations=args.iterations, threads=torch.get_num_threads())


def _load(out: Path, method: str, iterations: int, count: int) -> dict[int, dict]:
    folder = _cache(out, method, iterations)
    found = {}
    for i in range(count):
        path = folder / f"{i:03d}.npz"
        if path.exists():
            with np.load(path) as data:
                found[i] = {name: data[name] for name in data.files}
    return found


def judge_blur(images: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """The judge's own substrate: scipy's Gaussian (reflect borders, radius 4 sigma) of ``[0, 1]``
    images ``(B, 3, H, W)``; neither solver's blur code."""
    import scipy.ndimage

    array = images.numpy()
    return torch.from_numpy(scipy.ndimage.gaussian_filter(array, sigma=(0, 0, sigma, sigma), mode="reflect"))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator else float("nan")


def _top_iou(a: np.ndarray, b: np.ndarray, area: float) -> float:
    """IoU of the ``area`` share of pixels with the largest values in each map."""
    count = max(1, int(round(area * a.size)))
    top_a = np.zeros(a.size, bool)
    top_b = np.zeros(b.size, bool)
    top_a[np.argsort(-a.ravel(), kind="stable")[:count]] = True
    top_b[np.argsort(-b.ravel(), kind="stable")[:count]] = True
    return float((top_a & top_b).sum() / (top_a | top_b).sum())


def cmd_judge(args, device: torch.device, results) -> None:
    from pipeline.metrics import RISE_STEP, auc, blur_substrate, causal_curves, zero_substrate

    classifier, images, targets, source = _setup(args, torch.device("cpu"))  # the judge reads cached masks
    methods = args.methods or list(METHODS)
    cached = {m: _load(args.out, m, args.iterations, len(images)) for m in methods}
    common = sorted(set.intersection(*(set(c) for c in cached.values())))
    if not common:
        sys.exit(f"error: no image has masks from every method at {args.iterations} iterations "
                 f"(cached: {', '.join(f'{m} {len(c)}' for m, c in cached.items())}); run 'run' first")
    index = torch.tensor(common)
    x01, target = images[index], targets[index]
    for m in methods:
        if any(int(cached[m][i]["target"]) != int(targets[i]) for i in common):
            sys.exit(f"error: the cached masks of {m} explain other classes than this model's top-1")
    x = classifier.normalize(x01)
    blurred = classifier.normalize(judge_blur(x01))
    rows, per_image = [], []
    quality: dict[str, dict[str, list]] = {}
    with torch.no_grad():
        for m in methods:
            masks = torch.from_numpy(np.stack([cached[m][i]["masks"] for i in common])).float()  # (n, K, H, W)
            kept = blurred[:, None] + masks[:, :, None] * (x[:, None] - blurred[:, None])  # (n, K, 3, H, W)
            logits = classifier(kept.flatten(0, 1)).view(len(common), len(AREAS), -1)
            chosen = logits.gather(2, target.view(-1, 1, 1).expand(-1, len(AREAS), 1))[..., 0]
            probs = logits.softmax(2).gather(2, target.view(-1, 1, 1).expand(-1, len(AREAS), 1))[..., 0]
            saliency = masks.sum(1, keepdim=True)
            deletion = auc(causal_curves(classifier, x, saliency, target, zero_substrate(x), "deletion", RISE_STEP))
            insertion = auc(causal_curves(classifier, x, saliency, target, blur_substrate(x), "insertion", RISE_STEP))
            quality[m] = {"masks": masks}
            for k, area in enumerate(AREAS):
                rows.append({"method": m, "area": area, "images": len(common),
                             "mask_mean": float(masks[:, k].mean()), "p_kept": float(probs[:, k].mean()),
                             "logit_kept": float(chosen[:, k].mean()),
                             "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean())})
            for j, i in enumerate(common):
                per_image.append({"method": m, "image": i, "target": int(target[j]),
                                  **{f"mean_{a}": float(masks[j, k].mean()) for k, a in enumerate(AREAS)},
                                  **{f"p_{a}": float(probs[j, k]) for k, a in enumerate(AREAS)},
                                  "deletion_auc": float(deletion[j]), "insertion_auc": float(insertion[j]),
                                  "seconds": float(cached[m][i]["seconds"])})
    agreement = []
    for a_name, b_name in (("ours", "torchray-even"), ("ours", "torchray-odd"), ("torchray-odd", "torchray-even")):
        if a_name not in quality or b_name not in quality:
            continue
        for k, area in enumerate(AREAS):
            first, second = quality[a_name]["masks"][:, k].numpy(), quality[b_name]["masks"][:, k].numpy()
            pearson = [_pearson(first[j], second[j]) for j in range(len(common))]
            iou = [_top_iou(first[j], second[j], area) for j in range(len(common))]
            agreement.append({"pair": f"{a_name} vs {b_name}", "area": area, "images": len(common),
                              "pearson": float(np.mean(pearson)), "pearson_min": float(np.min(pearson)),
                              "top_iou": float(np.mean(iou)), "top_iou_min": float(np.min(iou))})
    stem = results.name or f"{args.iterations}" + ("" if set(methods) == set(METHODS) else "-" + "-".join(methods))
    for kind, table_rows in (("quality", rows), ("per-image", per_image), ("agreement", agreement)):
        print(f"wrote {results.write(table_rows, file=f'{kind}-{stem}.csv')}")
    print(f"{len(common)} images ({source}), {args.iterations} iterations")
    print(table(rows, ["method", "area", "mask_mean", "p_kept", "logit_kept", "deletion_auc", "insertion_auc"]))
    print(table(agreement, ["pair", "area", "pearson", "pearson_min", "top_iou", "top_iou_min"]))


def cmd_speed(args, device: torch.device, results) -> None:
    """Masks per second: TorchRay one image at a time against the preset batched, alternating
    (A B A B) in one process so both see the same machine load."""
    classifier, images, targets, source = _setup(args, device)
    x = classifier.normalize(images)
    timings: dict[str, list[float]] = {"torchray": [], "ours": []}
    device = images.device
    for _ in range(args.repeats):
        start = clock(device)
        for i in range(len(images)):
            torchray_masks(classifier, x[i : i + 1], int(targets[i]), args.iterations, False)
        timings["torchray"].append(clock(device) - start)
        start = clock(device)
        ours_masks(classifier, images, targets, args.iterations)
        timings["ours"].append(clock(device) - start)
    masks = len(images) * len(AREAS)
    rows = [{"method": m, "images": len(images), "iterations": args.iterations, "seconds": min(t),
             "masks_per_s_at_800": masks / (min(t) * 800 / args.iterations), "load": load_average()}
            for m, t in timings.items()]
    ratio = min(timings["torchray"]) / min(timings["ours"])
    for row in rows:
        row["speedup_vs_torchray"] = min(timings["torchray"]) / row["seconds"]
    print(f"wrote {results.write(rows, file=f'speed-{results.name or args.iterations}.csv')}")
    print(f"{len(images)} images ({source})")
    print(table(rows, ["method", "images", "iterations", "seconds", "masks_per_s_at_800", "speedup_vs_torchray"]))
    print(f"ratio (TorchRay time / preset time): x{ratio:.2f}")


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["run", "judge", "speed"], help="run: compute and cache one method's "
                        "masks; judge: quality and agreement of the cached masks; speed: masks per second of both")
    parser.add_argument("method", nargs="?", choices=METHODS, help="run: the method")
    parser.add_argument("--set", action="append", default=[], help="run: extra overrides for 'ours'")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="judge: only these (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="speed: alternations of the two methods")
    add_images(parser, 0, "images (default 16; speed 4)")
    parser.add_argument("--iterations", type=int, default=0, help="solver iterations (default 800; speed 10)")


def run(args, device: torch.device, results) -> int:
    speed = args.action == "speed"
    args.images = args.images or (4 if speed else 16)
    args.iterations = args.iterations or (10 if speed else 800)
    if args.action == "run" and not args.method:
        sys.exit(f"error: peers run needs a method: {', '.join(METHODS)}")
    {"run": cmd_run, "judge": cmd_judge, "speed": cmd_speed}[args.action](args, device, results)
    return 0
